package controllers_test

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// packageNamespace holds the Package specs' objects.
const packageNamespace = "pkg-tenant"

var testDigest = "sha256:" + strings.Repeat("ab", 32)

// diskImage is a DiskImage Package from an origin URL; change adjusts it
// before it is created.
func diskImage(name string, change ...func(*siteopsv1.Package)) *siteopsv1.Package {
	p := &siteopsv1.Package{
		ObjectMeta: metav1.ObjectMeta{Namespace: packageNamespace, Name: name},
		Spec: siteopsv1.PackageSpec{
			Type:   siteopsv1.PackageDiskImage,
			Source: siteopsv1.PackageSource{URL: "https://images.example/win11.img"},
			Digest: testDigest,
			Size:   1 << 30,
		},
	}
	for _, c := range change {
		c(p)
	}
	return p
}

var _ = Describe("Package admission", func() {
	ctx := context.Background()

	BeforeEach(func() { ensureNamespace(ctx, packageNamespace) })

	DescribeTable("refuses a bad Package with the rule's message, creating nothing",
		func(p *siteopsv1.Package, wantMessages ...string) {
			err := k8sClient.Create(ctx, p)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			for _, want := range wantMessages {
				Expect(err.Error()).To(ContainSubstring(want))
			}
			Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &siteopsv1.Package{}))).
				To(BeTrue(), "the Package was created")
		},
		Entry("a digest that is not sha256:<64 hex>", diskImage("pkg-adm-digest", func(p *siteopsv1.Package) {
			p.Spec.Digest = "sha256:ABC"
		}), "spec.digest", "^sha256:[0-9a-f]{64}$"),
		Entry("both sources", diskImage("pkg-adm-two", func(p *siteopsv1.Package) {
			p.Spec.Source.Captured = &siteopsv1.CapturedSource{SiteServer: "paris-1", Computer: "pc-1"}
		}), "spec.source must set exactly one of url or captured"),
		Entry("no source", diskImage("pkg-adm-none", func(p *siteopsv1.Package) {
			p.Spec.Source = siteopsv1.PackageSource{}
		}), "spec.source must set exactly one of url or captured"),
		Entry("a URL that is not HTTP", diskImage("pkg-adm-url", func(p *siteopsv1.Package) {
			p.Spec.Source.URL = "ftp://images.example/win11.img"
		}), "spec.source.url must be an http:// or https:// URL"),
		Entry("an unknown type", diskImage("pkg-adm-type", func(p *siteopsv1.Package) {
			p.Spec.Type = "Movie"
		}), "spec.type", `Unsupported value: "Movie"`),
		Entry("a size of 0", diskImage("pkg-adm-size", func(p *siteopsv1.Package) {
			p.Spec.Size = 0
		}), "spec.size"),
		Entry("policy Sites without sites", diskImage("pkg-adm-sites", func(p *siteopsv1.Package) {
			p.Spec.Replication.Policy = siteopsv1.ReplicateSites
		}), "spec.replication.sites is required with policy Sites, and only then"),
		Entry("sites without policy Sites", diskImage("pkg-adm-sites-2", func(p *siteopsv1.Package) {
			p.Spec.Replication.Policy = siteopsv1.ReplicateAllSites
			p.Spec.Replication.Sites = []string{"paris"}
		}), "spec.replication.sites is required with policy Sites, and only then"),
		Entry("an unknown policy", diskImage("pkg-adm-policy", func(p *siteopsv1.Package) {
			p.Spec.Replication.Policy = "Everywhere"
		}), "spec.replication.policy", `Unsupported value: "Everywhere"`),
		Entry("a replication window of 25h", diskImage("pkg-adm-window", func(p *siteopsv1.Package) {
			p.Spec.Replication.Windows = []siteopsv1.MaintenanceWindow{{Start: "22:00", Duration: metav1.Duration{Duration: 25 * time.Hour}}}
		}), "spec.replication.windows[0].duration", "a window's duration must be from 1m to 24h"),
	)

	It("keeps the content's identity: type, source, digest and size cannot change; replication can", func() {
		p := diskImage("pkg-immutable")
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(func() { Expect(deleteIgnoringNotFound(ctx, p)).To(Succeed()) })
		for what, c := range map[string]func(*siteopsv1.Package){
			"spec.type cannot change":   func(p *siteopsv1.Package) { p.Spec.Type = siteopsv1.PackageSoftware },
			"spec.source cannot change": func(p *siteopsv1.Package) { p.Spec.Source.URL = "https://elsewhere.example/x.img" },
			"spec.digest cannot change": func(p *siteopsv1.Package) { p.Spec.Digest = "sha256:" + strings.Repeat("cd", 32) },
			"spec.size cannot change":   func(p *siteopsv1.Package) { p.Spec.Size++ },
		} {
			var now siteopsv1.Package
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
			c(&now)
			err := k8sClient.Update(ctx, &now)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: want an Invalid error, got %v", what, err)
			Expect(err.Error()).To(ContainSubstring(what))
		}
		var now siteopsv1.Package
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
		now.Spec.Replication = siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{"paris"}}
		Expect(k8sClient.Update(ctx, &now)).To(Succeed())
	})
})
