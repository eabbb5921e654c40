package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/api/meta"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// subnetCondition is "Status/Reason" of one of a Subnet's conditions, ""
// when it has none.
func subnetCondition(ctx context.Context, name, condType string) string {
	var sn siteopsv1.Subnet
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: name}, &sn)).To(Succeed())
	c := meta.FindStatusCondition(sn.Status.Conditions, condType)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s", c.Status, c.Reason)
}

// The addresses are outside the sample organisation's and the other specs'.
var _ = Describe("Subnet status", func() {
	ctx := context.Background()

	It("reads Current when effective, Failed when a user must act, InProgress in the states the rules ask for", func() {
		createSite(ctx, "sk-a")
		createSite(ctx, "sk-b")
		effectiveOne := createSubnet(ctx, "sk-eff", "172.30.0.0/16", "sk-a", "")
		missing := createSubnet(ctx, "sk-missing", "172.31.0.0/16", "sk-nowhere", "")
		orphan := createSubnet(ctx, "sk-orphan", "172.27.0.0/16", "", "")
		// creationTimestamp has a one-second resolution.
		time.Sleep(1100 * time.Millisecond)
		duplicate := createSubnet(ctx, "sk-dup", "172.30.0.0/16", "sk-b", "")

		Eventually(getSubnetState(ctx, "sk-eff"), timeout, interval).Should(Equal(effective("sk-a", "")))
		Expect(kstatusOf(ctx, effectiveOne)(Default)).To(Equal(kstatus.CurrentStatus), kstatusMessage(ctx, effectiveOne))

		for _, sn := range []*siteopsv1.Subnet{missing, duplicate} {
			Eventually(kstatusOf(ctx, sn), timeout, interval).Should(Equal(kstatus.FailedStatus), kstatusMessage(ctx, sn))
		}
		Expect(subnetCondition(ctx, "sk-missing", siteopsv1.ConditionStalled)).To(Equal("True/" + siteopsv1.ReasonSiteNotFound))
		Expect(kstatusMessage(ctx, missing)).To(ContainSubstring(`site "sk-nowhere" does not exist`))
		Expect(subnetCondition(ctx, "sk-dup", siteopsv1.ConditionStalled)).To(Equal("True/" + siteopsv1.ReasonDuplicate))
		Expect(kstatusMessage(ctx, duplicate)).To(ContainSubstring(`duplicate of subnet "sk-eff"`))

		// NoSite is what the rules ask for: neither Reconciling nor Stalled.
		// kstatus reads its Ready=False as InProgress.
		Eventually(getSubnetState(ctx, "sk-orphan"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonNoSite)))
		Expect(subnetCondition(ctx, "sk-orphan", siteopsv1.ConditionStalled)).To(BeEmpty())
		Expect(subnetCondition(ctx, "sk-orphan", siteopsv1.ConditionReconciling)).To(BeEmpty())
		Expect(kstatusOf(ctx, orphan)(Default)).To(Equal(kstatus.InProgressStatus), kstatusMessage(ctx, orphan))

		By("creating the missing Site: no longer Stalled, Current")
		createSite(ctx, "sk-nowhere")
		Eventually(kstatusOf(ctx, missing), timeout, interval).Should(Equal(kstatus.CurrentStatus))
		Expect(subnetCondition(ctx, "sk-missing", siteopsv1.ConditionStalled)).To(BeEmpty())
		Expect(getSubnetState(ctx, "sk-missing")(Default)).To(Equal(effective("sk-nowhere", "")))
	})

	It("reads a new Site and Subnet as InProgress until a controller has seen them", func() {
		manager.stop()
		restarted := false
		DeferCleanup(func() {
			if !restarted {
				manager = startManager()
			}
		})
		site := createSite(ctx, "sk-new")
		subnet := createSubnet(ctx, "sk-new", "172.26.0.0/16", "sk-new", "")
		for _, obj := range []client.Object{site, subnet} {
			Expect(kstatusOf(ctx, obj)(Default)).To(Equal(kstatus.InProgressStatus), kstatusMessage(ctx, obj))
			Expect(kstatusMessage(ctx, obj)).To(ContainSubstring("generation is 1, but latest observed generation is 0"))
		}

		manager = startManager()
		restarted = true
		Eventually(kstatusOf(ctx, subnet), timeout, interval).Should(Equal(kstatus.CurrentStatus))
		Eventually(siteReady(ctx, "sk-new"), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNoSiteServer))
	})
})
