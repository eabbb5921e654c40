package controllers

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/tasks"
)

// A DeploymentTask's status is computed here, without I/O, from the task,
// the Computers of its namespace and the task's DispatchShards (the
// dispatch state the task services write). The manager never writes a
// shard or a Computer: what the status says of a target comes from the
// target's entry, or from the absence of one.
//
// Targets are the union of the computers spec.targets resolves to now and
// the computers that have an entry: a computer that was handed the work
// and then left the selector, or was deleted, still counts. Each is, by
// its entry:
//   - no entry: pending;
//   - Claimed or Running: running, unless it was claimed longer ago than
//     the action's timeout plus lostGrace with no final report: then failed
//     with reason Lost (its agent or its task service went away); a late
//     report still counts once it lands in the entry;
//   - Succeeded, Failed: as reported.
//
// Per-site counts go by the Computer's status.site ("" for a computer in
// no site, or one that no longer exists). At most MaxTaskSites sites are
// listed, the first by name ("" first); the Ready message says how many
// more there are, and the task-wide counts include them all.
//
// The phase, in this order:
//  1. a terminal phase (Succeeded, Failed, Stopped) latches: it never
//     changes again, and completionTime says when it was reached;
//  2. spec.stop → Stopped (reason Stopped);
//  3. a selector or schedule that cannot be used → Pending, Stalled with
//     reason InvalidSelector or InvalidSchedule (admission refuses most
//     such specs; these are the checks it cannot make);
//  4. failed past spec.rollout.failureThreshold → Stopped (reason
//     FailureThresholdPassed);
//  5. no target → Pending (reason NoTargets);
//  6. nothing handed out yet and the schedule not open → Pending (reason
//     Pending before spec.schedule.startAt, WaitingForWindow outside the
//     window), the message saying when it opens;
//  7. nothing handed out yet and the action's Package is not Ready at any
//     site with pending targets → WaitingForContent (reason
//     WaitingForContent, or PackageNotFound, WrongPackageType);
//  8. every target finished → Succeeded when none failed, else Failed;
//  9. otherwise Running.
//
// The task services hand a site's targets the work only once
// status.sites[].contentReady is true for that site (always for the
// actions without a Package); the ContentReady condition names the sites
// that wait.
//
// Once terminal, the target set no longer follows the Computers: targets
// are the computers with an entry (whose states keep following their
// entries: work running when a task stops runs to its end), and the
// pending count is frozen at what it was (minus those that got the work
// after all, claimed in the instant the task stopped).
//
// Conditions: Ready is True only when Succeeded. Reconciling is True while
// Pending or Running; Stalled is True once Failed or Stopped, or with an
// unusable selector or schedule. observedGeneration is always the task's
// generation: every status is a verdict on the current spec.

// lostGrace is how long past the action's timeout a claimed entry may go
// without a final report before its target counts as failed with reason
// Lost: the agent's own timeout, its report and the task service's write
// all fit in it.
const lostGrace = 5 * time.Minute

// defaultActionTimeout is the timeout of an action that has none of its
// own: runScript's default, and reboot's (whose agent reports success
// before it restarts).
const defaultActionTimeout = 10 * time.Minute

// Bounds of a TaskFailure's fields (the API's MaxLength).
const (
	maxFailureComputer = 63
	maxFailureReason   = 64
	maxFailureMessage  = 256
)

// taskScope is what one reconcile of a DeploymentTask works from.
type taskScope struct {
	task *siteopsv1.DeploymentTask
	// now is when the status is computed.
	now time.Time
	// computers are the Computers of the task's namespace.
	computers []siteopsv1.Computer
	// shards are the task's DispatchShards; shards of another task UID are
	// ignored.
	shards []siteopsv1.DispatchShard
	// pkg is the Package the action needs; nil when it needs none or the
	// Package does not exist.
	pkg *siteopsv1.Package
}

// taskContent is what a task's action needs of its Package, and where it
// has it.
type taskContent struct {
	// needed: the action needs a Package (deployImage, installSoftware).
	needed bool
	// usable: the Package exists and has the type the action needs; when
	// not, reason and message say why.
	usable          bool
	reason, message string
	// ready are the sites at which the Package's content is Ready.
	ready map[string]bool
}

