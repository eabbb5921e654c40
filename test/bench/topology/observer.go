package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// observer watches Subnets and Sites through its own informers, apart from
// the manager's, and notes when every status first reached each milestone.
// The times are taken in the watch event handlers, so they do not depend on
// how often anyone polls.
type observer struct {
	cache       cache.Cache
	wantSubnets map[string]wantStatus
	wantSites   map[string]int32

	mu sync.Mutex
	// subnets and sites hold what the last event showed of each object.
	subnets map[string]subnetProgress
	sites   map[string]siteProgress
	// counts of the objects at each milestone
	ready, final, statused, settled int
	// when each count last reached its total
	readyAt, finalAt, settledAt time.Time
}

// subnetProgress is how far one Subnet's status is.
type subnetProgress struct {
	// ready: it has a Ready condition for its current generation.
	ready bool
	// final: ready, and the status is the one the plan expects.
	final bool
}

// siteProgress is how far one Site's status is.
type siteProgress struct {
	// statused: it has a Ready condition for its current generation.
	statused bool
	// settled: statused, and status.subnets is the planned count.
	settled bool
}

// newObserver returns an observer of p's objects; start it with run.
func newObserver(cfg *rest.Config, scheme *runtime.Scheme, p *plan) (*observer, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, fmt.Errorf("creating the observer's cache: %w", err)
	}
	return &observer{
		cache:       c,
		wantSubnets: p.wantSubnets(),
		wantSites:   p.SiteSubnets,
		subnets:     map[string]subnetProgress{},
		sites:       map[string]siteProgress{},
	}, nil
}

// run starts the informers and returns once they have synced; they stop
// when ctx ends.
func (o *observer) run(ctx context.Context) error {
	if err := o.watch(ctx, &siteopsv1.Subnet{}, o.onSubnet); err != nil {
		return err
	}
	if err := o.watch(ctx, &siteopsv1.Site{}, o.onSite); err != nil {
		return err
	}
	go func() { _ = o.cache.Start(ctx) }()
	if !o.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("waiting for the observer's cache to sync: %w", context.Cause(ctx))
	}
	return nil
}

func (o *observer) watch(ctx context.Context, obj client.Object, onChange func(obj any, deleted bool)) error {
	informer, err := o.cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("getting the observer's informer for %T: %w", obj, err)
	}
	_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { onChange(obj, false) },
		UpdateFunc: func(_, obj any) { onChange(obj, false) },
		DeleteFunc: func(obj any) { onChange(obj, true) },
	})
	if err != nil {
		return fmt.Errorf("adding the observer's event handler for %T: %w", obj, err)
	}
	return nil
}

func (o *observer) onSubnet(obj any, deleted bool) {
	sn, ok := obj.(*siteopsv1.Subnet)
	if !ok {
		return // a deletion tombstone; the harness deletes nothing
	}
	var now subnetProgress
	if !deleted {
		ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
		now.ready = ready != nil && sn.Status.ObservedGeneration == sn.Generation
		want, planned := o.wantSubnets[sn.Name]
		now.final = now.ready && planned && want == gotStatus(sn)
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	before := o.subnets[sn.Name]
	o.subnets[sn.Name] = now
	total := len(o.wantSubnets)
	o.ready += delta(before.ready, now.ready)
	if !before.ready && now.ready && o.ready == total {
		o.readyAt = time.Now()
	}
	o.final += delta(before.final, now.final)
	if !before.final && now.final && o.final == total {
		o.finalAt = time.Now()
	}
}

func (o *observer) onSite(obj any, deleted bool) {
	site, ok := obj.(*siteopsv1.Site)
	if !ok {
		return
	}
	var now siteProgress
	if !deleted {
		ready := meta.FindStatusCondition(site.Status.Conditions, siteopsv1.ConditionReady)
		now.statused = ready != nil && site.Status.ObservedGeneration == site.Generation
		want, planned := o.wantSites[site.Name]
		now.settled = now.statused && planned && site.Status.Subnets == want
	}

	o.mu.Lock()
	defer o.mu.Unlock()
	before := o.sites[site.Name]
	o.sites[site.Name] = now
	o.statused += delta(before.statused, now.statused)
	o.settled += delta(before.settled, now.settled)
	if !before.settled && now.settled && o.settled == len(o.wantSites) {
		o.settledAt = time.Now()
	}
}

// gotStatus is the part of a Subnet's status that the plan predicts.
func gotStatus(sn *siteopsv1.Subnet) wantStatus {
	got := wantStatus{EffectiveSite: sn.Status.EffectiveSite, InheritedFrom: sn.Status.InheritedFrom}
	if ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady); ready != nil {
		got.Reason = ready.Reason
	}
	return got
}

// delta is how a count changes when a flag goes from before to after.
func delta(before, after bool) int {
	switch {
	case !before && after:
		return 1
	case before && !after:
		return -1
	}
	return 0
}

// milestones is a consistent copy of the observer's progress.
type milestones struct {
	ready, final, statused, settled int
	readyAt, finalAt, settledAt     time.Time
}

func (o *observer) milestones() milestones {
	o.mu.Lock()
	defer o.mu.Unlock()
	return milestones{
		ready: o.ready, final: o.final, statused: o.statused, settled: o.settled,
		readyAt: o.readyAt, finalAt: o.finalAt, settledAt: o.settledAt,
	}
}

// waitFor returns once done is true of the observer's progress, checking
// the in-memory counts every few milliseconds, or fails after timeout with
// the progress so far.
func (o *observer) waitFor(ctx context.Context, what string, timeout time.Duration, done func(milestones) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m := o.milestones()
		if done(m) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (Subnets ready %d, as planned %d of %d; Sites with a status %d, settled %d of %d)",
				what, ctx.Err(), m.ready, m.final, len(o.wantSubnets), m.statused, m.settled, len(o.wantSites))
		case <-tick.C:
		}
	}
}
