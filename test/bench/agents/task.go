package main

// Task mode (-task): once every agent is registered, one DeploymentTask
// for every agent, run by the real DeploymentTask controller in this
// process and handed out by the task service. See docs/benchmarks.md,
// "DeploymentTasks: dispatch and results".

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/agent"
)

// taskName is the DeploymentTask that task mode creates in the agents'
// namespace.
const taskName = "bench-task"

// taskKey is how the agents' statistics name it.
const taskKey = tenantNamespace + "/" + taskName

// maxTaskJSON is the most a DeploymentTask may weigh as the API serves it
// (ARCHITECTURE.md: a task for thousands of computers stays small).
const maxTaskJSON = 256 << 10

// The task service's counters of the work.
const (
	mDispatched      = "siteops_task_work_dispatched_total"
	mOfferedAgain    = "siteops_task_work_offered_again_total"
	mResults         = "siteops_task_work_results_total"
	mShardWrites     = "siteops_task_dispatch_writes_total"
	mShardConflicts  = "siteops_task_dispatch_conflicts_total"
	mShardFailures   = "siteops_task_dispatch_write_failures_total"
	mLastWritten     = "siteops_task_last_task_writes_total"
	mLastDeferred    = "siteops_task_last_task_deferred_total"
	mLastFailed      = "siteops_task_last_task_write_failures_total"
	mServiceComputer = mStatusWrites
)

// The resources whose writes task mode reports, in this order (others
// written, if any, follow).
var taskResources = []string{"computers", "computers/status", "dispatchshards", "deploymenttasks", "deploymenttasks/status", "events"}

// eventTimes is when the agents of every simulate process reached an
// event (received the task's item, had its result acknowledged), from T0.
type eventTimes struct {
	count int64
	// first is the earliest of the processes' first events; p50 the
	// latest of their medians; agents99 the latest of the times at which
	// 99% of a process's agents got there (so at least 99% of all agents
	// had by then: an upper bound of the overall 99th percentile); last
	// the latest event.
	first, p50, agents99, last time.Duration
	// reached: every process had 99% of its agents there.
	reached bool
}

// dist is a distribution's order statistics.
type dist struct {
	n             int
	p50, p99, max float64
}

