package agent

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/siteops/site-operator/internal/protocol"
)

func scriptItem(id, script string, timeoutSeconds int64) protocol.WorkItem {
	attempt, _ := strconv.Atoi(id[strings.LastIndexByte(id, '.')+1:])
	return protocol.WorkItem{ID: id, Task: "tasks/t1", Attempt: int32(attempt),
		Action: protocol.Action{RunScript: &protocol.RunScript{Script: script, Interpreter: "sh", TimeoutSeconds: timeoutSeconds}}}
}

func TestTailBuffer(t *testing.T) {
	const size = 8
	for _, tc := range []struct {
		writes    []string
		want      string
		truncated bool
	}{
		{nil, "", false},
		{[]string{"abc"}, "abc", false},
		{[]string{"abcd", "efgh"}, "abcdefgh", false},
		{[]string{"abcd", "efgh", "i"}, "bcdefghi", true},
		{[]string{"0123456789abcdef"}, "89abcdef", true},
		{[]string{"x", "0123456789abcdef", "yz"}, "abcdefyz", true},
		{[]string{"12345", "67890", "abcde", "fghij", "k"}, "defghijk", true},
	} {
		b := newTailBuffer(size)
		var all string
		for _, w := range tc.writes {
			if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", w, n, err)
			}
			all += w
			if cap(b.data) > 2*size {
				t.Fatalf("the buffer grew to %d bytes", cap(b.data))
			}
		}
		got, truncated := b.tail()
		if string(got) != tc.want || truncated != tc.truncated || !strings.HasSuffix(all, string(got)) {
			t.Errorf("%q: tail %q (truncated %v), want %q (%v)", tc.writes, got, truncated, tc.want, tc.truncated)
		}
	}
	// Many writes of every size keep exactly the end.
	b := newTailBuffer(100)
	var all bytes.Buffer
	for i := range 500 {
		w := bytes.Repeat([]byte{byte('a' + i%26)}, i%37)
		_, _ = b.Write(w)
		all.Write(w)
		got, _ := b.tail()
		if want := all.Bytes()[max(0, all.Len()-100):]; !bytes.Equal(got, want) {
			t.Fatalf("after %d writes the tail is %q, want %q", i+1, got, want)
		}
	}
}

func TestOutputOf(t *testing.T) {
	limit := protocol.MaxOutputBytes
	// A cut in the middle of "é" (2 bytes) drops what is left of it.
	b := newTailBuffer(limit)
	_, _ = b.Write([]byte(strings.Repeat("é", limit/2) + "z"))
	out, truncated := outputOf(b)
	if !truncated || !utf8.ValidString(out) || strings.ContainsRune(out, '\uFFFD') || len(out) != limit-1 || !strings.HasSuffix(out, "éz") {
		t.Errorf("a split character: %d bytes, truncated %v, valid %v", len(out), truncated, utf8.ValidString(out))
	}
	// Invalid bytes become U+FFFD (3 bytes each, as the service decodes
	// them): the output is cut again to stay within the limit.
	b = newTailBuffer(limit)
	_, _ = b.Write(append([]byte("start "), bytes.Repeat([]byte{0xff, 'a'}, limit/2-3)...))
	out, truncated = outputOf(b)
	if !utf8.ValidString(out) || len(out) > limit || !truncated || !strings.HasSuffix(out, "\uFFFDa") {
		t.Errorf("invalid bytes: %d bytes, truncated %v, valid %v, ends %q", len(out), truncated, utf8.ValidString(out), out[len(out)-4:])
	}
	b = newTailBuffer(limit)
	_, _ = b.Write([]byte("short\n"))
	if out, truncated := outputOf(b); out != "short\n" || truncated {
		t.Errorf("a short output: %q, %v", out, truncated)
	}
}

func TestTruncateMessage(t *testing.T) {
	long := strings.Repeat("é", protocol.MaxMessageLength) // 2 bytes each
	if m := truncateMessage(long); len(m) != protocol.MaxMessageLength || !utf8.ValidString(m) {
		t.Errorf("%d bytes, valid %v", len(m), utf8.ValidString(m))
	}
	if m := truncateMessage("a" + long); len(m) != protocol.MaxMessageLength-1 || !utf8.ValidString(m) {
		t.Errorf("cut in a character: %d bytes, valid %v", len(m), utf8.ValidString(m))
	}
	if m := truncateMessage("ok \xff"); m != "ok \uFFFD" {
		t.Errorf("invalid UTF-8: %q", m)
	}
}

