package locator

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fixture: sites north (two servers, one ready), south (one server, not
// ready), east (no server); an unassigned central server.
func fixture(t testing.TB) (*topology.Resolver, *ServerSet) {
	t.Helper()
	r := topology.Build([]topology.Subnet{
		{Name: "north", Prefix: netip.MustParsePrefix("10.1.0.0/16"), Site: "north", Created: epoch},
		{Name: "north-lab", Prefix: netip.MustParsePrefix("10.1.7.0/24"), Created: epoch},
		{Name: "south", Prefix: netip.MustParsePrefix("10.2.0.0/16"), Site: "south", Created: epoch},
		{Name: "east", Prefix: netip.MustParsePrefix("fd00:e::/48"), Site: "east", Created: epoch},
	}, []string{"north", "south", "east"})
	set := NewServerSet()
	set.Replace([]Server{
		server("n1", true, "north"),
		server("n2", false, "north"),
		server("s1", false, "south"),
		server("central", true),
	})
	return r, set
}

func server(name string, ready bool, sites ...string) Server {
	return Server{Name: name, Sites: sites, TaskReady: ready,
		TaskEndpoints: []string{"https://" + name + ".task:8443"}, PackageEndpoints: []string{"https://" + name + ".pkg:8444"}}
}

func TestLocateAnswers(t *testing.T) {
	r, set := fixture(t)
	l := New(r, set, Options{})
	tests := []struct {
		name      string
		addrs     []string
		site      string
		subnet    string
		rule      protocol.Rule
		servers   []string // in any order; nil for none
		readyLead []string // servers that must come first, in any order
		retry     int
	}{
		{name: "in a site with a ready server", addrs: []string{"10.1.2.3"}, site: "north", subnet: "north",
			rule: protocol.RuleSite, servers: []string{"n1", "n2"}, readyLead: []string{"n1"}},
		{name: "inherited site", addrs: []string{"10.1.7.9"}, site: "north", subnet: "north-lab",
			rule: protocol.RuleSite, servers: []string{"n1", "n2"}, readyLead: []string{"n1"}},
		{name: "site whose servers are not ready", addrs: []string{"10.2.0.1"}, site: "south", subnet: "south",
			rule: protocol.RuleSiteNotReady, servers: []string{"central"}, retry: 300},
		{name: "site without servers", addrs: []string{"fd00:e::5"}, site: "east", subnet: "east",
			rule: protocol.RuleSiteNotReady, servers: []string{"central"}, retry: 300},
		{name: "in no site", addrs: []string{"192.168.1.1"}, rule: protocol.RuleNoSite, servers: []string{"central"}},
		{name: "first address in a site decides", addrs: []string{"192.168.1.1", "10.2.0.1", "10.1.0.1"}, site: "south",
			subnet: "south", rule: protocol.RuleSiteNotReady, servers: []string{"central"}, retry: 300},
		{name: "IPv4-mapped", addrs: []string{"::ffff:10.1.0.1"}, site: "north", subnet: "north",
			rule: protocol.RuleSite, servers: []string{"n1", "n2"}, readyLead: []string{"n1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := l.Locate(parseAll(t, tt.addrs))
			if resp.Site != tt.site || resp.Subnet != tt.subnet || resp.Rule != tt.rule || resp.RetryAfterSeconds != tt.retry {
				t.Errorf("site %q subnet %q rule %s retry %d; want %q %q %s %d",
					resp.Site, resp.Subnet, resp.Rule, resp.RetryAfterSeconds, tt.site, tt.subnet, tt.rule, tt.retry)
			}
			got := serversOf(resp.TaskEndpoints, ".task:8443")
			if pkgs := serversOf(resp.PackageEndpoints, ".pkg:8444"); !slices.Equal(got, pkgs) {
				t.Errorf("task servers %v, package servers %v: not the same order", got, pkgs)
			}
			if !sameSet(got, tt.servers) {
				t.Errorf("servers %v, want %v", got, tt.servers)
			}
			if lead := got[:min(len(got), len(tt.readyLead))]; !sameSet(lead, tt.readyLead) {
				t.Errorf("servers %v: want %v first", got, tt.readyLead)
			}
		})
	}

	t.Run("no server at all", func(t *testing.T) {
		set.Delete("central")
		defer set.Set(server("central", true))
		resp := l.Locate(parseAll(t, []string{"192.168.1.1"}))
		if resp.Rule != protocol.RuleNoSite || len(resp.TaskEndpoints) != 0 || resp.RetryAfterSeconds != 30 {
			t.Errorf("got %+v, want rule NoSite, no endpoints, retry after 30 s", resp)
		}
	})
	t.Run("no Site at all", func(t *testing.T) {
		for _, site := range []string{"north", "south", "east"} {
			r.DeleteSite(site)
		}
		defer func() {
			for _, site := range []string{"north", "south", "east"} {
				r.SetSite(site)
			}
		}()
		for _, addr := range []string{"10.1.2.3", "192.168.1.1"} {
			resp := l.Locate(parseAll(t, []string{addr}))
			got := serversOf(resp.TaskEndpoints, ".task:8443")
			if resp.Rule != protocol.RuleNoSites || !sameSet(got, []string{"n1", "n2", "s1", "central"}) || resp.RetryAfterSeconds != 0 {
				t.Errorf("%s: rule %s servers %v retry %d; want NoSites, every server", addr, resp.Rule, got, resp.RetryAfterSeconds)
			}
			if !sameSet(got[:2], []string{"n1", "central"}) {
				t.Errorf("%s: servers %v, want the ready n1 and central first", addr, got)
			}
		}
	})
}

// TestSnapshotFollowsTheRules checks the snapshot's indexes against the
// serving rules' own function, topology.ServersFor, over random server
// sets with random readiness.
func TestSnapshotFollowsTheRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	sites := []string{"a", "b", "c", "gone", ""}
	for range 2000 {
		var servers []Server
		var rules []topology.Server
		for i := range rng.IntN(6) {
			var ss []string
			for range rng.IntN(3) {
				ss = append(ss, sites[rng.IntN(len(sites))])
			}
			s := Server{Name: fmt.Sprintf("s%d", i), Sites: ss, TaskReady: rng.IntN(2) == 0}
			servers = append(servers, s)
			rules = append(rules, topology.Server{Name: s.Name, Sites: s.Sites, TaskReady: s.TaskReady})
		}
		snap := buildSnapshot(slices.Clone(servers))
		for _, exist := range []bool{true, false} {
			for _, site := range []string{"a", "b", "c", ""} {
				_, got := snap.serve(site, exist)
				var names []string
				for _, e := range got {
					names = append(names, e.Name)
				}
				if want := topology.ServersFor(site, exist, rules); !slices.Equal(topology.ServerNames(toRules(got)), want) {
					t.Fatalf("servers %+v, site %q, sites exist %v: snapshot serves %v, the rules say %v", servers, site, exist, names, want)
				}
			}
		}
	}
}

