package locator

import (
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/siteops/site-operator/internal/topology"
)

// Server is what the locator knows about one SiteServer.
type Server struct {
	// Name is the SiteServer's name.
	Name string
	// Sites are the Sites it serves; none means unassigned.
	Sites []string
	// TaskReady says that its task service is available
	// ((*SiteServer).ServesTasks).
	TaskReady bool
	// TaskEndpoints are status.task.advertised.
	TaskEndpoints []string
	// PackageEndpoints are status.package.advertised.
	PackageEndpoints []string
}

func (s Server) equal(o Server) bool {
	return s.Name == o.Name && s.TaskReady == o.TaskReady && slices.Equal(s.Sites, o.Sites) &&
		slices.Equal(s.TaskEndpoints, o.TaskEndpoints) && slices.Equal(s.PackageEndpoints, o.PackageEndpoints)
}

// ServerSet holds the current SiteServers and publishes an immutable
// Snapshot of them after each change. It is safe for concurrent use;
// Snapshot takes no lock.
type ServerSet struct {
	mu      sync.Mutex
	servers map[string]Server
	snap    atomic.Pointer[Snapshot]
}

// NewServerSet returns an empty set.
func NewServerSet() *ServerSet {
	s := &ServerSet{servers: map[string]Server{}}
	s.snap.Store(buildSnapshot(nil))
	return s
}

// Set adds the server or replaces the one with its name. A server equal to
// the one held changes nothing (status writes that touch other fields).
func (s *ServerSet) Set(srv Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.servers[srv.Name]; ok && old.equal(srv) {
		return
	}
	srv.Sites = slices.Clone(srv.Sites)
	srv.TaskEndpoints = slices.Clone(srv.TaskEndpoints)
	srv.PackageEndpoints = slices.Clone(srv.PackageEndpoints)
	s.servers[srv.Name] = srv
	s.publish()
}

// Delete removes the named server; an unknown name changes nothing.
func (s *ServerSet) Delete(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.servers[name]; !ok {
		return
	}
	delete(s.servers, name)
	s.publish()
}

// Replace makes the set hold exactly servers (a bulk load).
func (s *ServerSet) Replace(servers []Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servers = make(map[string]Server, len(servers))
	for _, srv := range servers {
		s.servers[srv.Name] = srv
	}
	s.publish()
}

// Snapshot returns the current snapshot. It never changes; a later change
// publishes a new one.
func (s *ServerSet) Snapshot() *Snapshot { return s.snap.Load() }

// publish rebuilds the snapshot: O(servers), a few microseconds for a
// thousand, on each change of a SiteServer's spec or of the status fields
// the locator reads.
func (s *ServerSet) publish() {
	s.snap.Store(buildSnapshot(slices.Collect(maps.Values(s.servers))))
}

// Snapshot is an immutable view of the SiteServers, indexed for the
// serving rules.
type Snapshot struct {
	// all holds every server, sorted by name.
	all []*entry
	// unassigned holds the servers that list no site.
	unassigned []*entry
	// bySite holds, per site, the servers that list it.
	bySite map[string][]*entry
	// siteReady holds the sites with a ready server of their own.
	siteReady map[string]bool
}

// entry is a server and the hash of its name, its half of every
// rendezvous score.
type entry struct {
	Server
	key uint64
}

func buildSnapshot(servers []Server) *Snapshot {
	slices.SortFunc(servers, func(a, b Server) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	snap := &Snapshot{bySite: map[string][]*entry{}, siteReady: map[string]bool{}}
	for _, srv := range servers {
		e := &entry{Server: srv, key: nameKey(srv.Name)}
		snap.all = append(snap.all, e)
		ts := topology.Server{Name: srv.Name, Sites: srv.Sites, TaskReady: srv.TaskReady}
		if ts.Unassigned() {
			snap.unassigned = append(snap.unassigned, e)
			continue
		}
		for _, site := range srv.Sites {
			// The rules' own test of membership: it ignores "" and a
			// site listed twice counts once.
			if !ts.Serves(site) || slices.Contains(snap.bySite[site], e) {
				continue
			}
			snap.bySite[site] = append(snap.bySite[site], e)
			if srv.TaskReady {
				snap.siteReady[site] = true
			}
		}
	}
	return snap
}

// Len returns the number of servers in the snapshot.
func (s *Snapshot) Len() int { return len(s.all) }

// Serve applies the serving rules (topology/serving.go) to an agent of
// site ("" when in no site); sitesExist says whether any Site exists. It
// returns the rule that applied and the servers in no particular order.
func (s *Snapshot) serve(site string, sitesExist bool) (ruleIndex, []*entry) {
	switch {
	case !sitesExist:
		return ruleNoSites, s.all
	case site == "":
		return ruleNoSite, s.unassigned
	case s.siteReady[site]:
		return ruleSite, s.bySite[site]
	default:
		return ruleSiteNotReady, s.unassigned
	}
}

// nameKey hashes a server name: FNV-1a, the same on every replica and
// every release, since the order agents see must not change on restart.
func nameKey(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}
