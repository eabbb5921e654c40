package content

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/packages"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/tasks"
)

// Timing of the replicator.
const (
	// progressEvery is the least time between two writes of one copy's
	// progress: bytes move without an API write per chunk.
	progressEvery = 10 * time.Second
	// resyncEvery looks at every Package again without a change, for the
	// retries of failed transfers and the progress of those under way.
	resyncEvery = 5 * time.Second
	// retryFailed is how long a failed transfer waits before it is tried
	// again, doubling up to retryFailedMax.
	retryFailed    = 30 * time.Second
	retryFailedMax = 10 * time.Minute
)

// replicator keeps the store holding the Packages that the placement rules
// give this SiteServer, and reports its copy of each in the Package's
// status.servers (server-side apply, one entry per server, owned by it).
// Which sites want a package is the Package controller's decision, read
// from status.sites; which servers hold it for those sites follows the
// serving rules (internal/packages). It also follows the SiteServer's
// bandwidthLimit, without a restart.
type replicator struct {
	server  string
	store   *Store
	fetcher *Fetcher
	cache   cache.Cache
	client  client.Client
	log     *slog.Logger
	now     func() time.Time
	slots   chan struct{} // one per transfer under way
	// removeAfter is how long content no Package gives this server stays;
	// unwanted says since when each such digest has been seen so.
	removeAfter time.Duration
	unwanted    map[string]time.Time

	kick chan struct{}

	mu   sync.Mutex
	jobs map[types.NamespacedName]*job
	// written is the last entry written per Package, and when.
	written map[types.NamespacedName]writtenEntry
	// metrics, when set, counts the transfers and follows the lag
	// (metrics.go).
	metrics *metrics
}

// job is one package's transfer: under way, or failed and waiting.
type job struct {
	digest string
	size   int64
	cancel context.CancelFunc
	done   bool
	err    error
	// failures in a row, and when the next try may start.
	failures int
	retryAt  time.Time
}

type writtenEntry struct {
	entry siteopsv1.PackageServerStatus
	at    time.Time
}

// fieldOwner is the field manager of a server's entries in status.servers.
func fieldOwner(server string) string { return "site-operator-package-service-" + server }

func newReplicator(rc *rest.Config, server string, store *Store, caFile string, rcfg config.ReplicationConfig, limit int64, log *slog.Logger) (*replicator, error) {
	scheme := runtime.NewScheme()
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := cache.New(rc, cache.Options{Scheme: scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, fmt.Errorf("creating the cache: %w", err)
	}
	cl, err := client.New(rc, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, fmt.Errorf("creating the client: %w", err)
	}
	httpClient, err := peerClient(caFile)
	if err != nil {
		return nil, err
	}
	maxTransfers := rcfg.MaxTransfers
	if maxTransfers <= 0 {
		maxTransfers = config.DefaultMaxTransfers
	}
	removeAfter := rcfg.RemoveAfterSeconds
	if removeAfter <= 0 {
		removeAfter = config.DefaultRemoveAfterSeconds
	}
	r := &replicator{server: server, store: store, cache: c, client: cl, log: log, now: time.Now,
		removeAfter: time.Duration(removeAfter) * time.Second, unwanted: map[string]time.Time{},
		fetcher: NewFetcher(store, httpClient, limit, log), slots: make(chan struct{}, maxTransfers),
		kick: make(chan struct{}, 1), jobs: map[types.NamespacedName]*job{}, written: map[types.NamespacedName]writtenEntry{}}
	return r, nil
}

// peerClient is the HTTP client of transfers: it trusts the system's roots
// (origin URLs) and the operator's CA in caFile, when the file exists
// (other package services).
func peerClient(caFile string) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		switch {
		case err == nil:
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no certificate in the CA bundle %s", caFile)
			}
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: tr}, nil
}

// run starts the cache and keeps the store in line with the Packages until
// ctx is done; the transfers under way stop with it.
func (r *replicator) run(ctx context.Context) error {
	for _, obj := range []client.Object{&siteopsv1.Package{}, &siteopsv1.SiteServer{}, &siteopsv1.Site{}} {
		inf, err := r.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { r.poke() },
			UpdateFunc: func(any, any) { r.poke() },
			DeleteFunc: func(any) { r.poke() },
		}); err != nil {
			return err
		}
	}
	go func() { _ = r.cache.Start(ctx) }()
	if !r.cache.WaitForCacheSync(ctx) {
		return ctx.Err()
	}
	t := time.NewTicker(resyncEvery)
	defer t.Stop()
	for {
		if err := r.reconcile(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("Replicating packages", "error", err)
		}
		select {
		case <-ctx.Done():
			r.stopAll()
			return nil
		case <-r.kick:
		case <-t.C:
		}
	}
}

