//go:build unix

package agent

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// workEnv is a task service that hands work to one agent (pc-1, whose
// Computer is sites/pc-1), and a scratch directory for the scripts' marks.
type workEnv struct {
	task *agenttest.TaskServer
	cfg  Config
	dir  string
}

func newWorkEnv(t *testing.T) *workEnv {
	t.Helper()
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 20 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	return &workEnv{task: task, cfg: baseConfig(t, ca, locator.URL), dir: t.TempDir()}
}

// path is a file of the scratch directory.
func (e *workEnv) path(name string) string { return filepath.Join(e.dir, name) }

// lines counts the lines of a scratch file (0 when there is none).
func (e *workEnv) lines(name string) int {
	b, _ := os.ReadFile(e.path(name))
	return strings.Count(string(b), "\n")
}

// result waits for the result of id that the service recorded.
func (e *workEnv) result(t *testing.T, id string, timeout time.Duration) protocol.WorkStatus {
	t.Helper()
	var st protocol.WorkStatus
	agenttest.Eventually(t, timeout, func() bool {
		var ok bool
		st, ok = e.task.Results()["sites/pc-1 "+id]
		return ok
	}, "no result of %s was recorded; reports: %+v", id, e.task.Reports())
	return st
}

// reports returns the reports on id, final ones or progress ones.
func (e *workEnv) reports(id string, final bool) []agenttest.Report {
	var out []agenttest.Report
	for _, r := range e.task.Reports() {
		if r.ID == id && r.Work.Final() == final {
			out = append(out, r)
		}
	}
	return out
}

// checkInsAfter waits for n more check-ins answered after now.
func (e *workEnv) checkInsAfter(t *testing.T, n int) {
	t.Helper()
	before := e.task.SuccessfulCheckIns()
	agenttest.Eventually(t, 5*time.Second, func() bool { return e.task.SuccessfulCheckIns() >= before+n }, "the agent stopped checking in")
}

// idle waits until the agent checks in without busy again.
func (e *workEnv) idle(t *testing.T) {
	t.Helper()
	agenttest.Eventually(t, 5*time.Second, func() bool {
		c := e.task.CheckIns()
		return len(c) > 0 && !c[len(c)-1].Query.Has(protocol.QueryBusy)
	}, "the agent still says it is busy")
}

// offerEveryTime hands items at every check-in, busy or not, as a
// misbehaving service would.
func offerEveryTime(task *agenttest.TaskServer, items ...protocol.WorkItem) {
	task.Set(func(b *agenttest.Behaviour) {
		b.Work = items
		b.OnWork = func(int, http.ResponseWriter, *http.Request) bool {
			task.Set(func(b *agenttest.Behaviour) { b.Work = items })
			return false
		}
	})
}

