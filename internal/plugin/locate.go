package plugin

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
	"github.com/siteops/site-operator/internal/topologyfeed"
)

// Topology is what address resolution reads: every Site, Subnet and
// SiteServer of the cluster.
type Topology struct {
	// Sites are every Site.
	Sites []siteopsv1.Site
	// Subnets are every Subnet.
	Subnets []siteopsv1.Subnet
	// SiteServers are every SiteServer.
	SiteServers []siteopsv1.SiteServer
}

// resolver builds the topology package's resolver from t, reading each
// object as the manager's informer feed does (topologyfeed).
func (t Topology) resolver() *topology.Resolver {
	subnets := make([]topology.Subnet, 0, len(t.Subnets))
	for i := range t.Subnets {
		subnets = append(subnets, topologyfeed.Subnet(&t.Subnets[i]))
	}
	sites := make([]string, 0, len(t.Sites))
	for _, s := range t.Sites {
		sites = append(sites, s.Name)
	}
	return topology.Build(subnets, sites)
}

// locatorServers reads each SiteServer as the locator's feed does.
func (t Topology) locatorServers() []locator.Server {
	out := make([]locator.Server, 0, len(t.SiteServers))
	for i := range t.SiteServers {
		out = append(out, topologyfeed.Server(&t.SiteServers[i]))
	}
	return out
}

// servingServers reads each SiteServer as the serving rules see it.
func servingServers(servers []locator.Server) []topology.Server {
	out := make([]topology.Server, 0, len(servers))
	for _, s := range servers {
		out = append(out, topology.Server{Name: s.Name, Sites: s.Sites, TaskReady: s.TaskReady})
	}
	return out
}

// LocateReport is the output of `kubectl siteops locate <address>`: the
// answer the locator gives an agent with that address, and why.
type LocateReport struct {
	// Address is the address located, as the locator reads it (an
	// IPv4-mapped IPv6 address as IPv4, without zone).
	Address string `json:"address"`
	// Site is the site the address belongs to; "" when it is in no
	// effective subnet.
	Site string `json:"site"`
	// Rule is the serving rule that chose the servers: Site, NoSites,
	// SiteNotReady or NoSite (the locator's answer's rule).
	Rule protocol.Rule `json:"rule"`
	// Explanation says in a sentence why the rule applies.
	Explanation string `json:"explanation"`
	// Subnet is the winning subnet: the most specific effective subnet
	// containing the address; absent when there is none.
	Subnet *SubnetVerdict `json:"subnet,omitempty"`
	// Overridden are the subnets containing the address that the winner
	// overrode: a less specific one (longest prefix wins), or one of the
	// same CIDR that lost to it (an ActiveDirectory subnet overrides a
	// Manual one; the oldest wins a duplicate).
	Overridden []SubnetVerdict `json:"overridden"`
	// Ignored are the subnets containing the address that could not map
	// it on their own (a missing Site, nothing to inherit).
	Ignored []SubnetVerdict `json:"ignored"`
	// Servers are every SiteServer that serves the address, by name.
	Servers []LocateServer `json:"servers"`
	// TaskEndpoints are the task-service URLs the locator answers, in the
	// order the agent tries them (at most 8 servers' worth, as the
	// locator's default).
	TaskEndpoints []string `json:"taskEndpoints"`
	// PackageEndpoints are the package-service URLs, in the same order.
	PackageEndpoints []string `json:"packageEndpoints"`
}

// SubnetVerdict is one subnet containing the located address, and the
// part it played.
type SubnetVerdict struct {
	// Name is the Subnet's name.
	Name string `json:"name"`
	// CIDR is spec.cidr.
	CIDR string `json:"cidr"`
	// Source is spec.source: Manual or ActiveDirectory.
	Source string `json:"source"`
	// Site is spec.site: the site the subnet names; "" when it inherits.
	Site string `json:"site,omitempty"`
	// EffectiveSite is the site its addresses map to (its own or
	// inherited); "" when it is not effective.
	EffectiveSite string `json:"effectiveSite"`
	// InheritedFrom names the enclosing subnet whose site it inherits.
	InheritedFrom string `json:"inheritedFrom,omitempty"`
	// Role is Winner, LessSpecific, SameCIDR or NotEffective
	// (topology.Role).
	Role topology.Role `json:"role"`
	// Reason is the reason of the subnet's Ready condition: Effective,
	// OverriddenByImport, Duplicate, SiteNotFound or NoSite.
	Reason string `json:"reason"`
	// Message is that condition's message.
	Message string `json:"message"`
}

// LocateServer is a SiteServer that serves the located address.
type LocateServer struct {
	// Name is the SiteServer's name.
	Name string `json:"name"`
	// Sites are the sites it serves; none for an unassigned server.
	Sites []string `json:"sites"`
	// TaskReady says whether its task service serves agents.
	TaskReady bool `json:"taskReady"`
}

