//go:build windows

package agent

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// DefaultRebootCommand is the command that restarts the computer after a
// reboot work item succeeded (agent run --reboot-command).
const DefaultRebootCommand = "shutdown /r /t 0"

// setProcessGroup starts the command in a process group of its own.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
}

// killProcessGroup kills p and the processes it started: taskkill /T walks
// the tree of child processes (the standard library has no job objects),
// then p is killed in case taskkill could not.
func killProcessGroup(p *os.Process) error {
	_ = exec.Command("taskkill", "/T", "/F", "/PID", strconv.Itoa(p.Pid)).Run()
	return p.Kill()
}

// exitCodeOf is the exit code of a process.
func exitCodeOf(ps *os.ProcessState) int32 {
	return int32(ps.ExitCode())
}

// installerFile is the name an installSoftware item's installer runs as:
// Windows runs only a file with the extension of a program.
const installerFile = "installer.exe"

// isTextBusy is false: Windows has no ETXTBSY.
func isTextBusy(error) bool { return false }