func TestScriptRunsOnceAndReports(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-a.1"
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `echo run >> "`+e.path("runs")+`"
echo "to stdout"
echo "to stderr" >&2
echo "id $SITEOPS_WORK_ID task $SITEOPS_TASK"
sleep 0.3`, 30)}
	})
	_, stop := start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)

	if st.State != protocol.WorkSucceeded || st.ExitCode == nil || *st.ExitCode != 0 || st.Reason != "" || st.Attempt != 1 {
		t.Errorf("result %+v, want Succeeded with exit code 0", st)
	}
	if want := "to stdout\nto stderr\nid uid-a.1 task tasks/t1\n"; st.Output != want || st.OutputTruncated {
		t.Errorf("output %q (truncated %v), want %q", st.Output, st.OutputTruncated, want)
	}
	if st.Started == nil || st.Finished == nil || st.Finished.Sub(*st.Started) < 300*time.Millisecond {
		t.Errorf("started %v, finished %v: the script slept 300ms", st.Started, st.Finished)
	}
	progress, final := e.reports(id, false), e.reports(id, true)
	if len(progress) != 1 || progress[0].Work.State != protocol.WorkRunning || progress[0].Work.Started == nil ||
		!progress[0].Work.Started.Equal(*st.Started) || progress[0].At.After(final[0].At) {
		t.Errorf("progress reports %+v, want one Running report with the start time, before the result", progress)
	}
	if len(final) != 1 || final[0].Status != http.StatusOK {
		t.Errorf("%d final reports, want 1 acknowledged", len(final))
	}
	// Busy while it ran: the check-ins between the progress report and the
	// result said so.
	var busy int
	for _, c := range e.task.CheckIns() {
		if c.At.After(progress[0].At) && c.At.Before(final[0].At) {
			busy++
			if c.Query.Get(protocol.QueryBusy) != id {
				t.Errorf("a check-in while the script ran had busy=%q, want %q", c.Query.Get(protocol.QueryBusy), id)
			}
		}
	}
	if busy == 0 {
		t.Error("the agent did not check in while the script ran")
	}
	e.idle(t)
	e.checkInsAfter(t, 10)
	stop()
	if n := e.lines("runs"); n != 1 {
		t.Errorf("the script ran %d times, want once", n)
	}
	// Forgotten, but for its ID.
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, WorkFile)); !os.IsNotExist(err) {
		t.Errorf("the work file is still there: %v", err)
	}
	if done, err := readDone(e.cfg.StateDir); err != nil || !slices.Equal(done, []string{id}) {
		t.Errorf("done list %v, %v", done, err)
	}
	if fi, err := os.Stat(filepath.Join(e.cfg.StateDir, DoneFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("done file: %v, %v", fi, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, scriptsDir)); len(entries) != 0 {
		t.Errorf("the script's directory is left: %v", entries)
	}
}

func TestScriptResults(t *testing.T) {
	for _, tc := range []struct {
		name   string
		item   func(id string) protocol.WorkItem
		path   string // the PATH of the test, when set
		state  string
		reason string
		code   int32 // the exit code, -1 for none
		output string
		msg    string
	}{
		{"nonzero exit", func(id string) protocol.WorkItem { return scriptItem(id, "echo failing; exit 3", 30) },
			"", protocol.WorkFailed, protocol.ReasonExitCode, 3, "failing\n", "exited with code 3"},
		{"bash", func(id string) protocol.WorkItem {
			w := scriptItem(id, `echo "${BASH_VERSION:+bash} $0"`, 30)
			w.Action.RunScript.Interpreter = "bash"
			return w
		}, "", protocol.WorkSucceeded, "", 0, "bash ", ""},
		{"python3 runs a .py file", func(id string) protocol.WorkItem {
			w := scriptItem(id, "import sys\nprint('python', sys.argv[0].endswith('.py'))", 30)
			w.Action.RunScript.Interpreter = "python3"
			return w
		}, "", protocol.WorkSucceeded, "", 0, "python True\n", ""},
		{"interpreter not found", func(id string) protocol.WorkItem {
			w := scriptItem(id, "echo never", 30)
			w.Action.RunScript.Interpreter = "bash"
			return w
		}, "empty", protocol.WorkFailed, protocol.ReasonInterpreterNotFound, -1, "", "interpreter bash not found"},
		{"unknown interpreter", func(id string) protocol.WorkItem {
			w := scriptItem(id, "print 'never'", 30)
			w.Action.RunScript.Interpreter = "perl"
			return w
		}, "", protocol.WorkFailed, protocol.ReasonInterpreterNotFound, -1, "", `no interpreter "perl"`},
		{"unknown action", func(id string) protocol.WorkItem {
			return protocol.WorkItem{ID: id, Task: "tasks/t1", Attempt: 1}
		}, "", protocol.WorkFailed, protocol.ReasonStartFailed, -1, "", "does not know the action"},
		{"two actions", func(id string) protocol.WorkItem {
			w := scriptItem(id, "echo never", 30)
			w.Action.Reboot = &protocol.Reboot{}
			return w
		}, "", protocol.WorkFailed, protocol.ReasonStartFailed, -1, "", "does not know the action"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.path != "" {
				t.Setenv("PATH", t.TempDir())
			}
			e := newWorkEnv(t)
			const id = "uid-r.1"
			e.task.Set(func(b *agenttest.Behaviour) { b.Offer = []protocol.WorkItem{tc.item(id)} })
			start(t, e.cfg, testTimings())
			st := e.result(t, id, 10*time.Second)
			if st.State != tc.state || st.Reason != tc.reason || !strings.HasPrefix(st.Output, tc.output) || !strings.Contains(st.Message, tc.msg) {
				t.Errorf("result %+v, want %s %s with output %q and a message with %q", st, tc.state, tc.reason, tc.output, tc.msg)
			}
			if (st.ExitCode == nil) != (tc.code == -1) || st.ExitCode != nil && *st.ExitCode != tc.code {
				t.Errorf("exit code %v, want %d", st.ExitCode, tc.code)
			}
			if st.Started == nil || st.Finished == nil {
				t.Errorf("started %v, finished %v", st.Started, st.Finished)
			}
			e.idle(t)
		})
	}
}

