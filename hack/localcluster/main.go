// Command localcluster is `make run`, the embedded default: it starts a
// simulated cluster (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok playing the kubelets of fake nodes, all built
// from Go module sources by hack/controlplane.sh), installs the operator's
// CRDs and RBAC, creates three site-server nodes with local volumes of the
// "site-content" StorageClass, applies config/samples and runs the manager
// against it as its ServiceAccount, with the locator on (HTTPS, a
// certificate of the operator's CA, on port 9443 of the cluster's loopback
// address). The site services' pods run as real
// processes (simcluster's pod runner, the binaries of --pod-bin-dir, built
// by `make run`) on addresses of their own; --pod-runner=false leaves them
// to kwok, which marks them Ready and runs nothing. It prints what the
// operator reported, writes the CA bundle agents trust to
// <state-dir>/ca.crt, prints curl commands that locate a sample address and
// reach the task service of the answer with it, then creates a bootstrap
// token and runs one agent (bin/agent) that registers and checks in, and
// prints the kubeconfig to use from another shell. Ctrl-C stops all of it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/manifests"
	"github.com/siteops/site-operator/internal/simcluster"
)

// The sample SiteServers run on nodes labelled simcluster.LabelSiteServer
// and keep their content on this StorageClass
// (config/samples/siteops_v1alpha1_siteserver.yaml).
const storageClass = "site-content"

func main() {
	var (
		managerPath = flag.String("manager", "bin/manager", "Manager binary to run.")
		agentPath   = flag.String("agent", "bin/agent", "Agent binary to run one agent with; empty runs none.")
		samplesDir  = flag.String("samples", "config/samples", "Directory of sample manifests to apply.")
		stateDir    = flag.String("state-dir", ".run", "Directory for the cluster's data, logs and kubeconfig.")
		podRunner   = flag.Bool("pod-runner", true, "Run the site services' pods as real processes (needs root and unshare, from util-linux); false leaves them to kwok, which runs nothing.")
		podBinDir   = flag.String("pod-bin-dir", "bin", "Directory of the binaries that the pods' commands name (/usr/local/bin/<name>).")
	)
	// The libraries this tool calls (envtest's CRD installer, the clients)
	// log through controller-runtime's logger: errors only, unless
	// --zap-log-level says otherwise. Without a logger, controller-runtime
	// prints a stack trace ("log.SetLogger(...) was never called").
	logOpts := zap.Options{Level: zapcore.ErrorLevel}
	logOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrllog.SetLogger(zap.New(zap.UseFlagOptions(&logOpts)))
	if !*podRunner {
		*podBinDir = ""
	}
	if err := run(*managerPath, *agentPath, *samplesDir, *stateDir, *podBinDir); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(managerPath, agentPath, samplesDir, stateDir, podBinDir string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	root, err := simcluster.RepoRoot()
	if err != nil {
		return err
	}
	log("Building the control plane if needed (the first time takes several minutes)")
	binDir, err := simcluster.BinDir(root)
	if err != nil {
		return err
	}
	dir, err := filepath.Abs(filepath.Join(stateDir, "cluster"))
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("removing the previous run's %s: %w", dir, err)
	}
	log("Starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok")
	sim, err := simcluster.Start(ctx, simcluster.Options{BinDir: binDir, Dir: dir, KeepDir: true, PodBinDir: podBinDir})
	if err != nil {
		return fmt.Errorf("starting the cluster: %w", err)
	}
	defer func() {
		log("Stopping the cluster")
		if err := sim.Stop(); err != nil {
			log("Stopping the cluster: %v", err)
		}
	}()

	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(sim.Config, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	namespace := controllers.DefaultOptions().Workloads.Namespace
	if err := simcluster.InstallOperator(ctx, sim, c, root, namespace); err != nil {
		return err
	}
	if err := createNodes(ctx, c); err != nil {
		return err
	}
	samples, err := manifests.ReadDir(samplesDir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", samplesDir, err)
	}
	if err := manifests.CreateAll(ctx, c, samples); err != nil {
		return fmt.Errorf("applying %s: %w", samplesDir, err)
	}
	log("Applied %d sample objects from %s", len(samples), samplesDir)

	locator, err := locatorAddress(sim.Host)
	if err != nil {
		return err
	}
	manager, err := simcluster.StartManager(ctx, sim, simcluster.ManagerOptions{
		Binary: managerPath, Namespace: namespace, Image: "site-operator:0.1.0", Args: locatorArgs(locator)})
	if err != nil {
		return fmt.Errorf("starting the manager: %w", err)
	}
	log("The manager runs, its locator on https://%s (log: %s)", locator, filepath.Join(dir, "logs", "manager.log"))
	if podBinDir != "" {
		log("The site services' pods run as processes (logs: %s)", filepath.Join(dir, "logs", "pods"))
	}

	if err := waitForSites(ctx, c, manager.Exited()); err != nil {
		return err
	}
	printStatus(ctx, c)
	caPath, err := filepath.Abs(filepath.Join(stateDir, "ca.crt"))
	if err != nil {
		return err
	}
	if err := showLocator(ctx, c, namespace, locator, caPath); err != nil {
		log("The locator example did not work: %v", err)
	} else if agentPath != "" && podBinDir != "" {
		agent, err := startAgent(ctx, c, agentPath, stateDir, filepath.Join(dir, "logs"), locator, caPath)
		if err != nil {
			log("The agent example did not work: %v", err)
		} else {
			defer func() { _ = agent.Stop(10 * time.Second) }()
		}
	}
	log("The operator is running. From another shell:\n\n    export KUBECONFIG=%s\n    kubectl get siteops\n    kubectl -n %s get deployments,statefulsets,services,pods -o wide\n\nPress Ctrl-C to stop everything.",
		sim.KubeconfigPath, namespace)

	select {
	case <-ctx.Done():
		return nil
	case <-manager.Exited():
		return fmt.Errorf("the manager exited: %w\n%s", manager.ExitError(), manager.LogTail(20))
	}
}

// createNodes makes three site-server nodes with local volumes for the
// package services' content, and one ordinary node.
func createNodes(ctx context.Context, c client.Client) error {
	siteServers := simcluster.NodePool{
		Names:        []string{"site-server-1", "site-server-2", "site-server-3"},
		Node:         simcluster.FakeNode{Labels: simcluster.SiteServerLabels()},
		StorageClass: storageClass, Volumes: 4, VolumeSize: "500Gi",
	}
	if err := siteServers.Create(ctx, c); err != nil {
		return err
	}
	return simcluster.NodePool{Names: []string{"worker-1"}}.Create(ctx, c)
}

// waitForSites waits until every Subnet has its status and every Site and
// SiteServer is Ready: every sample SiteServer's pods are available.
func waitForSites(ctx context.Context, c client.Client, exited <-chan struct{}) error {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(3 * time.Minute)
	for {
		done, err := converged(ctx, c)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the manager exited")
		case <-deadline:
			log("Not every Site is Ready after 3 minutes; this is what the operator reports:")
			printStatus(ctx, c)
			return nil
		case <-tick.C:
		}
	}
}

