//go:build unix

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent"
	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// agentBinary builds the agent once for the tests that run it as a
// process: a crash and a restart are what a process does.
var agentBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "agent-test-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "agent")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", &buildError{err: err, out: out}
	}
	return bin, nil
})

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + string(e.out) }

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := agentBinary(); err == nil {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// agentProcess is `agent run` as a process, on a state directory that
// outlives it.
type agentProcess struct {
	t        *testing.T
	args     []string
	stateDir string
	cmd      *exec.Cmd
	log      *syncBuffer
}

func newAgentProcess(t *testing.T, task *agenttest.TaskServer, ca *agenttest.CA, extra ...string) *agentProcess {
	t.Helper()
	return newAgentProcessWith(t, agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL)), ca, extra...)
}

// newAgentProcessWith is an agent process that locates with locator.
func newAgentProcessWith(t *testing.T, locator *agenttest.Locator, ca *agenttest.CA, extra ...string) *agentProcess {
	t.Helper()
	stateDir := filepath.Join(t.TempDir(), "state")
	args := append([]string{"run", "--locator", locator.URL, "--ca-file", ca.File, "--token", token, "--state-dir", stateDir,
		"--addresses", "10.0.0.9", "--hostname", "pc-9", "--hardware-id", "hw-9", "--mac-addresses", "aa:bb:cc:00:00:09",
		"--wait", "1s", "--log-level", "debug"}, extra...)
	return &agentProcess{t: t, args: args, stateDir: stateDir}
}

func (p *agentProcess) start() {
	p.t.Helper()
	bin, err := agentBinary()
	if err != nil {
		p.t.Fatal(err)
	}
	p.log = &syncBuffer{}
	p.cmd = exec.Command(bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	cmd := p.cmd
	p.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

// stop sends SIGTERM and returns the exit code.
func (p *agentProcess) stop() int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("the agent did not stop within 10s of SIGTERM:\n%s", p.log)
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill kills the process at once, as a crash or a power cut would.
func (p *agentProcess) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

func resultOf(task *agenttest.TaskServer, id string) (protocol.WorkStatus, bool) {
	st, ok := task.Results()["sites/pc-9 "+id]
	return st, ok
}

// awaitResult waits up to 20 s for the result of work id that who, the
// agent process p, reports, and fails the test with p's log if none comes.
func awaitResult(t *testing.T, task *agenttest.TaskServer, id, who string, p *agentProcess) protocol.WorkStatus {
	t.Helper()
	var st protocol.WorkStatus
	agenttest.Eventually(t, 20*time.Second, func() bool {
		var ok bool
		st, ok = resultOf(task, id)
		return ok
	}, who+" reported nothing:\n%s", p.log)
	return st
}

func lineCount(path string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), "\n")
}

// TestKilledMidScriptReportsInterrupted kills the agent process while its
// script runs and starts it again on the same state directory: the item
// is reported Interrupted and never run again, though the service hands
// it at every check-in.
func TestKilledMidScriptReportsInterrupted(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	dir := t.TempDir()
	runs, pidFile := filepath.Join(dir, "runs"), filepath.Join(dir, "pid")
	item := protocol.WorkItem{ID: "uid-k.1", Task: "tasks/k", Attempt: 1, Action: protocol.Action{RunScript: &protocol.RunScript{
		Script: `echo $$ > "` + pidFile + `"; echo run >> "` + runs + `"; sleep 1000`, Interpreter: "sh", TimeoutSeconds: 3600}}}
	task.Set(func(b *agenttest.Behaviour) {
		b.NextCheckIn = 20 * time.Millisecond
		b.Work = []protocol.WorkItem{item}
		b.OnWork = func(int, http.ResponseWriter, *http.Request) bool {
			task.Set(func(b *agenttest.Behaviour) { b.Work = []protocol.WorkItem{item} })
			return false
		}
	})
	p := newAgentProcess(t, task, ca, "--reboot-command", "")
	p.start()
	agenttest.Eventually(t, 20*time.Second, func() bool {
		for _, r := range task.Reports() {
			if r.ID == item.ID && r.Work.State == protocol.WorkRunning && lineCount(runs) == 1 {
				return true
			}
		}
		return false
	}, "the script did not start:\n%s", p.log)
	p.kill()
	// The script has a process group of its own: the kill left it running.
	pid, _ := os.ReadFile(pidFile)
	if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil && n > 1 {
		t.Cleanup(func() { _ = syscall.Kill(-n, syscall.SIGKILL) })
	}
	if _, ok := resultOf(task, item.ID); ok {
		t.Fatal("a result was recorded before the restart")
	}

	p.start()
	st := awaitResult(t, task, item.ID, "the restarted agent", p)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonInterrupted || !strings.Contains(st.Message, "restarted") {
		t.Errorf("result %+v, want Failed Interrupted", st)
	}
	n := task.SuccessfulCheckIns()
	agenttest.Eventually(t, 10*time.Second, func() bool { return task.SuccessfulCheckIns() >= n+10 }, "the agent stopped checking in")
	if code := p.stop(); code != 0 {
		t.Errorf("the agent exited with %d after SIGTERM", code)
	}
	if got := lineCount(runs); got != 1 {
		t.Errorf("the script ran %d times, want once", got)
	}
	if !strings.Contains(p.log.String(), "reporting it interrupted") {
		t.Errorf("the restarted agent's log does not say why:\n%s", p.log)
	}
	if _, err := os.Stat(filepath.Join(p.stateDir, agent.WorkFile)); !os.IsNotExist(err) {
		t.Errorf("the work file is still there: %v", err)
	}
}

