package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// siteCondition is "Status/Reason" of one of a Site's conditions, "" when
// it has none, whatever the generation observed.
func siteCondition(ctx context.Context, name, condType string) func(Gomega) string {
	return func(g Gomega) string {
		var site siteopsv1.Site
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &site)).To(Succeed())
		c := meta.FindStatusCondition(site.Status.Conditions, condType)
		if c == nil {
			return ""
		}
		return fmt.Sprintf("%s/%s", c.Status, c.Reason)
	}
}

// kstatusMessage is kstatus's verdict on obj with its message, for failure
// messages.
func kstatusMessage(ctx context.Context, obj client.Object) string {
	u := &unstructured.Unstructured{}
	gvk, err := k8sClient.GroupVersionKindFor(obj)
	Expect(err).NotTo(HaveOccurred())
	u.SetGroupVersionKind(gvk)
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), u)).To(Succeed())
	res, err := kstatus.Compute(u)
	Expect(err).NotTo(HaveOccurred())
	return fmt.Sprintf("%s: %s (%v)", res.Status, res.Message, u.Object["status"])
}

var _ = Describe("Site status", func() {
	ctx := context.Background()

	It("reads InProgress until a task service of its own is available, then Current", func() {
		site := createSite(ctx, "k1-site")
		Eventually(siteReady(ctx, "k1-site"), timeout, interval).Should(Equal("False/NoSiteServer"))
		// Converged: no server serves it, by design its agents go to the
		// unassigned ones. kstatus reads Ready=False as InProgress.
		Expect(siteCondition(ctx, "k1-site", siteopsv1.ConditionReconciling)(Default)).To(BeEmpty())
		Expect(siteCondition(ctx, "k1-site", siteopsv1.ConditionStalled)(Default)).To(BeEmpty())
		Expect(kstatusOf(ctx, site)(Default)).To(Equal(kstatus.InProgressStatus), kstatusMessage(ctx, site))

		createNode(ctx, "k1-node", map[string]string{"test.siteops.io/role": "k1"})
		createStorageClass(ctx, "k1-class")
		createSiteServer(ctx, "k1-srv", []string{"k1-site"}, "k1", "k1-class")
		Eventually(siteReady(ctx, "k1-site"), timeout, interval).Should(Equal("False/ServicesNotReady"))
		Expect(siteCondition(ctx, "k1-site", siteopsv1.ConditionReconciling)(Default)).To(Equal("True/ServicesNotReady"))
		Expect(kstatusMessage(ctx, site)).To(HavePrefix("InProgress: Waiting for a task service of SiteServer k1-srv"))

		markDeploymentAvailable(ctx, "k1-srv-task")
		Eventually(siteReady(ctx, "k1-site"), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonSiteReady))
		Expect(siteopsv1.ReasonSiteReady).NotTo(Equal(siteopsv1.ConditionTaskServiceReady),
			"a reason named after a condition type reads as that condition")
		Expect(siteCondition(ctx, "k1-site", siteopsv1.ConditionReconciling)(Default)).To(BeEmpty())
		Expect(siteCondition(ctx, "k1-site", siteopsv1.ConditionStalled)(Default)).To(BeEmpty())
		Expect(kstatusOf(ctx, site)(Default)).To(Equal(kstatus.CurrentStatus), kstatusMessage(ctx, site))
	})

	It("reports NotOwned and leaves alone a Service of another controller in the way of its own", func() {
		site := createSite(ctx, "k2-site")
		// Named like the site's task Service, controlled by something else.
		owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "k2-owner", Namespace: workloadNamespace}}
		Expect(k8sClient.Create(ctx, owner)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, owner)
		foreign := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "site-k2-site-task", Namespace: workloadNamespace,
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name,
					UID: owner.UID, Controller: ptr.To(true)}}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "other"},
				Ports: []corev1.ServicePort{{Name: "web", Port: 9999}}},
		}
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, foreign)
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), foreign)).To(Succeed())

		createSiteServer(ctx, "k2-srv", []string{"k2-site"}, "k2", "")
		Eventually(siteReady(ctx, "k2-site"), timeout, interval).Should(Equal("False/"+siteopsv1.ReasonNotOwned),
			func() string { return fmt.Sprintf("%+v", siteStatus(ctx, "k2-site")(Default)) })
		var got siteopsv1.Site
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(site), &got)).To(Succeed())
		ready := meta.FindStatusCondition(got.Status.Conditions, siteopsv1.ConditionReady)
		Expect(ready.Message).To(And(ContainSubstring("site-k2-site-task"), ContainSubstring("ConfigMap k2-owner"),
			ContainSubstring("Site k2-site")))
		Expect(siteCondition(ctx, "k2-site", siteopsv1.ConditionStalled)(Default)).To(Equal("True/" + siteopsv1.ReasonNotOwned))
		Expect(got.Status.TaskEndpoints).To(BeEmpty(), "the Service at that name is not the site's")
		Expect(got.Status.SiteServers).To(Equal([]string{"k2-srv"}), "what was observed is still reported")
		Expect(kstatusOf(ctx, site)(Default)).To(Equal(kstatus.FailedStatus), kstatusMessage(ctx, site))

		Consistently(func(g Gomega) {
			var now corev1.Service
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), &now)).To(Succeed())
			g.Expect(now.ResourceVersion).To(Equal(foreign.ResourceVersion), "the foreign Service was written")
		}, 2*time.Second, interval).Should(Succeed())
		var pkg corev1.Service
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: workloadNamespace, Name: "site-k2-site-package"}, &pkg)).
			NotTo(Succeed(), "the reconcile stops at the first object in the way")

		By("removing the foreign Service: the site's own is applied and the site is no longer Stalled")
		Expect(k8sClient.Delete(ctx, foreign)).To(Succeed())
		Eventually(siteReady(ctx, "k2-site"), timeout, interval).Should(Equal("False/ServicesNotReady"))
		Expect(siteCondition(ctx, "k2-site", siteopsv1.ConditionStalled)(Default)).To(BeEmpty())
		var own corev1.Service
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), &own)).To(Succeed())
		Expect(metav1.GetControllerOf(&own).Kind).To(Equal("Site"))
	})

	It("writes its status with more SiteServers than status.siteServers holds", func() {
		site := createSite(ctx, "k3-site")
		n := siteopsv1.MaxSiteServersListed + 4
		for i := range n {
			// No node has role k3: no workload is created for them.
			createSiteServer(ctx, fmt.Sprintf("k3-srv-%03d", i), []string{"k3-site"}, "k3", "")
		}

		Eventually(func(g Gomega) int32 { return siteStatus(ctx, "k3-site")(g).SiteServerCount }, timeout, interval).
			Should(Equal(int32(n)))
		status := siteStatus(ctx, "k3-site")(Default)
		Expect(status.SiteServers).To(HaveLen(siteopsv1.MaxSiteServersListed))
		Expect(status.SiteServers[0]).To(Equal("k3-srv-000"))
		Expect(status.SiteServers[siteopsv1.MaxSiteServersListed-1]).To(Equal(fmt.Sprintf("k3-srv-%03d", siteopsv1.MaxSiteServersListed-1)))
		Expect(siteReady(ctx, "k3-site")(Default)).To(Equal("False/ServicesNotReady"))
		Expect(meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReconciling).Message).To(
			HaveSuffix(fmt.Sprintf("and %d more to become available", n-10)))
		Expect(kstatusOf(ctx, site)(Default)).To(Equal(kstatus.InProgressStatus))
	})
})
