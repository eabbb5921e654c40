package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/siteops/site-operator/internal/protocol"
)

// defaultScriptTimeout bounds a script whose work item gives no timeout
// (the API's default).
const defaultScriptTimeout = 10 * time.Minute

// interpreters lists the interpreters a runScript item may name.
var interpreters = []string{"sh", "bash", "python3", "pwsh", "powershell", "cmd"}

// interpreterCommand returns how to run a script with interp: the program,
// the arguments before the script file, and the file's extension (some
// interpreters run only files with theirs). ok is false for an interpreter
// the agent does not know.
func interpreterCommand(interp string) (program string, args []string, ext string, ok bool) {
	switch interp {
	case "sh":
		return "sh", nil, ".sh", true
	case "bash":
		return "bash", nil, ".sh", true
	case "python3":
		return "python3", nil, ".py", true
	case "pwsh":
		return "pwsh", []string{"-NoProfile", "-NonInteractive", "-File"}, ".ps1", true
	case "powershell":
		return "powershell", []string{"-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-File"}, ".ps1", true
	case "cmd":
		return "cmd", []string{"/c"}, ".cmd", true
	}
	return "", nil, "", false
}

// scriptContent is what the script file holds: Windows PowerShell reads a
// file without a byte order mark in the system's ANSI code page, so a
// script for it starts with the UTF-8 one.
func scriptContent(interp, script string) []byte {
	if interp == "powershell" {
		return append([]byte("\uFEFF"), script...)
	}
	return []byte(script)
}

// runScript runs a runScript item and returns its result. stopped is true
// when ctx ended (the agent stops) while the script ran: it was killed,
// and there is no result.
func (a *Agent) runScript(ctx context.Context, item protocol.WorkItem, started time.Time) (st protocol.WorkStatus, stopped bool) {
	rs := item.Action.RunScript
	interp := rs.Interpreter
	if interp == "" {
		interp = "sh" // the API's default
	}
	command, args, ext, ok := interpreterCommand(interp)
	if !ok {
		return failedStatus(item, started, protocol.ReasonInterpreterNotFound,
			fmt.Sprintf("the agent knows no interpreter %q: it runs %s", interp, strings.Join(interpreters, ", "))), false
	}
	path, err := exec.LookPath(command)
	if err != nil {
		return failedStatus(item, started, protocol.ReasonInterpreterNotFound,
			fmt.Sprintf("interpreter %s not found on this computer: %v", command, err)), false
	}
	dir, err := a.scriptDir(item.ID)
	if err != nil {
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("making the script's directory: %v", err)), false
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			a.log.Warn("Removing the script's directory", "id", item.ID, "error", err)
		}
	}()
	file := filepath.Join(dir, "script"+ext)
	if err := os.WriteFile(file, scriptContent(interp, rs.Script), 0o600); err != nil {
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("writing the script: %v", err)), false
	}

	timeout := time.Duration(rs.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = defaultScriptTimeout
	}
	return a.runProgram(ctx, item, started, program{
		what: "the script", name: command, path: path, args: append(args, file), dir: dir, timeout: timeout,
		timedOut: fmt.Sprintf("the script ran past its timeout of %s: it was killed, with the processes it started", timeout),
		logAttrs: []any{"interpreter", interp},
	})
}

// program is a program a work item runs: a script's interpreter, or an
// installer.
type program struct {
	// what names it in messages ("the script", "the installer"); name is
	// the command, for a failed start.
	what, name string
	path       string
	args       []string
	// dir is its working directory.
	dir string
	// timeout bounds it; timedOut is the message when it runs past.
	timeout  time.Duration
	timedOut string
	// logAttrs are added to the log line that starts it.
	logAttrs []any
}

// textBusyRetries is how many times a program whose file another process
// still holds open for writing (ETXTBSY: a process forked by another
// goroutine while the file was written has not exec'd yet) is started
// again.
const textBusyRetries = 10

