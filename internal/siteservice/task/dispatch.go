package task

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/tasks"
)

// The dispatcher hands out DeploymentTask work to the agents this service
// serves. The check-in already applied the serving rules (an agent that
// another server serves is told to locate again), so a computer's work is
// handed out by a server that serves it.
//
// The dispatch state lives in the API server, in the task's DispatchShards:
// a computer's entry is in shard tasks.ShardOf(name). Before the work is
// handed out, the entry is claimed by a write of the shard conditioned on
// its resourceVersion, so that another replica, another site's server that
// the computer moved to, or this service after a restart, sees the claim
// and never hands the work again. The claims and reports that wait for one
// shard share one write: while a write is in flight the next batch
// gathers, so the batches grow with the load, and a task for thousands of
// computers costs a few writes per second per shard instead of one per
// computer.
type dispatcher struct {
	k      *kube
	server string
	log    *slog.Logger
	now    func() time.Time
	// wake asks the service to look again at the held check-ins: work may
	// be due for them (a task arrived, a window opened, room freed up).
	wake func()
	// content looks up a Package's content in the cache; false when the
	// cache does not hold the Package.
	content func(namespace, name string) (protocol.Content, bool)

	mu     sync.Mutex
	tasks  map[string]*taskView // by UID
	shards map[shardKey]*shardWriter
	// claimWrites are the shard writes in flight that carry claims; the
	// other writes wait for them (claimsFirst).
	claimWrites int
	claimsDone  chan struct{} // closed when claimWrites falls to 0
	// gathering counts the passes under way (gather): while one runs, the
	// shard writers queue what is submitted and start no write, so that a
	// task due for thousands of held check-ins at once is claimed in one
	// write per shard rather than a first write of one claim each.
	gathering int
	deferred  []*shardWriter

	dispatched, reoffered, results, conflicts, shardWrites, shardWriteFailures, requeued atomic.Int64
	// writing counts the shards with a write loop running.
	writing atomic.Int64
}

type shardKey struct {
	uid string
	n   int32
}

// taskView is what the dispatcher keeps of a DeploymentTask.
type taskView struct {
	uid, namespace, name string
	created              time.Time
	owner                metav1.OwnerReference
	// active: work may be handed out (not finished, not stopped, usable).
	active   bool
	targets  *tasks.Targets
	schedule *tasks.Schedule
	rollout  *siteopsv1.DeploymentTaskRollout
	action   protocol.Action
	// pkg is the Package the action needs ("" for none): its content goes
	// into the action when the work is handed out, and a site's targets
	// get the work only once the manager found the content ready there
	// (contentReady, from status.sites[].contentReady).
	pkg          string
	contentReady map[string]bool
	statusTotal  int
	generation   int64
	openNow      bool // the schedule was open at the last tick

	// started: the manager set status.startTime for the current
	// generation, so the spec can no longer change: work may be claimed.
	started bool

	// counts are shared by every view of the task (a view is replaced on
	// each update of the task).
	*taskCounts
}

// taskCounts are a task's counts over its shards, kept by the shard
// writers, and the claims in flight.
type taskCounts struct {
	running, failed, entries atomic.Int64
	claiming                 atomic.Int64
}

func newDispatcher(k *kube, server string, log *slog.Logger, wake func()) *dispatcher {
	d := &dispatcher{k: k, server: server, log: log, now: time.Now, wake: wake,
		tasks: map[string]*taskView{}, shards: map[shardKey]*shardWriter{}}
	d.content = func(namespace, name string) (protocol.Content, bool) {
		if k == nil || k.client == nil {
			return protocol.Content{}, false
		}
		var p siteopsv1.Package
		if err := k.client.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, &p); err != nil {
			return protocol.Content{}, false
		}
		return protocol.Content{Package: namespace + "/" + name, Digest: p.Spec.Digest, Size: p.Spec.Size}, true
	}
	return d
}

// watch feeds the dispatcher from the cache's informers of DeploymentTasks
// and DispatchShards.
func (d *dispatcher) watch(ctx context.Context) error {
	ti, err := d.k.cache.GetInformer(ctx, &siteopsv1.DeploymentTask{})
	if err != nil {
		return fmt.Errorf("getting the DeploymentTask informer: %w", err)
	}
	if _, err := ti.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.taskChanged(obj) },
		UpdateFunc: func(_, obj any) { d.taskChanged(obj) },
		DeleteFunc: func(obj any) { d.taskDeleted(obj) },
	}); err != nil {
		return err
	}
	si, err := d.k.cache.GetInformer(ctx, &siteopsv1.DispatchShard{})
	if err != nil {
		return fmt.Errorf("getting the DispatchShard informer: %w", err)
	}
	if _, err := si.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.shardSeen(obj) },
		UpdateFunc: func(_, obj any) { d.shardSeen(obj) },
	}); err != nil {
		return err
	}
	// The Packages whose content the work hands out.
	pi, err := d.k.cache.GetInformer(ctx, &siteopsv1.Package{})
	if err != nil {
		return fmt.Errorf("getting the Package informer: %w", err)
	}
	d.k.synced = append(d.k.synced, ti.HasSynced, si.HasSynced, pi.HasSynced)
	return nil
}

