package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/siteops/site-operator/internal/testing/managertest"
)

// Classes of the writes the harness counts (managertest.RequestCounter).
const (
	writeSubnetStatus = "Subnet status"
	writeSiteStatus   = "Site status"
	writeOther        = "other"
)

// newRequestCounter counts writes by the classes above.
func newRequestCounter() *managertest.RequestCounter {
	return &managertest.RequestCounter{Classify: func(req *http.Request) string {
		path := req.URL.Path
		switch {
		case strings.HasSuffix(path, "/status") && strings.Contains(path, "/subnets/"):
			return writeSubnetStatus
		case strings.HasSuffix(path, "/status") && strings.Contains(path, "/sites/"):
			return writeSiteStatus
		default:
			return writeOther
		}
	}}
}

// formatWrites formats the manager's writes for the results table.
func formatWrites(c managertest.Counts) string {
	return fmt.Sprintf("%d (Subnet status %d, Site status %d, other %d; %d conflicts)",
		c.Total(), c.Writes[writeSubnetStatus], c.Writes[writeSiteStatus], c.Writes[writeOther], c.Conflicts)
}

// The processes whose CPU time and memory the harness reports: itself (the
// manager, the harness clients and the observer) and the control plane that
// envtest started as its children.
const (
	procSelf      = "harness+manager"
	procAPIServer = "kube-apiserver"
	procEtcd      = "etcd"
	// procOthers is every other process on the machine: CPU time they use
	// during a measurement was taken from the control plane and manager.
	procOthers = "other processes"
)

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// processes maps the reported process names to their pids.
func processes() (map[string]int, error) {
	self := os.Getpid()
	procs := map[string]int{procSelf: self}
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, fmt.Errorf("listing processes: %w", err)
	}
	for _, path := range stats {
		comm, fields, err := readStat(path)
		if err != nil || len(fields) < 2 {
			continue // the process has exited
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid != self {
			continue
		}
		if comm == procAPIServer || comm == procEtcd {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			procs[comm] = pid
		}
	}
	return procs, nil
}

// readStat returns the command name of a /proc/<pid>/stat file and the
// fields after it (state first).
func readStat(path string) (string, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	open, closing := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open {
		return "", nil, fmt.Errorf("unexpected format of %s", path)
	}
	return string(data[open+1 : closing]), strings.Fields(string(data[closing+1:])), nil
}

// cpuTimes is the CPU time (user and system) each process has used.
type cpuTimes map[string]time.Duration

// sampleCPU reads the CPU time each of procs, and procOthers, has used so
// far.
func sampleCPU(procs map[string]int) (cpuTimes, error) {
	machine, err := machineBusy()
	if err != nil {
		return nil, err
	}
	times := cpuTimes{procOthers: machine}
	for name, pid := range procs {
		_, fields, err := readStat(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return nil, fmt.Errorf("reading the CPU time of %s: %w", name, err)
		}
		// utime and stime are fields 14 and 15 of stat(5); fields[0] is 3.
		if len(fields) < 13 {
			return nil, fmt.Errorf("reading the CPU time of %s: short stat line", name)
		}
		utime, _ := strconv.ParseInt(fields[11], 10, 64)
		stime, _ := strconv.ParseInt(fields[12], 10, 64)
		times[name] = time.Duration(utime+stime) * time.Second / userHZ
		times[procOthers] -= times[name]
	}
	return times, nil
}

// machineBusy reads the CPU time all processes have used, from /proc/stat.
func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("reading the machine's CPU time: %w", err)
	}
	line, _, _ := bytes.Cut(data, []byte("\n"))
	fields := strings.Fields(string(line))
	// cpu user nice system idle iowait irq softirq steal ...
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("reading the machine's CPU time: unexpected format of /proc/stat")
	}
	var ticks int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, _ := strconv.ParseInt(fields[i], 10, 64)
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// waitIdle waits until the control plane has used less than a tenth of a
// core for half a second, so that a measurement does not start while the
// API server is still busy with its own start-up (such as publishing the
// CRDs' OpenAPI), or gives up after a minute.
func waitIdle(ctx context.Context, procs map[string]int) error {
	const window, idle = 500 * time.Millisecond, 50 * time.Millisecond
	deadline := time.Now().Add(time.Minute)
	before, err := sampleCPU(procs)
	if err != nil {
		return err
	}
	for time.Now().Before(deadline) {
		if err := sleep(ctx, window); err != nil {
			return err
		}
		now, err := sampleCPU(procs)
		if err != nil {
			return err
		}
		used := now.sub(before)
		if used[procAPIServer]+used[procEtcd] < idle {
			return nil
		}
		before = now
	}
	log.Printf("The control plane is still busy after a minute; going on")
	return nil
}

func (t cpuTimes) sub(o cpuTimes) cpuTimes {
	d := cpuTimes{}
	for name, v := range t {
		d[name] = v - o[name]
	}
	return d
}

// peakRSS reads each process's peak resident set size (VmHWM).
func peakRSS(procs map[string]int) (map[string]int64, error) {
	peaks := map[string]int64{}
	for name, pid := range procs {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return nil, fmt.Errorf("reading the memory use of %s: %w", name, err)
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			if kb, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
				v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 10, 64)
				peaks[name] = v * 1024
			}
		}
		err = s.Err()
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading the memory use of %s: %w", name, err)
		}
	}
	return peaks, nil
}

// progress logs every few seconds how far the creates and the statuses
// are since it was made.
type progress struct {
	start           time.Time
	obs             *observer
	creates, writes *managertest.RequestCounter
	createsBefore   managertest.Counts
	writesBefore    managertest.Counts
}

func newProgress(obs *observer, creates, writes *managertest.RequestCounter) *progress {
	return &progress{
		start: time.Now(), obs: obs, creates: creates, writes: writes,
		createsBefore: creates.Snapshot(), writesBefore: writes.Snapshot(),
	}
}

// log logs until ctx ends.
func (p *progress) log(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			m := p.obs.milestones()
			c, w := p.creates.Snapshot().Sub(p.createsBefore), p.writes.Snapshot().Sub(p.writesBefore)
			log.Printf("%3.0f s: %d creates sent; Subnets ready %d; manager writes: Subnet status %d, Site status %d",
				time.Since(p.start).Seconds(), c.Writes[writeOther], m.ready, w.Writes[writeSubnetStatus], w.Writes[writeSiteStatus])
		}
	}
}

// apiServerProfileDuration is how long -apiserver-cpuprofile profiles.
const apiServerProfileDuration = 30 * time.Second

// profileAPIServer fetches a CPU profile of the API server from its
// /debug/pprof endpoint into path, if path is set, and closes the returned
// channel when it is done.
func profileAPIServer(ctx context.Context, cfg *rest.Config, path string) <-chan struct{} {
	done := make(chan struct{})
	if path == "" {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		if err := fetchProfile(ctx, cfg, path); err != nil {
			log.Printf("Profiling kube-apiserver: %v", err)
		}
	}()
	return done
}

func fetchProfile(ctx context.Context, cfg *rest.Config, path string) error {
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return fmt.Errorf("creating an HTTP client: %w", err)
	}
	url := fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", strings.TrimSuffix(cfg.Host, "/"),
		int(apiServerProfileDuration.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("requesting the profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("requesting the profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
