package controllers_test

import (
	"context"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
)

// eventsAbout returns the events.k8s.io Events the manager recorded about
// obj (by UID, so a namesake of an earlier spec does not count), oldest
// first. Those about cluster-scoped objects are in the default namespace.
func eventsAbout(ctx context.Context, g Gomega, obj client.Object) []eventsv1.Event {
	namespace := obj.GetNamespace()
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	var list eventsv1.EventList
	g.Expect(k8sClient.List(ctx, &list, client.InNamespace(namespace))).To(Succeed())
	slices.SortStableFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
	var out []eventsv1.Event
	for _, e := range list.Items {
		if e.Regarding.UID == obj.GetUID() {
			g.Expect(e.ReportingController).To(Equal(controllers.EventReportingController))
			out = append(out, e)
		}
	}
	return out
}

// eventReasons are "Type/Reason" of the Events about obj, oldest first, one
// per Event object: a repeat of the same type and reason is counted in the
// first one's series (eventOccurrences).
func eventReasons(ctx context.Context, obj client.Object) func(Gomega) []string {
	return func(g Gomega) []string {
		var out []string
		for _, e := range eventsAbout(ctx, g, obj) {
			out = append(out, e.Type+"/"+e.Reason)
		}
		return out
	}
}

// eventNotes are the notes of the Events about obj, oldest first.
func eventNotes(ctx context.Context, obj client.Object) func(Gomega) []string {
	return func(g Gomega) []string {
		var out []string
		for _, e := range eventsAbout(ctx, g, obj) {
			out = append(out, e.Note)
		}
		return out
	}
}

// eventOccurrences is how many times Events about obj were recorded,
// repeats in a series included: it grows with every Eventf call, so a
// controller that recorded per reconcile would make it grow.
func eventOccurrences(ctx context.Context, obj client.Object) func(Gomega) int32 {
	return func(g Gomega) int32 {
		var n int32
		for _, e := range eventsAbout(ctx, g, obj) {
			if e.Series != nil {
				n += e.Series.Count
			} else {
				n++
			}
		}
		return n
	}
}

var _ = Describe("Site Events", func() {
	ctx := context.Background()

	It("records the Site becoming ready and losing its server, not its first wait", func() {
		site := createSite(ctx, "ev-site")
		Eventually(siteReady(ctx, "ev-site"), timeout, interval).Should(Equal("False/NoSiteServer"))
		Consistently(eventReasons(ctx, site), time.Second, interval).Should(BeEmpty(),
			"a new Site waiting for its first server is no news")

		By("a SiteServer serving it, rolling out and becoming available")
		createNode(ctx, "ev-site-node", map[string]string{"test.siteops.io/role": "ev-site"})
		createStorageClass(ctx, "ev-site-class")
		ss := createSiteServer(ctx, "ev-site-srv", []string{"ev-site"}, "ev-site", "ev-site-class")
		Eventually(siteReady(ctx, "ev-site"), timeout, interval).Should(Equal("False/ServicesNotReady"))
		markDeploymentAvailable(ctx, "ev-site-srv-task")
		Eventually(siteReady(ctx, "ev-site"), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonSiteReady))
		Eventually(eventReasons(ctx, site), timeout, interval).Should(Equal([]string{
			"Normal/" + siteopsv1.ReasonServicesNotReady, "Normal/" + siteopsv1.ReasonSiteReady}))
		Expect(eventNotes(ctx, site)(Default)[1]).To(ContainSubstring("ev-site-srv"))

		By("the SiteServer going away: a Warning, the site is no longer served by its own server")
		Expect(k8sClient.Delete(ctx, ss)).To(Succeed())
		Eventually(siteReady(ctx, "ev-site"), timeout, interval).Should(Equal("False/NoSiteServer"))
		Eventually(eventReasons(ctx, site), timeout, interval).Should(Equal([]string{
			"Normal/" + siteopsv1.ReasonServicesNotReady, "Normal/" + siteopsv1.ReasonSiteReady,
			"Warning/" + siteopsv1.ReasonNoSiteServer}))
	})
})

var _ = Describe("Subnet Events", func() {
	ctx := context.Background()

	It("records an override by an import, a deleted Site and a change of the inherited site, not first verdicts", func() {
		createSite(ctx, "ev-sn-a")
		createSite(ctx, "ev-sn-b")
		manual := createSubnet(ctx, "ev-sn-manual", "172.24.0.0/16", "ev-sn-a", "")
		child := createSubnet(ctx, "ev-sn-child", "172.24.5.0/24", "", "")
		Eventually(getSubnetState(ctx, "ev-sn-child"), timeout, interval).Should(Equal(effective("ev-sn-a", "ev-sn-manual")))
		Consistently(eventReasons(ctx, manual), time.Second, interval).Should(BeEmpty(), "a first Effective verdict is no news")

		By("an imported subnet with the same CIDR overriding the manual one")
		imported := createSubnet(ctx, "ev-sn-ad", "172.24.0.0/16", "ev-sn-b", siteopsv1.SourceActiveDirectory)
		Eventually(getSubnetState(ctx, "ev-sn-manual"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonOverriddenByImport)))
		Eventually(eventReasons(ctx, manual), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonOverriddenByImport}))
		Eventually(getSubnetState(ctx, "ev-sn-child"), timeout, interval).Should(Equal(effective("ev-sn-b", "ev-sn-ad")))
		Eventually(eventNotes(ctx, child), timeout, interval).Should(ConsistOf(ContainSubstring(`from "ev-sn-a" to "ev-sn-b"`)))
		Expect(eventReasons(ctx, child)(Default)).To(Equal([]string{"Normal/" + siteopsv1.ReasonEffective}))

		By("its Site deleted: a Warning, and Normal again once the Site is back")
		later := createSite(ctx, "ev-sn-later")
		moved := createSubnet(ctx, "ev-sn-moved", "172.25.0.0/16", "ev-sn-later", "")
		Eventually(getSubnetState(ctx, "ev-sn-moved"), timeout, interval).Should(Equal(effective("ev-sn-later", "")))
		Expect(k8sClient.Delete(ctx, later)).To(Succeed())
		Eventually(eventReasons(ctx, moved), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonSiteNotFound}))
		createSite(ctx, "ev-sn-later")
		Eventually(eventReasons(ctx, moved), timeout, interval).Should(Equal([]string{
			"Warning/" + siteopsv1.ReasonSiteNotFound, "Normal/" + siteopsv1.ReasonEffective}))

		By("the import going away: the manual subnet is effective again")
		Expect(k8sClient.Delete(ctx, imported)).To(Succeed())
		Eventually(eventReasons(ctx, manual), timeout, interval).Should(Equal([]string{
			"Warning/" + siteopsv1.ReasonOverriddenByImport, "Normal/" + siteopsv1.ReasonEffective}))
		Eventually(eventNotes(ctx, child), timeout, interval).Should(ContainElement(ContainSubstring(`from "ev-sn-b" to "ev-sn-a"`)))
		Expect(eventReasons(ctx, imported)(Default)).To(BeEmpty())
	})
})
