package controllers

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

var testWorkloads = WorkloadConfig{Namespace: "site-operator-system", Image: "site-operator:0.1.0",
	ImagePullPolicy: corev1.PullIfNotPresent}

func goldenSiteServer() *siteopsv1.SiteServer {
	return &siteopsv1.SiteServer{
		ObjectMeta: metav1.ObjectMeta{Name: "lyon-srv", UID: "11111111-2222-3333-4444-555555555555"},
		Spec: siteopsv1.SiteServerSpec{
			Sites:        []string{"lyon", "lyon-annex"},
			NodeSelector: map[string]siteopsv1.LabelValue{"siteops.io/site-server": "true"},
			Tolerations: []siteopsv1.Toleration{{Key: "siteops.io/dedicated", Operator: corev1.TolerationOpEqual,
				Value: "site-server", Effect: corev1.TaintEffectNoSchedule}},
			Services: siteopsv1.SiteServices{
				Task: siteopsv1.TaskService{Replicas: ptr.To(int32(2)), Resources: siteopsv1.Resources{
					Limits: siteopsv1.ResourceAmounts{Memory: ptr.To(resource.MustParse("256Mi"))}}},
				Package: siteopsv1.PackageService{
					Storage:        siteopsv1.PackageStorage{Size: ptr.To(resource.MustParse("200Gi")), StorageClassName: "local-ssd"},
					BandwidthLimit: ptr.To(resource.MustParse("50Mi")),
					// A limit below the default request: the request follows it.
					Resources: siteopsv1.Resources{Limits: siteopsv1.ResourceAmounts{CPU: ptr.To(resource.MustParse("20m"))}},
				},
			},
		},
	}
}

// expectGolden compares obj, as YAML, with testdata/golden/name; -update
// rewrites the file.
func expectGolden(t *testing.T, name string, obj any) {
	t.Helper()
	got, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "golden", name)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s (run `go test ./controllers -run Golden -update` to create it): %v", path, err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from what the builder makes (rerun with -update after checking):\n--- got\n%s", path, got)
	}
}

func TestBuildersGolden(t *testing.T) {
	ss := goldenSiteServer()
	cm, hash, err := desiredConfigMap(ss, testWorkloads)
	if err != nil {
		t.Fatal(err)
	}
	expectGolden(t, "configmap.yaml", cm)
	expectGolden(t, "task-deployment.yaml", desiredTaskDeployment(ss, testWorkloads, hash))
	expectGolden(t, "package-statefulset.yaml", desiredPackageStatefulSet(ss, testWorkloads, hash))
	expectGolden(t, "task-service.yaml", desiredServerService(ss, componentTask, testWorkloads))
	expectGolden(t, "task-pdb.yaml", desiredTaskPDB(ss, testWorkloads))
	site := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "lyon", UID: "66666666-7777-8888-9999-000000000000"}}
	expectGolden(t, "site-task-service.yaml", desiredSiteService(site, componentTask, testWorkloads))
}

// Every pod must meet the restricted Pod Security Standard and request
// resources, whatever the spec says.
func TestPodsAreRestrictedAndRequestResources(t *testing.T) {
	ss := goldenSiteServer()
	ss.Spec.Services.Task.Resources = siteopsv1.Resources{}
	for name, spec := range map[string]*corev1.PodSpec{
		"task":    podSpecOf(t, desiredTaskDeployment(ss, testWorkloads, "h").Spec.Template.Spec),
		"package": podSpecOf(t, desiredPackageStatefulSet(ss, testWorkloads, "h").Spec.Template.Spec),
	} {
		psc := spec.SecurityContext
		if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil ||
			psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod security context %+v is not restricted", name, psc)
		}
		for _, c := range spec.Containers {
			sc := c.SecurityContext
			if sc == nil || ptr.Deref(sc.AllowPrivilegeEscalation, true) || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) ||
				sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
				t.Errorf("%s: container %s security context %+v is not restricted", name, c.Name, sc)
			}
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s: container %s requests no CPU or memory: %v", name, c.Name, c.Resources.Requests)
			}
			if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
				t.Errorf("%s: container %s has no /readyz readiness probe", name, c.Name)
			}
		}
	}
}

