//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/simcluster"
)

// Agents check in: real agent processes locate their servers through the
// manager's locator, register with a bootstrap token at the task services
// (real processes behind the pods), and show up as Ready Computers of the
// right site; they fail over when their task-service pod goes and follow
// their address to another site.
var _ = Describe("Agents", Ordered, func() {
	const (
		siteA, siteB       = "agt-a", "agt-b"
		srvA, srvB         = "agt-a-srv", "agt-b-srv"
		srvCentral         = "agt-central"
		computersNamespace = "agents"
		tokenID            = "e2eagt"
		tokenSecret        = "e2eagt0123456789"
	)
	var (
		caFile                   string
		inA, inB, nowhere, mover *agentProc
	)

	startAgent := func(name, address string) *agentProc {
		GinkgoHelper()
		return startAgent(name, address, caFile, tokenID+"."+tokenSecret)
	}
	// status is what `agent status --json` prints.
	status := func(g Gomega, a *agentProc) map[string]any {
		out, err := exec.Command(agentBin, "status", "--json", "--state-dir", a.stateDir).Output()
		g.Expect(err).NotTo(HaveOccurred())
		var st map[string]any
		g.Expect(json.Unmarshal(out, &st)).To(Succeed())
		return st
	}
	computer := func(ctx context.Context, g Gomega, name string) *siteopsv1.Computer {
		c := &siteopsv1.Computer{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: computersNamespace, Name: name}, c)).To(Succeed())
		return c
	}
	expectComputer := func(ctx context.Context, name, site, server string) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			c := computer(ctx, g, name)
			g.Expect(c.Status.Site).To(Equal(site), "site of %s", name)
			g.Expect(c.Status.SiteServer).To(Equal(server), "server of %s", name)
			g.Expect(condition(c.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAgentOnline))
		}).WithContext(ctx).Should(Succeed(), func() string { return diagnostics(ctx) })
	}

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no task service runs for agents to reach")
		}
		for _, site := range []string{siteA, siteB} {
			createSite(ctx, site)
		}
		for name, cidr := range map[string]string{siteA: "10.41.0.0/16", siteB: "10.42.0.0/16"} {
			sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name + "-net"}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: name}}
			Expect(k8s.Create(ctx, sn)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, sn))).To(Succeed()) })
		}
		a := siteServer(srvA, []string{siteA}, siteServerSelector(), storageClass)
		a.Spec.Services.Task.Replicas = new(int32)
		*a.Spec.Services.Task.Replicas = 2
		for _, ss := range []*siteopsv1.SiteServer{a,
			siteServer(srvB, []string{siteB}, siteServerSelector(), storageClass),
			siteServer(srvCentral, nil, siteServerSelector(), storageClass),
		} {
			ss.Spec.Services.Package.Enabled = new(bool)
			Expect(k8s.Create(ctx, ss)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		}
		DeferCleanup(func(ctx SpecContext) {
			for _, site := range []string{siteA, siteB} {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}))).To(Succeed())
			}
		})
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: computersNamespace}})).To(Succeed())
		Expect(simcluster.CreateBootstrapToken(ctx, k8s, tokenID, tokenSecret, computersNamespace)).To(Succeed())

		By("writing the CA bundle the operator publishes, the agents' only trust")
		caFile = operatorCAFile(ctx)

		By("waiting until the servers advertise their task services")
		for name, endpoints := range map[string]int{srvA: 2, srvB: 1, srvCentral: 1} {
			Eventually(func(g Gomega) {
				ss := getSiteServer(ctx, g, name)
				g.Expect(ss.Status.Task.Ready).To(BeTrue(), "%s task ready", name)
				g.Expect(ss.Status.Task.Advertised).To(HaveLen(endpoints), "%s advertises", name)
			}).WithContext(ctx).Should(Succeed())
		}

		By("starting agents in both sites, in no site, and one that will move")
		// Started here, they run through every spec of the container.
		inA = startAgent("agent-a", "10.41.0.10")
		inB = startAgent("agent-b", "10.42.0.10")
		nowhere = startAgent("agent-nowhere", "198.51.100.10")
		mover = startAgent("agent-mover", "10.41.0.20")
	})

	It("locates, registers and shows agents as Ready Computers of their site", func(ctx SpecContext) {
		expectComputer(ctx, "agent-a", siteA, srvA)
		expectComputer(ctx, "agent-b", siteB, srvB)
		expectComputer(ctx, "agent-nowhere", "", srvCentral)
		expectComputer(ctx, "agent-mover", siteA, srvA)
		By("counting the Computers of each site")
		Eventually(func(g Gomega) int32 { return getSite(ctx, g, siteA).Status.Computers }).WithContext(ctx).Should(Equal(int32(2)))
		Eventually(func(g Gomega) int32 { return getSite(ctx, g, siteB).Status.Computers }).WithContext(ctx).Should(Equal(int32(1)))

		By("showing in `agent status` the task server each agent is connected to")
		for _, tc := range []struct {
			a      *agentProc
			server string
		}{{inA, srvA}, {inB, srvB}, {nowhere, srvCentral}} {
			Eventually(func(g Gomega) {
				st := status(g, tc.a)
				g.Expect(st["siteServer"]).To(Equal(tc.server))
				g.Expect(getSiteServer(ctx, g, tc.server).Status.Task.Advertised).To(ContainElement(st["taskEndpoint"]))
				g.Expect(st["computer"]).To(Equal(tc.a.name))
			}).WithContext(ctx).Should(Succeed())
		}
		out, err := exec.Command(agentBin, "status", "--state-dir", inA.stateDir).CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(And(ContainSubstring(srvA), ContainSubstring(siteA), ContainSubstring("agent-a")))
	})

	It("fails over when its task service dies, and checks in again", func(ctx SpecContext) {
		var endpoint string
		Eventually(func(g Gomega) {
			endpoint, _ = status(g, inA)["taskEndpoint"].(string)
			g.Expect(endpoint).NotTo(BeEmpty())
		}).WithContext(ctx).Should(Succeed())
		u, err := url.Parse(endpoint)
		Expect(err).NotTo(HaveOccurred())
		var victim corev1.Pod
		Eventually(func(g Gomega) {
			for _, p := range pods(ctx, g, srvA, taskComponent) {
				if p.Status.PodIP == u.Hostname() {
					victim = p
				}
			}
			g.Expect(victim.Name).NotTo(BeEmpty(), "the pod at %s", endpoint)
		}).WithContext(ctx).Should(Succeed())
		// Killing the process, as a crash would: the pod runner restarts it
		// on the same address after a back-off, so the agent must fail over
		// to the other pod in the meantime (a deleted pod's replacement may
		// come back on the same address before the agent even notices).
		pid := containerPid(victim)
		By(fmt.Sprintf("killing the task service of pod %s (pid %d), which agent-a checks in with at %s", victim.Name, pid, endpoint))
		Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
		start := time.Now()
		Eventually(func(g Gomega) {
			st := status(g, inA)
			g.Expect(st["taskEndpoint"]).NotTo(Equal(endpoint))
			g.Expect(st["siteServer"]).To(Equal(srvA))
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
		fmt.Fprintf(GinkgoWriter, "agent-a failed over %s after the pod's deletion\n", time.Since(start).Round(100*time.Millisecond))
		By("checking in with the other server: its Computer stays Ready and its lastSeen moves on")
		Eventually(func(g Gomega) {
			c := computer(ctx, g, "agent-a")
			g.Expect(c.Status.LastSeen).NotTo(BeNil())
			g.Expect(c.Status.LastSeen.Time).To(BeTemporally(">", start))
		}).WithContext(ctx).Should(Succeed())
		Expect(condition(computer(ctx, Default, "agent-a").Status.Conditions, siteopsv1.ConditionReady)).
			To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAgentOnline))
	})

	It("follows an agent whose address moves to another site", func(ctx SpecContext) {
		Expect(os.WriteFile(mover.addressesFile, []byte("10.42.0.20\n"), 0o644)).To(Succeed())
		expectComputer(ctx, "agent-mover", siteB, srvB)
		Eventually(func(g Gomega) string { s, _ := status(g, mover)["site"].(string); return s }).WithContext(ctx).Should(Equal(siteB))
		Eventually(func(g Gomega) int32 { return getSite(ctx, g, siteA).Status.Computers }).WithContext(ctx).Should(Equal(int32(1)))
	})

	It("refuses an agent whose Computer's credential is revoked until it registers again", func(ctx SpecContext) {
		c := computer(ctx, Default, "agent-b")
		issued := c.Status.Credential.IssuedAt.Time
		patch := client.MergeFrom(c.DeepCopy())
		c.Spec.CredentialsNotBefore = &metav1.Time{Time: issued.Add(time.Second)}
		Expect(k8s.Patch(ctx, c, patch)).To(Succeed())
		By("the agent, refused, registers again with its bootstrap token: a new credential for the same Computer")
		Eventually(func(g Gomega) {
			c := computer(ctx, g, "agent-b")
			g.Expect(c.Status.Credential.IssuedAt.Time).To(BeTemporally(">", issued))
		}).WithContext(ctx).Should(Succeed())
		expectComputer(ctx, "agent-b", siteB, srvB)
		var list siteopsv1.ComputerList
		Expect(k8s.List(ctx, &list, client.InNamespace(computersNamespace))).To(Succeed())
		Expect(list.Items).To(HaveLen(4), "no second Computer for a computer that registers again")
	})
})
