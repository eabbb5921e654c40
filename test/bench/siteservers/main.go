// Command siteservers measures how long the operator takes to bring up the
// services of N sites on a simulated cluster (internal/simcluster: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok nodes),
// and compares it with a baseline: the same workloads written directly.
//
//	go run ./test/bench/siteservers -sites 200 -nodes 50
//
// Baseline: for each site, the seven objects the operator makes for a Site
// served by one SiteServer (a ConfigMap, a task-service Deployment of one
// replica, a package-service StatefulSet of one replica with a 10Gi claim,
// the server's two Services and the site's two Services), read at start
// from the golden manifests of the SiteServer builders
// (controllers/testdata/golden) with the names substituted, are created in
// a namespace of their own; the clock stops when every Deployment is
// Available and every StatefulSet Ready. The baseline is then deleted
// (namespace and volumes), fresh volumes are made, the manager starts, and
// N Sites and N SiteServers (one per site) are created; the clock stops
// when every Site is Ready (its task service is available) and when every
// SiteServer is Ready (both services). The manager's peak RSS is its
// VmHWM at the end.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/simcluster"
)

const (
	// workloadNamespace holds the operator's site services.
	workloadNamespace = "site-operator-system"
	// baselineNamespace holds the baseline's workloads.
	baselineNamespace = "bench-baseline"
	// storageClass is the local storage of every node.
	storageClass = "bench-local"
)

// options are the command's flags.
type options struct {
	sites, nodes, workers int
	volumesPerNode        int
	nodePods              int
	controllerQPS         float64
	controllerBurst       int
	phaseTimeout          time.Duration
	keep, skipBaseline    bool
	podRunner             bool
	managerFlags          string
}

func main() {
	var o options
	flag.IntVar(&o.sites, "sites", 200, "Sites, each served by one SiteServer.")
	flag.IntVar(&o.nodes, "nodes", 50, "kwok nodes, all of them site-server capable with local volumes.")
	flag.IntVar(&o.workers, "workers", 8, "Concurrent clients creating the objects.")
	flag.IntVar(&o.volumesPerNode, "volumes-per-node", 0, "Local PersistentVolumes per node and phase (0: 1.5 × sites / nodes + 2).")
	flag.IntVar(&o.nodePods, "node-pods", 1000, "Pod capacity of each node.")
	flag.Float64Var(&o.controllerQPS, "controller-qps", 200, "--kube-api-qps of kube-controller-manager and kube-scheduler (0: their defaults, 20 and 50).")
	flag.IntVar(&o.controllerBurst, "controller-burst", 400, "--kube-api-burst of kube-controller-manager and kube-scheduler (0: their defaults).")
	flag.DurationVar(&o.phaseTimeout, "phase-timeout", 15*time.Minute, "Time each phase may take before it is reported as incomplete.")
	flag.BoolVar(&o.keep, "keep", false, "Keep the cluster's directory (data and logs).")
	flag.BoolVar(&o.skipBaseline, "skip-baseline", false, "Measure only the operator.")
	flag.BoolVar(&o.podRunner, "pod-runner", false, "Run the site services' pods as real processes (simcluster's pod runner; needs root and unshare, and two processes per site): "+
		"Ready then waits for real services. Measures only the operator (the baseline's pods would have no certificate).")
	flag.StringVar(&o.managerFlags, "manager-flags", "", "More flags for the manager, space-separated, such as \"--siteserver-concurrency=16\".")
	flag.Parse()
	o.skipBaseline = o.skipBaseline || o.podRunner
	if o.volumesPerNode == 0 {
		o.volumesPerNode = int(math.Ceil(1.5*float64(o.sites)/float64(o.nodes))) + 2
	}
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	// The harness's own clients log only errors.
	ctrllog.SetLogger(zap.New(zap.UseFlagOptions(&zap.Options{Level: zapcore.ErrorLevel})))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, o)
	if res != nil {
		fmt.Println(res.markdown(o))
	}
	if err != nil {
		log.Fatal(err)
	}
}

