package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// binaries are the programs the harness runs.
type binaries struct {
	taskService, agent string
}

// buildBinaries builds cmd/task-service and cmd/agent into dir.
func buildBinaries(ctx context.Context, dir string) (binaries, error) {
	log.Printf("Building cmd/task-service and cmd/agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/", "./cmd/task-service", "./cmd/agent")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return binaries{}, fmt.Errorf("building the binaries: %w", err)
	}
	return binaries{taskService: filepath.Join(dir, "task-service"), agent: filepath.Join(dir, "agent")}, nil
}

// The addresses the servers listen on.
var (
	locatorHost = netip.MustParseAddr("127.0.0.1")
	taskHost    = netip.MustParseAddr("127.0.0.2")
)

// pki is the CA the agents trust and the serving certificates of the
// locator and the task service, written into a directory.
type pki struct {
	caFile                    string
	taskCertFile, taskKeyFile string
	locatorCert, locatorKey   []byte
}

func makePKI(dir string) (pki, error) {
	now := time.Now()
	ca, err := certs.NewAuthority("site-operator benchmark CA", now, 24*time.Hour)
	if err != nil {
		return pki{}, err
	}
	issue := func(host netip.Addr) ([]byte, []byte, error) {
		names, err := certs.NamesOf(host.String())
		if err != nil {
			return nil, nil, err
		}
		return ca.Issue(names, now, 24*time.Hour)
	}
	p := pki{caFile: filepath.Join(dir, "ca.crt"), taskCertFile: filepath.Join(dir, "task.crt"), taskKeyFile: filepath.Join(dir, "task.key")}
	taskCert, taskKey, err := issue(taskHost)
	if err != nil {
		return pki{}, err
	}
	if p.locatorCert, p.locatorKey, err = issue(locatorHost); err != nil {
		return pki{}, err
	}
	for path, data := range map[string][]byte{p.caFile: ca.CertPEM, p.taskCertFile: taskCert, p.taskKeyFile: taskKey} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return pki{}, err
		}
	}
	return p, nil
}

// freePort returns a port that is free on host now.
func freePort(host netip.Addr) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host.String(), "0"))
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// taskService is the running task-service process.
type taskService struct {
	cmd        *exec.Cmd
	url        string // the agent API, https://127.0.0.2:port
	healthAddr string // host:port of the probes and /metrics
	logFile    string
	exited     chan struct{}
	waitErr    error
}

// taskServiceConfig is the configuration file of the task service.
func taskServiceConfig(opts options, port, healthPort int, p pki, kubeconfig string) config.Config {
	c := config.Defaults(siteServerName, []string{siteName})
	c.ListenHost = taskHost.String()
	c.Task.Port, c.Task.HealthPort = port, healthPort
	c.Task.Agents = config.AgentsConfig{MaxCheckInRate: opts.maxCheckInRate, StatusIntervalSeconds: opts.statusInterval}
	c.TLS = config.TLSConfig{CertFile: p.taskCertFile, KeyFile: p.taskKeyFile}
	c.Kubeconfig = kubeconfig
	return c
}

// startTaskService writes cfg into dir and starts the task service with
// it; its log goes to dir/task-service.log. env are more environment
// variables ("GODEBUG=gctrace=1").
func startTaskService(bin, dir string, cfg config.Config, env ...string) (*taskService, error) {
	data, err := cfg.Marshal()
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "task-service.yaml")
	if err := os.WriteFile(cfgFile, []byte(data), 0o600); err != nil {
		return nil, err
	}
	ts := &taskService{
		url:        fmt.Sprintf("https://%s", net.JoinHostPort(taskHost.String(), strconv.Itoa(cfg.Task.Port))),
		healthAddr: net.JoinHostPort(taskHost.String(), strconv.Itoa(cfg.Task.HealthPort)),
		logFile:    filepath.Join(dir, "task-service.log"),
		exited:     make(chan struct{}),
	}
	logf, err := os.Create(ts.logFile)
	if err != nil {
		return nil, err
	}
	ts.cmd = exec.Command(bin, "--config", cfgFile)
	if len(env) > 0 {
		ts.cmd.Env = append(os.Environ(), env...)
	}
	ts.cmd.Stdout, ts.cmd.Stderr = logf, logf
	if err := ts.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting the task service: %w", err)
	}
	go func() {
		ts.waitErr = ts.cmd.Wait()
		logf.Close()
		close(ts.exited)
	}()
	return ts, nil
}

