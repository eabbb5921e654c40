//go:build unix

package agent

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// DefaultRebootCommand is the command that restarts the computer after a
// reboot work item succeeded (agent run --reboot-command).
const DefaultRebootCommand = "shutdown -r now"

// setProcessGroup starts the command in a process group of its own, so that
// a timeout kills the processes the script started too.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killProcessGroup kills the process group that p leads: the script and
// every process it started that stayed in its group.
func killProcessGroup(p *os.Process) error {
	err := syscall.Kill(-p.Pid, syscall.SIGKILL)
	if errors.Is(err, syscall.ESRCH) {
		return os.ErrProcessDone
	}
	return err
}

// exitCodeOf is the exit code of a process, 128 plus the signal's number
// when a signal ended it (as shells report it).
func exitCodeOf(ps *os.ProcessState) int32 {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ps.ExitCode())
}

// installerFile is the name an installSoftware item's installer runs as.
const installerFile = "installer"

// isTextBusy says whether a program could not start because a process
// still holds its file open for writing.
func isTextBusy(err error) bool { return errors.Is(err, syscall.ETXTBSY) }
