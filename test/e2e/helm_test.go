//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/manifests"
	"github.com/siteops/site-operator/internal/simcluster"
)

// The chart installed the way users install it: `helm install --wait` on a
// cluster of its own (the suite's cluster runs a manager outside any pod),
// the manager's two replicas and central's site services running as
// processes behind their pods (the pod runner), then `helm upgrade`
// rolling the manager out and upgrading the CRDs, and `helm uninstall`
// leaving the CRDs and every user's object in place.
var _ = Describe("Helm", Ordered, func() {
	const (
		release = "site-operator"
		helmNS  = "site-operator-system"
		// helmClass is the StorageClass of the samples' SiteServers.
		helmClass   = "site-content"
		agentsNS    = "helm-agents"
		tokenID     = "helmag"
		tokenSecret = "helmag0123456789"
		leaseName   = "site-operator.siteops.io"
		locatorPort = 9443
		// locatorHost is the DNS name of the locator's Service.
		locatorHost  = "site-operator-locator." + helmNS + ".svc"
		managerLabel = "app.kubernetes.io/name=site-operator"
	)
	var (
		hc       *simcluster.Cluster
		hk       client.Client
		root     string
		helmEnv  []string
		oldChart string
		// hostsFile is the agents' /etc/hosts, caFile their CA bundle.
		hostsFile, caFile string
	)

	// helm runs the pinned helm (hack/tools) against the Helm cluster.
	helm := func(ctx context.Context, args ...string) string {
		GinkgoHelper()
		cmd := exec.CommandContext(ctx, "go", append([]string{"tool", "-modfile=hack/tools/go.mod", "helm"}, args...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), helmEnv...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		fmt.Fprintf(GinkgoWriter, "helm %s\n%s\n", strings.Join(args, " "), out.String())
		Expect(err).NotTo(HaveOccurred(), "helm %s:\n%s\n%s", strings.Join(args, " "), out.String(), hc.LogTails(30))
		return out.String()
	}

	// values are the sets every helm install and upgrade of the spec
	// passes: servers on the pod's own address (every pod is a process of
	// this machine), central on the site-server nodes' local volumes (as
	// the samples' central), agents checking in every 5 s and their
	// Computers written every 2 s.
	values := []string{
		"--set", "listenHost=$(POD_IP)",
		"--set-string", "central.nodeSelector.siteops\\.io/site-server=true",
		"--set", "central.storage.storageClassName=" + helmClass,
		"--set", "central.storage.size=1Gi",
		"--set", "agents.checkInIntervalSeconds=5",
		"--set", "agents.computerStatusIntervalSeconds=2",
	}

	// managerPods are the manager's pods that are not being deleted.
	managerPods := func(ctx context.Context, g Gomega) []corev1.Pod {
		var list corev1.PodList
		sel, err := metav1.ParseToLabelSelector(managerLabel + ",app.kubernetes.io/component=manager")
		g.Expect(err).NotTo(HaveOccurred())
		selector, err := metav1.LabelSelectorAsSelector(sel)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(hk.List(ctx, &list, client.InNamespace(helmNS), client.MatchingLabelsSelector{Selector: selector})).To(Succeed())
		var out []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil {
				out = append(out, p)
			}
		}
		return out
	}

	// expectManagersRunning waits for want manager pods, each Ready with
	// a live process, on different nodes, and returns their processes.
	expectManagersRunning := func(ctx context.Context, want int) map[string]int {
		GinkgoHelper()
		pids := map[string]int{}
		Eventually(func(g Gomega) {
			list := managerPods(ctx, g)
			g.Expect(list).To(HaveLen(want))
			nodes := map[string]bool{}
			clear(pids)
			for _, p := range list {
				g.Expect(p.Status.ContainerStatuses).To(HaveLen(1), "pod %s", p.Name)
				g.Expect(p.Status.ContainerStatuses[0].Ready).To(BeTrue(), "pod %s ready", p.Name)
				pid := containerPid(p)
				g.Expect(syscall.Kill(pid, 0)).To(Succeed(), "the manager process %d of pod %s runs", pid, p.Name)
				pids[p.Name] = pid
				nodes[p.Spec.NodeName] = true
			}
			g.Expect(nodes).To(HaveLen(want), "the replicas spread over nodes (anti-affinity)")
		}).WithContext(ctx).WithTimeout(3 * time.Minute).Should(Succeed())
		return pids
	}

	// writeHosts writes the agent's /etc/hosts in place: the locator's
	// Service name for every manager pod's address.
	writeHosts := func(ctx context.Context) {
		GinkgoHelper()
		lines := "127.0.0.1 localhost\n"
		for _, p := range managerPods(ctx, Default) {
			lines += p.Status.PodIP + " " + locatorHost + "\n"
		}
		Expect(os.WriteFile(hostsFile, []byte(lines), 0o644)).To(Succeed())
	}

	// expectAgentCheckedIn starts an agent process at address, which finds
	// the locator by its Service's name (resolved, as cluster DNS would
	// without kube-proxy, to the replicas' pods: writeHosts), and waits
	// for its Computer, Ready, of paris-hq. The agent stops when the spec
	// ends.
	expectAgentCheckedIn := func(ctx context.Context, name, address string) {
		GinkgoHelper()
		a := startAgentOf(net.JoinHostPort(locatorHost, strconv.Itoa(locatorPort)), filepath.Join(hc.Dir, "logs"), hostsFile,
			name, address, caFile, tokenID+"."+tokenSecret, nil)
		Eventually(func(g Gomega) {
			var c siteopsv1.Computer
			g.Expect(hk.Get(ctx, client.ObjectKey{Namespace: agentsNS, Name: name}, &c)).To(Succeed())
			g.Expect(c.Status.Site).To(Equal("paris-hq"))
			g.Expect(c.Status.SiteServer).To(Equal("paris-hq-srv"))
			g.Expect(condition(c.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAgentOnline))
		}).WithContext(ctx).Should(Succeed(), func() string { return a.logFrom(0) })
	}

	// leaseHolder is the holder of the manager's leader-election Lease.
	leaseHolder := func(ctx context.Context, g Gomega) string {
		var lease coordinationv1.Lease
		g.Expect(hk.Get(ctx, client.ObjectKey{Namespace: helmNS, Name: leaseName}, &lease)).To(Succeed())
		g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
		return *lease.Spec.HolderIdentity
	}

	// expectLocatorOnEveryReplica asks each manager pod's locator, over
	// HTTPS trusting only the operator's CA and checking the name of the
	// locator's Service, where an agent of a site's subnet goes.
	// It writes the CA bundle to caFile, for agents.
	expectLocatorOnEveryReplica := func(ctx context.Context, address, wantURL string) {
		GinkgoHelper()
		var bundle corev1.ConfigMap
		Eventually(func(g Gomega) {
			g.Expect(hk.Get(ctx, client.ObjectKey{Namespace: helmNS, Name: "site-operator-ca"}, &bundle)).To(Succeed())
		}).WithContext(ctx).Should(Succeed())
		pool := certPool([]byte(bundle.Data["ca.crt"]))
		agent := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, ServerName: locatorHost, MinVersion: tls.VersionTLS12}}}
		Eventually(func(g Gomega) {
			for _, p := range managerPods(ctx, g) {
				answer := locate(ctx, g, agent, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(locatorPort)), address)
				g.Expect(answer.TaskEndpoints).To(ContainElement(wantURL), "the locator of %s", p.Name)
			}
		}).WithContext(ctx).Should(Succeed())
		Expect(os.WriteFile(caFile, []byte(bundle.Data["ca.crt"]), 0o644)).To(Succeed())
	}

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: the chart's manager cannot run without processes behind its pods")
		}
		var err error
		root, err = simcluster.RepoRoot()
		Expect(err).NotTo(HaveOccurred())
		bin, err := simcluster.BinDir(root)
		Expect(err).NotTo(HaveOccurred())

		By("starting a cluster of its own, with the pod runner")
		hc, err = simcluster.Start(ctx, simcluster.Options{BinDir: bin, PodBinDir: filepath.Dir(managerBin)})
		Expect(err).NotTo(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "Helm cluster on %s, pods in %s (the suite's in %s), files in %s\n", hc.Host, hc.PodCIDR, kc.PodCIDR, hc.Dir)
		Expect(hc.PodCIDR).NotTo(Equal(kc.PodCIDR))
		DeferCleanup(func() {
			if CurrentSpecReport().Failed() || suiteFailed {
				hc.KeepDir = true
				fmt.Fprintf(os.Stderr, "The Helm cluster's logs are kept in %s/logs\n", hc.Dir)
			}
			Expect(hc.Stop()).To(Succeed())
		})
		scheme, err := controllers.NewScheme()
		Expect(err).NotTo(HaveOccurred())
		Expect(apiextensionsv1.AddToScheme(scheme)).To(Succeed())
		hk, err = client.New(hc.Config, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())

		home := GinkgoT().TempDir()
		helmEnv = []string{"KUBECONFIG=" + hc.KubeconfigPath, "HELM_CONFIG_HOME=" + filepath.Join(home, "config"),
			"HELM_CACHE_HOME=" + filepath.Join(home, "cache"), "HELM_DATA_HOME=" + filepath.Join(home, "data")}

		By("three site-server nodes with local volumes and a worker, as make run makes")
		Expect(simcluster.NodePool{Names: []string{"helm-ss-1", "helm-ss-2", "helm-ss-3"},
			Node: simcluster.FakeNode{Labels: simcluster.SiteServerLabels()}, StorageClass: helmClass, Volumes: 4, VolumeSize: "500Gi"}.
			Create(ctx, hk)).To(Succeed())
		Expect(simcluster.NodePool{Names: []string{"helm-worker-1"}}.Create(ctx, hk)).To(Succeed())

		files := GinkgoT().TempDir()
		hostsFile, caFile = filepath.Join(files, "hosts"), filepath.Join(files, "ca.crt")

		By("an older chart: the same, but the Computer CRD without its short name")
		oldChart = filepath.Join(GinkgoT().TempDir(), "site-operator")
		Expect(os.CopyFS(oldChart, os.DirFS(filepath.Join(root, "charts", "site-operator")))).To(Succeed())
		crds := filepath.Join(oldChart, "templates", "crds.yaml")
		data, err := os.ReadFile(crds)
		Expect(err).NotTo(HaveOccurred())
		shortName := "    shortNames:\n    - comp\n"
		Expect(strings.Count(string(data), shortName)).To(Equal(1), "the Computer CRD's short name in %s", crds)
		Expect(os.WriteFile(crds, []byte(strings.Replace(string(data), shortName, "", 1)), 0o644)).To(Succeed())
	}, NodeTimeout(5*time.Minute))

	AfterEach(func() {
		if CurrentSpecReport().Failed() && hc != nil {
			fmt.Fprintln(GinkgoWriter, hc.LogTails(40))
		}
	})

	var installedPids map[string]int

	It("installs with --wait: two manager replicas as processes, one leader, central and the samples Ready, an agent checks in", func(ctx SpecContext) {
		helm(ctx, append([]string{"install", release, oldChart, "--namespace", helmNS, "--create-namespace",
			"--wait", "--timeout", "5m"}, values...)...)

		installedPids = expectManagersRunning(ctx, 2)
		Eventually(func(g Gomega) string { return leaseHolder(ctx, g) }).WithContext(ctx).ShouldNot(BeEmpty())

		By("the CRDs from the chart's templates, kept on uninstall")
		var crd apiextensionsv1.CustomResourceDefinition
		Expect(hk.Get(ctx, client.ObjectKey{Name: "computers.siteops.io"}, &crd)).To(Succeed())
		Expect(crd.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
		Expect(crd.Annotations).To(HaveKeyWithValue("meta.helm.sh/release-name", release))
		Expect(crd.Spec.Names.ShortNames).To(BeEmpty(), "the older chart's Computer CRD")

		By("central, the unassigned SiteServer, Ready with its services running")
		Eventually(func(g Gomega) {
			var ss siteopsv1.SiteServer
			g.Expect(hk.Get(ctx, client.ObjectKey{Name: "central"}, &ss)).To(Succeed())
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue),
				"central: %v", ss.Status.Conditions)
		}).WithContext(ctx).WithTimeout(3 * time.Minute).Should(Succeed())

		By("the samples applied (their central is the chart's): every Site and SiteServer turns Ready")
		samples, err := manifests.ReadDir(filepath.Join(root, "config", "samples"))
		Expect(err).NotTo(HaveOccurred())
		Expect(manifests.CreateAll(ctx, hk, samples)).To(Succeed())
		Eventually(func(g Gomega) {
			var sites siteopsv1.SiteList
			g.Expect(hk.List(ctx, &sites)).To(Succeed())
			g.Expect(sites.Items).To(HaveLen(3))
			for _, site := range sites.Items {
				g.Expect(condition(site.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue),
					"Site %s: %v", site.Name, site.Status.Conditions)
			}
			var servers siteopsv1.SiteServerList
			g.Expect(hk.List(ctx, &servers)).To(Succeed())
			g.Expect(servers.Items).To(HaveLen(4))
			for _, ss := range servers.Items {
				g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue),
					"SiteServer %s: %v", ss.Name, ss.Status.Conditions)
			}
		}).WithContext(ctx).WithTimeout(3 * time.Minute).Should(Succeed())

		By("the locator of each replica sends an agent of 10.0.0.0/8 to paris-hq's server")
		var paris siteopsv1.SiteServer
		Expect(hk.Get(ctx, client.ObjectKey{Name: "paris-hq-srv"}, &paris)).To(Succeed())
		Expect(paris.Status.Task.Advertised).NotTo(BeEmpty())
		expectLocatorOnEveryReplica(ctx, "10.0.0.9", paris.Status.Task.Advertised[0])

		By("an agent process registers with a bootstrap token and checks in: a Ready Computer of paris-hq")
		Expect(hk.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: agentsNS}})).To(Succeed())
		Expect(simcluster.CreateBootstrapToken(ctx, hk, tokenID, tokenSecret, agentsNS)).To(Succeed())
		writeHosts(ctx)
		expectAgentCheckedIn(ctx, "helm-agent", "10.0.0.10")

	})

	It("upgrades: the manager rolls out to new processes, the CRDs follow the chart, the controllers go on", func(ctx SpecContext) {
		Expect(installedPids).To(HaveLen(2), "the install spec ran")
		var before string
		Eventually(func(g Gomega) string { before = leaseHolder(ctx, g); return before }).WithContext(ctx).ShouldNot(BeEmpty())

		helm(ctx, append([]string{"upgrade", release, "charts/site-operator", "--namespace", helmNS,
			"--wait", "--timeout", "5m", "--set-string", "podAnnotations.e2e\\.siteops\\.io/rollout=2"}, values...)...)

		pids := expectManagersRunning(ctx, 2)
		for name := range pids {
			Expect(installedPids).NotTo(HaveKey(name), "pod %s of the install survived the upgrade", name)
		}
		Eventually(func() []int {
			var alive []int
			for _, pid := range installedPids {
				if syscall.Kill(pid, 0) == nil {
					alive = append(alive, pid)
				}
			}
			return alive
		}).WithContext(ctx).Should(BeEmpty(), "the processes of the replaced pods stopped")
		Eventually(func(g Gomega) string { return leaseHolder(ctx, g) }).WithContext(ctx).
			ShouldNot(Equal(before), "a new replica leads")

		By("a new agent locates through the new replicas, registers and checks in")
		writeHosts(ctx)
		expectAgentCheckedIn(ctx, "helm-agent-2", "10.0.0.11")

		By("the Computer CRD upgraded with the chart")
		var crd apiextensionsv1.CustomResourceDefinition
		Expect(hk.Get(ctx, client.ObjectKey{Name: "computers.siteops.io"}, &crd)).To(Succeed())
		Expect(crd.Spec.Names.ShortNames).To(ConsistOf("comp"))

		By("a Site created after the upgrade is reconciled by the new leader")
		Expect(hk.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "helm-after"},
			Spec: siteopsv1.SiteSpec{DisplayName: "After the upgrade"}})).To(Succeed())
		Eventually(func(g Gomega) {
			var site siteopsv1.Site
			g.Expect(hk.Get(ctx, client.ObjectKey{Name: "helm-after"}, &site)).To(Succeed())
			g.Expect(site.Status.ObservedGeneration).To(Equal(site.Generation))
			g.Expect(condition(site.Status.Conditions, siteopsv1.ConditionReady).Type).To(Equal(siteopsv1.ConditionReady))
		}).WithContext(ctx).Should(Succeed())
	})

	It("uninstalls: the manager stops, the CRDs, the Sites and central stay", func(ctx SpecContext) {
		var pids map[string]int
		Eventually(func(g Gomega) {
			pids = map[string]int{}
			for _, p := range managerPods(ctx, g) {
				pids[p.Name] = containerPid(p)
			}
			g.Expect(pids).To(HaveLen(2))
		}).WithContext(ctx).Should(Succeed())

		helm(ctx, "uninstall", release, "--namespace", helmNS, "--wait", "--timeout", "3m")

		Eventually(func(g Gomega) {
			g.Expect(managerPods(ctx, g)).To(BeEmpty())
			for name, pid := range pids {
				g.Expect(syscall.Kill(pid, 0)).To(MatchError(syscall.ESRCH), "the process %d of pod %s", pid, name)
			}
		}).WithContext(ctx).Should(Succeed())
		var crds apiextensionsv1.CustomResourceDefinitionList
		Expect(hk.List(ctx, &crds)).To(Succeed())
		var ours []string
		for _, crd := range crds.Items {
			if crd.Spec.Group == siteopsv1.GroupVersion.Group {
				ours = append(ours, crd.Spec.Names.Kind)
			}
		}
		Expect(ours).To(ContainElements("Site", "Subnet", "SiteServer", "Computer", "Package", "DeploymentTask"))
		for key, obj := range map[client.ObjectKey]client.Object{
			{Name: "paris-hq"}: &siteopsv1.Site{}, {Name: "helm-after"}: &siteopsv1.Site{},
			{Name: "corp-10-0-0-0-8"}: &siteopsv1.Subnet{}, {Name: "central"}: &siteopsv1.SiteServer{},
			{Name: "paris-hq-srv"}: &siteopsv1.SiteServer{}, {Namespace: agentsNS, Name: "helm-agent"}: &siteopsv1.Computer{},
		} {
			Expect(hk.Get(ctx, key, obj)).To(Succeed(), "%s %s after the uninstall", kindOf(obj), key)
		}
	})
})

// kindOf is the Go type name of obj, for messages.
func kindOf(obj runtime.Object) string {
	return fmt.Sprintf("%T", obj)
}
