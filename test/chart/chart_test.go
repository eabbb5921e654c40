// Package chart tests the install manifests: the Helm chart
// (charts/site-operator) rendered by the pinned helm with several sets of
// values, and kustomize's config/default, every object sent to a real
// kube-apiserver (envtest) as a server-side apply dry run, so that the API
// server, not a schema written here, says each is valid. Values the chart
// must refuse are refused by `helm template` with a message naming them.
//
// Run with the local control plane:
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go test ./test/chart
package chart

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// root is the repository's top directory: helm and kustomize run there.
const root = "../.."

// namespace is the release namespace of every rendering.
const namespace = "site-operator-system"

// fieldOwner is the field manager of the dry-run applies.
const fieldOwner = "site-operator-chart-test"

var k8s client.Client

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS must name the control-plane binaries: "+
			`KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go test ./test/chart`)
		return 1
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{root + "/config/crd/bases"}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting the control plane: %v\n", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8s, err = client.New(cfg, client.Options{}); err != nil {
		fmt.Fprintf(os.Stderr, "creating the client: %v\n", err)
		return 1
	}
	// The namespaces the manifests put objects in exist for real: a dry
	// run in a missing namespace is refused before it is validated.
	for _, ns := range []string{namespace, "site-operator-tokens", "site-services"} {
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintf(os.Stderr, "creating namespace %s: %v\n", ns, err)
			return 1
		}
	}
	return m.Run()
}

// goTool runs a tool pinned in hack/tools/go.mod from the repository root.
func goTool(args ...string) (stdout []byte, stderr string, err error) {
	cmd := exec.Command("go", append([]string{"tool", "-modfile=hack/tools/go.mod"}, args...)...)
	cmd.Dir = root
	var errBuf bytes.Buffer
	cmd.Stderr = &errBuf
	out, err := cmd.Output()
	return out, errBuf.String(), err
}

// helmTemplate renders the chart with the values sets: --set, or
// --set-string for those written "string:key=value" (label values).
func helmTemplate(sets ...string) ([]byte, string, error) {
	args := []string{"helm", "template", "site-operator", "charts/site-operator", "--namespace", namespace}
	for _, s := range sets {
		if v, ok := strings.CutPrefix(s, "string:"); ok {
			args = append(args, "--set-string", v)
			continue
		}
		args = append(args, "--set", s)
	}
	return goTool(args...)
}

// decode splits a multi-document YAML stream into objects.
func decode(t *testing.T, manifests []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifests)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading the manifests: %v", err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatalf("decoding a manifest: %v\n%s", err, doc)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "{}" {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(js); err != nil {
			t.Fatalf("decoding a manifest: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

// dryRunApply sends every object to the API server as a server-side apply
// dry run and fails on any refusal. Objects of kinds the API server does
// not serve (the Prometheus Operator's, cert-manager's) are listed in the
// log and skipped: their CRDs are not installed here.
func dryRunApply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, err := range dryRunApplyErrors(t, objs) {
		t.Error(err)
	}
}

// dryRunApplyErrors is dryRunApply's work: the API server's refusals.
func dryRunApplyErrors(t *testing.T, objs []*unstructured.Unstructured) []error {
	t.Helper()
	ctx := context.Background()
	var skipped []string
	var refused []error
	applied := 0
	for _, obj := range objs {
		err := k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
			client.DryRunAll, client.FieldOwner(fieldOwner), client.ForceOwnership)
		switch {
		case meta.IsNoMatchError(err):
			skipped = append(skipped, obj.GetKind()+"/"+obj.GetName())
		case err != nil:
			refused = append(refused, fmt.Errorf("the API server refuses %s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err))
		default:
			applied++
		}
	}
	if applied == 0 {
		t.Fatal("no object applied")
	}
	t.Logf("%d objects accepted by the API server (dry run)", applied)
	if len(skipped) > 0 {
		t.Logf("skipped, their kinds are not served by this API server: %s", strings.Join(skipped, ", "))
	}
	return refused
}

// TestAPIServerJudges: what the schema lets through but the API server
// refuses (a CEL rule of the SiteServer CRD) is caught by the dry run, so
// the dry run is what decides.
func TestAPIServerJudges(t *testing.T) {
	out, stderr, err := helmTemplate("central.storage.size=512Mi")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr)
	}
	errs := dryRunApplyErrors(t, decode(t, out))
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "SiteServer /central") ||
		!strings.Contains(errs[0].Error(), "spec.services.package.storage.size must be at least 1Gi") {
		t.Errorf("want the API server to refuse only central's storage of 512Mi, got %v", errs)
	}
}