func (r *replicator) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *replicator) stopAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, j := range r.jobs {
		if j.cancel != nil {
			j.cancel()
		}
	}
}

// reconcile looks at every Package once.
func (r *replicator) reconcile(ctx context.Context) error {
	var (
		pkgs    siteopsv1.PackageList
		servers siteopsv1.SiteServerList
		sites   siteopsv1.SiteList
	)
	for _, l := range []client.ObjectList{&pkgs, &servers, &sites} {
		if err := r.cache.List(ctx, l); err != nil {
			return err
		}
	}
	var me *siteopsv1.SiteServer
	for i := range servers.Items {
		if servers.Items[i].Name == r.server {
			me = &servers.Items[i]
		}
	}
	if me != nil {
		r.followLimit(me)
	}
	placement := packages.ServersOf(servers.Items)
	sitesExist := len(sites.Items) > 0
	seen := map[types.NamespacedName]bool{}
	wanted := map[string]bool{} // digests a Package gives this server, or may
	var errs []error
	for i := range pkgs.Items {
		p := &pkgs.Items[i]
		key := client.ObjectKeyFromObject(p)
		seen[key] = true
		mine, decided := r.mine(p, placement, sitesExist)
		if mine || !decided {
			wanted[p.Spec.Digest] = true
		}
		if !decided {
			continue // the controller has not placed this generation yet
		}
		r.metrics.observe(key, mine && p.DeletionTimestamp.IsZero() && !r.store.Has(p.Spec.Digest), r.now())
		if err := r.reconcilePackage(ctx, p, mine, servers.Items); err != nil {
			errs = append(errs, err)
		}
	}
	r.forgetGone(seen)
	r.metrics.forgetGone(seen)
	if err := r.collect(ctx, wanted); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// collect removes the content and the partial transfers that no Package
// has given this server for removeAfter. The clock starts when the
// replicator first sees them unwanted, so a restart delays a removal and
// never hastens one.
func (r *replicator) collect(ctx context.Context, wanted map[string]bool) error {
	now := r.now()
	stored, partial := r.store.Digests()
	present := map[string]bool{}
	var errs []error
	for _, d := range append(stored, partial...) {
		present[d] = true
		if wanted[d] {
			delete(r.unwanted, d)
			continue
		}
		since, ok := r.unwanted[d]
		if !ok {
			r.unwanted[d] = now
			r.log.Info("No Package gives this content to this server any more: it is removed after the grace period",
				"digest", d, "removeAt", now.Add(r.removeAfter).UTC().Format(time.RFC3339))
			continue
		}
		if now.Sub(since) < r.removeAfter {
			continue
		}
		if err := r.store.Remove(ctx, d); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(r.unwanted, d)
	}
	for d := range r.unwanted {
		if !present[d] {
			delete(r.unwanted, d)
		}
	}
	return errors.Join(errs...)
}

// followLimit applies the SiteServer's bandwidthLimit to the transfers.
func (r *replicator) followLimit(me *siteopsv1.SiteServer) {
	var limit int64
	if q := me.Spec.Services.Package.BandwidthLimit; q != nil {
		limit = q.Value()
	}
	if limit != r.fetcher.Limit() {
		r.log.Info("Replication bandwidth limit", "bytesPerSecond", limit)
		r.fetcher.SetLimit(limit)
	}
}

// mine reports whether the placement rules give p's content to this
// server: it serves one of the sites that the controller found wanting it.
// decided is false while the controller has not placed p's generation.
func (r *replicator) mine(p *siteopsv1.Package, placement []packages.Server, sitesExist bool) (mine, decided bool) {
	// The server that received a capture keeps it whatever the placement:
	// it is the first holder, the source of every other copy.
	if c := p.Spec.Source.Captured; c != nil && c.SiteServer == r.server {
		return true, true
	}
	if p.Status.ObservedGeneration != p.Generation || p.Status.Policy == "" {
		return false, false
	}
	wanted := make([]string, 0, len(p.Status.Sites))
	for _, s := range p.Status.Sites {
		wanted = append(wanted, s.Site)
	}
	return slices.Contains(packages.Holders(wanted, sitesExist, placement), r.server), true
}

// reconcilePackage starts, follows or reports p's transfer here, or, when
// p's content is not this server's any more, stops its transfer and
// withdraws its entry from p's status (the content itself goes after the
// grace period, with collect).
func (r *replicator) reconcilePackage(ctx context.Context, p *siteopsv1.Package, mine bool, servers []siteopsv1.SiteServer) error {
	key := client.ObjectKeyFromObject(p)
	if !p.DeletionTimestamp.IsZero() {
		r.cancel(key)
		return nil
	}
	if !mine {
		r.cancel(key)
		return r.withdraw(ctx, p)
	}
	digest, size := p.Spec.Digest, p.Spec.Size
	if r.store.Has(digest) {
		r.forgetJob(key)
		return r.report(ctx, p, siteopsv1.ContentReady, size, "")
	}
	now := r.now()
	windows, err := tasks.CompileWindows(p.Spec.Replication.Windows, "spec.replication.windows")
	if err != nil {
		r.cancel(key)
		return r.report(ctx, p, siteopsv1.ContentFailed, r.store.Partial(digest), err.Error())
	}
	if !windows.Open(now) {
		// Outside its windows: a transfer under way pauses (what it
		// received stays, to resume from).
		r.cancel(key)
		msg := "outside the replication windows (spec.replication.windows)"
		if next := windows.NextOpen(now); !next.IsZero() {
			msg += "; the next opens at " + next.UTC().Format(time.RFC3339)
		}
		return r.report(ctx, p, siteopsv1.ContentPending, r.store.Partial(digest), msg)
	}
	r.mu.Lock()
	j := r.jobs[key]
	if j != nil && j.digest != digest {
		if j.cancel != nil {
			j.cancel()
		}
		j = nil
	}
	switch {
	case j != nil && !j.done:
		r.mu.Unlock()
		received := int64(0)
		if pr := r.fetcher.Progress(digest); pr != nil {
			received = pr.Received.Load()
		}
		if received == 0 && j.cancel == nil {
			return r.report(ctx, p, siteopsv1.ContentPending, r.store.Partial(digest), "waiting for a transfer slot")
		}
		return r.report(ctx, p, siteopsv1.ContentReplicating, received, "")
	case j != nil && now.Before(j.retryAt):
		msg := fmt.Sprintf("%v (trying again at %s)", j.err, j.retryAt.UTC().Format(time.RFC3339))
		r.mu.Unlock()
		return r.report(ctx, p, siteopsv1.ContentFailed, r.store.Partial(digest), msg)
	}
	sources := r.sources(p, servers)
	if len(sources) == 0 {
		r.mu.Unlock()
		return r.report(ctx, p, siteopsv1.ContentPending, r.store.Partial(digest), "no source: no other package server holds the content yet")
	}
	failures := 0
	if j != nil {
		failures = j.failures
	}
	j = &job{digest: digest, size: size, failures: failures}
	r.jobs[key] = j
	r.mu.Unlock()
	go r.transfer(ctx, key, j, sources, windows.Until(now))
	return r.report(ctx, p, siteopsv1.ContentPending, r.store.Partial(digest), "waiting for a transfer slot")
}

// sources are where p's content may come from: the package services of
// the servers that hold it, then its origin URL.
func (r *replicator) sources(p *siteopsv1.Package, servers []siteopsv1.SiteServer) []string {
	var out []string
	for _, c := range p.Status.Servers {
		if c.Server == r.server || c.State != siteopsv1.ContentReady {
			continue
		}
		for i := range servers {
			if servers[i].Name != c.Server {
				continue
			}
			st := servers[i].Status.Package
			for _, base := range append(slices.Clone(st.Advertised), st.Endpoint) {
				if base != "" {
					out = append(out, strings.TrimSuffix(base, "/")+"/v1/content/"+p.Spec.Digest)
				}
			}
		}
	}
	if p.Spec.Source.URL != "" {
		out = append(out, p.Spec.Source.URL)
	}
	return out
}

// transfer runs one job in a transfer slot, until the content is stored
// or, when until is set, the replication windows close: then it pauses,
// which is no failure.
func (r *replicator) transfer(ctx context.Context, key types.NamespacedName, j *job, sources []string, until time.Time) {
	var cancel context.CancelFunc
	if until.IsZero() {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithDeadline(ctx, until)
	}
	defer cancel()
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-r.slots }()
	r.mu.Lock()
	if r.jobs[key] != j {
		r.mu.Unlock()
		return // cancelled while it waited
	}
	j.cancel = cancel
	r.mu.Unlock()
	r.poke() // Replicating
	r.log.Info("Replicating a package", "package", key.String(), "digest", j.digest, "size", j.size, "sources", sources)
	err := r.fetcher.Fetch(ctx, j.digest, j.size, sources)
	r.metrics.transferEnded(ctx, err)
	if !until.IsZero() && err != nil && (errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, errNoTimeLeft)) {
		r.log.Info("The replication windows closed: the transfer pauses", "package", key.String(), "digest", j.digest,
			"received", r.store.Partial(j.digest))
		err = nil
	}
	r.mu.Lock()
	j.done, j.err, j.cancel = true, err, nil
	if err != nil {
		j.failures++
		j.retryAt = r.now().Add(min(retryFailed<<(j.failures-1), retryFailedMax))
	}
	r.mu.Unlock()
	if err != nil && ctx.Err() == nil {
		r.log.Warn("Replicating a package failed", "package", key.String(), "digest", j.digest, "error", err)
	}
	r.poke()
}