// runProgram runs p for item, in a process group of its own that the
// timeout kills whole, keeping the last protocol.MaxOutputBytes of its
// output; its exit code decides. stopped is true when ctx ended (the agent
// stops) while it ran: it was killed, and there is no result.
func (a *Agent) runProgram(ctx context.Context, item protocol.WorkItem, started time.Time, p program) (st protocol.WorkStatus, stopped bool) {
	runCtx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	out := newTailBuffer(protocol.MaxOutputBytes)
	var timedOut bool
	var cmd *exec.Cmd
	for try := 0; ; try++ {
		cmd = exec.CommandContext(runCtx, p.path, p.args...)
		cmd.Dir = p.dir
		cmd.Env = append(os.Environ(), "SITEOPS_WORK_ID="+item.ID, "SITEOPS_TASK="+item.Task)
		// One writer for both: os/exec then copies them through one pipe,
		// in the order the program wrote them.
		cmd.Stdout, cmd.Stderr = out, out
		setProcessGroup(cmd)
		c := cmd
		c.Cancel = func() error {
			// Called once, when runCtx ends before the program does.
			stopped = ctx.Err() != nil
			timedOut = !stopped
			return killProcessGroup(c.Process)
		}
		// A process the program left behind may hold its output open: stop
		// reading that long after the program ended (or was killed).
		cmd.WaitDelay = a.t.scriptWaitDelay
		err := cmd.Start()
		if err == nil {
			break
		}
		if isTextBusy(err) && try < textBusyRetries && runCtx.Err() == nil {
			time.Sleep(time.Duration(try+1) * 10 * time.Millisecond)
			continue
		}
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("starting %s: %v", p.name, err)), false
	}
	a.log.Info("Running "+p.what, append([]any{"id", item.ID, "pid", cmd.Process.Pid, "timeout", p.timeout.String()}, p.logAttrs...)...)
	waitErr := cmd.Wait()
	if stopped {
		return protocol.WorkStatus{}, true
	}
	finished := time.Now().UTC()
	st = protocol.WorkStatus{Attempt: item.Attempt, Started: &started, Finished: &finished}
	st.Output, st.OutputTruncated = outputOf(out)
	switch {
	case timedOut:
		st.State, st.Reason = protocol.WorkFailed, protocol.ReasonTimedOut
		st.Message = p.timedOut
	case cmd.ProcessState == nil:
		st.State, st.Reason = protocol.WorkFailed, protocol.ReasonStartFailed
		st.Message = fmt.Sprintf("waiting for %s: %v", p.name, waitErr)
	default:
		code := exitCodeOf(cmd.ProcessState)
		st.ExitCode = &code
		if code == 0 {
			st.State = protocol.WorkSucceeded
		} else {
			st.State, st.Reason = protocol.WorkFailed, protocol.ReasonExitCode
			st.Message = fmt.Sprintf("%s exited with code %d", p.what, code)
		}
		if errors.Is(waitErr, exec.ErrWaitDelay) {
			st.Message = joinMessage(st.Message, "processes it started held its output open after it ended: the output stops there")
		}
	}
	st.Message = truncateMessage(st.Message)
	return st, false
}

// scriptDir makes an empty directory for the script of work item id, in
// the state directory (or a temporary one without it), private to the
// agent's user.
func (a *Agent) scriptDir(id string) (string, error) {
	if a.cfg.StateDir == "" {
		return os.MkdirTemp("", "site-agent-work-")
	}
	parent := filepath.Join(a.cfg.StateDir, scriptsDir)
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return "", err
	}
	dir := filepath.Join(parent, "item-"+safeName(id))
	if err := os.RemoveAll(dir); err != nil { // what a killed agent left
		return "", err
	}
	return dir, os.Mkdir(dir, 0o700)
}

// safeName keeps the characters of a work ID that are safe in a file name
// on every system.
func safeName(id string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, id)
}

// failedStatus is a Failed result of an item that did not run.
func failedStatus(item protocol.WorkItem, started time.Time, reason, message string) protocol.WorkStatus {
	finished := time.Now().UTC()
	return protocol.WorkStatus{Attempt: item.Attempt, State: protocol.WorkFailed, Reason: reason,
		Message: truncateMessage(message), Started: &started, Finished: &finished}
}

func joinMessage(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// truncateMessage makes s valid UTF-8 of at most protocol.MaxMessageLength
// bytes, cut at a character's boundary.
func truncateMessage(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= protocol.MaxMessageLength {
		return s
	}
	s = s[:protocol.MaxMessageLength]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// tailBuffer keeps the last max bytes written to it, in at most 2·max
// bytes of memory, however much is written.
type tailBuffer struct {
	max   int
	data  []byte
	total int64
}

func newTailBuffer(max int) *tailBuffer {
	return &tailBuffer{max: max, data: make([]byte, 0, 2*max)}
}

// Write keeps the end of p. os/exec calls it from one goroutine at a time
// (Stdout and Stderr are the same writer), and its result is read after
// Wait.
func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	b.total += int64(n)
	if len(p) > b.max {
		p = p[len(p)-b.max:]
	}
	if len(b.data)+len(p) > cap(b.data) {
		keep := min(len(b.data), b.max-len(p))
		copy(b.data, b.data[len(b.data)-keep:])
		b.data = b.data[:keep]
	}
	b.data = append(b.data, p...)
	return n, nil
}

// tail returns the last max bytes written and whether more were written.
func (b *tailBuffer) tail() ([]byte, bool) {
	d := b.data
	if len(d) > b.max {
		d = d[len(d)-b.max:]
	}
	return d, b.total > int64(len(d))
}

// outputOf is the output to report: the end of what the script wrote, as
// valid UTF-8 of at most protocol.MaxOutputBytes (the service counts the
// bytes after decoding the JSON, where an invalid byte becomes three), and
// whether its beginning was cut.
func outputOf(b *tailBuffer) (string, bool) {
	tail, truncated := b.tail()
	if truncated {
		// The cut may have split a character: drop what is left of it.
		for i := 0; i < utf8.UTFMax && len(tail) > 0 && !utf8.RuneStart(tail[0]); i++ {
			tail = tail[1:]
		}
	}
	s := strings.ToValidUTF8(string(tail), "\uFFFD")
	for len(s) > protocol.MaxOutputBytes {
		_, size := utf8.DecodeRuneInString(s)
		s, truncated = s[size:], true
	}
	return s, truncated
}
