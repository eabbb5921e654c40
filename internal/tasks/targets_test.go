package tasks

import (
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func computer(name, site string, labels map[string]string) siteopsv1.Computer {
	c := siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	c.Status.Site = site
	return c
}

// fleet is the namespace's Computers the targeting tests resolve against.
var fleet = []siteopsv1.Computer{
	computer("lab-01", "paris", map[string]string{"role": "lab", "os": "windows"}),
	computer("lab-02", "paris", map[string]string{"role": "lab", "os": "linux"}),
	computer("desk-01", "lyon", map[string]string{"role": "desk", "os": "windows"}),
	computer("desk-02", "", map[string]string{"role": "desk"}), // no site yet
	computer("kiosk-01", "lyon", nil),
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name        string
		targets     siteopsv1.DeploymentTaskTargets
		comps       []siteopsv1.Computer // default fleet
		wantTargets []string
		wantMissing []string
	}{{
		name:        "computers by name",
		targets:     siteopsv1.DeploymentTaskTargets{Computers: []string{"lab-02", "desk-01"}},
		wantTargets: []string{"desk-01", "lab-02"},
	}, {
		name:        "a named computer that does not exist is missing",
		targets:     siteopsv1.DeploymentTaskTargets{Computers: []string{"lab-01", "lab-99", "gone"}},
		wantTargets: []string{"lab-01"},
		wantMissing: []string{"gone", "lab-99"},
	}, {
		name:        "a name given twice is one target",
		targets:     siteopsv1.DeploymentTaskTargets{Computers: []string{"lab-01", "lab-01"}},
		wantTargets: []string{"lab-01"},
	}, {
		name: "selector matchLabels",
		targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"os": "windows"},
		}},
		wantTargets: []string{"desk-01", "lab-01"},
	}, {
		name: "selector matchExpressions",
		targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "role", Operator: metav1.LabelSelectorOpIn, Values: []string{"lab", "desk"}},
				{Key: "os", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"linux"}},
			},
		}},
		wantTargets: []string{"desk-01", "desk-02", "lab-01"},
	}, {
		name: "selector Exists and DoesNotExist",
		targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "role", Operator: metav1.LabelSelectorOpExists},
				{Key: "os", Operator: metav1.LabelSelectorOpDoesNotExist},
			},
		}},
		wantTargets: []string{"desk-02"},
	}, {
		name: "selector matchLabels and matchExpressions together",
		targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
			MatchLabels: map[string]string{"role": "lab"},
			MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "os", Operator: metav1.LabelSelectorOpIn, Values: []string{"linux"}},
			},
		}},
		wantTargets: []string{"lab-02"},
	}, {
		name:        "an empty selector selects every computer",
		targets:     siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{}},
		wantTargets: []string{"desk-01", "desk-02", "kiosk-01", "lab-01", "lab-02"},
	}, {
		name:        "sites by status.site",
		targets:     siteopsv1.DeploymentTaskTargets{Sites: []string{"lyon"}},
		wantTargets: []string{"desk-01", "kiosk-01"},
	}, {
		name:    "a computer with no site never matches by sites",
		targets: siteopsv1.DeploymentTaskTargets{Sites: []string{""}},
	}, {
		name:    "a site with no computers",
		targets: siteopsv1.DeploymentTaskTargets{Sites: []string{"nantes"}},
	}, {
		name: "the union, each computer once though it matches three ways",
		targets: siteopsv1.DeploymentTaskTargets{
			Computers: []string{"lab-01", "desk-02", "missing-01"},
			Selector:  &metav1.LabelSelector{MatchLabels: map[string]string{"role": "lab"}},
			Sites:     []string{"paris"},
		},
		wantTargets: []string{"desk-02", "lab-01", "lab-02"},
		wantMissing: []string{"missing-01"},
	}, {
		name:    "a computer listed twice among the computers is one target",
		targets: siteopsv1.DeploymentTaskTargets{Sites: []string{"paris"}},
		comps: []siteopsv1.Computer{
			computer("lab-01", "paris", nil),
			computer("lab-01", "paris", nil),
		},
		wantTargets: []string{"lab-01"},
	}, {
		name:        "no computers at all",
		targets:     siteopsv1.DeploymentTaskTargets{Computers: []string{"lab-01"}, Selector: &metav1.LabelSelector{}},
		comps:       []siteopsv1.Computer{},
		wantMissing: []string{"lab-01"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileTargets(tt.targets)
			if err != nil {
				t.Fatalf("CompileTargets: %v", err)
			}
			comps := tt.comps
			if comps == nil {
				comps = fleet
			}
			targets, missing := c.Resolve(comps)
			if !slices.Equal(targets, tt.wantTargets) {
				t.Errorf("targets = %q, want %q", targets, tt.wantTargets)
			}
			if !slices.Equal(missing, tt.wantMissing) {
				t.Errorf("missing = %q, want %q", missing, tt.wantMissing)
			}
			// Matches agrees with Resolve.
			for i := range comps {
				if got, want := c.Matches(&comps[i]), slices.Contains(tt.wantTargets, comps[i].Name); got != want {
					t.Errorf("Matches(%s) = %v, want %v", comps[i].Name, got, want)
				}
			}
		})
	}
}

func TestCompileTargetsInvalidSelector(t *testing.T) {
	tests := []struct {
		name     string
		selector *metav1.LabelSelector
	}{{
		name: "unknown operator",
		selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "role", Operator: "Like", Values: []string{"lab"}},
		}},
	}, {
		name: "In without values",
		selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "role", Operator: metav1.LabelSelectorOpIn},
		}},
	}, {
		name: "Exists with values",
		selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "role", Operator: metav1.LabelSelectorOpExists, Values: []string{"lab"}},
		}},
	}, {
		name:     "invalid label key",
		selector: &metav1.LabelSelector{MatchLabels: map[string]string{"bad key!": "x"}},
	}, {
		name:     "invalid label value",
		selector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "not a value"}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := CompileTargets(siteopsv1.DeploymentTaskTargets{Selector: tt.selector})
			if err == nil {
				t.Fatalf("CompileTargets = %+v, want an error", c)
			}
			if !strings.Contains(err.Error(), "spec.targets.selector") {
				t.Errorf("error %q does not name spec.targets.selector", err)
			}
		})
	}
}
