package task

// The dispatcher's own branches, over controller-runtime's fake client
// with interceptors (generation numbering, a write held mid-flight): what
// the API server decides is tested in dispatch_test.go against a real one.

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
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