func distOf(xs []float64) dist {
	if len(xs) == 0 {
		return dist{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := func(q float64) float64 { // nearest rank
		i := int(q*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return dist{n: len(s), p50: rank(0.5), p99: rank(0.99), max: s[len(s)-1]}
}

// taskResult is what task mode measured at one level.
type taskResult struct {
	workDuration time.Duration
	failPercent  float64

	// Before T0.
	settle                        time.Duration
	cycle                         time.Duration // the service's check-in cycle
	heldAtT0, activeAtT0, maxHeld float64

	// From T0 (just before the create).
	received, acknowledged eventTimes
	// reportToAck is an agent's first send of a result → the service's
	// 200 (given once the result is in the dispatch state), in seconds:
	// each figure the largest of the processes' (an upper bound), n their
	// sum.
	reportToAck                         dist
	succeededAgents, failedAgents       int64 // acknowledged, by state (agents' lines)
	workIgnored, reportRetries, dropped int64
	progressErrors                      int64
	reportErrors                        map[string]int64
	tDone                               time.Duration // the harness saw the final phase with total = agents
	phase                               string
	counts                              siteopsv1.TargetCounts
	tStart, tCompletion                 time.Duration // status.startTime, completionTime − T0 (whole seconds)
	tEnd                                time.Duration // the final phase seen and the last-task counters settled
	timedOut                            string        // why the task did not finish within -task-timeout
	// The task service's /metrics while the task ran: scrapes that failed
	// (10 s timeout) and the longest time between two that worked.
	scrapeFailures                        int
	longestScrape                         time.Duration
	dispatched, offeredAgain, results     float64
	shardWrites, conflicts, shardFailed   float64
	lastWritten, lastDeferred, lastFailed float64
	serviceStatusWrites                   float64 // check-ins' Computer status writes (they carry deferred results)
	writes                                resourceWrites
	latency                               writeLatency
	// baseline: the writes of the same length of time right before T0,
	// read over baselineSpan and scaled to tEnd; extrapolated when the
	// samples before T0 covered less than tEnd.
	baseline      resourceWrites
	baselineSpan  time.Duration
	extrapolated  bool
	lastTaskShown int // Computers whose status.lastTask is this task's, at the end
	// refreshesDue: Computers whose lastSeen, as written before T0, was a
	// status interval old by the end: the check-ins owed their refresh
	// during the task (or before it, not yet written), task or not.
	refreshesDue int
	taskJSON     int

	// The dispatch shards at the end.
	shards, entries int
	states          map[string]int
	handOut         dist // (finished − claimed) − work duration, seconds
	// Seen by a watch of the shards in this process: report (finished) →
	// visible, and claimed → visible, seconds.
	recordLag, claimLag dist

	// Resources over [T0, end].
	taskCPU, apiCPU, etcdCPU, harnessCPU, agentsCPU time.Duration
	rssT0, peakRSS                                  int64
	peakFromT0                                      bool // VmHWM was reset at T0
	load                                            [2]float64
}

// writeSample is the API server's write counters at an instant.
type writeSample struct {
	at time.Time
	w  resourceWrites
}

// settleFor is the wait before the task: long enough to hold a baseline
// stretch as long as the task should take.
func (o options) settleFor(cycle time.Duration) time.Duration {
	if o.taskSettle > 0 {
		return o.taskSettle
	}
	if cycle <= 61*time.Second {
		return 60 * time.Second
	}
	return cycle*11/10 + 30*time.Second
}

// taskTimeoutFor is the longest wait for the task to finish.
func (o options) taskTimeoutFor(cycle time.Duration) time.Duration {
	if o.taskTimeout > 0 {
		return o.taskTimeout
	}
	return max(10*time.Minute, 3*cycle)
}

// runTask measures one DeploymentTask for all of res.agents, registered.
// dir is the level's work directory: the timeline and the profiles go
// there.
func runTask(ctx context.Context, opts options, dir string, cp *controlPlane, ts *taskService, sim *simulation, res *levelResult, alive func() error) error {
	tr := res.task
	tr.workDuration, tr.failPercent = opts.workDuration, opts.workFailPercent
	n := res.agents

	// The controller starts before the settle, so that its initial list
	// of every Computer is done before the baseline and T0; with no task
	// it writes nothing.
	watch := newShardWatch()
	ctrlCache, stopController, err := startTaskController(ctx, cp, watch)
	if err != nil {
		return err
	}
	defer func() {
		if err := stopController(); err != nil {
			log.Printf("Stopping the DeploymentTask controller: %v", err)
		}
	}()

	m, err := ts.metrics(ctx)
	if err != nil {
		return err
	}
	tr.cycle = time.Duration(m[mCycle] * float64(time.Second))
	tr.settle = opts.settleFor(tr.cycle)
	log.Printf("DeploymentTask controller started; settling for %s (check-in cycle %s), reading the API server's writes every %s",
		tr.settle, tr.cycle, sampleEvery)
	var samples []writeSample
	settleEnd := time.Now().Add(tr.settle)
	for {
		w, err := cp.writes(ctx)
		if err != nil {
			return err
		}
		samples = append(samples, writeSample{at: time.Now(), w: w})
		if err := alive(); err != nil {
			return err
		}
		left := time.Until(settleEnd)
		if left <= 0 {
			break
		}
		if err := sleep(ctx, min(sampleEvery, left)); err != nil {
			return err
		}
	}

	// T0.
	procs := controlPlaneProcesses()
	m0, err := ts.metrics(ctx)
	if err != nil {
		return err
	}
	tr.heldAtT0, tr.activeAtT0, tr.maxHeld = m0[mLongPolls], m0[mActive], m0[mLongPollsMax]
	tr.cycle = time.Duration(m0[mCycle] * float64(time.Second))
	w0, lat0, err := cp.writesAndLatency(ctx)
	if err != nil {
		return err
	}
	mem0, err := readMemory(ts.pid())
	if err != nil {
		return err
	}
	tr.rssT0 = mem0.rss
	// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux ≥ 4.0).
	tr.peakFromT0 = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", ts.pid()), []byte("5"), 0) == nil
	// When each Computer's lastSeen was written: its refresh falls due a
	// status interval later, task or not.
	var comps siteopsv1.ComputerList
	if err := ctrlCache.List(ctx, &comps, client.InNamespace(tenantNamespace)); err != nil {
		return fmt.Errorf("listing the Computers: %w", err)
	}
	var lastSeen []time.Time
	for _, c := range comps.Items {
		if c.Status.LastSeen != nil {
			lastSeen = append(lastSeen, c.Status.LastSeen.Time)
		}
	}
	cpu0 := sampleCPUs(ts, sim, procs)
	tr.load[0] = loadAverage()
	task := &siteopsv1.DeploymentTask{
		ObjectMeta: metav1.ObjectMeta{Name: taskName, Namespace: tenantNamespace},
		Spec: siteopsv1.DeploymentTaskSpec{
			Action: siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: "true",
				Interpreter: siteopsv1.InterpreterSh, Timeout: metav1.Duration{Duration: 10 * time.Minute}}},
			// Every Computer of the namespace: the agents' (registration
			// gives them no labels).
			Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{}},
		},
	}
	var prof *perfRecording
	if opts.perf > 0 {
		if prof, err = startPerf(dir, opts.perf, ts, sim, procs); err != nil {
			return err
		}
		defer prof.report()
	}
	timeline, err := newTimeline(filepath.Join(dir, "task-timeline.csv"))
	if err != nil {
		return err
	}
	defer timeline.close()
	log.Printf("Creating DeploymentTask %s for every Computer of %s (%d agents, %.0f check-ins held)", taskName, tenantNamespace, n, tr.heldAtT0)
	t0 := time.Now()
	if err := cp.client.Create(ctx, task); err != nil {
		return fmt.Errorf("creating DeploymentTask %s: %w", taskName, err)
	}

	// Until the task is finished with every target counted, and every
	// result it recorded is written to its Computer or left for the
	// Computer's next status write.
	deadline := t0.Add(opts.taskTimeoutFor(tr.cycle))
	var m1 taskMetrics
	var lastMetrics, lastLog time.Time
	for {
		if err := alive(); err != nil {
			return err
		}
		now := time.Now()
		var cur siteopsv1.DeploymentTask
		if err := cp.client.Get(ctx, client.ObjectKeyFromObject(task), &cur); err != nil {
			return fmt.Errorf("reading DeploymentTask %s: %w", taskName, err)
		}
		if tr.tDone == 0 && finalPhase(cur.Status.Phase) && int(cur.Status.Targets.Total) == n {
			tr.tDone = now.Sub(t0)
			tr.phase, tr.counts = cur.Status.Phase, cur.Status.Targets
			log.Printf("  %s: the task is %s (%s)", secs(tr.tDone), cur.Status.Phase, cur.Status.Progress)
		}
		if now.Sub(lastMetrics) >= time.Second {
			m, err := ts.metrics(ctx)
			if err != nil {
				// An overloaded service may answer late: a result, not
				// an invalid run (the process is alive).
				tr.scrapeFailures++
				log.Printf("  %s: %v", secs(time.Since(t0)), err)
			} else {
				if gap := time.Since(lastMetrics); m1 != nil && gap > tr.longestScrape {
					tr.longestScrape = gap
				}
				m1 = m
				lastMetrics = time.Now()
				timeline.add(t0, sampleCPUs(ts, sim, procs), m1, ts, &cur)
				if tr.tDone != 0 && lastTasksSettled(m0, m1, float64(tr.counts.Succeeded+tr.counts.Failed)) {
					break
				}
			}
		}
		if now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			log.Printf("  %s: phase %q, targets %+v; service: %.0f dispatched, %.0f results, %.0f shard writes, %.0f lastTask written, %.0f deferred",
				secs(now.Sub(t0)), cur.Status.Phase, cur.Status.Targets, m1[mDispatched]-m0[mDispatched], m1[mResults]-m0[mResults],
				m1[mShardWrites]-m0[mShardWrites], m1[mLastWritten]-m0[mLastWritten], m1[mLastDeferred]-m0[mLastDeferred])
		}
		if now.After(deadline) {
			// What was measured until now is still reported; the run is
			// invalid (invalid).
			tr.timedOut = fmt.Sprintf("not finished %s after its creation: phase %q, targets %+v",
				now.Sub(t0).Round(time.Second), cur.Status.Phase, cur.Status.Targets)
			tr.phase, tr.counts = cur.Status.Phase, cur.Status.Targets
			log.Printf("DeploymentTask %s %s", taskName, tr.timedOut)
			break
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	end := time.Now()
	w1, lat1, err := cp.writesAndLatency(ctx)
	if err != nil {
		return err
	}
	tr.latency = lat1.sub(lat0)
	cpu1 := sampleCPUs(ts, sim, procs)
	mem1, err := readMemory(ts.pid())
	if err != nil {
		return err
	}
	tr.load[1] = loadAverage()
	tr.tEnd = end.Sub(t0)
	tr.writes = w1.sub(w0)
	tr.peakRSS = mem1.hwm
	tr.taskCPU, tr.apiCPU, tr.etcdCPU = cpu1.task-cpu0.task, cpu1.api-cpu0.api, cpu1.etcd-cpu0.etcd
	tr.harnessCPU, tr.agentsCPU = cpu1.harness-cpu0.harness, cpu1.agents-cpu0.agents
	d := func(name string) float64 { return m1[name] - m0[name] }
	tr.dispatched, tr.offeredAgain, tr.results = d(mDispatched), d(mOfferedAgain), d(mResults)
	tr.shardWrites, tr.conflicts, tr.shardFailed = d(mShardWrites), d(mShardConflicts), d(mShardFailures)
	tr.lastWritten, tr.lastDeferred, tr.lastFailed = d(mLastWritten), d(mLastDeferred), d(mLastFailed)
	tr.serviceStatusWrites = d(mServiceComputer)
	tr.baseline, tr.baselineSpan, tr.extrapolated = baselineOf(samples, w0, t0, tr.tEnd)
	log.Printf("Finished after %s: %.0f API writes (%.2f per target)", secs(tr.tEnd), tr.writes.total(), tr.writes.total()/float64(n))

	var final siteopsv1.DeploymentTask
	if err := cp.client.Get(ctx, client.ObjectKeyFromObject(task), &final); err != nil {
		return fmt.Errorf("reading DeploymentTask %s: %w", taskName, err)
	}
	if st := final.Status.StartTime; st != nil {
		tr.tStart = st.Sub(t0)
	}
	if ct := final.Status.CompletionTime; ct != nil {
		tr.tCompletion = ct.Sub(t0)
	}
	if tr.taskJSON, err = cp.rawSize(ctx, fmt.Sprintf("/apis/%s/namespaces/%s/deploymenttasks/%s",
		siteopsv1.GroupVersion.String(), tenantNamespace, taskName)); err != nil {
		return err
	}
	if err := tr.readShards(ctx, cp, string(final.UID)); err != nil {
		return err
	}
	interval := time.Duration(opts.statusInterval) * time.Second
	for _, ls := range lastSeen {
		if !ls.Add(interval).After(end) {
			tr.refreshesDue++
		}
	}
	if err := ctrlCache.List(ctx, &comps, client.InNamespace(tenantNamespace)); err != nil {
		return fmt.Errorf("listing the Computers: %w", err)
	}
	for _, c := range comps.Items {
		if lt := c.Status.LastTask; lt != nil && lt.UID == string(final.UID) {
			tr.lastTaskShown++
		}
	}
	tr.recordLag, tr.claimLag = watch.lags()

	// The agents' lines, every 10 s: wait for those that hold the last
	// acknowledgements.
	log.Printf("Waiting for the agents' statistics")
	waitEnd := time.Now().Add(3*statsInterval + 5*time.Second)
	for {
		tr.fromAgents(sim, t0)
		if tr.acknowledged.count >= int64(n) || time.Now().After(waitEnd) {
			break
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	return tr.invalid(n)
}

// finalPhase reports whether a task's phase is one it ends in.
func finalPhase(phase string) bool {
	switch phase {
	case siteopsv1.TaskSucceeded, siteopsv1.TaskFailed, siteopsv1.TaskStopped:
		return true
	}
	return false
}

// lastTasksSettled reports whether the service recorded every one of
// finished results since m0 and handed each to its Computer: written,
// failed, or left for the Computer's next status write.
func lastTasksSettled(m0, m1 taskMetrics, finished float64) bool {
	d := func(name string) float64 { return m1[name] - m0[name] }
	results := d(mResults)
	return results >= finished && d(mLastWritten)+d(mLastDeferred)+d(mLastFailed) >= results
}

// baselineOf is the writes of the stretch of length span right before t0,
// read from the samples and scaled to span exactly; when the samples cover
// less, the whole stretch they cover, extrapolated.
func baselineOf(samples []writeSample, w0 resourceWrites, t0 time.Time, span time.Duration) (resourceWrites, time.Duration, bool) {
	if len(samples) == 0 || span <= 0 {
		return resourceWrites{}, 0, true
	}
	from := samples[0]
	extrapolated := true
	for _, s := range samples {
		if !s.at.After(t0.Add(-span)) {
			from, extrapolated = s, false
		}
	}
	read := t0.Sub(from.at)
	if read <= 0 {
		return resourceWrites{}, 0, true
	}
	return w0.sub(from.w).scale(span.Seconds() / read.Seconds()), read, extrapolated
}

// fromAgents reads the task's figures from each process's latest line.
func (tr *taskResult) fromAgents(sim *simulation, t0 time.Time) {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	var rec, ack []agent.EventTimes
	tr.succeededAgents, tr.failedAgents = 0, 0
	tr.workIgnored, tr.reportRetries, tr.dropped, tr.progressErrors = 0, 0, 0, 0
	tr.reportErrors = map[string]int64{}
	tr.reportToAck = dist{}
	for _, l := range sim.last {
		ts := l.Tasks[taskKey]
		d := ts.ReportToAck
		tr.reportToAck.n += int(d.Count)
		tr.reportToAck.p50 = max(tr.reportToAck.p50, float64(d.P50Ms)/1000)
		tr.reportToAck.p99 = max(tr.reportToAck.p99, float64(d.P99Ms)/1000)
		tr.reportToAck.max = max(tr.reportToAck.max, float64(d.MaxMs)/1000)
		rec = append(rec, ts.Received)
		ack = append(ack, ts.Acknowledged)
		tr.succeededAgents += ts.Succeeded
		tr.failedAgents += ts.Failed
		tr.workIgnored += l.WorkIgnored
		tr.reportRetries += l.ReportRetries
		tr.dropped += l.ResultsDropped
		tr.progressErrors += l.ProgressReportErrors
		for k, v := range l.ReportErrors {
			tr.reportErrors[k] += v
		}
	}
	tr.received, tr.acknowledged = combine(rec, t0), combine(ack, t0)
}

// combine merges the processes' event times, from t0.
func combine(per []agent.EventTimes, t0 time.Time) eventTimes {
	out := eventTimes{reached: len(per) > 0}
	since := func(ms int64) time.Duration { return time.UnixMilli(ms).Sub(t0) }
	for i, e := range per {
		out.count += e.Count
		if e.Count == 0 {
			out.reached = false
			continue
		}
		if i == 0 || out.first == 0 || since(e.FirstUnixMs) < out.first {
			out.first = since(e.FirstUnixMs)
		}
		out.p50 = max(out.p50, since(e.P50UnixMs))
		out.last = max(out.last, since(e.MaxUnixMs))
		if e.Agents99UnixMs == 0 {
			out.reached = false
		} else {
			out.agents99 = max(out.agents99, since(e.Agents99UnixMs))
		}
	}
	return out
}

// readShards reads the task's DispatchShards from the API server: the
// entries by state and the time from a claim to its report, less the work.
func (tr *taskResult) readShards(ctx context.Context, cp *controlPlane, uid string) error {
	var list siteopsv1.DispatchShardList
	if err := cp.client.List(ctx, &list, client.InNamespace(tenantNamespace),
		client.MatchingLabels{siteopsv1.DispatchTaskLabel: taskName}); err != nil {
		return fmt.Errorf("listing the DispatchShards of %s: %w", taskName, err)
	}
	tr.states = map[string]int{}
	var handOut []float64
	for _, sh := range list.Items {
		if sh.Spec.TaskUID != uid {
			continue
		}
		tr.shards++
		for _, e := range sh.Entries {
			tr.entries++
			tr.states[e.State]++
			if e.Finished != nil {
				handOut = append(handOut, e.Finished.Sub(e.Claimed.Time).Seconds()-tr.workDuration.Seconds())
			}
		}
	}
	tr.handOut = distOf(handOut)
	return nil
}

// invalid returns why the task's run cannot be read: targets missing from
// the task or the shards, or the task too large.
func (tr *taskResult) invalid(n int) error {
	var errs []error
	if tr.timedOut != "" {
		errs = append(errs, fmt.Errorf("DeploymentTask %s %s", taskName, tr.timedOut))
	} else if int(tr.counts.Total) != n || tr.entries != n {
		errs = append(errs, fmt.Errorf("the task counts %d targets and its shards %d entries, for %d agents", tr.counts.Total, tr.entries, n))
	}
	if tr.taskJSON >= maxTaskJSON {
		errs = append(errs, fmt.Errorf("the DeploymentTask weighs %d bytes as served, over %d", tr.taskJSON, maxTaskJSON))
	}
	return errors.Join(errs...)
}

// shardWatch records, for each entry of the task's shards, how long after
// its claim and after its report (finished) a watch in this process saw
// it: claimed and finished have whole seconds, so each lag is up to 1 s
// more than the true one.
type shardWatch struct {
	mu                  sync.Mutex
	claimed, finished   map[string]bool
	claimLag, recordLag []float64
}

func newShardWatch() *shardWatch {
	return &shardWatch{claimed: map[string]bool{}, finished: map[string]bool{}}
}

func (w *shardWatch) seen(obj any) {
	sh, ok := obj.(*siteopsv1.DispatchShard)
	if !ok || sh.Namespace != tenantNamespace || sh.Spec.Task != taskName {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, e := range sh.Entries {
		if !w.claimed[name] {
			w.claimed[name] = true
			w.claimLag = append(w.claimLag, now.Sub(e.Claimed.Time).Seconds())
		}
		if e.Finished != nil && !w.finished[name] {
			w.finished[name] = true
			w.recordLag = append(w.recordLag, now.Sub(e.Finished.Time).Seconds())
		}
	}
}

func (w *shardWatch) lags() (record, claim dist) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return distOf(w.recordLag), distOf(w.claimLag)
}

var skipNameValidation = true

// startTaskController runs the DeploymentTask controller alone in a
// controller-runtime manager on the envtest API server, as cmd/manager
// builds it (its scheme, its cache options, its Event recorder, no
// client-side rate limit) but without the other controllers: the
// SiteServer controller would overwrite the SiteServer status that the
// harness writes. No metrics server, no leader election. watch sees every
// change of a DispatchShard. It returns once the cache has synced.
func startTaskController(ctx context.Context, cp *controlPlane, watch *shardWatch) (client.Reader, func() error, error) {
	scheme, err := controllers.NewScheme()
	if err != nil {
		return nil, nil, err
	}
	cfg := rest.CopyConfig(cp.cfg)
	cfg.QPS, cfg.Burst = -1, 0
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Cache:                  controllers.CacheOptions(controllers.DefaultOptions().Workloads.Namespace),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		LeaderElection:         false,
		// Each level starts a manager in this process again: controller
		// names are checked across the process, not the manager.
		Controller: ctrlconfig.Controller{SkipNameValidation: &skipNameValidation},
	})
	if err != nil {
		return nil, nil, fmt.Errorf("creating the manager: %w", err)
	}
	r := &controllers.DeploymentTaskReconciler{Client: mgr.GetClient(), Events: mgr.GetEventRecorder(controllers.EventReportingController)}
	if err := r.SetupWithManager(mgr); err != nil {
		return nil, nil, fmt.Errorf("setting up the DeploymentTask controller: %w", err)
	}
	inf, err := mgr.GetCache().GetInformer(ctx, &siteopsv1.DispatchShard{})
	if err != nil {
		return nil, nil, fmt.Errorf("getting the DispatchShard informer: %w", err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    watch.seen,
		UpdateFunc: func(_, obj any) { watch.seen(obj) },
	}); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stop := func() error {
		cancel()
		return <-done
	}
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return nil, nil, errors.Join(errors.New("the DeploymentTask controller's cache did not sync"), stop())
	}
	return mgr.GetCache(), stop, nil
}

// rawSize is the length of the JSON the API server serves at path.
func (cp *controlPlane) rawSize(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cp.cfg.Host, "/")+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := cp.metrics.Do(req)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("reading %s: %s", path, resp.Status)
	}
	return len(body), nil
}

