// Package hosttest holds the test helpers that the task-service and
// package-service tests share: loopback listeners, configuration files and
// polling a real process over HTTP.
package hosttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/certs"
)

// Listen returns a TCP listener on a free loopback port.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// Serve runs serve (a service's Serve on its listeners) with ctx until
// the returned stop, or the end of the test, and fails the test if serve
// fails or does not return within 10 s of the stop. stop may be called
// more than once.
func Serve(t testing.TB, ctx context.Context, serve func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- serve(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WriteConfig writes content to a config.yaml in a temporary directory and
// returns its path.
func WriteConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// FreePort returns a TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitReady polls url until it answers 200, failing if the process exits.
func WaitReady(t testing.TB, url string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case err := <-exited:
			t.Fatalf("the process exited (%v) before %s answered 200", err, url)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer 200 within 15s (last: %v)", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// GetJSON decodes the JSON body of a 200 answer to GET url into v.
func GetJSON(t testing.TB, url string, v any) {
	t.Helper()
	GetJSONWith(t, http.DefaultClient, url, v)
}

// GetJSONWith is GetJSON with client (an HTTPSClient).
func GetJSONWith(t testing.TB, client *http.Client, url string, v any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %s", url, err, body)
	}
}

// WriteCertificate issues a serving certificate for hosts from a new CA and
// writes tls.crt and tls.key to a temporary directory. It returns their
// paths and a pool trusting the CA.
func WriteCertificate(t testing.TB, hosts ...string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	ca, err := certs.NewAuthority("test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	names, err := certs.NamesOf(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(names, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	for path, data := range map[string][]byte{certFile: certPEM, keyFile: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	roots = x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	return certFile, keyFile, roots
}

// HTTPSClient is a client that trusts only roots, over HTTP/1.1 with
// keep-alives.
func HTTPSClient(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
}
