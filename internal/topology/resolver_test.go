package topology

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

var testEpoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

// manual and imported return a Manual or ActiveDirectory Subnet created
// the given number of minutes after testEpoch.
func manual(name, cidr, site string, minute int) Subnet {
	return Subnet{Name: name, Prefix: netip.MustParsePrefix(cidr), Site: site, Source: SourceManual,
		Created: testEpoch.Add(time.Duration(minute) * time.Minute)}
}

func imported(name, cidr, site string, minute int) Subnet {
	s := manual(name, cidr, site, minute)
	s.Source = SourceActiveDirectory
	return s
}

// resolvers returns the topology built both ways: by Build, and by SetSite
// and SetSubnet calls in the given order.
func resolvers(subnets []Subnet, sites []string) map[string]*Resolver {
	incremental := New()
	for _, site := range sites {
		incremental.SetSite(site)
	}
	for _, s := range subnets {
		incremental.SetSubnet(s)
	}
	return map[string]*Resolver{"Build": Build(subnets, sites), "incremental": incremental}
}

// effective, inherited and notEffective abbreviate expected statuses.
func effective(site string) Status { return Status{EffectiveSite: site, Reason: ReasonEffective} }

func inherited(site, from string) Status {
	return Status{EffectiveSite: site, InheritedFrom: from, Reason: ReasonEffective}
}

func notEffective(reason Reason) Status { return Status{Reason: reason} }

// checkStatuses compares r's statuses with want; a want without a message
// matches any message.
func checkStatuses(t *testing.T, r *Resolver, want map[string]Status) {
	t.Helper()
	for name, w := range want {
		got, ok := r.Status(name)
		if !ok {
			t.Errorf("Status(%q) missing", name)
			continue
		}
		if w.Message == "" {
			got.Message = ""
		}
		if got != w {
			t.Errorf("Status(%q) = %+v, want %+v", name, got, w)
		}
	}
}

// lookupCase is an address and the subnet and site it should resolve to
// ("" subnet: no match).
type lookupCase struct {
	addr, subnet, site, prefix string
}

func checkLookups(t *testing.T, r *Resolver, cases []lookupCase) {
	t.Helper()
	for _, c := range cases {
		var addr netip.Addr
		if c.addr != "" {
			addr = netip.MustParseAddr(c.addr)
		}
		got, ok := r.Lookup(addr)
		if c.subnet == "" {
			if ok {
				t.Errorf("Lookup(%s) = %+v, want no match", c.addr, got)
			}
			continue
		}
		want := Match{Subnet: c.subnet, Site: c.site, Prefix: netip.MustParsePrefix(c.prefix)}
		if !ok || got != want {
			t.Errorf("Lookup(%s) = %+v, %v, want %+v", c.addr, got, ok, want)
		}
	}
}

// Rule 1: an address belongs to the most specific effective subnet.
func TestLookupLongestPrefixWins(t *testing.T) {
	sites := []string{"hq", "lab", "branch"}
	subnets := []Subnet{
		manual("v4-8", "10.0.0.0/8", "hq", 0),
		manual("v4-16", "10.1.0.0/16", "lab", 0),
		manual("v4-24-ghost", "10.1.2.0/24", "ghost", 0), // SiteNotFound
		manual("v4-28", "10.1.3.0/28", "branch", 0),
		manual("v4-orphan", "192.168.0.0/16", "", 0), // NoSite
		manual("v6-32", "2001:db8::/32", "hq", 0),
		manual("v6-48", "2001:db8:1::/48", "lab", 0),
		manual("v6-64-ghost", "2001:db8:1:2::/64", "ghost", 0),
		manual("v6-128", "2001:db8:1:3::1/128", "branch", 0),
	}
	cases := []lookupCase{
		{"10.9.9.9", "v4-8", "hq", "10.0.0.0/8"},
		{"10.1.9.9", "v4-16", "lab", "10.1.0.0/16"},
		{"10.1.2.3", "v4-16", "lab", "10.1.0.0/16"}, // inside a non-effective /24
		{"10.1.3.5", "v4-28", "branch", "10.1.3.0/28"},
		{"10.1.3.16", "v4-16", "lab", "10.1.0.0/16"}, // just past the /28
		{"::ffff:10.1.3.5", "v4-28", "branch", "10.1.3.0/28"},
		{"11.0.0.1", "", "", ""},
		{"192.168.1.1", "", "", ""}, // only in a NoSite subnet
		{"2001:db8:5::1", "v6-32", "hq", "2001:db8::/32"},
		{"2001:db8:1::1", "v6-48", "lab", "2001:db8:1::/48"},
		{"2001:db8:1:2::1", "v6-48", "lab", "2001:db8:1::/48"}, // inside a non-effective /64
		{"2001:db8:1:3::1", "v6-128", "branch", "2001:db8:1:3::1/128"},
		{"2001:db8:1:3::2", "v6-48", "lab", "2001:db8:1::/48"},
		{"fe80::1%eth0", "", "", ""},
		{"2001:db9::1", "", "", ""},
		{"", "", "", ""}, // the zero Addr
	}
	for how, r := range resolvers(subnets, sites) {
		t.Run(how, func(t *testing.T) { checkLookups(t, r, cases) })
	}
}

