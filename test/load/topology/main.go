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
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/load/topology [flags]
//
// It prints a Markdown table of results (see docs/benchmarks.md) and exits
// non-zero only when a status is wrong or never arrives: performance
// targets are reported, not asserted.
package main

import (
	"context"
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
	"sigs.k8s.io/controller-runtime/pkg/client"
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
		"Subnets the manager reconciles at once (default: the manager's).")
	flag.IntVar(&opts.controllers.SiteConcurrency, "site-concurrency", opts.controllers.SiteConcurrency,
		"Sites the manager reconciles at once (default: the manager's).")
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

// run starts the control plane, runs the measurements and verifies the
// statuses. It returns what it measured so far even when it fails.
func run(ctx context.Context, opts options) (*results, error) {
	p, err := generate(opts.sites, opts.subnets, opts.seed)
	if err != nil {
		return nil, fmt.Errorf("generating the topology: %w", err)
	}
	res := &results{opts: opts, plan: p}
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
		return nil, fmt.Errorf("starting the control plane (is KUBEBUILDER_ASSETS set?): %w", err)
	}
	defer func() {
		if err := env.Stop(); err != nil {
			log.Printf("Stopping the control plane: %v", err)
		}
	}()
	res.cfg = cfg
	procs, err := processes()
	if err != nil {
		return nil, err
	}

	// Stop the observer's watches before the control plane, whose API
	// server otherwise waits for them to end when it shuts down.
	obsCtx, stopObserver := context.WithCancel(ctx)
	defer stopObserver()
	obs, err := newObserver(cfg, scheme, p)
	if err != nil {
		return nil, err
	}
	var obsErr error
	pprof.Do(obsCtx, pprof.Labels("component", "observer"), func(ctx context.Context) { obsErr = obs.run(ctx) })
	if obsErr != nil {
		return nil, obsErr
	}

	writes := &requestCounter{}
	mgr, err := startManager(ctx, cfg, scheme, opts.controllers, writes)
	if err != nil {
		return nil, err
	}
	defer mgr.stop()

	creates := &requestCounter{}
	clients, err := newClients(cfg, scheme, opts.workers, creates)
	if err != nil {
		return nil, err
	}

	if err := waitIdle(ctx, procs); err != nil {
		return res, err
	}
	log.Printf("Creating %d Sites", len(p.Sites))
	start := time.Now()
	if _, err := createAll(ctx, clients, siteObjects(p)); err != nil {
		return res, err
	}
	if err := obs.waitFor(ctx, "the Sites' first statuses", opts.timeout, func(m milestones) bool {
		return m.statused == len(p.Sites)
	}); err != nil {
		return res, err
	}
	res.siteWrites = writes.snapshot()
	log.Printf("Sites created and given a status in %s", time.Since(start).Round(time.Millisecond))

	if err := res.measureConvergence(ctx, procs, obs, clients, creates, writes); err != nil {
		return res, err
	}
	if err := mgr.stop(); err != nil {
		return res, fmt.Errorf("stopping the manager: %w", err)
	}
	if err := res.measureResync(ctx, scheme); err != nil {
		return res, err
	}

	res.createsThrottled = creates.snapshot().throttled
	if res.peakRSS, err = peakRSS(procs); err != nil {
		return res, err
	}
	log.Printf("Verifying every status")
	return res, verify(ctx, clients[0], p)
}

// measureConvergence creates the Subnets while the manager runs and waits
// until every Subnet and Site status is the planned one.
func (r *results) measureConvergence(ctx context.Context, procs map[string]int, obs *observer,
	clients []client.Client, creates, writes *requestCounter) error {
	subnets := subnetObjects(r.plan)
	if err := waitIdle(ctx, procs); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(r.opts.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	writesBefore := writes.snapshot()
	cpuBefore, err := sampleCPU(procs)
	if err != nil {
		return err
	}

	log.Printf("Creating %d Subnets with %d workers", r.plan.subnetCount(), len(clients))
	profileDone := profileAPIServer(ctx, r.cfg, r.opts.apiServerProfile)
	defer func() { <-profileDone }()
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	start := time.Now()
	go logProgress(progressCtx, start, obs, creates, writes)
	lastCreate, err := createAll(ctx, clients, subnets)
	if err != nil {
		return err
	}
	r.tCreate = lastCreate.Sub(start)
	cpuCreated, err := sampleCPU(procs)
	if err != nil {
		return err
	}
	r.cpuCreate = cpuCreated.sub(cpuBefore)
	log.Printf("Subnets created in %s; waiting for the statuses", r.tCreate.Round(time.Millisecond))

	err = obs.waitFor(ctx, "every Subnet and Site status", r.opts.timeout, func(m milestones) bool {
		return m.final == r.plan.subnetCount() && m.settled == len(r.plan.Sites)
	})
	m := obs.milestones()
	r.converged = time.Since(start)
	stopProgress()
	cpuConverged, cpuErr := sampleCPU(procs)
	stopProfile()
	if err != nil {
		return err
	}
	if cpuErr != nil {
		return cpuErr
	}
	r.cpuConverge = cpuConverged.sub(cpuBefore)
	r.tReady, r.tFinal, r.tSettled = m.readyAt.Sub(start), m.finalAt.Sub(start), m.settledAt.Sub(start)
	log.Printf("Converged in %s; counting the manager's writes for %s more", r.converged.Round(time.Millisecond), r.opts.settle)
	if err := sleep(ctx, r.opts.settle); err != nil {
		return err
	}
	r.convergeWrites = writes.snapshot().sub(writesBefore)
	return nil
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
