package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"
)

// sampleEvery is how often the harness reads the task service's metrics
// and memory during the window.
const sampleEvery = 5 * time.Second

// levelResult is what one level measured.
type levelResult struct {
	agents, processes int
	window            time.Duration
	maxRate           float64

	// Registration: from the first simulate start until the service had
	// registered every agent (its counter, read every second) and until
	// the agents' own lines said so (every 10 s).
	tRegistered, tRegisteredAgents time.Duration
	registrations                  float64 // the service's counter at the end
	registrationErrors             int64   // the agents'
	registerWrites                 apiWrites

	// The window.
	// checkIns is the service's counter over the window; agentCheckIns
	// the agents' over their lines read in it (the same length, up to
	// 10 s earlier).
	checkIns, agentCheckIns float64
	// minCheckInsPerSpan is the fewest check-ins the service counted in
	// any span of the window as long as an agent's longest interval.
	minCheckInsPerSpan          float64
	cycle, span                 time.Duration
	active                      float64
	held                        summary // the service's long polls
	heldMax                     float64 // its cap
	agentsHeld                  summary // check-ins in flight, the agents' sum
	p50, p99                    summary // over the agents' 10 s lines
	latencyLines                int
	turnedAway, turnedAwayTotal float64
	refused, relocated          float64 // since the start
	agentErrors                 map[string]int64
	relocations, failovers      int64
	statusWrites, writeFailures float64
	apiWrites                   apiWrites
	writeBound                  float64
	// statusInterval is the task service's; windowFrom and windowTo are
	// the window's bounds from the first simulate start. Before
	// statusInterval no Computer's lastSeen is old enough to be written
	// again, so any write then would come from an ordinary check-in.
	statusInterval, windowFrom, windowTo time.Duration
	baseline, steady, peak               int64 // task-service RSS, VmHWM
	taskCPU, agentsCPU                   time.Duration
	load                                 [2]float64 // 1-minute load average at the window's start and end

	// task is what task mode measured instead of the window.
	task *taskResult
}

// summary is a few order statistics of samples.
type summary struct{ min, median, mean, max float64 }

func summarize(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return summary{min: s[0], median: s[len(s)/2], mean: sum / float64(len(s)), max: s[len(s)-1]}
}

// sample is one reading of the task service during the window.
type sample struct {
	at  time.Time
	m   taskMetrics
	rss int64
}

