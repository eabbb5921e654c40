package main

import (
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The targets, reported beside the figures.
const (
	targetP99        = 100 * time.Millisecond
	targetRSSPerHeld = 20 << 10 // bytes
)

// printResults writes a Markdown table of the levels, one column each,
// then the targets.
func printResults(w io.Writer, opts options, results []*levelResult) {
	if len(results) == 0 {
		return
	}
	if opts.task {
		printTaskResults(w, opts, results)
		return
	}
	fmt.Fprintf(w, "\nMachine: %d cores, %s. Task service: maxCheckInRate %.0f/s, statusIntervalSeconds %d, other settings default. Register rate %.0f/s.\n\n",
		runtime.NumCPU(), runtime.Version(), opts.maxCheckInRate, opts.statusInterval, opts.registerRate)
	header := []string{"measure"}
	for _, r := range results {
		header = append(header, fmt.Sprintf("%d agents", r.agents))
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat(" --- |", len(header)))
	for _, row := range rows {
		cells := []string{row.name}
		for _, r := range results {
			cells = append(cells, row.value(r))
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
	}
	fmt.Fprintf(w, "\n| target | level | result |\n| --- | --- | --- |\n")
	for _, r := range results {
		for _, t := range r.targets() {
			fmt.Fprintf(w, "| %s | %d agents | %s |\n", t[0], r.agents, t[1])
		}
	}
}

type row struct {
	name  string
	value func(*levelResult) string
}

var rows = []row{
	{"simulate processes", func(r *levelResult) string { return fmt.Sprint(r.processes) }},
	{"all registered: service counter (1 s) / agents' lines (10 s)", func(r *levelResult) string {
		return fmt.Sprintf("%s / %s", secs(r.tRegistered), secs(r.tRegisteredAgents))
	}},
	{"registrations (service) / registration errors (agents)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f / %d", r.registrations, r.registrationErrors)
	}},
	{"API writes to Computers during registration", func(r *levelResult) string { return r.registerWrites.String() }},
	{"window: length (from, to after the first agent started) / 1-min load average at its start, end", func(r *levelResult) string {
		return fmt.Sprintf("%s (%s, %s) / %.1f, %.1f", secs(r.window), secs(r.windowFrom), secs(r.windowTo), r.load[0], r.load[1])
	}},
	{"check-in cycle / active agents (service)", func(r *levelResult) string {
		return fmt.Sprintf("%s / %.0f", secs(r.cycle), r.active)
	}},
	{"check-ins in the window: service (agents' 10 s lines)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f (%.0f)", r.checkIns, r.agentCheckIns)
	}},
	{"check-ins per second (agents / cycle; bound maxCheckInRate)", func(r *levelResult) string {
		return fmt.Sprintf("%.1f (%.1f; %.0f)", r.checkIns/r.window.Seconds(), r.expectedRate(), r.maxRate)
	}},
	{"fewest check-ins in any span of 1.1 × cycle + 5 s (an agent's longest interval)", func(r *levelResult) string {
		if r.minCheckInsPerSpan == 0 {
			return "— (window shorter than the span)"
		}
		return fmt.Sprintf("%.0f in %s (%.2f × agents)", r.minCheckInsPerSpan, secs(r.span), r.minCheckInsPerSpan/float64(r.agents))
	}},
	{"long polls held (service): mean, min–max (cap)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f (%.1f%%), %.0f–%.0f (%.0f)", r.held.mean, 100*r.held.mean/float64(r.agents), r.held.min, r.held.max, r.heldMax)
	}},
	{"check-ins in flight (agents' sum): mean", func(r *levelResult) string { return fmt.Sprintf("%.0f", r.agentsHeld.mean) }},
	{"check-in latency p50 (ms): median, max of 10 s lines", func(r *levelResult) string {
		return fmt.Sprintf("%.1f, %.1f", r.p50.median, r.p50.max)
	}},
	{"check-in latency p99 (ms): median, max of 10 s lines (lines)", func(r *levelResult) string {
		return fmt.Sprintf("%.1f, %.1f (%d)", r.p99.median, r.p99.max, r.latencyLines)
	}},
	{"turned away: window (since start)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f (%.0f)", r.turnedAway, r.turnedAwayTotal)
	}},
	{"refused / relocated (service, since start)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f / %.0f", r.refused, r.relocated)
	}},
	{"check-in errors (agents, since start) / relocations / failovers", func(r *levelResult) string {
		return fmt.Sprintf("%s / %d / %d", errorsString(r.agentErrors), r.relocations, r.failovers)
	}},
	{"task-service RSS: baseline / steady (median) / peak VmHWM", func(r *levelResult) string {
		return fmt.Sprintf("%s / %s / %s", mib(r.baseline), mib(r.steady), mib(r.peak))
	}},
	{"RSS per held agent: (steady − baseline) / mean held", func(r *levelResult) string {
		return fmt.Sprintf("%.1f KiB", r.rssPerHeld()/1024)
	}},
	{"CPU in the window: task service / simulate processes (% of one core)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f%% / %.0f%%", 100*r.taskCPU.Seconds()/r.window.Seconds(), 100*r.agentsCPU.Seconds()/r.window.Seconds())
	}},
	{"API writes to Computers in the window (per minute)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f (%.1f/min): %s", r.apiWrites.total(), r.apiWrites.total()/r.window.Minutes(), r.apiWrites)
	}},
	{"Computer status writes (service counter) / failures since start", func(r *levelResult) string {
		return fmt.Sprintf("%.0f / %.0f", r.statusWrites, r.writeFailures)
	}},
	{"writes bound: agents × window / statusInterval + max(10, 1%)", func(r *levelResult) string {
		return fmt.Sprintf("%.0f", r.writeBound)
	}},
}

