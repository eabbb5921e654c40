// Command agents is the load harness of the task service: one task-service
// process on this machine with 1,000, 10,000 and 50,000 registered agents
// that check in by long poll. See docs/benchmarks.md, "Agents:
// registration and check-ins".
//
// What runs where, all real, all on loopback:
//
//   - kube-apiserver and etcd: controller-runtime's envtest
//     (KUBEBUILDER_ASSETS, as `make` sets it), with the CRDs of
//     config/crd/bases; a fresh control plane for each level;
//   - the task service: ./cmd/task-service, built into a temporary
//     directory and run as its own process with a configuration file, a
//     kubeconfig of an envtest user, and HTTPS on 127.0.0.2 with a
//     certificate of a CA that the harness makes with internal/certs;
//   - the locator: in this process (locator.New behind locator.HTTPServer
//     on 127.0.0.1, a certificate of the same CA), fed from a
//     controller-runtime cache of the envtest API server through
//     internal/topologyfeed, as the manager feeds it;
//   - the agents: ./cmd/agent `simulate` processes of at most
//     -agents-per-process agents each (a process has 20,000 open files),
//     with disjoint -first-index ranges, claimed addresses from
//     10.64.0.0/10 (10.64+p.0.0/16 for process p) and source addresses
//     127.1+p.0.0/16, sharing -register-rate (60/s by default, below
//     what the task service's API client sustains: see parseFlags).
//
// Per level the harness creates the namespaces, a Site and a Subnet
// (10.64.0.0/10), a SiteServer whose status advertises the task service
// and says TaskServiceReady=True, and a bootstrap token Secret without a
// usage limit; it then measures the time until every agent is registered,
// and over a window in steady state: check-in latency (the agents'
// stats), long polls held, check-ins per second, check-ins turned away or
// refused (the task service's /metrics), the task service's RSS, and the
// API writes to Computers (the API server's own /metrics).
//
// From the repository root:
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/agents -agents 1000,10000,50000
//
// It prints a Markdown table and exits non-zero only when the run is
// invalid (a component fails, an agent is refused by the protocol, the
// agents never all register); the targets are reported, not asserted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// options are the command-line flags.
type options struct {
	levels           []int
	agentsPerProcess int
	registerRate     float64
	maxCheckInRate   float64
	statusInterval   int
	window           time.Duration
	settle           time.Duration
	registerTimeout  time.Duration
	crds             string
	workDir          string
	keepWorkDir      bool

	// The task mode (task.go).
	task            bool
	workDuration    time.Duration
	workFailPercent float64
	taskSettle      time.Duration
	taskTimeout     time.Duration
	// Diagnostics.
	perf           time.Duration
	taskServiceEnv []string
}