// phase is what one measured phase observed.
type phase struct {
	// created is when the last create call returned.
	created time.Duration
	// firstDone and allDone are when the first and the last of the N units
	// met the first condition (Deployments Available, Sites Ready).
	firstDone, allDone time.Duration
	// secondDone is when the last of the N units met the second condition
	// (StatefulSets Ready, SiteServers Ready).
	secondDone time.Duration
	// p50 and p90 of the first condition.
	p50, p90 time.Duration
	// done and second are how many met each condition.
	done, second int
	complete     bool
	// childrenCreated is when the manager had created the last Deployment
	// and StatefulSet; children is how many pairs it created.
	childrenCreated time.Duration
	children        int
}

// results are the figures of a run.
type results struct {
	baseline, operator phase
	cleanup            time.Duration
	managerIdleRSS     int64
	managerPeakRSS     int64
	managerCPU         time.Duration
	// managerCounters are the manager's API requests and reconciles
	// during the operator phase.
	managerCounters counters
}

func run(ctx context.Context, o options) (_ *results, err error) {
	root, err := simcluster.RepoRoot()
	if err != nil {
		return nil, err
	}
	golden, err := loadBaseline(root)
	if err != nil {
		return nil, err
	}
	bin, err := simcluster.BinDir(root)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "bench-manager-")
	if err != nil {
		return nil, fmt.Errorf("making a directory for the manager: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	var managerBinary, podBinDir string
	if o.podRunner {
		if err := simcluster.BuildCommands(root, tmp); err != nil {
			return nil, err
		}
		managerBinary, podBinDir = filepath.Join(tmp, "manager"), tmp
	} else if managerBinary, err = simcluster.BuildManager(root, tmp); err != nil {
		return nil, err
	}

	log.Printf("Starting the cluster (controller client QPS %g, burst %d)", o.controllerQPS, o.controllerBurst)
	kc, err := simcluster.Start(ctx, simcluster.Options{
		BinDir: bin, KeepDir: o.keep, ControllerQPS: o.controllerQPS, ControllerBurst: o.controllerBurst,
		PodBinDir: podBinDir,
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			kc.KeepDir = true
			log.Printf("The cluster's logs are kept in %s/logs", kc.Dir)
		}
		err = errors.Join(err, kc.Stop())
	}()
	scheme, err := controllers.NewScheme()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(kc.Config, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating a client: %w", err)
	}
	if err := simcluster.InstallOperator(ctx, kc, cl, root, workloadNamespace); err != nil {
		return nil, err
	}
	nodes := nodePool(o)
	log.Printf("Creating %d nodes with %d local volumes each", o.nodes, o.volumesPerNode)
	if err := nodes.Create(ctx, cl); err != nil {
		return nil, err
	}
	informers, err := startCache(ctx, kc, scheme)
	if err != nil {
		return nil, err
	}

	res := &results{}
	if !o.skipBaseline {
		if res.baseline, err = runBaseline(ctx, cl, informers, o, golden); err != nil {
			return res, err
		}
		start := time.Now()
		if err := deleteBaseline(ctx, cl, o); err != nil {
			return res, err
		}
		res.cleanup = time.Since(start)
		log.Printf("Creating %d fresh local volumes on each node", o.volumesPerNode)
		if err := nodes.CreateVolumes(ctx, cl); err != nil {
			return res, err
		}
	}

	log.Print("Starting the manager")
	metricsAddress, err := simcluster.FreeAddress(kc.Host)
	if err != nil {
		return res, err
	}
	manager, err := simcluster.StartManager(ctx, kc, simcluster.ManagerOptions{
		Binary: managerBinary, Namespace: workloadNamespace, MetricsAddress: metricsAddress,
		Args: strings.Fields(o.managerFlags),
	})
	if err != nil {
		return res, err
	}
	countersBefore, err := scrapeCounters(ctx, metricsAddress)
	if err != nil {
		return res, err
	}
	idle, err := manager.Memory()
	if err != nil {
		return res, err
	}
	res.managerIdleRSS = idle.RSS
	cpuBefore, err := manager.CPUTime()
	if err != nil {
		return res, err
	}
	if res.operator, err = runOperator(ctx, cl, informers, o, simcluster.SiteServerLabels()); err != nil {
		return res, err
	}
	mem, err := manager.Memory()
	if err != nil {
		return res, err
	}
	res.managerPeakRSS = mem.PeakRSS
	cpuAfter, err := manager.CPUTime()
	if err != nil {
		return res, err
	}
	res.managerCPU = cpuAfter - cpuBefore
	countersAfter, err := scrapeCounters(ctx, metricsAddress)
	if err != nil {
		return res, err
	}
	res.managerCounters = countersAfter.sub(countersBefore)
	if err := kc.CheckRunning(); err != nil {
		return res, err
	}
	return res, nil
}

// nodePool is o.nodes kwok nodes, all site-server capable, with
// o.volumesPerNode local volumes each.
func nodePool(o options) simcluster.NodePool {
	p := simcluster.NodePool{
		Node:         simcluster.FakeNode{Labels: simcluster.SiteServerLabels(), CPU: "64", Memory: "256Gi", Pods: o.nodePods},
		StorageClass: storageClass, Volumes: o.volumesPerNode, Workers: o.workers,
	}
	for i := range o.nodes {
		p.Names = append(p.Names, fmt.Sprintf("node-%03d", i))
	}
	return p
}

// startCache starts the informers the trackers use.
func startCache(ctx context.Context, kc *simcluster.Cluster, scheme *runtime.Scheme) (cache.Cache, error) {
	informers, err := cache.New(kc.Config, cache.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the cache: %w", err)
	}
	go func() {
		if err := informers.Start(ctx); err != nil {
			log.Printf("The cache stopped: %v", err)
		}
	}()
	if !informers.WaitForCacheSync(ctx) {
		return nil, errors.New("the cache did not sync")
	}
	return informers, nil
}

func runBaseline(ctx context.Context, cl client.Client, informers cache.Cache, o options, golden *baseline) (phase, error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baselineNamespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce": "restricted",
	}}}
	if err := cl.Create(ctx, ns); err != nil {
		return phase{}, fmt.Errorf("creating namespace %s: %w", baselineNamespace, err)
	}
	deployments, err := newTracker(ctx, informers, "Deployments available", o.sites, &appsv1.Deployment{}, baselineNamespace,
		func(d *appsv1.Deployment) bool {
			return d.Status.ObservedGeneration >= d.Generation && d.Status.AvailableReplicas >= 1
		})
	if err != nil {
		return phase{}, err
	}
	statefulSets, err := newTracker(ctx, informers, "StatefulSets ready", o.sites, &appsv1.StatefulSet{}, baselineNamespace,
		func(s *appsv1.StatefulSet) bool {
			return s.Status.ObservedGeneration >= s.Generation && s.Status.ReadyReplicas >= 1 && s.Status.AvailableReplicas >= 1
		})
	if err != nil {
		return phase{}, err
	}
	batches := make([][]client.Object, o.sites)
	for i := range batches {
		if batches[i], err = golden.objectsFor(baselineNamespace, i, storageClass); err != nil {
			return phase{}, err
		}
	}
	log.Printf("Baseline: creating %d × %d objects", o.sites, len(batches[0]))
	return measure(ctx, cl, o, batches, deployments, statefulSets)
}