// terminal reports whether a task hands out no more work.
func terminal(t *siteopsv1.DeploymentTask) bool {
	switch t.Status.Phase {
	case siteopsv1.TaskSucceeded, siteopsv1.TaskFailed, siteopsv1.TaskStopped:
		return true
	}
	return t.Spec.Stop
}

// actionOf is the protocol's form of a task's action, or false for an
// action agents cannot carry out. The content of a deployImage or
// installSoftware action is filled in when the work is handed out
// (withContent).
func actionOf(a siteopsv1.DeploymentTaskAction) (protocol.Action, bool) {
	switch {
	case a.RunScript != nil:
		interp := a.RunScript.Interpreter
		if interp == "" {
			interp = siteopsv1.InterpreterSh
		}
		timeout := a.RunScript.Timeout.Duration
		if timeout <= 0 {
			timeout = 10 * time.Minute
		}
		return protocol.Action{RunScript: &protocol.RunScript{Script: a.RunScript.Script, Interpreter: interp,
			TimeoutSeconds: int64((timeout + time.Second - 1) / time.Second)}}, true
	case a.Reboot != nil:
		return protocol.Action{Reboot: &protocol.Reboot{}}, true
	case a.DeployImage != nil:
		return protocol.Action{DeployImage: &protocol.DeployImage{TimeoutSeconds: seconds(a.DeployImage.Timeout)}}, true
	case a.InstallSoftware != nil:
		return protocol.Action{InstallSoftware: &protocol.InstallSoftware{
			TimeoutSeconds: seconds(a.InstallSoftware.Timeout)}}, true
	case a.CaptureImage != nil:
		return protocol.Action{CaptureImage: &protocol.CaptureImage{PackageName: a.CaptureImage.PackageName,
			TimeoutSeconds: seconds(a.CaptureImage.Timeout)}}, true
	}
	return protocol.Action{}, false
}

// seconds is a package action's timeout in whole seconds, the CRD's
// default (1h) when unset.
func seconds(timeout *metav1.Duration) int64 {
	d := time.Hour
	if timeout != nil && timeout.Duration > 0 {
		d = timeout.Duration
	}
	return int64((d + time.Second - 1) / time.Second)
}

// withContent is a copy of action with content set in its member that
// takes one.
func withContent(action protocol.Action, content protocol.Content) protocol.Action {
	switch {
	case action.DeployImage != nil:
		a := *action.DeployImage
		a.Content = content
		action.DeployImage = &a
	case action.InstallSoftware != nil:
		a := *action.InstallSoftware
		a.Content = content
		action.InstallSoftware = &a
	}
	return action
}

func (d *dispatcher) taskChanged(obj any) {
	t, ok := obj.(*siteopsv1.DeploymentTask)
	if !ok {
		return
	}
	v := &taskView{uid: string(t.UID), namespace: t.Namespace, name: t.Name, created: t.CreationTimestamp.Time,
		rollout: t.Spec.Rollout, statusTotal: int(t.Status.Targets.Total), generation: t.Generation,
		owner: metav1.OwnerReference{APIVersion: siteopsv1.GroupVersion.String(), Kind: "DeploymentTask",
			Name: t.Name, UID: t.UID}}
	var errT, errS error
	v.targets, errT = tasks.CompileTargets(t.Spec.Targets)
	v.schedule, errS = tasks.CompileSchedule(t.Spec.Schedule)
	action, known := actionOf(t.Spec.Action)
	v.action = action
	v.pkg, _ = t.Spec.Action.Package()
	if v.pkg != "" {
		v.contentReady = map[string]bool{}
		for _, s := range t.Status.Sites {
			if s.ContentReady {
				v.contentReady[s.Site] = true
			}
		}
	}
	v.active = !terminal(t) && errT == nil && errS == nil && known
	v.started = t.Status.StartTime != nil && t.Status.ObservedGeneration == t.Generation
	if v.active {
		v.openNow = v.schedule.Open(d.now())
	}
	d.mu.Lock()
	old := d.tasks[v.uid]
	if old != nil {
		v.taskCounts = old.taskCounts
	} else {
		v.taskCounts = &taskCounts{}
	}
	d.tasks[v.uid] = v
	d.mu.Unlock()
	// A status update of the manager changes nothing to hand out, but the
	// one that starts the task.
	if v.active && (old == nil || !old.active || old.generation != v.generation || (v.started && !old.started) ||
		contentArrived(old, v)) {
		d.wake()
	}
}

