package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/manifests"
)

const (
	timeout  = 30 * time.Second
	interval = 100 * time.Millisecond
)

// subnetState is what a user reads from `kubectl get subnet -o yaml`.
type subnetState struct {
	EffectiveSite string
	InheritedFrom string
	Ready         metav1.ConditionStatus
	Reason        string
}

func getSubnetState(ctx context.Context, name string) func(Gomega) subnetState {
	return func(g Gomega) subnetState {
		var sn siteopsv1.Subnet
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &sn)).To(Succeed())
		g.Expect(sn.Status.ObservedGeneration).To(Equal(sn.Generation), "status of %s not observed yet", name)
		ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil(), "Subnet %s has no Ready condition yet", name)
		return subnetState{sn.Status.EffectiveSite, sn.Status.InheritedFrom, ready.Status, ready.Reason}
	}
}

func readyMessage(ctx context.Context, name string) func(Gomega) string {
	return func(g Gomega) string {
		var sn siteopsv1.Subnet
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &sn)).To(Succeed())
		ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		return ready.Message
	}
}

func siteSubnets(ctx context.Context, name string) func(Gomega) int32 {
	return func(g Gomega) int32 {
		var site siteopsv1.Site
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &site)).To(Succeed())
		g.Expect(site.Status.ObservedGeneration).To(Equal(site.Generation))
		return site.Status.Subnets
	}
}

func effective(site, inheritedFrom string) subnetState {
	return subnetState{site, inheritedFrom, metav1.ConditionTrue, siteopsv1.ReasonEffective}
}

func notEffective(reason string) subnetState {
	return subnetState{Ready: metav1.ConditionFalse, Reason: reason}
}

func createSite(ctx context.Context, name string) *siteopsv1.Site {
	site := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: name}}
	ExpectWithOffset(1, k8sClient.Create(ctx, site)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, site)
	return site
}

func createSubnet(ctx context.Context, name, cidr, site string, source siteopsv1.SubnetSource) *siteopsv1.Subnet {
	sn := &siteopsv1.Subnet{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       siteopsv1.SubnetSpec{CIDR: cidr, Site: site, Source: source},
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, sn)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, sn)
	return sn
}

