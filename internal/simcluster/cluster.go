// Package simcluster starts a simulated Kubernetes cluster for `make run`
// (hack/localcluster), the end-to-end suite and the benchmarks: etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and kwok, each a
// real process on a loopback address of its own, built from Go module
// sources by hack/controlplane.sh. kwok plays the kubelets of fake Nodes,
// so Deployments and StatefulSets roll out, pods get addresses and turn
// Ready and EndpointSlices fill, while no container runs.
//
// One file per job: the cluster's processes (cluster.go, process.go,
// pki.go), the nodes, volumes and StorageClass that kwok nodes need
// (objects.go, nodepool.go), and the operator installed and run as its
// ServiceAccount (operator.go), and the pod runner (podrunner*.go), which
// runs the project's own pods as real processes on their loopback pod
// addresses when Options.PodBinDir names the binaries. It links no
// controller code, so a development tool may import it.
//
// Every process runs in a process group of its own; Stop ends them all, and
// on Linux the kernel kills them if the test process dies first.
package simcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Binaries that Start runs, all found in Options.BinDir.
const (
	binEtcd              = "etcd"
	binAPIServer         = "kube-apiserver"
	binControllerManager = "kube-controller-manager"
	binScheduler         = "kube-scheduler"
	binKwok              = "kwok"
	// kwokStages is the kwok configuration holding its node and pod stages.
	kwokStages = "kwok-stages.yaml"
)

// Components are the names hack/controlplane.sh builds for a cluster.
var Components = []string{binEtcd, binAPIServer, binControllerManager, binScheduler, binKwok}

// Ports on the cluster's loopback address.
const (
	portEtcdClient = 2379
	portEtcdPeer   = 2380
	portAPIServer  = 6443
)

// Options configure Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager,
	// kube-scheduler, kwok and kwok-stages.yaml (hack/controlplane.sh prints
	// it). Required.
	BinDir string
	// Dir holds the cluster's data, certificates, kubeconfigs and logs. When
	// empty, Start makes a temporary directory.
	Dir string
	// KeepDir keeps Dir after Stop (Stop always keeps a Dir it did not make).
	KeepDir bool
	// ServiceCIDR is the Services' cluster IP range; default 10.96.0.0/16.
	ServiceCIDR string
	// PodCIDR is the range kwok gives pod addresses from; default
	// 10.244.0.0/16 (never connected to), or with a pod runner a random /16
	// of 127.0.0.0/8 (podnet.go), so that pods bind their address on this
	// machine and every connection to them stays on loopback.
	PodCIDR string
	// PodBinDir holds the project's binaries (task-service,
	// package-service, manager, a test's own): a pod bound to a kwok node
	// whose container command is /usr/local/bin/<name>, for an executable
	// <name> there, runs as a real process (podrunner.go). Empty turns the
	// pod runner off: kwok then marks every pod Ready and no container
	// runs.
	PodBinDir string
	// ControllerQPS and ControllerBurst are the client rate limits of
	// kube-controller-manager and kube-scheduler (--kube-api-qps and
	// --kube-api-burst); zero keeps their defaults (20/30 and 50/100).
	ControllerQPS   float64
	ControllerBurst int
	// StartTimeout bounds the start of each component; default 2 minutes.
	StartTimeout time.Duration
}

// Cluster is a running simulated cluster.
type Cluster struct {
	// Dir holds the cluster's data, certificates, kubeconfigs and logs.
	Dir string
	// KeepDir keeps Dir after Stop; set it when a test failed so that the
	// logs can be read.
	KeepDir bool
	// Host is the loopback address every component listens on.
	Host string
	// Config authenticates as a cluster administrator (group
	// system:masters).
	Config *rest.Config
	// KubeconfigPath is Config as a kubeconfig file.
	KubeconfigPath string
	// PodCIDR is the block kwok gives pod addresses from.
	PodCIDR string

	ca        *authority
	server    string
	pods      *podRunner // nil without a pod runner
	podBlock  *os.File   // the lock that reserves the pod block (podnet.go), if any
	mu        sync.Mutex
	processes []*Process // in start order
	stopOnce  sync.Once
	stopErr   error
}

