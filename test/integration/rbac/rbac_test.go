// Package rbac proves the manager's least privilege against a real
// kube-apiserver: it applies config/rbac/*.yaml as a user would, then asks
// the API server (SubjectAccessReview, and real requests impersonating the
// manager's ServiceAccount) what the manager may do. Cluster-wide it may
// read and write the status of the siteops.io kinds and read nodes and
// storage classes; it writes the site services' workloads, and the Secrets
// of its CA and serving certificates, only in its own namespace. The site
// services' ServiceAccount (config/rbac/site-service) may do what its
// markers in internal/siteservice/rbac.go grant (read the topology and the
// tasks, write Computers, DispatchShards, Packages and their status, read
// bootstrap tokens in their own namespace) and nothing else.
package rbac_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/siteops/site-operator/internal/manifests"
)

const (
	// rbacDir holds the manager's RBAC as a user applies it.
	rbacDir = "../../../config/rbac"
	// operatorNamespace is the namespace that config/rbac names (config/default
	// renames it): the manager's own, and so its workload namespace.
	operatorNamespace = "system"
	// serviceAccount is the manager's ServiceAccount in config/rbac.
	serviceAccount = "controller-manager"
	// siteServiceAccount is the site services' ServiceAccount in
	// config/rbac/site-service.
	siteServiceAccount = "site-service"
	// siteServiceDir holds the site services' RBAC.
	siteServiceDir = rbacDir + "/site-service"
	// otherNamespace is a tenant's namespace, where the manager must not write.
	otherNamespace = "tenant-a"
	// tokensDir holds the bootstrap token namespace and the site services'
	// access to it, with final names (config/default does not rename them).
	tokensDir = "../../../config/tokens"
	// tokenNamespace is the namespace config/tokens creates.
	tokenNamespace = "site-operator-tokens"
)

// The manager's identity, as the API server authenticates a token of its
// ServiceAccount.
var (
	managerUser     = fmt.Sprintf("system:serviceaccount:%s:%s", operatorNamespace, serviceAccount)
	siteServiceUser = fmt.Sprintf("system:serviceaccount:%s:%s", operatorNamespace, siteServiceAccount)
	// Both accounts are in the same groups.
	managerGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + operatorNamespace, "system:authenticated"}
)

// access is one request the manager might make.
type access struct {
	verb, group, resource, subresource, namespace string
}

func (a access) String() string {
	r := a.resource
	if a.group != "" {
		r += "." + a.group
	}
	if a.subresource != "" {
		r += "/" + a.subresource
	}
	where := "cluster-wide"
	if a.namespace != "" {
		where = "in namespace " + a.namespace
	}
	return fmt.Sprintf("%s %s %s", a.verb, r, where)
}

// each expands verbs × resources of one group in one namespace.
func each(verbs []string, group string, resources []string, subresource, namespace string) []access {
	var out []access
	for _, resource := range resources {
		for _, verb := range verbs {
			out = append(out, access{verb: verb, group: group, resource: resource, subresource: subresource, namespace: namespace})
		}
	}
	return out
}

var (
	read  = []string{"get", "list", "watch"}
	write = []string{"create", "update", "patch", "delete"}
	all   = append(append([]string{}, read...), write...)
)