// Plain HTTP is asked for explicitly (the manager's
// --site-services-insecure-http); HTTPS otherwise.
func TestPlainHTTPOnlyWhenAsked(t *testing.T) {
	ss := goldenSiteServer()
	plain := testWorkloads
	plain.PlainHTTP = true
	for _, tc := range []struct {
		wc       WorkloadConfig
		insecure bool
	}{{testWorkloads, false}, {plain, true}} {
		for name, spec := range map[string]*corev1.PodSpec{
			"task":    podSpecOf(t, desiredTaskDeployment(ss, tc.wc, "h").Spec.Template.Spec),
			"package": podSpecOf(t, desiredPackageStatefulSet(ss, tc.wc, "h").Spec.Template.Spec),
		} {
			if got := slices.Contains(spec.Containers[0].Args, "--insecure-http"); got != tc.insecure {
				t.Errorf("PlainHTTP=%v: %s container args %v: --insecure-http %v, want %v", tc.wc.PlainHTTP, name, spec.Containers[0].Args, got, tc.insecure)
			}
		}
	}
}

// podSpecOf converts a pod spec apply configuration to the API type.
func podSpecOf(t *testing.T, ac any) *corev1.PodSpec {
	t.Helper()
	data, err := yaml.Marshal(ac)
	if err != nil {
		t.Fatal(err)
	}
	var spec corev1.PodSpec
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatal(err)
	}
	return &spec
}

// The labels decide which Site Services select a pod.
func TestPodLabels(t *testing.T) {
	ss := goldenSiteServer()
	labels := podLabels(ss, componentTask)
	for _, want := range []string{"site.siteops.io/lyon", "site.siteops.io/lyon-annex"} {
		if labels[want] != "true" {
			t.Errorf("pod labels %v lack %s=true", labels, want)
		}
	}
	if _, ok := labels[LabelUnassigned]; ok {
		t.Errorf("a server with sites is labelled unassigned: %v", labels)
	}
	ss.Spec.Sites = nil
	if podLabels(ss, componentTask)[LabelUnassigned] != "true" {
		t.Errorf("an unassigned server's pods lack %s=true", LabelUnassigned)
	}
}

// A bandwidthLimit change reaches the ConfigMap but not the hash that rolls
// the pods: the package service follows it through the API, and a restart
// would cut its transfers. Any other change rolls them.
func TestConfigHashLeavesOutTheBandwidthLimit(t *testing.T) {
	ss := goldenSiteServer()
	_, before, err := desiredConfigMap(ss, testWorkloads)
	if err != nil {
		t.Fatal(err)
	}
	ss.Spec.Services.Package.BandwidthLimit = ptr.To(resource.MustParse("10Mi"))
	cm, after, err := desiredConfigMap(ss, testWorkloads)
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("a bandwidthLimit change moved the config hash from %s to %s: the package pods would restart", before, after)
	}
	if !strings.Contains(cm.Data[config.FileName], "bandwidthLimit: 10485760") {
		t.Errorf("the ConfigMap does not carry the new limit:\n%s", cm.Data[config.FileName])
	}
	ss.Spec.Sites = append(ss.Spec.Sites, "lyon-west")
	if _, changed, _ := desiredConfigMap(ss, testWorkloads); changed == before {
		t.Error("a change of sites left the config hash as it was")
	}
}

// The content store's claim goes with the SiteServer unless it asks to
// keep it; scaling never deletes it.
func TestPackageClaimRetention(t *testing.T) {
	ss := goldenSiteServer()
	for _, retain := range []bool{false, true} {
		ss.Spec.Services.Package.Storage.RetainOnDelete = retain
		p := desiredPackageStatefulSet(ss, testWorkloads, "h").Spec.PersistentVolumeClaimRetentionPolicy
		want := appsv1.DeletePersistentVolumeClaimRetentionPolicyType
		if retain {
			want = appsv1.RetainPersistentVolumeClaimRetentionPolicyType
		}
		if p == nil || *p.WhenDeleted != want || *p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
			t.Errorf("retainOnDelete %v: retention policy %+v, want whenDeleted %s, whenScaled Retain", retain, p, want)
		}
	}
}
