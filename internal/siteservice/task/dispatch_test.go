package task

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
	"github.com/siteops/site-operator/internal/tasks"
)

// agentOf is a registered test agent.
type agentOf struct {
	name, credential, addr string
}

func (e *apiEnv) newAgent(t *testing.T, name, addr string, labels map[string]string) agentOf {
	t.Helper()
	resp, code, perr := e.register(t, token("abc123"), newRequest(name, "hw-"+name, addr))
	if code != http.StatusOK {
		t.Fatalf("register %s = %d %+v", name, code, perr)
	}
	if len(labels) > 0 {
		c := e.computer(t, "branch-a", resp.Computer)
		patch := client.MergeFrom(c.DeepCopy())
		c.Labels = labels
		if err := e.cl.Patch(context.Background(), c, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the service's cache holds the labels of "+name, func() bool {
			cached := e.srv.kube.computer(types.NamespacedName{Namespace: "branch-a", Name: resp.Computer})
			return cached != nil && cached.Labels["ring"] == labels["ring"]
		})
	}
	return agentOf{name: resp.Computer, credential: resp.Credential, addr: addr}
}

func (e *apiEnv) checkInBusy(t *testing.T, a agentOf, wait int, busy string) protocol.WorkResponse {
	t.Helper()
	q := url.Values{protocol.QueryWait: {fmt.Sprint(wait)}, protocol.QueryAddress: {a.addr}}
	if busy != "" {
		q.Set(protocol.QueryBusy, busy)
	}
	var resp protocol.WorkResponse
	code, perr := e.do(t, http.MethodGet, protocol.WorkPath+"?"+q.Encode(), a.credential, nil, &resp)
	if code != http.StatusOK {
		t.Fatalf("check-in of %s = %d %+v", a.name, code, perr)
	}
	return resp
}

func (e *apiEnv) report(t *testing.T, a agentOf, id string, st protocol.WorkStatus) (int, protocol.Error, protocol.WorkStatusResponse) {
	t.Helper()
	var out protocol.WorkStatusResponse
	code, perr := e.do(t, http.MethodPost, protocol.WorkStatusPath(id), a.credential, mustJSON(st), &out)
	return code, perr, out
}

func (e *apiEnv) createTask(t *testing.T, name string, spec siteopsv1.DeploymentTaskSpec) *siteopsv1.DeploymentTask {
	t.Helper()
	task := &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: "branch-a", Name: name}, Spec: spec}
	if err := e.cl.Create(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	// What the manager does when work may start (no manager runs here).
	now := metav1.Now()
	task.Status.StartTime, task.Status.ObservedGeneration, task.Status.Phase = &now, task.Generation, siteopsv1.TaskRunning
	if err := e.cl.Status().Update(context.Background(), task); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the service sees task "+name+" started", func() bool {
		v := e.srv.dispatch.task(string(task.UID))
		return v != nil && v.started
	})
	return task
}

func (e *apiEnv) entry(t *testing.T, task *siteopsv1.DeploymentTask, computer string) (siteopsv1.DispatchEntry, bool) {
	t.Helper()
	var sh siteopsv1.DispatchShard
	key := types.NamespacedName{Namespace: "branch-a", Name: tasks.ShardName(task.Name, tasks.ShardOf(computer))}
	if err := e.cl.Get(context.Background(), key, &sh); err != nil {
		return siteopsv1.DispatchEntry{}, false
	}
	en, ok := sh.Entries[computer]
	return en, ok
}

// startReplica starts a second task service of SiteServer paris-srv on
// the same API server: a second replica.
func (e *apiEnv) startReplica(t *testing.T) (*Server, string) {
	t.Helper()
	c := config.Defaults("paris-srv", []string{"paris"})
	c.Task.Agents = config.AgentsConfig{StatusIntervalSeconds: 2, MinIntervalSeconds: 1, MaxWaitSeconds: 5}
	srv, err := New(c, Options{ServiceOptions: host.ServiceOptions{Version: "test",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))},
		RestConfig: rest.CopyConfig(e.cfg)})
	if err != nil {
		t.Fatal(err)
	}
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, api, health) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "the replica's cache syncs", func() bool { return srv.kube.ready(ctx) == nil })
	return srv, "http://" + api.Addr().String()
}

