//go:build unix

package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// expectGone fails the test unless process pid (decimal) has ended: it no
// longer exists, or is a zombie that nothing reaped (in a container whose
// first process reaps nothing).
func expectGone(t *testing.T, pid, what string) {
	t.Helper()
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 1 {
		t.Fatalf("%s: no process ID (%q)", what, pid)
	}
	agenttest.Eventually(t, 5*time.Second, func() bool {
		if err := syscall.Kill(n, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		stat, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
		if err != nil {
			return false
		}
		// "pid (comm) state ...": the state follows the last ')'.
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		return len(fields) > 0 && fields[0] == "Z"
	}, "%s (process %d) is still running", what, n)
}

func TestTimeoutKillsTheScriptAndItsChildren(t *testing.T) {
	e := newWorkEnv(t)
	const id = "uid-t.1"
	// The child keeps the script's output open: the agent must not wait
	// for it.
	e.task.Set(func(b *agenttest.Behaviour) {
		b.Offer = []protocol.WorkItem{scriptItem(id, `sleep 1000 &
echo $! > "`+e.path("child")+`"
echo started
wait`, 1)}
	})
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonTimedOut || st.ExitCode != nil ||
		!strings.Contains(st.Message, "timeout of 1s") || st.Output != "started\n" {
		t.Errorf("result %+v, want Failed TimedOut with the output so far", st)
	}
	if d := st.Finished.Sub(*st.Started); d < time.Second || d > 3*time.Second {
		t.Errorf("the script ran %s, want its timeout of 1s", d)
	}
	child, _ := os.ReadFile(e.path("child"))
	expectGone(t, strings.TrimSpace(string(child)), "the script's background child")
}