// contentOf reads what scope's task needs of its Package.
func contentOf(scope *taskScope) taskContent {
	name, typ := scope.task.Spec.Action.Package()
	if name == "" {
		return taskContent{}
	}
	c := taskContent{needed: true}
	p := scope.pkg
	switch {
	case p == nil:
		c.reason = siteopsv1.ReasonPackageNotFound
		c.message = fmt.Sprintf("Package %s does not exist in namespace %s: the task waits for it", name, scope.task.Namespace)
	case p.Spec.Type != typ:
		c.reason = siteopsv1.ReasonWrongPackageType
		c.message = fmt.Sprintf("Package %s is of type %s; %s needs a %s package", name, p.Spec.Type,
			tasks.ActionName(scope.task.Spec.Action), typ)
	default:
		c.usable = true
		c.ready = map[string]bool{}
		for _, st := range p.Status.Sites {
			if st.State == siteopsv1.ContentReady {
				c.ready[st.Site] = true
			}
		}
	}
	return c
}

// readyAnywhere tells whether the content is ready at a site with
// pending targets, so that work may be handed out.
func (c taskContent) readyAnywhere(t *taskTally) bool {
	for site, counts := range t.sites {
		if counts.Pending > 0 && c.readyAt(site) {
			return true
		}
	}
	return false
}

// readyAt tells whether the content is ready for the targets of site.
func (c taskContent) readyAt(site string) bool {
	return !c.needed || c.usable && c.ready[site]
}

// taskVerdict is the computed status and what the controller does next.
type taskVerdict struct {
	status *siteopsv1.DeploymentTaskStatus
	// requeueAfter is when the status changes by the passing of time alone
	// (a window opens or closes, an entry turns Lost); 0 for never.
	requeueAfter time.Duration
	// invalid is why the spec cannot be used; retrying does not help.
	invalid error
}

// taskState is the phase and the Ready condition's reason and message.
type taskState struct {
	phase, reason, message string
	// invalid is set for an unusable selector or schedule.
	invalid error
	// wait is when a task Pending on its schedule may start (zero: never);
	// close is when the window of a task Running with nothing handed out
	// closes (zero: no window).
	wait, close time.Time
}

// taskTally counts the targets.
type taskTally struct {
	counts siteopsv1.TargetCounts
	sites  map[string]*siteopsv1.TargetCounts
	// failures are every failed target, oldest first.
	failures []siteopsv1.TaskFailure
	// firstClaim is the earliest claim of any entry.
	firstClaim *metav1.Time
	// nextLost is the earliest time a running entry turns Lost; zero when
	// none will.
	nextLost time.Time
}

// handed is how many targets were handed the work.
func (t *taskTally) handed() int32 {
	return t.counts.Running + t.counts.Succeeded + t.counts.Failed
}

func (t *taskTally) site(name string) *siteopsv1.TargetCounts {
	c := t.sites[name]
	if c == nil {
		c = &siteopsv1.TargetCounts{}
		t.sites[name] = c
	}
	return c
}

// target states, for add.
const (
	targetPending = iota
	targetRunning
	targetSucceeded
	targetFailed
)

func (t *taskTally) add(site string, state int) {
	for _, c := range []*siteopsv1.TargetCounts{&t.counts, t.site(site)} {
		c.Total++
		switch state {
		case targetPending:
			c.Pending++
		case targetRunning:
			c.Running++
		case targetSucceeded:
			c.Succeeded++
		case targetFailed:
			c.Failed++
		}
	}
}

