package simcluster

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Process is a command started in a process group of its own, with its
// output going to a log file. Stop ends the whole group; on Linux the
// kernel also kills the process if the process that started it dies, so a
// test binary killed by a timeout leaves nothing behind.
type Process struct {
	// Name names the process in errors.
	Name string
	// LogPath holds everything the process wrote to stdout and stderr.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // what Wait returned; valid once done is closed
}

// StartProcess starts path with args, its stdout and stderr appended to
// logPath.
func StartProcess(name, path string, args []string, logPath string) (*Process, error) {
	return startCommand(name, exec.Command(path, args...), logPath)
}

// startCommand starts cmd (its environment and directory already set) as
// a Process.
func startCommand(name string, cmd *exec.Cmd, logPath string) (*Process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the log of %s: %w", name, err)
	}
	defer logFile.Close() // the child holds its own descriptor
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, cmd.Path, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// ExitCode is the exit status of an exited process, 128 plus the signal's
// number when a signal ended it (as a container runtime reports it), and -1
// while it runs.
func (p *Process) ExitCode() int {
	select {
	case <-p.done:
	default:
		return -1
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return p.cmd.ProcessState.ExitCode()
}

// Pid is the process id, which is also its process group id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitError is what the process's exit reported; nil while it runs.
func (p *Process) ExitError() error {
	select {
	case <-p.done:
		if p.err == nil {
			return fmt.Errorf("%s exited with status 0", p.Name)
		}
		return fmt.Errorf("%s exited: %w", p.Name, p.err)
	default:
		return nil
	}
}

// Stop sends SIGTERM to the process group, then SIGKILL if the process has
// not exited within grace, and waits for it. Stopping a stopped process
// does nothing.
func (p *Process) Stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := -p.cmd.Process.Pid
	if err := syscall.Kill(pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling %s: %w", p.Name, err)
	}
	select {
	case <-p.done:
	case <-time.After(grace):
		if err := syscall.Kill(pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("killing %s: %w", p.Name, err)
		}
		<-p.done
	}
	// Children the process left in its group.
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	return nil
}

// LogTail is the last n lines of the process's log.
func (p *Process) LogTail(n int) string {
	return fileTail(p.LogPath, n)
}

// MemoryStatus is what /proc/<pid>/status says about a process's memory, in
// bytes.
type MemoryStatus struct {
	// RSS is the resident set size now (VmRSS).
	RSS int64
	// PeakRSS is the highest resident set size so far (VmHWM).
	PeakRSS int64
}

// Memory reads the process's resident set sizes. It fails once the process
// has exited.
func (p *Process) Memory() (MemoryStatus, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.Pid()))
	if err != nil {
		return MemoryStatus{}, fmt.Errorf("reading the status of %s: %w", p.Name, err)
	}
	var m MemoryStatus
	for line := range strings.SplitSeq(string(data), "\n") {
		field, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch field {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.PeakRSS
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return MemoryStatus{}, fmt.Errorf("parsing %s of %s: %w", field, p.Name, err)
		}
		*dst = kb * 1024
	}
	return m, nil
}

// CPUTime is the user and system CPU time the process has used so far.
func (p *Process) CPUTime() (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Pid()))
	if err != nil {
		return 0, fmt.Errorf("reading the stat of %s: %w", p.Name, err)
	}
	// The command name, in parentheses, may hold spaces: fields count from
	// after its closing parenthesis; utime and stime are fields 14 and 15.
	rest := data[bytes.LastIndexByte(data, ')')+1:]
	fields := strings.Fields(string(rest))
	if len(fields) < 13 {
		return 0, fmt.Errorf("parsing the stat of %s: %d fields", p.Name, len(fields))
	}
	var ticks int64
	for _, f := range fields[11:13] {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing the stat of %s: %w", p.Name, err)
		}
		ticks += n
	}
	// USER_HZ is 100 on every Linux architecture Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// fileTail is the last n lines of a file, or a note saying why it cannot be
// read.
func fileTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
