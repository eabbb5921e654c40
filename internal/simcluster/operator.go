package simcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/siteops/site-operator/internal/manifests"
)

// modulePath identifies the repository's go.mod.
const modulePath = "github.com/siteops/site-operator"

// ManagerServiceAccount is the ServiceAccount the manager authenticates
// as, in the workload namespace, as config/rbac/role_binding.yaml grants.
const ManagerServiceAccount = "controller-manager"

// RepoRoot finds the repository's root: the nearest directory at or above
// the working directory whose go.mod declares the module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("reading the working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of %s above the working directory", modulePath)
		}
		dir = parent
	}
}

// BinDir returns the directory of the cluster's binaries: $E2E_K8S_BIN when
// set, otherwise what hack/controlplane.sh prints once it has built them
// (at once when they are built; several minutes the first time).
func BinDir(root string) (string, error) {
	if dir := os.Getenv("E2E_K8S_BIN"); dir != "" {
		return dir, nil
	}
	cmd := exec.Command(filepath.Join(root, "hack", "controlplane.sh"), Components...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/controlplane.sh: %w\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// BuildManager builds cmd/manager into dir and returns the binary's path.
func BuildManager(root, dir string) (string, error) {
	out := filepath.Join(dir, "manager")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/manager")
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/manager: %w\n%s", err, output)
	}
	return out, nil
}

// BuildCommands builds every command of the repository (./cmd/...: the
// manager and the site services) into dir, for StartManager and the pod
// runner (Options.PodBinDir).
func BuildCommands(root, dir string) error {
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/...")
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/...: %w\n%s", err, output)
	}
	return nil
}

// InstallOperator installs what the chart would before the manager starts:
// the CRDs of config/crd/bases, the workload namespace (enforcing the
// restricted Pod Security Standard), the manager's ServiceAccount and the
// roles of config/rbac/role.yaml bound to it: the ClusterRole with a
// ClusterRoleBinding, the Role (the workloads' kinds) with a RoleBinding in
// the workload namespace, as config/default and the chart place it; and the
// site services' ServiceAccount with the roles of
// config/rbac/site-service/role.yaml.
func InstallOperator(ctx context.Context, c *Cluster, cl client.Client, root, namespace string) error {
	if _, err := envtest.InstallCRDs(c.Config, envtest.CRDInstallOptions{
		Paths:              []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfPathMissing: true,
	}); err != nil {
		return fmt.Errorf("installing the CRDs: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         "restricted",
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if err := cl.Create(ctx, ns); err != nil {
		return fmt.Errorf("creating namespace %s: %w", namespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: ManagerServiceAccount, Namespace: namespace}}
	if err := cl.Create(ctx, sa); err != nil {
		return fmt.Errorf("creating ServiceAccount %s: %w", ManagerServiceAccount, err)
	}
	installed, err := installRoles(ctx, cl, filepath.Join(root, "config", "rbac", "role.yaml"), namespace, ManagerServiceAccount)
	if err != nil {
		return err
	}
	if !slices.Contains(installed, "ClusterRole") || !slices.Contains(installed, "Role") {
		return fmt.Errorf("config/rbac/role.yaml holds %v; want the manager's ClusterRole and Role (run make manifests)", installed)
	}
	// Leader election, so that a second manager replica can run beside
	// the first (it serves the locator without leading).
	if _, err := installRoles(ctx, cl, filepath.Join(root, "config", "rbac", "leader_election_role.yaml"), namespace,
		ManagerServiceAccount); err != nil {
		return err
	}
	// The site services' identity, as config/rbac/site-service installs it.
	siteServiceRoles := filepath.Join(root, "config", "rbac", "site-service", "role.yaml")
	if _, err := os.Stat(siteServiceRoles); err == nil {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: SiteServiceAccount, Namespace: namespace}}
		if err := cl.Create(ctx, sa); err != nil {
			return fmt.Errorf("creating ServiceAccount %s: %w", SiteServiceAccount, err)
		}
		if _, err := installRoles(ctx, cl, siteServiceRoles, namespace, SiteServiceAccount); err != nil {
			return err
		}
		if err := installTokenAccess(ctx, cl, root, namespace); err != nil {
			return err
		}
	}
	return nil
}

// TokenNamespace is the namespace of the bootstrap token Secrets, as
// config/tokens creates it (the manager's and the task services' default).
const TokenNamespace = "site-operator-tokens"

// installTokenAccess creates the token namespace and grants the site
// services the ClusterRole of config/tokens/role.yaml there only, as
// config/tokens does.
func installTokenAccess(ctx context.Context, cl client.Client, root, namespace string) error {
	path := filepath.Join(root, "config", "tokens", "role.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the token role: %w", err)
	}
	docs, err := manifests.Decode(data)
	if err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	if len(docs) != 1 || docs[0].GetKind() != "ClusterRole" {
		return fmt.Errorf("%s must hold one ClusterRole", path)
	}
	var cr rbacv1.ClusterRole
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(docs[0].Object, &cr); err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: cr.Name, Namespace: TokenNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: SiteServiceAccount, Namespace: namespace}},
	}
	for _, obj := range []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: TokenNamespace}}, &cr, binding} {
		if err := cl.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	return nil
}

