package controllers_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

var _ = Describe("SiteServer Events", func() {
	ctx := context.Background()

	It("records unmet prerequisites, the services becoming ready and running degraded, once per change", func() {
		node := createNode(ctx, "ev-ss-node", map[string]string{"test.siteops.io/role": "ev-ss"})
		class := createStorageClass(ctx, "ev-ss-class")
		ss := createSiteServer(ctx, "ev-ss-srv", []string{"ev-ss-site"}, "ev-ss", "ev-ss-class")
		Eventually(condition(ctx, "ev-ss-srv", siteopsv1.ConditionReady), timeout, interval).
			Should(Equal("False/" + siteopsv1.ReasonSiteNotFound))
		Eventually(eventReasons(ctx, ss), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonSiteNotFound}))
		Expect(eventNotes(ctx, ss)(Default)).To(ConsistOf(ContainSubstring(`Site "ev-ss-site" does not exist`)))

		By("the Site appearing: the services roll out and become available")
		createSite(ctx, "ev-ss-site")
		markDeploymentAvailable(ctx, "ev-ss-srv-task")
		markStatefulSetAvailable(ctx, "ev-ss-srv-package")
		Eventually(condition(ctx, "ev-ss-srv", siteopsv1.ConditionReady), timeout, interval).
			Should(Equal("True/" + siteopsv1.ReasonServicesReady))
		Eventually(eventReasons(ctx, ss), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonSiteNotFound,
			"Normal/" + siteopsv1.ReasonProgressing, "Normal/" + siteopsv1.ReasonServicesReady}))

		By("reconciles that change nothing record nothing")
		recorded := eventOccurrences(ctx, ss)(Default)
		before := reconcileTotal("siteserver")
		updateObject(ctx, node, func(n *corev1.Node) { n.Labels["test.siteops.io/poke"] = "1" })
		Eventually(func() float64 { return reconcileTotal("siteserver") - before }, timeout, interval).
			Should(BeNumerically(">=", 1))
		Consistently(eventOccurrences(ctx, ss), 2*time.Second, interval).Should(Equal(recorded))

		By("its StorageClass deleted: the services keep running, degraded, and a Warning says so")
		Expect(k8sClient.Delete(ctx, class)).To(Succeed())
		Eventually(condition(ctx, "ev-ss-srv", siteopsv1.ConditionReady), timeout, interval).
			Should(Equal("False/" + siteopsv1.ReasonDegraded))
		Eventually(eventReasons(ctx, ss), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonSiteNotFound,
			"Normal/" + siteopsv1.ReasonProgressing, "Normal/" + siteopsv1.ReasonServicesReady,
			"Warning/" + siteopsv1.ReasonDegraded}))
	})
})
