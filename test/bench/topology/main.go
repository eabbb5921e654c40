// Command topology is the controller load harness. It starts a real
// kube-apiserver and etcd (controller-runtime's envtest), runs the
// site-operator manager in process as cmd/manager does, creates a generated
// topology of Sites and Subnets with concurrent clients, and measures how
// long the controllers take to bring every status up to date against how
// long the API server takes to accept the creates. It then restarts the
// manager to show that a resync with nothing changed writes nothing, and
// checks every status against the one the generator predicts.
//
// From the repository root:
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/topology [flags]
//
// It prints a Markdown table of results (see docs/benchmarks.md) and exits
// non-zero only when a status is wrong or never arrives: performance
// targets are reported, not asserted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/siteops/site-operator/controllers"
)

// options are the command-line flags.
type options struct {
	sites, subnets, workers int
	crds                    string
	seed                    uint64
	controllers             controllers.Options
	timeout, settle         time.Duration
	cpuProfile              string
	apiServerProfile        string
}

func parseFlags() options {
	opts := options{controllers: controllers.DefaultOptions()}
	flag.IntVar(&opts.sites, "sites", 1000, "Sites to create.")
	flag.IntVar(&opts.subnets, "subnets", 10000, "Subnets to create, spread evenly over the sites.")
	flag.IntVar(&opts.workers, "workers", 16, "Concurrent clients creating the objects, each with its own connection.")
	flag.StringVar(&opts.crds, "crds", "config/crd/bases", "Directory of the CRDs to install.")
	flag.Uint64Var(&opts.seed, "seed", 1, "Seed of the topology generator.")
	flag.IntVar(&opts.controllers.SubnetConcurrency, "subnet-concurrency", opts.controllers.SubnetConcurrency,
		"Subnets the manager reconciles at once.")
	flag.IntVar(&opts.controllers.SiteConcurrency, "site-concurrency", opts.controllers.SiteConcurrency,
		"Sites the manager reconciles at once.")
	flag.DurationVar(&opts.timeout, "timeout", 10*time.Minute, "How long each wait for the controllers may take.")
	flag.DurationVar(&opts.settle, "settle", 5*time.Second,
		"How long to keep counting the manager's writes after the statuses converged and after a restart.")
	flag.StringVar(&opts.cpuProfile, "cpuprofile", "",
		"Write a CPU profile of this process (manager, harness clients, observer; labelled by component) "+
			"from the first Subnet create until convergence to this file.")
	flag.StringVar(&opts.apiServerProfile, "apiserver-cpuprofile", "",
		fmt.Sprintf("Write a CPU profile of kube-apiserver during the first %s of the Subnet creates to this file.",
			apiServerProfileDuration))
	flag.Parse()
	return opts
}

func (o options) validate() error {
	switch {
	case o.sites < 1, o.subnets < 1, o.workers < 1:
		return fmt.Errorf("-sites, -subnets and -workers must be at least 1")
	case o.controllers.SubnetConcurrency < 1, o.controllers.SiteConcurrency < 1:
		return fmt.Errorf("-subnet-concurrency and -site-concurrency must be at least 1")
	}
	return nil
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	opts := parseFlags()
	if err := opts.validate(); err != nil {
		log.Fatal(err)
	}
	// Errors only: the manager's and client-go's informational lines would
	// drown the progress lines.
	logger := funcr.New(func(prefix, args string) { log.Println(prefix, args) }, funcr.Options{Verbosity: -1})
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := run(ctx, opts)
	stop()
	if res != nil {
		res.print(os.Stdout)
	}
	if err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
}

// run starts the control plane and the harness, runs the measurements and
// verifies the statuses. It returns what it measured so far even when it
// fails.
func run(ctx context.Context, opts options) (*results, error) {
	p, err := generate(opts.sites, opts.subnets, opts.seed)
	if err != nil {
		return nil, fmt.Errorf("generating the topology: %w", err)
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return nil, fmt.Errorf("building the scheme: %w", err)
	}

	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{opts.crds},
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	log.Printf("Starting kube-apiserver and etcd")
	cfg, err := env.Start()
	if err != nil {
		// Start leaves etcd and kube-apiserver running when a later step,
		// such as installing the CRDs, fails.
		return nil, errors.Join(fmt.Errorf("starting the control plane (is KUBEBUILDER_ASSETS set?): %w", err), env.Stop())
	}
	defer func() {
		if err := env.Stop(); err != nil {
			log.Printf("Stopping the control plane: %v", err)
		}
	}()
	// Stop the observer's watches and the manager before the control
	// plane, whose API server otherwise waits for their watches to end.
	ctx, stopHarness := context.WithCancel(ctx)
	defer stopHarness()

	h, err := newHarness(ctx, opts, p, cfg, scheme)
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.manager.Stop() }() // on an early return; stopped below otherwise
	if err := h.createSites(ctx); err != nil {
		return &h.res, err
	}
	if err := h.measureConvergence(ctx); err != nil {
		return &h.res, err
	}
	if err := h.manager.Stop(); err != nil {
		return &h.res, fmt.Errorf("stopping the manager: %w", err)
	}
	if err := h.measureResync(ctx); err != nil {
		return &h.res, err
	}
	h.res.creates = h.creates.Snapshot()
	if h.res.peakRSS, err = peakRSS(h.procs); err != nil {
		return &h.res, err
	}
	log.Printf("Verifying every status")
	return &h.res, verify(ctx, h.clients[0], p)
}

// startCPUProfile starts a CPU profile into path, if path is set, and returns
// the function that stops it; calling that more than once is harmless.
func startCPUProfile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("creating the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting the CPU profile: %w", err)
	}
	stopped := false
	return func() {
		if stopped {
			return
		}
		stopped = true
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			log.Printf("Writing the CPU profile: %v", err)
		}
	}, nil
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
