package main

import (
	"bufio"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// ratioTarget bounds the import's time to converge as a multiple of the
// baseline's.
const ratioTarget = 1.5

var logf = log.Printf

// results is what a run measured.
type results struct {
	opts options
	load struct{ start, end string }
	// Samba: start, and the bulk helpers' times to add the sites (with
	// their two children each) and the subnets.
	tSambaStart, tFillSites, tFillSubnets time.Duration
	baseline                              struct {
		// tCreate: first create → last accepted; tReady: → every Subnet
		// Ready set for its generation; tTrue: → every one True.
		tCreate, tReady, tTrue time.Duration
		readyTrue              int
		cpu                    cpuTimes
		writes                 managertest.Counts
	}
	imp struct {
		// From the DirectoryImport's create: tFirstSubnet: → the first
		// imported Subnet seen; tCreate: → the last one seen; tReady: →
		// every one Ready set; tImportReady: → the import's Ready True.
		tFirstSubnet, tCreate, tReady, tTrue, tImportReady time.Duration
		readyTrue                                          int
		cpu                                                cpuTimes
		writes                                             managertest.Counts
	}
	second struct {
		tSync  time.Duration
		writes managertest.Counts
	}
	// tRead is directory.Read of the whole directory alone, after the rest.
	tRead                  time.Duration
	readSites, readSubnets int
	status                 siteopsv1.DirectoryImportStatus
	cpuRun                 cpuTimes
}

func (r *results) print(w io.Writer) {
	b, im := &r.baseline, &r.imp
	tImport := max(im.tReady, im.tImportReady)
	ratio := 0.0
	if b.tReady > 0 && im.tReady > 0 {
		ratio = tImport.Seconds() / b.tReady.Seconds()
	}
	verdict := "met"
	if ratio > ratioTarget || ratio == 0 {
		verdict = "missed"
	}
	objWrites := r.second.writes.Writes[writeSite] + r.second.writes.Writes[writeSubnet]
	second := "met"
	if objWrites != 0 {
		second = "missed"
	}
	trueAt := func(d time.Duration, n int) string {
		if n == r.opts.subnets {
			return seconds(d)
		}
		return fmt.Sprintf("not reached (%d of %d True)", n, r.opts.subnets)
	}
	rows := [][2]string{
		{"AD sites / subnets; writers", fmt.Sprintf("%d (+ Default-First-Site-Name) / %d; %d", r.opts.sites, r.opts.subnets, r.opts.workers)},
		{"Samba: start; add sites; add subnets (not measured against)", fmt.Sprintf("%s; %s; %s", seconds(r.tSambaStart), seconds(r.tFillSites), seconds(r.tFillSubnets))},
		{"baseline: first create → last accepted", seconds(b.tCreate)},
		{"**baseline: → every Subnet Ready set**", "**" + seconds(b.tReady) + "**"},
		{"baseline: → every Subnet Ready True", trueAt(b.tTrue, b.readyTrue)},
		{"baseline: manager writes", formatWrites(b.writes)},
		{"import: DirectoryImport created → first imported Subnet seen", seconds(im.tFirstSubnet)},
		{"import: → last imported Subnet seen", seconds(im.tCreate)},
		{"import: → every imported Subnet Ready set", seconds(im.tReady)},
		{"import: → the import's Ready True", seconds(im.tImportReady)},
		{"**import: converged (both)**", "**" + seconds(tImport) + "**"},
		{"import: → every imported Subnet Ready True", trueAt(im.tTrue, im.readyTrue)},
		{fmt.Sprintf("**ratio import / baseline (target ≤ %.1f)**", ratioTarget), fmt.Sprintf("**%.2f** — %s", ratio, verdict)},
		{"import: manager writes", formatWrites(im.writes)},
		{"import status: sites / subnets / skipped", fmt.Sprintf("%d / %d / %d", r.status.Sites, r.status.Subnets, r.status.SkippedCount)},
		{"second sync: spec change → status.observedGeneration", seconds(r.second.tSync)},
		{"**second sync: manager writes to Sites and Subnets (target 0)**", fmt.Sprintf("**%d** — %s", objWrites, second)},
		{fmt.Sprintf("second sync: every manager write (and %s after)", r.opts.settle), formatWrites(r.second.writes)},
		{"directory.Read alone, pages of 500 (after the run)", fmt.Sprintf("%s (%d sites, %d subnets)", seconds(r.tRead), r.readSites, r.readSubnets)},
		{fmt.Sprintf("CPU s, baseline (%d cores: %.1f s available)", runtime.NumCPU(), float64(runtime.NumCPU())*b.tReady.Seconds()), b.cpu.String()},
		{fmt.Sprintf("CPU s, import (%.1f s available)", float64(runtime.NumCPU())*tImport.Seconds()), im.cpu.String()},
		{"CPU s, baseline to second sync", r.cpuRun.String()},
		{"1-minute load average: start / end", r.load.start + " / " + r.load.end},
	}
	fmt.Fprintf(w, "| measure | value |\n| --- | --- |\n")
	for _, row := range rows {
		fmt.Fprintf(w, "| %s | %s |\n", row[0], row[1])
	}
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func formatWrites(c managertest.Counts) string {
	return fmt.Sprintf("%d (Site %d, Subnet %d, Site status %d, Subnet status %d, DirectoryImport status %d, other %d; %d conflicts, %d 429s)",
		c.Total(), c.Writes[writeSite], c.Writes[writeSubnet], c.Writes[writeSiteStatus], c.Writes[writeSubnetStatus],
		c.Writes[writeImportStatus], c.Writes[writeOther], c.Conflicts, c.ThrottledWrites)
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(data)); len(f) > 0 {
		return f[0]
	}
	return "?"
}

// userHZ is the unit of the CPU times in /proc (USER_HZ).
const userHZ = 100

// cpuTimes is the CPU time used so far by this process, each group of its
// descendants (named after the command of the child of this process they
// descend from: kube-apiserver, etcd, samba) and every other process.
type cpuTimes map[string]time.Duration

const (
	procSelf   = "harness+manager"
	procOthers = "other processes"
)

func sampleCPU() cpuTimes {
	times := cpuTimes{}
	self := os.Getpid()
	type proc struct {
		ppid int
		comm string
		cpu  time.Duration
	}
	procs := map[int]proc{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		s := string(data)
		open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || closing < open {
			continue
		}
		f := strings.Fields(s[closing+1:])
		if len(f) < 13 {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		procs[pid] = proc{ppid: ppid, comm: s[open+1 : closing], cpu: time.Duration(ut+st) * time.Second / userHZ}
	}
	var tree time.Duration
	for pid, p := range procs {
		if pid == self {
			times[procSelf] += p.cpu
			tree += p.cpu
			continue
		}
		// Walk up to the child of self, if any.
		child, cur := 0, pid
		for range 64 {
			q, ok := procs[cur]
			if !ok || cur <= 1 {
				break
			}
			if q.ppid == self {
				child = cur
				break
			}
			cur = q.ppid
		}
		if child != 0 {
			times[procs[child].comm] += p.cpu
			tree += p.cpu
		}
	}
	if busy, ok := machineBusy(); ok {
		times[procOthers] = busy - tree
	}
	return times
}

// machineBusy is the CPU time the machine has spent not idle.
func machineBusy() (time.Duration, bool) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	if !s.Scan() {
		return 0, false
	}
	fields := strings.Fields(s.Text())
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, false
	}
	var busy int64
	for i, v := range fields[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already in user
			break
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / userHZ, true
}

func (t cpuTimes) sub(before cpuTimes) cpuTimes {
	d := cpuTimes{}
	for k, v := range t {
		d[k] = v - before[k]
	}
	return d
}

func (t cpuTimes) String() string {
	order := []string{procSelf, "kube-apiserver", "etcd", "samba", procOthers}
	var parts []string
	seen := map[string]bool{}
	for _, name := range order {
		if v, ok := t[name]; ok {
			parts = append(parts, fmt.Sprintf("%s %.1f", name, v.Seconds()))
			seen[name] = true
		}
	}
	var rest time.Duration
	for k, v := range t {
		if !seen[k] {
			rest += v
		}
	}
	if rest > 0 {
		parts = append(parts, fmt.Sprintf("other children %.1f", rest.Seconds()))
	}
	return strings.Join(parts, ", ")
}