// rendered is a chart rendering with lookups.
type rendered []*unstructured.Unstructured

func (r rendered) ofKind(kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range r {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

func (r rendered) one(t *testing.T, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range r.ofKind(kind) {
		if o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
}

// managerContainer is the manager Deployment's container.
func (r rendered) managerContainer(t *testing.T) map[string]any {
	t.Helper()
	containers, _, _ := unstructured.NestedSlice(r.one(t, "Deployment", "site-operator").Object, "spec", "template", "spec", "containers")
	if len(containers) != 1 {
		t.Fatalf("the manager Deployment has %d containers, want 1", len(containers))
	}
	return containers[0].(map[string]any)
}

func (r rendered) managerArgs(t *testing.T) []string {
	t.Helper()
	args, _, _ := unstructured.NestedStringSlice(r.managerContainer(t), "args")
	return args
}

func str(obj map[string]any, fields ...string) string {
	s, _, _ := unstructured.NestedString(obj, fields...)
	return s
}

func hasArgs(t *testing.T, args []string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !slices.Contains(args, w) {
			t.Errorf("the manager's arguments lack %s:\n%s", w, strings.Join(args, "\n"))
		}
	}
}

func lacksArgPrefix(t *testing.T, args []string, prefix string) {
	t.Helper()
	for _, a := range args {
		if strings.HasPrefix(a, prefix) {
			t.Errorf("the manager's arguments have %s", a)
		}
	}
}

// TestChart renders the chart with each set of values, checks what a user
// would notice in the rendering and has the API server accept every object.
func TestChart(t *testing.T) {
	cases := []struct {
		name  string
		sets  []string
		check func(t *testing.T, r rendered)
	}{{
		name: "defaults",
		check: func(t *testing.T, r rendered) {
			d := r.one(t, "Deployment", "site-operator")
			if n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); n != 2 {
				t.Errorf("manager replicas %d, want 2", n)
			}
			if _, ok, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec", "affinity", "podAntiAffinity"); !ok {
				t.Error("the manager's pods have no anti-affinity")
			}
			pdb := r.one(t, "PodDisruptionBudget", "site-operator")
			if n, _, _ := unstructured.NestedInt64(pdb.Object, "spec", "minAvailable"); n != 1 {
				t.Errorf("PodDisruptionBudget minAvailable %d, want 1", n)
			}
			args := r.managerArgs(t)
			hasArgs(t, args, "--leader-elect", "--metrics-secure=true",
				"--service-image=site-operator:0.1.0", "--service-image-pull-policy=IfNotPresent", "--locator-operator-ca")
			lacksArgPrefix(t, args, "--certificates")
			crds := r.ofKind("CustomResourceDefinition")
			if len(crds) != 8 {
				t.Errorf("%d CRDs rendered, want the 8 of config/crd/bases", len(crds))
			}
			for _, crd := range crds {
				if crd.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
					t.Errorf("CRD %s is not annotated helm.sh/resource-policy: keep", crd.GetName())
				}
			}
			reader := r.one(t, "ClusterRole", "site-operator-metrics-reader")
			rules, _, _ := unstructured.NestedSlice(reader.Object, "rules")
			if urls, _, _ := unstructured.NestedStringSlice(rules[0].(map[string]any), "nonResourceURLs"); !slices.Equal(urls, []string{"/metrics"}) {
				t.Errorf("metrics-reader grants %v, want /metrics", urls)
			}
			central := r.one(t, "SiteServer", "central")
			ann := central.GetAnnotations()
			if ann["helm.sh/hook"] != "post-install,post-upgrade" {
				t.Errorf("central's hook %q, want post-install,post-upgrade (the SiteServer kind exists only once the CRDs are created)", ann["helm.sh/hook"])
			}
			if p := ann["helm.sh/hook-delete-policy"]; strings.Contains(p, "before-hook-creation") || p == "" {
				t.Errorf("central's hook-delete-policy %q would delete it (and its content) at every upgrade", p)
			}
			if sites, ok, _ := unstructured.NestedSlice(central.Object, "spec", "sites"); ok && len(sites) > 0 {
				t.Errorf("central serves sites %v, want none (unassigned)", sites)
			}
			for _, kind := range []string{"NetworkPolicy", "ServiceMonitor", "Role"} {
				for _, o := range r.ofKind(kind) {
					if kind != "Role" || strings.Contains(o.GetName(), "cert-manager") {
						t.Errorf("%s %s rendered by default", kind, o.GetName())
					}
				}
			}
		},
	}, {
		name: "crds not kept, one replica",
		sets: []string{"crds.keep=false", "replicaCount=1"},
		check: func(t *testing.T, r rendered) {
			for _, crd := range r.ofKind("CustomResourceDefinition") {
				if _, ok := crd.GetAnnotations()["helm.sh/resource-policy"]; ok {
					t.Errorf("CRD %s keeps the resource policy with crds.keep=false", crd.GetName())
				}
			}
			if pdbs := r.ofKind("PodDisruptionBudget"); len(pdbs) != 0 {
				t.Error("a PodDisruptionBudget for one replica would block every drain")
			}
		},
	}, {
		name: "crds disabled",
		sets: []string{"crds.enabled=false"},
		check: func(t *testing.T, r rendered) {
			if crds := r.ofKind("CustomResourceDefinition"); len(crds) != 0 {
				t.Errorf("%d CRDs rendered with crds.enabled=false", len(crds))
			}
		},
	}, {
		name: "cert-manager",
		sets: []string{"certManager.enabled=true", "certManager.issuerRef.kind=ClusterIssuer", "certManager.issuerRef.name=branch-ca"},
		check: func(t *testing.T, r rendered) {
			hasArgs(t, r.managerArgs(t), "--certificates=cert-manager", "--cert-manager-issuer-kind=ClusterIssuer",
				"--cert-manager-issuer-name=branch-ca", "--cert-manager-issuer-group=cert-manager.io")
			role := r.one(t, "Role", "site-operator-cert-manager")
			if role.GetNamespace() != namespace {
				t.Errorf("the cert-manager Role is in %q, want the workload namespace %s", role.GetNamespace(), namespace)
			}
			rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
			rule := rules[0].(map[string]any)
			groups, _, _ := unstructured.NestedStringSlice(rule, "apiGroups")
			resources, _, _ := unstructured.NestedStringSlice(rule, "resources")
			verbs, _, _ := unstructured.NestedStringSlice(rule, "verbs")
			sort.Strings(verbs)
			if !slices.Equal(groups, []string{"cert-manager.io"}) || !slices.Equal(resources, []string{"certificates"}) ||
				!slices.Equal(verbs, []string{"create", "delete", "get", "list", "patch", "update", "watch"}) {
				t.Errorf("the cert-manager Role grants %v %v %v", groups, resources, verbs)
			}
			r.one(t, "RoleBinding", "site-operator-cert-manager")
		},
	}, {
		name: "cert-manager with a workload namespace",
		sets: []string{"certManager.enabled=true", "certManager.issuerRef.kind=Issuer", "certManager.issuerRef.name=ca",
			"extraArgs={--workload-namespace=site-services}"},
		check: func(t *testing.T, r rendered) {
			if ns := r.one(t, "Role", "site-operator-cert-manager").GetNamespace(); ns != "site-services" {
				t.Errorf("the cert-manager Role is in %q, want the workload namespace site-services", ns)
			}
		},
	}, {
		name: "central disabled",
		sets: []string{"central.enabled=false"},
		check: func(t *testing.T, r rendered) {
			if ss := r.ofKind("SiteServer"); len(ss) != 0 {
				t.Errorf("%d SiteServers rendered with central.enabled=false", len(ss))
			}
		},
	}, {
		name: "custom images",
		sets: []string{"image.repository=registry.example/ops/site-operator", "image.tag=v1.2.3", "image.pullPolicy=Always",
			"siteServices.image.repository=registry.example/ops/site-services", "siteServices.image.tag=v1.2.4",
			"siteServices.image.pullPolicy=IfNotPresent", "imagePullSecrets[0].name=regcred"},
		check: func(t *testing.T, r rendered) {
			c := r.managerContainer(t)
			if img := str(c, "image"); img != "registry.example/ops/site-operator:v1.2.3" {
				t.Errorf("manager image %q", img)
			}
			if p := str(c, "imagePullPolicy"); p != "Always" {
				t.Errorf("manager pull policy %q", p)
			}
			hasArgs(t, r.managerArgs(t), "--service-image=registry.example/ops/site-services:v1.2.4",
				"--service-image-pull-policy=IfNotPresent")
		},
	}, {
		name: "site services take the manager's image by default",
		sets: []string{"image.repository=registry.example/ops/site-operator", "image.tag=v2.0.0", "image.pullPolicy=Always"},
		check: func(t *testing.T, r rendered) {
			hasArgs(t, r.managerArgs(t), "--service-image=registry.example/ops/site-operator:v2.0.0", "--service-image-pull-policy=Always")
		},
	}, {
		name: "NodePort exposure",
		sets: []string{"locator.service.type=NodePort", "locator.service.nodePort=30443", "locator.service.externalTrafficPolicy=Local",
			"central.exposure.type=NodePort", "central.storage.size=50Gi", "central.storage.storageClassName=site-content",
			"string:central.nodeSelector.siteops\\.io/site-server=true"},
		check: func(t *testing.T, r rendered) {
			svc := r.one(t, "Service", "site-operator-locator")
			if typ := str(svc.Object, "spec", "type"); typ != "NodePort" {
				t.Errorf("locator Service type %q", typ)
			}
			central := r.one(t, "SiteServer", "central")
			if typ := str(central.Object, "spec", "exposure", "type"); typ != "NodePort" {
				t.Errorf("central exposure %q", typ)
			}
			if sc := str(central.Object, "spec", "services", "package", "storage", "storageClassName"); sc != "site-content" {
				t.Errorf("central storage class %q", sc)
			}
			if v := str(central.Object, "spec", "nodeSelector", "siteops.io/site-server"); v != "true" {
				t.Errorf("central nodeSelector %q", v)
			}
		},
	}, {
		name: "LoadBalancer exposure",
		sets: []string{"locator.service.type=LoadBalancer", "locator.service.loadBalancerClass=example.com/lb",
			"string:locator.service.annotations.example\\.com/internal=true", "locator.hosts={locator.branch.example}",
			"central.exposure.type=LoadBalancer", "central.exposure.loadBalancerClass=example.com/lb",
			"string:central.exposure.annotations.example\\.com/internal=true", "central.exposure.addresses={central.branch.example:8443}"},
		check: func(t *testing.T, r rendered) {
			svc := r.one(t, "Service", "site-operator-locator")
			if c := str(svc.Object, "spec", "loadBalancerClass"); c != "example.com/lb" {
				t.Errorf("locator loadBalancerClass %q", c)
			}
			hasArgs(t, r.managerArgs(t), "--locator-hosts=locator.branch.example")
			central := r.one(t, "SiteServer", "central")
			if c := str(central.Object, "spec", "exposure", "loadBalancerClass"); c != "example.com/lb" {
				t.Errorf("central loadBalancerClass %q", c)
			}
		},
	}, {
		name: "network policies",
		sets: []string{"networkPolicy.enabled=true", "networkPolicy.agents[0].ipBlock.cidr=10.0.0.0/8",
			"string:networkPolicy.agents[1].namespaceSelector.matchLabels.agents=true"},
		check: func(t *testing.T, r rendered) {
			var names []string
			for _, np := range r.ofKind("NetworkPolicy") {
				names = append(names, np.GetName())
				types, _, _ := unstructured.NestedStringSlice(np.Object, "spec", "policyTypes")
				if !slices.Equal(types, []string{"Ingress"}) {
					t.Errorf("NetworkPolicy %s policyTypes %v, want [Ingress]", np.GetName(), types)
				}
			}
			want := []string{"site-operator-manager", "site-operator-package-service", "site-operator-task-service"}
			sort.Strings(names)
			if !slices.Equal(names, want) {
				t.Errorf("NetworkPolicies %v, want %v", names, want)
			}
			pkg := r.one(t, "NetworkPolicy", "site-operator-package-service")
			ingress, _, _ := unstructured.NestedSlice(pkg.Object, "spec", "ingress")
			peers := 0
			for _, rule := range ingress {
				from, _, _ := unstructured.NestedSlice(rule.(map[string]any), "from")
				for _, f := range from {
					if str(f.(map[string]any), "podSelector", "matchLabels", "app.kubernetes.io/component") == "package-service" {
						peers++
					}
				}
			}
			if peers != 1 {
				t.Errorf("the package services' policy lets other package services in %d times, want once", peers)
			}
		},
	}, {
		name: "monitoring",
		sets: []string{"monitoring.serviceMonitor.enabled=true", "monitoring.serviceMonitor.insecureSkipVerify=true",
			"monitoring.podMonitor.enabled=true", "monitoring.prometheusRule.enabled=true", "monitoring.dashboards.enabled=true",
			"metrics.readers[0].kind=ServiceAccount", "metrics.readers[0].name=prometheus-k8s", "metrics.readers[0].namespace=monitoring"},
		check: func(t *testing.T, r rendered) {
			sm := r.one(t, "ServiceMonitor", "site-operator-manager")
			endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			ep := endpoints[0].(map[string]any)
			if str(ep, "scheme") != "https" || str(ep, "bearerTokenFile") != "/var/run/secrets/kubernetes.io/serviceaccount/token" {
				t.Errorf("the ServiceMonitor endpoint %v does not scrape over HTTPS with the token", ep)
			}
			if skip, _, _ := unstructured.NestedBool(ep, "tlsConfig", "insecureSkipVerify"); !skip {
				t.Errorf("the ServiceMonitor endpoint %v verifies the certificate although insecureSkipVerify is set", ep)
			}
			r.one(t, "ClusterRoleBinding", "site-operator-metrics-reader")
		},
	}, {
		name: "monitoring without skipping verification",
		sets: []string{"monitoring.serviceMonitor.enabled=true", "metrics.certSecretName=metrics-tls"},
		check: func(t *testing.T, r rendered) {
			endpoints, _, _ := unstructured.NestedSlice(r.one(t, "ServiceMonitor", "site-operator-manager").Object, "spec", "endpoints")
			if _, ok, _ := unstructured.NestedFieldNoCopy(endpoints[0].(map[string]any), "tlsConfig"); ok {
				t.Errorf("the ServiceMonitor skips verification unasked: %v", endpoints[0])
			}
			hasArgs(t, r.managerArgs(t), "--metrics-cert-dir=/etc/site-operator/metrics-tls")
		},
	}, {
		name: "listening on the pod's address",
		sets: []string{"listenHost=$(POD_IP)"},
		check: func(t *testing.T, r rendered) {
			hasArgs(t, r.managerArgs(t), "--listen-host=$(POD_IP)")
		},
	}, {
		name: "plain-HTTP metrics",
		sets: []string{"metrics.secure=false", "monitoring.serviceMonitor.enabled=true"},
		check: func(t *testing.T, r rendered) {
			hasArgs(t, r.managerArgs(t), "--metrics-secure=false")
			endpoints, _, _ := unstructured.NestedSlice(r.one(t, "ServiceMonitor", "site-operator-manager").Object, "spec", "endpoints")
			ep := endpoints[0].(map[string]any)
			if str(ep, "scheme") != "" || str(ep, "bearerTokenFile") != "" {
				t.Errorf("the plain-HTTP ServiceMonitor endpoint is %v, want port and path only", ep)
			}
			if len(r.ofKind("ClusterRole")) > 0 {
				for _, cr := range r.ofKind("ClusterRole") {
					if cr.GetName() == "site-operator-metrics-reader" {
						t.Error("a metrics-reader ClusterRole for plain-HTTP metrics")
					}
				}
			}
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := helmTemplate(tc.sets...)
			if err != nil {
				t.Fatalf("helm template: %v\n%s", err, stderr)
			}
			r := rendered(decode(t, out))
			tc.check(t, r)
			dryRunApply(t, r)
		})
	}
}

