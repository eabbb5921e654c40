package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// The groups of Subnets the observer counts.
const (
	groupBaseline = "baseline"
	groupImport   = "import"
)

// observer watches Subnets and the DirectoryImport through informers of
// its own, apart from the manager's, and notes when each group of Subnets
// first reached each milestone. The times are taken in the watch event
// handlers, so they do not depend on how often anyone polls.
type observer struct {
	cache cache.Cache

	mu      sync.Mutex
	subnets map[string]subnetState
	groups  map[string]*groupProgress
	// the DirectoryImport: the generation for which Ready was first True,
	// and status.observedGeneration, with when each was first seen
	importReadyGen, importObservedGen int64
	importReadyAt, importObservedAt   time.Time
}

type subnetState struct {
	seen, ready, readyTrue bool
}

// groupProgress counts a group's Subnets at each milestone, and when each
// count first reached the target.
type groupProgress struct {
	target                 int
	seen, ready, readyTrue int
	firstAt, createdAt     time.Time
	readyAt, trueAt        time.Time
}

func newObserver(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (*observer, error) {
	c, err := cache.New(cfg, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, fmt.Errorf("creating the observer's cache: %w", err)
	}
	o := &observer{cache: c, subnets: map[string]subnetState{}, groups: map[string]*groupProgress{
		groupBaseline: {}, groupImport: {},
	}}
	if err := o.watch(ctx, &siteopsv1.Subnet{}, o.onSubnet); err != nil {
		return nil, err
	}
	if err := o.watch(ctx, &siteopsv1.DirectoryImport{}, o.onImport); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("waiting for the observer's cache to sync: %w", context.Cause(ctx))
	}
	return o, nil
}

func (o *observer) watch(ctx context.Context, obj client.Object, onChange func(obj any)) error {
	informer, err := o.cache.GetInformer(ctx, obj, cache.BlockUntilSynced(false))
	if err != nil {
		return fmt.Errorf("getting the observer's informer for %T: %w", obj, err)
	}
	_, err = informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    onChange,
		UpdateFunc: func(_, obj any) { onChange(obj) },
	})
	if err != nil {
		return fmt.Errorf("adding the observer's event handler for %T: %w", obj, err)
	}
	return nil
}

// expect sets the number of Subnets of a group.
func (o *observer) expect(group string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.groups[group].target = n
}

func groupOf(sn *siteopsv1.Subnet) string {
	switch {
	case sn.Labels[siteopsv1.LabelDirectoryImport] == importName:
		return groupImport
	case strings.HasPrefix(sn.Name, baselinePrefix):
		return groupBaseline
	}
	return ""
}

func (o *observer) onSubnet(obj any) {
	sn, ok := obj.(*siteopsv1.Subnet)
	if !ok {
		return
	}
	group := groupOf(sn)
	if group == "" {
		return
	}
	ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
	now := subnetState{seen: true}
	now.ready = ready != nil && sn.Status.ObservedGeneration == sn.Generation
	now.readyTrue = now.ready && ready.Status == metav1.ConditionTrue
	at := time.Now()

	o.mu.Lock()
	defer o.mu.Unlock()
	before := o.subnets[sn.Name]
	o.subnets[sn.Name] = now
	g := o.groups[group]
	step := func(count *int, was, is bool, when *time.Time) {
		*count += delta(was, is)
		if !was && is && *count == g.target && when.IsZero() {
			*when = at
		}
	}
	if !before.seen && g.firstAt.IsZero() {
		g.firstAt = at
	}
	step(&g.seen, before.seen, now.seen, &g.createdAt)
	step(&g.ready, before.ready, now.ready, &g.readyAt)
	step(&g.readyTrue, before.readyTrue, now.readyTrue, &g.trueAt)
}

func (o *observer) onImport(obj any) {
	di, ok := obj.(*siteopsv1.DirectoryImport)
	if !ok || di.Name != importName {
		return
	}
	at := time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if ready := meta.FindStatusCondition(di.Status.Conditions, siteopsv1.ConditionReady); ready != nil &&
		ready.Status == metav1.ConditionTrue && ready.ObservedGeneration == di.Generation && o.importReadyGen < di.Generation {
		o.importReadyGen, o.importReadyAt = di.Generation, at
	}
	if di.Status.ObservedGeneration > o.importObservedGen {
		o.importObservedGen, o.importObservedAt = di.Status.ObservedGeneration, at
	}
}

func delta(before, after bool) int {
	switch {
	case !before && after:
		return 1
	case before && !after:
		return -1
	}
	return 0
}

// snapshot is a consistent copy of the observer's progress.
type snapshot struct {
	groups                            map[string]groupProgress
	importReadyGen, importObservedGen int64
	importReadyAt, importObservedAt   time.Time
}

func (o *observer) snapshot() snapshot {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := snapshot{groups: map[string]groupProgress{}, importReadyGen: o.importReadyGen, importObservedGen: o.importObservedGen,
		importReadyAt: o.importReadyAt, importObservedAt: o.importObservedAt}
	for k, g := range o.groups {
		s.groups[k] = *g
	}
	return s
}

// waitFor returns once done is true of the observer's progress, or fails
// after timeout with the progress so far; it logs the progress every 5 s.
func (o *observer) waitFor(ctx context.Context, timeout time.Duration, what string, done func(snapshot) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	lastLog := start
	for {
		s := o.snapshot()
		if done(s) {
			return nil
		}
		if time.Since(lastLog) >= 5*time.Second {
			lastLog = time.Now()
			b, i := s.groups[groupBaseline], s.groups[groupImport]
			logf("%3.0f s waiting for %s: baseline Subnets %d created, %d Ready; imported %d created, %d Ready; import Ready for generation %d",
				time.Since(start).Seconds(), what, b.seen, b.ready, i.seen, i.ready, s.importReadyGen)
		}
		select {
		case <-ctx.Done():
			b, i := s.groups[groupBaseline], s.groups[groupImport]
			return fmt.Errorf("waiting for %s: %w (baseline Subnets %d of %d Ready; imported %d created, %d of %d Ready; import Ready for generation %d, observed %d)",
				what, ctx.Err(), b.ready, b.target, i.seen, i.ready, i.target, s.importReadyGen, s.importObservedGen)
		case <-tick.C:
		}
	}
}