func TestInterpreterCommands(t *testing.T) {
	for _, tc := range []struct{ interp, want string }{
		{"sh", "sh FILE.sh"},
		{"bash", "bash FILE.sh"},
		{"python3", "python3 FILE.py"},
		{"pwsh", "pwsh -NoProfile -NonInteractive -File FILE.ps1"},
		{"powershell", "powershell -NoProfile -NonInteractive -ExecutionPolicy Bypass -File FILE.ps1"},
		{"cmd", "cmd /c FILE.cmd"},
	} {
		program, args, ext, ok := interpreterCommand(tc.interp)
		if got := strings.Join(append(append([]string{program}, args...), "FILE"+ext), " "); !ok || got != tc.want {
			t.Errorf("%s runs %q, want %q", tc.interp, got, tc.want)
		}
	}
	if _, _, _, ok := interpreterCommand("perl"); ok {
		t.Error("perl is an interpreter")
	}
	for _, interp := range interpreters {
		if _, _, _, ok := interpreterCommand(interp); !ok {
			t.Errorf("%s is listed but has no command", interp)
		}
	}
	if c := scriptContent("powershell", "é"); !bytes.Equal(c, []byte("\xef\xbb\xbfé")) {
		t.Errorf("a Windows PowerShell script starts %q, want a UTF-8 byte order mark", c)
	}
	if c := scriptContent("pwsh", "é"); string(c) != "é" {
		t.Errorf("a pwsh script is %q", c)
	}
	if n := safeName("../a b/c.1"); n != ".._a_b_c.1" {
		t.Errorf("safeName: %q", n)
	}
}

func TestSimulatedFails(t *testing.T) {
	for _, tc := range []struct {
		percent float64
		n, want int
	}{{0, 1000, 0}, {100, 1000, 1000}, {25, 20, 5}, {1, 1000, 10}, {0.5, 1000, 5}, {33.33, 10000, 3333}, {-5, 100, 0}, {150, 100, 100}} {
		got := 0
		for i := range tc.n {
			if SimulatedFails(i, tc.percent) {
				got++
			}
		}
		if got != tc.want {
			t.Errorf("%g%% of %d agents: %d fail, want %d", tc.percent, tc.n, got, tc.want)
		}
	}
	// Spread: of 100 agents at 10%, one in each ten.
	for tens := range 10 {
		n := 0
		for i := tens * 10; i < tens*10+10; i++ {
			if SimulatedFails(i, 10) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("agents %d to %d: %d fail at 10%%", tens*10, tens*10+9, n)
		}
	}
}

func TestEventTimes(t *testing.T) {
	if e := eventTimesOf(nil, 10); e != (EventTimes{}) {
		t.Errorf("none: %+v", e)
	}
	var times []int64
	for i := int64(1); i <= 200; i++ {
		times = append(times, 1000+i)
	}
	e := eventTimesOf(times, 200)
	if e != (EventTimes{Count: 200, FirstUnixMs: 1001, P50UnixMs: 1100, P99UnixMs: 1198, MaxUnixMs: 1200, Agents99UnixMs: 1198}) {
		t.Errorf("200 of 200: %+v", e)
	}
	// 99% of 300 agents is 297 events: not yet.
	if e := eventTimesOf(times, 300); e.Agents99UnixMs != 0 || e.P99UnixMs != 1198 {
		t.Errorf("200 of 300: %+v", e)
	}
	// 99% of 100 agents is the 99th event.
	if e := eventTimesOf(times, 100); e.Agents99UnixMs != 1099 {
		t.Errorf("200 events for 100 agents: %+v", e)
	}
	if e := eventTimesOf([]int64{7}, 1); e != (EventTimes{Count: 1, FirstUnixMs: 7, P50UnixMs: 7, P99UnixMs: 7, MaxUnixMs: 7, Agents99UnixMs: 7}) {
		t.Errorf("one: %+v", e)
	}
}