func converged(ctx context.Context, c client.Client) (bool, error) {
	var subnets siteopsv1.SubnetList
	if err := c.List(ctx, &subnets); err != nil {
		return false, fmt.Errorf("listing Subnets: %w", err)
	}
	for _, sn := range subnets.Items {
		if sn.Status.ObservedGeneration != sn.Generation || readyOf(sn.Status.Conditions) == nil {
			return false, nil
		}
	}
	var sites siteopsv1.SiteList
	if err := c.List(ctx, &sites); err != nil {
		return false, fmt.Errorf("listing Sites: %w", err)
	}
	for _, site := range sites.Items {
		if r := readyOf(site.Status.Conditions); r == nil || r.Status != metav1.ConditionTrue {
			return false, nil
		}
	}
	var servers siteopsv1.SiteServerList
	if err := c.List(ctx, &servers); err != nil {
		return false, fmt.Errorf("listing SiteServers: %w", err)
	}
	for _, ss := range servers.Items {
		if r := readyOf(ss.Status.Conditions); r == nil || r.Status != metav1.ConditionTrue {
			return false, nil
		}
	}
	return true, nil
}

func readyOf(conditions []metav1.Condition) *metav1.Condition {
	return meta.FindStatusCondition(conditions, siteopsv1.ConditionReady)
}

// printStatus prints what `kubectl get sites,subnets,siteservers` shows,
// for machines without kubectl.
func printStatus(ctx context.Context, c client.Client) {
	var out strings.Builder
	w := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	cond := func(conditions []metav1.Condition) (string, string) {
		if r := readyOf(conditions); r != nil {
			return string(r.Status), r.Reason
		}
		return "", ""
	}

	var sites siteopsv1.SiteList
	if err := c.List(ctx, &sites); err == nil {
		fmt.Fprintln(w, "SITE\tSUBNETS\tSITE SERVERS\tREADY\tREASON")
		for _, s := range sites.Items {
			ready, reason := cond(s.Status.Conditions)
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", s.Name, s.Status.Subnets, strings.Join(s.Status.SiteServers, ","), ready, reason)
		}
		fmt.Fprintln(w)
	}
	var subnets siteopsv1.SubnetList
	if err := c.List(ctx, &subnets); err == nil {
		fmt.Fprintln(w, "SUBNET\tCIDR\tSITE\tEFFECTIVE SITE\tSOURCE\tREADY\tREASON")
		for _, sn := range subnets.Items {
			ready, reason := cond(sn.Status.Conditions)
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sn.Name, sn.Spec.CIDR, sn.Spec.Site,
				sn.Status.EffectiveSite, sn.Spec.Source, ready, reason)
		}
		fmt.Fprintln(w)
	}
	var servers siteopsv1.SiteServerList
	if err := c.List(ctx, &servers); err == nil {
		fmt.Fprintln(w, "SITE SERVER\tSITES\tTASK\tPACKAGE\tREADY\tREASON")
		for _, ss := range servers.Items {
			ready, reason := cond(ss.Status.Conditions)
			fmt.Fprintf(w, "%s\t%s\t%d/%d\t%d/%d\t%s\t%s\n", ss.Name, strings.Join(ss.Spec.Sites, ","),
				ss.Status.Task.ReadyReplicas, ss.Status.Task.Replicas,
				ss.Status.Package.ReadyReplicas, ss.Status.Package.Replicas, ready, reason)
		}
	}
	_ = w.Flush()
	log("What the operator reports:\n\n%s", out.String())
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}