func TestOutputKeepsTheEnd(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-o.1"
	// About 290 KB of output, then its end; "é" may be cut in two.
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `i=0; while [ $i -lt 20000 ]; do echo "line é $i"; i=$((i+1)); done; printf 'THE END'`, 30)}
	})
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	if st.State != protocol.WorkSucceeded || !st.OutputTruncated {
		t.Fatalf("result %s, truncated %v", st.State, st.OutputTruncated)
	}
	if !strings.HasSuffix(st.Output, "line é 19999\nTHE END") || len(st.Output) > protocol.MaxOutputBytes || len(st.Output) < protocol.MaxOutputBytes-8 {
		t.Errorf("output of %d bytes ends with %q: want the last %d bytes", len(st.Output), st.Output[max(0, len(st.Output)-40):], protocol.MaxOutputBytes)
	}
	if strings.Contains(st.Output, "line é 0\n") || strings.ContainsRune(st.Output, '\uFFFD') {
		t.Errorf("output starts %q: want the end, without a broken character", st.Output[:40])
	}
}

// isResult reads a report sent to the test task server and tells whether
// it is a result (not a progress report, nor unreadable).
func isResult(r *http.Request) bool {
	var st protocol.WorkStatus
	return json.NewDecoder(r.Body).Decode(&st) == nil && st.Final()
}

func TestResultRetriedUntilAcknowledged(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-b.1"
	var mu sync.Mutex
	var failed int
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `echo run >> "`+e.path("runs")+`"; echo done`, 30)}
		b.OnReport = func(_ int, w http.ResponseWriter, r *http.Request) bool {
			if !isResult(r) {
				return false // progress reports go through
			}
			mu.Lock()
			defer mu.Unlock()
			failed++
			switch failed {
			case 1:
				w.Header().Set("Retry-After", "10") // 100ms in tests
				agenttest.WriteError(w, http.StatusServiceUnavailable, "the report could not be recorded in time")
			case 2:
				agenttest.WriteError(w, http.StatusBadGateway, "no API server")
			case 3:
				panic(http.ErrAbortHandler) // the connection drops
			default:
				return false
			}
			return true
		}
	})
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkSucceeded || st.Output != "done\n" {
		t.Errorf("result %+v", st)
	}
	final := e.reports(id, true)
	if len(final) != 4 || final[3].Status != http.StatusOK {
		t.Fatalf("%d final reports, want 4, the last acknowledged: %+v", len(final), final)
	}
	if gap := final[1].At.Sub(final[0].At); gap < 100*time.Millisecond {
		t.Errorf("retried %s after a 503 with Retry-After 100ms", gap)
	}
	for i, r := range final[1:] {
		if r.Work.State != st.State || r.Work.Output != st.Output || !r.Work.Finished.Equal(*st.Finished) {
			t.Errorf("attempt %d sent %+v, not the same result", i+2, r.Work)
		}
	}
	// Busy until the result was acknowledged, whatever the failures.
	for _, c := range e.task.CheckIns() {
		if c.At.After(final[0].At) && c.At.Before(final[3].At) && c.Query.Get(protocol.QueryBusy) != id {
			t.Errorf("a check-in while the result was retried had busy=%q", c.Query.Get(protocol.QueryBusy))
		}
	}
	e.idle(t)
	e.checkInsAfter(t, 5)
	if n := e.lines("runs"); n != 1 {
		t.Errorf("the script ran %d times", n)
	}
}

