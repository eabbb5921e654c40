package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
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
			expectRefused(ctx, p, &siteopsv1.Package{}, wantMessages...)
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
			err := tryUpdate(ctx, p, c)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: want an Invalid error, got %v", what, err)
			Expect(err.Error()).To(ContainSubstring(what))
		}
		Expect(tryUpdate(ctx, p, func(p *siteopsv1.Package) {
			p.Spec.Replication = siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{"paris"}}
		})).To(Succeed())
	})
})

// packageCondition returns "status/reason" of a Package's condition, once
// the status describes the current generation.
func packageCondition(ctx context.Context, p *siteopsv1.Package, condType string) func(Gomega) string {
	return func(g Gomega) string {
		var now siteopsv1.Package
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
		if now.Status.ObservedGeneration != now.Generation {
			return "stale"
		}
		for _, c := range now.Status.Conditions {
			if c.Type == condType {
				return string(c.Status) + "/" + c.Reason
			}
		}
		return ""
	}
}

// reportCopy writes a package service's entry for server, as that service
// does (a merge patch of status.servers, a list keyed by server).
func reportCopy(ctx context.Context, p *siteopsv1.Package, server, state string, bytes int64, message string) {
	GinkgoHelper()
	Eventually(func() error {
		var now siteopsv1.Package
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now); err != nil {
			return err
		}
		patch := client.MergeFromWithOptions(now.DeepCopy(), client.MergeFromWithOptimisticLock{})
		entry := siteopsv1.PackageServerStatus{Server: server, State: state, Bytes: bytes, Message: message, Updated: ptr.To(metav1.Now())}
		found := false
		for i := range now.Status.Servers {
			if now.Status.Servers[i].Server == server {
				now.Status.Servers[i], found = entry, true
			}
		}
		if !found {
			now.Status.Servers = append(now.Status.Servers, entry)
		}
		return k8sClient.Status().Patch(ctx, &now, patch)
	}, timeout, interval).Should(Succeed())
}