// TestChartRefusesWrongValues: values that cannot work fail `helm
// template` (and so `helm install`) with a message naming the value.
func TestChartRefusesWrongValues(t *testing.T) {
	cases := []struct {
		name string
		sets []string
		want []string
	}{
		{"negative replicas", []string{"replicaCount=-1"}, []string{"/replicaCount", "minimum"}},
		{"unknown key", []string{"replicas=2"}, []string{"additional properties 'replicas' not allowed"}},
		{"misspelt nested key", []string{"central.storageSize=20Gi"}, []string{"/central", "additional properties 'storageSize' not allowed"}},
		{"cert-manager without issuer", []string{"certManager.enabled=true"}, []string{"/certManager/issuerRef/name", "/certManager/issuerRef/kind"}},
		{"cert-manager with a wrong kind", []string{"certManager.enabled=true", "certManager.issuerRef.kind=CA", "certManager.issuerRef.name=x"},
			[]string{`certManager.issuerRef.kind "CA"`, "Issuer or ClusterIssuer"}},
		{"bad central exposure", []string{"central.exposure.type=External"}, []string{"/central/exposure/type", "ClusterIP", "NodePort", "LoadBalancer"}},
		{"bad locator exposure", []string{"locator.service.type=Ingress"}, []string{"/locator/service/type"}},
		{"bad storage size", []string{"central.storage.size=lots"}, []string{"/central/storage/size"}},
		{"bad pull policy", []string{"siteServices.image.pullPolicy=Sometimes"}, []string{"/siteServices/image/pullPolicy"}},
		{"bad agents CIDR", []string{"networkPolicy.agents[0].ipBlock.cidr=everywhere"}, []string{"/networkPolicy/agents/0/ipBlock/cidr"}},
		{"replicas without leader election", []string{"leaderElect=false"}, []string{"replicaCount > 1 needs leaderElect: true"}},
		{"bad listen host", []string{"listenHost=every address"}, []string{"/listenHost"}},
		{"PDB blocking every drain", []string{"podDisruptionBudget.minAvailable=2"}, []string{"podDisruptionBudget.minAvailable (2) must be less than replicaCount (2)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := helmTemplate(tc.sets...)
			if err == nil {
				t.Fatalf("helm template accepts %v", tc.sets)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("helm template's error does not say %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestKustomizeDefault: config/default renders the same install, and the
// API server accepts every object of it.
func TestKustomizeDefault(t *testing.T) {
	out, stderr, err := goTool("kustomize", "build", "config/default")
	if err != nil {
		t.Fatalf("kustomize build config/default: %v\n%s", err, stderr)
	}
	r := rendered(decode(t, out))
	var d *unstructured.Unstructured
	for _, o := range r.ofKind("Deployment") {
		d = o
	}
	if d == nil {
		t.Fatal("no manager Deployment")
	}
	if n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); n != 2 {
		t.Errorf("manager replicas %d, want 2", n)
	}
	if pdbs := r.ofKind("PodDisruptionBudget"); len(pdbs) != 1 || pdbs[0].GetNamespace() != d.GetNamespace() {
		t.Errorf("want one PodDisruptionBudget beside the manager, got %d", len(pdbs))
	}
	for _, want := range []struct{ kind, name string }{
		{"ClusterRole", "site-operator-manager"}, {"ClusterRole", "site-operator-site-service"},
		{"ClusterRole", "site-operator-metrics-reader"}, {"ServiceAccount", "site-operator-site-service"},
		{"RoleBinding", "site-operator-site-service-tokens"}, {"Namespace", "site-operator-tokens"},
	} {
		r.one(t, want.kind, want.name)
	}
	if crds := r.ofKind("CustomResourceDefinition"); len(crds) != 8 {
		t.Errorf("%d CRDs, want 8", len(crds))
	}
	for _, o := range r {
		if o.GetAPIVersion() == "siteops.io/v1alpha1" {
			t.Errorf("config/default holds %s %s: samples are kept apart (config/samples)", o.GetKind(), o.GetName())
		}
	}
	dryRunApply(t, r)
}