// desiredTaskStatus computes scope's task's status.
func desiredTaskStatus(scope *taskScope) taskVerdict {
	task := scope.task
	stored := &task.Status
	status := stored.DeepCopy()
	status.ObservedGeneration = task.Generation
	status.Action = tasks.ActionName(task.Spec.Action)

	latched := terminalPhase(stored.Phase)
	targets, targetsErr := tasks.CompileTargets(task.Spec.Targets)
	schedule, scheduleErr := tasks.CompileSchedule(task.Spec.Schedule)
	var resolved, missing []string
	if !latched && targetsErr == nil {
		resolved, missing = targets.Resolve(scope.computers)
		status.MissingComputers = missing[:min(len(missing), siteopsv1.MaxMissingComputers)]
	}
	tally := tallyTask(scope, resolved)
	content := contentOf(scope)
	if latched {
		tally.freezePending(stored)
	}

	var st taskState
	switch {
	case latched:
		st = latchedState(task, tally)
	case task.Spec.Stop:
		st = stoppedState(tally)
	case targetsErr != nil:
		st = taskState{phase: siteopsv1.TaskPending, reason: siteopsv1.ReasonInvalidSelector,
			message: targetsErr.Error(), invalid: targetsErr}
	case scheduleErr != nil:
		st = taskState{phase: siteopsv1.TaskPending, reason: siteopsv1.ReasonInvalidSchedule,
			message: scheduleErr.Error(), invalid: scheduleErr}
	default:
		st = activeState(task, tally, schedule, missing, scope.now, content)
	}

	status.Phase = st.phase
	status.Targets = tally.counts
	status.Progress = fmt.Sprintf("%d/%d", tally.counts.Succeeded, tally.counts.Total)
	// startTime is set when work may first be handed out: the task
	// services claim work only once it is set for the current generation,
	// so the spec (immutable from then on, by the CRD's CEL rule) cannot
	// change under work already handed out. A claim older than that (a
	// task stored before this rule) sets it too.
	if status.StartTime == nil {
		switch {
		case tally.firstClaim != nil:
			status.StartTime = tally.firstClaim
		case st.phase == siteopsv1.TaskRunning:
			started := metav1.NewTime(scope.now).Rfc3339Copy()
			status.StartTime = &started
		}
	}
	if terminalPhase(st.phase) && status.CompletionTime == nil {
		completed := metav1.NewTime(scope.now).Rfc3339Copy()
		status.CompletionTime = &completed
	}
	var unlisted int
	status.Sites, unlisted = taskSites(tally, content)
	if unlisted > 0 {
		st.message += fmt.Sprintf(" (status.sites lists the first %d sites by name; %d more are not listed)",
			siteopsv1.MaxTaskSites, unlisted)
	}
	status.Failures = tally.failures[:min(len(tally.failures), siteopsv1.MaxTaskFailures)]
	if len(status.Failures) == 0 {
		status.Failures = nil
	}
	if len(status.MissingComputers) == 0 {
		status.MissingComputers = nil
	}
	setTaskConditions(status, task.Generation, st)
	meta.SetStatusCondition(&status.Conditions, contentCondition(task, tally, content))
	return taskVerdict{status: status, requeueAfter: taskRequeue(scope.now, tally, st), invalid: st.invalid}
}

// terminalPhase tells the phases that latch.
func terminalPhase(phase string) bool {
	return phase == siteopsv1.TaskSucceeded || phase == siteopsv1.TaskFailed || phase == siteopsv1.TaskStopped
}

// taskEntries gathers the dispatch entries of scope's task by computer
// name. An entry found in two shards (the task services write each in the
// shard tasks.ShardOf names) counts once: the later attempt.
func taskEntries(scope *taskScope) map[string]*siteopsv1.DispatchEntry {
	uid := string(scope.task.UID)
	n := 0
	for i := range scope.shards {
		n += len(scope.shards[i].Entries)
	}
	entries := make(map[string]*siteopsv1.DispatchEntry, n)
	for i := range scope.shards {
		sh := &scope.shards[i]
		if sh.Spec.TaskUID != uid {
			continue
		}
		for name, e := range sh.Entries {
			if prev, dup := entries[name]; dup && prev.Attempt >= e.Attempt {
				continue
			}
			entries[name] = &e
		}
	}
	return entries
}

