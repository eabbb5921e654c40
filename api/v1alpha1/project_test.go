package v1alpha1

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"
)

// project is the part of the kubebuilder PROJECT file this test checks.
type project struct {
	Resources []struct {
		API struct {
			Namespaced bool `json:"namespaced"`
		} `json:"api"`
		Controller bool   `json:"controller"`
		Group      string `json:"group"`
		Kind       string `json:"kind"`
		Version    string `json:"version"`
	} `json:"resources"`
}

// TestProjectListsEveryKind keeps PROJECT true to the API: every CRD in
// config/crd/bases is listed with its scope, and a kind is said to have a
// controller exactly when controllers/<kind>_controller.go exists.
func TestProjectListsEveryKind(t *testing.T) {
	root := filepath.Join("..", "..")
	data, err := os.ReadFile(filepath.Join(root, "PROJECT"))
	if err != nil {
		t.Fatal(err)
	}
	var p project
	if err := yaml.Unmarshal(data, &p); err != nil {
		t.Fatalf("PROJECT: %v", err)
	}
	listed := map[string]bool{}
	for _, r := range p.Resources {
		if listed[r.Kind] {
			t.Errorf("PROJECT lists %s twice", r.Kind)
		}
		listed[r.Kind] = true
		if r.Group != "siteops" || r.Version != GroupVersion.Version {
			t.Errorf("PROJECT: %s is in %s/%s, want siteops/%s", r.Kind, r.Group, r.Version, GroupVersion.Version)
		}
		_, err := os.Stat(filepath.Join(root, "controllers", strings.ToLower(r.Kind)+"_controller.go"))
		if hasController := err == nil; r.Controller != hasController {
			t.Errorf("PROJECT says controller: %v for %s; controllers/%s_controller.go exists: %v",
				r.Controller, r.Kind, strings.ToLower(r.Kind), hasController)
		}
	}

	crds, err := filepath.Glob(filepath.Join(root, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(crds) == 0 {
		t.Fatalf("no CRDs under config/crd/bases: %v", err)
	}
	for _, path := range crds {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := yaml.Unmarshal(data, &crd); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		kind := crd.Spec.Names.Kind
		namespaced := crd.Spec.Scope == apiextensionsv1.NamespaceScoped
		found := false
		for _, r := range p.Resources {
			if r.Kind == kind {
				found = true
				if r.API.Namespaced != namespaced {
					t.Errorf("PROJECT says namespaced: %v for %s; its CRD's scope is %s", r.API.Namespaced, kind, crd.Spec.Scope)
				}
			}
		}
		if !found {
			t.Errorf("PROJECT does not list %s (%s)", kind, filepath.Base(path))
		}
		delete(listed, kind)
	}
	for kind := range listed {
		t.Errorf("PROJECT lists %s, which has no CRD in config/crd/bases", kind)
	}
}