// A result answered 503 with Retry-After is sent again after what was
// asked (spread by up to half), round after round: the back-off, which
// doubles from 1 s here, does not stretch the rounds.
func TestResultFollowsRetryAfter(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-f.1"
	const rounds = 6
	var mu sync.Mutex
	var refused int
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, "true", 30)}
		b.OnReport = func(_ int, w http.ResponseWriter, r *http.Request) bool {
			if !isResult(r) {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			if refused++; refused > rounds {
				return false
			}
			w.Header().Set("Retry-After", "10") // 100ms in tests
			agenttest.WriteError(w, http.StatusServiceUnavailable, "the report is not recorded yet")
			return true
		}
	})
	tm := testTimings()
	tm.reportBase, tm.reportMax = time.Second, time.Minute
	start(t, e.cfg, tm)
	e.result(t, id, 30*time.Second)
	final := e.reports(id, true)
	if len(final) != rounds+1 {
		t.Fatalf("%d final reports, want %d", len(final), rounds+1)
	}
	for i := 1; i < len(final); i++ {
		// 100–150ms asked; the back-off's windows would be 1 s, 2 s, 4 s…
		if gap := final[i].At.Sub(final[i-1].At); gap < 100*time.Millisecond || gap > time.Second {
			t.Errorf("report %d sent %s after a 503 with Retry-After 100ms", i+1, gap)
		}
	}
}

func TestRefusedResultIsDropped(t *testing.T) {
	for _, code := range []int{http.StatusConflict, http.StatusNotFound, http.StatusBadRequest} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			e := newWorkEnv(t)
			const id = "uid-c.2"
			e.task.Set(func(b *agenttest.Behaviour) {
				// Offered until a result is recorded, which never happens:
				// the agent must not run it again.
				b.Offer = []protocol.WorkItem{scriptItem(id, `echo run >> "`+e.path("runs")+`"`, 30)}
				b.OnReport = func(_ int, w http.ResponseWriter, r *http.Request) bool {
					agenttest.WriteError(w, code, "refused")
					return true
				}
			})
			start(t, e.cfg, testTimings())
			agenttest.Eventually(t, 10*time.Second, func() bool { return len(e.reports(id, true)) > 0 }, "no result was sent")
			e.idle(t)
			e.checkInsAfter(t, 10)
			if n := len(e.reports(id, true)); n != 1 {
				t.Errorf("the result was sent %d times after a %d, want once", n, code)
			}
			if n := e.lines("runs"); n != 1 {
				t.Errorf("the script ran %d times", n)
			}
			if _, err := os.Stat(filepath.Join(e.cfg.StateDir, WorkFile)); !os.IsNotExist(err) {
				t.Errorf("the work file is still there: %v", err)
			}
			if done, _ := readDone(e.cfg.StateDir); !slices.Equal(done, []string{id}) {
				t.Errorf("done list %v", done)
			}
		})
	}
}

func TestWorkOfferedAgainIsNotRunAgain(t *testing.T) {
	e := newWorkEnv(t)
	a := scriptItem("uid-d.1", `echo a >> "`+e.path("runs")+`"; sleep 0.3`, 30)
	b := scriptItem("uid-e.1", `echo b >> "`+e.path("runs")+`"; sleep 0.3`, 30)
	// Both, at every check-in, busy or not: the agent takes a, ignores b
	// while a runs, then takes b, and never runs either again.
	offerEveryTime(e.task, a, b)
	_, stop := start(t, e.cfg, testTimings())
	e.result(t, a.ID, 10*time.Second)
	e.result(t, b.ID, 10*time.Second)
	e.idle(t)
	e.checkInsAfter(t, 10)
	if got, _ := os.ReadFile(e.path("runs")); string(got) != "a\nb\n" {
		t.Errorf("runs %q, want a then b, once each", got)
	}
	// A fresh agent on the same state directory remembers them too.
	stop()
	start(t, e.cfg, testTimings())
	e.checkInsAfter(t, 10)
	if got, _ := os.ReadFile(e.path("runs")); string(got) != "a\nb\n" {
		t.Errorf("after a restart, runs %q", got)
	}
}

