package plugin

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// krewManifest is what krew reads of plugins/siteops.yaml.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Caveats          string `json:"caveats"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
		} `json:"platforms"`
	} `json:"spec"`
}

// The krew manifest has the fields krew requires, names the plugin as
// its file and binary do, and points every platform at an archive of its
// version holding the binary.
func TestKrewManifest(t *testing.T) {
	path := filepath.Join("..", "..", "plugins", "siteops.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.UnmarshalStrict(data, &m, yaml.DisallowUnknownFields); err != nil {
		// Unknown fields are allowed by krew only where it says so; the
		// strict read catches a misspelt one.
		t.Fatalf("%s: %v", path, err)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" {
		t.Errorf("apiVersion %q kind %q", m.APIVersion, m.Kind)
	}
	if m.Metadata.Name != "siteops" || strings.TrimSuffix(filepath.Base(path), ".yaml") != m.Metadata.Name {
		t.Errorf("metadata.name %q must be siteops, the manifest's file name and the binary's suffix", m.Metadata.Name)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(m.Spec.Version) {
		t.Errorf("spec.version %q is not v<semver>", m.Spec.Version)
	}
	if m.Spec.ShortDescription == "" || len(m.Spec.ShortDescription) > 50 || m.Spec.Description == "" || m.Spec.Homepage == "" {
		t.Errorf("shortDescription %q (at most 50 characters), description and homepage are required", m.Spec.ShortDescription)
	}
	hex := regexp.MustCompile(`^[0-9a-f]{64}$`)
	seen := map[string]bool{}
	for _, p := range m.Spec.Platforms {
		os, arch := p.Selector.MatchLabels["os"], p.Selector.MatchLabels["arch"]
		key := os + "/" + arch
		if os == "" || arch == "" || seen[key] {
			t.Errorf("platform %q: a selector needs os and arch, once each", key)
		}
		seen[key] = true
		wantBin := "kubectl-siteops"
		if os == "windows" {
			wantBin += ".exe"
		}
		if p.Bin != wantBin {
			t.Errorf("%s: bin %q, want %q", key, p.Bin, wantBin)
		}
		archive := "kubectl-siteops_" + m.Spec.Version + "_" + os + "_" + arch
		packed := strings.HasSuffix(p.URI, ".tar.gz") || strings.HasSuffix(p.URI, ".zip")
		if !strings.HasPrefix(p.URI, "https://") || !strings.Contains(p.URI, "/"+m.Spec.Version+"/"+archive+".") || !packed {
			t.Errorf("%s: uri %q is not the HTTPS archive %s of the version", key, p.URI, archive)
		}
		if !hex.MatchString(p.SHA256) {
			t.Errorf("%s: sha256 %q is not 64 lower-case hexadecimal digits", key, p.SHA256)
		}
	}
	for _, want := range []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"} {
		if !seen[want] {
			t.Errorf("no platform %s", want)
		}
	}
}
