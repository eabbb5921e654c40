//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
)

// Agents find their servers: the locator answers by the serving rules from
// every manager replica, and an HTTPS client that trusts only the CA the
// operator publishes reaches exactly the server it names, at the URL the
// SiteServer advertises (its pod's own address, the site services running
// as processes). The answers follow the processes: a killed or hung task
// service leaves the advertised URLs, its site falls back to the
// unassigned servers while it has no ready one, and both come back.
var _ = Describe("Locating servers", Ordered, func() {
	const (
		siteA, siteB, siteDown = "loc-a", "loc-b", "loc-down"
		srvA, srvB, srvDown    = "loc-a-srv", "loc-b-srv", "loc-down-srv"
		srvCentral             = "loc-central"
		// Addresses of agents; only written in requests, never connected to.
		agentA, agentB, agentDown, agentNowhere = "10.31.7.9", "10.32.7.9", "10.33.7.9", "198.51.100.77"
	)
	var agent *http.Client

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no site service runs to be reached")
		}
		for _, site := range []string{siteA, siteB, siteDown} {
			createSite(ctx, site)
		}
		for name, cidr := range map[string]string{siteA: "10.31.0.0/16", siteB: "10.32.0.0/16", siteDown: "10.33.0.0/16"} {
			sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name + "-net"}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: name}}
			Expect(k8s.Create(ctx, sn)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, sn))).To(Succeed()) })
		}
		// Task services only: the package services' volumes are the other
		// specs'. loc-down-srv selects no node, so its site has no ready
		// server.
		for _, ss := range []*siteopsv1.SiteServer{
			siteServer(srvA, []string{siteA}, siteServerSelector(), storageClass),
			siteServer(srvB, []string{siteB}, siteServerSelector(), storageClass),
			siteServer(srvDown, []string{siteDown}, map[string]siteopsv1.LabelValue{"siteops.io/nowhere": "true"}, storageClass),
			siteServer(srvCentral, nil, siteServerSelector(), storageClass),
		} {
			ss.Spec.Services.Package.Enabled = new(bool)
			Expect(k8s.Create(ctx, ss)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		}
		DeferCleanup(func(ctx SpecContext) {
			for _, site := range []string{siteA, siteB, siteDown} {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}))).To(Succeed())
			}
		})

		By("trusting only the CA bundle the operator publishes")
		agent = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: operatorCAPool(ctx), MinVersion: tls.VersionTLS12}}}
		DeferCleanup(agent.CloseIdleConnections)

		By("waiting until the servers with a node advertise their task services")
		for _, name := range []string{srvA, srvB, srvCentral} {
			Eventually(func(g Gomega) {
				ss := getSiteServer(ctx, g, name)
				g.Expect(ss.Status.Task.Ready).To(BeTrue(), "%s task ready", name)
				g.Expect(ss.Status.Task.Advertised).NotTo(BeEmpty(), "%s advertises", name)
			}).WithContext(ctx).Should(Succeed())
		}
	})

	advertised := func(ctx context.Context, g Gomega, names ...string) []string {
		var urls []string
		for _, name := range names {
			urls = append(urls, getSiteServer(ctx, g, name).Status.Task.Advertised...)
		}
		slices.Sort(urls)
		return urls
	}
	sorted := func(urls []string) []string {
		out := slices.Clone(urls)
		slices.Sort(out)
		return out
	}
	// expectServedBy locates address at locator until the answer names
	// site (empty: none) by rule and lists exactly the task endpoints the
	// servers advertise; it returns the answer.
	expectServedBy := func(ctx context.Context, locator, address, site string, rule protocol.Rule, servers ...string) protocol.LocateResponse {
		GinkgoHelper()
		var answer protocol.LocateResponse
		Eventually(func(g Gomega) {
			answer = locate(ctx, g, agent, locator, address)
			g.Expect(answer.Site).To(Equal(site), "site of %s", address)
			g.Expect(answer.Rule).To(Equal(rule), "rule for %s", address)
			g.Expect(sorted(answer.TaskEndpoints)).To(Equal(advertised(ctx, g, servers...)), "task endpoints for %s", address)
		}).WithContext(ctx).Should(Succeed())
		return answer
	}
	// expectInfo checks that the task service at url answers /v1/info over
	// HTTPS, trusted through the published CA, as SiteServer server.
	expectInfo := func(ctx context.Context, url, server string) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/v1/info", nil)
			g.Expect(err).NotTo(HaveOccurred())
			resp, err := agent.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s/v1/info: %s", url, body)
			var info struct {
				Service    string `json:"service"`
				SiteServer string `json:"siteServer"`
			}
			g.Expect(json.Unmarshal(body, &info)).To(Succeed(), "%s", body)
			g.Expect(info.Service).To(Equal("task"))
			g.Expect(info.SiteServer).To(Equal(server))
		}).WithContext(ctx).Should(Succeed())
	}

	It("answers by the serving rules, and each answer leads to exactly that server over HTTPS", func(ctx SpecContext) {
		a := expectServedBy(ctx, locatorAddress, agentA, siteA, protocol.RuleSite, srvA)
		expectInfo(ctx, a.TaskEndpoints[0], srvA)
		b := expectServedBy(ctx, locatorAddress, agentB, siteB, protocol.RuleSite, srvB)
		expectInfo(ctx, b.TaskEndpoints[0], srvB)
		// The fallback is every unassigned server: loc-central, and any
		// other spec's that is still there.
		unassigned := unassignedServers(ctx)
		Expect(unassigned).To(ContainElement(srvCentral))
		down := expectServedBy(ctx, locatorAddress, agentDown, siteDown, protocol.RuleSiteNotReady, unassigned...)
		expectInfo(ctx, down.TaskEndpoints[0], ownerOf(ctx, down.TaskEndpoints[0]))
		Expect(down.RetryAfterSeconds).To(BeNumerically(">", 0), "a fallback for a site says when to locate again")
		nowhere := expectServedBy(ctx, locatorAddress, agentNowhere, "", protocol.RuleNoSite, unassigned...)
		expectInfo(ctx, nowhere.TaskEndpoints[0], ownerOf(ctx, nowhere.TaskEndpoints[0]))
		Expect(ownerOf(ctx, nowhere.TaskEndpoints[0])).To(BeElementOf(unassigned))
	})

	It("answers the same from a second manager replica that does not lead", func(ctx SpecContext) {
		second, address, err := startManager(ctx, "manager-2")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(second.Stop(10 * time.Second)).To(Succeed()) })
		Consistently(second.ExitError, 2*time.Second).Should(Succeed(), "the second replica runs")
		for _, addr := range []string{agentA, agentB, agentDown, agentNowhere} {
			Eventually(func(g Gomega) {
				g.Expect(locate(ctx, g, agent, address, addr)).To(Equal(locate(ctx, g, agent, locatorAddress, addr)), "answers for %s", addr)
			}).WithContext(ctx).Should(Succeed())
		}
		// The first replica leads (its log says so); the second does not.
		Expect(manager.LogTail(1<<20)).To(ContainSubstring("Successfully acquired lease"), "the first replica leads")
		Expect(second.LogTail(1<<20)).To(ContainSubstring("Attempting to acquire leader lease"), "the second replica competes")
		Expect(second.LogTail(1<<20)).NotTo(ContainSubstring("Successfully acquired lease"), "the second replica does not lead")
	})

	It("follows a killed task-service process: unadvertised, restarted, advertised again, located again", func(ctx SpecContext) {
		pod, url := advertisedTaskPod(ctx, srvA)
		// The pod is unready from the kill until the restarted process
		// passes its readiness probe: the 2 s back-off, then up to a probe
		// period (the first probe comes as the process starts, before it
		// listens). A watch sees every status the controller writes in
		// that time, however short.
		changes := watchSiteServer(ctx, srvA)
		Expect(syscall.Kill(containerPid(pod), syscall.SIGKILL)).To(Succeed())
		awaitSiteServer(ctx, changes, time.Minute, "status.task.advertised without "+url, func(ss *siteopsv1.SiteServer) bool {
			return !slices.Contains(ss.Status.Task.Advertised, url)
		})
		Eventually(func(g Gomega) {
			var now corev1.Pod
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &now)).To(Succeed())
			g.Expect(now.Status.ContainerStatuses).To(HaveLen(1))
			g.Expect(now.Status.ContainerStatuses[0].RestartCount).To(BeNumerically(">=", 1))
			g.Expect(now.Status.ContainerStatuses[0].Ready).To(BeTrue())
		}).WithContext(ctx).Should(Succeed())
		a := expectServedBy(ctx, locatorAddress, agentA, siteA, protocol.RuleSite, srvA)
		Expect(a.TaskEndpoints).To(Equal([]string{url}), "the same pod, at the same address")
		expectInfo(ctx, url, srvA)
	})

	It("falls back while a site's only server hangs, and returns to it once it answers again", func(ctx SpecContext) {
		pod, url := advertisedTaskPod(ctx, srvB)
		expectServedBy(ctx, locatorAddress, agentB, siteB, protocol.RuleSite, srvB)

		By("stopping the task-service process of " + srvB + ": it stays, but answers nothing")
		resume := stopProcess(containerPid(pod))
		// Its readiness probe fails after 3 periods of 10 s.
		Eventually(func(g Gomega) {
			var now corev1.Pod
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &now)).To(Succeed())
			g.Expect(now.Status.Conditions).To(ContainElement(And(
				HaveField("Type", corev1.PodReady), HaveField("Status", corev1.ConditionFalse))), "pod %s is not Ready", pod.Name)
			g.Expect(getSiteServer(ctx, g, srvB).Status.Task.Advertised).NotTo(ContainElement(url), "status.task.advertised")
		}).WithContext(ctx).Should(Succeed())
		unassigned := unassignedServers(ctx)
		Expect(unassigned).To(ContainElement(srvCentral))
		fallback := expectServedBy(ctx, locatorAddress, agentB, siteB, protocol.RuleSiteNotReady, unassigned...)
		Expect(fallback.RetryAfterSeconds).To(BeNumerically(">", 0), "a fallback for a site says when to locate again")
		expectInfo(ctx, fallback.TaskEndpoints[0], ownerOf(ctx, fallback.TaskEndpoints[0]))

		By("continuing the process")
		// The liveness probe has the readiness probe's settings, so it
		// usually fails in the same round and the pod runner has asked the
		// process to stop (SIGTERM, held until SIGCONT) to restart it.
		// Resumed or restarted, the server is the same pod at the same
		// address.
		resume()
		back := expectServedBy(ctx, locatorAddress, agentB, siteB, protocol.RuleSite, srvB)
		Expect(back.TaskEndpoints).To(Equal([]string{url}), "the same pod, at the same address")
		expectInfo(ctx, url, srvB)
	})

	It("lets every server serve every agent once no Site exists", func(ctx SpecContext) {
		var sites siteopsv1.SiteList
		Expect(k8s.List(ctx, &sites)).To(Succeed())
		for i := range sites.Items {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &sites.Items[i]))).To(Succeed())
		}
		// Every running SiteServer serves: those advertising anything.
		Eventually(func(g Gomega) {
			var all siteopsv1.SiteServerList
			g.Expect(k8s.List(ctx, &all)).To(Succeed())
			var running []string
			for _, ss := range all.Items {
				if len(ss.Status.Task.Advertised) > 0 {
					running = append(running, ss.Name)
				}
			}
			g.Expect(running).To(ContainElements(srvA, srvB, srvCentral))
			owner := map[string]string{}
			for _, ss := range all.Items {
				for _, url := range ss.Status.Task.Advertised {
					owner[url] = ss.Name
				}
			}
			// One answer lists at most the locator's cap of servers; over
			// many agents (rendezvous order spreads them) every running
			// server is named.
			served := map[string]bool{}
			for i := range 64 {
				answer := locate(ctx, g, agent, locatorAddress, fmt.Sprintf("10.31.8.%d", i+1))
				g.Expect(answer.Rule).To(Equal(protocol.RuleNoSites))
				g.Expect(answer.Site).To(BeEmpty())
				names := map[string]bool{}
				for _, url := range answer.TaskEndpoints {
					g.Expect(owner).To(HaveKey(url), "an answered endpoint no SiteServer advertises")
					names[owner[url]] = true
					served[owner[url]] = true
				}
				g.Expect(names).To(HaveLen(min(len(running), locatorMaxServers)))
			}
			g.Expect(slices.Sorted(maps.Keys(served))).To(ConsistOf(running))
		}).WithContext(ctx).Should(Succeed())
	})
})

