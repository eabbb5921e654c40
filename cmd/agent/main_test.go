package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent"
	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// TestDependencies keeps the agent small and apart from the operator: the
// binary links only the standard library, the protocol and the agent.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/siteops/site-operator/cmd/agent":         true,
		"github.com/siteops/site-operator/internal/agent":    true,
		"github.com/siteops/site-operator/internal/protocol": true,
	}
	for _, dep := range strings.Fields(string(out)) {
		if !allowed[dep] {
			t.Errorf("cmd/agent depends on %s, outside the standard library, internal/protocol and internal/agent", dep)
		}
	}
}

const token = "abcdef.0123456789abcdef"

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestVersionAndUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "agent ") {
		t.Errorf("version: %d %q %q", code, out.String(), errOut.String())
	}
	if code := run(context.Background(), nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "simulate") {
		t.Errorf("no command: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"run", "--locator", "https://x"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "--ca-file is required") {
		t.Errorf("run without a CA: %d %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"run", "--bogus"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "bogus") {
		t.Errorf("an unknown flag: %d %q", code, errOut.String())
	}
}

// TestRunThenStatus runs the agent against a test locator and task service,
// then asks it for its status, as an administrator at the computer would.
func TestRunThenStatus(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")

	ctx, cancel := context.WithCancel(context.Background())
	var stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"run", "--locator", locator.URL, "--ca-file", ca.File, "--token-file", tokenFile,
			"--state-dir", stateDir, "--addresses", "10.0.0.9,fd00::9", "--hostname", "pc-7", "--hardware-id", "hw-7",
			"--mac-addresses", "AA:BB:CC:00:00:07", "--wait", "1s"}, &bytes.Buffer{}, &stderr)
	}()
	// The second check-in starts once the agent has taken the first one's
	// answer (and noted it in its state): cancelling as soon as the server
	// answered the first could stop the agent before that.
	agenttest.Eventually(t, 10*time.Second, func() bool { return task.SuccessfulCheckIns() >= 2 }, "the agent did not check in twice")
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("agent run exited with %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("agent run did not stop when its context ended")
	}

	r := task.Registrations()[0].Request
	if r.Hostname != "pc-7" || r.HardwareID != "hw-7" || strings.Join(r.MACAddresses, ",") != "aa:bb:cc:00:00:07" ||
		strings.Join(r.Addresses, ",") != "10.0.0.9,fd00::9" {
		t.Errorf("registered as %+v", r)
	}
	// The log is JSON, one object a line, messages capitalised.
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var entry struct{ Msg string }
		if err := json.Unmarshal([]byte(line), &entry); err != nil || entry.Msg == "" {
			t.Errorf("a log line is not JSON with a message: %q", line)
			continue
		}
		if first := entry.Msg[:1]; first != strings.ToUpper(first) || strings.HasSuffix(entry.Msg, ".") {
			t.Errorf("log message %q must start with a capital letter and not end with a period", entry.Msg)
		}
	}

	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"status", "--state-dir", stateDir}, &out, &errOut); code != 0 {
		t.Fatalf("status: %d %s", code, errOut.String())
	}
	for _, want := range []string{"sites/pc-7", "paris", "paris-1 at " + task.URL, "ago)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"status", "--state-dir", stateDir, "--json"}, &out, &errOut); code != 0 {
		t.Fatalf("status --json: %d %s", code, errOut.String())
	}
	var s agent.State
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out.String())
	}
	if s.ComputerName() != "sites/pc-7" || s.SiteServer != "paris-1" || s.TaskEndpoint != task.URL || s.LastCheckIn.IsZero() {
		t.Errorf("status --json: %+v", s)
	}
	if strings.Contains(out.String(), "credential") {
		t.Errorf("the status shows the credential:\n%s", out.String())
	}
}

func TestSimulateCommand(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 100 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"simulate", "--count", "20", "--addresses", "10.40.0.0/24",
		"--locator", locator.URL, "--ca-file", ca.File, "--token", token, "--register-rate", "0",
		"--wait", "1s", "--stats-interval", "200ms", "--duration", "1s"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("simulate exited with %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var final agent.SimStats
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &final); err != nil {
		t.Fatalf("the last line is not JSON: %v\n%s", err, out.String())
	}
	if len(lines) < 4 || !final.Final || final.Agents != 20 || final.Registered != 20 || final.CheckIns < 20 {
		t.Errorf("%d lines, the last %+v", len(lines), final)
	}
	if n := len(task.Registrations()); n != 20 {
		t.Errorf("%d registrations, want 20", n)
	}
}

func TestSimulateCommandTakesWork(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", token)
	task.Set(func(b *agenttest.Behaviour) {
		b.NextCheckIn = 50 * time.Millisecond
		b.Offer = []protocol.WorkItem{{ID: "uid-sim.1", Task: "load/w", Attempt: 1,
			Action: protocol.Action{RunScript: &protocol.RunScript{Script: "exit 0", Interpreter: "sh", TimeoutSeconds: 60}}}}
	})
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"simulate", "--count", "8", "--addresses", "10.41.0.0/24",
		"--locator", locator.URL, "--ca-file", ca.File, "--token", token, "--register-rate", "0",
		"--wait", "1s", "--stats-interval", "200ms", "--duration", "2s",
		"--work-duration", "300ms", "--work-fail-percent", "50"}, &out, &errOut)
	if code != 0 {
		t.Fatalf("simulate exited with %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var final agent.SimStats
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &final); err != nil {
		t.Fatalf("the last line is not JSON: %v\n%s", err, out.String())
	}
	w := final.Tasks["load/w"]
	if final.WorkReceived != 8 || final.ResultsAcknowledged != 8 || w.Succeeded != 4 || w.Failed != 4 {
		t.Errorf("final statistics: %d received, %d acknowledged, task %+v", final.WorkReceived, final.ResultsAcknowledged, w)
	}
	for _, r := range task.Results() {
		if d := r.Finished.Sub(*r.Started); d < 300*time.Millisecond {
			t.Errorf("simulated work took %s, want --work-duration 300ms", d)
		}
	}
	if code := run(context.Background(), []string{"simulate", "--addresses", "10.41.0.0/24", "--locator", locator.URL,
		"--ca-file", ca.File, "--token", token, "--work-fail-percent", "101"}, &out, &errOut); code != 1 {
		t.Errorf("--work-fail-percent 101 gave exit code %d", code)
	}
}
