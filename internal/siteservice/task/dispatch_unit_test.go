package task

// The dispatcher's own branches, over controller-runtime's fake client
// with interceptors (generation numbering, a write held mid-flight): what
// the API server decides is tested in dispatch_test.go against a real one.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/tasks"
)

var genCounter int64

// genFuncs makes the fake client number generations as the API server
// does for a CRD without a status subresource.
func genFuncs(f interceptor.Funcs) interceptor.Funcs {
	create := f.Create
	f.Create = func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
		var err error
		if create != nil {
			err = create(ctx, c, obj, opts...)
		} else {
			err = c.Create(ctx, obj, opts...)
		}
		genCounter++
		obj.SetGeneration(genCounter)
		return err
	}
	patchFn := f.Patch
	f.Patch = func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
		var err error
		if patchFn != nil {
			err = patchFn(ctx, c, obj, patch, opts...)
		} else {
			err = c.Patch(ctx, obj, patch, opts...)
		}
		genCounter++
		obj.SetGeneration(genCounter)
		return err
	}
	return f
}

func unitScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := siteopsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func unitTask(max int32) *siteopsv1.DeploymentTask {
	started := metav1.Now()
	return &siteopsv1.DeploymentTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "t", UID: "uid-1", Generation: 1,
			CreationTimestamp: metav1.Now()},
		Status: siteopsv1.DeploymentTaskStatus{StartTime: &started, ObservedGeneration: 1},
		Spec: siteopsv1.DeploymentTaskSpec{
			Action:  siteopsv1.DeploymentTaskAction{Reboot: &siteopsv1.RebootAction{}},
			Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{}},
			Rollout: &siteopsv1.DeploymentTaskRollout{MaxConcurrent: &max},
		},
	}
}

func comp(name string) *siteopsv1.Computer {
	return &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}}
}

func nextSync(d *dispatcher, c *siteopsv1.Computer) *protocol.WorkItem {
	ch := make(chan *protocol.WorkItem, 1)
	d.next(c, "", func(i *protocol.WorkItem) { ch <- i })
	return <-ch
}

func reportSync(d *dispatcher, c *siteopsv1.Computer, st protocol.WorkStatus) opResult {
	ch := make(chan opResult, 1)
	d.report(c, d.task("uid-1"), st, func(r opResult) { ch <- r })
	return <-ch
}

