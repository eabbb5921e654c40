package topology

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// roles abbreviates an explanation's candidates as "name:Role" in order.
func roles(e Explanation) []string {
	var out []string
	for _, c := range e.Candidates {
		out = append(out, c.Subnet.Name+":"+string(c.Role))
	}
	return out
}

func TestExplain(t *testing.T) {
	subnets := []Subnet{
		manual("corp", "10.0.0.0/8", "hq", 0),
		manual("paris", "10.1.0.0/16", "paris", 1),
		// Rule 2: the import takes 10.2.0.0/16 from the manual subnet.
		manual("lyon-manual", "10.2.0.0/16", "lyon", 2),
		imported("lyon-ad", "10.2.0.0/16", "lyon-ad", 9),
		// Rule 3: the older one wins, the younger one is a Duplicate.
		manual("oslo-old", "10.3.0.0/16", "oslo", 3),
		manual("oslo-new", "10.3.0.0/16", "hq", 4),
		// Rule 4: a more specific subnet naming a missing Site is ignored.
		manual("paris-lab", "10.1.7.0/24", "nowhere", 5),
		// Rule 5: nothing to inherit outside 10/8.
		manual("orphan", "192.0.2.0/24", "", 6),
	}
	sites := []string{"hq", "paris", "lyon", "lyon-ad", "oslo"}
	cases := []struct {
		addr       string
		found      bool
		subnet     string
		site       string
		roles      []string
		overridden []string
	}{
		{addr: "10.9.9.9", found: true, subnet: "corp", site: "hq", roles: []string{"corp:Winner"}},
		{addr: "10.1.2.3", found: true, subnet: "paris", site: "paris",
			roles: []string{"paris:Winner", "corp:LessSpecific"}, overridden: []string{"corp"}},
		{addr: "10.1.7.9", found: true, subnet: "paris", site: "paris",
			roles:      []string{"paris-lab:NotEffective", "paris:Winner", "corp:LessSpecific"},
			overridden: []string{"corp"}},
		{addr: "10.2.0.1", found: true, subnet: "lyon-ad", site: "lyon-ad",
			roles:      []string{"lyon-ad:Winner", "lyon-manual:SameCIDR", "corp:LessSpecific"},
			overridden: []string{"lyon-manual", "corp"}},
		{addr: "10.3.0.1", found: true, subnet: "oslo-old", site: "oslo",
			roles:      []string{"oslo-old:Winner", "oslo-new:SameCIDR", "corp:LessSpecific"},
			overridden: []string{"oslo-new", "corp"}},
		{addr: "192.0.2.5", roles: []string{"orphan:NotEffective"}},
		{addr: "198.51.100.1"},
		// An IPv4-mapped address is explained as the IPv4 one, as Lookup reads it.
		{addr: "::ffff:10.1.2.3", found: true, subnet: "paris", site: "paris",
			roles: []string{"paris:Winner", "corp:LessSpecific"}, overridden: []string{"corp"}},
	}
	for how, r := range resolvers(subnets, sites) {
		for _, c := range cases {
			t.Run(how+"/"+c.addr, func(t *testing.T) {
				addr := netip.MustParseAddr(c.addr)
				e := r.Explain(addr)
				if e.Address != addr.Unmap() {
					t.Errorf("Address = %s, want %s", e.Address, addr.Unmap())
				}
				if e.Found != c.found || e.Match.Subnet != c.subnet || e.Match.Site != c.site {
					t.Errorf("match = %v %+v, want %v %s/%s", e.Found, e.Match, c.found, c.subnet, c.site)
				}
				if got := roles(e); !slices.Equal(got, c.roles) {
					t.Errorf("roles = %v, want %v", got, c.roles)
				}
				var overridden []string
				for _, o := range e.Overridden() {
					overridden = append(overridden, o.Subnet.Name)
				}
				if !slices.Equal(overridden, c.overridden) {
					t.Errorf("Overridden = %v, want %v", overridden, c.overridden)
				}
			})
		}
	}
}

// The candidates carry the statuses the resolver reports, so the reasons a
// user reads in the explanation are those of the Subnets' Ready condition.
func TestExplainCarriesStatuses(t *testing.T) {
	r := Build([]Subnet{
		manual("lyon-manual", "10.2.0.0/16", "lyon", 2),
		imported("lyon-ad", "10.2.0.0/16", "lyon", 9),
	}, []string{"lyon"})
	e := r.Explain(netip.MustParseAddr("10.2.0.1"))
	if len(e.Candidates) != 2 {
		t.Fatalf("candidates = %v", roles(e))
	}
	for _, c := range e.Candidates {
		want, _ := r.Status(c.Subnet.Name)
		if c.Status != want {
			t.Errorf("%s: Status = %+v, want %+v", c.Subnet.Name, c.Status, want)
		}
	}
	if got := e.Candidates[1].Status.Reason; got != ReasonOverriddenByImport {
		t.Errorf("manual subnet's reason = %s, want OverriddenByImport", got)
	}
}

// Explain agrees with Lookup on random nested topologies: the same match,
// exactly one Winner when there is a match and none otherwise, every
// candidate contains the address, and the candidates run from the most
// specific CIDR to the least.
func TestExplainAgreesWithLookup(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			prefixes, probes := nestedPrefixes(rng, 40)
			sites := []string{"hq", "lab", "paris", "lyon", "oslo"}
			var subnets []Subnet
			for i := range 60 {
				s := Subnet{
					Name:    fmt.Sprintf("sn-%02d", i),
					Prefix:  prefixes[rng.IntN(len(prefixes))],
					Source:  []Source{SourceManual, SourceActiveDirectory}[rng.IntN(2)],
					Created: testEpoch.Add(time.Duration(rng.IntN(5)) * time.Minute),
				}
				if rng.IntN(3) > 0 {
					s.Site = sites[rng.IntN(len(sites))]
				}
				subnets = append(subnets, s)
			}
			r := Build(subnets, sites[:3]) // lyon and oslo do not exist
			var overrides int
			for _, addr := range probes {
				e := r.Explain(addr)
				m, found := r.Lookup(addr)
				if e.Found != found || e.Match != m {
					t.Fatalf("%s: Explain = %v %+v, Lookup = %v %+v", addr, e.Found, e.Match, found, m)
				}
				winners := 0
				for i, c := range e.Candidates {
					if !c.Subnet.Prefix.Contains(addr) {
						t.Fatalf("%s: candidate %s (%s) does not contain it", addr, c.Subnet.Name, c.Subnet.Prefix)
					}
					if i > 0 && c.Subnet.Prefix.Bits() > e.Candidates[i-1].Subnet.Prefix.Bits() {
						t.Fatalf("%s: candidates out of order: %v", addr, roles(e))
					}
					if c.Role == RoleWinner {
						winners++
						if c.Subnet.Name != m.Subnet {
							t.Fatalf("%s: winner %s, Lookup says %s", addr, c.Subnet.Name, m.Subnet)
						}
					}
					if c.Overridden() && !c.Status.Effective() && c.Status.Reason != ReasonOverriddenByImport && c.Status.Reason != ReasonDuplicate {
						t.Fatalf("%s: %s overridden with reason %s: it never competed", addr, c.Subnet.Name, c.Status.Reason)
					}
				}
				if want := map[bool]int{true: 1, false: 0}[found]; winners != want {
					t.Fatalf("%s: %d winners, want %d: %v", addr, winners, want, roles(e))
				}
				overrides += len(e.Overridden())
			}
			if overrides == 0 {
				t.Fatal("no probe saw an overridden subnet; the topology exercises too little")
			}
		})
	}
}