// locatorMaxServers is the most servers one locate answer lists (the
// locator's default Options.MaxServers).
const locatorMaxServers = 8

// unassignedServers are the SiteServers that list no site.
func unassignedServers(ctx context.Context) []string {
	GinkgoHelper()
	var all siteopsv1.SiteServerList
	Expect(k8s.List(ctx, &all)).To(Succeed())
	var names []string
	for _, ss := range all.Items {
		if len(ss.Spec.Sites) == 0 {
			names = append(names, ss.Name)
		}
	}
	return names
}

// ownerOf is the SiteServer that advertises url for its task service.
func ownerOf(ctx context.Context, url string) string {
	GinkgoHelper()
	var all siteopsv1.SiteServerList
	Expect(k8s.List(ctx, &all)).To(Succeed())
	for _, ss := range all.Items {
		if slices.Contains(ss.Status.Task.Advertised, url) {
			return ss.Name
		}
	}
	Fail("no SiteServer advertises " + url)
	return ""
}

// advertisedTaskPod waits until SiteServer name has one task pod, on a
// site-server node, and advertises exactly its URL; it returns both.
func advertisedTaskPod(ctx context.Context, name string) (pod corev1.Pod, url string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		pod = expectPodsOn(ctx, g, name, taskComponent, 1, siteServerNodes)[0]
		urls := getSiteServer(ctx, g, name).Status.Task.Advertised
		g.Expect(urls).To(HaveExactElements(ContainSubstring("//"+pod.Status.PodIP+":")), "status.task.advertised of %s", name)
		url = urls[0]
	}).WithContext(ctx).Should(Succeed())
	return pod, url
}

