//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Packages replicate: the manager places a Package, the package services
// (real processes behind the StatefulSets' pods) fetch it from its origin
// or from each other, verify it, store it on their volumes and report
// their copies; agents' servers then serve it byte for byte.
var _ = Describe("Packages", Ordered, func() {
	const (
		siteA, siteB = "pkg-a", "pkg-b"
		srvA, srvB   = "pkg-a-srv", "pkg-b-srv"
		pkgNamespace = "packages"
	)
	var (
		data, tools         []byte
		digest, toolsDigest string
		origin              *httptest.Server
		httpc               *http.Client // trusts the operator's CA
	)

	// content returns n random bytes from seed and their digest.
	content := func(n int, seed byte) ([]byte, string) {
		b := make([]byte, n)
		_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
		sum := sha256.Sum256(b)
		return b, "sha256:" + hex.EncodeToString(sum[:])
	}
	// createPackage creates a Package of the content at url for both sites.
	createPackage := func(ctx context.Context, name string, kind siteopsv1.PackageType, url, digest string, size int) {
		GinkgoHelper()
		Expect(k8s.Create(ctx, &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Namespace: pkgNamespace, Name: name},
			Spec: siteopsv1.PackageSpec{Type: kind, Source: siteopsv1.PackageSource{URL: url}, Digest: digest, Size: int64(size),
				Replication: siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{siteA, siteB}}}})).To(Succeed())
	}
	getPackage := func(ctx context.Context, g Gomega, name string) *siteopsv1.Package {
		p := &siteopsv1.Package{}
		g.Expect(k8s.Get(ctx, types.NamespacedName{Namespace: pkgNamespace, Name: name}, p)).To(Succeed())
		return p
	}
	packageDiagnostics := func(ctx context.Context) string {
		var list siteopsv1.PackageList
		_ = k8s.List(ctx, &list)
		s := diagnostics(ctx) + "Packages:\n"
		for _, p := range list.Items {
			s += fmt.Sprintf("  %s sites=%+v servers=%+v\n", p.Name, p.Status.Sites, p.Status.Servers)
			for _, c := range p.Status.Conditions {
				s += fmt.Sprintf("    %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
			}
		}
		return s
	}

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no package service runs to replicate")
		}
		data, digest = content(8<<20, 9)
		tools, toolsDigest = content(1<<20, 10)
		origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "image", time.Time{}, bytes.NewReader(data))
		}))
		DeferCleanup(origin.Close)

		for _, site := range []string{siteA, siteB} {
			createSite(ctx, site)
			DeferCleanup(func(ctx SpecContext) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}))).To(Succeed())
			})
		}
		for name, sites := range map[string][]string{srvA: {siteA}, srvB: {siteB}} {
			ss := siteServer(name, sites, siteServerSelector(), storageClass)
			Expect(k8s.Create(ctx, ss)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		}
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: pkgNamespace}})).To(Succeed())

		httpc = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: operatorCAPool(ctx)}}}
		for _, name := range []string{srvA, srvB} {
			Eventually(func(g Gomega) {
				ss := getSiteServer(ctx, g, name)
				g.Expect(ss.Status.Package.Ready).To(BeTrue(), "%s package ready", name)
				g.Expect(ss.Status.Package.Advertised).NotTo(BeEmpty(), "%s advertises", name)
			}).WithContext(ctx).Should(Succeed(), func() string { return packageDiagnostics(ctx) })
		}
	})

	It("replicates a package to the sites it names, verified, and says so in its status", func(ctx SpecContext) {
		createPackage(ctx, "base-image", siteopsv1.PackageDiskImage, origin.URL+"/base.img", digest, len(data))
		Eventually(func(g Gomega) {
			p := getPackage(ctx, g, "base-image")
			g.Expect(condition(p.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonReplicated))
			g.Expect(p.Status.SitesReady).To(Equal("2/2"))
			g.Expect(p.Status.Servers).To(ConsistOf(
				HaveField("Server", srvA), HaveField("Server", srvB)))
			for _, c := range p.Status.Servers {
				g.Expect(c.State).To(Equal(siteopsv1.ContentReady), c.Server)
				g.Expect(c.Bytes).To(Equal(int64(len(data))), c.Server)
			}
		}).WithContext(ctx).WithTimeout(2*time.Minute).Should(Succeed(), func() string { return packageDiagnostics(ctx) })

		By("serving it, byte for byte, from each site's package service")
		for _, name := range []string{srvA, srvB} {
			Eventually(func(g Gomega) {
				base := getSiteServer(ctx, g, name).Status.Package.Advertised[0]
				resp, err := httpc.Get(base + "/v1/content/" + digest)
				g.Expect(err).NotTo(HaveOccurred())
				defer resp.Body.Close()
				g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
				got, err := io.ReadAll(resp.Body)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(bytes.Equal(got, data)).To(BeTrue(), "%s serves other bytes (%d of %d)", name, len(got), len(data))
			}).WithContext(ctx).Should(Succeed())
		}
	})

	It("takes a copy from another site's package service over HTTPS when the origin serves only one", func(ctx SpecContext) {
		var served atomic.Int32
		once := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Range") == "" && served.Add(1) > 1 {
				http.Error(w, "this origin serves one copy", http.StatusServiceUnavailable)
				return
			}
			http.ServeContent(w, r, "tools", time.Time{}, bytes.NewReader(tools))
		}))
		DeferCleanup(once.Close)
		createPackage(ctx, "tools", siteopsv1.PackageSoftware, once.URL+"/tools.zip", toolsDigest, len(tools))
		Eventually(func(g Gomega) {
			p := getPackage(ctx, g, "tools")
			g.Expect(p.Status.SitesReady).To(Equal("2/2"))
		}).WithContext(ctx).WithTimeout(3*time.Minute).Should(Succeed(), func() string { return packageDiagnostics(ctx) })
		Expect(served.Load()).To(BeNumerically(">=", 2), "the second server never asked the origin: was it placed?")
	})

	It("applies a new bandwidth limit without restarting the package service", func(ctx SpecContext) {
		var before []corev1.Pod
		Eventually(func(g Gomega) { before = pods(ctx, g, srvA, packageComponent); g.Expect(before).To(HaveLen(1)) }).
			WithContext(ctx).Should(Succeed())
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, srvA)
			patch := client.MergeFrom(ss.DeepCopy())
			ss.Spec.Services.Package.BandwidthLimit = ptr.To(resource.MustParse("20Mi"))
			g.Expect(k8s.Patch(ctx, ss, patch)).To(Succeed())
		}).WithContext(ctx).Should(Succeed())
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, srvA)
			g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation))
		}).WithContext(ctx).Should(Succeed())
		Consistently(func(g Gomega) {
			now := pods(ctx, g, srvA, packageComponent)
			g.Expect(now).To(HaveLen(1))
			g.Expect(now[0].UID).To(Equal(before[0].UID), "the package pod was replaced")
			g.Expect(now[0].Annotations).To(Equal(before[0].Annotations))
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(Succeed())
	})

	It("withdraws a server's copy when its site no longer wants the package", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			p := getPackage(ctx, g, "base-image")
			patch := client.MergeFrom(p.DeepCopy())
			p.Spec.Replication.Sites = []string{siteB}
			g.Expect(k8s.Patch(ctx, p, patch)).To(Succeed())
		}).WithContext(ctx).Should(Succeed())
		Eventually(func(g Gomega) {
			p := getPackage(ctx, g, "base-image")
			g.Expect(p.Status.Servers).To(ConsistOf(HaveField("Server", srvB)))
			g.Expect(p.Status.SitesReady).To(Equal("1/1"))
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed(), func() string { return packageDiagnostics(ctx) })
	})
})