// contentArrived tells whether the content of v's Package became ready at
// a site where it was not in old: that site's targets may get work now.
func contentArrived(old, v *taskView) bool {
	for site := range v.contentReady {
		if !old.contentReady[site] {
			return true
		}
	}
	return false
}

func (d *dispatcher) taskDeleted(obj any) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	t, ok := obj.(*siteopsv1.DeploymentTask)
	if !ok {
		return
	}
	uid := string(t.UID)
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tasks, uid)
	for k := range d.shards {
		if k.uid == uid {
			delete(d.shards, k)
		}
	}
}

// shardSeen takes a newer shard from the cache.
func (d *dispatcher) shardSeen(obj any) {
	sh, ok := obj.(*siteopsv1.DispatchShard)
	if !ok {
		return
	}
	w := d.writer(sh.Spec.TaskUID, sh.Namespace, sh.Spec.Task, sh.Spec.Shard)
	if w == nil {
		return
	}
	w.take(sh)
}

// task returns the view of the task with uid, or nil.
func (d *dispatcher) task(uid string) *taskView {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tasks[uid]
}

// writer returns the writer of shard n of the task, made on first use.
func (d *dispatcher) writer(uid, namespace, name string, n int32) *shardWriter {
	if n < 0 || n >= siteopsv1.DispatchShards {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	key := shardKey{uid, n}
	w := d.shards[key]
	if w == nil {
		w = &shardWriter{d: d, uid: uid, namespace: namespace, task: name, n: n,
			pending: map[string][]*shardOp{}}
		d.shards[key] = w
	}
	return w
}

// counts recomputes a task's counts from its shards' current views.
func (d *dispatcher) recount(uid string) {
	d.mu.Lock()
	t := d.tasks[uid]
	var ws []*shardWriter
	for k, w := range d.shards {
		if k.uid == uid {
			ws = append(ws, w)
		}
	}
	d.mu.Unlock()
	if t == nil {
		return
	}
	var running, failed, entries int64
	for _, w := range ws {
		r, f, e := w.counts()
		running += r
		failed += f
		entries += e
	}
	t.running.Store(running)
	t.failed.Store(failed)
	t.entries.Store(entries)
}

// tick wakes the held check-ins when a task's window opened. Called every
// half second.
func (d *dispatcher) tick() {
	now := d.now()
	opened := false
	d.mu.Lock()
	for _, t := range d.tasks {
		if !t.active {
			continue
		}
		open := t.schedule.Open(now)
		if open && !t.openNow {
			opened = true
		}
		t.openNow = open
	}
	d.mu.Unlock()
	if opened {
		d.wake()
	}
}

// inNamespace returns the namespace's tasks, oldest first.
func (d *dispatcher) inNamespace(namespace string) []*taskView {
	d.mu.Lock()
	var out []*taskView
	for _, t := range d.tasks {
		if t.namespace == namespace {
			out = append(out, t)
		}
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b *taskView) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return compareStrings(a.name, b.name)
	})
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// item is the work item of task t, attempt for the agent, with the
// content of its Package; false when the cache holds no such Package.
func (d *dispatcher) item(t *taskView, attempt int32) (protocol.WorkItem, bool) {
	action := t.action
	if t.pkg != "" {
		content, ok := d.content(t.namespace, t.pkg)
		if !ok {
			return protocol.WorkItem{}, false
		}
		action = withContent(action, content)
	}
	return protocol.WorkItem{ID: tasks.WorkID(t.uid, attempt), Task: t.namespace + "/" + t.name,
		Attempt: attempt, Action: action}, true
}

// contentReadyAt tells whether the targets of site may get t's work: its
// action needs no Package, or the manager found the content ready there.
func (t *taskView) contentReadyAt(site string) bool {
	return t.pkg == "" || t.contentReady[site]
}

// mayClaim reports whether t may hand out one more piece of work now: its
// window is open, its rollout has room, and its failures are under the
// threshold.
func (t *taskView) mayClaim(now time.Time) bool {
	if !t.active || !t.started || !t.schedule.Open(now) {
		return false
	}
	running := int(t.running.Load() + t.claiming.Load())
	if room := tasks.Room(t.rollout, running); room == 0 {
		return false
	}
	total := max(t.statusTotal, int(t.entries.Load()))
	return !tasks.ThresholdPassed(t.rollout, int(t.failed.Load()), total)
}