// cpuSample is the CPU time of the processes task mode reports.
type cpuSample struct {
	task, api, etcd, harness, agents time.Duration
}

// controlPlaneProcesses are the pids of kube-apiserver and etcd, which
// envtest started as children of this process.
func controlPlaneProcesses() map[string]int {
	out := map[string]int{}
	self := strconv.Itoa(os.Getpid())
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range paths {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lp, rp := strings.IndexByte(string(data), '('), strings.LastIndexByte(string(data), ')')
		if lp < 0 || rp < lp {
			continue
		}
		comm := string(data[lp+1 : rp])
		fields := strings.Fields(string(data[rp+1:]))
		if len(fields) < 2 || fields[1] != self {
			continue
		}
		if comm == "kube-apiserver" || comm == "etcd" {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			out[comm] = pid
		}
	}
	return out
}

func sampleCPUs(ts *taskService, sim *simulation, procs map[string]int) cpuSample {
	var s cpuSample
	s.task, _ = cpuTime(ts.pid())
	if pid, ok := procs["kube-apiserver"]; ok {
		s.api, _ = cpuTime(pid)
	}
	if pid, ok := procs["etcd"]; ok {
		s.etcd, _ = cpuTime(pid)
	}
	s.harness, _ = cpuTime(os.Getpid())
	s.agents = sim.cpu()
	return s
}