func toRules(es []*entry) []topology.Server {
	var out []topology.Server
	for _, e := range es {
		out = append(out, topology.Server{Name: e.Name})
	}
	return out
}

// TestRendezvousOrder checks what agents and operators rely on: the order
// is stable, spreads agents evenly, and adding or removing a server moves
// only the agents that it takes or releases.
func TestRendezvousOrder(t *testing.T) {
	var servers []Server
	for i := range 10 {
		servers = append(servers, Server{Name: fmt.Sprintf("branch-%d", i), TaskReady: true})
	}
	agents := make([]uint64, 20000)
	for i := range agents {
		agents[i] = addrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	first := func(servers []Server) []string {
		snap := buildSnapshot(slices.Clone(servers))
		out := make([]string, len(agents))
		for i, a := range agents {
			out[i] = order(a, snap.all, 8, nil)[0].e.Name
		}
		return out
	}
	before := first(servers)

	// Even: every server is first for about a tenth of the agents.
	counts := map[string]int{}
	for _, name := range before {
		counts[name]++
	}
	for _, s := range servers {
		if n := counts[s.Name]; n < 1700 || n > 2300 {
			t.Errorf("%s is first for %d of %d agents; want about %d", s.Name, n, len(agents), len(agents)/10)
		}
	}
	// Stable: the same input gives the same order, whatever the input
	// order of the servers.
	reversed := slices.Clone(servers)
	slices.Reverse(reversed)
	if again := first(reversed); !slices.Equal(before, again) {
		t.Error("the order changed with the order servers were added in")
	}
	// Adding a server moves only the agents it now comes first for.
	added := first(append(slices.Clone(servers), Server{Name: "branch-new", TaskReady: true}))
	moved := 0
	for i := range agents {
		if added[i] != before[i] {
			if added[i] != "branch-new" {
				t.Fatalf("agent %d moved from %s to %s, not to the new server", i, before[i], added[i])
			}
			moved++
		}
	}
	if moved < 1500 || moved > 2200 {
		t.Errorf("adding an 11th server moved %d of %d agents; want about 1/11", moved, len(agents))
	}
	// Removing a server moves only its own agents.
	removed := first(servers[1:])
	for i := range agents {
		if removed[i] != before[i] && before[i] != "branch-0" {
			t.Fatalf("agent %d moved from %s to %s, though %s stayed", i, before[i], removed[i], before[i])
		}
		if removed[i] == "branch-0" {
			t.Fatalf("agent %d still goes to the removed server", i)
		}
	}
	// Readiness: a server whose task service is not ready goes last.
	servers[3].TaskReady = false
	snap := buildSnapshot(slices.Clone(servers))
	for _, a := range agents[:500] {
		o := order(a, snap.all, 10, nil)
		if o[len(o)-1].e.Name != "branch-3" {
			t.Fatalf("order %v: the server that is not ready is not last", o)
		}
	}
	// Bounded: at most the limit, the best ones.
	if o := order(agents[0], snap.all, 3, nil); len(o) != 3 || o[0] != order(agents[0], snap.all, 10, nil)[0] {
		t.Errorf("order limited to 3 gives %v", o)
	}
}

func TestServerSetPublishesOnlyChanges(t *testing.T) {
	set := NewServerSet()
	s := server("a", true, "north")
	set.Set(s)
	snap := set.Snapshot()
	set.Set(server("a", true, "north"))
	if set.Snapshot() != snap {
		t.Error("an unchanged server published a new snapshot")
	}
	s.TaskEndpoints = []string{"https://elsewhere"}
	set.Set(s)
	if set.Snapshot() == snap || set.Snapshot().all[0].TaskEndpoints[0] != "https://elsewhere" {
		t.Error("a changed endpoint was not published")
	}
	if snap.all[0].TaskEndpoints[0] != "https://a.task:8443" {
		t.Error("an old snapshot changed")
	}
	set.Delete("a")
	if set.Snapshot().Len() != 0 {
		t.Error("a deleted server is still in the snapshot")
	}
}

func parseAll(t *testing.T, addrs []string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a).Unmap())
	}
	return out
}

