package main

import (
	"encoding/json"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/siteops/site-operator/internal/simcluster"
)

// The baseline is the golden manifests made over for one site: seven
// objects, the benchmark's names everywhere and the golden ones nowhere.
func TestBaselineFromGolden(t *testing.T) {
	root, err := simcluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	golden, err := loadBaseline(root)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := golden.objectsFor("bench-baseline", 7, "bench-local")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string][]string{}
	for _, obj := range objs {
		u := obj.(*unstructured.Unstructured)
		kinds[u.GetKind()] = append(kinds[u.GetKind()], u.GetName())
		data, err := json.Marshal(u.Object)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "lyon") {
			t.Errorf("%s %s still names the golden SiteServer or Sites: %s", u.GetKind(), u.GetName(), data)
		}
		if u.GetNamespace() != "bench-baseline" || len(u.GetOwnerReferences()) != 0 {
			t.Errorf("%s %s: namespace %q, owners %v; want bench-baseline and none", u.GetKind(), u.GetName(), u.GetNamespace(), u.GetOwnerReferences())
		}
	}
	t.Logf("baseline objects: %v", kinds)
	if n := len(objs); n != 7 {
		t.Errorf("got %d objects %v, want 7: a ConfigMap, a Deployment, a StatefulSet, the server's two Services and the site's two", n, kinds)
	}
	if got := kinds["Service"]; len(got) != 4 {
		t.Errorf("Services: got %v, want the server's and the site's task and package Services", got)
	}

	var task appsv1.Deployment
	var pkg appsv1.StatefulSet
	for _, obj := range objs {
		u := obj.(*unstructured.Unstructured)
		var into any
		switch u.GetKind() {
		case "Deployment":
			into = &task
		case "StatefulSet":
			into = &pkg
		default:
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into); err != nil {
			t.Fatal(err)
		}
	}
	if task.Spec.Replicas == nil || *task.Spec.Replicas != 1 || pkg.Spec.Replicas == nil || *pkg.Spec.Replicas != 1 {
		t.Errorf("replicas: task %v, package %v; want 1 each", task.Spec.Replicas, pkg.Spec.Replicas)
	}
	if want := "b0007-config"; task.Spec.Template.Spec.Volumes[0].ConfigMap.Name != want {
		t.Errorf("task config volume: got %q, want %q", task.Spec.Template.Spec.Volumes[0].ConfigMap.Name, want)
	}
	siteLabels := 0
	for k := range task.Spec.Template.Labels {
		if strings.HasSuffix(k, "/s0007") {
			siteLabels++
		}
	}
	if siteLabels != 1 {
		t.Errorf("task pod labels %v: want one label for site s0007", task.Spec.Template.Labels)
	}
	for _, claim := range pkg.Spec.VolumeClaimTemplates {
		size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
		if claim.Spec.StorageClassName == nil || *claim.Spec.StorageClassName != "bench-local" || size.String() != baselineClaimSize {
			t.Errorf("claim %s: class %v, size %s; want bench-local, %s", claim.Name, claim.Spec.StorageClassName, size.String(), baselineClaimSize)
		}
	}
}
