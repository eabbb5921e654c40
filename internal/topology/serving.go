// Serving rules: which SiteServers serve an agent (ARCHITECTURE.md §2,
// "Which servers serve an agent"), the last step of address → subnet →
// site → servers. The controllers use them to report who serves a site and
// the agent locator to answer an agent.
//
// It is pure: no Kubernetes client and no I/O.
//
// The rules:
//
//  1. If no Site exists at all, every SiteServer serves every agent, ready
//     or not.
//  2. Otherwise an agent is served only by the servers of its own site,
//     provided at least one of them is ready.
//  3. An agent whose site has no ready server, or that is in no site
//     (site ""), is served by the unassigned SiteServers: those that list
//     no site.
//
// Edge cases, decided here once for every caller:
//
//   - Readiness only decides whether a site falls back to the unassigned
//     servers. Once a site has a ready server, the result is every server
//     of the site, so that it does not change each time a pod flaps; the
//     site's Services route around pods that are not ready.
//   - The unassigned servers are the fallback whether or not they are
//     ready: nothing else would serve the agent.
//   - When the fallback is needed and there are no unassigned servers,
//     the result is empty: no server serves the agent, and the caller
//     reports that (the locator answers that the agent has no server).
//   - A server that lists only Sites that do not exist is not unassigned:
//     it is never a fallback, and it serves no agent until its Site exists,
//     since an address never resolves to a missing Site (the topology
//     package's rule 4). Rule 1 still applies to it when no Site exists.
//   - An empty site name in a server's list names no site.
//
// Results are sorted and free of duplicates, so that callers can compare
// and store them without churn.

package topology

import (
	"slices"
)

// Server is what the rules need to know about one SiteServer.
type Server struct {
	// Name is the SiteServer's name.
	Name string
	// Sites are the names of the Sites it serves; none means unassigned.
	Sites []string
	// TaskReady says that its task service is ready.
	TaskReady bool
}

// Unassigned reports whether s lists no site.
func (s Server) Unassigned() bool {
	return !slices.ContainsFunc(s.Sites, func(site string) bool { return site != "" })
}

// Serves reports whether s lists site. No server lists the empty site.
func (s Server) Serves(site string) bool {
	return site != "" && slices.Contains(s.Sites, site)
}

// ServersFor returns the sorted names of the servers that serve an agent
// of agentSite ("" for an agent in no site). sitesExist says whether any
// Site exists at all. The result is empty when no server serves the agent.
func ServersFor(agentSite string, sitesExist bool, servers []Server) []string {
	if !sitesExist {
		return ServerNames(servers)
	}
	if HasReadyServer(agentSite, servers) {
		return ServerNames(OfSite(agentSite, servers))
	}
	return ServerNames(Unassigned(servers))
}

// OfSite returns the servers that list site, in their input order. It
// returns none for the empty site.
func OfSite(site string, servers []Server) []Server {
	var out []Server
	for _, s := range servers {
		if s.Serves(site) {
			out = append(out, s)
		}
	}
	return out
}

// Unassigned returns the servers that list no site, in their input order.
func Unassigned(servers []Server) []Server {
	var out []Server
	for _, s := range servers {
		if s.Unassigned() {
			out = append(out, s)
		}
	}
	return out
}

// HasReadyServer reports whether site has a server of its own whose task
// service is ready: the condition of a Site's Ready status, and the one
// under which its agents do not fall back to the unassigned servers.
func HasReadyServer(site string, servers []Server) bool {
	return slices.ContainsFunc(servers, func(s Server) bool { return s.TaskReady && s.Serves(site) })
}

// ServerNames returns the sorted, distinct names of servers; nil when there are
// none.
func ServerNames(servers []Server) []string {
	if len(servers) == 0 {
		return nil
	}
	names := make([]string, 0, len(servers))
	for _, s := range servers {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
