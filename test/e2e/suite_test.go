//go:build e2e

// Package e2e runs the manager binary against a simulated cluster (etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok as real
// processes, see internal/simcluster; the site services run as processes
// behind their pods) and checks that SiteServers roll out
// where they should and that every status says so. Run it with
//
//	go test -tags e2e ./test/e2e/ -v -timeout 20m
//
// E2E_POD_RUNNER=false runs it without processes behind the pods.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/simcluster"
)

// The suite's shared state, set up by BeforeSuite.
var (
	// kc is the simulated cluster.
	kc *simcluster.Cluster
	// k8s is a cluster administrator's client.
	k8s client.Client
	// manager is the operator under test.
	manager *simcluster.Process
	// managerBin is the manager binary the suite built.
	managerBin string
	// locatorAddress is host:port of the manager's locator.
	locatorAddress string
	// agentBin is the agent binary the suite built.
	agentBin string
)

// startManager starts a manager replica as the suite runs it: leader
// election on, the locator on a free port of the cluster's host with a
// certificate from the operator's CA that names that host.
func startManager(ctx context.Context, name string) (*simcluster.Process, string, error) {
	locator, err := simcluster.FreeAddress(kc.Host)
	if err != nil {
		return nil, "", err
	}
	p, err := simcluster.StartManager(ctx, kc, simcluster.ManagerOptions{Binary: managerBin, Namespace: namespace, Name: name, Args: []string{
		"--leader-elect=true",
		"--locator-operator-ca",
		"--locator-bind-address=" + locator,
		"--locator-hosts=" + kc.Host,
		// Agents check in every 5 s and their Computers are written every
		// 2 s, so that the agent specs see moves within seconds.
		"--agent-check-in-interval=5",
		"--computer-status-interval=2",
	}})
	return p, locator, err
}

// What the suite's cluster holds before any SiteServer.
const (
	// namespace holds the site services.
	namespace = "site-operator-system"
	// storageClass is the local storage of the site-server nodes.
	storageClass = "e2e-local"
	// labelSiteServerNode marks the nodes meant for site services.
	labelSiteServerNode = simcluster.LabelSiteServer
	// labelDedicated marks (and, as a taint, reserves) a node for one
	// SiteServer that tolerates it.
	labelDedicated = "siteops.io/dedicated"
	// labelLatePool is the label of a node that appears during the suite.
	labelLatePool = "siteops.io/pool"
	// suiteBudget is how long the whole suite may take at most, whatever
	// go test's -timeout allows.
	suiteBudget = 15 * time.Minute
)

// Nodes of the suite's cluster, by role.
var (
	// storageNodes are site-server nodes with local volumes.
	storageNodes = []string{"ss-1", "ss-2", "ss-3"}
	// noStorageNode is a site-server node without volumes: task services
	// may run there, package services cannot.
	noStorageNode = "ss-nostorage"
	// siteServerNodes are every node labelled site-server.
	siteServerNodes = append([]string{noStorageNode}, storageNodes...)
	// dedicatedNode is tainted; only a SiteServer tolerating the taint
	// runs there.
	dedicatedNode = "dedicated-1"
	// workerNodes are ordinary nodes where no site service may run.
	workerNodes = []string{"worker-1", "worker-2"}
	// lateNode is created by a spec, to satisfy a SiteServer waiting for
	// a node.
	lateNode = "late-1"
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	suiteConfig, reporterConfig := GinkgoConfiguration()
	suiteConfig.Timeout = suiteTimeout()
	// Eventually(...).WithContext(ctx) would otherwise poll until the
	// spec's context ends instead of failing after the default timeout.
	EnforceDefaultTimeoutsWhenUsingContexts()
	SetDefaultEventuallyTimeout(2 * time.Minute)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	SetDefaultConsistentlyDuration(3 * time.Second)
	SetDefaultConsistentlyPollingInterval(250 * time.Millisecond)
	RunSpecs(t, "site-operator end-to-end", suiteConfig, reporterConfig)
}

// suiteTimeout is suiteBudget, or less so that Ginkgo times the suite out
// (and stops the cluster) a minute before go test's -timeout kills the
// test binary outright.
func suiteTimeout() time.Duration {
	timeout := suiteBudget
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 && d-time.Minute < timeout {
			timeout = max(d-time.Minute, 30*time.Second)
		}
	}
	return timeout
}