// tallyTask counts resolved (the targets spec.targets resolves to now;
// none for a latched or unusable task) and every computer with an entry.
func tallyTask(scope *taskScope, resolved []string) *taskTally {
	entries := taskEntries(scope)
	siteOf := make(map[string]string, len(scope.computers))
	for i := range scope.computers {
		siteOf[scope.computers[i].Name] = scope.computers[i].Status.Site
	}
	t := &taskTally{sites: map[string]*siteopsv1.TargetCounts{}}
	lostAfter := actionTimeout(scope.task.Spec.Action) + lostGrace
	for name, e := range entries {
		if t.firstClaim == nil || e.Claimed.Before(t.firstClaim) {
			claimed := e.Claimed.Rfc3339Copy()
			t.firstClaim = &claimed
		}
		site := siteOf[name]
		switch e.State {
		case siteopsv1.DispatchSucceeded:
			t.add(site, targetSucceeded)
		case siteopsv1.DispatchFailed:
			t.add(site, targetFailed)
			at := e.Claimed
			if e.Finished != nil {
				at = *e.Finished
			}
			t.failures = append(t.failures, taskFailure(name, e.Reason, e.ExitCode, e.Message, at.Time))
		default: // Claimed, Running
			lostAt := e.Claimed.Add(lostAfter)
			if scope.now.Before(lostAt) {
				t.add(site, targetRunning)
				if t.nextLost.IsZero() || lostAt.Before(t.nextLost) {
					t.nextLost = lostAt
				}
				continue
			}
			t.add(site, targetFailed)
			t.failures = append(t.failures, taskFailure(name, siteopsv1.FailureLost, nil,
				fmt.Sprintf("No report within the action's timeout and a grace of %s since %s claimed the work at %s",
					lostGrace, e.Server, formatTime(e.Claimed.Time)), lostAt))
		}
	}
	for _, name := range resolved {
		if _, handed := entries[name]; !handed {
			t.add(siteOf[name], targetPending)
		}
	}
	slices.SortFunc(t.failures, func(a, b siteopsv1.TaskFailure) int {
		return cmp.Or(a.Time.Compare(b.Time.Time), strings.Compare(a.Computer, b.Computer))
	})
	return t
}

// freezePending keeps a latched task's pending targets as stored: the
// targets that never got the work, less those that have an entry now.
func (t *taskTally) freezePending(stored *siteopsv1.DeploymentTaskStatus) {
	if p := stored.Targets.Total - t.counts.Total; p > 0 {
		t.counts.Total += p
		t.counts.Pending += p
	}
	for _, s := range stored.Sites {
		c := t.site(s.Site)
		if p := s.Targets.Total - c.Total; p > 0 {
			c.Total += p
			c.Pending += p
		}
	}
}

// taskFailure is one failed target, its fields cut to the API's bounds.
func taskFailure(computer, reason string, exitCode *int32, message string, at time.Time) siteopsv1.TaskFailure {
	t := metav1.NewTime(at).Rfc3339Copy()
	f := siteopsv1.TaskFailure{Computer: cutJSON(computer, maxFailureComputer),
		Reason: cutJSON(reason, maxFailureReason), Message: cutJSON(message, maxFailureMessage), Time: &t}
	if exitCode != nil {
		code := *exitCode
		f.ExitCode = &code
	}
	return f
}

// cutJSON cuts s, on a rune boundary, to its longest prefix that takes at
// most n bytes as a JSON string (so at most n characters, as the API counts
// them): the API server stores "<" as \u003c, so a bound in characters
// alone would let a message of such characters take six times its length.
func cutJSON(s string, n int) string {
	size := 0
	for i, r := range s {
		switch {
		case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
			size += 2
		case r < 0x20 || r == '<' || r == '>' || r == '&' || r == '\u2028' || r == '\u2029' || r == utf8.RuneError:
			size += 6
		default:
			size += utf8.RuneLen(r)
		}
		if size > n {
			return s[:i]
		}
	}
	return s
}

// actionTimeout bounds one run of the action on a target.
func actionTimeout(a siteopsv1.DeploymentTaskAction) time.Duration {
	var d *metav1.Duration
	switch {
	case a.RunScript != nil:
		d = &a.RunScript.Timeout
	case a.DeployImage != nil:
		d = a.DeployImage.Timeout
	case a.InstallSoftware != nil:
		d = a.InstallSoftware.Timeout
	case a.CaptureImage != nil:
		d = a.CaptureImage.Timeout
	}
	if d != nil && d.Duration > 0 {
		return d.Duration
	}
	if a.RunScript != nil || a.Reboot != nil {
		return defaultActionTimeout
	}
	return defaultPackageActionTimeout
}

