package host

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

func TestHealthHandler(t *testing.T) {
	tests := []struct {
		name       string
		ready      ReadyFunc
		method     string
		path       string
		wantStatus int
		wantBody   string
	}{
		{"alive", nil, http.MethodGet, "/healthz", 200, "ok"},
		{"alive while not ready", func(context.Context) error { return errors.New("no volume") },
			http.MethodGet, "/healthz", 200, "ok"},
		{"ready without a check", nil, http.MethodGet, "/readyz", 200, "ok"},
		{"ready", func(context.Context) error { return nil }, http.MethodGet, "/readyz", 200, "ok"},
		{"not ready, with the reason", func(context.Context) error { return errors.New("no volume") },
			http.MethodGet, "/readyz", 503, "not ready: no volume"},
		{"HEAD is a GET without body", nil, http.MethodHead, "/readyz", 200, ""},
		{"POST is not a probe", nil, http.MethodPost, "/healthz", 405, ""},
		{"unknown path", nil, http.MethodGet, "/livez", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			HealthHandler(tt.ready).ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantStatus {
				t.Errorf("status %d, want %d", rec.Code, tt.wantStatus)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body %q does not contain %q", rec.Body, tt.wantBody)
			}
		})
	}
}

// running is a Host serving on loopback for a test.
type running struct {
	api, health string // base URLs
	cancel      context.CancelFunc
	done        chan error
}

// start serves h on loopback until the test ends.
func start(t *testing.T, h *Host) *running {
	t.Helper()
	if h.Logger == nil {
		h.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	}
	api := hosttest.Listen(t)
	health := hosttest.Listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{api: "http://" + api.Addr().String(), health: "http://" + health.Addr().String(),
		cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- h.Serve(ctx, api, health) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("the Host did not stop")
		}
	})
	return r
}

// stop cancels the Host and returns what Serve returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
		return nil
	}
}

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// eventually polls cond until it holds or a few seconds have passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting until %s", what)
}