var _ = Describe("Package", func() {
	ctx := context.Background()

	BeforeEach(func() { ensureNamespace(ctx, packageNamespace) })

	It("rolls the package servers' copies up into each wanted site, and says what it waits for", func() {
		createSite(ctx, "pk-a")
		createNode(ctx, "pk-node", map[string]string{"test.siteops.io/role": "pk"})
		createStorageClass(ctx, "pk-class")
		p := diskImage("pk-roll", func(p *siteopsv1.Package) {
			p.Spec.Replication = siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{"pk-a", "pk-missing"}}
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, p)

		By("naming a Site that does not exist: Stalled until it does")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/SiteNotFound"))
		Expect(packageCondition(ctx, p, siteopsv1.ConditionStalled)(Default)).To(Equal("True/SiteNotFound"))
		createSite(ctx, "pk-missing")

		By("with no package server running for the sites")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/NoPackageServer"))
		Expect(packageCondition(ctx, p, siteopsv1.ConditionReconciling)(Default)).To(Equal("True/NoPackageServer"))

		By("once a server of both sites runs: waiting for its copy")
		// Its task service too: until a site has a ready task service its
		// agents are served, and their content held, by the unassigned
		// servers (the serving rules).
		createSiteServer(ctx, "pk-srv", []string{"pk-a", "pk-missing"}, "pk", "pk-class")
		markStatefulSetAvailable(ctx, "pk-srv-package")
		markDeploymentAvailable(ctx, "pk-srv-task")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/Replicating"))

		By("the server transferring, then failing, then holding the content")
		reportCopy(ctx, p, "pk-srv", siteopsv1.ContentReplicating, 1<<20, "")
		Eventually(func(g Gomega) string {
			var now siteopsv1.Package
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
			return now.Status.SitesReady + " " + string(now.Status.Policy) + " " + fmt.Sprint(now.Status.Sites)
		}, timeout, interval).Should(Equal("0/2 Sites [{pk-a Replicating 1048576 0 of 1 servers hold the content} {pk-missing Replicating 1048576 0 of 1 servers hold the content}]"))
		reportCopy(ctx, p, "pk-srv", siteopsv1.ContentFailed, 0, "digest mismatch")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/ReplicationFailed"))
		Expect(packageCondition(ctx, p, siteopsv1.ConditionStalled)(Default)).To(Equal("True/ReplicationFailed"))
		reportCopy(ctx, p, "pk-srv", siteopsv1.ContentReady, p.Spec.Size, "")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/Replicated"))
		Expect(packageCondition(ctx, p, siteopsv1.ConditionReconciling)(Default)).To(BeEmpty())
		Expect(packageCondition(ctx, p, siteopsv1.ConditionStalled)(Default)).To(BeEmpty())
		var now siteopsv1.Package
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
		Expect(now.Status.SitesReady).To(Equal("2/2"))
		Expect(now.Status.Servers).To(HaveLen(1), "the controller keeps the package services' entries")

		By("recording the transitions as Events")
		Eventually(func(g Gomega) []string {
			var list eventsv1.EventList
			g.Expect(k8sClient.List(ctx, &list, client.InNamespace(packageNamespace))).To(Succeed())
			var reasons []string
			for _, e := range list.Items {
				if e.Regarding.Name == p.Name {
					reasons = append(reasons, e.Reason)
				}
			}
			return reasons
		}, timeout, interval).Should(ContainElements("SiteNotFound", "NoPackageServer", "ReplicationFailed", "Replicated"))
	})

	It("goes OnDemand where a task needs it, holds the task's sites until it is there, and is let go once the task ends", func() {
		ensureNamespace(ctx, taskNamespace)
		createSite(ctx, "pk-od-a")
		createSite(ctx, "pk-od-b")
		createNode(ctx, "pk-od-node", map[string]string{"test.siteops.io/role": "pk-od"})
		createStorageClass(ctx, "pk-od-class")
		createSiteServer(ctx, "pk-od-srv", []string{"pk-od-a", "pk-od-b"}, "pk-od", "pk-od-class")
		markStatefulSetAvailable(ctx, "pk-od-srv-package")
		markDeploymentAvailable(ctx, "pk-od-srv-task")
		p := diskImage("pk-od-sw", func(p *siteopsv1.Package) {
			p.Namespace, p.Spec.Type = taskNamespace, siteopsv1.PackageSoftware
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, p)
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/NotNeeded"))

		By("a task installing it at site pk-od-a: wanted there, the task waits for it")
		createTarget(ctx, "pk-od-pc", "pk-od-a", map[string]string{"dt-spec": "pk-od"})
		task := createTask(ctx, scriptTask("pk-od-install", "pk-od", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{InstallSoftware: &siteopsv1.PackageAction{Package: p.Name}}
		}))
		Eventually(taskPhase(ctx, task), timeout, interval).Should(Equal(siteopsv1.TaskWaitingForContent))
		Expect(taskCondition(ctx, task, siteopsv1.ConditionContentReady)(Default)).To(Equal("False/WaitingForContent"))
		Expect(taskStatus(ctx, task)(Default).StartTime).To(BeNil(), "no work may be handed out yet")
		wantedSites := func(g Gomega) string {
			var now siteopsv1.Package
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
			var out []string
			for _, s := range now.Status.Sites {
				out = append(out, s.Site+"="+s.State)
			}
			return now.Status.SitesReady + " " + strings.Join(out, ",")
		}
		Eventually(wantedSites, timeout, interval).Should(Equal("0/1 pk-od-a=Pending"))

		By("the content at the site: the task runs there")
		reportCopy(ctx, p, "pk-od-srv", siteopsv1.ContentReady, p.Spec.Size, "")
		Eventually(wantedSites, timeout, interval).Should(Equal("1/1 pk-od-a=Ready"))
		Eventually(taskPhase(ctx, task), timeout, interval).Should(Equal(siteopsv1.TaskRunning))
		st := taskStatus(ctx, task)(Default)
		Expect(st.StartTime).NotTo(BeNil())
		Expect(st.Sites).To(HaveLen(1))
		Expect(st.Sites[0].ContentReady).To(BeTrue())
		Expect(taskCondition(ctx, task, siteopsv1.ConditionContentReady)(Default)).To(Equal("True/ContentReady"))

		By("the task stopped with nothing running: no site wants the content any more")
		Expect(tryUpdate(ctx, task, func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true })).To(Succeed())
		Eventually(taskPhase(ctx, task), timeout, interval).Should(Equal(siteopsv1.TaskStopped))
		Eventually(wantedSites, timeout, interval).Should(Equal("0/0 "))
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/NotNeeded"))
	})

	It("is Ready with NotNeeded when it is OnDemand and no task needs it", func() {
		p := diskImage("pk-ondemand", func(p *siteopsv1.Package) {
			p.Spec.Type = siteopsv1.PackageSoftware
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, p)
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/NotNeeded"))
		var now siteopsv1.Package
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(p), &now)).To(Succeed())
		Expect(now.Status.Policy).To(Equal(siteopsv1.ReplicateOnDemand))
		Expect(now.Status.SitesReady).To(Equal("0/0"))
	})
})