// Rule 5: site-less subnets inherit from the nearest enclosing effective
// subnet, through any number of levels.
func TestInheritance(t *testing.T) {
	tests := []struct {
		name    string
		sites   []string
		subnets []Subnet
		want    map[string]Status
		lookups []lookupCase
	}{{
		name:  "four IPv4 levels through site-less middles",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("hq-8", "10.0.0.0/8", "hq", 0),
			manual("mid-16", "10.1.0.0/16", "", 0),
			manual("mid-24", "10.1.2.0/24", "", 0),
			manual("leaf-28", "10.1.2.16/28", "", 0),
		},
		want: map[string]Status{
			"hq-8":   {EffectiveSite: "hq", Reason: ReasonEffective, Message: `addresses in 10.0.0.0/8 belong to site "hq"`},
			"mid-16": inherited("hq", "hq-8"),
			"mid-24": inherited("hq", "hq-8"),
			"leaf-28": {EffectiveSite: "hq", InheritedFrom: "hq-8", Reason: ReasonEffective,
				Message: `inherited site "hq" from enclosing subnet "hq-8"`},
		},
		lookups: []lookupCase{
			{"10.1.2.17", "leaf-28", "hq", "10.1.2.16/28"},
			{"10.1.2.1", "mid-24", "hq", "10.1.2.0/24"},
		},
	}, {
		name:  "IPv6: the nearest enclosing site wins",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-32", "2001:db8::/32", "hq", 0),
			manual("lab-48", "2001:db8:1::/48", "lab", 0),
			manual("mid-56", "2001:db8:1::/56", "", 0),
			manual("leaf-64", "2001:db8:1:2::/64", "", 0),
			manual("other-48", "2001:db8:2::/48", "", 0),
		},
		want: map[string]Status{
			"lab-48":   effective("lab"),
			"mid-56":   inherited("lab", "lab-48"),
			"leaf-64":  inherited("lab", "lab-48"),
			"other-48": inherited("hq", "hq-32"),
		},
		lookups: []lookupCase{{"2001:db8:1:2::9", "leaf-64", "lab", "2001:db8:1:2::/64"}},
	}, {
		name:  "an enclosing subnet whose site is missing is skipped",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("hq-8", "10.0.0.0/8", "hq", 0),
			manual("ghost-16", "10.1.0.0/16", "ghost", 0),
			manual("leaf-24", "10.1.2.0/24", "", 0),
		},
		want: map[string]Status{
			"ghost-16": {Reason: ReasonSiteNotFound, Message: `site "ghost" does not exist`},
			"leaf-24":  inherited("hq", "hq-8"),
		},
	}, {
		name: "nothing to inherit",
		subnets: []Subnet{
			manual("top-16", "10.1.0.0/16", "", 0),
			manual("leaf-24", "10.1.2.0/24", "", 0),
		},
		want: map[string]Status{
			"top-16":  {Reason: ReasonNoSite, Message: "no site set and no enclosing subnet has one"},
			"leaf-24": notEffective(ReasonNoSite),
		},
		lookups: []lookupCase{{"10.1.2.3", "", "", ""}},
	}, {
		name:  "a site-less winner agrees with a newer duplicate naming the inherited site",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-8", "10.0.0.0/8", "hq", 0),
			manual("plain-16", "10.1.0.0/16", "", 0),
			manual("hq-16", "10.1.0.0/16", "hq", 5),
			manual("lab-16", "10.1.0.0/16", "lab", 6),
		},
		want: map[string]Status{
			"plain-16": inherited("hq", "hq-8"),
			"hq-16": {EffectiveSite: "hq", Reason: ReasonEffective,
				Message: `same CIDR 10.1.0.0/16 and site "hq" as subnet "plain-16" (older), which lookups return`},
			"lab-16": {Reason: ReasonDuplicate,
				Message: `duplicate of subnet "plain-16" (older) for CIDR 10.1.0.0/16 with site "hq"`},
		},
		lookups: []lookupCase{{"10.1.2.3", "plain-16", "hq", "10.1.0.0/16"}},
	}, {
		name:  "through a site-less ActiveDirectory winner",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-8", "10.0.0.0/8", "hq", 0),
			manual("lab-16", "10.1.0.0/16", "lab", 0),
			imported("ad-16", "10.1.0.0/16", "", 5),
			manual("leaf-24", "10.1.2.0/24", "", 0),
		},
		want: map[string]Status{
			"lab-16":  notEffective(ReasonOverriddenByImport),
			"ad-16":   inherited("hq", "hq-8"),
			"leaf-24": inherited("hq", "hq-8"),
		},
		lookups: []lookupCase{{"10.1.2.3", "leaf-24", "hq", "10.1.2.0/24"}},
	}}
	for _, tt := range tests {
		for how, r := range resolvers(tt.subnets, tt.sites) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				checkStatuses(t, r, tt.want)
				checkLookups(t, r, tt.lookups)
			})
		}
	}
}

