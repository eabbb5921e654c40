package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// Files of the state directory that keep the agent's work.
const (
	// WorkFile holds the work item the agent carries out, then its result
	// until the task service acknowledges it. Mode 0600: a script may hold
	// secrets.
	WorkFile = "work.json"
	// DoneFile lists the IDs of the last work items the agent finished
	// (maxDone), so that an item offered again is never run twice.
	DoneFile = "work-done.json"
	// scriptsDir holds a directory for each script while it runs.
	scriptsDir = "scripts"
	// maxDone is how many finished IDs the agent remembers.
	maxDone = 64
)

// States of a workRecord.
const (
	// recordRunning: the item started and has no result yet. Found at
	// start-up, it means the agent stopped while it ran: it is reported
	// Interrupted, never run again.
	recordRunning = "running"
	// recordFinished: Result is to be sent until acknowledged.
	recordFinished = "finished"
)

// interruptedMessage is the message of a result reported for an item
// found running at start-up.
const interruptedMessage = "the agent restarted while the work ran: it is not run again"

// workRecord is what WorkFile holds: one work item and where it stands.
type workRecord struct {
	Item    protocol.WorkItem    `json:"item"`
	State   string               `json:"state"`
	Started time.Time            `json:"started"`
	Result  *protocol.WorkStatus `json:"result,omitempty"`
}

// workState is an agent's work: at most one item at a time, the IDs it
// finished, and where its reports go. The loop's goroutine and the one
// carrying out the item share it, under mu.
type workState struct {
	mu sync.Mutex
	// current is the item carried out or reported now; nil when idle. Its
	// ID is sent as busy with every check-in.
	current *workRecord
	// done are the last maxDone IDs finished, oldest first.
	done []string
	// endpoint and credential are where reports go: as the loop last used
	// them. linkChanged, when made by a waiting report, is closed when
	// they change.
	endpoint, credential string
	linkChanged          chan struct{}
	// refused is a credential a report or an upload was refused with
	// (401), for the loop to handle as a refused check-in.
	refused string
	// packageEndpoints are the package endpoints of the last locate
	// answer: the package services of the servers that serve the agent,
	// in the order to try them. The content actions read them.
	packageEndpoints []string
	// relocateAsked: a package service answered 421, for the loop to
	// locate again.
	relocateAsked bool
}

// busyID is the ID of the item carried out or reported now, or "".
func (a *Agent) busyID() string {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	if a.work.current == nil {
		return ""
	}
	return a.work.current.Item.ID
}

// setLink says where reports go from now on.
func (a *Agent) setLink(endpoint, credential string) {
	w := &a.work
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.endpoint == endpoint && w.credential == credential {
		return
	}
	w.endpoint, w.credential = endpoint, credential
	if w.linkChanged != nil {
		close(w.linkChanged)
		w.linkChanged = nil
	}
}

// link returns where reports go, without waiting.
func (a *Agent) link() (endpoint, credential string) {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	return a.work.endpoint, a.work.credential
}

// awaitLink returns where reports go, once the agent knows: it has a
// credential and a task endpoint. ok is false when ctx ended first.
func (a *Agent) awaitLink(ctx context.Context) (endpoint, credential string, ok bool) {
	w := &a.work
	for {
		w.mu.Lock()
		if w.endpoint != "" && w.credential != "" {
			endpoint, credential = w.endpoint, w.credential
			w.mu.Unlock()
			return endpoint, credential, true
		}
		if w.linkChanged == nil {
			w.linkChanged = make(chan struct{})
		}
		changed := w.linkChanged
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", "", false
		case <-changed:
		}
	}
}

// reportRefused records that a report was refused with credential.
func (a *Agent) reportRefused(credential string) {
	a.work.mu.Lock()
	a.work.refused = credential
	a.work.mu.Unlock()
}

// takeRefused returns, once, the credential a report was refused with.
func (a *Agent) takeRefused() string {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	c := a.work.refused
	a.work.refused = ""
	return c
}