func (r *levelResult) expectedRate() float64 {
	return float64(r.agents) / max(r.cycle.Seconds(), 1)
}

func (r *levelResult) rssPerHeld() float64 {
	if r.held.mean <= 0 {
		return 0
	}
	return float64(r.steady-r.baseline) / r.held.mean
}

// targets are the level's targets and verdicts.
func (r *levelResult) targets() [][2]string {
	var out [][2]string
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	failures := r.turnedAway + r.refused
	for _, v := range r.agentErrors {
		failures += float64(v)
	}
	switch {
	case r.agents >= 50_000:
		out = append(out,
			[2]string{"every agent checks in within its interval (proxy: ≥ agents check-ins in every span of an agent's longest interval, none failed)",
				fmt.Sprintf("%s: fewest %.0f for %d agents", verdict(r.minCheckInsPerSpan >= float64(r.agents) && failures == 0), r.minCheckInsPerSpan, r.agents)},
			[2]string{"none refused (turned away, refused, errors)", fmt.Sprintf("%s: %.0f", verdict(failures == 0), failures)},
			[2]string{"writes ≤ 1 per Computer per status interval", fmt.Sprintf("%s: %.0f API writes ≤ %.0f", verdict(r.apiWrites.total() <= r.writeBound), r.apiWrites.total(), r.writeBound)},
		)
	case r.agents >= 10_000:
		out = append(out,
			[2]string{"all held in long polls (none turned away; held ≥ 95%: the pacer's jitter keeps a few between polls)",
				fmt.Sprintf("%s: mean %.0f of %d, %.0f turned away", verdict(r.turnedAway == 0 && r.held.mean >= 0.95*float64(r.agents)), r.held.mean, r.agents, r.turnedAway)},
			[2]string{"p99 < 100 ms (every 10 s line)", fmt.Sprintf("%s: worst %.1f ms, median %.1f ms", verdict(r.p99.max < float64(targetP99.Milliseconds())), r.p99.max, r.p99.median)},
			[2]string{"≤ 20 KiB RSS per held agent", fmt.Sprintf("%s: %.1f KiB", verdict(r.rssPerHeld() <= targetRSSPerHeld), r.rssPerHeld()/1024)},
		)
	}
	if r.windowTo < r.statusInterval {
		out = append(out, [2]string{"no ordinary check-in writes (the window ends before any lastSeen is a status interval old: 0 writes due)",
			fmt.Sprintf("%s: %.0f API writes for %.0f check-ins", verdict(r.apiWrites.total() == 0), r.apiWrites.total(), r.checkIns)})
	} else {
		out = append(out, [2]string{"no ordinary check-in writes (writes only the lastSeen refreshes: ≤ the bound)",
			fmt.Sprintf("%s: %.0f API writes (bound %.0f) for %.0f check-ins", verdict(r.apiWrites.total() <= r.writeBound), r.apiWrites.total(), r.writeBound, r.checkIns)})
	}
	return out
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func errorsString(m map[string]int64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
