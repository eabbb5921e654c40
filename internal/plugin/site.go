package plugin

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
)

// SiteInput is what `kubectl siteops site` reads about one Site.
type SiteInput struct {
	// Site is the Site shown.
	Site siteopsv1.Site
	// Topology is every Site, Subnet and SiteServer: the site's subnets
	// and servers are resolved from it by the same rules as the locator.
	Topology Topology
	// Computers are the Computers whose status.site is the site.
	Computers []siteopsv1.Computer
	// Packages are the Packages to look for the site in (every namespace,
	// or the one asked for).
	Packages []siteopsv1.Package
}

// SiteReport is the output of `kubectl siteops site <name>`.
type SiteReport struct {
	// Name is the Site's name.
	Name string `json:"name"`
	// DisplayName is spec.displayName.
	DisplayName string `json:"displayName,omitempty"`
	// Location is spec.location.
	Location string `json:"location,omitempty"`
	// Ready is the Site's Ready condition.
	Ready Condition `json:"ready"`
	// Rule is the serving rule its agents get: Site when it has a ready
	// server of its own, SiteNotReady otherwise.
	Rule protocol.Rule `json:"rule"`
	// ServedBy are the SiteServers that serve its agents now, by the
	// serving rules: its own servers, or the unassigned ones.
	ServedBy []string `json:"servedBy"`
	// Subnets are the subnets that map addresses to the site (their own
	// or inherited site), and those naming it that do not (a Duplicate,
	// OverriddenByImport), by CIDR.
	Subnets []SiteSubnet `json:"subnets"`
	// Servers are the SiteServers that list the site, by name.
	Servers []SiteServerState `json:"servers"`
	// Computers counts the Computers located in the site.
	Computers ComputerCounts `json:"computers"`
	// Packages are the Packages whose content is Ready at the site.
	Packages []SitePackage `json:"packages"`
}

// Condition is a condition as the reports show it.
type Condition struct {
	// Status is True, False or Unknown (Unknown too when the object has
	// no such condition yet).
	Status metav1.ConditionStatus `json:"status"`
	// Reason is the condition's reason.
	Reason string `json:"reason,omitempty"`
	// Message is the condition's message.
	Message string `json:"message,omitempty"`
}

// conditionOf returns condition condType of conds, Unknown when absent.
func conditionOf(conds []metav1.Condition, condType string) Condition {
	c := meta.FindStatusCondition(conds, condType)
	if c == nil {
		return Condition{Status: metav1.ConditionUnknown}
	}
	return Condition{Status: c.Status, Reason: c.Reason, Message: c.Message}
}

// text is the condition for the text form: "True (Reason)".
func (c Condition) text() string {
	if c.Reason == "" {
		return string(c.Status)
	}
	return string(c.Status) + " (" + c.Reason + ")"
}

// SiteSubnet is one of a site's subnets.
type SiteSubnet struct {
	// Name is the Subnet's name.
	Name string `json:"name"`
	// CIDR is spec.cidr.
	CIDR string `json:"cidr"`
	// Source is spec.source.
	Source string `json:"source"`
	// InheritedFrom names the enclosing subnet whose site it inherits.
	InheritedFrom string `json:"inheritedFrom,omitempty"`
	// Effective says whether it maps its addresses to the site.
	Effective bool `json:"effective"`
	// Reason is its Ready reason, as the resolver computes it.
	Reason string `json:"reason"`
	// Message is the matching message.
	Message string `json:"message"`
}

// SiteServerState is one of a site's SiteServers.
type SiteServerState struct {
	// Name is the SiteServer's name.
	Name string `json:"name"`
	// TaskReady says whether its task service serves agents.
	TaskReady bool `json:"taskReady"`
	// PackageReady says whether its package service runs.
	PackageReady bool `json:"packageReady"`
	// Ready is its Ready condition.
	Ready Condition `json:"ready"`
}

// ComputerCounts counts a site's Computers.
type ComputerCounts struct {
	// Total is every Computer located in the site.
	Total int `json:"total"`
	// Online are those whose agent checks in (Ready True).
	Online int `json:"online"`
}

// SitePackage is a Package whose content is Ready at the site.
type SitePackage struct {
	// Namespace is the Package's namespace.
	Namespace string `json:"namespace"`
	// Name is the Package's name.
	Name string `json:"name"`
	// Type is spec.type: DiskImage, Software or Script.
	Type string `json:"type"`
	// Size is spec.size in bytes.
	Size int64 `json:"size"`
}