func (r *replicator) cancel(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if j := r.jobs[key]; j != nil {
		if j.cancel != nil {
			j.cancel()
		}
		delete(r.jobs, key)
	}
}

func (r *replicator) forgetJob(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.jobs, key)
}

// forgetGone drops what the replicator kept of Packages that are gone.
func (r *replicator) forgetGone(seen map[types.NamespacedName]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for key, j := range r.jobs {
		if !seen[key] {
			if j.cancel != nil {
				j.cancel()
			}
			delete(r.jobs, key)
		}
	}
	for key := range r.written {
		if !seen[key] {
			delete(r.written, key)
		}
	}
}

// report writes this server's entry in p's status.servers when its state
// or message changed, or its bytes did and progressEvery has passed.
func (r *replicator) report(ctx context.Context, p *siteopsv1.Package, state string, bytes int64, message string) error {
	key := client.ObjectKeyFromObject(p)
	now := r.now()
	entry := siteopsv1.PackageServerStatus{Server: r.server, State: state, Bytes: bytes, Message: truncateMessage(message)}
	r.mu.Lock()
	last, ok := r.written[key]
	r.mu.Unlock()
	if !ok {
		// After a restart: what the API holds counts as written.
		for _, c := range p.Status.Servers {
			if c.Server == r.server {
				last, ok = writtenEntry{entry: siteopsv1.PackageServerStatus{Server: c.Server, State: c.State, Bytes: c.Bytes, Message: c.Message}}, true
				if c.Updated != nil {
					last.at = c.Updated.Time
				}
			}
		}
	}
	if ok && last.entry.State == state && last.entry.Message == entry.Message &&
		(last.entry.Bytes == bytes || now.Sub(last.at) < progressEvery) {
		return nil
	}
	updated := metav1.NewTime(now).Rfc3339Copy()
	entry.Updated = &updated
	if err := applyServerEntry(ctx, r.client, key, entry, fieldOwner(r.server)); err != nil {
		return fmt.Errorf("reporting the copy of Package %s: %w", key, err)
	}
	r.mu.Lock()
	r.written[key] = writtenEntry{entry: entry, at: now}
	r.mu.Unlock()
	return nil
}