// next finds the work for comp: the work it was handed and has not
// reported (offered again: the agent carries out an ID at most once), or
// the oldest due task that targets it, claimed. It calls then with the
// item, or with nil when there is none; at once, or once the claim is
// written. busy is the ID of the work the agent carries out now: then
// there is none.
func (d *dispatcher) next(comp *siteopsv1.Computer, busy string, then func(*protocol.WorkItem)) {
	if busy != "" {
		then(nil)
		return
	}
	now := d.now()
	for _, t := range d.inNamespace(comp.Namespace) {
		w := d.writer(t.uid, t.namespace, t.name, tasks.ShardOf(comp.Name))
		e, ok := w.entry(comp.Name)
		if ok {
			// Work claimed for it and never reported: the answer that
			// carried it was lost. It is offered again, even once the task
			// stopped (it was handed out before). Running work is not: its
			// agent had it, and an agent that lost its state must not run
			// it twice.
			if e.State == siteopsv1.DispatchClaimed {
				if item, ok := d.item(t, e.Attempt); ok {
					d.reoffered.Add(1)
					then(&item)
					return
				}
			}
			continue // done with this task
		}
		if !t.targets.Matches(comp) {
			continue
		}
		// A claim for this computer is being written (its check-in was
		// answered, or it came back, meanwhile): this check-in waits for
		// that claim rather than for a write after it.
		if w.attach(comp.Name, func(r opResult) {
			if r.err != nil || !r.won {
				then(nil)
				return
			}
			if item, ok := d.item(t, r.entry.Attempt); ok {
				then(&item)
				return
			}
			then(nil)
		}) {
			return
		}
		if !t.mayClaim(now) || !t.contentReadyAt(comp.Status.Site) {
			continue
		}
		// The Package must be in the cache to hand its content out.
		if _, ok := d.item(t, 1); !ok {
			continue
		}
		t.claiming.Add(1)
		w.submit(comp.Name, &shardOp{claim: true, attempt: 1}, func(r opResult) {
			t.claiming.Add(-1)
			if r.err != nil || !r.won {
				if r.err != nil {
					d.log.Warn("Claiming work", "task", t.namespace+"/"+t.name, "computer", comp.Name, "error", r.err)
				}
				then(nil)
				return
			}
			d.dispatched.Add(1)
			item, ok := d.item(t, r.entry.Attempt)
			if !ok {
				// The Package went between the check and the claim: the
				// claim is offered again at the next check-in.
				then(nil)
				return
			}
			then(&item)
		})
		return
	}
	then(nil)
}

// Errors of a report, for the answer's status.
var (
	errNoSuchWork   = errors.New("no such work")
	errStaleAttempt = errors.New("stale attempt")
	errRecorded     = errors.New("another result is recorded")
)

