package content

// The package services replicate through a real API server: the test plays
// the Package controller (it writes status.sites) and the SiteServer
// controller (it writes the servers' status), and runs two package
// services in-process over real sockets.

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

func startAPI(t *testing.T) (*envtest.Environment, client.Client) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS must name the control-plane binaries: run the tests with `make test`")
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	t.Cleanup(func() { _ = env.Stop() })
	if _, err := env.Start(); err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	_ = siteopsv1.AddToScheme(scheme)
	cl, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return env, cl
}

// runningServer creates a SiteServer of sites whose services run, as the
// SiteServer controller would report them.
func runningServer(t *testing.T, cl client.Client, name string, sites ...string) *siteopsv1.SiteServer {
	t.Helper()
	ctx := context.Background()
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: siteopsv1.SiteServerSpec{Sites: sites}}
	if err := cl.Create(ctx, ss); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	ss.Status.Conditions = []metav1.Condition{
		{Type: siteopsv1.ConditionTaskServiceReady, Status: metav1.ConditionTrue, Reason: siteopsv1.ReasonAvailable, Message: "test", LastTransitionTime: now},
		{Type: siteopsv1.ConditionPackageServiceReady, Status: metav1.ConditionTrue, Reason: siteopsv1.ReasonAvailable, Message: "test", LastTransitionTime: now},
	}
	ss.Status.Package = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1}
	if err := cl.Status().Update(ctx, ss); err != nil {
		t.Fatal(err)
	}
	return ss
}

// placed creates a Package and writes the status.sites the Package
// controller would: the sites given want it.
func placed(t *testing.T, cl client.Client, name, url, digest string, size int64, sites ...string) {
	t.Helper()
	placedWith(t, cl, name, url, digest, size, nil, sites...)
}

// placedWith is placed with replication windows.
func placedWith(t *testing.T, cl client.Client, name, url, digest string, size int64, windows []siteopsv1.MaintenanceWindow, sites ...string) {
	t.Helper()
	ctx := context.Background()
	p := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name},
		Spec: siteopsv1.PackageSpec{Type: siteopsv1.PackageDiskImage, Source: siteopsv1.PackageSource{URL: url},
			Digest: digest, Size: size, Replication: siteopsv1.PackageReplication{Windows: windows}}}
	if err := cl.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.Status.ObservedGeneration = p.Generation
	p.Status.Policy = siteopsv1.ReplicateAllSites
	for _, s := range sites {
		p.Status.Sites = append(p.Status.Sites, siteopsv1.PackageSiteStatus{Site: s, State: siteopsv1.ContentPending})
	}
	if err := cl.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
}

