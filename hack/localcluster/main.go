// Command localcluster is `make run`: it starts a local control plane (etcd
// and kube-apiserver built by hack/controlplane.sh), installs the CRDs,
// applies config/samples, runs the manager binary against it and prints the
// kubeconfig to use from another shell. Ctrl-C stops all of it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/manifests"
)

func main() {
	var (
		managerPath = flag.String("manager", "bin/manager", "Manager binary to run.")
		crdDir      = flag.String("crds", "config/crd/bases", "Directory of CRD manifests to install.")
		samplesDir  = flag.String("samples", "config/samples", "Directory of sample manifests to apply.")
		stateDir    = flag.String("state-dir", ".run", "Directory for the kubeconfig.")
	)
	flag.Parse()
	if err := run(*managerPath, *crdDir, *samplesDir, *stateDir); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(managerPath, crdDir, samplesDir, stateDir string) error {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return errors.New("KUBEBUILDER_ASSETS is not set: run `make run`, which builds the control plane with hack/controlplane.sh")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := &envtest.Environment{CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true}
	log("Starting etcd and kube-apiserver from %s", os.Getenv("KUBEBUILDER_ASSETS"))
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane: %w", err)
	}
	defer func() {
		log("Stopping the control plane")
		if err := env.Stop(); err != nil {
			log("Stopping the control plane: %v", err)
		}
	}()

	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, cfg)
	if err != nil {
		return fmt.Errorf("adding the admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", stateDir, err)
	}
	kubeconfigPath, err := filepath.Abs(filepath.Join(stateDir, "kubeconfig"))
	if err != nil {
		return err
	}
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", kubeconfigPath, err)
	}

	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	// The manager runs the site services in its default workload namespace.
	namespace := controllers.DefaultOptions().Workloads.Namespace
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil &&
		!apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	samples, err := manifests.ReadDir(samplesDir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", samplesDir, err)
	}
	if err := manifests.CreateAll(ctx, c, samples); err != nil {
		return fmt.Errorf("applying %s: %w", samplesDir, err)
	}
	log("Applied %d sample objects from %s", len(samples), samplesDir)

	manager := exec.Command(managerPath, "--kubeconfig", kubeconfigPath,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "127.0.0.1:0")
	manager.Stdout, manager.Stderr = os.Stdout, os.Stderr
	// Its own process group: Ctrl-C reaches this program, which stops the
	// manager before the control plane.
	manager.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := manager.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", managerPath, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- manager.Wait() }()
	defer func() {
		if manager.ProcessState != nil {
			return
		}
		log("Stopping the manager")
		_ = manager.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = manager.Process.Kill()
			<-exited
		}
	}()

	if err := waitForSubnets(ctx, c, exited); err != nil {
		return err
	}
	printSubnets(ctx, c)
	log("The operator is running. From another shell:\n\n    export KUBECONFIG=%s\n    kubectl get siteops\n\nPress Ctrl-C to stop everything.", kubeconfigPath)

	select {
	case <-ctx.Done():
		return nil
	case err := <-exited:
		return fmt.Errorf("the manager exited: %v", err)
	}
}

// waitForSubnets waits until the manager has reported on every Subnet.
func waitForSubnets(ctx context.Context, c client.Client, exited <-chan error) error {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		var subnets siteopsv1.SubnetList
		if err := c.List(ctx, &subnets); err != nil {
			return fmt.Errorf("listing Subnets: %w", err)
		}
		done := true
		for i := range subnets.Items {
			sn := &subnets.Items[i]
			if meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady) == nil ||
				sn.Status.ObservedGeneration != sn.Generation {
				done = false
			}
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			return fmt.Errorf("the manager exited: %v", err)
		case <-tick.C:
		}
	}
}

// printSubnets prints what `kubectl get subnets -o wide` shows, for machines
// without kubectl.
func printSubnets(ctx context.Context, c client.Client) {
	var subnets siteopsv1.SubnetList
	if err := c.List(ctx, &subnets); err != nil {
		log("Listing Subnets: %v", err)
		return
	}
	var out strings.Builder
	w := tabwriter.NewWriter(&out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tCIDR\tSITE\tEFFECTIVE SITE\tSOURCE\tREADY\tREASON")
	for _, sn := range subnets.Items {
		ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sn.Name, sn.Spec.CIDR, sn.Spec.Site,
			sn.Status.EffectiveSite, sn.Spec.Source, ready.Status, ready.Reason)
	}
	_ = w.Flush()
	log("Subnets of the sample organisation:\n\n%s", out.String())
}

func log(format string, args ...any) {
	w := bufio.NewWriter(os.Stderr)
	fmt.Fprintf(w, "==> "+format+"\n", args...)
	_ = w.Flush()
}