// Rule 2: for the same CIDR an ActiveDirectory subnet overrides Manual ones.
func TestImportOverridesManual(t *testing.T) {
	tests := []struct {
		name    string
		sites   []string
		subnets []Subnet
		want    map[string]Status
		lookups []lookupCase
	}{{
		name:  "import wins over an older manual subnet",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-main", "10.1.0.0/16", "hq", 0),
			imported("ad-10-1-0-0-16", "10.1.0.0/16", "lab", 60),
		},
		want: map[string]Status{
			"ad-10-1-0-0-16": effective("lab"),
			"hq-main": {Reason: ReasonOverriddenByImport,
				Message: `overridden by ActiveDirectory subnet "ad-10-1-0-0-16" for the same CIDR 10.1.0.0/16`},
		},
		lookups: []lookupCase{{"10.1.0.1", "ad-10-1-0-0-16", "lab", "10.1.0.0/16"}},
	}, {
		name:  "every manual subnet is overridden, even one with the same site or a missing one",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("m1", "2001:db8::/48", "hq", 0),
			manual("m2", "2001:db8::/48", "ghost", 1),
			imported("ad", "2001:db8::/48", "hq", 2),
		},
		want: map[string]Status{
			"ad": effective("hq"),
			"m1": {Reason: ReasonOverriddenByImport,
				Message: `overridden by ActiveDirectory subnet "ad" for the same CIDR 2001:db8::/48`},
			"m2": notEffective(ReasonOverriddenByImport),
		},
		lookups: []lookupCase{{"2001:db8::1", "ad", "hq", "2001:db8::/48"}},
	}, {
		name:  "an import naming a missing site does not compete",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("hq-main", "10.1.0.0/16", "hq", 10),
			imported("ad", "10.1.0.0/16", "paris", 0),
		},
		want: map[string]Status{
			"hq-main": effective("hq"),
			"ad":      {Reason: ReasonSiteNotFound, Message: `site "paris" does not exist`},
		},
		lookups: []lookupCase{{"10.1.0.1", "hq-main", "hq", "10.1.0.0/16"}},
	}, {
		name:  "a site-less import with nothing to inherit does not compete",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("hq-main", "10.1.0.0/16", "hq", 10),
			imported("ad", "10.1.0.0/16", "", 0),
		},
		want: map[string]Status{
			"hq-main": effective("hq"),
			"ad":      notEffective(ReasonNoSite),
		},
	}}
	for _, tt := range tests {
		for how, r := range resolvers(tt.subnets, tt.sites) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				checkStatuses(t, r, tt.want)
				checkLookups(t, r, tt.lookups)
			})
		}
	}
}