// report records an agent's report on its work: a progress report
// (Running) or the result. then is called once it is written (or needs no
// write: reports are idempotent), with the entry as recorded.
func (d *dispatcher) report(comp *siteopsv1.Computer, t *taskView, st protocol.WorkStatus, then func(opResult)) {
	w := d.writer(t.uid, t.namespace, t.name, tasks.ShardOf(comp.Name))
	e := siteopsv1.DispatchEntry{State: st.State, Reason: st.Reason, ExitCode: st.ExitCode,
		Message: truncate(st.Message, protocol.MaxMessageLength)}
	if st.Final() {
		f := metav1.NewTime(d.now()).Rfc3339Copy()
		e.Finished = &f
	}
	w.submit(comp.Name, &shardOp{attempt: st.Attempt, report: &e, progress: !st.Final()}, then)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// shardOp is a claim or a report waiting for a shard's write.
type shardOp struct {
	claim   bool
	attempt int32
	report  *siteopsv1.DispatchEntry
	// progress: a Running report, which waits up to progressDelay for a
	// write that carries other ops (shardWriter.held).
	progress bool
	// requeued counts the writes that failed for a passing reason and
	// left this op for the next one (maxRequeues).
	requeued int
	// queued is when the op was submitted: a report waits for the claims
	// in flight (claimsFirst) at most claimsFirstWait from then.
	queued time.Time
	then   []func(opResult)
}

// progressDelay is the longest a Running report waits for a write of its
// shard before it is written alone. Short work's result usually comes
// first: then both go in one write, and the shards of a task for thousands
// of computers take a third fewer writes when it starts.
const progressDelay = 2 * time.Second

// opResult is what became of a shardOp: the entry as the API holds it,
// won for a claim this write made, err for a report refused or a write
// that failed.
type opResult struct {
	entry siteopsv1.DispatchEntry
	won   bool
	// changed: this op changed the entry (a report recorded now, not a
	// repeat of one recorded before).
	changed bool
	err     error
}

// shardWriter writes one shard of one task: one write in flight at a time,
// each carrying every claim and report that waited for it.
type shardWriter struct {
	d                    *dispatcher
	uid, namespace, task string
	n                    int32

	mu      sync.Mutex
	cur     *siteopsv1.DispatchShard // the newest seen (by generation); read-only
	pending map[string][]*shardOp
	// claims are the claims submitted and not decided yet, by computer.
	claims map[string]*shardOp
	// held are the Running reports waiting for a write (progressDelay);
	// every write takes them along, before the other ops of their
	// computer.
	held      map[string][]*shardOp
	heldTimer *time.Timer
	// inflight is the batch of the write in flight, until its ops are
	// answered or go back to pending: a result sent again meanwhile joins
	// its op there (sameReport).
	inflight map[string][]*shardOp
	writing  bool
	// counts of cur
	running, failed, entries int64
}

// take makes sh the current view if it is newer, and reports whether it
// was.
func (w *shardWriter) take(sh *siteopsv1.DispatchShard) bool {
	w.mu.Lock()
	if w.cur != nil && w.cur.Generation >= sh.Generation {
		w.mu.Unlock()
		return false
	}
	w.cur = sh
	before := w.running
	var running, failed int64
	for _, e := range sh.Entries {
		switch e.State {
		case siteopsv1.DispatchClaimed, siteopsv1.DispatchRunning:
			running++
		case siteopsv1.DispatchFailed:
			failed++
		}
	}
	w.running, w.failed, w.entries = running, failed, int64(len(sh.Entries))
	w.mu.Unlock()
	w.d.recount(w.uid)
	// A result frees room under maxConcurrent: work may be due for
	// others. Without the bound, or when nothing finished (claims only add
	// to what runs), a shard's change makes no work due.
	if running < before {
		if t := w.d.task(w.uid); t != nil && t.active && t.rollout != nil && t.rollout.MaxConcurrent != nil {
			w.d.wake()
		}
	}
	return true
}

func (w *shardWriter) counts() (running, failed, entries int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.running, w.failed, w.entries
}

// entry returns computer's entry in the current view.
func (w *shardWriter) entry(computer string) (siteopsv1.DispatchEntry, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur == nil {
		return siteopsv1.DispatchEntry{}, false
	}
	e, ok := w.cur.Entries[computer]
	return e, ok
}

// submit queues op for computer; then is called once it is decided. The
// ops of one computer are decided in the order they came.
func (w *shardWriter) submit(computer string, op *shardOp, then func(opResult)) {
	op.then = append(op.then, then)
	op.queued = w.d.now()
	w.mu.Lock()
	if op.claim {
		if w.claims == nil {
			w.claims = map[string]*shardOp{}
		}
		w.claims[computer] = op
	}
	if op.progress {
		if w.held == nil {
			w.held = map[string][]*shardOp{}
		}
		w.held[computer] = append(w.held[computer], op)
		if w.heldTimer == nil {
			w.heldTimer = time.AfterFunc(progressDelay, w.releaseHeld)
		}
		w.mu.Unlock()
		return
	}
	if e, ok := w.recordedLocked(computer, op); ok {
		// The agent sent a result the API server holds already (it was
		// told to come back, and the write landed since): it is
		// acknowledged at once, with no write.
		w.mu.Unlock()
		then(opResult{entry: e})
		return
	}
	same := sameReport(w.pending[computer], op)
	if same == nil {
		same = sameReport(w.inflight[computer], op)
	}
	if same != nil {
		// The agent sent its result again while the first still waits
		// for its write, queued or in flight (it was told to come back):
		// one op, answered once for both.
		same.then = append(same.then, then)
		w.mu.Unlock()
		return
	}
	w.pending[computer] = append(w.pending[computer], op)
	idle := !w.writing
	w.mu.Unlock()
	if idle && !w.d.deferWrite(w) {
		w.start()
	}
}

// recordedLocked returns computer's entry in the current view when it
// holds op, a final report, as recorded: the same attempt and state. w.mu
// is held.
func (w *shardWriter) recordedLocked(computer string, op *shardOp) (siteopsv1.DispatchEntry, bool) {
	if w.cur == nil || op.claim || op.progress || op.report == nil {
		return siteopsv1.DispatchEntry{}, false
	}
	e, ok := w.cur.Entries[computer]
	if !ok || e.Attempt != op.attempt || e.State != op.report.State {
		return siteopsv1.DispatchEntry{}, false
	}
	return e, e.State == siteopsv1.DispatchSucceeded || e.State == siteopsv1.DispatchFailed
}

// sameReport returns the final report among queued that op repeats: the
// same attempt and state, nothing queued after it.
func sameReport(queued []*shardOp, op *shardOp) *shardOp {
	if len(queued) == 0 || op.claim || op.report == nil {
		return nil
	}
	last := queued[len(queued)-1]
	if last.claim || last.progress || last.report == nil || last.attempt != op.attempt ||
		last.report.State != op.report.State {
		return nil
	}
	return last
}

// releaseHeld queues the Running reports that waited progressDelay for a
// write, and starts one.
func (w *shardWriter) releaseHeld() {
	w.mu.Lock()
	w.heldTimer = nil
	w.takeHeldLocked(w.pending)
	w.mu.Unlock()
	if !w.d.deferWrite(w) {
		w.start()
	}
}

// takeHeldLocked moves the held Running reports into batch, each before
// the other ops of its computer. w.mu is held.
func (w *shardWriter) takeHeldLocked(batch map[string][]*shardOp) {
	for computer, ops := range w.held {
		batch[computer] = append(ops, batch[computer]...)
	}
	w.held = nil
	if w.heldTimer != nil {
		w.heldTimer.Stop()
		w.heldTimer = nil
	}
}

// attach adds then to the claim for computer that is submitted and not
// decided yet, and reports whether there is one.
func (w *shardWriter) attach(computer string, then func(opResult)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	op := w.claims[computer]
	if op == nil {
		return false
	}
	op.then = append(op.then, then)
	return true
}

// start starts the write loop, unless it runs or nothing waits.
func (w *shardWriter) start() {
	w.mu.Lock()
	start := !w.writing && len(w.pending) > 0
	if start {
		w.writing = true
	}
	w.mu.Unlock()
	if start {
		w.d.writing.Add(1)
		go w.loop()
	}
}

// busy reports whether a shard write is in flight or waits: then the
// check-ins' lastSeen refreshes yield (registry.yield).
func (d *dispatcher) busy() bool { return d.writing.Load() > 0 }

// deferWrite reports whether a pass gathers the submits: then w is started
// when the last pass under way ends.
func (d *dispatcher) deferWrite(w *shardWriter) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gathering == 0 {
		return false
	}
	d.deferred = append(d.deferred, w)
	return true
}

