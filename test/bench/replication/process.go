package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Replication between two package-service processes: the origin serves
// the package; a second package-service process, the replica's, learns
// from the API server (a local kube-apiserver and etcd, envtest) that its
// site wants a Package whose source is the origin's URL, fetches it with
// its replication engine into its store and reports it in the Package's
// status, as in a cluster. The Package controller is not run: the harness
// writes the status.sites it would.

// The objects of the replica's side.
const (
	benchNamespace = "bench"
	benchSite      = "bench"
	replicaServer  = "replica"
	// originHost and replicaHost are the processes' addresses.
	originHost  = "127.0.0.5"
	replicaHost = "127.0.0.6"
)

// apiServer is the local control plane and a kubeconfig for the replica.
type apiServer struct {
	env        *envtest.Environment
	cl         client.Client
	kubeconfig string
	// storage is the replica's store; stopReplica stops its process.
	storage     string
	stopReplica func()
}

// startAPI starts kube-apiserver and etcd (KUBEBUILDER_ASSETS) with the
// CRDs, the replica's Site and its SiteServer, reported running as the
// SiteServer controller would.
func startAPI(ctx context.Context, dir string) (*apiServer, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New(`KUBEBUILDER_ASSETS must name the control-plane binaries: KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/replication, or make bench-replication`)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join("config", "crd", "bases")}, ErrorIfCRDPathMissing: true}
	if _, err := env.Start(); err != nil {
		return nil, fmt.Errorf("starting the API server: %w", err)
	}
	a := &apiServer{env: env}
	ok := false
	defer func() {
		if !ok {
			_ = env.Stop()
		}
	}()
	user, err := env.ControlPlane.AddUser(envtest.User{Name: "replica", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	a.kubeconfig = filepath.Join(dir, "replica.kubeconfig")
	if err := os.WriteFile(a.kubeconfig, kubeconfig, 0o600); err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := errors.Join(corev1.AddToScheme(scheme), siteopsv1.AddToScheme(scheme)); err != nil {
		return nil, err
	}
	if a.cl, err = client.New(env.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, err
	}
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: replicaServer}, Spec: siteopsv1.SiteServerSpec{Sites: []string{benchSite}}}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}},
		&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: benchSite}},
		ss,
	} {
		if err := a.cl.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	now := metav1.Now()
	// A server serves its sites (and so holds their content) when its task
	// service is ready and its package service runs.
	for _, c := range []string{siteopsv1.ConditionTaskServiceReady, siteopsv1.ConditionPackageServiceReady} {
		ss.Status.Conditions = append(ss.Status.Conditions, metav1.Condition{Type: c, Status: metav1.ConditionTrue,
			Reason: siteopsv1.ReasonAvailable, Message: "bench", LastTransitionTime: now})
	}
	ss.Status.Task = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1}
	ss.Status.Package = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1}
	if err := a.cl.Status().Update(ctx, ss); err != nil {
		return nil, err
	}
	ok = true
	return a, nil
}

func (a *apiServer) stop() {
	if a.stopReplica != nil {
		a.stopReplica()
	}
	_ = a.env.Stop()
}

// startReplica starts the replica's package-service process on an empty
// store, removing content a Package no longer gives it after 1 s, and
// replicates the warm-up Package (small content of the origin) so that
// its informers are synced before the first measured round.
func (a *apiServer) startReplica(ctx context.Context, bin, dir, url, digest string, size int64) error {
	a.storage = filepath.Join(dir, "replica")
	if err := os.MkdirAll(a.storage, 0o755); err != nil {
		return err
	}
	_, stop, err := startProcess(bin, dir, "replica", replicaHost, a.storage, replicaServer,
		"{removeAfterSeconds: 1}", "--kubeconfig", a.kubeconfig)
	if err != nil {
		return err
	}
	a.stopReplica = stop
	_, _, err = a.replicate(ctx, dir, "warm-up", url, digest, size)
	return err
}

// replicate creates Package name (source: url) wanted by the replica's
// site and returns how long until the content is in the replica's store,
// verified and renamed into place (the transfer), and until the replica
// reported it Ready in the Package's status. Then it deletes the Package
// and waits until the replica removed the content.
func (a *apiServer) replicate(ctx context.Context, dir, name, url, digest string, size int64) (transfer, reported time.Duration, err error) {
	p := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: name},
		Spec: siteopsv1.PackageSpec{Type: siteopsv1.PackageDiskImage, Source: siteopsv1.PackageSource{URL: url}, Digest: digest, Size: size}}
	start := time.Now()
	if err := a.cl.Create(ctx, p); err != nil {
		return 0, 0, err
	}
	p.Status.ObservedGeneration = p.Generation
	p.Status.Policy = siteopsv1.ReplicateAllSites
	p.Status.Sites = []siteopsv1.PackageSiteStatus{{Site: benchSite, State: siteopsv1.ContentPending}}
	if err := a.cl.Status().Update(ctx, p); err != nil {
		return 0, 0, err
	}
	stored := filepath.Join(a.storage, "sha256", strings.TrimPrefix(digest, "sha256:"))
	deadline := time.Now().Add(10 * time.Minute)
	var lastRead time.Time // of the Package
	for ; transfer == 0 || reported == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the replica did not hold and report %s within 10 minutes (log %s)", name, filepath.Join(dir, "replica.log"))
		}
		if transfer == 0 {
			// Until the content is in place the file is looked at, the
			// Package once a second only (a failure): reading it every
			// few milliseconds would cost the API server CPU that the
			// transfer competes for.
			if _, err := os.Stat(stored); err == nil {
				transfer = time.Since(start)
			} else if time.Since(lastRead) < time.Second {
				continue
			}
		}
		lastRead = time.Now()
		var now siteopsv1.Package
		if err := a.cl.Get(ctx, client.ObjectKeyFromObject(p), &now); err != nil {
			return 0, 0, err
		}
		for _, c := range now.Status.Servers {
			if c.Server != replicaServer {
				continue
			}
			if c.State == siteopsv1.ContentFailed {
				return 0, 0, fmt.Errorf("the replica failed: %s", c.Message)
			}
			if c.State == siteopsv1.ContentReady && reported == 0 {
				reported = time.Since(start)
				if transfer == 0 {
					transfer = reported
				}
			}
		}
	}
	if err := a.cl.Delete(ctx, p); err != nil {
		return 0, 0, err
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(stored); errors.Is(err, os.ErrNotExist) {
			return transfer, reported, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("the replica kept %s a minute after its Package went (log %s)", digest, filepath.Join(dir, "replica.log"))
		}
	}
}

// startProcess starts a package-service process for SiteServer server of
// the bench site on host, over the store in storage, with its
// package.replication configuration (YAML) and args added, and waits until
// it is ready. Its log is <dir>/<name>.log.
func startProcess(bin, dir, name, host, storage, server, replication string, args ...string) (base string, stop func(), err error) {
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	health, err := freePort()
	if err != nil {
		return "", nil, err
	}
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "siteServer: %s\nsites: [%s]\ntask: {port: 8080, healthPort: 8081}\n"+
		"package: {port: %d, healthPort: %d, storagePath: %s, replication: %s}\n", server, benchSite, port, health, storage, replication), 0o600); err != nil {
		return "", nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(bin, append([]string{"--config", cfg, "--insecure-http", "--listen-host", host}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return "", nil, err
	}
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		logf.Close()
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		resp, err := http.Get(fmt.Sprintf("http://%s:%d/readyz", host, health))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return fmt.Sprintf("http://%s:%d", host, port), stop, nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("package-service %s not ready in 30 s (log %s)", name, logf.Name())
		}
	}
}
