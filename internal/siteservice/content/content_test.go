package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// service is a package service serving on loopback for a test.
type service struct {
	api, health string // base URLs
	storage     string
	server      *Server
	log         *syncBuffer // the service's log
}

// startService serves a package service over a fresh store until the test
// ends.
func startService(t *testing.T) *service {
	t.Helper()
	storage := filepath.Join(t.TempDir(), "content")
	if err := os.Mkdir(storage, 0o755); err != nil {
		t.Fatal(err)
	}
	return startServiceOn(t, storage, nil)
}

// startServiceOn serves a package service over the store in storage,
// configured by mutate, until the test ends.
func startServiceOn(t *testing.T, storage string, mutate func(*config.Config)) *service {
	t.Helper()
	return startReplicating(t, "paris-1", []string{"paris"}, storage, mutate, nil)
}

// startReplicating serves the package service of SiteServer server over
// the store in storage, replicating through the API server at rc (none
// when nil).
func startReplicating(t *testing.T, server string, sites []string, storage string, mutate func(*config.Config), rc *rest.Config) *service {
	t.Helper()
	cfg := config.Defaults(server, sites)
	cfg.Package.StoragePath = storage
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &syncBuffer{}
	s, err := New(cfg, Options{Version: "v0.1.0",
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), nil)), RestConfig: rc})
	if err != nil {
		t.Fatal(err)
	}
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	serveFor(t, context.Background(), s, api, health)
	return &service{api: "http://" + api.Addr().String(), health: "http://" + health.Addr().String(),
		storage: cfg.Package.StoragePath, server: s, log: logs}
}

// store ingests content into the service's store and returns its digest.
func (s *service) store(t *testing.T, content string) string {
	t.Helper()
	digest := digestOf(content)
	if err := s.server.Store().Ingest(t.Context(), digest, int64(len(content)), strings.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	return digest
}

// digestOf returns the digest of content.
func digestOf(content string) string {
	sum := sha256.Sum256([]byte(content))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// syncBuffer is a bytes.Buffer that a logger and a test share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestNewRejects(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{"invalid configuration", func(c *config.Config) { c.Package.Port = 0 }, "package.port"},
		{"no storage path", func(c *config.Config) { c.Package.StoragePath = "" }, "package.storagePath must be set"},
		{"one port for API and probes", func(c *config.Config) { c.Package.HealthPort = c.Package.Port },
			"package.port and package.healthPort must differ"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Defaults("central", nil)
			tt.mutate(&cfg)
			if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	s := startService(t)
	code, body, _ := get(t, s.api+"/v1/info", nil)
	if code != 200 {
		t.Fatalf("/v1/info: %d %q", code, body)
	}
	var info host.Info
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("/v1/info is not JSON: %v: %s", err, body)
	}
	want := host.Info{Service: "package", SiteServer: "paris-1", Sites: []string{"paris"}, Version: "v0.1.0"}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("/v1/info = %+v, want %+v", info, want)
	}
}

// TestReadinessFollowsTheStore checks that a pod whose content volume is
// missing is not ready, yet stays alive, and becomes ready again once the
// store is back.
func TestReadinessFollowsTheStore(t *testing.T) {
	s := startService(t)
	for range 3 {
		if code, body, _ := get(t, s.health+"/readyz", nil); code != 200 {
			t.Fatalf("/readyz with a writable store: %d %q", code, body)
		}
	}
	if entries, err := os.ReadDir(filepath.Join(s.storage, "tmp")); err != nil || len(entries) != 0 {
		t.Errorf("the readiness check left files in the store: %v %v", entries, err)
	}

	if err := os.RemoveAll(s.storage); err != nil {
		t.Fatal(err)
	}
	code, body, _ := get(t, s.health+"/readyz", nil)
	if code != 503 || !strings.Contains(body, "content store") {
		t.Errorf("/readyz without the store: %d %q", code, body)
	}
	if strings.Contains(body, s.storage) {
		t.Errorf("/readyz tells its clients the store's path: %q", body)
	}
	if !strings.Contains(s.log.String(), s.storage) {
		t.Errorf("the log does not name the missing store %s:\n%s", s.storage, s.log)
	}
	if code, _, _ := get(t, s.health+"/healthz", nil); code != 200 {
		t.Errorf("/healthz without the store: %d (the pod would be restarted)", code)
	}

	if err := os.Mkdir(s.storage, 0o755); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(t, s.health+"/readyz", nil); code != 200 {
		t.Errorf("/readyz once the store is back: %d %q", code, body)
	}
}