func TestRestartMidTaskReportsInterrupted(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-f.1"
	item := scriptItem(id, `echo $$ > "`+e.path("pid")+`"; echo run >> "`+e.path("runs")+`"; sleep 1000`, 3600)
	e.task.Set(func(b *agenttest.Behaviour) { b.Offer = []protocol.WorkItem{item} })
	_, stop := start(t, e.cfg, testTimings())
	agenttest.Eventually(t, 10*time.Second, func() bool { return e.lines("runs") == 1 && len(e.reports(id, false)) == 1 }, "the script did not start")
	stop()
	rec, err := readWork(e.cfg.StateDir)
	if err != nil || rec == nil || rec.State != recordRunning || rec.Item.ID != id || rec.Result != nil {
		t.Fatalf("after the stop the work file holds %+v, %v; want the item running", rec, err)
	}
	if fi, err := os.Stat(filepath.Join(e.cfg.StateDir, WorkFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("work file: %v, %v", fi, err)
	}
	pid, _ := os.ReadFile(e.path("pid"))
	expectGone(t, strings.TrimSpace(string(pid)), "the script of a stopped agent")
	if n := len(e.reports(id, true)); n != 0 {
		t.Fatalf("the stopped agent sent %d results", n)
	}

	// The item is handed again at every check-in, as to a restarted
	// agent that says nothing of it: it must not run.
	restart := len(e.task.CheckIns())
	offerEveryTime(e.task, item)
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonInterrupted || !strings.Contains(st.Message, "restarted while the work ran") ||
		st.Started == nil || !st.Started.Equal(rec.Started) || st.Finished == nil || st.ExitCode != nil {
		t.Errorf("result %+v, want Failed Interrupted since %s", st, rec.Started)
	}
	e.idle(t)
	e.checkInsAfter(t, 10)
	// Busy until the result was acknowledged: every check-in that came
	// before it said so.
	acked := e.reports(id, true)[0].At
	for _, c := range e.task.CheckIns()[restart:] {
		if c.At.Before(acked) && c.Query.Get(protocol.QueryBusy) != id {
			t.Errorf("a check-in of the restarted agent before its result had busy=%q, want %q", c.Query.Get(protocol.QueryBusy), id)
		}
	}
	if n := e.lines("runs"); n != 1 {
		t.Errorf("the script ran %d times", n)
	}
	if _, err := os.Stat(filepath.Join(e.cfg.StateDir, WorkFile)); !os.IsNotExist(err) {
		t.Errorf("the work file is still there: %v", err)
	}
}

func TestResultSentAfterRestart(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-g.3"
	down := true
	var mu sync.Mutex
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `echo run >> "`+e.path("runs")+`"; echo out; exit 4`, 30)}
		b.OnReport = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			if down {
				agenttest.WriteError(w, http.StatusServiceUnavailable, "down")
			}
			return down
		}
	})
	_, stop := start(t, e.cfg, testTimings())
	var rec *workRecord
	agenttest.Eventually(t, 10*time.Second, func() bool {
		rec, _ = readWork(e.cfg.StateDir)
		return rec != nil && rec.State == recordFinished && len(e.reports(id, true)) >= 2
	}, "the result was not kept and retried")
	stop()
	mu.Lock()
	down = false
	mu.Unlock()
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonExitCode || *st.ExitCode != 4 || st.Output != "out\n" ||
		!st.Finished.Equal(*rec.Result.Finished) {
		t.Errorf("result %+v, want the one kept: %+v", st, *rec.Result)
	}
	e.idle(t)
	e.checkInsAfter(t, 5)
	if n := e.lines("runs"); n != 1 {
		t.Errorf("the script ran %d times", n)
	}
}

