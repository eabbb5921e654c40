package task

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/topologyfeed"
)

// writerQPS is the budget of the status writes of check-ins: with the
// default 5-minute interval, enough for 75,000 agents refreshing lastSeen.
const writerQPS = 250

// Field indexes of the service's Computer cache.
const (
	indexHardwareID = "spec.hardwareID"
	indexMAC        = "spec.macAddresses"
	indexSiteServer = "status.siteServer"
)

// kube is the service's view of the API: a cache of the Computers, of the
// bootstrap token Secrets (in the token namespace only) and of the
// topology, and a client that reads from it and writes to the API server.
type kube struct {
	cache   cache.Cache
	client  client.Client
	live    client.Reader // uncached, for what the cache may not have yet
	writer  client.Client // the status writes of check-ins, with their own budget
	locator *locator.Locator
	synced  []func() bool
	// computers is the Computer informer's store, read without a copy.
	computers toolscache.Store
}

// newKube connects to the API server with cfg. The cache starts with run.
func newKube(cfg *rest.Config, tokenNamespace string) (*kube, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	// Registrations (two writes each), the token counts and live reads:
	// well over client-go's default of 5 per second. The status writes of
	// check-ins have a client and a budget of their own (writerQPS), so
	// that neither starves the other.
	cfg.QPS, cfg.Burst = 500, 1000
	c, err := cache.New(cfg, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{tokenNamespace: {}}},
			// One per agent: keep only what the service reads.
			&siteopsv1.Computer{}: {Transform: trimComputer},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the cache: %w", err)
	}
	ctx := context.Background()
	for _, ix := range []struct {
		field string
		fn    func(*siteopsv1.Computer) []string
	}{
		{indexHardwareID, func(c *siteopsv1.Computer) []string { return nonEmpty(c.Spec.HardwareID) }},
		{indexMAC, func(c *siteopsv1.Computer) []string { return c.Spec.MACAddresses }},
		{indexSiteServer, func(c *siteopsv1.Computer) []string { return nonEmpty(c.Status.SiteServer) }},
	} {
		if err := c.IndexField(ctx, &siteopsv1.Computer{}, ix.field, func(o client.Object) []string {
			return ix.fn(o.(*siteopsv1.Computer))
		}); err != nil {
			return nil, fmt.Errorf("indexing Computers by %s: %w", ix.field, err)
		}
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	live, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	writerCfg := rest.CopyConfig(cfg)
	writerCfg.QPS, writerCfg.Burst = writerQPS, 2*writerQPS
	writer, err := client.New(writerCfg, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	k := &kube{cache: c, client: cl, live: live, writer: writer}
	loc, topologySynced, err := topologyfeed.FeedLocator(ctx, c)
	if err != nil {
		return nil, err
	}
	k.locator = loc
	// The informers of the kinds read through the cache exist before it
	// starts, so that readiness waits for them too.
	for _, obj := range []client.Object{&siteopsv1.Computer{}, &corev1.Secret{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("getting the %T informer: %w", obj, err)
		}
		k.synced = append(k.synced, inf.HasSynced)
		if _, ok := obj.(*siteopsv1.Computer); ok {
			if si, ok := inf.(toolscache.SharedIndexInformer); ok {
				k.computers = si.GetStore()
			}
		}
	}
	if k.computers == nil {
		return nil, errors.New("the Computer informer has no store")
	}
	k.synced = append(k.synced, topologySynced)
	return k, nil
}

// trimComputer drops from a cached Computer what the task service never
// reads (its conditions, annotations and managed fields), so that the
// cache of tens of thousands of Computers stays small.
func trimComputer(obj any) (any, error) {
	if c, ok := obj.(*siteopsv1.Computer); ok {
		c.ManagedFields = nil
		c.Annotations = nil
		c.Status.Conditions = nil
		if c.Status.LastTask != nil {
			c.Status.LastTask.Output = ""
		}
	}
	return obj, nil
}

// computer returns the cached Computer key, shared with the cache: read
// it, never change it. Nil when there is none.
func (k *kube) computer(key types.NamespacedName) *siteopsv1.Computer {
	obj, ok, err := k.computers.GetByKey(key.Namespace + "/" + key.Name)
	if err != nil || !ok {
		return nil
	}
	c, _ := obj.(*siteopsv1.Computer)
	return c
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// run runs the cache until ctx is done.
func (k *kube) run(ctx context.Context) error {
	if err := k.cache.Start(ctx); err != nil {
		return fmt.Errorf("running the cache: %w", err)
	}
	return nil
}

// ready reports nil once the cache holds every Computer, token and
// topology object.
func (k *kube) ready(context.Context) error {
	for _, synced := range k.synced {
		if !synced() {
			return errors.New("the cache of Computers, bootstrap tokens and topology is not synced yet")
		}
	}
	return nil
}

// assigned counts the Computers whose status names siteServer, without
// copying them.
func (k *kube) assigned(ctx context.Context, siteServer string) (int, error) {
	var list siteopsv1.ComputerList
	if err := k.cache.List(ctx, &list, client.MatchingFields{indexSiteServer: siteServer},
		client.UnsafeDisableDeepCopy); err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// countAssigned keeps n at the number of Computers assigned to siteServer,
// every period until ctx is done.
func (k *kube) countAssigned(ctx context.Context, siteServer string, period time.Duration, set func(int)) {
	// The first count as soon as the cache is synced: until then every
	// agent would be paced as if it were alone.
	for k.ready(ctx) != nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		if n, err := k.assigned(ctx, siteServer); err == nil {
			set(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