// Start starts etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler and kwok, and returns once the API server is ready and
// kube-controller-manager has created the default ServiceAccount. On error
// every process started is stopped again.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if opts.BinDir == "" {
		return nil, errors.New("cluster: Options.BinDir is required")
	}
	if opts.ServiceCIDR == "" {
		opts.ServiceCIDR = "10.96.0.0/16"
	}
	if opts.PodCIDR == "" && opts.PodBinDir == "" {
		opts.PodCIDR = "10.244.0.0/16"
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	c := &Cluster{Dir: opts.Dir, KeepDir: opts.KeepDir || opts.Dir != ""}
	if c.Dir == "" {
		if c.Dir, err = os.MkdirTemp("", "e2e-cluster-"); err != nil {
			return nil, fmt.Errorf("making the cluster directory: %w", err)
		}
	}
	defer func() {
		if err != nil {
			c.KeepDir = true // the logs explain the failure
			err = errors.Join(err, c.Stop(), fmt.Errorf("the cluster's logs are in %s", c.path("logs")))
		}
	}()
	for _, sub := range []string{"logs", "pki", "etcd"} {
		if err := os.MkdirAll(c.path(sub), 0o700); err != nil {
			return nil, fmt.Errorf("making %s: %w", sub, err)
		}
	}
	if c.Host, err = pickHost(); err != nil {
		return nil, err
	}
	if opts.PodCIDR == "" {
		if opts.PodCIDR, c.podBlock, err = reservePodCIDR(); err != nil {
			return nil, err
		}
	}
	c.PodCIDR = opts.PodCIDR
	c.server = "https://" + net.JoinHostPort(c.Host, strconv.Itoa(portAPIServer))
	if err := c.writePKI(); err != nil {
		return nil, err
	}
	if c.Config, c.KubeconfigPath, err = c.AddUser("e2e-admin", "system:masters"); err != nil {
		return nil, err
	}

	if err := c.startEtcd(ctx, opts); err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, opts); err != nil {
		return nil, err
	}
	stages := filepath.Join(opts.BinDir, kwokStages)
	var binaries map[string]string
	if opts.PodBinDir != "" {
		if binaries, err = podBinaries(opts.PodBinDir); err != nil {
			return nil, err
		}
		stages = c.path(kwokStages)
		if err := writeKwokStages(filepath.Join(opts.BinDir, kwokStages), stages, commands(binaries)); err != nil {
			return nil, err
		}
	}
	if err := c.startControllers(ctx, opts, stages); err != nil {
		return nil, err
	}
	if binaries != nil {
		if c.pods, err = newPodRunner(c.Config, binaries, c.Dir, c.Host, strconv.Itoa(portAPIServer)); err != nil {
			return nil, err
		}
		if err := c.pods.start(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// path is a path under the cluster's directory.
func (c *Cluster) path(elem ...string) string {
	return filepath.Join(append([]string{c.Dir}, elem...)...)
}

// pickHost chooses a random address in 127.0.0.0/8 whose ports are free, so
// that clusters and other local test servers do not compete for ports.
func pickHost() (string, error) {
	var lastErr error
	for range 20 {
		host := fmt.Sprintf("127.%d.%d.%d", 100+rand.IntN(100), rand.IntN(256), 1+rand.IntN(254))
		lastErr = nil
		for _, port := range []int{portEtcdClient, portEtcdPeer, portAPIServer} {
			l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
			if err != nil {
				lastErr = err
				break
			}
			_ = l.Close()
		}
		if lastErr == nil {
			return host, nil
		}
	}
	return "", fmt.Errorf("finding a loopback address with free ports: %w", lastErr)
}

// writePKI writes the CA, the API server's serving certificate and the
// service account key pair.
func (c *Cluster) writePKI() error {
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	c.ca = ca
	caKey, err := ca.keyPEM()
	if err != nil {
		return err
	}
	servingCert, servingKey, err := ca.servingCert(net.ParseIP(c.Host))
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"ca.crt":        ca.certPEM,
		"ca.key":        caKey,
		"apiserver.crt": servingCert,
		"apiserver.key": servingKey,
	} {
		if err := os.WriteFile(c.path("pki", name), data, 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return writeServiceAccountKeys(c.path("pki", "sa.key"), c.path("pki", "sa.pub"))
}

// AddUser returns a client configuration, and a kubeconfig file holding
// it, that the API server authenticates as user name in groups (by a
// client certificate). Authorization is RBAC: a user outside
// system:masters can do only what its bindings allow.
func (c *Cluster) AddUser(name string, groups ...string) (*rest.Config, string, error) {
	certPEM, keyPEM, err := c.ca.clientCert(name, groups)
	if err != nil {
		return nil, "", err
	}
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.server, CertificateAuthorityData: c.ca.certPEM}
	kubeconfig.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kubeconfig.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name}
	kubeconfig.CurrentContext = "e2e"
	path := c.path("kubeconfig-" + name)
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		return nil, "", fmt.Errorf("writing the kubeconfig of %s: %w", name, err)
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*kubeconfig, nil).ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading the kubeconfig of %s: %w", name, err)
	}
	// API Priority and Fairness paces the test clients, not client-go.
	cfg.QPS, cfg.Burst = -1, 0
	return cfg, path, nil
}

