package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/directory"
)

// cannedDirectories stands in for the directories of DirectoryImports, by
// spec.url: these specs check what the API server decides (adoption,
// names, the deletion guard); the LDAP side runs against Samba in
// test/integration/directory.
type cannedDirectories struct {
	mu   sync.Mutex
	dirs map[string]directory.Directory
	errs map[string]error
}

var directories = &cannedDirectories{dirs: map[string]directory.Directory{}, errs: map[string]error{}}

func (c *cannedDirectories) set(url string, d directory.Directory, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dirs[url], c.errs[url] = d, err
}

func (c *cannedDirectories) read(_ context.Context, cfg directory.Config) (directory.Directory, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cfg.Username != "CN=reader" || cfg.Password != "s3cret" {
		return directory.Directory{}, fmt.Errorf("%w: invalid credentials", directory.ErrBind)
	}
	return c.dirs[cfg.URL], c.errs[cfg.URL]
}

const adBase = "CN=Sites,CN=Configuration,DC=corp,DC=example"

func adSite(cn, description string) directory.Site {
	return directory.Site{DN: "CN=" + cn + "," + adBase, CN: cn, Description: description, Location: "Building " + cn}
}

func adSubnet(cidr, siteCN string) directory.Subnet {
	s := directory.Subnet{DN: "CN=" + cidr + ",CN=Subnets," + adBase, CN: cidr}
	if siteCN != "" {
		s.SiteDN = "CN=" + siteCN + "," + adBase
	}
	return s
}

