package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"
)

// The task mode's targets, reported beside the figures.
const (
	// At 10,000 agents, all in long polls: 99% receive their work within
	// this; at 50,000, within one check-in cycle plus this.
	targetReceive = 5 * time.Second
	// Every result recorded within this of its report.
	targetRecord = 60 * time.Second
	// At most this many API writes per target on average.
	targetWritesPerTarget = 1.0
)

// printTaskResults writes task mode's Markdown table, one column per
// level, then the targets.
func printTaskResults(w io.Writer, opts options, results []*levelResult) {
	var levels []*levelResult
	for _, r := range results {
		if r.task != nil && r.task.tEnd > 0 {
			levels = append(levels, r)
		}
	}
	if len(levels) == 0 {
		return
	}
	fmt.Fprintf(w, "\nMachine: %d cores, %s. Task service: maxCheckInRate %.0f/s, statusIntervalSeconds %d, other settings default. Register rate %.0f/s. "+
		"DeploymentTask: runScript `true` for every agent; simulated work %s, %g%% failing.\n\n",
		runtime.NumCPU(), runtime.Version(), opts.maxCheckInRate, opts.statusInterval, opts.registerRate, opts.workDuration, opts.workFailPercent)
	header := []string{"measure"}
	for _, r := range levels {
		header = append(header, fmt.Sprintf("%d agents", r.agents))
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	row := func(name string, value func(*levelResult, *taskResult) string) {
		cells := []string{name}
		for _, r := range levels {
			cells = append(cells, value(r, r.task))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	for _, tr := range taskRows {
		row(tr.name, tr.value)
	}
	// The writes by resource: every resource any level wrote.
	union := resourceWrites{}
	for _, r := range levels {
		for resource := range r.task.writes {
			union[resource] = nil
		}
	}
	for _, resource := range union.resources(taskResources) {
		row("  "+resource, func(r *levelResult, tr *taskResult) string {
			lat := ""
			if d := tr.latency.mean(resource); d > 0 {
				lat = fmt.Sprintf(", API server %.1f ms each", float64(d.Microseconds())/1000)
			}
			return fmt.Sprintf("%s%s; before T0: %.0f", tr.writes.describe(resource), lat, tr.baseline.of(resource))
		})
	}
	for _, tr := range taskRowsAfterWrites {
		row(tr.name, tr.value)
	}

	fmt.Fprintf(w, "\n| target | level | result |\n| --- | --- | --- |\n")
	for _, r := range levels {
		for _, t := range r.task.targets(r) {
			fmt.Fprintf(w, "| %s | %d agents | %s |\n", t[0], r.agents, t[1])
		}
	}
}

type taskRow struct {
	name  string
	value func(*levelResult, *taskResult) string
}

var taskRows = []taskRow{
	{"simulate processes", func(r *levelResult, _ *taskResult) string { return fmt.Sprint(r.processes) }},
	{"all registered (service counter, from the first simulate start)", func(r *levelResult, _ *taskResult) string { return secs(r.tRegistered) }},
	{"settle before T0 / check-in cycle at T0 / check-ins held at T0 (share of agents)", func(r *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%s / %s / %.0f (%.1f%%)", secs(tr.settle), secs(tr.cycle), tr.heldAtT0, 100*tr.heldAtT0/float64(r.agents))
	}},
	{"**T0 → 99% of agents received their item** (latest of the processes' 99% times: an upper bound)", func(_ *levelResult, tr *taskResult) string {
		return "**" + reached(tr.received) + "**"
	}},
	{"received: first / p50 (latest of the processes') / last", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%s / %s / %s", secs(tr.received.first), secs(tr.received.p50), secs(tr.received.last))
	}},
	{"**T0 → 99% of results acknowledged** (same)", func(_ *levelResult, tr *taskResult) string {
		return "**" + reached(tr.acknowledged) + "**"
	}},
	{"acknowledged: first / p50 / last", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%s / %s / %s", secs(tr.acknowledged.first), secs(tr.acknowledged.p50), secs(tr.acknowledged.last))
	}},
	{"**T0 → task status final with total = agents** (read every 250 ms): phase", func(_ *levelResult, tr *taskResult) string {
		if tr.timedOut != "" {
			return "**" + tr.timedOut + "**"
		}
		return fmt.Sprintf("**%s**: %s (%d succeeded, %d failed)", secs(tr.tDone), tr.phase, tr.counts.Succeeded, tr.counts.Failed)
	}},
	{"status.startTime / completionTime − T0 (whole seconds)", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%s / %s", secs(tr.tStart), secs(tr.tCompletion))
	}},
	{"T0 → end of measurement (final status seen and every result's lastTask written or deferred)", func(_ *levelResult, tr *taskResult) string {
		if tr.timedOut != "" {
			return secs(tr.tEnd) + " (-task-timeout)"
		}
		return secs(tr.tEnd)
	}},
	{"agents: items received / results acknowledged (succeeded, failed) / items ignored", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%d / %d (%d, %d) / %d", tr.received.count, tr.acknowledged.count, tr.succeededAgents, tr.failedAgents, tr.workIgnored)
	}},
	{"agents: report retries / results dropped / failed report attempts / Running reports failed", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%d / %d / %s / %d", tr.reportRetries, tr.dropped, errorsString(tr.reportErrors), tr.progressErrors)
	}},
	{"service: items dispatched / offered again / results recorded", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f", tr.dispatched, tr.offeredAgain, tr.results)
	}},
	{"shards at the end: shards, entries (by state)", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%d, %d (%s)", tr.shards, tr.entries, statesString(tr.states))
	}},
	{"claim → report, less the work (shards' claimed and finished, whole seconds): p50 / p99 / max", func(_ *levelResult, tr *taskResult) string {
		return distString(tr.handOut)
	}},
	{"**report → recorded** (an agent's first send of its result → the service's 200, answered once the result is in the dispatch state; the largest of the processes' figures): p50 / p99 / max (results)", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("**%s** (%d)", distStringMs(tr.reportToAck), tr.reportToAck.n)
	}},
	{"report (finished) → seen by a watch here, which lags when this process is short of CPU (whole seconds, so up to 1 s over): p50 / p99 / max (entries)", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%s (%d)", distString(tr.recordLag), tr.recordLag.n)
	}},
	{"claim → seen by the watch (same): p50 / p99 / max", func(_ *levelResult, tr *taskResult) string {
		return distString(tr.claimLag)
	}},
	{"service: shard writes / conflicts / failures", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f", tr.shardWrites, tr.conflicts, tr.shardFailed)
	}},
	{"service: lastTask written at once / left for the next status write / failed; Computers showing it at the end", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%.0f / %.0f / %.0f; %d", tr.lastWritten, tr.lastDeferred, tr.lastFailed, tr.lastTaskShown)
	}},
	{"**API writes, T0 → end: total (per target)**", func(r *levelResult, tr *taskResult) string {
		return fmt.Sprintf("**%.0f (%.3f)**", tr.writes.total(), tr.writes.total()/float64(r.agents))
	}},
	{"by resource (verbs), the API server's mean time per write; the same-length stretch before T0", func(*levelResult, *taskResult) string { return "" }},
}

