package controllers_test

import (
	"context"
	"net/netip"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/testing/managertest"
	"github.com/siteops/site-operator/internal/topology"
)

// replica is one manager replica with leader election on, as cmd/manager
// runs it with --leader-elect, and the write requests it sent.
type replica struct {
	*managertest.Manager
	writes *managertest.RequestCounter
}

func startReplica() *replica {
	writes := &managertest.RequestCounter{}
	m, err := managertest.Start(context.Background(), restCfg, scheme, managertest.Options{
		Controllers: options, Requests: writes,
		Configure: func(o *ctrl.Options) {
			o.LeaderElection = true
			o.LeaderElectionID = "resolver-feed-test.siteops.io"
			o.LeaderElectionNamespace = workloadNamespace
			o.LeaderElectionReleaseOnCancel = true
			// Room for a busy machine: losing the lease by accident ends
			// the manager (it happened with 4 s). The hand-over stays quick
			// because the leader releases its lease when it stops.
			o.LeaseDuration = ptr.To(15 * time.Second)
			o.RenewDeadline = ptr.To(10 * time.Second)
			o.RetryPeriod = ptr.To(250 * time.Millisecond)
		},
	})
	Expect(err).NotTo(HaveOccurred())
	return &replica{Manager: m, writes: writes}
}

// stop stops the replica, releasing the lease if it holds it.
func (r *replica) stop() {
	// A leader that releases its lease on cancel may report it as lost.
	if err := r.Stop(); err != nil && err.Error() != "leader election lost" {
		Expect(err).NotTo(HaveOccurred())
	}
}

// statusWrites is how many status writes the replica sent for the Subnet.
func (r *replica) statusWrites(subnet string) int64 {
	return r.writes.Snapshot().Writes["PATCH /apis/siteops.io/v1alpha1/subnets/"+subnet+"/status"]
}

// answers is what a replica's resolver says about the spec's addresses and
// Subnets, for comparing replicas.
type answers struct {
	Lookups  map[string]topology.Match
	Statuses map[string]topology.Status
}

func answersOf(r *topology.Resolver, addrs, subnets []string) answers {
	a := answers{Lookups: map[string]topology.Match{}, Statuses: map[string]topology.Status{}}
	for _, addr := range addrs {
		if m, ok := r.Lookup(netip.MustParseAddr(addr)); ok {
			a.Lookups[addr] = m
		}
	}
	for _, name := range subnets {
		if st, ok := r.Status(name); ok {
			a.Statuses[name] = st
		}
	}
	return a
}

var _ = Describe("Resolver feed", func() {
	ctx := context.Background()

	It("fills the resolver of every replica, and only the leader writes each status once", func() {
		// The suite's manager runs without leader election: stop it so that
		// the two replicas below are the only writers.
		manager.stop()
		DeferCleanup(func() { manager = startManager() })

		leader := startReplica()
		DeferCleanup(leader.stop)
		Eventually(leader.Elected(), timeout).Should(BeClosed())
		follower := startReplica()
		DeferCleanup(follower.stop)
		Consistently(follower.Elected(), time.Second).ShouldNot(BeClosed())

		createSite(ctx, "rf-branch")
		createSite(ctx, "rf-annex")
		// A Subnet fed before its Site would be SiteNotFound for a moment:
		// wait for the Sites so that every verdict below is final at once.
		for _, r := range []*replica{leader, follower} {
			Eventually(func() bool { return r.Resolver.HasSite("rf-branch") && r.Resolver.HasSite("rf-annex") },
				timeout, interval).Should(BeTrue())
		}
		top := createSubnet(ctx, "rf-top", "172.28.0.0/16", "rf-branch", "")
		createSubnet(ctx, "rf-leaf", "172.28.5.0/24", "", "")
		createSubnet(ctx, "rf-orphan", "172.29.0.0/16", "", "")
		subnets := []string{"rf-top", "rf-leaf", "rf-orphan"}
		addrs := []string{"172.28.5.9", "172.28.9.1", "172.29.0.1"}

		By("both resolvers answering the same, the follower's without a running Subnet controller")
		want := answers{
			Lookups: map[string]topology.Match{
				"172.28.5.9": {Subnet: "rf-leaf", Site: "rf-branch", Prefix: netip.MustParsePrefix("172.28.5.0/24")},
				"172.28.9.1": {Subnet: "rf-top", Site: "rf-branch", Prefix: netip.MustParsePrefix("172.28.0.0/16")},
			},
		}
		Eventually(func() map[string]topology.Match { return answersOf(follower.Resolver, addrs, subnets).Lookups },
			timeout, interval).Should(Equal(want.Lookups))
		Eventually(func(g Gomega) {
			got := answersOf(follower.Resolver, addrs, subnets)
			g.Expect(got.Statuses).To(HaveLen(len(subnets)))
			g.Expect(got).To(Equal(answersOf(leader.Resolver, addrs, subnets)))
		}, timeout, interval).Should(Succeed())

		By("the leader writing each status once, the follower none")
		Eventually(getSubnetState(ctx, "rf-top"), timeout, interval).Should(Equal(effective("rf-branch", "")))
		Eventually(getSubnetState(ctx, "rf-leaf"), timeout, interval).Should(Equal(effective("rf-branch", "rf-top")))
		Eventually(getSubnetState(ctx, "rf-orphan"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonNoSite)))
		Consistently(func(g Gomega) {
			for _, name := range subnets {
				g.Expect(leader.statusWrites(name)).To(Equal(int64(1)), name)
				g.Expect(follower.statusWrites(name)).To(BeZero(), name)
			}
		}, 2*time.Second, interval).Should(Succeed())

		By("moving the top subnet to another site: both resolvers follow, the leader writes the changed verdicts")
		updateObject(ctx, top, func(top *siteopsv1.Subnet) { top.Spec.Site = "rf-annex" })
		for _, r := range []*replica{leader, follower} {
			Eventually(func() string { m, _ := r.Resolver.Lookup(netip.MustParseAddr("172.28.5.9")); return m.Site },
				timeout, interval).Should(Equal("rf-annex"))
		}
		Eventually(getSubnetState(ctx, "rf-leaf"), timeout, interval).Should(Equal(effective("rf-annex", "rf-top")))
		Consistently(func(g Gomega) {
			g.Expect(leader.statusWrites("rf-top")).To(Equal(int64(2)))
			g.Expect(leader.statusWrites("rf-leaf")).To(Equal(int64(2)))
			g.Expect(leader.statusWrites("rf-orphan")).To(Equal(int64(1)), "its verdict did not change")
			for _, name := range subnets {
				g.Expect(follower.statusWrites(name)).To(BeZero(), name)
			}
		}, time.Second, interval).Should(Succeed())

		By("handing over: the follower leads, finds every status current, and writes the next change")
		leader.stop()
		Eventually(follower.Elected(), timeout).Should(BeClosed())
		Expect(k8sClient.Delete(ctx, top)).To(Succeed())
		Eventually(getSubnetState(ctx, "rf-leaf"), timeout, interval).Should(Equal(notEffective(siteopsv1.ReasonNoSite)))
		Consistently(func(g Gomega) {
			g.Expect(follower.statusWrites("rf-leaf")).To(Equal(int64(1)))
			g.Expect(follower.statusWrites("rf-orphan")).To(BeZero(), "its status was current")
		}, time.Second, interval).Should(Succeed())
		_, ok := follower.Resolver.Lookup(netip.MustParseAddr("172.28.5.9"))
		Expect(ok).To(BeFalse(), "172.28.5.9 is in no effective subnet any more")
	})
})