// Rule 3: for the same CIDR and source the oldest wins, then the name that
// sorts first, whatever order the subnets arrive in.
func TestDuplicateOrdering(t *testing.T) {
	subnets := []Subnet{
		manual("paris-dup", "10.1.0.0/16", "paris", 5),
		manual("hq-main", "10.1.0.0/16", "hq", 0),
		manual("aaa-late", "10.1.0.0/16", "paris", 10),
		manual("hq-copy", "10.1.0.0/16", "hq", 7),
		manual("b-tie", "2001:db8::/48", "paris", 3),
		manual("a-tie", "2001:db8::/48", "hq", 3),
	}
	sites := []string{"hq", "paris"}
	want := map[string]Status{
		"hq-main": effective("hq"),
		"paris-dup": {Reason: ReasonDuplicate,
			Message: `duplicate of subnet "hq-main" (older) for CIDR 10.1.0.0/16 with site "hq"`},
		"aaa-late": notEffective(ReasonDuplicate),
		"hq-copy": {EffectiveSite: "hq", Reason: ReasonEffective,
			Message: `same CIDR 10.1.0.0/16 and site "hq" as subnet "hq-main" (older), which lookups return`},
		"a-tie": effective("hq"),
		"b-tie": {Reason: ReasonDuplicate,
			Message: `duplicate of subnet "a-tie" (same creation time, name sorts first) for CIDR 2001:db8::/48 with site "hq"`},
	}
	lookups := []lookupCase{
		{"10.1.2.3", "hq-main", "hq", "10.1.0.0/16"},
		{"2001:db8::1", "a-tie", "hq", "2001:db8::/48"},
	}
	n := 0
	for order := range permutations(len(subnets)) {
		shuffled := make([]Subnet, len(subnets))
		for i, j := range order {
			shuffled[i] = subnets[j]
		}
		for how, r := range resolvers(shuffled, sites) {
			t.Run(fmt.Sprint(how, order), func(t *testing.T) {
				checkStatuses(t, r, want)
				checkLookups(t, r, lookups)
			})
		}
		n++
	}
	if n != 720 {
		t.Fatalf("tried %d insertion orders, want 720", n)
	}
}

// permutations yields every ordering of 0..n-1 (Heap's algorithm).
func permutations(n int) func(yield func([]int) bool) {
	return func(yield func([]int) bool) {
		p := make([]int, n)
		for i := range p {
			p[i] = i
		}
		c := make([]int, n)
		if !yield(slices.Clone(p)) {
			return
		}
		for i := 0; i < n; {
			if c[i] < i {
				if i%2 == 0 {
					p[0], p[i] = p[i], p[0]
				} else {
					p[c[i]], p[i] = p[i], p[c[i]]
				}
				if !yield(slices.Clone(p)) {
					return
				}
				c[i]++
				i = 0
			} else {
				c[i] = 0
				i++
			}
		}
	}
}

// Deleting a winner promotes the next candidate, and the changed list
// names it and everything whose status followed.
func TestDeleteWinnerPromotesNext(t *testing.T) {
	tests := []struct {
		name        string
		sites       []string
		subnets     []Subnet
		delete      string
		wantChanged []string
		want        map[string]Status
		lookups     []lookupCase
	}{{
		name:  "oldest duplicate deleted",
		sites: []string{"hq", "paris", "lyon"},
		subnets: []Subnet{
			manual("hq-main", "10.1.0.0/16", "hq", 0),
			manual("paris-dup", "10.1.0.0/16", "paris", 5),
			manual("lyon-dup", "10.1.0.0/16", "lyon", 9),
			manual("inherit-24", "10.1.2.0/24", "", 0),
			manual("own-24", "10.1.3.0/24", "hq", 0),
		},
		delete: "hq-main",
		// lyon-dup's message now names paris-dup.
		wantChanged: []string{"inherit-24", "lyon-dup", "paris-dup"},
		want: map[string]Status{
			"paris-dup":  effective("paris"),
			"lyon-dup":   notEffective(ReasonDuplicate),
			"inherit-24": inherited("paris", "paris-dup"),
			"own-24":     effective("hq"),
		},
		lookups: []lookupCase{
			{"10.1.9.9", "paris-dup", "paris", "10.1.0.0/16"},
			{"10.1.2.3", "inherit-24", "paris", "10.1.2.0/24"},
		},
	}, {
		name:  "import deleted, manual takes over",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-main", "2001:db8::/48", "hq", 0),
			imported("ad", "2001:db8::/48", "lab", 5),
			manual("leaf-64", "2001:db8::/64", "", 0),
		},
		delete:      "ad",
		wantChanged: []string{"hq-main", "leaf-64"},
		want: map[string]Status{
			"hq-main": effective("hq"),
			"leaf-64": inherited("hq", "hq-main"),
		},
		lookups: []lookupCase{{"2001:db8::1", "leaf-64", "hq", "2001:db8::/64"}},
	}, {
		name:  "last subnet of a CIDR deleted, nested ones fall back to the next level",
		sites: []string{"hq", "lab"},
		subnets: []Subnet{
			manual("hq-8", "10.0.0.0/8", "hq", 0),
			manual("lab-16", "10.1.0.0/16", "lab", 0),
			manual("mid-24", "10.1.2.0/24", "", 0),
			manual("leaf-28", "10.1.2.0/28", "", 0),
		},
		delete:      "lab-16",
		wantChanged: []string{"leaf-28", "mid-24"},
		want: map[string]Status{
			"mid-24":  inherited("hq", "hq-8"),
			"leaf-28": inherited("hq", "hq-8"),
		},
		lookups: []lookupCase{{"10.1.9.9", "hq-8", "hq", "10.0.0.0/8"}},
	}, {
		name:        "deleting a loser changes nothing else",
		sites:       []string{"hq", "paris"},
		subnets:     []Subnet{manual("hq-main", "10.1.0.0/16", "hq", 0), manual("paris-dup", "10.1.0.0/16", "paris", 5)},
		delete:      "paris-dup",
		wantChanged: nil,
		want:        map[string]Status{"hq-main": effective("hq")},
	}}
	for _, tt := range tests {
		for how, r := range resolvers(tt.subnets, tt.sites) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				if got := r.DeleteSubnet(tt.delete); !slices.Equal(got, tt.wantChanged) {
					t.Errorf("DeleteSubnet(%q) changed = %q, want %q", tt.delete, got, tt.wantChanged)
				}
				if _, ok := r.Status(tt.delete); ok {
					t.Errorf("Status(%q) still present after delete", tt.delete)
				}
				checkStatuses(t, r, tt.want)
				checkLookups(t, r, tt.lookups)
			})
		}
	}
}