// needed is what the controllers do: without any of it the manager fails.
func needed() []access {
	var n []access
	// The site services' workloads, in the workload namespace.
	n = append(n, each(all, "apps", []string{"deployments", "statefulsets"}, "", operatorNamespace)...)
	n = append(n, each(all, "", []string{"services", "configmaps"}, "", operatorNamespace)...)
	n = append(n, each(all, "policy", []string{"poddisruptionbudgets"}, "", operatorNamespace)...)
	// The CA and the serving certificates, in the workload namespace.
	n = append(n, each(all, "", []string{"secrets"}, "", operatorNamespace)...)
	// The site services' pods, read for the addresses a SiteServer advertises.
	n = append(n, each(read, "", []string{"pods"}, "", operatorNamespace)...)
	// SiteServer prerequisites.
	n = append(n, each(read, "", []string{"nodes"}, "", "")...)
	n = append(n, each(read, "storage.k8s.io", []string{"storageclasses"}, "", "")...)
	// The siteops.io kinds and their status.
	kinds := []string{"sites", "subnets", "siteservers"}
	n = append(n, each(read, "siteops.io", kinds, "", "")...)
	n = append(n, each([]string{"get", "update", "patch"}, "siteops.io", kinds, "status", "")...)
	// The directory import: its own kind, and the Sites and Subnets it
	// manages.
	n = append(n, each(read, "siteops.io", []string{"directoryimports"}, "", "")...)
	n = append(n, each([]string{"get", "update", "patch"}, "siteops.io", []string{"directoryimports"}, "status", "")...)
	n = append(n, each([]string{"create", "update", "patch", "delete"}, "siteops.io", []string{"sites", "subnets"}, "", "")...)
	// Computers, in every namespace: read, and their Ready condition.
	for _, ns := range []string{otherNamespace, ""} {
		n = append(n, each(read, "siteops.io", []string{"computers"}, "", ns)...)
		n = append(n, each([]string{"get", "update", "patch"}, "siteops.io", []string{"computers"}, "status", ns)...)
		// DeploymentTasks: read them and their dispatch state, write their
		// status.
		n = append(n, each(read, "siteops.io", []string{"deploymenttasks", "dispatchshards"}, "", ns)...)
		n = append(n, each([]string{"get", "update", "patch"}, "siteops.io", []string{"deploymenttasks"}, "status", ns)...)
		n = append(n, each([]string{"create", "patch"}, "events.k8s.io", []string{"events"}, "", ns)...)
	}
	// Leader election, in the manager's own namespace.
	n = append(n, each([]string{"get", "create", "update"}, "coordination.k8s.io", []string{"leases"}, "", operatorNamespace)...)
	n = append(n, access{verb: "create", resource: "events", namespace: operatorNamespace})
	return n
}

// forbidden is what least privilege withholds.
func forbidden() []access {
	var f []access
	// No workloads outside the workload namespace, nor cluster-wide.
	for _, ns := range []string{otherNamespace, "kube-system", "default", ""} {
		f = append(f, each([]string{"create", "patch", "delete"}, "apps", []string{"deployments", "statefulsets"}, "", ns)...)
		f = append(f, each([]string{"create", "patch", "delete"}, "", []string{"services", "configmaps"}, "", ns)...)
		f = append(f, each([]string{"create", "delete"}, "policy", []string{"poddisruptionbudgets"}, "", ns)...)
	}
	f = append(f, each(read, "apps", []string{"deployments"}, "", "")...)
	f = append(f, each(read, "", []string{"configmaps"}, "", otherNamespace)...)
	f = append(f, each(read, "", []string{"pods"}, "", otherNamespace)...)
	f = append(f, each(read, "", []string{"pods"}, "", "")...)
	// Secrets: only in the workload namespace.
	for _, ns := range []string{otherNamespace, "kube-system", ""} {
		f = append(f, each(all, "", []string{"secrets"}, "", ns)...)
	}
	// Nodes and storage classes are read-only.
	f = append(f, each(write, "", []string{"nodes"}, "", "")...)
	f = append(f, each(write, "", []string{"nodes"}, "status", "")...)
	f = append(f, each(write, "storage.k8s.io", []string{"storageclasses"}, "", "")...)
	// The topology belongs to its users: the manager writes only status,
	// but for the Sites and Subnets the directory import manages.
	f = append(f, each([]string{"create", "update", "delete"}, "siteops.io", []string{"siteservers"}, "", "")...)
	f = append(f, each([]string{"create", "update", "delete"}, "siteops.io", []string{"directoryimports"}, "", "")...)
	// Computers belong to their namespaces and the task services: the
	// manager writes only their status.
	f = append(f, each([]string{"create", "update", "patch", "delete"}, "siteops.io", []string{"computers"}, "", otherNamespace)...)
	// Tasks belong to their users, their dispatch state to the task
	// services: the manager writes only the tasks' status.
	f = append(f, each([]string{"create", "update", "patch", "delete"}, "siteops.io", []string{"deploymenttasks", "dispatchshards"}, "", otherNamespace)...)
	// Nothing that runs code or grants more, anywhere.
	for _, ns := range []string{operatorNamespace, otherNamespace} {
		f = append(f, each([]string{"create"}, "", []string{"pods"}, "", ns)...)
		f = append(f, each([]string{"create"}, "", []string{"pods"}, "exec", ns)...)
		f = append(f, each([]string{"create"}, "", []string{"serviceaccounts"}, "token", ns)...)
		f = append(f, each([]string{"create", "bind", "escalate"}, "rbac.authorization.k8s.io", []string{"roles", "rolebindings"}, "", ns)...)
	}
	f = append(f, each([]string{"create", "update"}, "rbac.authorization.k8s.io", []string{"clusterroles", "clusterrolebindings"}, "", "")...)
	f = append(f, access{verb: "create", group: "coordination.k8s.io", resource: "leases", namespace: otherNamespace})
	f = append(f, access{verb: "impersonate", resource: "serviceaccounts", namespace: otherNamespace})
	return f
}