// stopProcess stops process pid (SIGSTOP) and returns what continues it
// (SIGCONT). The spec's end continues it too, so that a failed spec leaves
// no stopped process behind. The signals go through a pidfd
// (os.FindProcess), never to another process that took the same id.
func stopProcess(pid int) (resume func()) {
	GinkgoHelper()
	proc, err := os.FindProcess(pid)
	Expect(err).NotTo(HaveOccurred())
	resume = func() {
		GinkgoHelper()
		if err := proc.Signal(syscall.SIGCONT); err != nil && !errors.Is(err, os.ErrProcessDone) {
			Fail(fmt.Sprintf("continuing process %d: %v", pid, err))
		}
	}
	DeferCleanup(func() {
		resume()
		Expect(proc.Release()).To(Succeed())
	})
	Expect(proc.Signal(syscall.SIGSTOP)).To(Succeed(), "stopping process %d", pid)
	return resume
}

// watchSiteServer watches SiteServer name from now until the spec ends.
func watchSiteServer(ctx context.Context, name string) <-chan watch.Event {
	GinkgoHelper()
	watcher, err := client.NewWithWatch(kc.Config, client.Options{Scheme: k8s.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	w, err := watcher.Watch(ctx, &siteopsv1.SiteServerList{}, client.MatchingFields{"metadata.name": name})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(w.Stop)
	return w.ResultChan()
}

// awaitSiteServer reads changes until a SiteServer in them matches, and
// fails after timeout; what says what was awaited.
func awaitSiteServer(ctx context.Context, changes <-chan watch.Event, timeout time.Duration, what string, match func(*siteopsv1.SiteServer) bool) {
	GinkgoHelper()
	deadline := time.After(timeout)
	for {
		select {
		case <-ctx.Done():
			Fail("awaiting " + what + ": " + ctx.Err().Error())
		case <-deadline:
			Fail(fmt.Sprintf("no %s within %v", what, timeout))
		case ev, ok := <-changes:
			Expect(ok).To(BeTrue(), "the watch ended awaiting %s", what)
			Expect(ev.Type).NotTo(Equal(watch.Error), "awaiting %s: %v", what, ev.Object)
			if ss, ok := ev.Object.(*siteopsv1.SiteServer); ok && match(ss) {
				return
			}
		}
	}
}

// locate asks the locator at address (host:port) which servers serve an
// agent with the given address.
func locate(ctx context.Context, g Gomega, agent *http.Client, locator, address string) protocol.LocateResponse {
	body, err := json.Marshal(protocol.LocateRequest{Addresses: []string{address}})
	g.Expect(err).NotTo(HaveOccurred())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+locator+protocol.LocatePath, bytes.NewReader(body))
	g.Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/json")
	resp, err := agent.Do(req)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "locate %s: %s", address, data)
	var answer protocol.LocateResponse
	g.Expect(json.Unmarshal(data, &answer)).To(Succeed(), "%s", data)
	return answer
}