// gather runs pass, which submits claims for many computers, and starts
// the writes they wait for once it returns: each shard's first write
// carries every claim the pass made in it.
func (d *dispatcher) gather(pass func()) {
	d.mu.Lock()
	d.gathering++
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.gathering--
		var ws []*shardWriter
		if d.gathering == 0 {
			ws, d.deferred = d.deferred, nil
		}
		d.mu.Unlock()
		for _, w := range ws {
			w.start()
		}
	}()
	pass()
}

// loop writes batches until none waits.
func (w *shardWriter) loop() {
	failures := 0
	for {
		w.mu.Lock()
		if len(w.pending) == 0 {
			w.writing = false
			w.mu.Unlock()
			w.d.writing.Add(-1)
			return
		}
		claims := false
		var oldest time.Time
		for _, ops := range w.pending {
			for _, op := range ops {
				claims = claims || op.claim
				if oldest.IsZero() || op.queued.Before(oldest) {
					oldest = op.queued
				}
			}
		}
		w.mu.Unlock()
		if claims {
			w.d.claimWriteStarted()
		} else {
			// Reports wait for the claims in flight (of every shard): an
			// agent waits in its check-in for a claim, while a result
			// has a minute to be recorded. The wait counts from the oldest
			// report's arrival: one that has waited through a write
			// already does not wait again, or, with claims in flight at
			// every instant (a task for more agents than are held), each
			// of its shard's writes would start claimsFirstWait late.
			if wait := claimsFirstWait - w.d.now().Sub(oldest); wait > 0 {
				w.d.claimsFirst(wait)
			}
		}
		w.mu.Lock()
		batch := w.pending
		w.pending = map[string][]*shardOp{}
		w.takeHeldLocked(batch)
		w.inflight = batch
		w.mu.Unlock()
		requeued := w.write(batch)
		if claims {
			w.d.claimWriteEnded()
		}
		if requeued {
			// The API server is overloaded or unreachable: give it room
			// before the next write of this shard.
			failures++
			time.Sleep(retryDelay(failures))
		} else {
			failures = 0
		}
	}
}

// retryDelay is how long a shard's writes pause after n writes in a row
// failed for a passing reason: 1 s, doubling, at most 16 s.
func retryDelay(n int) time.Duration {
	return time.Second << min(n-1, 4)
}

// claimsFirstWait bounds how long a report waits for the claims in
// flight, from its arrival.
const claimsFirstWait = 5 * time.Second

func (d *dispatcher) claimWriteStarted() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.claimWrites == 0 {
		d.claimsDone = make(chan struct{})
	}
	d.claimWrites++
}