var (
	admin     client.Client
	clientset *kubernetes.Clientset
	restCfg   *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS must name the control-plane binaries: "+
			`KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go test ./test/integration/rbac`)
		return 1
	}
	// The CRDs, so that a request for a SiteServer meets the authorizer
	// and then a real object.
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	restCfg = cfg
	if admin, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintf(os.Stderr, "creating a client: %v\n", err)
		return 1
	}
	if clientset, err = kubernetes.NewForConfig(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "creating a clientset: %v\n", err)
		return 1
	}
	return m.Run()
}

// allowed asks the API server whether the manager may make the request.
func allowed(ctx context.Context, t *testing.T, a access) bool {
	t.Helper()
	return allowedTo(ctx, t, managerUser, a)
}

// allowedTo asks the API server whether user (a ServiceAccount of the
// operator's namespace) may make the request.
func allowedTo(ctx context.Context, t *testing.T, user string, a access) bool {
	t.Helper()
	review, err := clientset.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{
		Spec: authorizationv1.SubjectAccessReviewSpec{
			User:   user,
			Groups: managerGroups,
			ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: a.namespace, Verb: a.verb, Group: a.group, Resource: a.resource, Subresource: a.subresource,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SubjectAccessReview for %s: %v", a, err)
	}
	return review.Status.Allowed
}

// TestManagerRBAC installs config/rbac and checks, request by request, that
// the manager may do what the controllers need and nothing of what least
// privilege withholds. Before the install the same requests are refused,
// so what is allowed comes from those files and not from the cluster's
// defaults.
func TestManagerRBAC(t *testing.T) {
	ctx := t.Context()
	for _, a := range needed() {
		if allowed(ctx, t, a) {
			t.Fatalf("before config/rbac is installed the manager may already %s: the API server is not authorizing with RBAC, this test proves nothing", a)
		}
	}
	for _, a := range siteServiceNeeded() {
		if allowedTo(ctx, t, siteServiceUser, a) {
			t.Fatalf("before config/rbac is installed the site services may already %s: this test proves nothing", a)
		}
	}

	installRBAC(ctx, t)

	for _, a := range needed() {
		if !allowed(ctx, t, a) {
			t.Errorf("the manager may not %s, which the controllers need (add a +kubebuilder:rbac marker in controllers/rbac.go)", a)
		}
	}
	for _, a := range forbidden() {
		if allowed(ctx, t, a) {
			t.Errorf("the manager may %s: least privilege withholds it", a)
		}
	}

	t.Run("as the manager", func(t *testing.T) { asTheManager(t) })
	t.Run("the site services", func(t *testing.T) { siteServiceRBAC(t) })
}

// siteServiceNeeded is what the site services do with the API: read their
// SiteServer and the topology (the task service answers only the agents
// the serving rules give it), keep the Computers of every namespace
// (created at registration, status of check-ins), and read and count the
// bootstrap tokens of the token namespace.
func siteServiceNeeded() []access {
	var n []access
	n = append(n, each([]string{"get", "list", "watch"}, "siteops.io", []string{"siteservers", "sites", "subnets"}, "", "")...)
	for _, ns := range []string{otherNamespace, ""} {
		n = append(n, each([]string{"get", "list", "watch", "create", "patch"}, "siteops.io", []string{"computers"}, "", ns)...)
		n = append(n, each([]string{"patch"}, "siteops.io", []string{"computers"}, "status", ns)...)
	}
	n = append(n, each([]string{"get", "list", "watch", "update"}, "", []string{"secrets"}, "", tokenNamespace)...)
	// DeploymentTasks: read them, and keep their dispatch state.
	for _, ns := range []string{otherNamespace, ""} {
		n = append(n, each([]string{"get", "list", "watch"}, "siteops.io", []string{"deploymenttasks"}, "", ns)...)
		n = append(n, each([]string{"get", "list", "watch", "create", "patch"}, "siteops.io", []string{"dispatchshards"}, "", ns)...)
	}
	// Packages: the package services read them, apply their own copy's
	// entry in the status, and create the Packages of capture uploads.
	for _, ns := range []string{otherNamespace, ""} {
		n = append(n, each([]string{"get", "list", "watch", "create"}, "siteops.io", []string{"packages"}, "", ns)...)
		n = append(n, each([]string{"patch"}, "siteops.io", []string{"packages"}, "status", ns)...)
	}
	return n
}

// siteServiceForbidden is what the site services' account must not do;
// later features add their verbs here and in internal/siteservice/rbac.go.
func siteServiceForbidden() []access {
	var f []access
	kinds := []string{"sites", "subnets", "siteservers"}
	f = append(f, each([]string{"create", "update", "patch", "delete"}, "siteops.io", kinds, "", "")...)
	f = append(f, each([]string{"update", "patch"}, "siteops.io", kinds, "status", "")...)
	f = append(f, each([]string{"update", "delete", "deletecollection"}, "siteops.io", []string{"computers"}, "", otherNamespace)...)
	// A task is its user's; the task services never write it or its
	// status, and never delete dispatch state (it goes with its task).
	f = append(f, each([]string{"create", "update", "patch", "delete"}, "siteops.io", []string{"deploymenttasks"}, "", otherNamespace)...)
	f = append(f, each([]string{"update", "patch"}, "siteops.io", []string{"deploymenttasks"}, "status", otherNamespace)...)
	f = append(f, each([]string{"delete", "deletecollection"}, "siteops.io", []string{"dispatchshards"}, "", otherNamespace)...)
	// A Package's spec is its user's: the package services create the
	// Packages of captures, and never change nor delete one.
	f = append(f, each([]string{"update", "patch", "delete", "deletecollection"}, "siteops.io", []string{"packages"}, "", otherNamespace)...)
	f = append(f, each([]string{"create", "delete", "patch", "deletecollection"}, "", []string{"secrets"}, "", tokenNamespace)...)
	for _, ns := range []string{operatorNamespace, otherNamespace, ""} {
		f = append(f, each(all, "", []string{"secrets", "configmaps", "services", "pods"}, "", ns)...)
		f = append(f, each(all, "apps", []string{"deployments", "statefulsets"}, "", ns)...)
		f = append(f, each([]string{"create"}, "", []string{"serviceaccounts"}, "token", ns)...)
		f = append(f, each([]string{"create", "update"}, "coordination.k8s.io", []string{"leases"}, "", ns)...)
	}
	f = append(f, each(all, "", []string{"nodes"}, "", "")...)
	f = append(f, each([]string{"create", "bind", "escalate"}, "rbac.authorization.k8s.io", []string{"clusterroles", "clusterrolebindings"}, "", "")...)
	return f
}

// siteServiceRBAC checks the site services' account after the install, and
// reads a SiteServer as that account with a real request.
func siteServiceRBAC(t *testing.T) {
	ctx := t.Context()
	for _, a := range siteServiceNeeded() {
		if !allowedTo(ctx, t, siteServiceUser, a) {
			t.Errorf("the site services may not %s, which they need (add a +kubebuilder:rbac marker in internal/siteservice/rbac.go)", a)
		}
	}
	for _, a := range siteServiceForbidden() {
		if allowedTo(ctx, t, siteServiceUser, a) {
			t.Errorf("the site services may %s: least privilege withholds it", a)
		}
	}
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: siteServiceUser, Groups: managerGroups}
	service, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("creating the site services' client: %v", err)
	}
	siteServer := siteServerObject()
	if err := admin.Create(ctx, siteServer); err != nil {
		t.Fatalf("creating a SiteServer: %v", err)
	}
	if err := service.Get(ctx, client.ObjectKeyFromObject(siteServer), siteServerObject()); err != nil {
		t.Errorf("reading SiteServer %s as the site services: %v", siteServer.GetName(), err)
	}
	if err := service.Delete(ctx, siteServerObject()); !apierrors.IsForbidden(err) {
		t.Errorf("deleting a SiteServer as the site services: got %v, want Forbidden", err)
	}
	if err := service.Get(ctx, client.ObjectKey{Namespace: operatorNamespace, Name: "site-operator-ca"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading a Secret of the operator's namespace (its CA key) as the site services: got %v, want Forbidden", err)
	}
	if err := service.List(ctx, &corev1.SecretList{}, client.InNamespace(tokenNamespace)); err != nil {
		t.Errorf("listing the bootstrap tokens as the site services: %v", err)
	}
}