func runOperator(ctx context.Context, cl client.Client, informers cache.Cache, o options, selector map[string]string) (phase, error) {
	sites, err := newTracker(ctx, informers, "Sites Ready", o.sites, &siteopsv1.Site{}, "", func(s *siteopsv1.Site) bool {
		return s.Status.ObservedGeneration == s.Generation && meta.IsStatusConditionTrue(s.Status.Conditions, siteopsv1.ConditionReady)
	})
	if err != nil {
		return phase{}, err
	}
	servers, err := newTracker(ctx, informers, "SiteServers Ready", o.sites, &siteopsv1.SiteServer{}, "", func(s *siteopsv1.SiteServer) bool {
		return s.Status.ObservedGeneration == s.Generation && meta.IsStatusConditionTrue(s.Status.Conditions, siteopsv1.ConditionReady)
	})
	if err != nil {
		return phase{}, err
	}
	// When the manager created its workloads: the split between the
	// operator's work and the control plane's.
	deployments, err := newTracker(ctx, informers, "Deployments created", o.sites, &appsv1.Deployment{}, workloadNamespace,
		func(*appsv1.Deployment) bool { return true })
	if err != nil {
		return phase{}, err
	}
	statefulSets, err := newTracker(ctx, informers, "StatefulSets created", o.sites, &appsv1.StatefulSet{}, workloadNamespace,
		func(*appsv1.StatefulSet) bool { return true })
	if err != nil {
		return phase{}, err
	}
	deployments.reset()
	statefulSets.reset()
	batches := make([][]client.Object, o.sites)
	for i := range batches {
		batches[i] = operatorObjects(i, selector, storageClass)
	}
	log.Printf("Operator: creating %d Sites and %d SiteServers", o.sites, o.sites)
	p, err := measure(ctx, cl, o, batches, sites, servers)
	p.childrenCreated = max(last(deployments.latencies()), last(statefulSets.latencies()))
	p.children = min(deployments.count(), statefulSets.count())
	return p, err
}

