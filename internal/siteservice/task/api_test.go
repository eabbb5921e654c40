package task

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// apiEnv is a real API server with the siteops.io CRDs, a topology of two
// sites, and a task service of SiteServer paris-srv serving over a real
// socket.
type apiEnv struct {
	cfg    *rest.Config
	cl     client.Client
	srv    *Server
	url    string
	http   *http.Client
	status time.Duration
}

func startAPIEnv(t *testing.T, agents config.AgentsConfig) *apiEnv {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS must name the control-plane binaries: run the tests with `make test`")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	t.Cleanup(func() { _ = env.Stop() })
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = siteopsv1.AddToScheme(scheme)
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{config.DefaultTokenNamespace, "branch-a", "branch-b"} {
		must(cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	}
	for site, cidr := range map[string]string{"paris": "10.1.0.0/16", "lyon": "10.2.0.0/16"} {
		must(cl.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}))
		must(cl.Create(ctx, &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: site + "-lan"},
			Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: site}}))
		ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: site + "-srv"},
			Spec: siteopsv1.SiteServerSpec{Sites: []string{site}}}
		must(cl.Create(ctx, ss))
		ss.Status.Conditions = []metav1.Condition{{Type: siteopsv1.ConditionTaskServiceReady, Status: metav1.ConditionTrue,
			Reason: siteopsv1.ReasonAvailable, Message: "test", LastTransitionTime: metav1.Now()}}
		must(cl.Status().Update(ctx, ss))
	}
	createToken(t, cl, "abc123", "branch-a", nil)

	c := config.Defaults("paris-srv", []string{"paris"})
	c.Task.Agents = agents
	srv, err := New(c, Options{ServiceOptions: host.ServiceOptions{Version: "test",
		Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))},
		RestConfig: rest.CopyConfig(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, api, health) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e := &apiEnv{cfg: cfg, cl: cl, srv: srv, url: "http://" + api.Addr().String(), http: &http.Client{Timeout: 30 * time.Second},
		status: time.Duration(agents.StatusIntervalSeconds) * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for srv.kube.ready(ctx) != nil || !e.topologyFed() {
		if time.Now().After(deadline) {
			t.Fatal("the task service's cache did not sync")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

// topologyFed reports whether the service sees both sites' servers ready.
func (e *apiEnv) topologyFed() bool {
	_, ok := e.srv.kube.locator.Serves(addrs("10.1.0.9"), "paris-srv")
	return ok
}

func createToken(t *testing.T, cl client.Client, id, namespace string, extra map[string]string) {
	t.Helper()
	data := map[string]string{"token-id": id, "token-secret": id + "0123456789", "namespace": namespace}
	for k, v := range extra {
		data[k] = v
	}
	if err := cl.Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: config.DefaultTokenNamespace},
		Type:       siteopsv1.BootstrapTokenSecretType, StringData: data}); err != nil {
		t.Fatal(err)
	}
}

func token(id string) string { return id + "." + id + "0123456789" }

var requestSeq struct {
	sync.Mutex
	n int
}

// newRequest returns a request for a computer of hardware ID hw at addr.
func newRequest(hostname, hw, addr string) protocol.RegisterRequest {
	requestSeq.Lock()
	requestSeq.n++
	n := requestSeq.n
	requestSeq.Unlock()
	return protocol.RegisterRequest{RequestID: fmt.Sprintf("request-%012d", n), Hostname: hostname, HardwareID: hw,
		Addresses: []string{addr}, AgentVersion: "v0.1.0"}
}

// do sends a request and decodes the answer into out when it is 200.
func (e *apiEnv) do(t *testing.T, method, path, auth string, body []byte, out any) (int, protocol.Error) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	if body != nil {
		req.Header.Set("Content-Type", protocol.ContentType)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var perr protocol.Error
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusAccepted {
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				t.Fatalf("decoding %s: %v", data, err)
			}
		}
	} else if err := json.Unmarshal(data, &perr); err != nil {
		t.Fatalf("a %d answer that is not a protocol.Error: %s", resp.StatusCode, data)
	}
	return resp.StatusCode, perr
}