func TestContent(t *testing.T) {
	s := startService(t)
	const content = "0123456789abcdefghijklmnopqrstuvwxyz"
	digest := s.store(t, content)
	url := s.api + "/v1/content/" + digest

	t.Run("whole", func(t *testing.T) {
		code, body, h := get(t, url, nil)
		if code != 200 || body != content {
			t.Fatalf("GET: %d %q", code, body)
		}
		if h.Get("ETag") != `"`+digest+`"` || h.Get("Content-Type") != "application/octet-stream" ||
			h.Get("Accept-Ranges") != "bytes" {
			t.Errorf("headers: %v", h)
		}
	})
	t.Run("range", func(t *testing.T) {
		code, body, h := get(t, url, http.Header{"Range": {"bytes=10-15"}})
		if code != http.StatusPartialContent || body != "abcdef" {
			t.Errorf("GET bytes=10-15: %d %q, want 206 %q", code, body, "abcdef")
		}
		if got, want := h.Get("Content-Range"), "bytes 10-15/36"; got != want {
			t.Errorf("Content-Range %q, want %q", got, want)
		}
	})
	t.Run("resume from an offset", func(t *testing.T) {
		code, body, _ := get(t, url, http.Header{"Range": {"bytes=30-"}})
		if code != http.StatusPartialContent || body != "uvwxyz" {
			t.Errorf("GET bytes=30-: %d %q", code, body)
		}
	})
	t.Run("range beyond the end", func(t *testing.T) {
		if code, _, _ := get(t, url, http.Header{"Range": {"bytes=100-"}}); code != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("GET bytes=100-: %d, want 416", code)
		}
	})
	t.Run("not modified", func(t *testing.T) {
		if code, _, _ := get(t, url, http.Header{"If-None-Match": {`"` + digest + `"`}}); code != http.StatusNotModified {
			t.Errorf("GET If-None-Match: %d, want 304", code)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		resp, err := http.Head(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != int64(len(content)) {
			t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
		}
	})
	t.Run("read only", func(t *testing.T) {
		resp, err := http.Post(url, "application/octet-stream", strings.NewReader("other"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST: %d, want 405", resp.StatusCode)
		}
	})
}

func TestContentRejects(t *testing.T) {
	s := startService(t)
	const secret = "the secret outside the store"
	outside := filepath.Join(filepath.Dir(s.storage), "secret")
	if err := os.WriteFile(outside, []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	hex64 := strings.Repeat("ab", 32)
	// A symbolic link in the store pointing out of it.
	linked := "sha256:" + strings.Repeat("cd", 32)
	linkPath, _ := ContentPath(s.storage, linked)
	if err := os.MkdirAll(filepath.Dir(linkPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, linkPath); err != nil {
		t.Fatal(err)
	}
	// A directory where content would be.
	dir := "sha256:" + strings.Repeat("ef", 32)
	dirPath, _ := ContentPath(s.storage, dir)
	if err := os.Mkdir(dirPath, 0o755); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		path string // raw, sent as is
		want int
	}{
		{"absent", "/v1/content/sha256:" + hex64, 404},
		{"a directory", "/v1/content/" + dir, 404},
		{"a link out of the store", "/v1/content/" + linked, 404},
		{"short", "/v1/content/sha256:abc", 400},
		{"too long", "/v1/content/sha256:" + hex64 + "0", 400},
		{"upper-case hex", "/v1/content/sha256:" + strings.ToUpper(hex64), 400},
		{"no algorithm", "/v1/content/" + hex64, 400},
		{"other algorithm", "/v1/content/sha512:" + hex64 + hex64, 400},
		{"escaped traversal", "/v1/content/sha256:..%2F..%2Fsecret", 400},
		{"escaped traversal to the file name", "/v1/content/..%2Fsecret", 400},
		{"traversal cleaned by the router", "/v1/content/../../secret", 404},
		{"traversal out of the digest", "/v1/content/sha256:" + hex64 + "/../../../secret", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, s.api, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = tt.path // sent unmodified
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if strings.Contains(string(body), secret) {
				t.Fatalf("GET %s served the file outside the store", tt.path)
			}
			if resp.StatusCode != tt.want {
				t.Errorf("GET %s: %d %q, want %d", tt.path, resp.StatusCode, body, tt.want)
			}
		})
	}
}

func TestContentPath(t *testing.T) {
	hex64 := strings.Repeat("0f", 32)
	got, err := ContentPath("/data", "sha256:"+hex64)
	if want := filepath.Join("/data", "sha256", hex64); err != nil || got != want {
		t.Errorf("ContentPath = %q, %v; want %q", got, err, want)
	}
	if _, err := ContentPath("/data", "sha256:../"+hex64[3:]); err == nil {
		t.Error("ContentPath accepted a digest with a path in it")
	}
}

// get returns the status, body and headers of GET url with header.
func get(t *testing.T, url string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// serveFor runs s on api and health with ctx until the returned stop, or
// the end of the test (hosttest.Serve).
func serveFor(t *testing.T, ctx context.Context, s *Server, api, health net.Listener) (stop func()) {
	t.Helper()
	return hosttest.Serve(t, ctx, func(ctx context.Context) error { return s.Serve(ctx, api, health) })
}