// setPackageEndpoints keeps the package endpoints of a locate answer. Only
// HTTPS ones are kept: the agent speaks nothing else. served is false when
// the answer gave no task endpoint (no server serves the agent).
func (a *Agent) setPackageEndpoints(endpoints []string, served bool) {
	var keep []string
	if !served {
		endpoints = nil
	}
	for _, e := range endpoints {
		if !strings.HasPrefix(e, "https://") {
			a.log.Warn("Ignoring a package endpoint that is not HTTPS", "endpoint", e)
			continue
		}
		keep = append(keep, e)
	}
	a.work.mu.Lock()
	a.work.packageEndpoints = keep
	a.work.mu.Unlock()
}

// packageEndpointList returns the package endpoints of the last locate
// answer.
func (a *Agent) packageEndpointList() []string {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	return slices.Clone(a.work.packageEndpoints)
}

// askRelocate asks the loop to locate again (a package service answered
// 421).
func (a *Agent) askRelocate() {
	a.work.mu.Lock()
	a.work.relocateAsked = true
	a.work.mu.Unlock()
}

// takeRelocateAsked says, once, whether the work asked to locate again.
func (a *Agent) takeRelocateAsked() bool {
	a.work.mu.Lock()
	defer a.work.mu.Unlock()
	asked := a.work.relocateAsked
	a.work.relocateAsked = false
	return asked
}

// awaitOtherCredential returns the agent's credential once it is one
// other than refused (after the loop registered again); ok is false when
// ctx ended first.
func (a *Agent) awaitOtherCredential(ctx context.Context, refused string) (credential string, ok bool) {
	w := &a.work
	for {
		w.mu.Lock()
		if w.credential != "" && w.credential != refused {
			credential = w.credential
			w.mu.Unlock()
			return credential, true
		}
		if w.linkChanged == nil {
			w.linkChanged = make(chan struct{})
		}
		changed := w.linkChanged
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-changed:
		}
	}
}

// loadWork reads the work state of the state directory: the IDs finished,
// and the item that was carried out or reported when the agent stopped.
func (a *Agent) loadWork() error {
	done, err := readDone(a.cfg.StateDir)
	if err != nil {
		return err
	}
	a.work.done = done
	rec, err := readWork(a.cfg.StateDir)
	if err != nil {
		// A torn write cannot happen (files are renamed into place): this
		// is a damaged disk or a person's edit. Keep it for them to see,
		// and go on without it.
		bad := filepath.Join(a.cfg.StateDir, WorkFile+".bad")
		a.log.Error("The work file is unreadable: moving it aside", "error", err, "movedTo", bad)
		if err := os.Rename(filepath.Join(a.cfg.StateDir, WorkFile), bad); err != nil {
			return fmt.Errorf("moving the unreadable work file aside: %w", err)
		}
		return nil
	}
	a.work.current = rec
	return nil
}

// resumeWork takes up the item found at start-up: an item that was
// running is reported Interrupted (never run again), a result not yet
// acknowledged is sent.
func (a *Agent) resumeWork(ctx context.Context) {
	a.work.mu.Lock()
	rec := a.work.current
	a.work.mu.Unlock()
	if rec == nil {
		return
	}
	a.goWork(func() {
		if rec.Result == nil {
			a.log.Warn("The agent restarted while work ran: reporting it interrupted, without running it again",
				"id", rec.Item.ID, "task", rec.Item.Task, "started", rec.Started)
			started := rec.Started
			st := failedStatus(rec.Item, started, protocol.ReasonInterrupted, interruptedMessage)
			a.conclude(ctx, rec, st, false)
			return
		}
		a.log.Info("Sending the result the task service had not acknowledged before the agent restarted",
			"id", rec.Item.ID, "task", rec.Item.Task, "state", rec.Result.State)
		a.deliverAndRelease(ctx, rec, false)
	})
}