// A manager status write (taskChanged) while a claim is in flight must not
// leave the claim counted for good: with maxConcurrent 1 the task would
// never hand out work again on this replica.
func TestClaimsInFlightSurviveTaskUpdates(t *testing.T) {
	gate := make(chan struct{})
	entered := make(chan struct{}, 10)
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			entered <- struct{}{}
			<-gate
			return c.Create(ctx, obj, opts...)
		},
	})).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	task := unitTask(1)
	d.taskChanged(task)

	got := make(chan *protocol.WorkItem, 1)
	d.next(comp("pc-1"), "", func(i *protocol.WorkItem) { got <- i })
	<-entered
	// The manager writes the task's status (same generation) meanwhile.
	upd := task.DeepCopy()
	upd.Status.Targets.Total = 2
	d.taskChanged(upd)
	close(gate)
	item := <-got
	if item == nil {
		t.Fatal("pc-1 got no work")
	}
	r := reportSync(d, comp("pc-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded})
	if r.err != nil || !r.changed {
		t.Fatalf("report %+v", r)
	}
	v := d.task("uid-1")
	t.Logf("after pc-1 succeeded: running=%d claiming=%d", v.running.Load(), v.claiming.Load())
	if it := nextSync(d, comp("pc-2")); it == nil {
		t.Errorf("pc-2 gets no work although nothing runs: claiming stuck at %d (maxConcurrent 1)", v.claiming.Load())
	}
}

// Replica B has not seen replica A's claim yet (its informer lags; here
// it has seen nothing): the agent's result sent to B must be recorded, not
// refused 404 "no such work" (the agent would drop it for good).
func TestReportReadsTheAPIBeforeRefusing(t *testing.T) {
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{})).Build()
	a := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	b := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	task := unitTask(10)
	a.taskChanged(task)
	b.taskChanged(task)
	if it := nextSync(a, comp("pc-1")); it == nil {
		t.Fatal("no work from replica A")
	}
	r := reportSync(b, comp("pc-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded})
	var sh siteopsv1.DispatchShard
	_ = fc.Get(context.Background(), types.NamespacedName{Namespace: "ns", Name: tasks.ShardName("t", tasks.ShardOf("pc-1"))}, &sh)
	t.Logf("API holds %+v; replica B answered err=%v", sh.Entries["pc-1"].State, r.err)
	if errors.Is(r.err, errNoSuchWork) {
		t.Errorf("replica B answers 404 (the agent drops the result for good) while the API holds the claim")
	}
}

// A result deferred to the registry (over budget) must not land after a
// later result written at once: lastTask never goes back to an older task.
func TestLastTaskNeverGoesBack(t *testing.T) {
	c := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pc-1"}}
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(c).WithStatusSubresource(c).Build()
	s := &Server{log: slog.Default(), kube: &kube{writer: fc, client: fc}}
	s.agents = newRegistry(fc, "srv", time.Minute, slog.Default())
	s.lastTasks = newLastTaskWriter(s)
	key := types.NamespacedName{Namespace: "ns", Name: "pc-1"}
	s.lastTasks.immediate = rate.NewLimiter(0, 0) // budget spent by a wave
	s.lastTasks.add(key, siteopsv1.ComputerTask{Name: "older", UID: "u1", State: "Succeeded"})
	s.lastTasks.immediate = rate.NewLimiter(rate.Inf, 1) // budget back
	s.lastTasks.add(key, siteopsv1.ComputerTask{Name: "newer", UID: "u2", State: "Succeeded"})
	s.lastTasks.flush(context.Background())
	s.agents.flush(context.Background()) // the registry's next write
	got := &siteopsv1.Computer{}
	_ = fc.Get(context.Background(), key, got)
	if got.Status.LastTask == nil || got.Status.LastTask.Name != "newer" {
		t.Errorf("lastTask = %+v, want the newer task's", got.Status.LastTask)
	}
}

// A Running report waits for a write of its shard: the result that
// follows short work rides in the same write; alone, it is written after
// progressDelay.
func TestProgressRidesWithTheResult(t *testing.T) {
	var patches atomic.Int32
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			patches.Add(1)
			return c.Patch(ctx, obj, patch, opts...)
		},
	})).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	d.taskChanged(unitTask(10))
	for _, name := range []string{"pc-1", "pc-2"} {
		if it := nextSync(d, comp(name)); it == nil {
			t.Fatalf("%s got no work", name)
		}
	}
	patchesAfterClaims := patches.Load()

	// pc-1: Running, then its result 100 ms later: one write for both.
	running := make(chan opResult, 1)
	d.report(comp("pc-1"), d.task("uid-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkRunning}, func(r opResult) { running <- r })
	time.Sleep(100 * time.Millisecond)
	if patches.Load() != patchesAfterClaims {
		t.Fatalf("the Running report was written alone at once (%d writes)", patches.Load()-patchesAfterClaims)
	}
	r := reportSync(d, comp("pc-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded})
	if r.err != nil || r.entry.State != siteopsv1.DispatchSucceeded {
		t.Fatalf("result %+v", r)
	}
	if rr := <-running; rr.err != nil {
		t.Fatalf("the Running report: %v", rr.err)
	}
	if got := patches.Load() - patchesAfterClaims; got != 1 {
		t.Errorf("%d writes for pc-1's Running report and result, want 1", got)
	}

	// pc-2: Running alone is written once progressDelay has passed.
	start := time.Now()
	rr := reportSync(d, comp("pc-2"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkRunning})
	if rr.err != nil || rr.entry.State != siteopsv1.DispatchRunning {
		t.Fatalf("pc-2's Running report %+v", rr)
	}
	if waited := time.Since(start); waited < progressDelay-100*time.Millisecond {
		t.Errorf("a lone Running report was written after %s, want about %s", waited, progressDelay)
	}
}

// A write that fails for a passing reason (the API server overloaded)
// leaves its claims and reports queued for the next write: the claim is
// won and the result recorded, with no error to the caller. A write the
// API server refuses fails its ops at once.
func TestPassingWriteFailuresKeepTheBatch(t *testing.T) {
	var failCreate, failPatch atomic.Int32
	var patchErr atomic.Value
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if failCreate.Add(-1) >= 0 {
				return apierrors.NewServerTimeout(siteopsv1.GroupVersion.WithResource("dispatchshards").GroupResource(), "create", 1)
			}
			return c.Create(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if failPatch.Add(-1) >= 0 {
				return patchErr.Load().(error)
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	d.taskChanged(unitTask(10))

	failCreate.Store(1)
	if it := nextSync(d, comp("pc-1")); it == nil {
		t.Fatal("pc-1 got no work: the claim failed with the write")
	}
	if got := d.requeued.Load(); got != 1 {
		t.Errorf("%d writes requeued, want 1", got)
	}

	patchErr.Store(error(apierrors.NewTooManyRequests("overloaded", 1)))
	failPatch.Store(1)
	r := reportSync(d, comp("pc-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded})
	if r.err != nil || r.entry.State != siteopsv1.DispatchSucceeded {
		t.Fatalf("the result after an overloaded write: %+v", r)
	}
	if got := d.requeued.Load(); got != 2 {
		t.Errorf("%d writes requeued, want 2", got)
	}

	if it := nextSync(d, comp("pc-2")); it == nil {
		t.Fatal("pc-2 got no work")
	}
	patchErr.Store(error(apierrors.NewInvalid(siteopsv1.GroupVersion.WithKind("DispatchShard").GroupKind(), "t.0", nil)))
	failPatch.Store(1)
	r = reportSync(d, comp("pc-2"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded})
	if r.err == nil || !apierrors.IsInvalid(errors.Unwrap(r.err)) {
		t.Errorf("a refused write: err %v, want the API server's refusal", r.err)
	}
	if got := d.requeued.Load(); got != 2 {
		t.Errorf("a refused write was requeued (%d requeued, want 2)", got)
	}
}

func TestSameReport(t *testing.T) {
	result := func(attempt int32, state string) *shardOp {
		return &shardOp{attempt: attempt, report: &siteopsv1.DispatchEntry{State: state}}
	}
	first := result(1, protocol.WorkSucceeded)
	for _, tt := range []struct {
		name   string
		queued []*shardOp
		op     *shardOp
		want   *shardOp
	}{
		{"nothing queued", nil, result(1, protocol.WorkSucceeded), nil},
		{"the same result", []*shardOp{first}, result(1, protocol.WorkSucceeded), first},
		{"another attempt", []*shardOp{first}, result(2, protocol.WorkSucceeded), nil},
		{"another state", []*shardOp{first}, result(1, protocol.WorkFailed), nil},
		{"a claim queued last", []*shardOp{first, {claim: true, attempt: 1}}, result(1, protocol.WorkSucceeded), nil},
		{"a claim is never merged", []*shardOp{{claim: true, attempt: 1}}, &shardOp{claim: true, attempt: 1}, nil},
	} {
		if got := sameReport(tt.queued, tt.op); got != tt.want {
			t.Errorf("%s: %p, want %p", tt.name, got, tt.want)
		}
	}
}

// While the dispatch writes, a refresh owed only for lastSeen's age waits
// until lastSeen is yieldedAge old; a write owed for a change does not.
func TestRefreshesYieldToTheDispatch(t *testing.T) {
	const interval = 5 * time.Minute
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	seen := metav1.NewTime(t0)
	var objs []client.Object
	for _, name := range []string{"pc-1", "pc-2"} {
		objs = append(objs, &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Status: siteopsv1.ComputerStatus{LastSeen: &seen, Site: "paris", SiteServer: "srv", Addresses: []string{"10.0.0.1"}}})
	}
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithObjects(objs...).WithStatusSubresource(objs[0]).Build()
	r := newRegistry(fc, "srv", interval, slog.Default())
	now := t0
	r.now = func() time.Time { return now }
	busy := true
	r.yield = func() bool { return busy }
	keys := map[string]types.NamespacedName{}
	for _, o := range objs {
		key := client.ObjectKeyFromObject(o)
		keys[key.Name] = key
		r.get(key, o.(*siteopsv1.Computer))
	}
	lastSeen := func(name string) time.Time {
		var c siteopsv1.Computer
		if err := fc.Get(context.Background(), keys[name], &c); err != nil {
			t.Fatal(err)
		}
		return c.Status.LastSeen.Time
	}

	// An interval and a minute later: pc-1's refresh is owed, pc-2 moved.
	now = t0.Add(interval + time.Minute)
	r.checkedIn(keys["pc-1"], r.get(keys["pc-1"], nil), []string{"10.0.0.1"}, "paris", "")
	r.checkedIn(keys["pc-2"], r.get(keys["pc-2"], nil), []string{"10.0.0.1"}, "lyon", "")
	r.flush(context.Background())
	if !lastSeen("pc-1").Equal(t0) {
		t.Errorf("pc-1's refresh was written while the dispatch writes (lastSeen %s)", lastSeen("pc-1"))
	}
	if !lastSeen("pc-2").Equal(now) {
		t.Errorf("pc-2's move waited for the dispatch (lastSeen %s, want %s)", lastSeen("pc-2"), now)
	}
	// At yieldedAge, the refresh goes whatever the dispatch does.
	now = t0.Add(yieldedAge(interval))
	r.flush(context.Background())
	if !lastSeen("pc-1").Equal(t0.Add(interval + time.Minute)) {
		t.Errorf("pc-1's refresh at %s: lastSeen %s, want its last check-in", yieldedAge(interval), lastSeen("pc-1"))
	}
	// Without a dispatch under way, a refresh goes once it is owed.
	busy = false
	now = now.Add(interval + time.Second)
	r.checkedIn(keys["pc-1"], r.get(keys["pc-1"], nil), []string{"10.0.0.1"}, "paris", "")
	r.flush(context.Background())
	if !lastSeen("pc-1").Equal(now) {
		t.Errorf("pc-1's refresh with no dispatch: lastSeen %s, want %s", lastSeen("pc-1"), now)
	}
}

// A result sent again while the first waits for its write joins it: both
// are answered, and only one of them counts as the change (the callers
// count results and queue lastTask from it).
func TestRepeatedResultCountsOnce(t *testing.T) {
	gate := make(chan struct{})
	var block atomic.Bool
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if block.Load() {
				<-gate
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	d.taskChanged(unitTask(10))
	// Two computers of one shard, so that their reports share its writer.
	names := namesInShards(2, "pc-0", false)
	for _, n := range names {
		if it := nextSync(d, comp(n)); it == nil {
			t.Fatalf("%s got no work", n)
		}
	}
	block.Store(true)
	first := make(chan opResult, 1)
	d.report(comp(names[0]), d.task("uid-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded}, func(r opResult) { first <- r })
	time.Sleep(50 * time.Millisecond) // its write is in flight, held by the gate
	results := make(chan opResult, 2)
	for range 2 {
		d.report(comp(names[1]), d.task("uid-1"), protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded}, func(r opResult) { results <- r })
	}
	block.Store(false)
	close(gate)
	<-first
	changedOnce(t, results, 2)
}

// changedOnce takes n answers to one result from answers: each must say
// Succeeded, and only one may count the change.
func changedOnce(t *testing.T, answers <-chan opResult, n int) {
	t.Helper()
	changed := 0
	for range n {
		r := <-answers
		if r.err != nil || r.entry.State != siteopsv1.DispatchSucceeded {
			t.Fatalf("an answer to a result sent again: %+v", r)
		}
		if r.changed {
			changed++
		}
	}
	if changed != 1 {
		t.Errorf("%d answers counted the change, want 1", changed)
	}
}

// A deployImage task hands its work to a site's computers only once the
// manager found the content ready there (status.sites[].contentReady),
// with the Package's content in the item; a content that arrives at a
// site wakes the held check-ins.
func TestContentGatesTheDispatchPerSite(t *testing.T) {
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(genFuncs(interceptor.Funcs{})).Build()
	var woken atomic.Int64
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() { woken.Add(1) })
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	var cached atomic.Bool
	d.content = func(namespace, name string) (protocol.Content, bool) {
		if namespace != "ns" || name != "win11" || !cached.Load() {
			return protocol.Content{}, false
		}
		return protocol.Content{Package: "ns/win11", Digest: digest, Size: 42}, true
	}
	task := unitTask(10)
	task.Spec.Action = siteopsv1.DeploymentTaskAction{DeployImage: &siteopsv1.PackageAction{Package: "win11",
		Timeout: &metav1.Duration{Duration: 90 * time.Second}}}
	task.Status.Sites = []siteopsv1.TaskSiteStatus{{Site: "paris", ContentReady: true}, {Site: "lyon"}}
	d.taskChanged(task)
	inSite := func(name, site string) *siteopsv1.Computer {
		c := comp(name)
		c.Status.Site = site
		return c
	}
	if it := nextSync(d, inSite("pc-paris", "paris")); it != nil {
		t.Errorf("work handed out while the cache holds no Package: %+v", it)
	}
	cached.Store(true)
	if it := nextSync(d, inSite("pc-lyon", "lyon")); it != nil {
		t.Errorf("work handed out at lyon, where the content is not ready: %+v", it)
	}
	it := nextSync(d, inSite("pc-paris", "paris"))
	if it == nil || it.Action.DeployImage == nil {
		t.Fatalf("pc-paris got %+v, want the deployImage work", it)
	}
	if got := it.Action.DeployImage; got.Digest != digest || got.Size != 42 || got.Package != "ns/win11" || got.TimeoutSeconds != 90 {
		t.Errorf("action %+v", got)
	}
	before := woken.Load()
	upd := task.DeepCopy()
	upd.Status.Sites[1].ContentReady = true
	d.taskChanged(upd)
	if woken.Load() == before {
		t.Error("the content ready at lyon did not wake the held check-ins")
	}
	if it := nextSync(d, inSite("pc-lyon", "lyon")); it == nil || it.Action.DeployImage == nil {
		t.Errorf("pc-lyon got %+v once the content is ready at lyon", it)
	}
}

// namesInShards returns n computer names of the shard of first, or, with
// other set, of a shard other than first's.
func namesInShards(n int, first string, other bool) []string {
	var names []string
	for i := 0; len(names) < n; i++ {
		name := fmt.Sprintf("pc-%d", i)
		if (tasks.ShardOf(name) == tasks.ShardOf(first)) != other {
			names = append(names, name)
		}
	}
	return names
}

// gatedShards holds the patches of the shards named in gates, each until
// its gate closes, and counts every patch.
type gatedShards struct {
	gates   map[string]chan struct{}
	entered chan string
	patches atomic.Int32
}

func (g *gatedShards) funcs() interceptor.Funcs {
	return genFuncs(interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			g.patches.Add(1)
			if gate, ok := g.gates[obj.GetName()]; ok {
				g.entered <- obj.GetName()
				<-gate
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})
}

// A result sent again while the first is in its shard's write in flight
// joins it there (answered by that write, no op queued behind it); sent
// again once recorded, it is acknowledged at once, with no write.
func TestRepeatedResultJoinsTheWriteInFlight(t *testing.T) {
	g := &gatedShards{gates: map[string]chan struct{}{}, entered: make(chan string, 10)}
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(g.funcs()).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	d.taskChanged(unitTask(10))
	pc := comp("pc-0")
	if it := nextSync(d, pc); it == nil {
		t.Fatal("pc-0 got no work")
	}
	shard := tasks.ShardName("t", tasks.ShardOf(pc.Name))
	gate := make(chan struct{})
	g.gates[shard] = gate
	result := protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded}
	answers := make(chan opResult, 3)
	d.report(pc, d.task("uid-1"), result, func(r opResult) { answers <- r })
	<-g.entered // the write is in flight
	d.report(pc, d.task("uid-1"), result, func(r opResult) { answers <- r })
	w := d.writer("uid-1", "ns", "t", tasks.ShardOf(pc.Name))
	w.mu.Lock()
	queued := len(w.pending)
	w.mu.Unlock()
	if queued != 0 {
		t.Errorf("the result sent again was queued behind the write in flight (%d computers pending), not joined to it", queued)
	}
	before := g.patches.Load()
	close(gate)
	changedOnce(t, answers, 2)

	d.report(pc, d.task("uid-1"), result, func(r opResult) { answers <- r })
	select {
	case r := <-answers:
		if r.err != nil || r.changed || r.entry.State != siteopsv1.DispatchSucceeded {
			t.Errorf("the result sent once recorded: %+v", r)
		}
	default:
		t.Error("the result sent once recorded was not acknowledged at once")
	}
	time.Sleep(50 * time.Millisecond)
	if n := g.patches.Load() - before; n != 0 {
		t.Errorf("%d more writes after the write in flight, want 0", n)
	}
}

// A report waits for the claims in flight at most claimsFirstWait from its
// arrival: one that waited that long behind its shard's write in flight is
// written as soon as that write lands, claims in flight or not.
func TestReportsWaitForClaimsFromTheirArrival(t *testing.T) {
	g := &gatedShards{gates: map[string]chan struct{}{}, entered: make(chan string, 10)}
	fc := fake.NewClientBuilder().WithScheme(unitScheme(t)).WithInterceptorFuncs(g.funcs()).Build()
	d := newDispatcher(&kube{writer: fc, live: fc}, "srv", slog.Default(), func() {})
	var skew atomic.Int64
	d.now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	d.taskChanged(unitTask(10))
	reporting := namesInShards(2, "pc-0", false)
	claiming := namesInShards(2, namesInShards(1, "pc-0", true)[0], false)
	for _, n := range append(reporting, claiming[0]) {
		if it := nextSync(d, comp(n)); it == nil {
			t.Fatalf("%s got no work", n)
		}
	}
	reportShard := tasks.ShardName("t", tasks.ShardOf(reporting[0]))
	claimShard := tasks.ShardName("t", tasks.ShardOf(claiming[0]))
	reportGate, claimGate := make(chan struct{}), make(chan struct{})
	g.gates[reportShard], g.gates[claimShard] = reportGate, claimGate
	defer close(claimGate)

	result := protocol.WorkStatus{Attempt: 1, State: protocol.WorkSucceeded}
	first, second := make(chan opResult, 1), make(chan opResult, 1)
	d.report(comp(reporting[0]), d.task("uid-1"), result, func(r opResult) { first <- r })
	if got := <-g.entered; got != reportShard {
		t.Fatalf("%s written first, want %s", got, reportShard)
	}
	claimed := make(chan *protocol.WorkItem, 1)
	d.next(comp(claiming[1]), "", func(i *protocol.WorkItem) { claimed <- i })
	if got := <-g.entered; got != claimShard {
		t.Fatalf("%s written, want the claim's shard %s", got, claimShard)
	}
	d.report(comp(reporting[1]), d.task("uid-1"), result, func(r opResult) { second <- r })
	skew.Store(int64(claimsFirstWait + time.Second)) // the second result has waited that long
	close(reportGate)
	if r := <-first; r.err != nil {
		t.Fatalf("the first result: %+v", r)
	}
	select {
	case r := <-second:
		if r.err != nil || r.entry.State != siteopsv1.DispatchSucceeded {
			t.Errorf("the second result: %+v", r)
		}
	case <-time.After(claimsFirstWait - time.Second):
		t.Fatalf("the second result, which had waited %s, still waits for the claim in flight", claimsFirstWait+time.Second)
	}
	select {
	case <-claimed:
		t.Error("the claim was answered before its write landed")
	default:
	}
}
