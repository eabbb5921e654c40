package tasks

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Targets is a task's compiled spec.targets.
type Targets struct {
	names    map[string]struct{}
	selector labels.Selector // nil: no selector
	sites    map[string]struct{}
}

// CompileTargets compiles spec.targets, or reports why its selector
// cannot be used.
func CompileTargets(t siteopsv1.DeploymentTaskTargets) (*Targets, error) {
	c := &Targets{}
	if len(t.Computers) > 0 {
		c.names = make(map[string]struct{}, len(t.Computers))
		for _, n := range t.Computers {
			c.names[n] = struct{}{}
		}
	}
	if t.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(t.Selector)
		if err != nil {
			return nil, fmt.Errorf("spec.targets.selector: %w", err)
		}
		c.selector = sel
	}
	if len(t.Sites) > 0 {
		c.sites = make(map[string]struct{}, len(t.Sites))
		for _, s := range t.Sites {
			c.sites[s] = struct{}{}
		}
	}
	return c, nil
}

// Matches reports whether the computer is a target: named, selected by
// its labels, or in one of the sites (status.site).
func (c *Targets) Matches(comp *siteopsv1.Computer) bool {
	if _, ok := c.names[comp.Name]; ok {
		return true
	}
	if c.selector != nil && c.selector.Matches(labels.Set(comp.Labels)) {
		return true
	}
	if comp.Status.Site != "" {
		if _, ok := c.sites[comp.Status.Site]; ok {
			return true
		}
	}
	return false
}

// Resolve returns the names of the computers among comps that are targets,
// sorted, each once, and the names in spec.targets.computers with no
// Computer among comps, sorted.
func (c *Targets) Resolve(comps []siteopsv1.Computer) (targets, missing []string) {
	seen := make(map[string]struct{}, len(comps))
	for i := range comps {
		comp := &comps[i]
		if _, dup := seen[comp.Name]; dup {
			continue
		}
		seen[comp.Name] = struct{}{}
		if c.Matches(comp) {
			targets = append(targets, comp.Name)
		}
	}
	for n := range c.names {
		if _, ok := seen[n]; !ok {
			missing = append(missing, n)
		}
	}
	slices.Sort(targets)
	slices.Sort(missing)
	return targets, missing
}
