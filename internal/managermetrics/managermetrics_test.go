package managermetrics_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/siteops/site-operator/internal/managermetrics"
	"github.com/siteops/site-operator/internal/manifests"
)

const (
	// rbacDir is the manager's RBAC as config/rbac ships it; its
	// ServiceAccount is controller-manager in the placeholder namespace
	// system.
	rbacDir          = "../../config/rbac"
	managerNamespace = "system"
	managerAccount   = "controller-manager"
	// scraperNamespace holds the scrapers' ServiceAccounts.
	scraperNamespace = "monitoring"
)

func TestServerOptionsPlainHTTP(t *testing.T) {
	opts := managermetrics.ServerOptions(managermetrics.Config{BindAddress: ":8080"})
	if opts.SecureServing || opts.FilterProvider != nil || opts.BindAddress != ":8080" {
		t.Errorf("--metrics-secure=false: got SecureServing=%v, a filter=%v, BindAddress=%q; want plain HTTP on :8080 without a filter",
			opts.SecureServing, opts.FilterProvider != nil, opts.BindAddress)
	}
}

// TestSecureMetrics serves the manager's metrics as --metrics-secure builds
// them, authenticated as the manager's ServiceAccount with config/rbac
// applied (so the markers of controllers/rbac.go are what allows the
// TokenReviews and SubjectAccessReviews), against a real kube-apiserver.
func TestSecureMetrics(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS must name the control-plane binaries: run the tests with `make test`")
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping the control plane: %v", err)
		}
	})
	admin, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clientset, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	installRBAC(ctx, t, admin)

	// A metric of this test, to find in the scrape.
	scrapes := prometheus.NewCounter(prometheus.CounterOpts{Name: "managermetrics_test_marker_total", Help: "Test marker."})
	if err := metrics.Registry.Register(scrapes); err != nil {
		t.Fatal(err)
	}
	defer metrics.Registry.Unregister(scrapes)

	// The server talks to the API server as the manager would, from its
	// ServiceAccount.
	managerCfg := rest.CopyConfig(cfg)
	managerCfg.Impersonate = rest.ImpersonationConfig{
		UserName: fmt.Sprintf("system:serviceaccount:%s:%s", managerNamespace, managerAccount),
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + managerNamespace, "system:authenticated"},
	}
	httpClient, err := rest.HTTPClientFor(managerCfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddress(t)
	server, err := metricsserver.NewServer(managermetrics.ServerOptions(managermetrics.Config{BindAddress: addr, Secure: true}),
		managerCfg, httpClient)
	if err != nil {
		t.Fatalf("creating the metrics server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- server.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	}()

	denied := serviceAccountToken(ctx, t, admin, clientset, "no-metrics")
	allowed := serviceAccountToken(ctx, t, admin, clientset, "prometheus")
	grantMetricsReader(ctx, t, admin, "prometheus")

	// The certificate is the self-signed one controller-runtime made: the
	// scraper's token, not the certificate, is what the server checks.
	scraper := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed by design; see above
	scrape := func(token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/metrics", nil)
		if err != nil {
			return 0, "", err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := scraper.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), err
	}

	// Wait for the server to listen.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, _, err := scrape("")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the metrics server does not answer on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, c := range []struct {
		who, token string
		want       int
	}{
		{"without a token", "", http.StatusUnauthorized},
		{"as a ServiceAccount without get on /metrics", denied, http.StatusForbidden},
		{"as a ServiceAccount bound to a metrics reader ClusterRole", allowed, http.StatusOK},
	} {
		code, body, err := scrape(c.token)
		if err != nil {
			t.Errorf("scraping %s: %v", c.who, err)
			continue
		}
		if code != c.want {
			t.Errorf("scraping %s: got %d, want %d (%s)", c.who, code, c.want, strings.TrimSpace(body))
			continue
		}
		if c.want == http.StatusOK && !strings.Contains(body, "managermetrics_test_marker_total") {
			t.Errorf("scraping %s: the answer holds no metric of the registry:\n%s", c.who, body)
		}
		if c.want != http.StatusOK && strings.Contains(body, "managermetrics_test_marker_total") {
			t.Errorf("scraping %s: refused, but the metrics were sent", c.who)
		}
	}

	// A token the API server cannot review is refused too (controller-runtime
	// answers 500: the TokenReview itself reports an error).
	if code, body, err := scrape("not-a-token"); err != nil || code == http.StatusOK {
		t.Errorf("scraping with a token that is not one: got %d, %v; want it refused", code, err)
	} else if strings.Contains(body, "managermetrics_test_marker_total") {
		t.Errorf("scraping with a token that is not one: refused, but the metrics were sent")
	}

	// Plain HTTP is not served on the secure port.
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + addr + "/metrics"); err == nil {
		_ = resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP on the secure endpoint: got 200")
		}
	}
}

// installRBAC applies config/rbac as a user would.
func installRBAC(ctx context.Context, t *testing.T, admin client.Client) {
	t.Helper()
	for _, ns := range []string{managerNamespace, scraperNamespace} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
	objs, err := manifests.ReadDir(rbacDir)
	if err != nil {
		t.Fatalf("reading %s: %v", rbacDir, err)
	}
	if err := manifests.CreateAll(ctx, admin, objs); err != nil {
		t.Fatalf("applying %s: %v", rbacDir, err)
	}
}

// serviceAccountToken creates a ServiceAccount of the scrapers' namespace
// and returns a token of it, as a projected token volume would hold.
func serviceAccountToken(ctx context.Context, t *testing.T, admin client.Client, clientset kubernetes.Interface, name string) string {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: scraperNamespace}}
	if err := admin.Create(ctx, sa); err != nil {
		t.Fatalf("creating ServiceAccount %s: %v", name, err)
	}
	seconds := int64(3600)
	tr, err := clientset.CoreV1().ServiceAccounts(scraperNamespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token of ServiceAccount %s: %v", name, err)
	}
	return tr.Status.Token
}

// grantMetricsReader binds the ServiceAccount to a ClusterRole allowing get
// on /metrics, the rule a Prometheus needs.
func grantMetricsReader(ctx context.Context, t *testing.T, admin client.Client, account string) {
	t.Helper()
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "metrics-reader-" + account},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: account, Namespace: scraperNamespace}}}
	for _, obj := range []client.Object{role, binding} {
		if err := admin.Create(ctx, obj); err != nil {
			t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
		}
	}
}

// freeAddress is a loopback address with a port nothing listens on.
func freeAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}