// TestReportToAck: each acknowledged result's time from its first send to
// the 200 is kept per task, and summarized by nearest rank.
func TestReportToAck(t *testing.T) {
	s := newSimStats(200)
	sent := time.UnixMilli(1_000_000)
	for i := int64(1); i <= 200; i++ {
		s.resultAcknowledged("ns/task", protocol.WorkSucceeded, sent, sent.Add(time.Duration(i)*time.Millisecond))
	}
	s.resultAcknowledged("ns/other", protocol.WorkFailed, sent, sent.Add(time.Minute))
	st := s.snapshot(true)
	if got, want := st.Tasks["ns/task"].ReportToAck, (Durations{Count: 200, P50Ms: 100, P99Ms: 198, MaxMs: 200}); got != want {
		t.Errorf("ns/task: %+v, want %+v", got, want)
	}
	if got, want := st.Tasks["ns/other"].ReportToAck, (Durations{Count: 1, P50Ms: 60_000, P99Ms: 60_000, MaxMs: 60_000}); got != want {
		t.Errorf("ns/other: %+v, want %+v", got, want)
	}
	if d := durationsOf(nil); d != (Durations{}) {
		t.Errorf("none: %+v", d)
	}
}

func TestWorkFiles(t *testing.T) {
	dir := t.TempDir()
	a := &Agent{cfg: Config{StateDir: dir}, log: slog.New(slog.DiscardHandler)}
	if err := a.loadWork(); err != nil || a.work.current != nil || a.work.done != nil {
		t.Fatalf("an empty state directory: %+v, %v", a.work.current, err)
	}
	started := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	rec := &workRecord{Item: scriptItem("uid.1", "echo secret", 60), State: recordRunning, Started: started}
	if err := writeWork(dir, rec); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, WorkFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("work file: %v, %v", fi, err)
	}
	a = &Agent{cfg: Config{StateDir: dir}, log: slog.New(slog.DiscardHandler)}
	if err := a.loadWork(); err != nil || a.work.current == nil || a.work.current.Item.Action.RunScript.Script != "echo secret" ||
		!a.work.current.Started.Equal(started) || a.busyID() != "uid.1" {
		t.Fatalf("read back %+v, %v", a.work.current, err)
	}

	// The done list keeps the last 64 IDs, each once.
	for i := range 70 {
		a.work.current = &workRecord{Item: protocol.WorkItem{ID: "id." + strconv.Itoa(i)}}
		a.forget(a.work.current)
	}
	a.forget(&workRecord{Item: protocol.WorkItem{ID: "id.10"}}) // again: moves to the end
	done, err := readDone(dir)
	if err != nil || len(done) != maxDone || done[0] != "id.6" || done[maxDone-1] != "id.10" || slices.Index(done, "id.10") != maxDone-1 {
		t.Errorf("done list %v, %v", done, err)
	}
	if _, err := os.Stat(filepath.Join(dir, WorkFile)); !os.IsNotExist(err) {
		t.Errorf("the work file is still there: %v", err)
	}

	// A damaged work file is moved aside; the agent starts without it.
	if err := os.WriteFile(filepath.Join(dir, WorkFile), []byte(`{"item":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	a = &Agent{cfg: Config{StateDir: dir}, log: slog.New(slog.DiscardHandler)}
	if err := a.loadWork(); err != nil || a.work.current != nil || len(a.work.done) != maxDone {
		t.Errorf("a damaged work file: %+v, %v", a.work.current, err)
	}
	if _, err := os.Stat(filepath.Join(dir, WorkFile+".bad")); err != nil {
		t.Errorf("the damaged file was not kept aside: %v", err)
	}
	// A damaged done list stops the agent: it could run work twice.
	if err := os.WriteFile(filepath.Join(dir, DoneFile), []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := (&Agent{cfg: Config{StateDir: dir}, log: slog.New(slog.DiscardHandler)}).loadWork(); err == nil || !strings.Contains(err.Error(), DoneFile) {
		t.Errorf("a damaged done list: %v", err)
	}
}
