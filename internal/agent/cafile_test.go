package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/protocol"
)

// testClock is a clock the test moves.
type testClock struct{ now atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.now.Store(time.Now().UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *testClock) Advance(d time.Duration) { c.now.Add(int64(d)) }

// writeFile writes the concatenation of data to path.
func writeFile(t *testing.T, path string, data ...[]byte) {
	t.Helper()
	// Written aside and renamed into place, as config management does.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, joinPEM(data...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func joinPEM(data ...[]byte) []byte {
	var out []byte
	for _, d := range data {
		out = append(out, d...)
	}
	return out
}

// trusts reports whether pool verifies a certificate that ca issues.
func trusts(t *testing.T, pool *x509.CertPool, ca *certs.Authority) bool {
	t.Helper()
	names, _ := certs.NamesOf("a.example")
	certPEM, _, err := ca.Issue(names, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := certs.ParseCertificate(certPEM)
	_, err = cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "a.example"})
	return err == nil
}

func TestCAFileReloads(t *testing.T) {
	a, err := certs.NewAuthority("CA A", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := certs.NewAuthority("CA B", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if _, err := openCAFile(path); err == nil || !strings.Contains(err.Error(), "CA bundle") {
		t.Errorf("a missing bundle: %v, want an error naming it", err)
	}
	if err := os.WriteFile(path, []byte("not PEM"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openCAFile(path); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a bundle without a certificate: %v", err)
	}
	writeFile(t, path, a.CertPEM)
	f, err := openCAFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	f.now = clock.Now
	f.checked.Store(clock.Now().UnixNano())

	first := f.roots()
	if !trusts(t, first, a) || trusts(t, first, b) {
		t.Fatal("the bundle of CA A does not trust A alone")
	}
	clock.Advance(2 * time.Second)
	if f.roots() != first {
		t.Error("an unchanged file was loaded again")
	}

	writeFile(t, path, a.CertPEM, b.CertPEM)
	if f.roots() != first {
		t.Error("the file was looked at again within a second")
	}
	clock.Advance(time.Second)
	both := f.roots()
	if both == first || !trusts(t, both, a) || !trusts(t, both, b) {
		t.Fatal("the rewritten bundle of A and B is not trusted a second later")
	}

	// Truncated in place, as a writer caught half-way leaves it.
	if err := os.WriteFile(path, []byte("-----BEGIN CERT"), 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if f.roots() != both || f.loadError() == nil {
		t.Errorf("a bundle that does not load: roots replaced or no error (%v)", f.loadError())
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if f.roots() != both || !errors.Is(f.loadError(), os.ErrNotExist) {
		t.Errorf("a removed bundle: roots replaced or the error is %v", f.loadError())
	}
	writeFile(t, path, b.CertPEM)
	clock.Advance(time.Second)
	if onlyB := f.roots(); trusts(t, onlyB, a) || !trusts(t, onlyB, b) || f.loadError() != nil {
		t.Errorf("the bundle rewritten with B alone: error %v", f.loadError())
	}
}

// caFileAgent sets up servers of CA B (a task service of paris and a
// locator sending paris's agents to it) and an agent's Config that follows
// a bundle file holding CA A only.
func caFileAgent(t *testing.T) (caA, caB *agenttest.CA, task *agenttest.TaskServer, locator *agenttest.Locator, path string, cfg Config) {
	t.Helper()
	caA, caB = agenttest.NewCA(t), agenttest.NewCA(t)
	task = agenttest.NewTaskServer(t, caB, "paris-1", "paris", testToken)
	locator = agenttest.NewLocator(t, caB, agenttest.Endpoints("paris", task.URL))
	path = filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, path, caA.PEM)
	cfg = baseConfig(t, caA, locator.URL)
	cfg.RootCAs, cfg.CAFile = nil, path
	return caA, caB, task, locator, path, cfg
}

// TestAgentFollowsCAFile: an agent trusting a file of CA A is refused by
// servers of CA B; once the file holds A and B, its next request succeeds
// with the same agent, and it follows the file back (over real sockets).
func TestAgentFollowsCAFile(t *testing.T) {
	caA, caB, _, locator, path, cfg := caFileAgent(t)
	file, err := openCAFile(path)
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	file.now = clock.Now
	a, err := newAgent(cfg, testTimings(), transportOptions{caFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	locate := func() error {
		t.Helper()
		resp, err := a.client.locate(ctx, locator.URL, []string{"10.0.0.9"})
		if err == nil && resp.Site != "paris" {
			t.Errorf("located at %q, want paris", resp.Site)
		}
		return err
	}
	var unknown x509.UnknownAuthorityError

	if err := locate(); !errors.As(err, &unknown) {
		t.Fatalf("trusting A at a locator of B: %v, want an unknown authority error", err)
	}

	writeFile(t, path, []byte("-----BEGIN CERT"))
	clock.Advance(time.Second)
	if err := locate(); !errors.As(err, &unknown) || !strings.Contains(err.Error(), "the changed CA bundle was not loaded") {
		t.Errorf("a broken bundle: %v, want the unknown authority error and why the bundle was not loaded", err)
	}

	writeFile(t, path, caA.PEM, caB.PEM)
	clock.Advance(time.Second)
	if err := locate(); err != nil {
		t.Fatalf("the same agent after the bundle was rewritten with A and B: %v", err)
	}
	if n := len(locator.Requests()); n != 1 {
		t.Errorf("the locator answered %d requests, want 1", n)
	}

	// A broken rewrite keeps the bundle last loaded.
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	a.closeIdle()
	if err := locate(); err != nil {
		t.Errorf("after an empty bundle was written, a new connection: %v, want the A and B bundle still trusted", err)
	}

	writeFile(t, path, caA.PEM)
	clock.Advance(time.Second)
	a.closeIdle()
	if err := locate(); !errors.As(err, &unknown) {
		t.Errorf("the bundle back to A alone: %v, want an unknown authority error", err)
	}
}

// TestRunningAgentPicksUpCAFile: a running agent refused by its site's
// servers checks in once its bundle file is rewritten to trust them,
// without a restart.
func TestRunningAgentPicksUpCAFile(t *testing.T) {
	caA, caB, task, locator, path, cfg := caFileAgent(t)
	start(t, cfg, testTimings())
	time.Sleep(300 * time.Millisecond)
	if n, m := len(locator.Requests()), task.SuccessfulCheckIns(); n != 0 || m != 0 {
		t.Fatalf("trusting A, the agent reached servers of B: %d locates, %d check-ins", n, m)
	}
	writeFile(t, path, caA.PEM, caB.PEM)
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() > 0 },
		"the agent did not check in after its bundle was rewritten with A and B")
}

// TestTransportResumesSessions: the per-connection TLS configuration keeps
// the session cache that simulated agents share, so a second agent's
// connection resumes the first one's session.
func TestTransportResumesSessions(t *testing.T) {
	ca := agenttest.NewCA(t)
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris"))
	roots, err := LoadCAFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	sessions := newSessionCache(4)
	for i, want := range []bool{false, true} {
		tr := newTransport(transportOptions{roots: roots, sessions: sessions, dialTimeout: 5 * time.Second})
		c := &client{http: &http.Client{Transport: tr}, requestTimeout: 5 * time.Second}
		body := strings.NewReader(`{"addresses":["10.0.0.9"]}`)
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, locator.URL+protocol.LocatePath, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body) // the session ticket comes after the handshake
		_ = resp.Body.Close()
		if resp.TLS == nil || resp.TLS.DidResume != want {
			t.Errorf("connection %d: resumed %v, want %v", i, resp.TLS != nil && resp.TLS.DidResume, want)
		}
		tr.CloseIdleConnections()
	}
}