// defaultPackageActionTimeout is the timeout of a package or capture
// action that has none (the CRD's default).
const defaultPackageActionTimeout = time.Hour

// contentCondition is the task's ContentReady condition: True when the
// action needs no Package or its content is Ready at every site with
// targets; False naming the sites that wait, or why the Package cannot be
// used.
func contentCondition(task *siteopsv1.DeploymentTask, t *taskTally, c taskContent) metav1.Condition {
	cond := metav1.Condition{Type: siteopsv1.ConditionContentReady, Status: metav1.ConditionTrue,
		ObservedGeneration: task.Generation}
	name, _ := task.Spec.Action.Package()
	switch {
	case !c.needed:
		cond.Reason, cond.Message = siteopsv1.ReasonNoContentNeeded, "The action needs no Package"
		return cond
	case !c.usable:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, c.reason, c.message
		return cond
	}
	var waiting []string
	for _, site := range slices.Sorted(maps.Keys(t.sites)) {
		if !c.ready[site] {
			waiting = append(waiting, siteLabel(site))
		}
	}
	if len(waiting) == 0 {
		cond.Reason = siteopsv1.ReasonContentReady
		cond.Message = fmt.Sprintf("Package %s is Ready at every site of the targets (%d)", name, len(t.sites))
		return cond
	}
	cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonWaitingForContent
	cond.Message = boundedMessage(fmt.Sprintf("Package %s is not Ready yet at %s (%d of %d sites): their targets get the work once it is (the Package's status.sites says how far it is)",
		name, nameList(waiting), len(waiting), len(t.sites)))
	return cond
}

// taskSites lists the per-site counts by site name, at most MaxTaskSites
// of them, and says how many more there are.
func taskSites(t *taskTally, content taskContent) ([]siteopsv1.TaskSiteStatus, int) {
	names := slices.Sorted(maps.Keys(t.sites))
	listed := names[:min(len(names), siteopsv1.MaxTaskSites)]
	if len(listed) == 0 {
		return nil, 0
	}
	sites := make([]siteopsv1.TaskSiteStatus, 0, len(listed))
	for _, name := range listed {
		sites = append(sites, siteopsv1.TaskSiteStatus{Site: name, ContentReady: content.readyAt(name),
			Targets: *t.sites[name]})
	}
	return sites, len(names) - len(listed)
}

// countsSummary says the counts in a few words.
func countsSummary(c siteopsv1.TargetCounts) string {
	return fmt.Sprintf("%d/%d succeeded, %d failed, %d running, %d pending",
		c.Succeeded, c.Total, c.Failed, c.Running, c.Pending)
}

// stoppedState is the state of a task stopped by spec.stop.
func stoppedState(t *taskTally) taskState {
	return taskState{phase: siteopsv1.TaskStopped, reason: siteopsv1.ReasonTaskStopped,
		message: "Stopped by spec.stop: no new work is handed out, work already running runs to its end; " +
			countsSummary(t.counts)}
}

// thresholdState is the state of a task stopped by its failure threshold.
func thresholdState(task *siteopsv1.DeploymentTask, t *taskTally) taskState {
	return taskState{phase: siteopsv1.TaskStopped, reason: siteopsv1.ReasonThresholdPassed,
		message: fmt.Sprintf("More than %d%% of the targets failed (spec.rollout.failureThreshold): no new work is handed out; %s",
			*task.Spec.Rollout.FailureThreshold, countsSummary(t.counts))}
}

// finishedState is the state of a task whose targets all finished.
func finishedState(t *taskTally) taskState {
	if t.counts.Failed == 0 {
		return succeededState(t)
	}
	return failedState(t)
}

func succeededState(t *taskTally) taskState {
	return taskState{phase: siteopsv1.TaskSucceeded, reason: siteopsv1.ReasonTaskSucceeded,
		message: fmt.Sprintf("All %d targets succeeded", t.counts.Total)}
}

func failedState(t *taskTally) taskState {
	return taskState{phase: siteopsv1.TaskFailed, reason: siteopsv1.ReasonTaskFailed,
		message: "Every target finished and some failed (status.failures; each Computer's status.lastTask has its output): " +
			countsSummary(t.counts)}
}