func deleteIgnoringNotFound(ctx context.Context, obj client.Object) error {
	if err := k8sClient.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// The specs below use addresses outside the sample organisation's ranges
// (10.0.0.0/8, fd00:a10::/32) so that they do not change its statuses.
var _ = Describe("Topology", func() {
	ctx := context.Background()

	It("brings the sample organisation to the expected statuses", func() {
		objs, err := manifests.ReadDir("../config/samples")
		Expect(err).NotTo(HaveOccurred())
		Expect(manifests.CreateAll(ctx, k8sClient, objs)).To(Succeed())

		want := map[string]subnetState{
			"corp-10-0-0-0-8":          effective("paris-hq", ""),
			"lyon-10-20-0-0-16":        effective("lyon", ""),
			"lyon-floor2-10-20-2-0-24": effective("lyon", "lyon-10-20-0-0-16"),
			"lyon-lab-10-20-2-128-25":  effective("lyon", "lyon-10-20-0-0-16"),
			"manual-10-30-0-0-16":      notEffective(siteopsv1.ReasonOverriddenByImport),
			"ad-10-30-0-0-16":          effective("nantes-warehouse", ""),
			"corp-v6-fd00-a10-32":      effective("paris-hq", ""),
			"lyon-v6-fd00-a10-20-48":   effective("lyon", ""),
		}
		Expect(objs).To(HaveLen(len(want) + 3 + 4 + 1 + 1)) // subnets, sites, servers, a computer, a task
		for name, state := range want {
			Eventually(getSubnetState(ctx, name), timeout, interval).Should(Equal(state), name)
		}
		Expect(readyMessage(ctx, "manual-10-30-0-0-16")(Default)).To(ContainSubstring(`"ad-10-30-0-0-16"`))

		for site, count := range map[string]int32{"paris-hq": 2, "lyon": 4, "nantes-warehouse": 1} {
			Eventually(siteSubnets(ctx, site), timeout, interval).Should(Equal(count), site)
			Eventually(func(g Gomega) []string { return siteStatus(ctx, site)(g).SiteServers }, timeout, interval).
				Should(Equal([]string{site + "-srv"}))
			// This control plane has no nodes, so no task service runs.
			Eventually(siteReady(ctx, site), timeout, interval).Should(Equal("False/ServicesNotReady"), site)
		}
		for _, server := range []string{"paris-hq-srv", "lyon-srv", "nantes-warehouse-srv", "central"} {
			Eventually(condition(ctx, server, siteopsv1.ConditionPrerequisitesMet), timeout, interval).
				Should(Equal("False/NoMatchingNode"), server)
		}

		By("restarting the manager on the converged organisation: it reconciles everything and writes nothing")
		manager.stop()
		subnetsBefore, sitesBefore, serversBefore := reconcileTotal("subnet"), reconcileTotal("site"), reconcileTotal("siteserver")
		manager = startManager()
		Eventually(func() float64 { return reconcileTotal("subnet") - subnetsBefore }, timeout, interval).
			Should(BeNumerically(">=", len(want)))
		Eventually(func() float64 { return reconcileTotal("site") - sitesBefore }, timeout, interval).
			Should(BeNumerically(">=", 3))
		Eventually(func() float64 { return reconcileTotal("siteserver") - serversBefore }, timeout, interval).
			Should(BeNumerically(">=", 4))
		// Let any queued follow-up reconciles run before counting.
		Consistently(manager.writes.Load, 2*time.Second, interval).Should(BeZero(), func() string {
			return fmt.Sprintf("writes: %v", manager.writeList())
		})
	})

	It("makes a Subnet effective when its missing Site appears, and not when it goes", func() {
		createSubnet(ctx, "t1-172-16-0-0-16", "172.16.0.0/16", "t1-branch", "")
		Eventually(getSubnetState(ctx, "t1-172-16-0-0-16"), timeout, interval).
			Should(Equal(notEffective(siteopsv1.ReasonSiteNotFound)))
		Expect(readyMessage(ctx, "t1-172-16-0-0-16")(Default)).To(ContainSubstring(`"t1-branch"`))

		site := createSite(ctx, "t1-branch")
		Eventually(getSubnetState(ctx, "t1-172-16-0-0-16"), timeout, interval).
			Should(Equal(effective("t1-branch", "")))
		Eventually(siteSubnets(ctx, "t1-branch"), timeout, interval).Should(Equal(int32(1)))

		Expect(k8sClient.Delete(ctx, site)).To(Succeed())
		Eventually(getSubnetState(ctx, "t1-172-16-0-0-16"), timeout, interval).
			Should(Equal(notEffective(siteopsv1.ReasonSiteNotFound)))
	})

	It("reports the younger of two Manual duplicates and promotes it when the winner goes", func() {
		createSite(ctx, "t2-a")
		createSite(ctx, "t2-b")
		older := createSubnet(ctx, "t2-older", "172.17.0.0/16", "t2-a", "")
		// creationTimestamp has a one-second resolution.
		time.Sleep(1100 * time.Millisecond)
		createSubnet(ctx, "t2-younger", "172.17.0.0/16", "t2-b", "")

		Eventually(getSubnetState(ctx, "t2-older"), timeout, interval).Should(Equal(effective("t2-a", "")))
		Eventually(getSubnetState(ctx, "t2-younger"), timeout, interval).
			Should(Equal(notEffective(siteopsv1.ReasonDuplicate)))
		Expect(readyMessage(ctx, "t2-younger")(Default)).To(ContainSubstring(`"t2-older"`))
		Eventually(siteSubnets(ctx, "t2-b"), timeout, interval).Should(Equal(int32(0)))

		Expect(k8sClient.Delete(ctx, older)).To(Succeed())
		Eventually(getSubnetState(ctx, "t2-younger"), timeout, interval).Should(Equal(effective("t2-b", "")))
		Eventually(siteSubnets(ctx, "t2-b"), timeout, interval).Should(Equal(int32(1)))
		Eventually(siteSubnets(ctx, "t2-a"), timeout, interval).Should(Equal(int32(0)))
	})

	It("lets an imported Subnet override a Manual one until it is deleted", func() {
		createSite(ctx, "t3-manual")
		createSite(ctx, "t3-imported")
		createSubnet(ctx, "t3-manual", "2001:db8:3::/48", "t3-manual", siteopsv1.SourceManual)
		Eventually(getSubnetState(ctx, "t3-manual"), timeout, interval).Should(Equal(effective("t3-manual", "")))

		imported := createSubnet(ctx, "t3-imported", "2001:db8:3::/48", "t3-imported", siteopsv1.SourceActiveDirectory)
		Eventually(getSubnetState(ctx, "t3-manual"), timeout, interval).
			Should(Equal(notEffective(siteopsv1.ReasonOverriddenByImport)))
		Eventually(getSubnetState(ctx, "t3-imported"), timeout, interval).Should(Equal(effective("t3-imported", "")))
		Expect(readyMessage(ctx, "t3-manual")(Default)).To(ContainSubstring(`"t3-imported"`))

		Expect(k8sClient.Delete(ctx, imported)).To(Succeed())
		Eventually(getSubnetState(ctx, "t3-manual"), timeout, interval).Should(Equal(effective("t3-manual", "")))
	})

	It("passes a site down nested Subnets and follows changes to the enclosing ones", func() {
		createSite(ctx, "t4-campus")
		createSite(ctx, "t4-annex")
		top := createSubnet(ctx, "t4-top", "172.20.0.0/14", "t4-campus", "")
		createSubnet(ctx, "t4-mid", "172.21.0.0/16", "", "")
		createSubnet(ctx, "t4-leaf", "172.21.7.0/24", "", "")

		Eventually(getSubnetState(ctx, "t4-mid"), timeout, interval).Should(Equal(effective("t4-campus", "t4-top")))
		Eventually(getSubnetState(ctx, "t4-leaf"), timeout, interval).Should(Equal(effective("t4-campus", "t4-top")))
		Eventually(siteSubnets(ctx, "t4-campus"), timeout, interval).Should(Equal(int32(3)))

		By("moving the top subnet to another site")
		updateObject(ctx, top, func(top *siteopsv1.Subnet) { top.Spec.Site = "t4-annex" })
		Eventually(getSubnetState(ctx, "t4-leaf"), timeout, interval).Should(Equal(effective("t4-annex", "t4-top")))
		Eventually(siteSubnets(ctx, "t4-annex"), timeout, interval).Should(Equal(int32(3)))
		Eventually(siteSubnets(ctx, "t4-campus"), timeout, interval).Should(Equal(int32(0)))

		By("giving the middle subnet a site of its own")
		mid := &siteopsv1.Subnet{}
		mid.Name = "t4-mid"
		updateObject(ctx, mid, func(mid *siteopsv1.Subnet) { mid.Spec.Site = "t4-campus" })
		Eventually(getSubnetState(ctx, "t4-leaf"), timeout, interval).Should(Equal(effective("t4-campus", "t4-mid")))
		Eventually(siteSubnets(ctx, "t4-campus"), timeout, interval).Should(Equal(int32(2)))

		By("deleting both sited subnets: the leaf has no site left")
		Expect(k8sClient.Delete(ctx, top)).To(Succeed())
		Expect(k8sClient.Delete(ctx, mid)).To(Succeed())
		Eventually(getSubnetState(ctx, "t4-leaf"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonNoSite)))
		Eventually(siteSubnets(ctx, "t4-campus"), timeout, interval).Should(Equal(int32(0)))
	})
})
