package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
	"github.com/siteops/site-operator/internal/topologyfeed"
)

// resolverFeed keeps a topology.Resolver in step with the Subnets and Sites
// of the manager's cache. Its informer handlers are registered at setup, so
// they run on every replica, leader or not, and every replica can answer
// lookups from the same table.
//
// The Subnet controller runs only on the leader. While it runs, its queue is
// attached to the feed (see source) and every change enqueues the Subnets
// whose verdict it changed. Without a queue nothing waits and nothing is
// lost: the change is in the resolver, and a controller that starts later
// first reconciles every Subnet from its initial list, after the queue is
// attached.
type resolverFeed struct {
	resolver *topology.Resolver

	// queue is the running Subnet controller's queue, nil when none runs.
	queue atomic.Pointer[subnetQueue]

	mu sync.Mutex
	// fedGeneration is the metadata.generation of each Subnet last fed to
	// the resolver, so that a status is never stamped with a generation the
	// resolver has not seen yet.
	fedGeneration map[string]int64

	subnetsFed, sitesFed toolscache.ResourceEventHandlerRegistration
}

type subnetQueue struct {
	workqueue.TypedRateLimitingInterface[reconcile.Request]
}

// newResolverFeed registers the feed's handlers on the informers of c. Call
// it before the cache starts: the informers are created without blocking,
// and their initial lists reach the handlers when it starts.
func newResolverFeed(ctx context.Context, c cache.Cache, resolver *topology.Resolver) (*resolverFeed, error) {
	f := &resolverFeed{resolver: resolver, fedGeneration: map[string]int64{}}
	subnets, err := c.GetInformer(ctx, &siteopsv1.Subnet{})
	if err != nil {
		return nil, fmt.Errorf("getting the Subnet informer: %w", err)
	}
	if f.subnetsFed, err = subnets.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { f.setSubnet(obj.(*siteopsv1.Subnet)) },
		UpdateFunc: func(oldObj, newObj any) {
			// The spec, the only input, changes only with the generation:
			// status writes and resyncs are not fed again. A relist after
			// a watch gap reports a Subnet deleted and created again under
			// the same name as an update, maybe with the same generation:
			// its UID tells.
			before, after := oldObj.(*siteopsv1.Subnet), newObj.(*siteopsv1.Subnet)
			if before.Generation != after.Generation || before.UID != after.UID {
				f.setSubnet(newObj.(*siteopsv1.Subnet))
			}
		},
		DeleteFunc: func(obj any) { f.deleteSubnet(topologyfeed.DeletedName(obj)) },
	}); err != nil {
		return nil, fmt.Errorf("adding the resolver's Subnet handler: %w", err)
	}
	sites, err := c.GetInformer(ctx, &siteopsv1.Site{})
	if err != nil {
		return nil, fmt.Errorf("getting the Site informer: %w", err)
	}
	if f.sitesFed, err = sites.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		// Only a Site's existence matters to resolution.
		AddFunc:    func(obj any) { f.enqueue(f.resolver.SetSite(obj.(*siteopsv1.Site).Name)) },
		DeleteFunc: func(obj any) { f.enqueue(f.resolver.DeleteSite(topologyfeed.DeletedName(obj))) },
	}); err != nil {
		return nil, fmt.Errorf("adding the resolver's Site handler: %w", err)
	}
	return f, nil
}

// setSubnet gives the resolver the Subnet's current spec and enqueues the
// Subnet itself (a reconcile may have skipped it while the resolver was
// behind) and every Subnet whose verdict changed.
func (f *resolverFeed) setSubnet(sn *siteopsv1.Subnet) {
	changed := f.resolver.SetSubnet(topologyfeed.Subnet(sn))
	f.mu.Lock()
	f.fedGeneration[sn.Name] = sn.Generation
	f.mu.Unlock()
	f.enqueue([]string{sn.Name})
	f.enqueue(changed)
}

func (f *resolverFeed) deleteSubnet(name string) {
	f.mu.Lock()
	delete(f.fedGeneration, name)
	f.mu.Unlock()
	f.enqueue(f.resolver.DeleteSubnet(name))
}

// enqueue hands the names to the Subnet controller when it runs. Adding to
// a workqueue never blocks, so neither do the informer's handlers.
func (f *resolverFeed) enqueue(names []string) {
	q := f.queue.Load()
	if q == nil {
		return
	}
	for _, name := range names {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
	}
}

// fed reports whether the resolver has seen the given generation of the
// named Subnet.
func (f *resolverFeed) fed(name string, generation int64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	fed, ok := f.fedGeneration[name]
	return ok && fed == generation
}

// synced reports whether the initial lists of Subnets and Sites have been
// fed to the resolver.
func (f *resolverFeed) synced() bool {
	return f.subnetsFed.HasSynced() && f.sitesFed.HasSynced()
}

// readyCheck is a readiness check that fails until the resolver holds the
// initial lists, so a replica answers lookups only from a complete table.
func (f *resolverFeed) readyCheck(_ *http.Request) error {
	if !f.synced() {
		return errors.New("the topology resolver has not received every Subnet and Site yet")
	}
	return nil
}

// source is the Subnet controller's end of the hand-off: starting it
// attaches the controller's queue until the controller stops, and the
// controller starts its workers only once the resolver holds the initial
// lists, so that no status is written from a partial table (a Subnet whose
// Site is not fed yet would report SiteNotFound for a moment).
func (f *resolverFeed) source() source.Source { return feedSource{f} }

type feedSource struct{ f *resolverFeed }

var _ source.SyncingSource = feedSource{}

func (s feedSource) Start(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	attached := &subnetQueue{q}
	s.f.queue.Store(attached)
	go func() {
		<-ctx.Done()
		s.f.queue.CompareAndSwap(attached, nil)
	}()
	return nil
}

func (s feedSource) WaitForSync(ctx context.Context) error {
	if !toolscache.WaitForCacheSync(ctx.Done(), s.f.synced) {
		return fmt.Errorf("waiting for the topology resolver's initial Subnets and Sites: %w", ctx.Err())
	}
	return nil
}

func (s feedSource) String() string { return "topology resolver feed" }

// TopologyCollector exports the size of this replica's address → site
// table, by the reason each Subnet reports, as
// siteops_topology_subnets{reason}: every replica feeds its own resolver,
// so replicas that disagree show it.
func TopologyCollector(r *topology.Resolver) prometheus.Collector {
	return topologyCollector{r}
}

var topologySubnetsDesc = prometheus.NewDesc("siteops_topology_subnets",
	"Subnets in this replica's topology resolver, by the reason of their Ready condition.", []string{"reason"}, nil)

type topologyCollector struct{ r *topology.Resolver }

func (c topologyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- topologySubnetsDesc }

func (c topologyCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[topology.Reason]int{}
	for _, st := range c.r.Statuses() {
		counts[st.Reason]++
	}
	for reason, n := range counts {
		ch <- prometheus.MustNewConstMetric(topologySubnetsDesc, prometheus.GaugeValue, float64(n), string(reason))
	}
}