// goWork runs f, the life of the agent's one item, in a goroutine of its
// own: Run waits for it before it returns.
func (a *Agent) goWork(f func()) {
	a.workers.Add(1)
	a.stats.workStarted()
	go func() {
		defer a.workers.Done()
		defer a.stats.workEnded()
		f()
	}()
}

// takeWork takes the first item of a check-in's answer that the agent has
// not carried out and is not carrying out, when it is idle, and starts it
// in the background.
func (a *Agent) takeWork(ctx context.Context, items []protocol.WorkItem) {
	if len(items) == 0 {
		return
	}
	now := time.Now().UTC()
	var taken *workRecord
	a.work.mu.Lock()
	for _, w := range items {
		switch {
		case w.ID == "":
			a.log.Warn("Ignoring a work item without an ID", "task", w.Task)
		case a.work.current != nil && a.work.current.Item.ID == w.ID:
			a.log.Debug("Work offered again while the agent carries it out", "id", w.ID)
		case slices.Contains(a.work.done, w.ID):
			a.stats.workIgnored()
			a.log.Info("Ignoring work the agent carried out already", "id", w.ID, "task", w.Task)
		case a.work.current != nil:
			a.stats.workIgnored()
			a.log.Info("Ignoring work while the agent carries out another item", "id", w.ID, "task", w.Task,
				"busyWith", a.work.current.Item.ID)
		default:
			if a.sim.on && w.Action.RunScript != nil {
				// A simulated agent runs nothing: it need not hold the
				// script while it waits (fifty thousand of them might).
				rs := *w.Action.RunScript
				rs.Script = ""
				w.Action.RunScript = &rs
			}
			taken = &workRecord{Item: w, State: recordRunning, Started: now}
			a.work.current = taken
		}
	}
	a.work.mu.Unlock()
	if taken == nil {
		return
	}
	a.stats.workReceived(taken.Item.Task, now)
	// Written before the work starts: an agent that stops while it runs
	// finds it at start-up and does not run it again.
	if err := writeWork(a.cfg.StateDir, taken); err != nil {
		a.log.Error("Recording the work before starting it: not starting it", "id", taken.Item.ID, "error", err)
		a.goWork(func() {
			a.conclude(ctx, taken, failedStatus(taken.Item, now, protocol.ReasonStartFailed,
				fmt.Sprintf("the agent could not record the work before starting it: %v", err)), false)
		})
		return
	}
	a.goWork(func() { a.carryOut(ctx, taken) })
}

// actionName names the action of an item, for the logs.
func actionName(act protocol.Action) string {
	var names []string
	for _, m := range []struct {
		set  bool
		name string
	}{
		{act.RunScript != nil, "runScript"},
		{act.Reboot != nil, "reboot"},
		{act.DeployImage != nil, "deployImage"},
		{act.InstallSoftware != nil, "installSoftware"},
		{act.CaptureImage != nil, "captureImage"},
	} {
		if m.set {
			names = append(names, m.name)
		}
	}
	if len(names) == 0 {
		return "unknown"
	}
	return strings.Join(names, "+")
}

// carryOut carries out an item and reports its result.
func (a *Agent) carryOut(ctx context.Context, rec *workRecord) {
	item := rec.Item
	a.log.Info("Starting work", "id", item.ID, "task", item.Task, "attempt", item.Attempt, "action", actionName(item.Action))
	progressSent := make(chan struct{})
	a.workers.Add(1)
	go func() {
		defer a.workers.Done()
		defer close(progressSent)
		a.sendProgress(ctx, rec)
	}()
	st, stopped := a.execute(ctx, rec)
	// The result follows the Running report, on its connection: work
	// shorter than the report's round trip would otherwise cut the report
	// off and cost the result a new connection.
	select {
	case <-progressSent:
	case <-ctx.Done():
	}
	if stopped {
		if a.cfg.StateDir != "" {
			a.log.Warn("The agent stopped while work ran: it will be reported interrupted", "id", item.ID, "task", item.Task)
		}
		return
	}
	// Simulated agents do not restart the computer they run on.
	a.conclude(ctx, rec, st, item.Action.Reboot != nil && st.State == protocol.WorkSucceeded && !a.sim.on)
}