// withdraw removes this server's entry from p's status.servers, if it has
// one: the copy no longer counts, and goes after the grace period.
func (r *replicator) withdraw(ctx context.Context, p *siteopsv1.Package) error {
	if !slices.ContainsFunc(p.Status.Servers, func(c siteopsv1.PackageServerStatus) bool { return c.Server == r.server }) {
		return nil
	}
	key := client.ObjectKeyFromObject(p)
	if err := applyServerEntries(ctx, r.client, key, nil, fieldOwner(r.server)); err != nil {
		return fmt.Errorf("withdrawing the copy of Package %s: %w", key, err)
	}
	r.mu.Lock()
	delete(r.written, key)
	r.mu.Unlock()
	r.log.Info("This server no longer holds a Package for its sites", "package", key.String())
	return nil
}

// applyServerEntry applies entry as the only one of status.servers that
// owner manages: the other servers' entries and the controller's fields
// stay as they are.
func applyServerEntry(ctx context.Context, c client.Client, key types.NamespacedName, entry siteopsv1.PackageServerStatus, owner string) error {
	return applyServerEntries(ctx, c, key, []siteopsv1.PackageServerStatus{entry}, owner)
}

// applyServerEntries applies entries as all of status.servers that owner
// manages: an entry it managed and left out is removed.
func applyServerEntries(ctx context.Context, c client.Client, key types.NamespacedName, entries []siteopsv1.PackageServerStatus, owner string) error {
	if entries == nil {
		entries = []siteopsv1.PackageServerStatus{}
	}
	data, err := json.Marshal(map[string]any{
		"apiVersion": siteopsv1.GroupVersion.String(),
		"kind":       "Package",
		"metadata":   map[string]any{"name": key.Name, "namespace": key.Namespace},
		"status":     map[string]any{"servers": entries},
	})
	if err != nil {
		return err
	}
	obj := &siteopsv1.Package{}
	obj.Namespace, obj.Name = key.Namespace, key.Name
	return c.Status().Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, data), client.FieldOwner(owner), client.ForceOwnership)
}

// maxMessage is the longest status message (the API's bound).
const maxMessage = 1024

func truncateMessage(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return s[:maxMessage-3] + "..."
}