// Rule 4: a subnet naming a missing site becomes effective by itself when
// the site appears, and stops being effective when it goes.
func TestSiteLifecycle(t *testing.T) {
	tests := []struct {
		name        string
		sites       []string
		subnets     []Subnet
		site        string
		wantChanged []string
		before      map[string]Status
		after       map[string]Status
		lookup      lookupCase // while the site exists
	}{{
		name:  "missing site with site-less subnets nested inside",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("paris-16", "10.2.0.0/16", "paris", 0),
			manual("paris-24", "10.2.3.0/24", "", 0),
			manual("paris-28", "10.2.3.0/28", "", 0),
			manual("hq-16", "10.3.0.0/16", "hq", 0),
		},
		site:        "paris",
		wantChanged: []string{"paris-16", "paris-24", "paris-28"},
		before: map[string]Status{
			"paris-16": {Reason: ReasonSiteNotFound, Message: `site "paris" does not exist`},
			"paris-24": notEffective(ReasonNoSite),
			"paris-28": notEffective(ReasonNoSite),
			"hq-16":    effective("hq"),
		},
		after: map[string]Status{
			"paris-16": effective("paris"),
			"paris-24": inherited("paris", "paris-16"),
			"paris-28": inherited("paris", "paris-16"),
			"hq-16":    effective("hq"),
		},
		lookup: lookupCase{"10.2.3.4", "paris-28", "paris", "10.2.3.0/28"},
	}, {
		name:  "an import's site appears and it overrides the manual subnet",
		sites: []string{"hq"},
		subnets: []Subnet{
			manual("hq-main", "2001:db8::/48", "hq", 0),
			imported("ad", "2001:db8::/48", "paris", 5),
			manual("own-64", "2001:db8::/64", "hq", 0),
		},
		site:        "paris",
		wantChanged: []string{"ad", "hq-main"},
		before: map[string]Status{
			"hq-main": effective("hq"),
			"ad":      notEffective(ReasonSiteNotFound),
			"own-64":  effective("hq"),
		},
		after: map[string]Status{
			"hq-main": notEffective(ReasonOverriddenByImport),
			"ad":      effective("paris"),
			"own-64":  effective("hq"),
		},
		lookup: lookupCase{"2001:db8:0:1::1", "ad", "paris", "2001:db8::/48"},
	}}
	for _, tt := range tests {
		for how, r := range resolvers(tt.subnets, tt.sites) {
			t.Run(tt.name+"/"+how, func(t *testing.T) {
				checkStatuses(t, r, tt.before)
				if r.HasSite(tt.site) {
					t.Errorf("HasSite(%q) before SetSite", tt.site)
				}
				if got := r.SetSite(tt.site); !slices.Equal(got, tt.wantChanged) {
					t.Errorf("SetSite(%q) changed = %q, want %q", tt.site, got, tt.wantChanged)
				}
				checkStatuses(t, r, tt.after)
				checkLookups(t, r, []lookupCase{tt.lookup})
				if !r.HasSite(tt.site) {
					t.Errorf("not HasSite(%q) after SetSite", tt.site)
				}
				if got := r.SetSite(tt.site); got != nil {
					t.Errorf("SetSite(%q) again changed = %q, want none", tt.site, got)
				}
				if got := r.DeleteSite(tt.site); !slices.Equal(got, tt.wantChanged) {
					t.Errorf("DeleteSite(%q) changed = %q, want %q", tt.site, got, tt.wantChanged)
				}
				checkStatuses(t, r, tt.before)
				if r.HasSite(tt.site) {
					t.Errorf("HasSite(%q) after DeleteSite", tt.site)
				}
				if m, ok := r.Lookup(netip.MustParseAddr(tt.lookup.addr)); ok && m.Site == tt.site {
					t.Errorf("Lookup(%s) = %+v after DeleteSite(%q)", tt.lookup.addr, m, tt.site)
				}
				if got := r.DeleteSite(tt.site); got != nil {
					t.Errorf("DeleteSite(%q) again changed = %q, want none", tt.site, got)
				}
			})
		}
	}
}