// runLevel measures n agents on a fresh control plane and task service.
func runLevel(ctx context.Context, opts options, bins binaries, workDir string, n int) (res *levelResult, err error) {
	dir := filepath.Join(workDir, strconv.Itoa(n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	log.Printf("Starting kube-apiserver and etcd")
	cp, err := startControlPlane(opts.crds)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := cp.stop(); serr != nil {
			log.Printf("Stopping the control plane: %v", serr)
		}
	}()
	p, err := makePKI(dir)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := cp.writeKubeconfig(dir)
	if err != nil {
		return nil, err
	}
	port, err := freePort(taskHost)
	if err != nil {
		return nil, err
	}
	healthPort, err := freePort(taskHost)
	if err != nil {
		return nil, err
	}
	cfg := taskServiceConfig(opts, port, healthPort, p, kubeconfig)
	taskURL := fmt.Sprintf("https://%s:%d", taskHost, port)
	if err := cp.createTopology(ctx, taskURL); err != nil {
		return nil, err
	}
	log.Printf("Starting the task service at %s (log %s)", taskURL, filepath.Join(dir, "task-service.log"))
	ts, err := startTaskService(bins.taskService, dir, cfg, opts.taskServiceEnv...)
	if err != nil {
		return nil, err
	}
	defer ts.stop()
	if err := ts.waitReady(ctx, time.Minute); err != nil {
		return nil, err
	}
	loc, err := startLocator(ctx, cp, p, taskURL)
	if err != nil {
		return nil, err
	}
	defer func() {
		if serr := loc.stop(); serr != nil {
			log.Printf("Stopping the locator: %v", serr)
		}
	}()
	// Let the fresh process settle before its baseline.
	if err := sleep(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	res = &levelResult{agents: n, window: opts.windowFor(n), maxRate: opts.maxCheckInRate}
	base, err := readMemory(ts.pid())
	if err != nil {
		return nil, err
	}
	res.baseline = base.rss
	writesBefore, err := cp.computerWrites(ctx)
	if err != nil {
		return nil, err
	}

	log.Printf("Starting %d agents (register rate %.0f/s, locator %s)", n, opts.registerRate, loc.url)
	var extra []string
	if opts.task {
		extra = []string{"--work-duration", opts.workDuration.String(),
			"--work-fail-percent", strconv.FormatFloat(opts.workFailPercent, 'f', -1, 64)}
	}
	sim, err := startAgents(bins.agent, dir, n, opts.agentsPerProcess, opts.registerRate, loc.url, p.caFile, extra...)
	if err != nil {
		return nil, err
	}
	defer sim.stop()
	res.processes = len(sim.procs)
	alive := func() error { return errors.Join(ts.alive(), sim.alive()) }

	if err := waitRegistered(ctx, opts, n, ts, sim, res, alive); err != nil {
		return res, err
	}
	writesRegistered, err := cp.computerWrites(ctx)
	if err != nil {
		return res, err
	}
	res.registerWrites = writesRegistered.sub(writesBefore)
	if opts.task {
		log.Printf("Every agent registered after %s", res.tRegistered.Round(time.Second))
		res.task = &taskResult{}
		return res, runTask(ctx, opts, dir, cp, ts, sim, res, alive)
	}
	log.Printf("Every agent registered after %s; settling for %s", res.tRegistered.Round(time.Second), opts.settle)
	if err := sleep(ctx, opts.settle); err != nil {
		return res, err
	}
	if err := alive(); err != nil {
		return res, err
	}
	return res, measureWindow(ctx, opts, cp, ts, sim, res, alive)
}

// waitRegistered waits until the task service has registered n agents and
// the agents' lines say so.
func waitRegistered(ctx context.Context, opts options, n int, ts *taskService, sim *simulation, res *levelResult, alive func() error) error {
	deadline := sim.start.Add(opts.registerTimeoutFor(n))
	lastLog := time.Now()
	for {
		if err := alive(); err != nil {
			return err
		}
		m, err := ts.metrics(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		if res.tRegistered == 0 && m[mRegistrations] >= float64(n) {
			res.tRegistered = now.Sub(sim.start)
		}
		tot := sim.totals()
		if res.tRegistered != 0 && tot.registered >= int64(n) {
			res.tRegisteredAgents = firstAllRegistered(sim, n)
			return nil
		}
		if now.After(deadline) {
			return fmt.Errorf("after %s, the service registered %.0f agents and the agents count %d registered (of %d); registration errors %d",
				now.Sub(sim.start).Round(time.Second), m[mRegistrations], tot.registered, n, tot.registrationErrors)
		}
		if now.Sub(lastLog) >= 15*time.Second {
			log.Printf("  %s: %.0f registered by the service, %d by the agents' count, %d registration errors, %.0f check-ins, %.0f held",
				now.Sub(sim.start).Round(time.Second), m[mRegistrations], tot.registered, tot.registrationErrors, m[mCheckIns], m[mLongPolls])
			lastLog = now
		}
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// firstAllRegistered is the time of the first round of lines in which the
// agents' registered counts sum to n.
func firstAllRegistered(sim *simulation, n int) time.Duration {
	sim.mu.Lock()
	defer sim.mu.Unlock()
	latest := make([]int64, len(sim.procs))
	for _, l := range sim.lines {
		latest[l.process] = l.Registered
		var sum int64
		for _, r := range latest {
			sum += r
		}
		if sum >= int64(n) {
			return l.at.Sub(sim.start)
		}
	}
	return 0
}

// measureWindow reads the task service, the agents and the API server
// over the window.
func measureWindow(ctx context.Context, opts options, cp *controlPlane, ts *taskService, sim *simulation, res *levelResult, alive func() error) error {
	log.Printf("Measuring for %s", res.window)
	apiBefore, err := cp.computerWrites(ctx)
	if err != nil {
		return err
	}
	taskCPU0, _ := cpuTime(ts.pid())
	agentsCPU0 := sim.cpu()
	res.load[0] = loadAverage()
	start := time.Now()
	var samples []sample
	var agentsHeld []float64
	for {
		m, err := ts.metrics(ctx)
		if err != nil {
			return err
		}
		mem, err := readMemory(ts.pid())
		if err != nil {
			return err
		}
		now := time.Now()
		samples = append(samples, sample{at: now, m: m, rss: mem.rss})
		res.peak = mem.hwm
		agentsHeld = append(agentsHeld, float64(sim.totals().held))
		if err := alive(); err != nil {
			return err
		}
		if now.Sub(start) >= res.window {
			break
		}
		if len(samples)%6 == 0 {
			log.Printf("  %s: %.0f check-ins, %.0f held, RSS %d MiB", now.Sub(start).Round(time.Second),
				m[mCheckIns]-samples[0].m[mCheckIns], m[mLongPolls], mem.rss>>20)
		}
		if err := sleep(ctx, min(sampleEvery, res.window-now.Sub(start))); err != nil {
			return err
		}
	}
	end := samples[len(samples)-1]
	first := samples[0]
	elapsed := end.at.Sub(first.at)
	res.window = elapsed
	taskCPU1, _ := cpuTime(ts.pid())
	res.taskCPU, res.agentsCPU = taskCPU1-taskCPU0, sim.cpu()-agentsCPU0
	res.load[1] = loadAverage()
	apiAfter, err := cp.computerWrites(ctx)
	if err != nil {
		return err
	}
	simAfter := sim.totals()

	res.checkIns = end.m[mCheckIns] - first.m[mCheckIns]
	res.cycle = time.Duration(end.m[mCycle] * float64(time.Second))
	res.active = end.m[mActive]
	// An agent's interval is the cycle stretched by the pacer's jitter
	// (±10%), plus the latency of its check-in and the sampling here.
	res.span = time.Duration(1.1*float64(res.cycle)) + sampleEvery
	res.minCheckInsPerSpan = minOverSpan(samples, res.span, mCheckIns)
	var held, rss []float64
	for _, s := range samples {
		held = append(held, s.m[mLongPolls])
		rss = append(rss, float64(s.rss))
	}
	res.held, res.heldMax = summarize(held), end.m[mLongPollsMax]
	res.agentsHeld = summarize(agentsHeld)
	res.steady = int64(summarize(rss).median)
	res.turnedAway = end.m[mTurnedAway] - first.m[mTurnedAway]
	res.turnedAwayTotal = end.m[mTurnedAway]
	res.refused, res.relocated = end.m[mRefused], end.m[mRelocated]
	res.registrations = end.m[mRegistrations]
	res.statusWrites = end.m[mStatusWrites] - first.m[mStatusWrites]
	res.writeFailures = end.m[mWriteFailures]
	res.apiWrites = apiAfter.sub(apiBefore)
	res.writeBound = float64(res.agents)*elapsed.Seconds()/float64(opts.statusInterval) + max(10, float64(res.agents)/100)
	res.statusInterval = time.Duration(opts.statusInterval) * time.Second
	res.windowFrom, res.windowTo = first.at.Sub(sim.start), end.at.Sub(sim.start)
	res.agentErrors = simAfter.checkInErrors
	res.registrationErrors = simAfter.registrationErrors
	res.relocations, res.failovers = simAfter.relocations, simAfter.failovers

	var p50, p99 []float64
	for _, l := range sim.linesBetween(first.at, end.at) {
		res.agentCheckIns += float64(l.CheckInsInterval)
		if l.CheckInsInterval > 0 && !l.Final {
			p50 = append(p50, l.LatencyP50Ms)
			p99 = append(p99, l.LatencyP99Ms)
		}
	}
	res.p50, res.p99, res.latencyLines = summarize(p50), summarize(p99), len(p99)
	return res.invalid()
}

// minOverSpan is the fewest increments of counter over any span of at
// least span between two samples; 0 when the samples cover less.
func minOverSpan(samples []sample, span time.Duration, counter string) float64 {
	best := -1.0
	j := 0
	for i := range samples {
		for j < len(samples) && samples[j].at.Sub(samples[i].at) < span {
			j++
		}
		if j == len(samples) {
			break
		}
		if d := samples[j].m[counter] - samples[i].m[counter]; best < 0 || d < best {
			best = d
		}
	}
	return max(best, 0)
}

// invalid returns why the run cannot be read, if it cannot: the service
// refused or relocated an agent that it should serve, or an agent's
// request was answered with a client error. Transport errors and 503s are
// results (the targets say none), not an invalid run.
func (r *levelResult) invalid() error {
	var errs []error
	if r.refused > 0 || r.relocated > 0 {
		errs = append(errs, fmt.Errorf("the task service refused %.0f check-ins and relocated %.0f", r.refused, r.relocated))
	}
	for kind, count := range r.agentErrors {
		if code, err := strconv.Atoi(kind); err == nil && code >= 400 && code < 500 {
			errs = append(errs, fmt.Errorf("%d check-ins were answered %s", count, kind))
		}
	}
	return errors.Join(errs...)
}