// execute does what an item asks and returns its result; stopped is true
// when ctx ended first (there is no result).
func (a *Agent) execute(ctx context.Context, rec *workRecord) (protocol.WorkStatus, bool) {
	item := rec.Item
	act := item.Action
	if name := actionName(act); name == "unknown" || strings.Contains(name, "+") {
		return failedStatus(item, rec.Started, protocol.ReasonStartFailed, fmt.Sprintf(
			"the agent (version %s) does not know the action of this work item: it carries out one of runScript, reboot, "+
				"deployImage, installSoftware or captureImage", a.cfg.Version)), false
	}
	if a.sim.on {
		return a.simulateWork(ctx, rec)
	}
	switch {
	case act.RunScript != nil:
		return a.runScript(ctx, item, rec.Started)
	case act.DeployImage != nil:
		return a.deployImage(ctx, item, rec.Started)
	case act.InstallSoftware != nil:
		return a.installSoftware(ctx, item, rec.Started)
	case act.CaptureImage != nil:
		return a.captureImage(ctx, item, rec.Started)
	}
	// A reboot succeeds first: the computer restarts once the service has
	// recorded it (conclude), or its restart would lose the result.
	finished := time.Now().UTC()
	return protocol.WorkStatus{Attempt: item.Attempt, State: protocol.WorkSucceeded, Started: &rec.Started, Finished: &finished}, false
}

// simulateWork stands for the work of a simulated agent: it lasts the
// simulation's work duration, then succeeds, or fails with exit code 1
// for the agents chosen to fail. A simulated agent downloads, writes,
// installs and uploads nothing: deployImage, installSoftware and
// captureImage are simulated like runScript (installSoftware with an exit
// code, as its installer would have one).
func (a *Agent) simulateWork(ctx context.Context, rec *workRecord) (protocol.WorkStatus, bool) {
	timer := time.NewTimer(a.sim.duration)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return protocol.WorkStatus{}, true
	case <-timer.C:
	}
	finished := time.Now().UTC()
	st := protocol.WorkStatus{Attempt: rec.Item.Attempt, State: protocol.WorkSucceeded, Started: &rec.Started, Finished: &finished}
	code := int32(0)
	if a.sim.fail {
		code = 1
		st.State, st.Reason, st.Message = protocol.WorkFailed, protocol.ReasonExitCode, "the simulated script exited with code 1"
	}
	if rec.Item.Action.RunScript != nil || rec.Item.Action.InstallSoftware != nil {
		st.ExitCode = &code
		st.Output = "simulated\n"
	}
	return st, false
}

// sendProgress sends the Running report, once and at best: a failure
// neither delays nor fails the work. The task service answers it once it
// is queued (202), and the request timeout bounds it.
func (a *Agent) sendProgress(ctx context.Context, rec *workRecord) {
	endpoint, credential := a.link()
	if endpoint == "" || credential == "" {
		return
	}
	st := protocol.WorkStatus{Attempt: rec.Item.Attempt, State: protocol.WorkRunning, Started: &rec.Started}
	_, err := a.client.report(ctx, endpoint, credential, rec.Item.ID, st)
	if err != nil && ctx.Err() == nil {
		a.stats.progressFailed()
		a.log.Info("The progress report was not recorded: the work goes on", "id", rec.Item.ID, "endpoint", endpoint, "error", err)
	}
}

