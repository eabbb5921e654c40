package content

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/types"
)

// metrics are the package service's figures, exported on GET /metrics of
// the health port. No label names a Package or a site: the scrape's own
// labels (pod, namespace) say which server, and a cluster of thousands of
// Packages keeps a handful of series per server.
type metrics struct {
	// served is the bytes of content sent to clients (GET
	// /v1/content/{digest}).
	served atomic.Int64
	// completed and failed count the transfers of replication that
	// stored their content and those that gave up (a pause at the end of
	// a replication window, a cancel or a shutdown is neither).
	completed atomic.Int64
	failed    atomic.Int64

	now func() time.Time

	mu sync.Mutex
	// missing says since when each Package that the placement rules give
	// this server has been seen without its content here.
	missing map[types.NamespacedName]time.Time
}

func newMetrics() *metrics {
	return &metrics{now: time.Now, missing: map[types.NamespacedName]time.Time{}}
}

// instrument exports the service's metrics on the health port and counts
// what it serves and replicates.
func (s *Server) instrument() {
	m := newMetrics()
	var f *Fetcher
	if s.replicator != nil {
		s.replicator.metrics = m
		f = s.replicator.fetcher
	}
	s.host.Metrics = promhttp.HandlerFor(m.registry(f), promhttp.HandlerOpts{})
	s.host.Handler = m.countServed(s.host.Handler)
}

// registry holds the service's metrics; f is the replication's Fetcher,
// nil when the service replicates nothing (its figures stay 0).
func (m *metrics) registry(f *Fetcher) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, v func() int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v()) }))
	}
	gauge := func(name, help string, v func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v))
	}
	counter("siteops_package_served_bytes_total", "Bytes of content sent to agents and other package services.", m.served.Load)
	counter("siteops_package_replicated_bytes_total", "Bytes received by replication from origins and other package services, resumed transfers' repeats included.",
		func() int64 { return f.fetchedBytes() })
	counter("siteops_package_transfers_completed_total", "Replication transfers that stored their content.", m.completed.Load)
	counter("siteops_package_transfers_failed_total", "Replication transfers that failed (each is tried again later, with a growing pause).", m.failed.Load)
	gauge("siteops_package_transfers_in_progress", "Replication transfers under way.", func() float64 { return float64(f.transfers()) })
	gauge("siteops_package_replication_pending", "Packages that the placement rules give this server and whose content it does not hold yet.",
		func() float64 { n, _ := m.pending(); return float64(n) })
	gauge("siteops_package_replication_lag_seconds", "How long the oldest of the pending Packages has been waiting for its content here; 0 when none is.",
		func() float64 { _, lag := m.pending(); return lag.Seconds() })
	gauge("siteops_package_bandwidth_limit_bytes_per_second", "The SiteServer's bandwidthLimit shared by every transfer; 0 means none.",
		func() float64 { return float64(f.limitOrZero()) })
	return reg
}

// observe records whether the content of the Package key is missing here
// while the placement rules give it to this server. It is nil-safe: a
// replicator without metrics records nothing.
func (m *metrics) observe(key types.NamespacedName, missing bool, now time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !missing {
		delete(m.missing, key)
		return
	}
	if _, ok := m.missing[key]; !ok {
		m.missing[key] = now
	}
}

// forgetGone drops the Packages that are gone.
func (m *metrics) forgetGone(seen map[types.NamespacedName]bool) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for key := range m.missing {
		if !seen[key] {
			delete(m.missing, key)
		}
	}
}

// pending is how many Packages are missing here, and since how long the
// oldest one is.
func (m *metrics) pending() (int, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var oldest time.Time
	for _, since := range m.missing {
		if oldest.IsZero() || since.Before(oldest) {
			oldest = since
		}
	}
	if oldest.IsZero() {
		return 0, 0
	}
	return len(m.missing), max(m.now().Sub(oldest), 0)
}

// transferEnded counts a transfer that Fetch ended with err, in ctx.
func (m *metrics) transferEnded(ctx context.Context, err error) {
	switch {
	case m == nil:
	case err == nil:
		m.completed.Add(1)
	case ctx.Err() == nil && !errors.Is(err, errNoTimeLeft):
		m.failed.Add(1)
	}
}

// countServed counts the body bytes of the successful content answers
// of next (200 and 206; error messages are not content).
func (m *metrics) countServed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/content/") {
			w = &countingResponse{ResponseWriter: w, n: &m.served}
		}
		next.ServeHTTP(w, r)
	})
}

// countingResponse counts the body bytes written through it while the
// answer's status is a success.
type countingResponse struct {
	http.ResponseWriter
	n      *atomic.Int64
	failed bool // the status written is not a 2xx
}

func (w *countingResponse) WriteHeader(code int) {
	w.failed = code < 200 || code > 299
	w.ResponseWriter.WriteHeader(code)
}

func (w *countingResponse) add(n int64) {
	if !w.failed {
		w.n.Add(n)
	}
}

func (w *countingResponse) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.add(int64(n))
	return n, err
}

// ReadFrom keeps the connection's sendfile path, which http.ServeContent
// of a file takes: the bytes are counted when it returns.
func (w *countingResponse) ReadFrom(r io.Reader) (int64, error) {
	var (
		n   int64
		err error
	)
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.add(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flushes,
// deadlines).
func (w *countingResponse) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// fetchedBytes is the bytes read from sources by every Fetch, those under
// way included; 0 for a nil Fetcher.
func (f *Fetcher) fetchedBytes() int64 {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.fetched
	for _, p := range f.active {
		n += p.Fetched.Load()
	}
	return n
}

// transfers is the number of Fetches under way; 0 for a nil Fetcher.
func (f *Fetcher) transfers() int {
	if f == nil {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.active)
}

// limitOrZero is Limit, 0 for a nil Fetcher.
func (f *Fetcher) limitOrZero() int64 {
	if f == nil {
		return 0
	}
	return f.Limit()
}