var taskRowsAfterWrites = []taskRow{
	{"stretch before T0 the baseline was read over (scaled to T0 → end)", func(_ *levelResult, tr *taskResult) string {
		s := secs(tr.baselineSpan)
		if tr.extrapolated {
			s += " (shorter than the task: extrapolated)"
		}
		return s
	}},
	{"Computer writes: T0 → end / baseline / beyond the baseline (per target)", func(r *levelResult, tr *taskResult) string {
		during := tr.writes.of("computers") + tr.writes.of("computers/status")
		base := tr.baseline.of("computers") + tr.baseline.of("computers/status")
		return fmt.Sprintf("%.0f / %.0f / %.0f (%.3f)", during, base, during-base, (during-base)/float64(r.agents))
	}},
	{"Computers whose lastSeen refresh fell due by the end (lastSeen at T0 + status interval): writes owed task or not", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprint(tr.refreshesDue)
	}},
	{"API writes less the baseline's Computer writes, per target", func(r *levelResult, tr *taskResult) string {
		base := tr.baseline.of("computers") + tr.baseline.of("computers/status")
		return fmt.Sprintf("%.3f", (tr.writes.total()-base)/float64(r.agents))
	}},
	{"service: check-ins' Computer status writes, T0 → end", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%.0f", tr.serviceStatusWrites)
	}},
	{"DeploymentTask as served at the end (limit 256 KiB)", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%d bytes", tr.taskJSON)
	}},
	{"CPU, T0 → end (% of one core): task service / kube-apiserver / etcd / harness (controller, locator) / simulate", func(_ *levelResult, tr *taskResult) string {
		pct := func(d time.Duration) string { return fmt.Sprintf("%.0f%%", 100*d.Seconds()/tr.tEnd.Seconds()) }
		return fmt.Sprintf("%s / %s / %s / %s / %s (task service %.1f s)", pct(tr.taskCPU), pct(tr.apiCPU), pct(tr.etcdCPU),
			pct(tr.harnessCPU), pct(tr.agentsCPU), tr.taskCPU.Seconds())
	}},
	{"task-service RSS at T0 / peak T0 → end", func(_ *levelResult, tr *taskResult) string {
		peak := mib(tr.peakRSS)
		if !tr.peakFromT0 {
			peak += " (VmHWM since start: not reset)"
		}
		return fmt.Sprintf("%s / %s", mib(tr.rssT0), peak)
	}},
	{"task service's /metrics during the task: failed scrapes (10 s timeout) / longest gap between two", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%d / %s", tr.scrapeFailures, secs(tr.longestScrape))
	}},
	{"1-minute load average at T0 / end", func(_ *levelResult, tr *taskResult) string {
		return fmt.Sprintf("%.1f / %.1f", tr.load[0], tr.load[1])
	}},
}

