package managertest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestRequestCounter(t *testing.T) {
	status := map[string]int{"/conflict": http.StatusConflict, "/busy": http.StatusTooManyRequests}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(max(status[r.URL.Path], http.StatusOK))
	}))
	defer server.Close()
	var counter RequestCounter
	client := &http.Client{Transport: counter.Wrap(http.DefaultTransport)}
	send := func(method, path string) {
		t.Helper()
		req, err := http.NewRequest(method, server.URL+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}

	send(http.MethodGet, "/a")
	send(http.MethodGet, "/busy")
	before := counter.Snapshot()
	send(http.MethodPatch, "/a")
	send(http.MethodPatch, "/a")
	send(http.MethodPost, "/conflict")
	send(http.MethodPut, "/busy")
	send(http.MethodGet, "/a")

	got := counter.Snapshot().Sub(before)
	want := Counts{
		Writes:          map[string]int64{"PATCH /a": 2, "POST /conflict": 1, "PUT /busy": 1},
		Reads:           map[string]int64{"/a": 1},
		Conflicts:       1,
		ThrottledWrites: 1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("counts since the reads: got %+v, want %+v", got, want)
	}
	if before.ThrottledReads != 1 || before.Total() != 0 || !reflect.DeepEqual(before.Reads, map[string]int64{"/a": 1, "/busy": 1}) {
		t.Errorf("counts after two reads: got %+v, want no write, the two reads and one throttled read", before)
	}
	if n := counter.Load(); n != 4 {
		t.Errorf("Load: got %d writes, want 4", n)
	}
	if classes := counter.Classes(); !reflect.DeepEqual(classes, []string{"PATCH /a", "POST /conflict", "PUT /busy"}) {
		t.Errorf("Classes: got %q", classes)
	}
}

func TestScrapeAndSumCounter(t *testing.T) {
	const exposition = `# HELP controller_runtime_reconcile_total Total number of reconciliations per controller
# TYPE controller_runtime_reconcile_total counter
controller_runtime_reconcile_total{controller="site",result="error"} 2
controller_runtime_reconcile_total{controller="site",result="success"} 40
controller_runtime_reconcile_total{controller="subnet",result="success"} 7
# HELP rest_client_requests_total Number of HTTP requests, partitioned by status code, method, and host.
# TYPE rest_client_requests_total counter
rest_client_requests_total{code="200",host="127.0.0.1:6443",method="GET"} 5
rest_client_requests_total{code="201",host="127.0.0.1:6443",method="PATCH"} 3
rest_client_requests_total{code="201",host="127.0.0.2:6443",method="PATCH"} 1
`
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, exposition)
	}))
	defer server.Close()

	families, err := Scrape(context.Background(), strings.TrimPrefix(server.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := SumCounter(families, MetricReconciles, "controller"), map[string]float64{"site": 42, "subnet": 7}; !reflect.DeepEqual(got, want) {
		t.Errorf("reconciles by controller: got %v, want %v", got, want)
	}
	if got, want := SumCounter(families, MetricRequests, "method", "code"), map[string]float64{"GET 200": 5, "PATCH 201": 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("requests by method and code: got %v, want %v", got, want)
	}
}