func TestSetSubnetUpdates(t *testing.T) {
	r := New()
	r.SetSite("hq")
	r.SetSite("lab")
	steps := []struct {
		name        string
		set         Subnet
		wantChanged []string
		want        map[string]Status
	}{
		{"new subnet", manual("hq-16", "10.1.0.0/16", "hq", 0), []string{"hq-16"},
			map[string]Status{"hq-16": effective("hq")}},
		{"new nested subnet", manual("leaf", "10.1.2.0/24", "", 1), []string{"leaf"},
			map[string]Status{"leaf": inherited("hq", "hq-16")}},
		{"same spec again", manual("leaf", "10.1.2.0/24", "", 1), nil,
			map[string]Status{"leaf": inherited("hq", "hq-16")}},
		{"site changed", manual("hq-16", "10.1.0.0/16", "lab", 0), []string{"hq-16", "leaf"},
			map[string]Status{"hq-16": effective("lab"), "leaf": inherited("lab", "hq-16")}},
		{"creation time changed only", manual("hq-16", "10.1.0.0/16", "lab", 3), nil,
			map[string]Status{"hq-16": effective("lab")}},
		{"CIDR moved out from above the leaf", manual("hq-16", "10.2.0.0/16", "lab", 3), []string{"hq-16", "leaf"},
			map[string]Status{"hq-16": effective("lab"), "leaf": notEffective(ReasonNoSite)}},
		{"leaf given its own site", manual("leaf", "10.1.2.0/24", "hq", 1), []string{"leaf"},
			map[string]Status{"leaf": effective("hq")}},
	}
	for _, s := range steps {
		if got := r.SetSubnet(s.set); !slices.Equal(got, s.wantChanged) {
			t.Errorf("%s: changed = %q, want %q", s.name, got, s.wantChanged)
		}
		checkStatuses(t, r, s.want)
	}
	checkLookups(t, r, []lookupCase{
		{"10.1.2.3", "leaf", "hq", "10.1.2.0/24"},
		{"10.1.3.3", "", "", ""},
		{"10.2.3.3", "hq-16", "lab", "10.2.0.0/16"},
	})
}

// Build keeps the last of two subnets with one name, as a second SetSubnet
// would.
func TestBuildKeepsLastOfAName(t *testing.T) {
	r := Build([]Subnet{
		manual("hq-main", "10.1.0.0/16", "hq", 0),
		manual("hq-main", "10.2.0.0/16", "hq", 0),
	}, []string{"hq"})
	checkStatuses(t, r, map[string]Status{"hq-main": effective("hq")})
	checkLookups(t, r, []lookupCase{
		{"10.1.0.1", "", "", ""},
		{"10.2.0.1", "hq-main", "hq", "10.2.0.0/16"},
	})
	if n := r.groups.Size(); n != 1 {
		t.Errorf("resolver holds %d CIDRs, want 1", n)
	}
}