// StartProcess starts a process that Stop stops before the cluster's own
// (such as the operator under test); its output goes to
// <Dir>/logs/<name>.log.
func (c *Cluster) StartProcess(name, path string, args ...string) (*Process, error) {
	p, err := StartProcess(name, path, args, c.path("logs", name+".log"))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.processes = append(c.processes, p)
	c.mu.Unlock()
	return p, nil
}

// Processes are the processes running for the cluster, in start order.
func (c *Cluster) Processes() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Process(nil), c.processes...)
}

// Stop stops every process in the reverse order of their start, then removes
// Dir unless KeepDir is set. Calling it again returns the same.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		if c.pods != nil {
			c.pods.stop() // before the API server, to which it reports
		}
		processes := c.Processes()
		var errs []error
		for i := len(processes) - 1; i >= 0; i-- {
			if err := processes[i].Stop(15 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if c.podBlock != nil {
			_ = c.podBlock.Close() // the pods' addresses are free again
		}
		if !c.KeepDir {
			if err := os.RemoveAll(c.Dir); err != nil {
				errs = append(errs, fmt.Errorf("removing %s: %w", c.Dir, err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// LogTails is the last n lines of every process's log, each under a
// heading, for a failure report.
func (c *Cluster) LogTails(n int) string {
	var b strings.Builder
	for _, p := range c.Processes() {
		fmt.Fprintf(&b, "----- %s (%s), last %d lines -----\n%s\n", p.Name, p.LogPath, n, p.LogTail(n))
	}
	if c.pods != nil {
		for _, path := range append([]string{c.path("logs", "pod-runner.log")}, c.pods.logPaths()...) {
			fmt.Fprintf(&b, "----- %s, last %d lines -----\n%s\n", path, n, fileTail(path, n))
		}
	}
	return b.String()
}

func (c *Cluster) startEtcd(ctx context.Context, opts Options) error {
	client := "http://" + net.JoinHostPort(c.Host, strconv.Itoa(portEtcdClient))
	peer := "http://" + net.JoinHostPort(c.Host, strconv.Itoa(portEtcdPeer))
	p, err := c.StartProcess(binEtcd, filepath.Join(opts.BinDir, binEtcd),
		"--name=e2e",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+client,
		"--advertise-client-urls="+client,
		"--listen-peer-urls="+peer,
		"--initial-advertise-peer-urls="+peer,
		"--initial-cluster=e2e="+peer,
		"--unsafe-no-fsync=true",
		"--quota-backend-bytes=8589934592",
		"--log-level=warn",
	)
	if err != nil {
		return err
	}
	httpClient := &http.Client{Timeout: 2 * time.Second}
	return waitFor(ctx, opts.StartTimeout, p, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, client+"/health", nil)
		if err != nil {
			return false, err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, nil
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK && strings.Contains(string(body), `"health":"true"`), nil
	})
}

func (c *Cluster) startAPIServer(ctx context.Context, opts Options) error {
	p, err := c.StartProcess(binAPIServer, filepath.Join(opts.BinDir, binAPIServer),
		"--etcd-servers=http://"+net.JoinHostPort(c.Host, strconv.Itoa(portEtcdClient)),
		"--bind-address="+c.Host,
		"--advertise-address="+c.Host,
		// The endpoint reconciler refuses a loopback address for the
		// kubernetes Service, which nothing here uses.
		"--endpoint-reconciler-type=none",
		"--secure-port="+strconv.Itoa(portAPIServer),
		"--cert-dir="+c.path("pki"),
		"--tls-cert-file="+c.path("pki", "apiserver.crt"),
		"--tls-private-key-file="+c.path("pki", "apiserver.key"),
		"--client-ca-file="+c.path("pki", "ca.crt"),
		"--authorization-mode=RBAC",
		// The default plugins (NamespaceLifecycle, ServiceAccount,
		// PodSecurity, DefaultStorageClass, ...) with PodSecurity named
		// for the reader: namespaces labelled
		// pod-security.kubernetes.io/enforce refuse pods that break their
		// level.
		"--enable-admission-plugins=PodSecurity",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.path("pki", "sa.pub"),
		"--service-account-signing-key-file="+c.path("pki", "sa.key"),
		"--service-cluster-ip-range="+opts.ServiceCIDR,
		"--profiling=false",
	)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("creating a clientset: %w", err)
	}
	return waitFor(ctx, opts.StartTimeout, p, func(ctx context.Context) (bool, error) {
		_, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").Timeout(5 * time.Second).DoRaw(ctx)
		return err == nil, nil
	})
}

// startControllers starts kube-controller-manager, kube-scheduler and kwok
// (with the stages file given), and waits until kube-controller-manager has created the default
// ServiceAccount.
func (c *Cluster) startControllers(ctx context.Context, opts Options, stages string) error {
	var rateLimits []string
	if opts.ControllerQPS > 0 {
		rateLimits = append(rateLimits, "--kube-api-qps="+strconv.FormatFloat(opts.ControllerQPS, 'f', -1, 64))
	}
	if opts.ControllerBurst > 0 {
		rateLimits = append(rateLimits, "--kube-api-burst="+strconv.Itoa(opts.ControllerBurst))
	}
	kcm, err := c.StartProcess(binControllerManager, filepath.Join(opts.BinDir, binControllerManager),
		append([]string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--controllers=*",
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--service-account-private-key-file=" + c.path("pki", "sa.key"),
			"--root-ca-file=" + c.path("pki", "ca.crt"),
			"--cluster-signing-cert-file=" + c.path("pki", "ca.crt"),
			"--cluster-signing-key-file=" + c.path("pki", "ca.key"),
		}, rateLimits...)...)
	if err != nil {
		return err
	}
	if _, err := c.StartProcess(binScheduler, filepath.Join(opts.BinDir, binScheduler),
		append([]string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--leader-elect=false",
			"--secure-port=0",
		}, rateLimits...)...); err != nil {
		return err
	}
	if _, err := c.StartProcess(binKwok, filepath.Join(opts.BinDir, binKwok),
		"--kubeconfig="+c.KubeconfigPath,
		"--config="+stages,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+AnnotationKwokNode+"=fake",
		"--cidr="+opts.PodCIDR,
		// Without a lease duration kwok renews no node Lease, and its
		// heartbeat stage updates node status only every 10 to 20
		// minutes, so the node lifecycle controller marks every node (and
		// pod) NotReady once its grace period (50 s) has passed.
		"--node-lease-duration-seconds=40",
	); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return fmt.Errorf("creating a clientset: %w", err)
	}
	err = waitFor(ctx, opts.StartTimeout, kcm, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("waiting for kube-controller-manager to create the default ServiceAccount: %w", err)
	}
	return c.CheckRunning()
}

// CheckRunning fails when a process of the cluster has exited.
func (c *Cluster) CheckRunning() error {
	var errs []error
	for _, p := range c.Processes() {
		if err := p.ExitError(); err != nil {
			errs = append(errs, fmt.Errorf("%w; last lines of %s:\n%s", err, p.LogPath, p.LogTail(20)))
		}
	}
	return errors.Join(errs...)
}

// waitFor polls cond until it holds, fails, p exits or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, p *Process, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", p.Name, err)
		}
		if ok {
			return nil
		}
		select {
		case <-p.Exited():
			return fmt.Errorf("%w; last lines of %s:\n%s", p.ExitError(), p.LogPath, p.LogTail(20))
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w; last lines of %s:\n%s", p.Name, ctx.Err(), p.LogPath, p.LogTail(20))
		case <-tick.C:
		}
	}
}