func reached(e eventTimes) string {
	if !e.reached {
		return fmt.Sprintf("not reached (%d events)", e.count)
	}
	return secs(e.agents99)
}

// distStringMs is distString with a tenth of a second.
func distStringMs(d dist) string {
	if d.n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f / %.1f / %.1f s", d.p50, d.p99, d.max)
}

func distString(d dist) string {
	if d.n == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f / %.0f / %.0f s", d.p50, d.p99, d.max)
}

func statesString(m map[string]int) string {
	var parts []string
	for _, s := range []string{"Succeeded", "Failed", "Running", "Claimed"} {
		if m[s] != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", s, m[s]))
		}
	}
	return strings.Join(parts, ", ")
}

// targets are the level's targets and verdicts.
func (tr *taskResult) targets(r *levelResult) [][2]string {
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	var out [][2]string
	switch {
	case r.agents >= 50_000:
		bound := tr.cycle + targetReceive
		out = append(out, [2]string{"99% receive their work within one check-in cycle + 5 s",
			fmt.Sprintf("%s: %s (cycle %s, bound %s)", verdict(tr.received.reached && tr.received.agents99 <= bound), reached(tr.received), secs(tr.cycle), secs(bound))})
	default:
		name := "99% receive their work within 5 s (all in long polls)"
		if r.agents < 10_000 {
			name += " — the 10,000-agent target, for reference"
		}
		out = append(out, [2]string{name,
			fmt.Sprintf("%s: %s; %.1f%% held at T0", verdict(tr.received.reached && tr.received.agents99 <= targetReceive), reached(tr.received),
				100*tr.heldAtT0/float64(r.agents))})
	}
	out = append(out,
		[2]string{"every result recorded within 60 s of its report (none dropped)",
			fmt.Sprintf("%s: max %.1f s over %d (report → the service's 200), %d dropped, %d report retries",
				verdict(tr.reportToAck.n == r.agents && tr.reportToAck.max <= targetRecord.Seconds() && tr.dropped == 0), tr.reportToAck.max, tr.reportToAck.n, tr.dropped, tr.reportRetries)},
		[2]string{"≤ 1 API write per target on average",
			fmt.Sprintf("%s: %.3f (%.0f writes for %d targets)", verdict(tr.writes.total() <= targetWritesPerTarget*float64(r.agents)),
				tr.writes.total()/float64(r.agents), tr.writes.total(), r.agents)},
	)
	return out
}