func TestUnusablePrefixes(t *testing.T) {
	subnets := []Subnet{
		manual("sloppy", "10.1.2.3/16", "hq", 0),
		{Name: "invalid", Site: "hq"},
		manual("mapped", "::ffff:10.0.0.0/104", "hq", 0),
	}
	want := map[string]Status{
		"sloppy": {EffectiveSite: "hq", Reason: ReasonEffective, Message: `addresses in 10.1.0.0/16 belong to site "hq"`},
		"invalid": {Reason: ReasonInvalidCIDR,
			Message: "the CIDR is not a valid IPv4 or IPv6 prefix"},
		"mapped": {Reason: ReasonInvalidCIDR,
			Message: "CIDR ::ffff:10.0.0.0/104 is an IPv4-mapped IPv6 prefix; write it as 10.0.0.0/8"},
	}
	for how, r := range resolvers(subnets, []string{"hq"}) {
		t.Run(how, func(t *testing.T) {
			checkStatuses(t, r, want)
			checkLookups(t, r, []lookupCase{
				{"10.1.9.9", "sloppy", "hq", "10.1.0.0/16"},
				{"10.2.0.1", "", "", ""},
				{"::ffff:10.2.0.1", "", "", ""},
			})
			if got := r.SubnetCount("hq"); got != 1 {
				t.Errorf("SubnetCount(hq) = %d, want 1", got)
			}
		})
	}
}

// SubnetCount is the Site's status.subnets: every subnet reporting
// Effective for it, own or inherited.
func TestSubnetCount(t *testing.T) {
	r := Build([]Subnet{
		manual("hq-8", "10.0.0.0/8", "hq", 0),
		manual("hq-8-copy", "10.0.0.0/8", "hq", 1), // agrees: counted
		manual("lab-8", "10.0.0.0/8", "lab", 2),    // duplicate: not counted
		manual("leaf", "10.1.0.0/16", "", 0),       // inherited: counted
		manual("lab-16", "10.2.0.0/16", "lab", 0),
		manual("ghost", "10.3.0.0/16", "ghost", 0),
	}, []string{"hq", "lab"})
	want := map[string]int{"hq": 3, "lab": 1, "ghost": 0, "": 0}
	for site, n := range want {
		if got := r.SubnetCount(site); got != n {
			t.Errorf("SubnetCount(%q) = %d, want %d", site, got, n)
		}
	}
	r.DeleteSite("hq") // lab-8 now wins 10.0.0.0/8 and leaf inherits lab
	want = map[string]int{"hq": 0, "lab": 3}
	for site, n := range want {
		if got := r.SubnetCount(site); got != n {
			t.Errorf("after DeleteSite(hq): SubnetCount(%q) = %d, want %d", site, got, n)
		}
	}
}

// A change that moves hundreds of lookup entries at once (published by
// cloning the table rather than copy-on-write inserts) leaves every one
// right, before and after.
func TestLargeCascade(t *testing.T) {
	subnets := []Subnet{manual("top", "10.0.0.0/8", "hq", 0)}
	var lookups []lookupCase
	for i := range 2 * persistLimit {
		name := fmt.Sprintf("leaf-%d", i)
		cidr := fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)
		subnets = append(subnets, manual(name, cidr, "", 0))
		lookups = append(lookups, lookupCase{fmt.Sprintf("10.%d.%d.1", i/256, i%256), name, "lab", cidr})
	}
	r := Build(subnets, []string{"hq", "lab"})
	if got := r.SetSubnet(manual("top", "10.0.0.0/8", "lab", 0)); len(got) != len(subnets) {
		t.Errorf("SetSubnet changed %d subnets, want %d", len(got), len(subnets))
	}
	checkLookups(t, r, lookups)
	if got := r.SubnetCount("lab"); got != len(subnets) {
		t.Errorf("SubnetCount(lab) = %d, want %d", got, len(subnets))
	}
	r.DeleteSite("lab")
	for _, c := range lookups {
		c.subnet = ""
		checkLookups(t, r, []lookupCase{c})
	}
}