func TestRefusedCredentialForAResult(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-h.1"
	// The credential is revoked when the result comes: its report is
	// refused, and so are the check-ins from then on.
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `sleep 0.3; echo done`, 30)}
		b.OnReport = func(_ int, w http.ResponseWriter, r *http.Request) bool {
			if !isResult(r) || len(e.task.Registrations()) != 1 {
				return false
			}
			e.task.RevokeAll()
			agenttest.WriteError(w, http.StatusUnauthorized, "the credential is not valid")
			return true
		}
	})
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkSucceeded {
		t.Errorf("result %+v", st)
	}
	final := e.reports(id, true)
	if len(final) < 2 || final[0].Status != http.StatusUnauthorized || final[len(final)-1].Status != http.StatusOK ||
		final[0].Credential == final[len(final)-1].Credential {
		t.Errorf("final reports %+v: want a 401, then a 200 with a new credential", final)
	}
	if n := len(e.task.Registrations()); n != 2 {
		t.Errorf("%d registrations, want 2", n)
	}
}

func TestRebootAfterAcknowledgement(t *testing.T) {
	for _, tc := range []struct {
		name     string
		answer   int
		rebooted bool
	}{{"acknowledged", http.StatusOK, true}, {"refused", http.StatusConflict, false}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newWorkEnv(t)
			const id = "uid-i.1"
			helper := e.path("reboot.sh")
			if err := os.WriteFile(helper, []byte(`echo rebooted >> "`+e.path("reboots")+"\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e.cfg.RebootCommand = "sh " + helper
			var mu sync.Mutex
			var rebootedBeforeReport bool
			e.task.Set(func(b *agenttest.Behaviour) {
				b.Offer = []protocol.WorkItem{{ID: id, Task: "tasks/reboot", Attempt: 1, Action: protocol.Action{Reboot: &protocol.Reboot{}}}}
				b.OnReport = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
					time.Sleep(100 * time.Millisecond) // a slow service: the agent must wait for its answer
					mu.Lock()
					rebootedBeforeReport = rebootedBeforeReport || e.lines("reboots") > 0
					mu.Unlock()
					if tc.answer != http.StatusOK {
						agenttest.WriteError(w, tc.answer, "refused")
						return true
					}
					return false
				}
			})
			start(t, e.cfg, testTimings())
			agenttest.Eventually(t, 10*time.Second, func() bool {
				r := e.reports(id, true)
				return len(r) > 0 && r[0].Status != 0
			}, "no result")
			if tc.rebooted {
				agenttest.Eventually(t, 5*time.Second, func() bool { return e.lines("reboots") == 1 }, "the reboot command did not run")
				// Busy while the computer goes down (300ms in tests), then
				// idle again, as it did not.
				e.idle(t)
				acked := e.reports(id, true)[0].At
				var busy int
				for _, c := range e.task.CheckIns() {
					if c.At.After(acked.Add(150*time.Millisecond)) && c.At.Before(acked.Add(250*time.Millisecond)) {
						busy++
						if c.Query.Get(protocol.QueryBusy) != id {
							t.Errorf("a check-in after the reboot command had busy=%q", c.Query.Get(protocol.QueryBusy))
						}
					}
				}
				if busy == 0 {
					t.Error("no check-in while the computer was going down")
				}
			}
			st := e.reports(id, true)[0].Work
			if st.State != protocol.WorkSucceeded || st.Started == nil || st.Finished == nil {
				t.Errorf("result %+v, want Succeeded", st)
			}
			e.idle(t)
			e.checkInsAfter(t, 5)
			mu.Lock()
			defer mu.Unlock()
			if rebootedBeforeReport {
				t.Error("the reboot command ran before the service answered the result")
			}
			if want := map[bool]int{true: 1, false: 0}[tc.rebooted]; e.lines("reboots") != want {
				t.Errorf("the reboot command ran %d times, want %d", e.lines("reboots"), want)
			}
			if n := len(e.reports(id, true)); n != 1 {
				t.Errorf("%d results sent, want 1", n)
			}
		})
	}
}