// copyOf returns server's entry in the Package's status.servers.
func copyOf(t *testing.T, cl client.Client, name, server string) (siteopsv1.PackageServerStatus, bool) {
	t.Helper()
	var p siteopsv1.Package
	if err := cl.Get(context.Background(), types.NamespacedName{Namespace: "apps", Name: name}, &p); err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Status.Servers {
		if c.Server == server {
			return c, true
		}
	}
	return siteopsv1.PackageServerStatus{}, false
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReplication(t *testing.T) {
	env, cl := startAPI(t)
	ctx := context.Background()
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}); err != nil {
		t.Fatal(err)
	}
	for _, site := range []string{"paris", "lyon"} {
		if err := cl.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}); err != nil {
			t.Fatal(err)
		}
	}
	paris := runningServer(t, cl, "paris-srv", "paris")
	runningServer(t, cl, "lyon-srv", "lyon")

	data, digest := randomContent(3 << 20)
	origin := newOrigin(t, data)
	plain := func(c *config.Config) { c.TLS.Disabled = true; c.Package.Replication.RemoveAfterSeconds = 1 }
	storage := func() string {
		dir := filepath.Join(t.TempDir(), "content")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	a := startReplicating(t, "paris-srv", []string{"paris"}, storage(), plain, env.Config)

	t.Run("from the origin, reported in the Package's status", func(t *testing.T) {
		placed(t, cl, "image", origin.URL, digest, int64(len(data)), "", "lyon", "paris")
		waitUntil(t, 30*time.Second, "paris-srv holds the image and says so", func() bool {
			c, ok := copyOf(t, cl, "image", "paris-srv")
			return ok && c.State == siteopsv1.ContentReady && c.Bytes == int64(len(data)) && a.server.Store().Has(digest)
		})
		if c, _ := copyOf(t, cl, "image", "paris-srv"); c.Updated == nil || c.Message != "" {
			t.Errorf("the Ready entry: %+v", c)
		}
	})

	t.Run("from a package service that holds it, the origin gone", func(t *testing.T) {
		origin.Close()
		paris.Status.Package.Advertised = []string{a.api}
		if err := cl.Status().Update(ctx, paris); err != nil {
			t.Fatal(err)
		}
		b := startReplicating(t, "lyon-srv", []string{"lyon"}, storage(), plain, env.Config)
		waitUntil(t, 30*time.Second, "lyon-srv holds the image, taken from paris-srv", func() bool {
			c, ok := copyOf(t, cl, "image", "lyon-srv")
			return ok && c.State == siteopsv1.ContentReady && b.server.Store().Has(digest)
		})
		// Each server wrote its own entry: both are there.
		if c, ok := copyOf(t, cl, "image", "paris-srv"); !ok || c.State != siteopsv1.ContentReady {
			t.Errorf("paris-srv's entry after lyon-srv wrote its own: %+v %v", c, ok)
		}
	})

	t.Run("content that does not match is Failed, with why", func(t *testing.T) {
		bad := newOrigin(t, []byte("not the content the digest names"))
		_, otherDigest := randomContent(1 << 10)
		placed(t, cl, "bad", bad.URL, otherDigest, int64(len("not the content the digest names")), "paris")
		waitUntil(t, 30*time.Second, "paris-srv reports the bad package Failed", func() bool {
			c, ok := copyOf(t, cl, "bad", "paris-srv")
			return ok && c.State == siteopsv1.ContentFailed && strings.Contains(c.Message, "does not match its digest")
		})
		if a.server.Store().Has(otherDigest) || a.server.Store().Partial(otherDigest) != 0 {
			t.Error("bytes that do not match were kept")
		}
	})

	t.Run("a server no wanted site gives the content to holds nothing", func(t *testing.T) {
		data, digest := randomContent(1 << 10)
		o := newOrigin(t, data)
		placed(t, cl, "lyon-only", o.URL, digest, int64(len(data)), "lyon")
		time.Sleep(2 * resyncEvery / 5)
		if _, ok := copyOf(t, cl, "lyon-only", "paris-srv"); ok || a.server.Store().Has(digest) {
			t.Error("paris-srv replicated a package only lyon wants")
		}
	})

	t.Run("outside its replication windows it waits; inside, it moves", func(t *testing.T) {
		now := time.Now().UTC()
		window := func(start time.Time, d time.Duration) []siteopsv1.MaintenanceWindow {
			return []siteopsv1.MaintenanceWindow{{Start: start.Format("15:04"), Duration: metav1.Duration{Duration: d}, TimeZone: "UTC"}}
		}
		data, digest := randomContent(64 << 10)
		o := newOrigin(t, data)
		placedWith(t, cl, "later", o.URL, digest, int64(len(data)), window(now.Add(2*time.Hour), time.Hour), "paris")
		waitUntil(t, 30*time.Second, "paris-srv says the package waits for its window", func() bool {
			c, ok := copyOf(t, cl, "later", "paris-srv")
			return ok && c.State == siteopsv1.ContentPending && strings.Contains(c.Message, "outside the replication windows") &&
				strings.Contains(c.Message, "the next opens at")
		})
		if o.gets.Load() != 0 || a.server.Store().Has(digest) {
			t.Errorf("content moved outside its window: %d GETs", o.gets.Load())
		}

		data, digest = randomContent(64<<10 + 1)
		o = newOrigin(t, data)
		placedWith(t, cl, "now", o.URL, digest, int64(len(data)), window(now.Add(-time.Hour), 3*time.Hour), "paris")
		waitUntil(t, 30*time.Second, "paris-srv holds the package inside its window", func() bool {
			c, ok := copyOf(t, cl, "now", "paris-srv")
			return ok && c.State == siteopsv1.ContentReady && a.server.Store().Has(digest)
		})
	})

	t.Run("content no wanted site gives the server any more is withdrawn, then removed", func(t *testing.T) {
		var p siteopsv1.Package
		if err := cl.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "image"}, &p); err != nil {
			t.Fatal(err)
		}
		p.Status.Sites = []siteopsv1.PackageSiteStatus{{Site: "lyon", State: siteopsv1.ContentReady}}
		if err := cl.Status().Update(ctx, &p); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, "paris-srv withdraws its entry and, after the grace period, the content", func() bool {
			_, listed := copyOf(t, cl, "image", "paris-srv")
			return !listed && !a.server.Store().Has(digest)
		})
		if c, ok := copyOf(t, cl, "image", "lyon-srv"); !ok || c.State != siteopsv1.ContentReady {
			t.Errorf("lyon-srv's entry went with paris-srv's: %+v %v", c, ok)
		}
	})

	t.Run("the bandwidth limit follows the SiteServer without a restart", func(t *testing.T) {
		patch := client.MergeFrom(paris.DeepCopy())
		paris.Spec.Services.Package.BandwidthLimit = ptr.To(resource.MustParse("3Mi"))
		if err := cl.Patch(ctx, paris, patch); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 30*time.Second, "the limit applied", func() bool {
			return a.server.replicator.fetcher.Limit() == 3<<20
		})
		if _, err := http.Get(a.health + "/readyz"); err != nil {
			t.Errorf("the service is not serving after the change: %v", err)
		}
	})
}