// last is the last of sorted durations; 0 when empty.
func last(sorted []time.Duration) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[len(sorted)-1]
}

// measure creates the batches and waits until both trackers are done, or
// the phase times out (then the phase is incomplete, not an error).
func measure(ctx context.Context, cl client.Client, o options, batches [][]client.Object, first, second *tracker) (phase, error) {
	first.reset()
	second.reset()
	start := time.Now()
	var p phase
	creates := make([][]func(context.Context) error, len(batches))
	for i, objs := range batches {
		for _, obj := range objs {
			creates[i] = append(creates[i], func(ctx context.Context) error {
				if err := cl.Create(ctx, obj); err != nil {
					return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
				}
				return nil
			})
		}
	}
	if err := parallel(ctx, o.workers, creates); err != nil {
		return p, err
	}
	p.created = time.Since(start)
	log.Printf("Created everything in %s", p.created.Round(time.Millisecond))

	timeout := time.NewTimer(o.phaseTimeout)
	defer timeout.Stop()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
wait:
	for waiting := []*tracker{first, second}; len(waiting) > 0; {
		select {
		case <-waiting[0].done:
			waiting = waiting[1:]
		case <-progress.C:
			log.Printf("After %s: %s %d/%d, %s %d/%d", time.Since(start).Round(time.Second),
				first.name, first.count(), first.want, second.name, second.count(), second.want)
		case <-timeout.C:
			log.Printf("The phase timed out after %s", o.phaseTimeout)
			break wait
		case <-ctx.Done():
			return p, ctx.Err()
		}
	}
	firstTimes, secondTimes := first.latencies(), second.latencies()
	p.done, p.second = len(firstTimes), len(secondTimes)
	p.complete = p.done == first.want && p.second == second.want
	if p.done > 0 {
		p.firstDone, p.allDone = firstTimes[0], firstTimes[p.done-1]
		p.p50, p.p90 = quantile(firstTimes, 0.5), quantile(firstTimes, 0.9)
	}
	if p.second > 0 {
		p.secondDone = secondTimes[p.second-1]
	}
	log.Printf("%s: %d/%d, last after %s; %s: %d/%d, last after %s", first.name, p.done, first.want,
		p.allDone.Round(time.Millisecond), second.name, p.second, second.want, p.secondDone.Round(time.Millisecond))
	return p, nil
}