// TestRebootCommand runs a reboot item in an agent process: it reports
// success, then runs --reboot-command.
func TestRebootCommand(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	dir := t.TempDir()
	helper, rebooted := filepath.Join(dir, "reboot.sh"), filepath.Join(dir, "rebooted")
	if err := os.WriteFile(helper, []byte(`echo "$@" >> "`+rebooted+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	item := protocol.WorkItem{ID: "uid-rb.1", Task: "tasks/rb", Attempt: 1, Action: protocol.Action{Reboot: &protocol.Reboot{}}}
	var mu sync.Mutex
	var early bool
	task.Set(func(b *agenttest.Behaviour) {
		b.NextCheckIn = 20 * time.Millisecond
		b.Offer = []protocol.WorkItem{item}
		b.OnReport = func(int, http.ResponseWriter, *http.Request) bool {
			mu.Lock()
			early = early || lineCount(rebooted) > 0
			mu.Unlock()
			return false
		}
	})
	p := newAgentProcess(t, task, ca, "--reboot-command", "sh "+helper+" -r now")
	p.start()
	agenttest.Eventually(t, 20*time.Second, func() bool { return lineCount(rebooted) == 1 }, "the reboot command did not run:\n%s", p.log)
	if st, ok := resultOf(task, item.ID); !ok || st.State != protocol.WorkSucceeded {
		t.Errorf("result %+v, %v", st, ok)
	}
	p.stop()
	mu.Lock()
	defer mu.Unlock()
	if b, _ := os.ReadFile(rebooted); early || string(b) != "-r now\n" {
		t.Errorf("the command ran with %q (before the result: %v)", b, early)
	}
}

// TestDeployImageToTheDisk runs a deployImage item in an agent process
// with --disk: the image, downloaded from the site's package endpoint,
// ends up on the disk.
func TestDeployImageToTheDisk(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	image := bytes.Repeat([]byte("an image "), 100_000)
	sum := sha256.Sum256(image)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	pkg := ca.Serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != protocol.ContentPath(digest) {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(image))
	}))
	locator := agenttest.NewLocator(t, ca, func(int, []string) protocol.LocateResponse {
		return protocol.LocateResponse{Site: "paris", Rule: protocol.RuleSite, TaskEndpoints: []string{task.URL},
			PackageEndpoints: []string{pkg.URL}}
	})
	disk := filepath.Join(t.TempDir(), "disk")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	item := protocol.WorkItem{ID: "uid-di.1", Task: "imaging/deploy", Attempt: 1, Action: protocol.Action{DeployImage: &protocol.DeployImage{
		Content: protocol.Content{Package: "imaging/win11", Digest: digest, Size: int64(len(image))}, TimeoutSeconds: 60}}}
	task.Set(func(b *agenttest.Behaviour) {
		b.NextCheckIn = 20 * time.Millisecond
		b.Offer = []protocol.WorkItem{item}
	})
	p := newAgentProcessWith(t, locator, ca, "--disk", disk)
	p.start()
	st := awaitResult(t, task, item.ID, "the agent", p)
	p.stop()
	if st.State != protocol.WorkSucceeded {
		t.Fatalf("result %+v, want Succeeded", st)
	}
	if b, _ := os.ReadFile(disk); !bytes.Equal(b, image) {
		t.Errorf("the disk holds %d bytes, want the image's %d", len(b), len(image))
	}
}
