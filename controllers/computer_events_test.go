package controllers_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

var _ = Describe("Computer Events", func() {
	ctx := context.Background()

	It("records an agent going offline and coming back, not its registration", func() {
		ensureNamespace(ctx, computerNamespace)
		c := createComputer(ctx, computerNamespace, "ev-pc")
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNotRegistered))
		writeComputerStatus(ctx, c, register(time.Now()))
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))
		Expect(eventReasons(ctx, c)(Default)).To(BeEmpty(), "agents registering are no news")

		By("no check-in for longer than the offline timeout")
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonAgentOffline))
		Eventually(eventReasons(ctx, c), timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonAgentOffline}))
		Expect(eventNotes(ctx, c)(Default)).To(ConsistOf(ContainSubstring("has not checked in since")))

		By("a check-in: back online")
		writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) { s.LastSeen = ptrTime(time.Now()) })
		Eventually(func(g Gomega) []string {
			reasons := eventReasons(ctx, c)(g)
			return reasons[:min(len(reasons), 2)]
		}, timeout, interval).Should(Equal([]string{"Warning/" + siteopsv1.ReasonAgentOffline, "Normal/" + siteopsv1.ReasonAgentOnline}))
	})
})