func serversOf(urls []string, suffix string) []string {
	var out []string
	for _, u := range urls {
		name := u[len("https://") : len(u)-len(suffix)]
		out = append(out, name)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// The task service answers only the agents the serving rules give it.
func TestServes(t *testing.T) {
	created := time.Unix(0, 0)
	r := topology.Build([]topology.Subnet{
		{Name: "a", Prefix: netip.MustParsePrefix("10.1.0.0/16"), Site: "paris", Created: created},
		{Name: "b", Prefix: netip.MustParsePrefix("10.2.0.0/16"), Site: "lyon", Created: created},
	}, []string{"paris", "lyon"})
	servers := NewServerSet()
	servers.Replace([]Server{
		{Name: "paris-srv", Sites: []string{"paris"}, TaskReady: true},
		{Name: "lyon-srv", Sites: []string{"lyon"}, TaskReady: false},
		{Name: "central"},
	})
	l := New(r, servers, Options{})
	for _, tc := range []struct {
		addr, server, site string
		ok                 bool
	}{
		{"10.1.0.5", "paris-srv", "paris", true},
		{"10.1.0.5", "central", "paris", false},
		{"10.1.0.5", "lyon-srv", "paris", false},
		// lyon has no ready server of its own: the unassigned one serves it.
		{"10.2.0.5", "central", "lyon", true},
		{"10.2.0.5", "lyon-srv", "lyon", false},
		{"192.0.2.1", "central", "", true},
		{"192.0.2.1", "paris-srv", "", false},
	} {
		site, ok := l.Serves([]netip.Addr{netip.MustParseAddr(tc.addr)}, tc.server)
		if site != tc.site || ok != tc.ok {
			t.Errorf("Serves(%s, %s) = %q, %v; want %q, %v", tc.addr, tc.server, site, ok, tc.site, tc.ok)
		}
	}
}
