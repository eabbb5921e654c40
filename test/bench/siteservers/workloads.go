package main

import (
	"fmt"
	"path/filepath"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/manifests"
)

// The golden manifests are what the SiteServer builders make for the golden
// SiteServer of controllers/siteserver_builders_test.go: goldenServer,
// serving goldenSite and goldenOtherSite. The baseline is read from them at
// run time, so it follows the builders instead of a copy that drifts.
const (
	goldenDir       = "controllers/testdata/golden"
	goldenServer    = "lyon-srv"
	goldenSite      = "lyon"
	goldenOtherSite = "lyon-annex"
)

// baselineClaimSize is the size of the baseline's content claims: the
// default of spec.services.package.storage.size, which the benchmark's
// SiteServers leave unset.
const baselineClaimSize = "10Gi"

const (
	labelComponent   = "app.kubernetes.io/component"
	componentTask    = "task-service"
	componentPackage = "package-service"
)

// baseline holds the objects the operator makes for one SiteServer serving
// one Site, with the golden names in them.
type baseline struct {
	objects []*unstructured.Unstructured
}

// loadBaseline reads the golden manifests under root. It leaves out the
// PodDisruptionBudget (made only for more than one task replica; the
// benchmark's servers have one), and adds the package-service Services,
// which the builders make as the task-service ones with the other
// component, unless a golden file holds them.
func loadBaseline(root string) (*baseline, error) {
	dir := filepath.Join(root, goldenDir)
	golden, err := manifests.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the golden manifests: %w", err)
	}
	b := &baseline{}
	names := map[string]bool{}
	for _, obj := range golden {
		if obj.GetKind() == "PodDisruptionBudget" {
			continue
		}
		if !strings.Contains(obj.GetName(), goldenServer) && !strings.Contains(obj.GetName(), goldenSite) {
			return nil, fmt.Errorf("%s %s in %s names neither SiteServer %s nor Site %s: update the golden names in test/bench/siteservers",
				obj.GetKind(), obj.GetName(), dir, goldenServer, goldenSite)
		}
		b.objects = append(b.objects, obj)
		names[obj.GetKind()+"/"+obj.GetName()] = true
	}
	toPackage := strings.NewReplacer("task", "package")
	for _, obj := range b.objects {
		if obj.GetKind() != "Service" || obj.GetLabels()[labelComponent] != componentTask {
			continue
		}
		twin := &unstructured.Unstructured{Object: substitute(obj.Object, toPackage).(map[string]any)}
		if twin.GetLabels()[labelComponent] != componentPackage {
			return nil, fmt.Errorf("the package-service twin of Service %s has component %q", obj.GetName(), twin.GetLabels()[labelComponent])
		}
		if key := "Service/" + twin.GetName(); !names[key] {
			b.objects = append(b.objects, twin)
			names[key] = true
		}
	}
	for _, kind := range []string{"Deployment", "StatefulSet"} {
		found := false
		for _, obj := range b.objects {
			found = found || obj.GetKind() == kind
		}
		if !found {
			return nil, fmt.Errorf("no %s in %s", kind, dir)
		}
	}
	return b, nil
}

// objectsFor are, for site i, the baseline's objects written directly in
// namespace: the golden objects with the server, the sites and the
// namespace substituted, without owner (no SiteServer exists), with one
// replica each and content claims of class. What the golden SiteServer's
// spec adds beyond the benchmark's (a toleration, a memory limit, a
// bandwidth limit in the configuration) stays: it changes nothing on kwok
// nodes without taints.
func (b *baseline) objectsFor(namespace string, i int, class string) ([]client.Object, error) {
	server, site := fmt.Sprintf("b%04d", i), fmt.Sprintf("s%04d", i)
	// Replacer tries its pairs in order at each position, so the server's
	// name wins over the site's, which it starts with. The golden server's
	// two sites both become site: label keys that become equal merge.
	names := strings.NewReplacer(goldenServer, server, goldenOtherSite, site, goldenSite, site)
	objs := make([]client.Object, 0, len(b.objects))
	for _, golden := range b.objects {
		obj := &unstructured.Unstructured{Object: substitute(golden.Object, names).(map[string]any)}
		obj.SetNamespace(namespace)
		obj.SetOwnerReferences(nil)
		unstructured.RemoveNestedField(obj.Object, "status")
		if err := oneReplica(obj, class); err != nil {
			return nil, fmt.Errorf("%s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		objs = append(objs, obj)
	}
	return objs, nil
}

// oneReplica sets a Deployment's or StatefulSet's replicas to one and its
// claims to class and baselineClaimSize.
func oneReplica(obj *unstructured.Unstructured, class string) error {
	if kind := obj.GetKind(); kind != "Deployment" && kind != "StatefulSet" {
		return nil
	}
	if err := unstructured.SetNestedField(obj.Object, int64(1), "spec", "replicas"); err != nil {
		return err
	}
	claims, found, err := unstructured.NestedSlice(obj.Object, "spec", "volumeClaimTemplates")
	if err != nil || !found {
		return err
	}
	for _, claim := range claims {
		c, ok := claim.(map[string]any)
		if !ok {
			return fmt.Errorf("a volumeClaimTemplate is a %T", claim)
		}
		if err := unstructured.SetNestedField(c, class, "spec", "storageClassName"); err != nil {
			return err
		}
		if err := unstructured.SetNestedField(c, baselineClaimSize, "spec", "resources", "requests", "storage"); err != nil {
			return err
		}
	}
	return unstructured.SetNestedSlice(obj.Object, claims, "spec", "volumeClaimTemplates")
}

// substitute is a copy of the JSON value v with every string and every map
// key rewritten by r.
func substitute(v any, r *strings.Replacer) any {
	switch v := v.(type) {
	case string:
		return r.Replace(v)
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[r.Replace(k)] = substitute(e, r)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = substitute(e, r)
		}
		return out
	default:
		return v
	}
}

// operatorObjects are, for site i, what a user writes for the operator: a
// Site and a SiteServer serving it.
func operatorObjects(i int, nodeSelector map[string]string, class string) []client.Object {
	site := fmt.Sprintf("site-%04d", i)
	ss := &siteopsv1.SiteServer{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ss-%04d", i)},
		Spec:       siteopsv1.SiteServerSpec{Sites: []string{site}},
	}
	ss.Spec.NodeSelector = make(map[string]siteopsv1.LabelValue, len(nodeSelector))
	for k, v := range nodeSelector {
		ss.Spec.NodeSelector[k] = siteopsv1.LabelValue(v)
	}
	ss.Spec.Services.Package.Storage.StorageClassName = class
	return []client.Object{
		&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}, Spec: siteopsv1.SiteSpec{DisplayName: "Branch office " + site}},
		ss,
	}
}
