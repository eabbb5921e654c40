package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"time"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// ratioTarget is the tReady / tCreate ratio the controllers aim for.
const ratioTarget = 1.5

// results is what a run measured.
type results struct {
	opts options
	plan *plan

	// siteWrites are the manager's writes until every Site had its first
	// status, before any Subnet existed.
	siteWrites managertest.Counts
	// tCreate runs from the first Subnet create to the last one accepted;
	// the other durations run from the same start.
	tCreate, tReady, tFinal, tSettled, converged time.Duration
	// cpuCreate and cpuConverge are the CPU time each process used during
	// tCreate and until convergence.
	cpuCreate, cpuConverge cpuTimes
	// convergeWrites are the manager's writes from the first Subnet create
	// until the settle time after convergence.
	convergeWrites managertest.Counts
	// tResync is how long a restarted manager took to reconcile every
	// object once; resyncWrites are the writes it sent meanwhile and during
	// the settle time after.
	tResync      time.Duration
	resyncWrites managertest.Counts
	// creates are the harness clients' requests.
	creates managertest.Counts
	peakRSS map[string]int64
}

// print writes the results as a Markdown table.
func (r *results) print(w io.Writer) {
	ratio := 0.0
	if r.tCreate > 0 {
		ratio = r.tReady.Seconds() / r.tCreate.Seconds()
	}
	verdict := "met"
	if ratio > ratioTarget || r.tReady <= 0 {
		verdict = "missed"
	}
	steady := "met"
	if r.resyncWrites.Total() != 0 {
		steady = "missed"
	}
	subnets := r.plan.subnetCount()
	rows := [][2]string{
		{"Sites / Subnets / workers", fmt.Sprintf("%d / %d / %d", len(r.plan.Sites), subnets, r.opts.workers)},
		{"topology", r.plan.summary()},
		{"tCreate: first Subnet create → last accepted", seconds(r.tCreate)},
		{"creates/s", fmt.Sprintf("%.0f", float64(subnets)/r.tCreate.Seconds())},
		{"tReady: → every Subnet Ready for its generation", seconds(r.tReady)},
		{fmt.Sprintf("ratio tReady / tCreate (target ≤ %.1f)", ratioTarget), fmt.Sprintf("%.2f — %s", ratio, verdict)},
		{"tFinal: → every Subnet status as planned", seconds(r.tFinal)},
		{"tSitesSettled: → every Site's status.subnets as planned", seconds(r.tSettled)},
		{"manager writes for the Sites' first statuses", formatWrites(r.siteWrites)},
		{"manager writes during convergence", formatWrites(r.convergeWrites)},
		{"manager writes after a restart (target 0)",
			fmt.Sprintf("%s — %s; every object reconciled in %s", formatWrites(r.resyncWrites), steady, seconds(r.tResync))},
		{"429 responses to writes (reads): manager / harness clients",
			fmt.Sprintf("%d (%d) / %d (%d)",
				r.siteWrites.ThrottledWrites+r.convergeWrites.ThrottledWrites+r.resyncWrites.ThrottledWrites,
				r.siteWrites.ThrottledReads+r.convergeWrites.ThrottledReads+r.resyncWrites.ThrottledReads,
				r.creates.ThrottledWrites, r.creates.ThrottledReads)},
		{fmt.Sprintf("CPU s during tCreate (%d cores: %.1f s available)", runtime.NumCPU(), float64(runtime.NumCPU())*r.tCreate.Seconds()),
			r.cpuCreate.String()},
		{fmt.Sprintf("CPU s until convergence (%.1f s available)", float64(runtime.NumCPU())*r.converged.Seconds()),
			r.cpuConverge.String()},
		{"peak RSS (VmHWM)", rss(r.peakRSS)},
	}
	fmt.Fprintf(w, "| %s | %s |\n| --- | --- |\n", "measure", "value")
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", row[0], row[1])
	}
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// reportedProcesses is the order processes are reported in.
var reportedProcesses = []string{procSelf, procAPIServer, procEtcd, procOthers}

func (t cpuTimes) String() string {
	var parts []string
	for _, name := range reportedProcesses {
		if d, ok := t[name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", name, d.Seconds()))
		}
	}
	return strings.Join(parts, ", ")
}

func rss(peaks map[string]int64) string {
	var parts []string
	for _, name := range reportedProcesses {
		if b, ok := peaks[name]; ok {
			parts = append(parts, fmt.Sprintf("%s %d MiB", name, b>>20))
		}
	}
	return strings.Join(parts, ", ")
}

// summary counts the plan's Subnets by the status they end up with.
func (p *plan) summary() string {
	byReason := map[string]int{}
	inherited, ipv6 := 0, 0
	for _, subnets := range p.SubnetsBySite {
		for _, s := range subnets {
			byReason[s.Want.Reason]++
			if s.Want.InheritedFrom != "" {
				inherited++
			}
			if s.CIDR.Addr().Is6() {
				ipv6++
			}
		}
	}
	return fmt.Sprintf("%d Effective (%d inherited), %d OverriddenByImport, %d SiteNotFound, %d NoSite; %d IPv6",
		byReason[siteopsv1.ReasonEffective], inherited, byReason[siteopsv1.ReasonOverriddenByImport],
		byReason[siteopsv1.ReasonSiteNotFound], byReason[siteopsv1.ReasonNoSite], ipv6)
}