func (d *dispatcher) claimWriteEnded() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.claimWrites--
	if d.claimWrites == 0 {
		close(d.claimsDone)
	}
}

// claimsFirst waits until no shard write carrying claims is in flight, or
// for at most max.
func (d *dispatcher) claimsFirst(max time.Duration) {
	d.mu.Lock()
	if d.claimWrites == 0 {
		d.mu.Unlock()
		return
	}
	done := d.claimsDone
	d.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// writeAttempts bounds the conflicts one batch retries.
const writeAttempts = 8

// writeTimeout bounds one batch's write. It exceeds the API server's own
// request timeout (60 s by default), so that the service learns what
// became of a slow write instead of giving up on one the server may still
// make: a write abandoned that lands anyway costs a conflict and a read.
const writeTimeout = 75 * time.Second

// maxRequeues bounds how many failed writes an op waits through before its
// caller is told of the failure.
const maxRequeues = 4

// write decides and writes one batch. When the write fails for a passing
// reason (the API server overloaded or unreachable), the ops go back to
// the front of the queue for the next write, up to maxRequeues times, and
// write reports true: their callers hear nothing until then, since a
// check-in attaches to a claim still queued and a report is answered "come
// back" after reportWait.
func (w *shardWriter) write(batch map[string][]*shardOp) (requeued bool) {
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	var (
		results   map[*shardOp]opResult
		patch     map[string]siteopsv1.DispatchEntry
		lastErr   error
		refreshed bool
	)
	for attempt := 0; attempt < writeAttempts; attempt++ {
		w.mu.Lock()
		cur := w.cur
		w.mu.Unlock()
		results, patch = w.decide(cur, batch)
		if !refreshed && refusesReport(results) {
			// The view may lag a claim another service made: a report is
			// refused only on what the API server holds.
			refreshed = true
			if err := w.refresh(ctx); err == nil {
				continue
			}
		}
		if len(patch) == 0 {
			lastErr = nil
			break
		}
		written, err := w.send(ctx, cur, patch)
		if err == nil {
			w.d.shardWrites.Add(1)
			w.take(written)
			lastErr = nil
			break
		}
		lastErr = err
		if apierrors.IsNotFound(err) && cur != nil {
			// The shard was deleted under us: start it again.
			w.mu.Lock()
			if w.cur == cur {
				w.cur = nil
			}
			w.mu.Unlock()
			continue
		}
		if !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			w.d.shardWriteFailures.Add(1)
			break
		}
		// Someone else wrote the shard: read it and decide again.
		w.d.conflicts.Add(1)
		if err := w.refresh(ctx); err != nil {
			lastErr = err
			break
		}
	}
	again := lastErr != nil && passing(lastErr) && mayRequeue(batch, patch)
	// The claims are decided: a check-in that comes now finds the entry
	// in the view (or, when the write failed, claims again). The ops of a
	// write that failed for a passing reason go back to the front of the
	// queue instead, each computer's in their order.
	w.mu.Lock()
	w.inflight = nil
	thens := make(map[*shardOp][]func(opResult), len(results))
	for computer, ops := range batch {
		if _, unwritten := patch[computer]; again && unwritten {
			for _, op := range ops {
				op.requeued++
			}
			w.pending[computer] = append(ops, w.pending[computer]...)
			continue
		}
		for _, op := range ops {
			thens[op] = op.then
			if op.claim && w.claims[computer] == op {
				delete(w.claims, computer)
			}
		}
	}
	w.mu.Unlock()
	if again {
		w.d.requeued.Add(1)
	}
	for computer, ops := range batch {
		_, unwritten := patch[computer]
		if again && unwritten {
			continue
		}
		for _, op := range ops {
			r := results[op]
			if lastErr != nil && unwritten {
				r = opResult{err: fmt.Errorf("writing the dispatch state: %w", lastErr)}
			}
			for i, f := range thens[op] {
				if i > 0 {
					// A report sent again joined this op (sameReport): what
					// follows a change happens once, for the first.
					r.changed = false
				}
				f(r)
			}
		}
	}
	return again
}

// mayRequeue reports whether the ops of a batch that needed a write may go
// back to the queue: none has waited through maxRequeues writes yet.
func mayRequeue(batch map[string][]*shardOp, patch map[string]siteopsv1.DispatchEntry) bool {
	for computer := range patch {
		for _, op := range batch[computer] {
			if op.requeued >= maxRequeues {
				return false
			}
		}
	}
	return true
}

// errTaskGone: a shard's task was deleted while its write waited.
var errTaskGone = errors.New("the task is gone")