var _ = Describe("DirectoryImport", func() {
	ctx := context.Background()

	createBindSecret := func() {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ad-bind", Namespace: workloadNamespace},
			StringData: map[string]string{"username": "CN=reader", "password": "s3cret"}}
		if err := k8sClient.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
	}
	createImport := func(name, url string, maxDelete int32) *siteopsv1.DirectoryImport {
		di := &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: siteopsv1.DirectoryImportSpec{
			URL: url, BaseDN: adBase, BindSecretRef: siteopsv1.SecretReference{Name: "ad-bind"},
			Interval: metav1.Duration{Duration: time.Minute}, MaxDeletePercent: maxDelete}}
		Expect(k8sClient.Create(ctx, di)).To(Succeed())
		// An import syncs (and writes its status) whenever a manager
		// starts: gone, it leaves the other specs' steady states alone.
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, di))).To(Succeed()) })
		return di
	}
	ready := func(name string) func() string {
		return func() string {
			var di siteopsv1.DirectoryImport
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: name}, &di); err != nil {
				return err.Error()
			}
			c := meta.FindStatusCondition(di.Status.Conditions, siteopsv1.ConditionReady)
			if c == nil {
				return ""
			}
			return string(c.Status) + "/" + c.Reason
		}
	}
	// resync makes the controller import again now (a spec change).
	resync := func(name string) {
		updateObject(ctx, &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: name}}, func(di *siteopsv1.DirectoryImport) {
			di.Spec.PageSize = di.Spec.PageSize%1000 + 11
		})
	}
	importedSites := func(name string) func() []string {
		return func() []string {
			var list siteopsv1.SiteList
			Expect(k8sClient.List(ctx, &list, client.MatchingLabels{siteopsv1.LabelDirectoryImport: name})).To(Succeed())
			var names []string
			for _, s := range list.Items {
				names = append(names, s.Name)
			}
			return names
		}
	}

	It("imports sites with mapped names, subnets that win over manual ones, and adopts and releases a manual Site", func() {
		createBindSecret()
		url := "ldaps://dc1.corp.example"
		By("a manual Site the import maps to, and a manual Subnet the directory also has")
		manual := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "di1-lyon"}, Spec: siteopsv1.SiteSpec{DisplayName: "Lyon (ours)", Description: "manual"}}
		Expect(k8sClient.Create(ctx, manual)).To(Succeed())
		createSubnet(ctx, "di1-manual", "10.71.0.0/16", "di1-lyon", "")
		directories.set(url, directory.Directory{
			Sites:   []directory.Site{adSite("DI1 Paris Head Office", "HQ"), adSite("DI1 Lyon", "from the directory")},
			Subnets: []directory.Subnet{adSubnet("10.70.0.0/16", "DI1 Paris Head Office"), adSubnet("10.71.0.0/16", "DI1 Paris Head Office"), adSubnet("10.72.1.2/16", "DI1 Lyon")},
		}, nil)
		createImport("di1", url, 25)
		Eventually(ready("di1"), timeout, interval).Should(Equal("True/Synced"))
		Expect(importedSites("di1")()).To(ConsistOf("di1-paris-head-office", "di1-lyon"))

		var lyon siteopsv1.Site
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di1-lyon"}, &lyon)).To(Succeed())
		Expect(lyon.Spec.Description).To(Equal("from the directory"), "the directory's description wins")
		Expect(lyon.Spec.DisplayName).To(Equal("Lyon (ours)"), "an adopted Site keeps its display name")
		Expect(lyon.Annotations).To(HaveKeyWithValue(siteopsv1.AnnotationAdopted, "di1"))
		Eventually(func() string {
			var s siteopsv1.Site
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di1-lyon"}, &s)).To(Succeed())
			return s.Status.ImportedBy
		}, timeout, interval).Should(Equal("di1"))

		By("the imported subnet overriding the manual one with the same CIDR")
		Eventually(getSubnetState(ctx, "di1-manual"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonOverriddenByImport)))
		Eventually(getSubnetState(ctx, "di1-10-71-0-0-16"), timeout, interval).Should(Equal(effective("di1-paris-head-office", "")))

		By("reporting the subnet with host bits set, and importing nothing of it")
		var di siteopsv1.DirectoryImport
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di1"}, &di)).To(Succeed())
		Expect(di.Status.Sites).To(Equal(int32(2)))
		Expect(di.Status.Subnets).To(Equal(int32(2)))
		Expect(di.Status.Skipped).To(ConsistOf(HaveField("Reason", ContainSubstring("host bits"))))

		By("a second sync with nothing changed writes no Site nor Subnet")
		importWrites := func() int64 {
			var n int64
			for class, count := range manager.writes.Snapshot().Writes {
				if strings.Contains(class, "di1") && !strings.HasSuffix(class, "/status") && !strings.Contains(class, "directoryimports") {
					n += count
				}
			}
			return n
		}
		before := importWrites()
		generation := di.Generation
		resync("di1")
		Eventually(func() bool {
			Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di1"}, &di)).To(Succeed())
			return di.Generation > generation && di.Status.ObservedGeneration == di.Generation
		}, timeout, interval).Should(BeTrue())
		Consistently(importWrites, 2*time.Second, interval).Should(Equal(before))

		By("the directory dropping Lyon: the adopted Site goes back to being manual, not deleted")
		directories.set(url, directory.Directory{
			Sites:   []directory.Site{adSite("DI1 Paris Head Office", "HQ")},
			Subnets: []directory.Subnet{adSubnet("10.70.0.0/16", "DI1 Paris Head Office"), adSubnet("10.71.0.0/16", "DI1 Paris Head Office")},
		}, nil)
		resync("di1")
		Eventually(importedSites("di1"), timeout, interval).Should(ConsistOf("di1-paris-head-office"))
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di1-lyon"}, &lyon)).To(Succeed())
		Expect(lyon.Annotations).NotTo(HaveKey(siteopsv1.AnnotationAdopted))
	})

	It("holds deletions past spec.maxDeletePercent, changes nothing when the directory fails, and says when the bind is refused", func() {
		createBindSecret()
		url := "ldaps://dc2.corp.example"
		full := directory.Directory{}
		for i := range 8 {
			full.Sites = append(full.Sites, adSite(fmt.Sprintf("DI2 Branch %d", i), ""))
			full.Subnets = append(full.Subnets, adSubnet(fmt.Sprintf("10.80.%d.0/24", i), fmt.Sprintf("DI2 Branch %d", i)))
		}
		directories.set(url, full, nil)
		createImport("di2", url, 25)
		Eventually(ready("di2"), timeout, interval).Should(Equal("True/Synced"))
		Expect(importedSites("di2")()).To(HaveLen(8))

		By("a directory that fails part-way: Ready=False, everything imported stays")
		directories.set(url, directory.Directory{}, fmt.Errorf("%w: connection reset", directory.ErrSearch))
		resync("di2")
		Eventually(ready("di2"), timeout, interval).Should(Equal("False/SearchFailed"))
		Consistently(importedSites("di2"), 2*time.Second, interval).Should(HaveLen(8))

		By("a directory that lists 2 of 8 sites: 75% would go, over 25%, so nothing is deleted")
		directories.set(url, directory.Directory{Sites: full.Sites[:2], Subnets: full.Subnets[:2]}, nil)
		resync("di2")
		Eventually(ready("di2"), timeout, interval).Should(Equal("False/DeletionsHeld"))
		Consistently(importedSites("di2"), 2*time.Second, interval).Should(HaveLen(8))
		var di siteopsv1.DirectoryImport
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "di2"}, &di)).To(Succeed())
		Expect(meta.IsStatusConditionTrue(di.Status.Conditions, siteopsv1.ConditionStalled)).To(BeTrue())

		By("raising the bound: the deletions go through")
		updateObject(ctx, &di, func(di *siteopsv1.DirectoryImport) { di.Spec.MaxDeletePercent = 100 })
		Eventually(importedSites("di2"), timeout, interval).Should(HaveLen(2))
		Eventually(ready("di2"), timeout, interval).Should(Equal("True/Synced"))

		By("wrong credentials: BindFailed, Stalled, nothing changed")
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ad-bind-wrong", Namespace: workloadNamespace},
			StringData: map[string]string{"username": "CN=reader", "password": "wrong"}}
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		updateObject(ctx, &di, func(di *siteopsv1.DirectoryImport) { di.Spec.BindSecretRef.Name = "ad-bind-wrong" })
		Eventually(ready("di2"), timeout, interval).Should(Equal("False/BindFailed"))
		Consistently(importedSites("di2"), 2*time.Second, interval).Should(HaveLen(2))
	})

	It("refuses a bad spec at admission, naming the field", func() {
		for _, tc := range []struct {
			change func(*siteopsv1.DirectoryImport)
			want   string
		}{
			{func(d *siteopsv1.DirectoryImport) { d.Spec.URL = "https://dc" }, "spec.url"},
			{func(d *siteopsv1.DirectoryImport) { d.Spec.URL = "ldaps://dc/path" }, "spec.url"},
			{func(d *siteopsv1.DirectoryImport) { d.Spec.BaseDN = "DC=corp,DC=example" }, "spec.baseDN"},
			{func(d *siteopsv1.DirectoryImport) { d.Spec.Interval = metav1.Duration{Duration: time.Second} }, "spec.interval"},
			{func(d *siteopsv1.DirectoryImport) { d.Spec.MaxDeletePercent = 101 }, "spec.maxDeletePercent"},
		} {
			di := &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: "di-bad"}, Spec: siteopsv1.DirectoryImportSpec{
				URL: "ldaps://dc", BaseDN: adBase, BindSecretRef: siteopsv1.SecretReference{Name: "x"}}}
			tc.change(di)
			err := k8sClient.Create(ctx, di)
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%v", err)
			Expect(err.Error()).To(ContainSubstring(tc.want))
		}
	})
})
