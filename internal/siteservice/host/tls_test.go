package host

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// secretVolume lays out a directory as the kubelet does for a Secret
// volume: the files live in a timestamped directory, ..data points at it,
// and tls.crt and tls.key point through ..data. update swaps ..data at once,
// as the kubelet does when the Secret changes.
type secretVolume struct {
	dir string
	n   int
}

func newSecretVolume(t *testing.T) *secretVolume {
	v := &secretVolume{dir: t.TempDir()}
	for _, name := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *secretVolume) update(t *testing.T, certPEM, keyPEM []byte) {
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_11_26_12_00_%02d.%d", v.n, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"tls.crt": certPEM, "tls.key": keyPEM} {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

func (v *secretVolume) files() (string, string) {
	return filepath.Join(v.dir, "tls.crt"), filepath.Join(v.dir, "tls.key")
}

// startTLS serves h over HTTPS with the certificate of files.
func startTLS(t *testing.T, h *Host, files *certs.FileCertificate) *running {
	t.Helper()
	h.TLS = certs.ServerConfig(files.GetCertificate)
	r := start(t, h)
	r.api = strings.Replace(r.api, "http://", "https://", 1)
	return r
}

func issue(t *testing.T, ca *certs.Authority, hosts ...string) ([]byte, []byte, *big.Int) {
	t.Helper()
	names, err := certs.NamesOf(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(names, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := certs.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, cert.SerialNumber
}

func okHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello\n") })
}

// loopbackServing returns the files of a serving certificate for
// 127.0.0.1, in a Secret volume, and the pool of the CA that issued it.
func loopbackServing(t *testing.T) (*certs.FileCertificate, *x509.CertPool) {
	t.Helper()
	ca, err := certs.NewAuthority("test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vol := newSecretVolume(t)
	certPEM, keyPEM, _ := issue(t, ca, "127.0.0.1")
	vol.update(t, certPEM, keyPEM)
	files, err := certs.LoadFiles(vol.files())
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	return files, roots
}

// TestHostServesHTTPS: the API answers over TLS with the certificate of the
// files, to a client that trusts only the CA; a plain HTTP request to it
// gets no answer; the probes stay plain HTTP.
func TestHostServesHTTPS(t *testing.T) {
	files, roots := loopbackServing(t)
	r := startTLS(t, &Host{Name: "test", Handler: okHandler()}, files)

	resp, err := hosttest.HTTPSClient(roots).Get(r.api + "/v1/info")
	if err != nil {
		t.Fatalf("GET over HTTPS: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Errorf("HTTPS answer %d, TLS %v", resp.StatusCode, resp.TLS)
	}
	if _, err := hosttest.HTTPSClient(x509.NewCertPool()).Get(r.api + "/v1/info"); err == nil {
		t.Error("a client that does not trust the CA got an answer")
	}
	plain := strings.Replace(r.api, "https://", "http://", 1)
	if resp, err := http.Get(plain + "/v1/info"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the API answered plain HTTP with 200")
		}
	}
	if code, _ := get(t, r.health+"/readyz"); code != http.StatusOK {
		t.Errorf("plain HTTP /readyz = %d", code)
	}
}

// TestHostReloadsRotatedCertificate: when the Secret volume's files are
// swapped, new connections get the new certificate without a restart, and
// a keep-alive connection opened before goes on working.
func TestHostReloadsRotatedCertificate(t *testing.T) {
	ca, err := certs.NewAuthority("test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	vol := newSecretVolume(t)
	cert1, key1, serial1 := issue(t, ca, "127.0.0.1")
	vol.update(t, cert1, key1)
	files, err := certs.LoadFiles(vol.files())
	if err != nil {
		t.Fatal(err)
	}
	files.Interval = 20 * time.Millisecond
	reloads := make(chan error, 10)
	files.OnReload = func(err error) { reloads <- err }
	r := startTLS(t, &Host{Name: "test", Handler: okHandler(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}, files)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)

	// request makes a request with client and says which certificate the
	// server presented and whether the connection was reused.
	request := func(client *http.Client) (*big.Int, bool) {
		t.Helper()
		var reused bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.api+"/v1/info", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber, reused
	}

	kept := hosttest.HTTPSClient(roots)
	if serial, _ := request(kept); serial.Cmp(serial1) != 0 {
		t.Fatalf("first connection got serial %v, want %v", serial, serial1)
	}

	// A half-written pair (a key of another certificate) is not served.
	_, otherKey, _ := issue(t, ca, "127.0.0.1")
	vol.update(t, cert1, otherKey)
	time.Sleep(2 * files.Interval)
	if serial, _ := request(hosttest.HTTPSClient(roots)); serial.Cmp(serial1) != 0 {
		t.Fatalf("a broken pair replaced the certificate: serial %v", serial)
	}
	if err := <-reloads; err == nil {
		t.Error("a broken pair was reported as reloaded")
	}

	cert2, key2, serial2 := issue(t, ca, "127.0.0.1")
	vol.update(t, cert2, key2)
	eventually(t, "a new connection gets the rotated certificate", func() bool {
		serial, _ := request(hosttest.HTTPSClient(roots))
		return serial.Cmp(serial2) == 0
	})

	serial, reused := request(kept)
	if !reused {
		t.Error("the keep-alive connection opened before the rotation was dropped")
	}
	if serial.Cmp(serial1) != 0 {
		t.Errorf("the keep-alive connection shows serial %v, want the one it was opened with, %v", serial, serial1)
	}
}

// TestListenHost: with a listen host, the API and the probes bind that
// address only, as a pod binds its own IP on the simulated cluster's
// shared loopback.
// serveOn runs a Host with okHandler on free ports as serving says, until
// the test ends, and checks that it then returns cleanly; done receives
// what ListenAndServe returned, if it returns early.
func serveOn(t *testing.T, serving Serving) (port, healthPort int, done <-chan error) {
	t.Helper()
	port, healthPort = hosttest.FreePort(t), hosttest.FreePort(t)
	ctx, cancel := context.WithCancel(WithServing(context.Background(), serving))
	result := make(chan error, 1)
	h := &Host{Name: "test", Handler: okHandler(), Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	go func() { result <- h.ListenAndServe(ctx, PortAddr(port), PortAddr(healthPort)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-result; err != nil {
			t.Errorf("ListenAndServe: %v", err)
		}
	})
	return port, healthPort, result
}

func TestListenHost(t *testing.T) {
	port, healthPort, done := serveOn(t, Serving{ListenHost: "127.0.0.2"})
	hosttest.WaitReady(t, fmt.Sprintf("http://127.0.0.2:%d/readyz", healthPort), done)
	if code, _ := get(t, fmt.Sprintf("http://127.0.0.2:%d/v1/info", port)); code != http.StatusOK {
		t.Errorf("API on the listen host: %d", code)
	}
	for _, p := range []int{port, healthPort} {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), time.Second); err == nil {
			_ = c.Close()
			t.Errorf("port %d answers on 127.0.0.1 too", p)
		}
	}
}

// TestNotReadyUntilTheCertificateNamesTheListenIP: a service bound to its
// pod's IP whose certificate does not name that IP yet (re-issued, not yet
// refreshed in the Secret volume) answers /readyz 503 saying so, and turns
// ready without a restart once the files are rotated to a certificate that
// names it.
func TestNotReadyUntilTheCertificateNamesTheListenIP(t *testing.T) {
	ca, err := certs.NewAuthority("test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	vol := newSecretVolume(t)
	// The names of the SiteServer's Services and of the pod it replaces.
	certPEM, keyPEM, _ := issue(t, ca, "paris-1-task.site-operator-system.svc", "127.0.0.9")
	vol.update(t, certPEM, keyPEM)
	files, err := certs.LoadFiles(vol.files())
	if err != nil {
		t.Fatal(err)
	}
	files.Interval = 20 * time.Millisecond

	port, healthPort, _ := serveOn(t, Serving{ListenHost: "127.0.0.1", TLS: certs.ServerConfig(files.GetCertificate)})
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", healthPort)
	api := fmt.Sprintf("https://127.0.0.1:%d/v1/info", port)

	const want = "the serving certificate does not name 127.0.0.1 yet"
	eventually(t, "/readyz answers 503 naming the address", func() bool {
		resp, err := http.Get(readyz) // fails until the Host listens
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(body), want)
	})
	// What readiness protects: an agent dialing the address refuses the
	// certificate.
	if resp, err := hosttest.HTTPSClient(roots).Get(api); err == nil {
		_ = resp.Body.Close()
		t.Fatal("an agent verified a certificate that does not name the address it dialed")
	}
	for range 3 {
		if code, body := get(t, readyz); code != http.StatusServiceUnavailable || !strings.Contains(body, want) {
			t.Fatalf("/readyz with the old certificate: %d %q, want 503 %q", code, body, want)
		}
	}

	certPEM, keyPEM, _ = issue(t, ca, "paris-1-task.site-operator-system.svc", "127.0.0.1")
	vol.update(t, certPEM, keyPEM)
	eventually(t, "/readyz answers 200 once the rotated certificate names the address", func() bool {
		code, _ := get(t, readyz)
		return code == http.StatusOK
	})
	resp, err := hosttest.HTTPSClient(roots).Get(api)
	if err != nil {
		t.Fatalf("an agent dialing the address once ready: %v", err)
	}
	_ = resp.Body.Close()
}

// TestCertificateIP: only an HTTPS service bound to one IP address waits
// for its certificate to name it.
func TestCertificateIP(t *testing.T) {
	files, _ := loopbackServing(t)
	tlsConfig := certs.ServerConfig(files.GetCertificate)
	for _, tt := range []struct {
		name       string
		tls        bool
		listenHost string
		want       string
	}{
		{"a pod IP", true, "10.1.2.3", "10.1.2.3"},
		{"an IPv6 pod IP", true, "fd00::7", "fd00::7"},
		{"an IPv6 pod IP in brackets", true, "[fd00::7]", "fd00::7"},
		{"plain HTTP", false, "10.1.2.3", ""},
		{"every interface", true, "", ""},
		{"every IPv4 interface", true, "0.0.0.0", ""},
		{"every IPv6 interface", true, "::", ""},
		{"a host name", true, "task.example.com", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var c *tls.Config
			if tt.tls {
				c = tlsConfig
			}
			if got := certificateIP(c, tt.listenHost); got != tt.want {
				t.Errorf("certificateIP(TLS %v, %q) = %q, want %q", tt.tls, tt.listenHost, got, tt.want)
			}
		})
	}
	// The loopback certificate names 127.0.0.1 only.
	if err := certificateNames(tlsConfig, "127.0.0.1"); err != nil {
		t.Errorf("a certificate naming the address: %v", err)
	}
	if err := certificateNames(tlsConfig, "10.1.2.3"); err == nil || err.Error() != "the serving certificate does not name 10.1.2.3 yet" {
		t.Errorf("a certificate not naming the address: %v", err)
	}
}

func TestOnHost(t *testing.T) {
	for _, tt := range []struct{ addr, host, want string }{
		{":8080", "", ":8080"},
		{":8080", "10.0.0.7", "10.0.0.7:8080"},
		{":8080", "fd00::7", "[fd00::7]:8080"},
		{":8080", "[fd00::7]", "[fd00::7]:8080"},
		{"0.0.0.0:8081", "127.16.0.2", "127.16.0.2:8081"},
	} {
		if got := onHost(tt.addr, tt.host); got != tt.want {
			t.Errorf("onHost(%q, %q) = %q, want %q", tt.addr, tt.host, got, tt.want)
		}
	}
}

// TestConnectionCapOverTLS: a client over the cap is told to come back
// later over TLS, which it can read, not with plain text it takes for a
// broken handshake.
func TestConnectionCapOverTLS(t *testing.T) {
	certFile, keyFile, roots := hosttest.WriteCertificate(t, "127.0.0.1")
	files, err := certs.LoadFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	const maxConns = 2
	r := startTLS(t, &Host{Handler: okHandler(), MaxConnections: maxConns}, files)
	addr := strings.TrimPrefix(r.api, "https://")
	for range maxConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	client := hosttest.HTTPSClient(roots)
	client.Transport.(*http.Transport).DisableKeepAlives = true
	eventually(t, "a client over the cap gets 503 with Retry-After over TLS", func() bool {
		resp, err := client.Get(r.api + "/v1/info")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
	})
}