// latchedState is the state of a task whose stored phase is terminal: the
// same phase and reason, with the counts of now (a late report of a Lost
// target may still change them).
func latchedState(task *siteopsv1.DeploymentTask, t *taskTally) taskState {
	switch task.Status.Phase {
	case siteopsv1.TaskSucceeded:
		return succeededState(t)
	case siteopsv1.TaskFailed:
		return failedState(t)
	}
	ready := meta.FindStatusCondition(task.Status.Conditions, siteopsv1.ConditionReady)
	if ready != nil && ready.Reason == siteopsv1.ReasonThresholdPassed && task.Spec.Rollout != nil &&
		task.Spec.Rollout.FailureThreshold != nil {
		return thresholdState(task, t)
	}
	return stoppedState(t)
}

// activeState is the state of a task that is neither latched, stopped nor
// unusable.
func activeState(task *siteopsv1.DeploymentTask, t *taskTally, schedule *tasks.Schedule, missing []string,
	now time.Time, content taskContent) taskState {
	c := t.counts
	switch {
	case tasks.ThresholdPassed(task.Spec.Rollout, int(c.Failed), int(c.Total)):
		return thresholdState(task, t)
	case c.Total == 0:
		message := "No Computer matches spec.targets yet"
		if len(missing) > 0 {
			message += "; no Computer named " + nameList(missing) + " exists"
		}
		return taskState{phase: siteopsv1.TaskPending, reason: siteopsv1.ReasonNoTargets, message: message}
	case t.handed() == 0 && !schedule.Open(now):
		st := taskState{phase: siteopsv1.TaskPending, wait: schedule.NextOpen(now)}
		when := "never (no window day comes)"
		if !st.wait.IsZero() {
			when = formatTime(st.wait)
		}
		if s := task.Spec.Schedule; s != nil && s.StartAt != nil && now.Before(s.StartAt.Time) {
			st.reason = siteopsv1.ReasonTaskPending
			st.message = fmt.Sprintf("Waiting for spec.schedule.startAt: work may start at %s", when)
		} else {
			st.reason = siteopsv1.ReasonWaitingForWindow
			st.message = fmt.Sprintf("Waiting for the maintenance window (spec.schedule.window): it opens next at %s", when)
		}
		return st
	case t.handed() == 0 && !content.readyAnywhere(t):
		st := taskState{phase: siteopsv1.TaskWaitingForContent, reason: content.reason, message: content.message}
		if content.usable {
			name, _ := task.Spec.Action.Package()
			st.reason = siteopsv1.ReasonWaitingForContent
			st.message = fmt.Sprintf("Waiting for Package %s to be Ready at a site of the targets (its status.sites says how far it is)", name)
		}
		return st
	case c.Pending == 0 && c.Running == 0:
		return finishedState(t)
	}
	st := taskState{phase: siteopsv1.TaskRunning, reason: siteopsv1.ReasonTaskRunning, message: countsSummary(c)}
	if t.handed() == 0 {
		// Back to Pending when the window closes with nothing handed out.
		st.close = schedule.NextClose(now)
	}
	return st
}

// setTaskConditions sets Ready and the kstatus conditions for st.
func setTaskConditions(status *siteopsv1.DeploymentTaskStatus, generation int64, st taskState) {
	message := boundedMessage(st.message)
	ready := metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: st.reason, Message: message, ObservedGeneration: generation}
	switch {
	case st.phase == siteopsv1.TaskSucceeded:
		ready.Status = metav1.ConditionTrue
		setConverged(&status.Conditions)
	case st.phase == siteopsv1.TaskFailed || st.phase == siteopsv1.TaskStopped || st.invalid != nil:
		setStalled(&status.Conditions, generation, st.reason, message)
	default:
		setReconciling(&status.Conditions, generation, st.reason, message)
	}
	meta.SetStatusCondition(&status.Conditions, ready)
}

// taskRequeue is how long after now the status changes by time alone: an
// entry turns Lost, a schedule opens, or a window closes before any work
// was handed out.
func taskRequeue(now time.Time, t *taskTally, st taskState) time.Duration {
	var next time.Time
	for _, at := range []time.Time{t.nextLost, st.wait, st.close} {
		if at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if next.IsZero() {
		return 0
	}
	return next.Sub(now)
}