func (e *apiEnv) register(t *testing.T, tok string, req protocol.RegisterRequest) (protocol.RegisterResponse, int, protocol.Error) {
	t.Helper()
	body, _ := json.Marshal(req)
	var resp protocol.RegisterResponse
	code, perr := e.do(t, http.MethodPost, protocol.RegisterPath, tok, body, &resp)
	return resp, code, perr
}

func (e *apiEnv) checkIn(t *testing.T, credential string, wait int, addresses ...string) (protocol.WorkResponse, int, protocol.Error) {
	t.Helper()
	q := url.Values{protocol.QueryWait: {fmt.Sprint(wait)}, protocol.QueryAddress: addresses, protocol.QueryVersion: {"v0.1.0"}}
	var resp protocol.WorkResponse
	code, perr := e.do(t, http.MethodGet, protocol.WorkPath+"?"+q.Encode(), credential, nil, &resp)
	return resp, code, perr
}

func (e *apiEnv) computer(t *testing.T, ns, name string) *siteopsv1.Computer {
	t.Helper()
	c := &siteopsv1.Computer{}
	if err := e.cl.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func (e *apiEnv) computers(t *testing.T, ns string) int {
	t.Helper()
	var list siteopsv1.ComputerList
	if err := e.cl.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

func TestAgentAPI(t *testing.T) {
	e := startAPIEnv(t, config.AgentsConfig{StatusIntervalSeconds: 2, MinIntervalSeconds: 1, MaxWaitSeconds: 2, MaxLongPolls: 3})
	ctx := context.Background()

	first, code, perr := e.register(t, token("abc123"), newRequest("PC-01.corp", "uuid-1", "10.1.0.5"))
	if code != http.StatusOK {
		t.Fatalf("register = %d %+v", code, perr)
	}
	t.Run("registration creates the Computer in the token's namespace, with a hashed credential", func(t *testing.T) {
		if first.Namespace != "branch-a" || first.Computer != "pc-01" || first.Site != "paris" || first.SiteServer != "paris-srv" {
			t.Errorf("answer %+v", first)
		}
		c := e.computer(t, "branch-a", "pc-01")
		_, secret, _ := parseCredential(first.Credential)
		if c.Spec.HardwareID != "uuid-1" || c.Spec.Hostname != "PC-01.corp" || c.Status.Credential == nil ||
			!secretMatches(secret, c.Status.Credential.Hash) || c.Status.Site != "paris" || c.Status.SiteServer != "paris-srv" ||
			c.Status.LastSeen == nil || c.Status.Credential.Token != "bootstrap-token-abc123" {
			t.Errorf("Computer %+v %+v", c.Spec, c.Status)
		}
		if strings.Contains(fmt.Sprint(c.Status), secret) {
			t.Error("the Computer holds the credential's secret")
		}
	})

	t.Run("a check-in is held for the wait asked and answered with the interval", func(t *testing.T) {
		start := time.Now()
		resp, code, perr := e.checkIn(t, first.Credential, 1, "10.1.0.5")
		if code != http.StatusOK {
			t.Fatalf("check-in = %d %+v", code, perr)
		}
		if took := time.Since(start); took < 850*time.Millisecond || resp.HeldMillis < 850 {
			t.Errorf("held %d ms, answered after %s; want about 1 s", resp.HeldMillis, took)
		}
		if resp.Computer != "branch-a/pc-01" || resp.Site != "paris" || resp.SiteServer != "paris-srv" || resp.Work == nil {
			t.Errorf("answer %+v", resp)
		}
	})

	t.Run("bad input is a clear 4xx that changes nothing", func(t *testing.T) {
		before := e.computer(t, "branch-a", "pc-01").ResourceVersion
		for _, tc := range []struct {
			name  string
			body  []byte
			token string
			code  int
			field string
		}{
			{"malformed JSON", []byte(`{"requestID": `), token("abc123"), 400, ""},
			{"two documents", []byte(`{} {}`), token("abc123"), 400, ""},
			{"oversized body", []byte(`{"hostname":"` + strings.Repeat("a", 20<<10) + `"}`), token("abc123"), 413, ""},
			{"missing addresses", mustJSON(protocol.RegisterRequest{RequestID: "0123456789abcdefgh", Hostname: "x", HardwareID: "h"}),
				token("abc123"), 400, "addresses"},
			{"no token", mustJSON(newRequest("pc-02", "uuid-2", "10.1.0.6")), "", 401, ""},
			{"unknown token", mustJSON(newRequest("pc-02", "uuid-2", "10.1.0.6")), token("zzz999"), 401, ""},
			{"wrong secret", mustJSON(newRequest("pc-02", "uuid-2", "10.1.0.6")), "abc123.0000000000000000", 401, ""},
			{"malformed token", mustJSON(newRequest("pc-02", "uuid-2", "10.1.0.6")), "abc123", 401, ""},
		} {
			body := tc.body
			code, perr := e.do(t, http.MethodPost, protocol.RegisterPath, tc.token, body, nil)
			if code != tc.code || perr.Field != tc.field || perr.Error == "" {
				t.Errorf("%s: %d %+v; want %d naming %q", tc.name, code, perr, tc.code, tc.field)
			}
		}
		if n := e.computers(t, "branch-a"); n != 1 {
			t.Errorf("branch-a holds %d Computers after refused registrations, want 1", n)
		}
		if after := e.computer(t, "branch-a", "pc-01").ResourceVersion; after != before {
			t.Error("a refused registration changed the Computer")
		}
		for _, q := range []string{"wait=-1&address=10.1.0.5", "wait=301&address=10.1.0.5", "wait=1", "wait=1&address=nope"} {
			code, perr := e.do(t, http.MethodGet, protocol.WorkPath+"?"+q, first.Credential, nil, nil)
			if code != http.StatusBadRequest || perr.Field == "" {
				t.Errorf("check-in %s: %d %+v; want 400 naming the parameter", q, code, perr)
			}
		}
	})

	t.Run("a replayed registration is refused and changes nothing", func(t *testing.T) {
		req := newRequest("pc-03", "uuid-3", "10.1.0.7")
		if _, code, perr := e.register(t, token("abc123"), req); code != http.StatusOK {
			t.Fatalf("register = %d %+v", code, perr)
		}
		before := e.computer(t, "branch-a", "pc-03")
		if _, code, perr := e.register(t, token("abc123"), req); code != http.StatusConflict || perr.Field != "requestID" {
			t.Errorf("replay = %d %+v; want 409 naming requestID", code, perr)
		}
		if after := e.computer(t, "branch-a", "pc-03"); after.ResourceVersion != before.ResourceVersion {
			t.Error("the replay changed the Computer")
		}
	})

	t.Run("a re-imaged computer registers again as the same Computer, and its old credential stops", func(t *testing.T) {
		again := newRequest("pc-01-reimaged", "uuid-1", "10.1.0.5")
		again.MACAddresses = []string{"02:00:00:00:00:01"}
		second, code, perr := e.register(t, token("abc123"), again)
		if code != http.StatusOK || second.Computer != "pc-01" {
			t.Fatalf("register again = %d %+v %+v; want the Computer pc-01", code, second, perr)
		}
		if n := e.computers(t, "branch-a"); n != 2 {
			t.Errorf("branch-a holds %d Computers, want 2 (pc-01 and pc-03)", n)
		}
		if _, code, _ := e.checkIn(t, first.Credential, 0, "10.1.0.5"); code != http.StatusUnauthorized {
			t.Errorf("the replaced credential checks in with %d, want 401", code)
		}
		if _, code, perr := e.checkIn(t, second.Credential, 0, "10.1.0.5"); code != http.StatusOK {
			t.Errorf("the new credential checks in with %d %+v", code, perr)
		}
		first = second
	})

	t.Run("registrations of one computer that race make one Computer", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, code, perr := e.register(t, token("abc123"), newRequest("racer", "uuid-racer", "10.1.0.30")); code != http.StatusOK {
					t.Errorf("register = %d %+v", code, perr)
				}
			}()
		}
		wg.Wait()
		var list siteopsv1.ComputerList
		if err := e.cl.List(ctx, &list, client.InNamespace("branch-a")); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, c := range list.Items {
			if c.Spec.HardwareID == "uuid-racer" {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d Computers for one computer that registered 5 times at once, want 1", n)
		}
	})

	t.Run("a host name taken by another computer gets a suffix", func(t *testing.T) {
		other, code, perr := e.register(t, token("abc123"), newRequest("pc-01", "uuid-9", "10.1.0.9"))
		if code != http.StatusOK || !strings.HasPrefix(other.Computer, "pc-01-") {
			t.Errorf("register = %d %+v %+v; want pc-01-<hash>", code, other, perr)
		}
	})

	t.Run("one computer's credential is refused for another", func(t *testing.T) {
		_, secret, _ := parseCredential(first.Credential)
		forged, _ := newCredential(types.NamespacedName{Namespace: "branch-a", Name: "pc-03"})
		forged = forged[:strings.Index(forged, ".")+1] + secret
		if _, code, _ := e.checkIn(t, forged, 0, "10.1.0.5"); code != http.StatusUnauthorized {
			t.Errorf("pc-01's secret under pc-03's name checks in with %d, want 401", code)
		}
	})

	t.Run("an agent of a site this server does not serve is sent to locate again", func(t *testing.T) {
		if _, code, perr := e.checkIn(t, first.Credential, 0, "10.2.0.5"); code != protocol.StatusRelocate || perr.Field != protocol.QueryAddress {
			t.Errorf("check-in from lyon = %d %+v; want 421", code, perr)
		}
		if _, code, _ := e.register(t, token("abc123"), newRequest("lyon-pc", "uuid-l", "10.2.0.5")); code != protocol.StatusRelocate {
			t.Errorf("registration from lyon = %d; want 421", code)
		}
	})

	t.Run("tokens: expiry, usage limit and namespace binding", func(t *testing.T) {
		createToken(t, e.cl, "exp001", "branch-b", map[string]string{"expiration": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
		createToken(t, e.cl, "lim001", "branch-b", map[string]string{"usage-limit": "2"})
		waitCached(t, e, "bootstrap-token-lim001")
		waitCached(t, e, "bootstrap-token-exp001")
		if _, code, _ := e.register(t, token("exp001"), newRequest("b-1", "uuid-b1", "10.1.1.1")); code != http.StatusUnauthorized {
			t.Errorf("expired token: %d, want 401", code)
		}
		for i := range 2 {
			resp, code, perr := e.register(t, token("lim001"), newRequest(fmt.Sprintf("b-%d", i+2), fmt.Sprintf("uuid-b%d", i+2), "10.1.1.1"))
			if code != http.StatusOK || resp.Namespace != "branch-b" {
				t.Fatalf("use %d of 2: %d %+v %+v", i+1, code, resp, perr)
			}
		}
		if _, code, _ := e.register(t, token("lim001"), newRequest("b-4", "uuid-b4", "10.1.1.1")); code != http.StatusUnauthorized {
			t.Errorf("third use of a two-use token: %d, want 401", code)
		}
		if n := e.computers(t, "branch-b"); n != 2 {
			t.Errorf("branch-b holds %d Computers, want 2", n)
		}
		var sec corev1.Secret
		if err := e.cl.Get(ctx, types.NamespacedName{Namespace: config.DefaultTokenNamespace, Name: "bootstrap-token-lim001"}, &sec); err != nil ||
			sec.Annotations[siteopsv1.BootstrapTokenUsageAnnotation] != "2" {
			t.Errorf("usage count %v, %v; want 2", sec.Annotations, err)
		}
		// Deleting the Secret revokes the token.
		if err := e.cl.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abc123", Namespace: config.DefaultTokenNamespace}}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the deleted token is refused", func() bool {
			_, code, _ := e.register(t, token("abc123"), newRequest("pc-x", "uuid-x", "10.1.0.20"))
			return code == http.StatusUnauthorized
		})
	})

	t.Run("spec.credentialsNotBefore revokes the credential", func(t *testing.T) {
		c := e.computer(t, "branch-a", "pc-01")
		patch := client.MergeFrom(c.DeepCopy())
		c.Spec.CredentialsNotBefore = &metav1.Time{Time: time.Now().Add(time.Second)}
		if err := e.cl.Patch(ctx, c, patch); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the revoked credential is refused", func() bool {
			_, code, _ := e.checkIn(t, first.Credential, 0, "10.1.0.5")
			return code == http.StatusUnauthorized
		})
	})

	t.Run("check-ins beyond the long-poll cap are answered at once with the time to come back", func(t *testing.T) {
		var creds []string
		createToken(t, e.cl, "cap001", "branch-b", nil)
		waitCached(t, e, "bootstrap-token-cap001")
		for i := range 5 {
			resp, code, perr := e.register(t, token("cap001"), newRequest(fmt.Sprintf("cap-%d", i), fmt.Sprintf("uuid-cap%d", i), "10.1.2.1"))
			if code != http.StatusOK {
				t.Fatalf("register: %d %+v", code, perr)
			}
			creds = append(creds, resp.Credential)
		}
		var mu sync.Mutex
		var held, turned int
		var wg sync.WaitGroup
		for _, cred := range creds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, code, _ := e.checkIn(t, cred, 2, "10.1.2.1")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case code == http.StatusOK && resp.HeldMillis >= 850: // the cycle, 1 s less jitter, bounds the hold
					held++
				case code == http.StatusOK && resp.HeldMillis == 0 && resp.NextCheckInMillis >= 1000:
					turned++
				}
			}()
		}
		wg.Wait()
		if held != 3 || turned != 2 {
			t.Errorf("%d held, %d turned away; want 3 and 2 (cap 3)", held, turned)
		}
	})

	t.Run("check-ins are not API writes: at most one status write per Computer per interval", func(t *testing.T) {
		resp, code, _ := e.register(t, token("cap001"), newRequest("busy", "uuid-busy", "10.1.3.1"))
		if code != http.StatusOK {
			t.Fatal(code)
		}
		time.Sleep(e.status) // the registration's own write is an interval old
		before := e.srv.agents.writes.Load()
		start := time.Now()
		n := 0
		for time.Since(start) < 3*e.status {
			if _, code, _ := e.checkIn(t, resp.Credential, 0, "10.1.3.1"); code != http.StatusOK {
				t.Fatalf("check-in %d: %d", n, code)
			}
			n++
		}
		time.Sleep(e.status + time.Second) // the last one owed is written
		writes := e.srv.agents.writes.Load() - before
		if n < 50 || writes < 2 || writes > 4 {
			t.Errorf("%d check-ins over %s made %d status writes; want 2 to 4 (one per %s)", n, 3*e.status, writes, e.status)
		}
		c := e.computer(t, "branch-b", "busy")
		if c.Status.LastSeen == nil || time.Since(c.Status.LastSeen.Time) > 3*e.status {
			t.Errorf("lastSeen %v is not recent", c.Status.LastSeen)
		}
	})

	t.Run("an agent whose address moves changes site when this server serves both", func(t *testing.T) {
		// An unassigned server would; this one serves paris only, so the
		// move to lyon is a relocation (above). Here: a new address within
		// paris is written.
		resp, code, _ := e.register(t, token("cap001"), newRequest("mover", "uuid-mover", "10.1.4.1"))
		if code != http.StatusOK {
			t.Fatal(code)
		}
		time.Sleep(e.status)
		if _, code, _ := e.checkIn(t, resp.Credential, 0, "10.1.4.2"); code != http.StatusOK {
			t.Fatal(code)
		}
		eventually(t, "the new address is written", func() bool {
			c := e.computer(t, "branch-b", "mover")
			return len(c.Status.Addresses) == 1 && c.Status.Addresses[0] == "10.1.4.2"
		})
	})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// waitCached waits until the service's cache holds the token Secret.
func waitCached(t *testing.T, e *apiEnv, name string) {
	t.Helper()
	eventually(t, "the cache holds "+name, func() bool {
		var s corev1.Secret
		return e.srv.kube.client.Get(context.Background(), types.NamespacedName{Namespace: config.DefaultTokenNamespace, Name: name}, &s) == nil
	})
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func addrs(s ...string) []netipAddr { return parseAddrs(s) }

type netipAddr = netip.Addr

func parseAddrs(s []string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}