// passing reports whether a write's failure may pass: the API server timed
// out, was overloaded or unreachable, rather than refusing the write.
func passing(err error) bool {
	switch {
	case errors.Is(err, errTaskGone),
		apierrors.IsInvalid(err), apierrors.IsForbidden(err), apierrors.IsUnauthorized(err),
		apierrors.IsBadRequest(err), apierrors.IsRequestEntityTooLargeError(err),
		apierrors.IsMethodNotSupported(err), apierrors.IsNotAcceptable(err),
		apierrors.IsUnsupportedMediaType(err), apierrors.IsGone(err):
		return false
	}
	return true
}

// refresh reads the shard from the API server.
func (w *shardWriter) refresh(ctx context.Context) error {
	live := &siteopsv1.DispatchShard{}
	if err := w.d.k.live.Get(ctx, types.NamespacedName{Namespace: w.namespace, Name: tasks.ShardName(w.task, w.n)}, live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	if live.Spec.TaskUID == w.uid {
		w.take(live)
	}
	return nil
}

// refusesReport reports whether a report of the batch was refused.
func refusesReport(results map[*shardOp]opResult) bool {
	for op, r := range results {
		if !op.claim && (errors.Is(r.err, errNoSuchWork) || errors.Is(r.err, errStaleAttempt)) {
			return true
		}
	}
	return false
}

// decide applies the batch to cur, each computer's ops in order: it
// returns each op's outcome and the entries to write.
func (w *shardWriter) decide(cur *siteopsv1.DispatchShard, batch map[string][]*shardOp) (map[*shardOp]opResult, map[string]siteopsv1.DispatchEntry) {
	results := map[*shardOp]opResult{}
	patch := map[string]siteopsv1.DispatchEntry{}
	now := metav1.NewTime(w.d.now()).Rfc3339Copy()
	for computer, ops := range batch {
		var e siteopsv1.DispatchEntry
		exists := false
		if cur != nil {
			e, exists = cur.Entries[computer]
		}
		for _, op := range ops {
			r, changed := decideOne(e, exists, op, w.d.server, now)
			r.changed = changed
			results[op] = r
			if changed {
				e, exists = r.entry, true
				patch[computer] = e
			}
		}
	}
	return results, patch
}

// decideOne decides one op against the entry e (exists tells whether
// there is one): its outcome, and whether the entry changes to
// outcome.entry.
func decideOne(e siteopsv1.DispatchEntry, exists bool, op *shardOp, server string, now metav1.Time) (opResult, bool) {
	switch {
	case op.claim && exists:
		return opResult{entry: e}, false
	case op.claim:
		return opResult{entry: siteopsv1.DispatchEntry{Attempt: op.attempt, State: siteopsv1.DispatchClaimed,
			Server: server, Claimed: now}, won: true}, true
	case !exists:
		return opResult{err: errNoSuchWork}, false
	case e.Attempt != op.attempt:
		return opResult{entry: e, err: errStaleAttempt}, false
	case e.State == siteopsv1.DispatchSucceeded || e.State == siteopsv1.DispatchFailed:
		if op.report.State == e.State || op.report.State == protocol.WorkRunning {
			return opResult{entry: e}, false // reports are idempotent
		}
		return opResult{entry: e, err: errRecorded}, false
	case op.report.State == protocol.WorkRunning && e.State == siteopsv1.DispatchRunning:
		return opResult{entry: e}, false
	}
	ne := *op.report
	ne.Attempt, ne.Server, ne.Claimed = e.Attempt, e.Server, e.Claimed
	return opResult{entry: ne}, true
}

// send writes entries into the shard: a create when there is none yet, or
// a merge patch conditioned on cur's resourceVersion.
func (w *shardWriter) send(ctx context.Context, cur *siteopsv1.DispatchShard, entries map[string]siteopsv1.DispatchEntry) (*siteopsv1.DispatchShard, error) {
	t := w.d.task(w.uid)
	if cur == nil {
		if t == nil {
			return nil, errTaskGone
		}
		sh := &siteopsv1.DispatchShard{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.namespace, Name: tasks.ShardName(w.task, w.n),
				OwnerReferences: []metav1.OwnerReference{t.owner},
				Labels:          map[string]string{siteopsv1.DispatchTaskLabel: w.task}},
			Spec:    siteopsv1.DispatchShardSpec{Task: w.task, TaskUID: w.uid, Shard: w.n},
			Entries: entries,
		}
		if err := w.d.k.writer.Create(ctx, sh); err != nil {
			return nil, err
		}
		return sh, nil
	}
	sh := cur.DeepCopy()
	base := cur.DeepCopy()
	if sh.Entries == nil {
		sh.Entries = map[string]siteopsv1.DispatchEntry{}
	}
	for k, v := range entries {
		sh.Entries[k] = v
	}
	if err := w.d.k.writer.Patch(ctx, sh, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
		return nil, err
	}
	return sh, nil
}
