package locator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/siteops/site-operator/internal/protocol"
)

// TestLocateHTTP sends good and bad requests over a real TLS socket and
// checks the status, the error's field, and that a refused request changes
// nothing (the metrics count it as Rejected, and the next answer is the
// same).
func TestLocateHTTP(t *testing.T) {
	r, set := fixture(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(New(r, set, Options{Metrics: m}).Handler())
	defer srv.Close()
	client := srv.Client()

	many := make([]string, protocol.MaxLocateAddresses+1)
	for i := range many {
		many[i] = `"10.1.0.1"`
	}
	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		status      int
		field       string
		errContains string
	}{
		{name: "good", body: `{"addresses":["10.1.0.1"]}`, status: 200},
		{name: "good with charset", contentType: "application/json; charset=utf-8", body: `{"addresses":["fd00:e::1%eth0"]}`, status: 200},
		{name: "sixteen addresses", body: `{"addresses":[` + strings.Join(many[1:], ",") + `]}`, status: 200},
		{name: "GET", method: http.MethodGet, status: 405, errContains: "use POST"},
		{name: "text/plain", contentType: "text/plain", body: `{"addresses":["10.1.0.1"]}`, status: 415, errContains: "application/json"},
		{name: "no content type", contentType: "-", body: `{"addresses":["10.1.0.1"]}`, status: 415},
		{name: "malformed JSON", body: `{"addresses":["10.1.0.1"`, status: 400, errContains: "malformed JSON"},
		{name: "syntax error", body: `{"addresses":[10.1.0.1]}`, status: 400, errContains: "malformed JSON"},
		{name: "empty body", body: ``, status: 400, errContains: "empty"},
		{name: "unknown field", body: `{"addresses":["10.1.0.1"],"hostname":"pc1"}`, status: 400, field: "hostname"},
		{name: "wrong type", body: `{"addresses":"10.1.0.1"}`, status: 400, field: "addresses"},
		{name: "wrong element type", body: `{"addresses":[1]}`, status: 400, field: "addresses"},
		{name: "trailing data", body: `{"addresses":["10.1.0.1"]} {}`, status: 400, errContains: "nothing after it"},
		{name: "no addresses", body: `{"addresses":[]}`, status: 400, field: "addresses"},
		{name: "missing addresses", body: `{}`, status: 400, field: "addresses"},
		{name: "too many addresses", body: `{"addresses":[` + strings.Join(many, ",") + `]}`, status: 400, field: "addresses", errContains: "at most 16"},
		{name: "address that does not parse", body: `{"addresses":["10.1.0.1","10.1.0.256"]}`, status: 400, field: "addresses[1]"},
		{name: "CIDR is not an address", body: `{"addresses":["10.1.0.0/16"]}`, status: 400, field: "addresses[0]"},
		{name: "huge body", body: `{"addresses":["` + strings.Repeat("1", 20<<10) + `"]}`, status: 400, errContains: "larger than 16384"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			req, err := http.NewRequestWithContext(context.Background(), method, srv.URL+protocol.LocatePath, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			switch tt.contentType {
			case "":
				req.Header.Set("Content-Type", protocol.ContentType)
			case "-":
			default:
				req.Header.Set("Content-Type", tt.contentType)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != protocol.ContentType {
				t.Errorf("Content-Type %q", ct)
			}
			if tt.status == 200 {
				var lr protocol.LocateResponse
				if err := json.Unmarshal(body, &lr); err != nil || lr.Rule == "" || len(lr.TaskEndpoints) == 0 {
					t.Errorf("answer %s (%v)", body, err)
				}
				return
			}
			var perr protocol.Error
			if err := json.Unmarshal(body, &perr); err != nil {
				t.Fatalf("error body %q is not a protocol.Error: %v", body, err)
			}
			if perr.Field != tt.field || !strings.Contains(perr.Error, tt.errContains) || perr.Error == "" {
				t.Errorf("error %+v, want field %q and a message containing %q", perr, tt.field, tt.errContains)
			}
			if len(body) > 1024 {
				t.Errorf("error body of %d bytes echoes the request", len(body))
			}
		})
	}
	if got := counterValue(t, m.locates[ruleRejected]); got != float64(len(tests)-3) {
		t.Errorf("%v rejected locates counted, want %d", got, len(tests)-3)
	}
	if got := counterValue(t, m.locates[ruleSite]); got != 2 {
		t.Errorf("%v Site locates counted, want 2", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "siteops_locator_duration_seconds" {
			if n := f.GetMetric()[0].GetHistogram().GetSampleCount(); n != uint64(len(tests)) {
				t.Errorf("latency histogram counted %d requests, want %d", n, len(tests))
			}
		}
	}
}

// TestHTTPServerReloadsCertificate starts the runnable on an empty
// certificate directory, which it waits on, then replaces the certificate:
// new connections get the new one.
func TestHTTPServerReloadsCertificate(t *testing.T) {
	r, set := fixture(t)
	dir := t.TempDir()
	writeCert := func(serial int64) {
		certPEM, keyPEM := selfSigned(t, serial)
		for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
			tmp := filepath.Join(dir, name+".tmp")
			if err := os.WriteFile(tmp, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	hs, err := NewHTTPServer(New(r, set, Options{}).Handler(), HTTPOptions{Addr: "127.0.0.1:0", CertDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hs.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	// The certificate appears after the server started, as an optional
	// Secret volume fills in.
	time.Sleep(200 * time.Millisecond)
	if hs.Addr() != nil {
		t.Fatal("the server listens without a certificate")
	}
	if err := hs.ReadyCheck(nil); err == nil {
		t.Error("ready without a certificate")
	}
	writeCert(1)
	serialOf := func() (int64, error) {
		for hs.Addr() == nil {
			time.Sleep(10 * time.Millisecond)
		}
		conn, err := tls.Dial("tcp", hs.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test reads the serial
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(), nil
	}
	if s, err := serialOf(); err != nil || s != 1 {
		t.Fatalf("serial %d, %v; want 1", s, err)
	}
	if err := hs.ReadyCheck(nil); err != nil {
		t.Errorf("not ready while serving: %v", err)
	}
	writeCert(2)
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, err := serialOf()
		if err == nil && s == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serial %d, %v after 20 s; want the reloaded 2", s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestNewHTTPServerNeedsACertificate(t *testing.T) {
	r, set := fixture(t)
	if _, err := NewHTTPServer(New(r, set, Options{}).Handler(), HTTPOptions{Addr: ":0"}); err == nil {
		t.Error("a locator without a certificate or the insecure option was accepted")
	}
	hs, err := NewHTTPServer(New(r, set, Options{}).Handler(), HTTPOptions{Addr: ":0", InsecureHTTP: true})
	if err != nil || hs.NeedLeaderElection() {
		t.Errorf("insecure server: %v, needs leader election %v", err, hs.NeedLeaderElection())
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestReadyCheckWaitsForACertificate: a server whose GetCertificate has
// nothing yet (the operator's CA before its first load) is not ready.
func TestReadyCheckWaitsForACertificate(t *testing.T) {
	r, set := fixture(t)
	var cert atomic.Pointer[tls.Certificate]
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if c := cert.Load(); c != nil {
			return c, nil
		}
		return nil, errors.New("no certificate loaded yet")
	}}
	hs, err := NewHTTPServer(New(r, set, Options{}).Handler(), HTTPOptions{Addr: "127.0.0.1:0", TLSConfig: cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hs.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for hs.Addr() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	if err := hs.ReadyCheck(nil); err == nil {
		t.Error("ready without a certificate")
	}
	certPEM, keyPEM := selfSigned(t, 3)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cert.Store(&c)
	if err := hs.ReadyCheck(nil); err != nil {
		t.Errorf("not ready with a certificate: %v", err)
	}
}
