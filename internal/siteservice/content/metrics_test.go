package content

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"
)

// The content answers are counted, their errors are not, and the scrape
// is served on the health port.
func TestMetricsCountServedContent(t *testing.T) {
	s := startService(t)
	const content = "0123456789abcdefghijklmnopqrstuvwxyz"
	digest := s.store(t, content)
	url := s.api + "/v1/content/" + digest
	if code, _, _ := get(t, url, nil); code != http.StatusOK {
		t.Fatalf("GET: %d", code)
	}
	if code, _, _ := get(t, url, http.Header{"Range": {"bytes=10-15"}}); code != http.StatusPartialContent {
		t.Fatalf("GET a range: %d", code)
	}
	if code, _, _ := get(t, s.api+"/v1/content/"+digestOf("elsewhere"), nil); code != http.StatusNotFound {
		t.Fatalf("GET missing content: %d", code)
	}
	want := fmt.Sprintf(`
# HELP siteops_package_served_bytes_total Bytes of content sent to agents and other package services.
# TYPE siteops_package_served_bytes_total counter
siteops_package_served_bytes_total %d
# HELP siteops_package_transfers_in_progress Replication transfers under way.
# TYPE siteops_package_transfers_in_progress gauge
siteops_package_transfers_in_progress 0
`, len(content)+6)
	if err := testutil.ScrapeAndCompare(s.health+"/metrics", strings.NewReader(want),
		"siteops_package_served_bytes_total", "siteops_package_transfers_in_progress"); err != nil {
		t.Error(err)
	}
}

// The bytes replicated grow while a transfer is under way, not only when it
// ends, and the transfer shows in progress meanwhile.
func TestMetricsFollowATransfer(t *testing.T) {
	data, digest := randomContent(3 * chunkSize)
	o := newOrigin(t, data)
	f := testFetcher(t, startedStore(t, t.TempDir()), chunkSize) // about 2 s
	reg := newMetrics().registry(f)
	done := make(chan error, 1)
	go func() { done <- f.Fetch(context.Background(), digest, int64(len(data)), []string{o.URL}) }()

	var sawMidway bool
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		got := gathered(t, reg)
		if b := got["siteops_package_replicated_bytes_total"]; b > 0 && b < float64(len(data)) &&
			got["siteops_package_transfers_in_progress"] == 1 {
			sawMidway = true
			break
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !sawMidway {
		t.Error("the bytes replicated of a transfer under way were never seen")
	}
	want := fmt.Sprintf(`
# HELP siteops_package_replicated_bytes_total Bytes received by replication from origins and other package services, resumed transfers' repeats included.
# TYPE siteops_package_replicated_bytes_total counter
siteops_package_replicated_bytes_total %d
# HELP siteops_package_transfers_in_progress Replication transfers under way.
# TYPE siteops_package_transfers_in_progress gauge
siteops_package_transfers_in_progress 0
# HELP siteops_package_bandwidth_limit_bytes_per_second The SiteServer's bandwidthLimit shared by every transfer; 0 means none.
# TYPE siteops_package_bandwidth_limit_bytes_per_second gauge
siteops_package_bandwidth_limit_bytes_per_second %d
`, len(data), chunkSize)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "siteops_package_replicated_bytes_total",
		"siteops_package_transfers_in_progress", "siteops_package_bandwidth_limit_bytes_per_second"); err != nil {
		t.Error(err)
	}
}

// A transfer that ends stored is completed; one whose source failed is
// failed; a pause (the windows closed, a cancel, a shutdown) is neither.
func TestMetricsCountTransfers(t *testing.T) {
	m := newMetrics()
	reg := m.registry(nil)
	live := context.Background()
	cancelled, cancel := context.WithCancel(live)
	cancel()
	m.transferEnded(live, nil)
	m.transferEnded(live, errors.New("GET: 503"))
	m.transferEnded(live, fmt.Errorf("fetching: %w", ErrMismatch))
	m.transferEnded(live, fmt.Errorf("fetching: %w", errNoTimeLeft))
	m.transferEnded(cancelled, fmt.Errorf("fetching: %w", context.Canceled))
	var none *metrics
	none.transferEnded(live, nil) // a replicator without metrics

	want := `
# HELP siteops_package_transfers_completed_total Replication transfers that stored their content.
# TYPE siteops_package_transfers_completed_total counter
siteops_package_transfers_completed_total 1
# HELP siteops_package_transfers_failed_total Replication transfers that failed (each is tried again later, with a growing pause).
# TYPE siteops_package_transfers_failed_total counter
siteops_package_transfers_failed_total 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"siteops_package_transfers_completed_total", "siteops_package_transfers_failed_total"); err != nil {
		t.Error(err)
	}
}

// The lag is the age of the oldest Package missing here; a Package held,
// no longer given to this server, or gone leaves the count.
func TestMetricsReplicationLag(t *testing.T) {
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	m := newMetrics()
	m.now = func() time.Time { return now }
	reg := m.registry(nil)
	a, b, c := types.NamespacedName{Namespace: "ns", Name: "a"}, types.NamespacedName{Namespace: "ns", Name: "b"},
		types.NamespacedName{Namespace: "ns", Name: "c"}
	check := func(pending, lag float64) {
		t.Helper()
		got := gathered(t, reg)
		if got["siteops_package_replication_pending"] != pending || got["siteops_package_replication_lag_seconds"] != lag {
			t.Errorf("pending %v, lag %v s; want %v, %v s", got["siteops_package_replication_pending"],
				got["siteops_package_replication_lag_seconds"], pending, lag)
		}
	}
	check(0, 0)
	m.observe(a, true, start)
	now = start.Add(time.Minute)
	m.observe(b, true, now)
	m.observe(c, false, now)
	now = start.Add(10 * time.Minute)
	m.observe(a, true, now) // still missing: its clock keeps running
	check(2, 600)
	m.observe(a, false, now) // stored
	check(1, 540)
	m.forgetGone(map[types.NamespacedName]bool{a: true, c: true}) // b is gone
	check(0, 0)
	if n := testutil.CollectAndCount(reg); n != 8 {
		t.Errorf("%d metrics, want 8 (no label per Package or site)", n)
	}
}

// gathered is the value of every metric of reg without labels.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[f.GetName()] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[f.GetName()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