// timeline writes, about every second from T0, the CPU the processes used
// since the last line, the task service's counters and the task's counts,
// as CSV: where the time of a slow task went.
type timeline struct {
	f    *os.File
	last cpuSample
	at   time.Duration
}

func newTimeline(path string) (*timeline, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	_, err = fmt.Fprintln(f, "seconds,task_service_cpu_pct,apiserver_cpu_pct,etcd_cpu_pct,harness_cpu_pct,simulate_cpu_pct,task_service_rss_mib,"+
		"held,check_ins,dispatched,offered_again,results,shard_writes,last_task_written,last_task_deferred,computer_status_writes,"+
		"pending,running,succeeded,failed")
	return &timeline{f: f}, err
}

func (t *timeline) add(t0 time.Time, cpu cpuSample, m taskMetrics, ts *taskService, task *siteopsv1.DeploymentTask) {
	at := time.Since(t0)
	if t.last != (cpuSample{}) {
		dt := (at - t.at).Seconds()
		pct := func(a, b time.Duration) float64 { return 100 * (a - b).Seconds() / dt }
		mem, _ := readMemory(ts.pid())
		c := task.Status.Targets
		fmt.Fprintf(t.f, "%.1f,%.0f,%.0f,%.0f,%.0f,%.0f,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%d,%d,%d,%d\n",
			at.Seconds(), pct(cpu.task, t.last.task), pct(cpu.api, t.last.api), pct(cpu.etcd, t.last.etcd), pct(cpu.harness, t.last.harness),
			pct(cpu.agents, t.last.agents), mem.rss>>20, m[mLongPolls], m[mCheckIns], m[mDispatched], m[mOfferedAgain], m[mResults],
			m[mShardWrites], m[mLastWritten], m[mLastDeferred], m[mServiceComputer], c.Pending, c.Running, c.Succeeded, c.Failed)
	}
	t.last, t.at = cpu, at
}