// conclude keeps an item's result and sends it until the task service
// acknowledges it; then the agent forgets the item (its ID stays in the
// done list) and, after a reboot item, restarts the computer.
func (a *Agent) conclude(ctx context.Context, rec *workRecord, st protocol.WorkStatus, reboot bool) {
	rec.State, rec.Result = recordFinished, &st
	attrs := []any{"id", rec.Item.ID, "task", rec.Item.Task, "state", st.State}
	if st.Reason != "" {
		attrs = append(attrs, "reason", st.Reason, "message", st.Message)
	}
	if st.ExitCode != nil {
		attrs = append(attrs, "exitCode", *st.ExitCode)
	}
	if st.Started != nil && st.Finished != nil {
		attrs = append(attrs, "duration", st.Finished.Sub(*st.Started).Round(time.Millisecond).String())
	}
	a.log.Info("Work finished", attrs...)
	if err := writeWork(a.cfg.StateDir, rec); err != nil {
		// The result is still sent; if the agent stops before the service
		// acknowledges it, the item is reported interrupted.
		a.log.Error("Keeping the work's result", "id", rec.Item.ID, "error", err)
	}
	a.deliverAndRelease(ctx, rec, reboot)
}

// deliverAndRelease sends rec's result until it is acknowledged or
// refused, then forgets the item.
func (a *Agent) deliverAndRelease(ctx context.Context, rec *workRecord, reboot bool) {
	outcome := a.deliver(ctx, rec)
	if outcome == deliveryStopped {
		return // WorkFile keeps the result: it is sent after a restart
	}
	a.forget(rec)
	if outcome == deliveryAcknowledged && reboot && a.reboot(ctx, rec.Item.ID) {
		// The computer goes down: take no other work meanwhile, or it
		// would be interrupted.
		timer := time.NewTimer(a.t.rebootGrace)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		a.log.Warn("The computer did not restart after the reboot command: taking work again", "id", rec.Item.ID,
			"after", a.t.rebootGrace.String())
	}
	a.work.mu.Lock()
	if a.work.current == rec {
		a.work.current = nil
	}
	a.work.mu.Unlock()
}

// forget adds rec's ID to the done list and removes WorkFile, in that
// order: whatever happens in between, the item never runs again.
func (a *Agent) forget(rec *workRecord) {
	a.work.mu.Lock()
	done := slices.DeleteFunc(slices.Clone(a.work.done), func(id string) bool { return id == rec.Item.ID })
	done = append(done, rec.Item.ID)
	if len(done) > maxDone {
		done = slices.Delete(done, 0, len(done)-maxDone)
	}
	a.work.done = done
	a.work.mu.Unlock()
	if err := writeDone(a.cfg.StateDir, done); err != nil {
		a.log.Error("Keeping the list of work done: the work file stays, so that it does not run again", "id", rec.Item.ID, "error", err)
		return
	}
	if err := removeWork(a.cfg.StateDir); err != nil {
		a.log.Error("Removing the work file", "id", rec.Item.ID, "error", err)
	}
}

// reboot runs the reboot command; it says whether the command succeeded.
func (a *Agent) reboot(ctx context.Context, id string) bool {
	args := strings.Fields(a.cfg.RebootCommand)
	if len(args) == 0 {
		a.log.Info("The agent has no reboot command: the computer is not restarted", "id", id)
		return false
	}
	a.log.Info("Restarting the computer", "id", id, "command", a.cfg.RebootCommand)
	ctx, cancel := context.WithTimeout(ctx, a.t.requestTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		a.log.Error("The reboot command failed", "id", id, "command", a.cfg.RebootCommand, "error", err,
			"output", truncateMessage(string(out)))
		return false
	}
	return true
}

// Outcomes of deliver.
type delivery int

const (
	deliveryAcknowledged delivery = iota
	// deliveryDropped: the service refused the result for good (409,
	// 404, another 4xx): it is not sent again.
	deliveryDropped
	// deliveryStopped: the agent stops before an answer.
	deliveryStopped
)