func TestHostServesAPIAndProbes(t *testing.T) {
	var notReady atomic.Pointer[error]
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	r := start(t, &Host{Name: "test", Handler: mux, Ready: func(context.Context) error {
		if err := notReady.Load(); err != nil {
			return *err
		}
		return nil
	}})

	if code, body := get(t, r.api+"/hello"); code != 200 || body != "hello" {
		t.Errorf("API: %d %q", code, body)
	}
	if code, _ := get(t, r.health+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := get(t, r.health+"/readyz"); code != 200 {
		t.Errorf("/readyz while ready: %d %q", code, body)
	}
	if code, _ := get(t, r.api+"/readyz"); code != 404 {
		t.Errorf("the probes are served on the API port too: /readyz answered %d", code)
	}

	err := errors.New("content store missing")
	notReady.Store(&err)
	if code, body := get(t, r.health+"/readyz"); code != 503 || !strings.Contains(body, "content store missing") {
		t.Errorf("/readyz while the check fails: %d %q", code, body)
	}
	if code, _ := get(t, r.health+"/healthz"); code != 200 {
		t.Errorf("/healthz while not ready: %d", code)
	}
	notReady.Store(nil)
	if code, body := get(t, r.health+"/readyz"); code != 200 {
		t.Errorf("/readyz after recovering: %d %q", code, body)
	}

	if err := r.stop(t); err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
	for _, addr := range []string{r.api, r.health} {
		if _, err := http.Get(addr + "/healthz"); err == nil {
			t.Errorf("%s still answers after Serve returned", addr)
		}
	}
}

func TestHostNotReadyBeforeServing(t *testing.T) {
	h := &Host{Logger: slog.New(slog.DiscardHandler)}
	if err := h.ready(t.Context()); err == nil {
		t.Error("a Host that does not serve yet is ready")
	}
}

// TestHostDrainsRequestsInFlight checks the graceful shutdown: once asked
// to stop, the Host reports not ready and lets a request in flight finish.
func TestHostDrainsRequestsInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "finished")
	})
	r := start(t, &Host{Handler: mux})

	type result struct {
		code int
		body string
		err  error
	}
	results := make(chan result, 1)
	go func() {
		resp, err := http.Get(r.api + "/slow")
		if err != nil {
			results <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		results <- result{resp.StatusCode, string(body), err}
	}()
	<-entered
	r.cancel()
	eventually(t, "/readyz reports the shutdown", func() bool {
		code, body := get(t, r.health+"/readyz")
		return code == 503 && strings.Contains(body, "shutting down")
	})
	select {
	case err := <-r.done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if res := <-results; res.err != nil || res.code != 200 || res.body != "finished" {
		t.Errorf("request in flight: %d %q %v", res.code, res.body, res.err)
	}
	if err := r.stop(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

func TestHostShutdownTimeoutClosesConnections(t *testing.T) {
	entered := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /forever", func(_ http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
	})
	r := start(t, &Host{Handler: mux, ShutdownTimeout: 100 * time.Millisecond})
	failed := make(chan error, 1)
	go func() {
		resp, err := http.Get(r.api + "/forever")
		if err == nil {
			resp.Body.Close()
		}
		failed <- err
	}()
	<-entered
	began := time.Now()
	if err := r.stop(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if elapsed := time.Since(began); elapsed > 5*time.Second {
		t.Errorf("stopping took %v despite a 100ms shutdown timeout", elapsed)
	}
	if err := <-failed; err == nil {
		t.Error("the request that outlived the shutdown timeout succeeded")
	}
}

func TestHostReturnsServerFailure(t *testing.T) {
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	_ = api.Close() // the API server cannot accept
	h := &Host{Name: "test", Handler: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler)}
	done := make(chan error, 1)
	go func() { done <- h.Serve(context.Background(), api, health) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "serving the API") {
			t.Errorf("Serve = %v, want the API server's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve kept running after its API server failed")
	}
}

func TestListenAndServeReportsBusyAddress(t *testing.T) {
	busy := hosttest.Listen(t)
	defer busy.Close()
	free := hosttest.Listen(t)
	freeAddr := free.Addr().String()
	_ = free.Close()
	h := &Host{Name: "test", Handler: http.NotFoundHandler(), Logger: slog.New(slog.DiscardHandler)}

	err := h.ListenAndServe(t.Context(), busy.Addr().String(), freeAddr)
	if err == nil || !strings.Contains(err.Error(), "listening for the test API") {
		t.Errorf("API address busy: %v", err)
	}
	err = h.ListenAndServe(t.Context(), freeAddr, busy.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "listening for the test health probes") {
		t.Errorf("health address busy: %v", err)
	}
	// The API listener opened before the failure was closed again.
	ln, err := net.Listen("tcp", freeAddr)
	if err != nil {
		t.Errorf("the API listener leaked: %v", err)
	} else {
		ln.Close()
	}
}

func TestServerTimeouts(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	api := newAPIServer(http.NotFoundHandler(), log)
	if api.ReadHeaderTimeout <= 0 || api.IdleTimeout <= 0 || api.MaxHeaderBytes <= 0 {
		t.Errorf("API server lets slow or idle clients hold connections: %+v", api)
	}
	if api.WriteTimeout != 0 || api.ReadTimeout != 0 {
		t.Errorf("API server would cut long polls and large downloads: read %v, write %v", api.ReadTimeout, api.WriteTimeout)
	}
	health := newHealthServer(http.NotFoundHandler(), log)
	if health.ReadHeaderTimeout <= 0 || health.ReadTimeout <= 0 || health.WriteTimeout <= 0 || health.IdleTimeout <= 0 {
		t.Errorf("health server without timeouts: %+v", health)
	}
}

func TestInfoHandler(t *testing.T) {
	for _, tt := range []struct {
		name string
		info Info
		want string
	}{
		{"unassigned", Info{Service: "task", SiteServer: "central", Version: "v1.2.3"},
			`{"service":"task","siteServer":"central","sites":[],"version":"v1.2.3"}`},
		{"with sites", Info{Service: "package", SiteServer: "paris-1", Sites: []string{"paris", "lyon"}, Version: "devel"},
			`{"service":"package","siteServer":"paris-1","sites":["paris","lyon"],"version":"devel"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			InfoHandler(tt.info).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/info", nil))
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if got := strings.TrimSpace(rec.Body.String()); got != tt.want {
				t.Errorf("body %s, want %s", got, tt.want)
			}
			var back Info
			if err := json.Unmarshal(rec.Body.Bytes(), &back); err != nil {
				t.Errorf("body is not JSON: %v", err)
			}
		})
	}
}

func TestBuildVersion(t *testing.T) {
	if v := BuildVersion(); v == "" {
		t.Error("BuildVersion is empty")
	}
}