// CreateBootstrapToken creates the bootstrap token Secret "<id>.<secret>"
// in the token namespace, registering Computers into namespace, with no
// expiry and no usage limit.
func CreateBootstrapToken(ctx context.Context, cl client.Client, id, secret, namespace string) error {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: TokenNamespace},
		Type:       "siteops.io/bootstrap-token",
		StringData: map[string]string{"token-id": id, "token-secret": secret, "namespace": namespace},
	}
	if err := cl.Create(ctx, s); err != nil {
		return fmt.Errorf("creating the bootstrap token %s: %w", id, err)
	}
	return nil
}

// SiteServiceAccount is the ServiceAccount the site services run as, in the
// workload namespace (config/rbac/site-service).
const SiteServiceAccount = "site-operator-site-service"

// installRoles creates the ClusterRoles and Roles of rolePath, each bound
// to the ServiceAccount, and returns the kinds it created.
func installRoles(ctx context.Context, cl client.Client, rolePath, namespace, serviceAccount string) ([]string, error) {
	data, err := os.ReadFile(rolePath)
	if err != nil {
		return nil, fmt.Errorf("reading roles: %w", err)
	}
	docs, err := manifests.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("decoding %s: %w", rolePath, err)
	}
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: serviceAccount, Namespace: namespace}}
	var installed []string
	for _, doc := range docs {
		var role, binding client.Object
		switch doc.GetKind() {
		case "ClusterRole":
			var cr rbacv1.ClusterRole
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(doc.Object, &cr); err != nil {
				return nil, fmt.Errorf("decoding ClusterRole %s of %s: %w", doc.GetName(), rolePath, err)
			}
			role = &cr
			binding = &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: cr.Name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
				Subjects:   subjects,
			}
		case "Role":
			var r rbacv1.Role
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(doc.Object, &r); err != nil {
				return nil, fmt.Errorf("decoding Role %s of %s: %w", doc.GetName(), rolePath, err)
			}
			r.Namespace = namespace // a placeholder in the file, as kustomize and the chart replace it
			role = &r
			binding = &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: r.Name, Namespace: namespace},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name},
				Subjects:   subjects,
			}
		default:
			return nil, fmt.Errorf("%s holds a %s; want ClusterRoles and Roles", rolePath, doc.GetKind())
		}
		for _, obj := range []client.Object{role, binding} {
			if err := cl.Create(ctx, obj); err != nil {
				return nil, fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
			}
		}
		installed = append(installed, doc.GetKind())
	}
	return installed, nil
}

// ManagerOptions configure StartManager.
type ManagerOptions struct {
	// Binary is the manager binary (BuildManager).
	Binary string
	// Namespace is the workload namespace that InstallOperator made.
	Namespace string
	// Image is --service-image; default site-operator:e2e.
	Image string
	// MetricsAddress is where the manager serves /metrics over HTTP;
	// empty turns the endpoint off.
	MetricsAddress string
	// Args are more flags.
	Args []string
	// Name names the process and its log (logs/<Name>.log); default
	// "manager". Replicas need names of their own.
	Name string
}

// StartManager runs the manager as a process of the cluster, authenticated
// by a token of its ServiceAccount as it would be in a pod, and returns
// once its readiness endpoint answers.
func StartManager(ctx context.Context, c *Cluster, opts ManagerOptions) (*Process, error) {
	if opts.Image == "" {
		opts.Image = "site-operator:e2e"
	}
	kubeconfig, err := c.serviceAccountKubeconfig(ctx, opts.Namespace, ManagerServiceAccount)
	if err != nil {
		return nil, err
	}
	probe, err := FreeAddress(c.Host)
	if err != nil {
		return nil, err
	}
	metrics := opts.MetricsAddress
	if metrics == "" {
		metrics = "0"
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		"--metrics-bind-address=" + metrics, "--metrics-secure=false",
		"--health-probe-bind-address=" + probe,
		"--workload-namespace=" + opts.Namespace,
		"--service-image=" + opts.Image,
		"--leader-elect=false",
	}, opts.Args...)
	name := opts.Name
	if name == "" {
		name = "manager"
	}
	p, err := c.StartProcess(name, opts.Binary, args...)
	if err != nil {
		return nil, err
	}
	httpClient := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(ctx, time.Minute, p, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+probe+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return nil, errors.Join(err, p.Stop(5*time.Second))
	}
	return p, nil
}

// serviceAccountKubeconfig writes a kubeconfig holding a token of the
// ServiceAccount, obtained with the TokenRequest API (so signed with the
// cluster's service account key) and valid for a day.
func (c *Cluster) serviceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	cs, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return "", fmt.Errorf("creating a clientset: %w", err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(24 * 60 * 60))},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of ServiceAccount %s/%s: %w", namespace, name, err)
	}
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.server, CertificateAuthorityData: c.ca.certPEM}
	kubeconfig.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kubeconfig.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name, Namespace: namespace}
	kubeconfig.CurrentContext = "e2e"
	path := c.path("kubeconfig-sa-" + name)
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		return "", fmt.Errorf("writing the kubeconfig of ServiceAccount %s: %w", name, err)
	}
	return path, nil
}

// FreeAddress is host with a port that is free now.
func FreeAddress(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	defer l.Close()
	return net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port)), nil
}