func (ts *taskService) pid() int { return ts.cmd.Process.Pid }

// alive returns an error once the process has exited.
func (ts *taskService) alive() error {
	select {
	case <-ts.exited:
		return fmt.Errorf("the task service exited (%w); see %s", ts.waitErr, ts.logFile)
	default:
		return nil
	}
}

// waitReady waits until /readyz answers 200: the cache of Computers,
// tokens and topology has synced.
func (ts *taskService) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := ts.alive(); err != nil {
			return err
		}
		if _, err := ts.metrics(ctx); err == nil {
			ok, err := probe(ctx, "http://"+ts.healthAddr+"/readyz")
			if err == nil && ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the task service was not ready after %s; see %s", timeout, ts.logFile)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// stop ends the task service with SIGTERM (a graceful shutdown), then
// SIGKILL after a while.
func (ts *taskService) stop() {
	stopProcess(ts.cmd.Process, ts.exited, 30*time.Second)
}

func stopProcess(p *os.Process, exited <-chan struct{}, grace time.Duration) {
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		_ = p.Kill()
		<-exited
	}
}

// taskMetrics are the figures the task service exports on /metrics.
type taskMetrics map[string]float64

// The task service's metrics the harness reads.
const (
	mRegistrations = "siteops_task_registrations_total"
	mCheckIns      = "siteops_task_check_ins_total"
	mRefused       = "siteops_task_check_ins_refused_total"
	mRelocated     = "siteops_task_check_ins_relocated_total"
	mTurnedAway    = "siteops_task_check_ins_turned_away_total"
	mStatusWrites  = "siteops_task_computer_status_writes_total"
	mWriteFailures = "siteops_task_computer_status_write_failures_total"
	mLongPolls     = "siteops_task_long_polls"
	mLongPollsMax  = "siteops_task_long_polls_max"
	mActive        = "siteops_task_agents_active"
	mCycle         = "siteops_task_check_in_cycle_seconds"
)

func (ts *taskService) metrics(ctx context.Context) (taskMetrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	families, err := managertest.Scrape(ctx, ts.healthAddr)
	if err != nil {
		return nil, fmt.Errorf("reading the task service's metrics: %w", err)
	}
	out := taskMetrics{}
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "siteops_task_") {
			continue
		}
		for _, m := range f.GetMetric() {
			out[f.GetName()] += value(f.GetType(), m)
		}
	}
	return out, nil
}

func value(t dto.MetricType, m *dto.Metric) float64 {
	switch t {
	case dto.MetricType_COUNTER:
		return m.GetCounter().GetValue()
	case dto.MetricType_GAUGE:
		return m.GetGauge().GetValue()
	default:
		return m.GetUntyped().GetValue()
	}
}

// memory is a process's resident memory, from /proc/<pid>/status.
type memory struct {
	rss, hwm int64 // bytes
}

func readMemory(pid int) (memory, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	var m memory
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		kib, _ := strconv.ParseInt(fields[0], 10, 64)
		switch name {
		case "VmRSS":
			m.rss = kib << 10
		case "VmHWM":
			m.hwm = kib << 10
		}
	}
	if m.rss == 0 {
		return memory{}, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return m, nil
}

// cpuTime is a process's user + system CPU time, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc/" + strconv.Itoa(pid) + "/stat")
	}
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, errors.New("short /proc/" + strconv.Itoa(pid) + "/stat")
	}
	// utime and stime are fields 14 and 15 of the line, 12 and 13 here.
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const userHZ = 100
	return time.Duration(utime+stime) * time.Second / userHZ, nil
}

// loadAverage is the 1-minute load average.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.Fields(string(data))[0], 64)
	return f
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// probe reports whether url answers 200.
func probe(ctx context.Context, url string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