var _ = BeforeSuite(func(ctx SpecContext) {
	root, err := simcluster.RepoRoot()
	Expect(err).NotTo(HaveOccurred())
	By("building the control plane (instant once built), the manager and the site services")
	bin, err := simcluster.BinDir(root)
	Expect(err).NotTo(HaveOccurred())
	commands := GinkgoT().TempDir()
	Expect(simcluster.BuildCommands(root, commands)).To(Succeed())
	managerBinary := filepath.Join(commands, "manager")
	agentBin = filepath.Join(commands, "agent")

	By("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, with a pod runner")
	// The site services' pods run as processes of the binaries just built;
	// E2E_POD_RUNNER=false leaves them to kwok (Ready, nothing runs).
	podBinDir := commands
	if !podRunner() {
		podBinDir = ""
	}
	kc, err = simcluster.Start(ctx, simcluster.Options{BinDir: bin, PodBinDir: podBinDir})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(stopCluster)
	fmt.Fprintf(GinkgoWriter, "Cluster on %s, pods in %s, files in %s\n", kc.Host, kc.PodCIDR, kc.Dir)

	scheme, err := controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(kc.Config, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	By("installing the CRDs, the workload namespace and the manager's RBAC")
	Expect(simcluster.InstallOperator(ctx, kc, k8s, root, namespace)).To(Succeed())

	By("creating the nodes and their local volumes")
	for _, pool := range []simcluster.NodePool{
		{Names: storageNodes, Node: simcluster.FakeNode{Labels: simcluster.SiteServerLabels()}, StorageClass: storageClass, Volumes: 4},
		{Names: []string{noStorageNode}, Node: simcluster.FakeNode{Labels: simcluster.SiteServerLabels()}},
		{Names: []string{dedicatedNode}, Node: simcluster.FakeNode{
			Labels: map[string]string{labelDedicated: "true"},
			Taints: []corev1.Taint{{Key: labelDedicated, Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		}, StorageClass: storageClass, Volumes: 2},
		{Names: workerNodes, StorageClass: storageClass, Volumes: 2},
	} {
		Expect(pool.Create(ctx, k8s)).To(Succeed())
	}

	By("starting the manager, leader-elected, with the locator on HTTPS from the operator's CA")
	// The manager takes its namespace (for the leader-election Lease) from
	// POD_NAMESPACE, as in a pod.
	Expect(os.Setenv("POD_NAMESPACE", namespace)).To(Succeed())
	managerBin = managerBinary
	manager, locatorAddress, err = startManager(ctx, "manager")
	Expect(err).NotTo(HaveOccurred())
	fmt.Fprintf(GinkgoWriter, "Manager pid %d, log %s\n", manager.Pid(), manager.LogPath)
	setUp = true
}, NodeTimeout(10*time.Minute))

// podRunner tells whether the site services run as processes: unless
// E2E_POD_RUNNER is false.
func podRunner() bool {
	return os.Getenv("E2E_POD_RUNNER") != "false"
}

// stopCluster stops every process; when a spec failed it keeps the
// cluster's directory and says where its logs are.
func stopCluster() {
	if kc == nil {
		return
	}
	if suiteFailed || !setUp {
		kc.KeepDir = true
		fmt.Fprintf(os.Stderr, "The cluster's logs are kept in %s/logs\n", kc.Dir)
	}
	Expect(kc.Stop()).To(Succeed())
	// No process of the cluster, nor anything it started, is left.
	for _, p := range kc.Processes() {
		Expect(syscall.Kill(-p.Pid(), 0)).To(MatchError(syscall.ESRCH), "process group of %s (%d)", p.Name, p.Pid())
	}
}

var (
	// setUp is set once BeforeSuite has done everything.
	setUp bool
	// suiteFailed is set by the first failed spec.
	suiteFailed bool
)

var _ = ReportAfterEach(func(report SpecReport) {
	if report.Failed() {
		suiteFailed = true
	}
})

// The manager must keep running through every spec.
var _ = AfterEach(func() {
	if manager != nil {
		Expect(manager.ExitError()).NotTo(HaveOccurred(), "the manager exited; last lines:\n%s", manager.LogTail(40))
	}
	if CurrentSpecReport().Failed() && kc != nil {
		fmt.Fprintln(GinkgoWriter, diagnostics(context.Background()))
		fmt.Fprintln(GinkgoWriter, kc.LogTails(40))
	}
})