// BuildSite makes the report of in.Site. Its subnets and the servers that
// serve its agents come from the topology package's resolver and serving
// rules, as the locator's do.
func BuildSite(in SiteInput) SiteReport {
	site := in.Site.Name
	r := SiteReport{
		Name:        site,
		DisplayName: in.Site.Spec.DisplayName,
		Location:    in.Site.Spec.Location,
		Ready:       conditionOf(in.Site.Status.Conditions, siteopsv1.ConditionReady),
		Subnets:     []SiteSubnet{},
		Servers:     []SiteServerState{},
		Packages:    []SitePackage{},
	}

	statuses := in.Topology.resolver().Statuses()
	for _, sn := range in.Topology.Subnets {
		st := statuses[sn.Name]
		if st.EffectiveSite != site && sn.Spec.Site != site {
			continue
		}
		source := string(sn.Spec.Source)
		if source == "" {
			source = string(siteopsv1.SourceManual)
		}
		r.Subnets = append(r.Subnets, SiteSubnet{Name: sn.Name, CIDR: sn.Spec.CIDR, Source: source,
			InheritedFrom: st.InheritedFrom, Effective: st.Effective(), Reason: string(st.Reason), Message: st.Message})
	}
	slices.SortFunc(r.Subnets, func(a, b SiteSubnet) int {
		pa, errA := netip.ParsePrefix(a.CIDR)
		pb, errB := netip.ParsePrefix(b.CIDR)
		if errA == nil && errB == nil {
			if c := cmp.Or(pa.Addr().Compare(pb.Addr()), cmp.Compare(pa.Bits(), pb.Bits())); c != 0 {
				return c
			}
		}
		return cmp.Or(strings.Compare(a.CIDR, b.CIDR), strings.Compare(a.Name, b.Name))
	})

	serving := servingServers(in.Topology.locatorServers())
	for i := range in.Topology.SiteServers {
		ss := &in.Topology.SiteServers[i]
		if !(topology.Server{Name: ss.Name, Sites: ss.Spec.Sites}).Serves(site) {
			continue
		}
		r.Servers = append(r.Servers, SiteServerState{Name: ss.Name, TaskReady: ss.ServesTasks(),
			PackageReady: ss.ServesPackages(), Ready: conditionOf(ss.Status.Conditions, siteopsv1.ConditionReady)})
	}
	slices.SortFunc(r.Servers, func(a, b SiteServerState) int { return strings.Compare(a.Name, b.Name) })
	r.Rule = protocol.RuleSiteNotReady
	if topology.HasReadyServer(site, serving) {
		r.Rule = protocol.RuleSite
	}
	// The site exists, so Sites exist: the NoSites rule never applies.
	r.ServedBy = nonNil(topology.ServersFor(site, true, serving))

	for _, c := range in.Computers {
		if c.Status.Site != site {
			continue
		}
		r.Computers.Total++
		if meta.IsStatusConditionTrue(c.Status.Conditions, siteopsv1.ConditionReady) {
			r.Computers.Online++
		}
	}

	for _, p := range in.Packages {
		if slices.ContainsFunc(p.Status.Sites, func(s siteopsv1.PackageSiteStatus) bool {
			return s.Site == site && s.State == siteopsv1.ContentReady
		}) {
			r.Packages = append(r.Packages, SitePackage{Namespace: p.Namespace, Name: p.Name, Type: string(p.Spec.Type), Size: p.Spec.Size})
		}
	}
	slices.SortFunc(r.Packages, func(a, b SitePackage) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return r
}

// writeText writes the site as a tree.
func (r SiteReport) writeText(t *text, _ time.Time) {
	title := "Site " + r.Name
	if r.DisplayName != "" {
		title += " (" + r.DisplayName + ")"
	}
	t.line("%s", title)
	if r.Location != "" {
		t.field("Location", r.Location)
	}
	t.field("Ready", r.Ready.text())
	if r.Ready.Status != metav1.ConditionTrue && r.Ready.Message != "" {
		t.field("", r.Ready.Message)
	}
	served := joinOr(r.ServedBy)
	if r.Rule == protocol.RuleSiteNotReady {
		served += " (no ready server of its own: the unassigned servers)"
	}
	t.field("Agents served by", served)

	subnets := treeNode{lines: []string{fmt.Sprintf("Subnets (%d)", len(r.Subnets))}}
	rows := make([][]string, 0, len(r.Subnets))
	for _, s := range r.Subnets {
		state := s.Reason
		if s.InheritedFrom != "" {
			state += ", inherited from " + s.InheritedFrom
		}
		rows = append(rows, []string{s.Name, s.CIDR, s.Source, state})
	}
	subnets.children = leaves(rows, 8)

	servers := treeNode{lines: []string{fmt.Sprintf("Servers (%d)", len(r.Servers))}}
	rows = rows[:0]
	for _, s := range r.Servers {
		rows = append(rows, []string{s.Name, "task " + readyWord(s.TaskReady), "package " + readyWord(s.PackageReady)})
	}
	servers.children = leaves(rows, 8)

	computers := treeNode{lines: []string{fmt.Sprintf("Computers: %d, %d online", r.Computers.Total, r.Computers.Online)}}

	packages := treeNode{lines: []string{fmt.Sprintf("Packages ready (%d)", len(r.Packages))}}
	rows = rows[:0]
	for _, p := range r.Packages {
		rows = append(rows, []string{p.Namespace + "/" + p.Name, p.Type, bytesText(p.Size)})
	}
	packages.children = leaves(rows, 8)

	t.writeTree("", []treeNode{subnets, servers, computers, packages})
}

// leaves turns table rows into leaf nodes whose columns line up, given
// the indent the tree draws in front of them.
func leaves(rows [][]string, indent int) []treeNode {
	lines := columns(rows, Width-indent)
	out := make([]treeNode, 0, len(lines))
	for _, l := range lines {
		out = append(out, treeNode{lines: []string{l}})
	}
	return out
}

// readyWord is "ready" or "not ready".
func readyWord(ready bool) string {
	if ready {
		return "ready"
	}
	return "not ready"
}