func (t *timeline) close() { _ = t.f.Close() }

// perfRecording is a `perf record` of the task service, kube-apiserver and
// the simulate processes from T0.
type perfRecording struct {
	cmd        *exec.Cmd
	done       chan struct{}
	data, text string
}

func startPerf(dir string, d time.Duration, ts *taskService, sim *simulation, procs map[string]int) (*perfRecording, error) {
	pids := []string{strconv.Itoa(ts.pid())}
	if pid, ok := procs["kube-apiserver"]; ok {
		pids = append(pids, strconv.Itoa(pid))
	}
	for _, p := range sim.procs {
		pids = append(pids, strconv.Itoa(p.cmd.Process.Pid))
	}
	p := &perfRecording{data: filepath.Join(dir, "perf.data"), text: filepath.Join(dir, "perf-report.txt"), done: make(chan struct{})}
	p.cmd = exec.Command("perf", "record", "-F", "199", "-g", "-o", p.data, "-p", strings.Join(pids, ","), "--", "sleep", strconv.Itoa(int(d.Seconds())))
	logf, err := os.Create(filepath.Join(dir, "perf.log"))
	if err != nil {
		return nil, err
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting perf: %w", err)
	}
	go func() {
		_ = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	log.Printf("Recording the task service, kube-apiserver and the simulate processes with perf for %s into %s", d, p.data)
	return p, nil
}

// report waits for the recording and writes its report by process and
// function, without call graphs, next to it.
func (p *perfRecording) report() {
	<-p.done
	out, err := os.Create(p.text)
	if err != nil {
		log.Printf("perf report: %v", err)
		return
	}
	defer out.Close()
	cmd := exec.Command("perf", "report", "-i", p.data, "--no-children", "--sort", "comm,sym", "--stdio", "-g", "none", "--percent-limit", "0.3")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		log.Printf("perf report: %v", err)
	}
	log.Printf("perf report in %s", p.text)
}