func parseFlags() (options, error) {
	var opts options
	levels := flag.String("agents", "1000,10000,50000", "Agents per level, comma-separated; each level runs on a fresh control plane and task service.")
	flag.IntVar(&opts.agentsPerProcess, "agents-per-process", 10_000, "Most agents in one `agent simulate` process (at most 12,000: a process has 20,000 open files).")
	// The task service's API client allows 200 requests/s
	// (internal/siteservice/task/kube.go), shared by the registrations (a
	// create and a status patch each) and, from one status interval after
	// the first registration on, the lastSeen refreshes (about one per
	// registration made an interval earlier): above about 66
	// registrations/s its queue outgrows the agents' 30 s request timeout
	// and registrations fail in bulk (docs/benchmarks.md).
	flag.Float64Var(&opts.registerRate, "register-rate", 60, "Registrations per second offered, all simulate processes together (the agent's own default is 200).")
	flag.Float64Var(&opts.maxCheckInRate, "max-check-in-rate", 200, "task.agents.maxCheckInRate of the task service.")
	flag.IntVar(&opts.statusInterval, "status-interval", 300, "task.agents.statusIntervalSeconds of the task service.")
	flag.DurationVar(&opts.window, "window", 0, "Measurement window in steady state; 0 means max(150s, 1.1 × the check-in cycle + 60s): 335s at 50,000 agents and 200/s.")
	flag.DurationVar(&opts.settle, "settle", 30*time.Second, "Wait after the last registration before the window opens.")
	flag.DurationVar(&opts.registerTimeout, "register-timeout", 0, "Longest wait for every agent to register; 0 means 3 × agents / -register-rate + 2 minutes.")
	flag.StringVar(&opts.crds, "crds", "config/crd/bases", "Directory of the CRDs to install.")
	flag.StringVar(&opts.workDir, "work-dir", "", "Directory for the binaries, certificates, configuration and logs; empty means a new temporary directory.")
	flag.BoolVar(&opts.keepWorkDir, "keep", false, "Keep the work directory (the processes' logs) after the run.")
	flag.BoolVar(&opts.task, "task", false, "Task mode: once every agent is registered, run the DeploymentTask controller in this process and measure one DeploymentTask for every agent, instead of the check-in window (docs/benchmarks.md, \"DeploymentTasks: dispatch and results\").")
	flag.DurationVar(&opts.workDuration, "work-duration", 200*time.Millisecond, "Task mode: how long a simulated agent's work takes (agent simulate --work-duration).")
	flag.Float64Var(&opts.workFailPercent, "work-fail-percent", 0, "Task mode: the share of agents, 0 to 100, whose work fails (agent simulate --work-fail-percent).")
	flag.DurationVar(&opts.taskSettle, "task-settle", 0, "Task mode: wait between the last registration and the task's creation, also the stretch the baseline of Computer writes is read from; 0 means 60s when the check-in cycle is the 60s minimum, else 1.1 × the cycle + 30s (as long as the task should take).")
	flag.DurationVar(&opts.taskTimeout, "task-timeout", 0, "Task mode: longest wait for the task to finish; 0 means max(10m, 3 × the check-in cycle).")
	flag.DurationVar(&opts.perf, "perf", 0, "Task mode: record the task service, kube-apiserver and the simulate processes with `perf record -g` for this long from T0, into the work directory (perf.data, perf-report.txt); 0 records nothing.")
	taskServiceEnv := flag.String("task-service-env", "", "More environment variables of the task service, comma-separated (\"GODEBUG=gctrace=1\": its garbage collections go to its log).")
	flag.Parse()
	if *taskServiceEnv != "" {
		opts.taskServiceEnv = strings.Split(*taskServiceEnv, ",")
	}
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 500_000 {
			return opts, fmt.Errorf("-agents: %q is not a count from 1 to 500,000", f)
		}
		opts.levels = append(opts.levels, n)
	}
	switch {
	case opts.agentsPerProcess < 1 || opts.agentsPerProcess > 12_000:
		return opts, fmt.Errorf("-agents-per-process must be from 1 to 12,000")
	case opts.registerRate <= 0, opts.maxCheckInRate <= 0, opts.statusInterval < 1:
		return opts, fmt.Errorf("-register-rate, -max-check-in-rate and -status-interval must be positive")
	case opts.workDuration <= 0 || opts.workFailPercent < 0 || opts.workFailPercent > 100:
		return opts, fmt.Errorf("-work-duration must be positive and -work-fail-percent from 0 to 100")
	}
	return opts, nil
}

// windowFor is the measurement window of a level of n agents.
func (o options) windowFor(n int) time.Duration {
	if o.window > 0 {
		return o.window
	}
	return max(150*time.Second, cycleOf(n, o.maxCheckInRate)*11/10+60*time.Second)
}

// registerTimeoutFor is the longest wait for n agents to register.
func (o options) registerTimeoutFor(n int) time.Duration {
	if o.registerTimeout > 0 {
		return o.registerTimeout
	}
	return time.Duration(3*float64(n)/o.registerRate*float64(time.Second)) + 2*time.Minute
}

// cycleOf is the task service's check-in cycle for n agents at rate
// (task.Pacer with its default minimum interval of 60 s).
func cycleOf(n int, rate float64) time.Duration {
	return max(time.Duration(float64(n)/rate*float64(time.Second)), 60*time.Second)
}

func main() {
	log.SetFlags(log.Ltime)
	opts, err := parseFlags()
	if err != nil {
		log.Fatal(err)
	}
	// Errors only: client-go's and controller-runtime's informational
	// lines would drown the progress lines.
	logger := funcr.New(func(prefix, args string) { log.Println(prefix, args) }, funcr.Options{Verbosity: -1})
	ctrllog.SetLogger(logger)
	klog.SetLogger(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	results, err := run(ctx, opts)
	stop()
	printResults(os.Stdout, opts, results)
	if err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
}

// run builds the binaries and measures each level in turn; it returns the
// levels measured so far even when one fails.
func run(ctx context.Context, opts options) ([]*levelResult, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, fmt.Errorf("KUBEBUILDER_ASSETS must name the control-plane binaries: KUBEBUILDER_ASSETS=\"$(hack/controlplane.sh)\"")
	}
	dir := opts.workDir
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "bench-agents-"); err != nil {
			return nil, err
		}
		if !opts.keepWorkDir {
			defer func() { _ = os.RemoveAll(dir) }()
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	log.Printf("Work directory %s", dir)
	bins, err := buildBinaries(ctx, dir)
	if err != nil {
		return nil, err
	}
	var results []*levelResult
	for _, n := range opts.levels {
		log.Printf("Level: %d agents", n)
		res, err := runLevel(ctx, opts, bins, dir, n)
		if res != nil {
			results = append(results, res)
		}
		if err != nil {
			return results, fmt.Errorf("%d agents: %w", n, err)
		}
	}
	return results, nil
}