// Random changes applied one by one must end where Build ends, agree with
// the reference after every step, and report exactly the statuses that
// changed.
func TestIncrementalMatchesBuild(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			prefixes, probes := nestedPrefixes(rng, 40)
			names := make([]string, 30)
			for i := range names {
				names[i] = fmt.Sprintf("sn-%02d", i)
			}
			sites := []string{"hq", "lab", "paris", "lyon", "oslo"}
			h := newHarness(t, New())
			h.probes = probes
			for range 1500 {
				o := op{kind: opKind(rng.IntN(int(opKinds)))}
				switch o.kind {
				case opSetSubnet, opSetSubnetToo:
					o.kind = opSetSubnet
					o.subnet = Subnet{
						Name:    names[rng.IntN(len(names))],
						Prefix:  prefixes[rng.IntN(len(prefixes))],
						Source:  []Source{SourceManual, SourceActiveDirectory}[rng.IntN(2)],
						Created: testEpoch.Add(time.Duration(rng.IntN(5)) * time.Minute),
					}
					if rng.IntN(3) > 0 {
						o.subnet.Site = sites[rng.IntN(len(sites))]
					}
				case opDeleteSubnet:
					o.name = names[rng.IntN(len(names))]
				case opSetSite, opDeleteSite:
					o.name = sites[rng.IntN(len(sites))]
				case opRebuild:
					o.kind = opSetSite // rebuilding is the fuzzer's job; keep this incremental
					o.name = sites[rng.IntN(len(sites))]
				}
				h.step(o)
			}
			if len(h.subnets) < 5 {
				t.Fatalf("only %d subnets at the end; the sequence exercises too little", len(h.subnets))
			}
		})
	}
}

// nestedPrefixes returns n prefixes that nest deeply (each one inside an
// earlier one or a fresh root), IPv4 and IPv6, and addresses in and around
// them.
func nestedPrefixes(rng *rand.Rand, n int) (prefixes []netip.Prefix, probes []netip.Addr) {
	roots := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")}
	prefixes = append(prefixes, roots...)
	for len(prefixes) < n {
		parent := prefixes[rng.IntN(len(prefixes))]
		if parent.Bits() >= parent.Addr().BitLen()-2 {
			continue
		}
		child := randomSubPrefix(rng, parent, parent.Bits()+1+rng.IntN(min(8, parent.Addr().BitLen()-parent.Bits()-1)))
		if !slices.Contains(prefixes, child) {
			prefixes = append(prefixes, child)
		}
	}
	for _, p := range prefixes {
		probes = append(probes, randomAddrIn(rng, p), p.Addr())
	}
	probes = append(probes, netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db9::1"))
	return prefixes, probes
}

// randomSubPrefix returns a random prefix of the given length inside p.
func randomSubPrefix(rng *rand.Rand, p netip.Prefix, bits int) netip.Prefix {
	sub, err := randomAddrIn(rng, p).Prefix(bits)
	if err != nil {
		panic(err)
	}
	return sub
}

// randomAddrIn returns a random address inside p.
func randomAddrIn(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		if rng.IntN(2) == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Lookups and status reads proceed while the topology changes; run with
// -race.
func TestConcurrentUse(t *testing.T) {
	r := New()
	addrs := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::1")}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, a := range addrs {
					if m, ok := r.Lookup(a); ok && !m.Prefix.Contains(a) {
						t.Errorf("Lookup(%s) = %+v, which does not contain it", a, m)
					}
				}
				r.Status("leaf")
				r.SubnetCount("hq")
			}
		})
	}
	for i := range 2000 {
		site := []string{"hq", "lab"}[i%2]
		r.SetSite(site)
		r.SetSubnet(manual("top", "10.0.0.0/8", site, 0))
		r.SetSubnet(manual("leaf", "10.1.2.0/24", "", 0))
		r.SetSubnet(manual("v6", "2001:db8::/32", site, 0))
		if i%3 == 0 {
			r.DeleteSubnet("leaf")
			r.DeleteSite(site)
		}
	}
	close(stop)
	readers.Wait()
}

// The agent locator calls Lookup on every check-in; it must not allocate.
func TestLookupDoesNotAllocate(t *testing.T) {
	r := Build([]Subnet{
		manual("hq-8", "10.0.0.0/8", "hq", 0),
		manual("leaf", "10.1.2.0/24", "", 0),
		manual("v6", "2001:db8::/32", "hq", 0),
	}, []string{"hq"})
	for _, a := range []string{"10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "192.0.2.1"} {
		addr := netip.MustParseAddr(a)
		if n := testing.AllocsPerRun(100, func() { r.Lookup(addr) }); n != 0 {
			t.Errorf("Lookup(%s) allocates %v times", a, n)
		}
	}
}