// deliver sends rec's result until the task service acknowledges or
// refuses it, or ctx ends. It retries after the Retry-After asked when
// there is one, else after transport errors, 5xx, 429 and 421 with the
// back-off, and after a 401 once the loop has dealt with the refused
// credential.
func (a *Agent) deliver(ctx context.Context, rec *workRecord) delivery {
	st, id := *rec.Result, rec.Item.ID
	retry := backoff{base: a.t.reportBase, max: a.t.reportMax}
	sent := time.Now()
	for attempt := 0; ; attempt++ {
		endpoint, credential, ok := a.awaitLink(ctx)
		if !ok {
			return deliveryStopped
		}
		if attempt > 0 {
			a.stats.reportRetried()
		}
		resp, err := a.client.report(ctx, endpoint, credential, id, st)
		if ctx.Err() != nil {
			return deliveryStopped
		}
		if err == nil {
			a.stats.resultAcknowledged(rec.Item.Task, st.State, sent, time.Now())
			a.log.Info("The task service recorded the result", "id", id, "state", st.State, "recorded", resp.Recorded, "endpoint", endpoint)
			return deliveryAcknowledged
		}
		a.stats.reportFailed(err)
		code := statusOf(err)
		var d time.Duration
		switch {
		case code == http.StatusConflict || code == http.StatusNotFound:
			a.stats.resultDropped()
			a.log.Warn("The task service refused the result: dropping it", "id", id, "state", st.State, "status", code, "error", err)
			return deliveryDropped
		case code == http.StatusUnauthorized:
			// The loop registers again (or backs off without a token), as
			// for a refused check-in; the report goes with the credential
			// it gets.
			a.reportRefused(credential)
			d = retry.next()
			a.log.Warn("The credential was refused for a report: retrying with the agent's next one", "id", id, "retryIn", d.String())
		case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests &&
			code != protocol.StatusRelocate:
			a.stats.resultDropped()
			a.log.Error("The task service refused the result as invalid: dropping it", "id", id, "state", st.State, "status", code, "error", err)
			return deliveryDropped
		default:
			d = retry.next()
			if asked := retryAfterOf(err); asked > 0 {
				// The service set the pace (a result it holds queued is
				// answered "come back in a second"): its delay, spread,
				// not the back-off, which would stretch each round.
				d = jitter(asked, a.t.retryJitter, nil)
			}
			a.log.Warn("Sending the result failed: retrying", "id", id, "endpoint", endpoint, "error", err, "retryIn", d.String())
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return deliveryStopped
		case <-timer.C:
		}
	}
}

// readWork reads WorkFile of dir; nil and no error when there is none.
func readWork(dir string) (*workRecord, error) {
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, WorkFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the work file: %w", err)
	}
	var rec workRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("reading the work file %s: %w", filepath.Join(dir, WorkFile), err)
	}
	if rec.Item.ID == "" || (rec.State != recordRunning && rec.State != recordFinished) || (rec.State == recordFinished) != (rec.Result != nil) {
		return nil, fmt.Errorf("reading the work file %s: no work item ID, or state %q does not match its result", filepath.Join(dir, WorkFile), rec.State)
	}
	return &rec, nil
}

// writeWork writes WorkFile of dir atomically, mode 0600; nothing without
// a state directory.
func writeWork(dir string, rec *workRecord) error {
	if dir == "" {
		return nil
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the work file: %w", err)
	}
	if err := writeFileAtomic(dir, WorkFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the work file: %w", err)
	}
	return nil
}

func removeWork(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.Remove(filepath.Join(dir, WorkFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the work file: %w", err)
	}
	return nil
}

// readDone reads DoneFile of dir; none is an empty list.
func readDone(dir string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	b, err := os.ReadFile(filepath.Join(dir, DoneFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the list of work done: %w", err)
	}
	var done []string
	if err := json.Unmarshal(b, &done); err != nil {
		return nil, fmt.Errorf("reading the list of work done %s: %w", filepath.Join(dir, DoneFile), err)
	}
	return done, nil
}

// writeDone writes DoneFile of dir atomically.
func writeDone(dir string, done []string) error {
	if dir == "" {
		return nil
	}
	b, err := json.Marshal(done)
	if err != nil {
		return fmt.Errorf("encoding the list of work done: %w", err)
	}
	if err := writeFileAtomic(dir, DoneFile, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("writing the list of work done: %w", err)
	}
	return nil
}