// BuildLocate answers for addr as the locator would, from t: the same
// resolver (topology.Build), the same serving rules and the same answer
// (locator.Locate), with the subnets that decided it (topology's Explain).
func BuildLocate(t Topology, addr netip.Addr) LocateReport {
	addr = addr.Unmap().WithZone("")
	resolver := t.resolver()
	feed := t.locatorServers()
	set := locator.NewServerSet()
	set.Replace(feed)
	answer := locator.New(resolver, set, locator.Options{}).Locate([]netip.Addr{addr})
	explained := resolver.Explain(addr)

	report := LocateReport{
		Address:          addr.String(),
		Site:             answer.Site,
		Rule:             answer.Rule,
		Overridden:       []SubnetVerdict{},
		Ignored:          []SubnetVerdict{},
		Servers:          []LocateServer{},
		TaskEndpoints:    answer.TaskEndpoints,
		PackageEndpoints: answer.PackageEndpoints,
	}
	sources := map[string]string{}
	for _, sn := range t.Subnets {
		sources[sn.Name] = string(sn.Spec.Source)
	}
	for _, c := range explained.Candidates {
		v := verdict(c, sources[c.Subnet.Name])
		switch {
		case c.Role == topology.RoleWinner:
			report.Subnet = &v
		case c.Overridden():
			report.Overridden = append(report.Overridden, v)
		default:
			report.Ignored = append(report.Ignored, v)
		}
	}
	serving := servingServers(feed)
	names := topology.ServersFor(answer.Site, resolver.SiteCount() > 0, serving)
	for _, s := range serving {
		if slices.Contains(names, s.Name) {
			report.Servers = append(report.Servers, LocateServer{Name: s.Name, Sites: nonNil(s.Sites), TaskReady: s.TaskReady})
		}
	}
	slices.SortFunc(report.Servers, func(a, b LocateServer) int { return strings.Compare(a.Name, b.Name) })
	report.Explanation = explainRule(report)
	return report
}

// verdict is a candidate as the report shows it; source is the Subnet's
// spec.source as written ("" reads as Manual).
func verdict(c topology.Candidate, source string) SubnetVerdict {
	if source == "" {
		source = string(siteopsv1.SourceManual)
	}
	return SubnetVerdict{
		Name:          c.Subnet.Name,
		CIDR:          c.Subnet.Prefix.String(),
		Source:        source,
		Site:          c.Subnet.Site,
		EffectiveSite: c.Status.EffectiveSite,
		InheritedFrom: c.Status.InheritedFrom,
		Role:          c.Role,
		Reason:        string(c.Status.Reason),
		Message:       c.Status.Message,
	}
}

// explainRule says why the report's rule applies, in a sentence.
func explainRule(r LocateReport) string {
	var s string
	switch r.Rule {
	case protocol.RuleSite:
		s = fmt.Sprintf("site %s has a ready server of its own: its servers serve the agent", r.Site)
	case protocol.RuleNoSites:
		s = "no Site exists at all: every SiteServer serves every agent"
	case protocol.RuleSiteNotReady:
		s = fmt.Sprintf("site %s has no ready server of its own: the unassigned SiteServers serve the agent", r.Site)
	case protocol.RuleNoSite:
		s = "the address is in no effective subnet: the unassigned SiteServers serve the agent"
	default:
		s = fmt.Sprintf("serving rule %s", r.Rule)
	}
	if len(r.Servers) == 0 {
		s += "; there is none, so no server serves this address"
	}
	return s
}

// writeText writes the locate report for a terminal.
func (r LocateReport) writeText(t *text, _ time.Time) {
	t.field("Address", r.Address)
	t.field("Site", orNone(r.Site))
	if r.Subnet != nil {
		t.field("Subnet", subnetLine(*r.Subnet)+": the most specific effective subnet")
	} else {
		t.field("Subnet", "(none): no effective subnet contains the address")
	}
	if len(r.Overridden) > 0 {
		lines := make([]string, 0, len(r.Overridden))
		for _, v := range r.Overridden {
			lines = append(lines, subnetLine(v)+": "+overrideText(v))
		}
		t.items("Overrode", lines)
	}
	if len(r.Ignored) > 0 {
		lines := make([]string, 0, len(r.Ignored))
		for _, v := range r.Ignored {
			lines = append(lines, subnetLine(v)+": "+v.Reason+": "+v.Message)
		}
		t.items("Ignored", lines)
	}
	t.field("Rule", string(r.Rule)+": "+r.Explanation)
	if len(r.Servers) == 0 {
		t.field("Servers", "(none)")
	}
	for i, s := range r.Servers {
		key := ""
		if i == 0 {
			key = "Servers"
		}
		t.field(key, s.Name+" ("+serverState(s)+")")
	}
	endpoints(t, "Task endpoints", r.TaskEndpoints)
	endpoints(t, "Package endpoints", r.PackageEndpoints)
}

// endpoints writes a list of URLs one per line under key.
func endpoints(t *text, key string, urls []string) {
	if len(urls) == 0 {
		t.field(key, "(none)")
	}
	for i, u := range urls {
		if i > 0 {
			key = ""
		}
		t.field(key, u)
	}
}

// subnetLine names a subnet with its CIDR and site for the text form.
func subnetLine(v SubnetVerdict) string {
	s := v.Name + " " + v.CIDR
	if v.Source == string(siteopsv1.SourceActiveDirectory) {
		s += " (ActiveDirectory)"
	}
	switch {
	case v.EffectiveSite != "" && v.InheritedFrom != "":
		s += ", site " + v.EffectiveSite + " inherited from " + v.InheritedFrom
	case v.Site != "":
		s += ", site " + v.Site
	default:
		s += ", no site"
	}
	return s
}

// overrideText says why the winner overrode v.
func overrideText(v SubnetVerdict) string {
	switch {
	case v.Role == topology.RoleLessSpecific:
		return "less specific: the longest prefix wins"
	case v.Reason == string(topology.ReasonOverriddenByImport):
		return "OverriddenByImport: for the same CIDR the ActiveDirectory subnet wins"
	}
	return v.Reason + ": " + v.Message
}

// serverState describes a serving server for the text form.
func serverState(s LocateServer) string {
	state := "task service ready"
	if !s.TaskReady {
		state = "task service not ready"
	}
	if len(s.Sites) == 0 {
		return "unassigned, " + state
	}
	return "sites " + strings.Join(s.Sites, ", ") + ", " + state
}

// nonNil returns s, or an empty slice for nil, so that JSON shows [].
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