// installRBAC creates the namespaces and every object of config/rbac, as
// `kubectl apply -f config/rbac/` would.
func installRBAC(ctx context.Context, t *testing.T) {
	t.Helper()
	for _, ns := range []string{operatorNamespace, otherNamespace} {
		if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}
	for _, dir := range []string{rbacDir, siteServiceDir, tokensDir} {
		objs, err := manifests.ReadDir(dir)
		if err != nil {
			t.Fatalf("reading %s: %v", dir, err)
		}
		if len(objs) == 0 {
			t.Fatalf("%s holds no objects", dir)
		}
		if dir == tokensDir {
			// Its binding names the account as config/default renames it;
			// config/rbac here keeps the account's unprefixed name.
			for _, obj := range objs {
				if obj.GetKind() == "RoleBinding" {
					if err := unstructured.SetNestedSlice(obj.Object, []any{map[string]any{"kind": "ServiceAccount",
						"name": siteServiceAccount, "namespace": operatorNamespace}}, "subjects"); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := manifests.CreateAll(ctx, admin, objs); err != nil {
			t.Fatalf("applying %s: %v", dir, err)
		}
	}
}

// asTheManager makes real requests with the manager's identity
// (impersonation), so the verdicts above are what a request meets.
func asTheManager(t *testing.T) {
	ctx := t.Context()
	cfg := rest.CopyConfig(restCfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: managerUser, Groups: managerGroups}
	manager, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatalf("creating the manager's client: %v", err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "agent-bootstrap", Namespace: operatorNamespace},
		StringData: map[string]string{"token": "not-for-the-manager"}}
	if err := admin.Create(ctx, secret); err != nil {
		t.Fatalf("creating Secret %s: %v", secret.Name, err)
	}

	if err := manager.Apply(ctx, applyConfiguration(t, taskDeployment(operatorNamespace)),
		client.FieldOwner("rbac-test"), client.ForceOwnership); err != nil {
		t.Errorf("applying a Deployment in the workload namespace %s as the manager: %v", operatorNamespace, err)
	}
	mustBeForbidden(t, "applying a Deployment in namespace "+otherNamespace,
		manager.Apply(ctx, applyConfiguration(t, taskDeployment(otherNamespace)), client.FieldOwner("rbac-test"), client.ForceOwnership))
	mustBeForbidden(t, "creating a Deployment in namespace "+otherNamespace,
		manager.Create(ctx, taskDeployment(otherNamespace)))
	if err := manager.Get(ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{}); err != nil {
		t.Errorf("reading Secret %s in the workload namespace as the manager: %v", secret.Name, err)
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tenant-secret", Namespace: otherNamespace},
		StringData: map[string]string{"token": "not-for-the-manager"}}
	if err := admin.Create(ctx, other); err != nil {
		t.Fatalf("creating Secret %s: %v", other.Name, err)
	}
	mustBeForbidden(t, "reading Secret "+other.Name+" in namespace "+otherNamespace,
		manager.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{}))
	mustBeForbidden(t, "listing Secrets cluster-wide", manager.List(ctx, &corev1.SecretList{}))

	var nodes corev1.NodeList
	if err := manager.List(ctx, &nodes); err != nil {
		t.Errorf("listing nodes as the manager: %v", err)
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "site-server-1"}}
	if err := admin.Create(ctx, node); err != nil {
		t.Fatalf("creating Node %s: %v", node.Name, err)
	}
	mustBeForbidden(t, "labelling Node "+node.Name, manager.Patch(ctx, node,
		client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"siteops.io/site-paris":"true"}}}`))))
}

func mustBeForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s as the manager: got %v, want Forbidden", what, err)
	}
}

// taskDeployment is a minimal valid Deployment like the task service's.
// applyConfiguration is obj as a server-side apply request.
func applyConfiguration(t *testing.T, obj client.Object) runtime.ApplyConfiguration {
	t.Helper()
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatalf("converting %T: %v", obj, err)
	}
	return client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: content})
}

func taskDeployment(namespace string) *appsv1.Deployment {
	labels := map[string]string{"app.kubernetes.io/name": "task-service"}
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "task-service-rbac-test", Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "task", Image: "site-operator:test"}}},
			},
		},
	}
}

// siteServerObject is a minimal SiteServer, unstructured so that the test
// needs no scheme of the siteops.io kinds.
func siteServerObject() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("siteops.io/v1alpha1")
	u.SetKind("SiteServer")
	u.SetName("rbac-test")
	return u
}