func script(s string) siteopsv1.DeploymentTaskAction {
	return siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: s, Interpreter: "sh",
		Timeout: metav1.Duration{Duration: time.Minute}}}
}

func TestDispatch(t *testing.T) {
	e := startAPIEnv(t, config.AgentsConfig{StatusIntervalSeconds: 2, MinIntervalSeconds: 30, MaxWaitSeconds: 10})
	ring1 := map[string]string{"ring": "1"}
	pc1 := e.newAgent(t, "pc-1", "10.1.0.11", ring1)
	pc2 := e.newAgent(t, "pc-2", "10.1.0.12", map[string]string{"ring": "2"})
	pc3 := e.newAgent(t, "pc-3", "10.1.0.13", nil)

	task := e.createTask(t, "hello", siteopsv1.DeploymentTaskSpec{Action: script("echo hello"),
		Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{MatchLabels: ring1}}})
	var item protocol.WorkItem

	t.Run("a targeted agent's check-in gets the work, claimed first; another's gets none", func(t *testing.T) {
		resp := e.checkInBusy(t, pc1, 0, "")
		if len(resp.Work) != 1 {
			t.Fatalf("pc-1 got %+v", resp.Work)
		}
		item = resp.Work[0]
		if item.ID != tasks.WorkID(string(task.UID), 1) || item.Attempt != 1 || item.Task != "branch-a/hello" ||
			item.Action.RunScript == nil || item.Action.RunScript.Script != "echo hello" || item.Action.RunScript.TimeoutSeconds != 60 {
			t.Errorf("item %+v", item)
		}
		en, ok := e.entry(t, task, pc1.name)
		if !ok || en.State != siteopsv1.DispatchClaimed || en.Server != "paris-srv" || en.Attempt != 1 {
			t.Errorf("entry %+v %v", en, ok)
		}
		if resp := e.checkInBusy(t, pc2, 0, ""); len(resp.Work) != 0 {
			t.Errorf("pc-2 got %+v", resp.Work)
		}
	})

	t.Run("the work is offered again to an agent that is not carrying it out, never to one that is", func(t *testing.T) {
		if resp := e.checkInBusy(t, pc1, 0, item.ID); len(resp.Work) != 0 {
			t.Errorf("busy pc-1 got %+v", resp.Work)
		}
		resp := e.checkInBusy(t, pc1, 0, "")
		if len(resp.Work) != 1 || resp.Work[0].ID != item.ID {
			t.Errorf("pc-1 got %+v, want %s again", resp.Work, item.ID)
		}
		if n := e.srv.dispatch.dispatched.Load(); n != 1 {
			t.Errorf("claims = %d, want 1", n)
		}
	})

	t.Run("bad reports are refused with the field at fault, and change nothing", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			agent agentOf
			id    string
			st    protocol.WorkStatus
			code  int
			field string
		}{
			{"another computer's work", pc2, item.ID, protocol.WorkStatus{Attempt: 1, State: "Succeeded"}, 404, "id"},
			{"a stale attempt", pc1, tasks.WorkID(string(task.UID), 2), protocol.WorkStatus{Attempt: 2, State: "Succeeded"}, 409, "attempt"},
			{"an attempt that is not the ID's", pc1, item.ID, protocol.WorkStatus{Attempt: 3, State: "Succeeded"}, 400, "attempt"},
			{"an unknown state", pc1, item.ID, protocol.WorkStatus{Attempt: 1, State: "Done"}, 400, "state"},
			{"a failure without a known reason", pc1, item.ID, protocol.WorkStatus{Attempt: 1, State: "Failed", Reason: "Oops"}, 400, "reason"},
			{"an unknown task", pc1, "0000-unknown.1", protocol.WorkStatus{Attempt: 1, State: "Succeeded"}, 404, "id"},
			{"a malformed ID", pc1, "nonsense", protocol.WorkStatus{Attempt: 1, State: "Succeeded"}, 400, "id"},
		} {
			code, perr, _ := e.report(t, tc.agent, tc.id, tc.st)
			if code != tc.code || perr.Field != tc.field || perr.Error == "" {
				t.Errorf("%s: %d %+v, want %d naming %s", tc.name, code, perr, tc.code, tc.field)
			}
		}
		if en, _ := e.entry(t, task, pc1.name); en.State != siteopsv1.DispatchClaimed {
			t.Errorf("entry %+v", en)
		}
	})

	t.Run("progress and the result are recorded, idempotently, and the result reaches the Computer", func(t *testing.T) {
		started := time.Now().Add(-time.Second)
		// Progress is accepted once queued, then recorded; again, it is
		// acknowledged as recorded.
		if code, perr, out := e.report(t, pc1, item.ID, protocol.WorkStatus{Attempt: 1, State: "Running", Started: &started}); code != 202 || out.Recorded != "Claimed" {
			t.Fatalf("running: %d %+v %+v, want 202 with Claimed", code, perr, out)
		}
		eventually(t, "the Running report in the shard", func() bool {
			en, _ := e.entry(t, task, pc1.name)
			return en.State == siteopsv1.DispatchRunning
		})
		eventually(t, "the service's view of the shard", func() bool {
			code, _, out := e.report(t, pc1, item.ID, protocol.WorkStatus{Attempt: 1, State: "Running", Started: &started})
			return code == 200 && out.Recorded == "Running"
		})
		exit := int32(0)
		final := protocol.WorkStatus{Attempt: 1, State: "Succeeded", ExitCode: &exit, Output: "hello\n", Started: &started}
		for range 2 {
			if code, perr, out := e.report(t, pc1, item.ID, final); code != 200 || out.Recorded != "Succeeded" {
				t.Fatalf("result: %d %+v %+v", code, perr, out)
			}
		}
		if code, perr, _ := e.report(t, pc1, item.ID, protocol.WorkStatus{Attempt: 1, State: "Failed", Reason: "ExitCode"}); code != 409 || perr.Field != "state" {
			t.Errorf("a different result after the first: %d %+v", code, perr)
		}
		en, _ := e.entry(t, task, pc1.name)
		if en.State != siteopsv1.DispatchSucceeded || en.ExitCode == nil || *en.ExitCode != 0 || en.Finished == nil {
			t.Errorf("entry %+v", en)
		}
		eventually(t, "the Computer's lastTask", func() bool {
			lt := e.computer(t, "branch-a", pc1.name).Status.LastTask
			return lt != nil && lt.Name == "hello" && lt.State == "Succeeded" && lt.Output == "hello\n" && lt.Attempt == 1
		})
		if resp := e.checkInBusy(t, pc1, 0, ""); len(resp.Work) != 0 {
			t.Errorf("after its result pc-1 got %+v", resp.Work)
		}
	})

	t.Run("a held check-in is answered with work as soon as it is due, on a connection kept for the report", func(t *testing.T) {
		// A client of its own, that counts the connections it opens.
		shared := e.http
		base, _ := shared.Transport.(*http.Transport)
		if base == nil {
			base = http.DefaultTransport.(*http.Transport)
		}
		tr := base.Clone()
		var dials atomic.Int32
		dial := tr.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dial(ctx, network, addr)
		}
		e.http = &http.Client{Transport: tr, Timeout: shared.Timeout}
		defer func() { tr.CloseIdleConnections(); e.http = shared }()
		got := make(chan protocol.WorkResponse, 1)
		go func() { got <- e.checkInBusy(t, pc3, 10, "") }()
		eventually(t, "pc-3's check-in is held", func() bool {
			for _, h := range e.srv.polls.snapshot() {
				if h.key.Name == pc3.name {
					return true
				}
			}
			return false
		})
		e.createTask(t, "tickle", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc3.name}}})
		select {
		case resp := <-got:
			if len(resp.Work) != 1 || resp.HeldMillis >= 10000 {
				t.Fatalf("answer %+v", resp)
			}
			if code, perr, _ := e.report(t, pc3, resp.Work[0].ID, protocol.WorkStatus{Attempt: 1, State: "Succeeded"}); code != 200 {
				t.Fatalf("%d %+v", code, perr)
			}
			// The answer with work kept its connection: the report went
			// over it, without a new connection and TLS handshake.
			if n := dials.Load(); n != 1 {
				t.Errorf("%d connections for the held check-in and the report, want 1", n)
			}
		case <-time.After(9 * time.Second):
			t.Fatal("the held check-in was not answered with the work before its wait ended")
		}
	})

	t.Run("maxConcurrent bounds the work handed out at once", func(t *testing.T) {
		one := int32(1)
		mc := e.createTask(t, "one-at-a-time", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc1.name, pc2.name}},
			Rollout: &siteopsv1.DeploymentTaskRollout{MaxConcurrent: &one}})
		first := e.checkInBusy(t, pc1, 0, "")
		if len(first.Work) != 1 {
			t.Fatalf("pc-1 got %+v", first.Work)
		}
		if resp := e.checkInBusy(t, pc2, 0, ""); len(resp.Work) != 0 {
			t.Errorf("pc-2 got work while pc-1 runs: %+v", resp.Work)
		}
		got := make(chan protocol.WorkResponse, 1)
		go func() { got <- e.checkInBusy(t, pc2, 10, "") }()
		eventually(t, "pc-2's check-in is held", func() bool {
			for _, h := range e.srv.polls.snapshot() {
				if h.key.Name == pc2.name {
					return true
				}
			}
			return false
		})
		if code, perr, _ := e.report(t, pc1, first.Work[0].ID, protocol.WorkStatus{Attempt: 1, State: "Failed", Reason: "TimedOut"}); code != 200 {
			t.Fatalf("%d %+v", code, perr)
		}
		select {
		case resp := <-got:
			if len(resp.Work) != 1 || resp.Work[0].ID != tasks.WorkID(string(mc.UID), 1) {
				t.Fatalf("pc-2 after pc-1's result got %+v", resp.Work)
			}
			if code, perr, _ := e.report(t, pc2, resp.Work[0].ID, protocol.WorkStatus{Attempt: 1, State: "Succeeded"}); code != 200 {
				t.Fatalf("%d %+v", code, perr)
			}
		case <-time.After(9 * time.Second):
			t.Fatal("pc-2's held check-in was not answered with the work freed by pc-1's result")
		}
	})

	t.Run("beyond the budget of writes at once, a result rides with the Computer's next status write", func(t *testing.T) {
		e.srv.lastTasks.immediate = rate.NewLimiter(0, 0)
		later := e.createTask(t, "deferred", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc3.name}}})
		resp := e.checkInBusy(t, pc3, 0, "")
		if len(resp.Work) != 1 || resp.Work[0].ID != tasks.WorkID(string(later.UID), 1) {
			t.Fatalf("pc-3 got %+v", resp.Work)
		}
		if code, perr, _ := e.report(t, pc3, resp.Work[0].ID, protocol.WorkStatus{Attempt: 1, State: "Succeeded", Output: "deferred"}); code != 200 {
			t.Fatalf("%d %+v", code, perr)
		}
		if e.srv.lastTasks.deferred.Load() != 1 {
			t.Errorf("deferred = %d, want 1", e.srv.lastTasks.deferred.Load())
		}
		eventually(t, "the result reaches the Computer with its status write", func() bool {
			lt := e.computer(t, "branch-a", pc3.name).Status.LastTask
			return lt != nil && lt.Name == "deferred" && lt.Output == "deferred"
		})
	})

	t.Run("a check-in held while busy gets the next work once the result is recorded", func(t *testing.T) {
		e.createTask(t, "next-a", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc1.name}}})
		b := e.createTask(t, "next-b", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc1.name}}})
		first := e.checkInBusy(t, pc1, 0, "")
		if len(first.Work) != 1 {
			t.Fatalf("pc-1 got %+v", first.Work)
		}
		got := make(chan protocol.WorkResponse, 1)
		go func() { got <- e.checkInBusy(t, pc1, 10, first.Work[0].ID) }()
		eventually(t, "pc-1's busy check-in is held", func() bool {
			h := e.srv.polls.get(types.NamespacedName{Namespace: "branch-a", Name: pc1.name})
			return h != nil && h.isBusy()
		})
		if code, perr, _ := e.report(t, pc1, first.Work[0].ID, protocol.WorkStatus{Attempt: 1, State: "Succeeded"}); code != 200 {
			t.Fatalf("%d %+v", code, perr)
		}
		select {
		case resp := <-got:
			want := tasks.WorkID(string(b.UID), 1)
			if first.Work[0].ID == want {
				t.Fatalf("the first item was next-b's")
			}
			if len(resp.Work) != 1 || resp.Work[0].ID != want {
				t.Errorf("answer %+v, want next-b's item", resp.Work)
			}
			if code, perr, _ := e.report(t, pc1, want, protocol.WorkStatus{Attempt: 1, State: "Succeeded"}); code != 200 {
				t.Fatalf("%d %+v", code, perr)
			}
		case <-time.After(9 * time.Second):
			t.Fatal("the busy check-in was not answered with the next work when the result was recorded")
		}
	})

	t.Run("two replicas never hand the same work twice", func(t *testing.T) {
		replica, _ := e.startReplica(t)
		race := e.createTask(t, "race", siteopsv1.DeploymentTaskSpec{Action: script("true"),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{pc2.name}}})
		eventually(t, "the replica sees the task", func() bool { return replica.dispatch.task(string(race.UID)) != nil })
		comp := e.computer(t, "branch-a", pc2.name)
		before := e.srv.dispatch.dispatched.Load() + replica.dispatch.dispatched.Load()
		var wg sync.WaitGroup
		items := make([]*protocol.WorkItem, 2)
		for i, srv := range []*Server{e.srv, replica} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := make(chan *protocol.WorkItem, 1)
				srv.dispatch.next(comp, "", func(it *protocol.WorkItem) { done <- it })
				items[i] = <-done
			}()
		}
		wg.Wait()
		claims := e.srv.dispatch.dispatched.Load() + replica.dispatch.dispatched.Load() - before
		if claims != 1 {
			t.Errorf("claims of the race = %d, want 1 (items %+v %+v)", claims, items[0], items[1])
		}
		en, ok := e.entry(t, race, pc2.name)
		if !ok || en.Attempt != 1 || en.State != siteopsv1.DispatchClaimed {
			t.Errorf("entry %+v %v", en, ok)
		}

		// A process started after the claim (a restart) knows it from the
		// API: it offers the same item again, claims nothing new, and
		// offers nothing finished.
		restarted, _ := e.startReplica(t)
		eventually(t, "the new process sees the task", func() bool { return restarted.dispatch.task(string(race.UID)) != nil })
		done := make(chan *protocol.WorkItem, 1)
		restarted.dispatch.next(comp, "", func(it *protocol.WorkItem) { done <- it })
		if it := <-done; it == nil || it.ID != tasks.WorkID(string(race.UID), 1) {
			t.Errorf("the restarted service offered %+v, want the claimed item again", it)
		}
		comp1 := e.computer(t, "branch-a", pc1.name)
		restarted.dispatch.next(comp1, "", func(it *protocol.WorkItem) { done <- it })
		if it := <-done; it != nil {
			t.Errorf("the restarted service offered pc-1 %+v; its work is all finished", it)
		}
		if n := restarted.dispatch.dispatched.Load(); n != 0 {
			t.Errorf("the restarted service claimed %d", n)
		}
	})
}