// deleteBaseline deletes the baseline's namespace and the volumes its
// claims used, and waits until both are gone.
func deleteBaseline(ctx context.Context, cl client.Client, o options) error {
	log.Print("Deleting the baseline")
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: baselineNamespace}}
	if err := cl.Delete(ctx, ns); err != nil {
		return fmt.Errorf("deleting namespace %s: %w", baselineNamespace, err)
	}
	err := poll(ctx, o.phaseTimeout, func() (bool, error) {
		err := cl.Get(ctx, client.ObjectKeyFromObject(ns), ns)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("waiting for namespace %s to go: %w", baselineNamespace, err)
	}
	if err := cl.DeleteAllOf(ctx, &corev1.PersistentVolume{},
		client.MatchingLabels{simcluster.LabelVolumeClass: storageClass}); err != nil {
		return fmt.Errorf("deleting the volumes: %w", err)
	}
	return poll(ctx, 5*time.Minute, func() (bool, error) {
		var pvs corev1.PersistentVolumeList
		if err := cl.List(ctx, &pvs, client.Limit(1)); err != nil {
			return false, fmt.Errorf("listing volumes: %w", err)
		}
		return len(pvs.Items) == 0, nil
	})
}

// parallel runs the batches on workers goroutines, each batch in order by
// one worker, and returns the first error.
func parallel(ctx context.Context, workers int, batches [][]func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan []func(context.Context) error)
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for range workers {
		wg.Go(func() {
			for batch := range next {
				for _, f := range batch {
					if err := f(ctx); err != nil {
						errOnce.Do(func() { firstErr = err; cancel() })
						return
					}
				}
			}
		})
	}
	for _, b := range batches {
		select {
		case next <- b:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// poll calls cond every half second until it holds, fails or timeout
// passes.
func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// markdown formats the results as the table rows of docs/benchmarks.md.
func (r *results) markdown(o options) string {
	var b strings.Builder
	s := func(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	fmt.Fprintf(&b, "\nsites=%d nodes=%d volumes/node=%d workers=%d controller-qps=%g burst=%d manager-flags=%q\n",
		o.sites, o.nodes, o.volumesPerNode, o.workers, o.controllerQPS, o.controllerBurst, o.managerFlags)
	if !o.skipBaseline {
		bl := r.baseline
		fmt.Fprintf(&b, "baseline: created in %s; Deployments available %d/%d (p50 %s, p90 %s, last %s); StatefulSets ready %d/%d (last %s); complete=%v; cleanup %s\n",
			s(bl.created), bl.done, o.sites, s(bl.p50), s(bl.p90), s(bl.allDone), bl.second, o.sites, s(bl.secondDone), bl.complete, s(r.cleanup))
	}
	op := r.operator
	fmt.Fprintf(&b, "operator: created in %s; Sites Ready %d/%d (p50 %s, p90 %s, last %s); SiteServers Ready %d/%d (last %s); complete=%v\n",
		s(op.created), op.done, o.sites, s(op.p50), s(op.p90), s(op.allDone), op.second, o.sites, s(op.secondDone), op.complete)
	fmt.Fprintf(&b, "operator: the manager created %d/%d Deployment and StatefulSet pairs, the last after %s\n",
		op.children, o.sites, s(op.childrenCreated))
	fmt.Fprintf(&b, "manager: RSS idle %s, peak (VmHWM) %s, CPU during the phase %s\n",
		mib(r.managerIdleRSS), mib(r.managerPeakRSS), s(r.managerCPU))
	fmt.Fprintf(&b, "manager during the phase: %s\n", r.managerCounters)
	if !o.skipBaseline {
		base := max(r.baseline.allDone, r.baseline.secondDone)
		fmt.Fprintf(&b, "\n| sites | nodes | baseline: all workloads up | operator: all Sites Ready | operator: all SiteServers Ready | ratio (SiteServers / baseline) | manager peak RSS | manager CPU |\n")
		fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		fmt.Fprintf(&b, "| %d | %d | %s | %s | %s | %.2f | %s | %s |\n", o.sites, o.nodes, s(base), s(op.allDone), s(op.secondDone),
			op.secondDone.Seconds()/base.Seconds(), mib(r.managerPeakRSS), s(r.managerCPU))
	}
	return b.String()
}
