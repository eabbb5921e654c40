package main

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Shape of the generated topology. The shares are probabilities per nested
// subnet (or per site), so the counts vary a little with the seed.
const (
	// ipv6SiteShare of the sites also have an IPv6 /48 with nested /56s and
	// /64s.
	ipv6SiteShare = 0.1
	// importedSiteShare of the sites come from the directory import: the
	// subnets of theirs that name a site are ActiveDirectory subnets.
	importedSiteShare = 0.25
	// namedSiteShare of the nested subnets name a site; the others inherit
	// it from the nearest enclosing subnet that has one.
	namedSiteShare = 0.35
	// foreignSiteShare of the nested subnets that name a site name another
	// site than the one whose block holds them (a satellite office reached
	// through this site's range).
	foreignSiteShare = 0.1
	// duplicateShare of the nested subnets come as a conflicting pair: an
	// ActiveDirectory subnet and a Manual one for another site at the same
	// CIDR, so that the Manual one reports OverriddenByImport. The sites'
	// own blocks never do, so this makes about 1% of all Subnets overridden.
	duplicateShare = 0.0115
	// missingSiteShare of the nested subnets name a Site that does not exist
	// (SiteNotFound); subnets nested in them inherit from further out.
	missingSiteShare = 0.005
	// maxDepth is the number of nesting levels: a site's block and two
	// levels of subnets inside it.
	maxDepth = 3
)

// Address plan. Every site gets an IPv4 /18 of its own, first out of
// 10.0.0.0/8 (1,024 of them) then out of 172.16.0.0/12 (64 more), with /21s
// and /24s nested inside; the IPv6 sites get a /48 out of one ULA /32 with
// /56s and /64s nested inside.
var (
	ipv4Pools   = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12")}
	ipv4Lengths = [maxDepth]int{18, 21, 24}
	ipv6Pool    = netip.MustParsePrefix("fd5e:7e00::/32")
	ipv6Lengths = [maxDepth]int{48, 56, 64}
)

// maxSites is the number of distinct IPv4 site blocks the address plan has.
func maxSites() int {
	n := 0
	for _, pool := range ipv4Pools {
		n += 1 << (ipv4Lengths[0] - pool.Bits())
	}
	return n
}

// maxSubnetsPerSite is the number of subnets a site's IPv4 block and the
// levels nested in it hold.
func maxSubnetsPerSite() int {
	n, level := 0, 1
	for depth := range maxDepth {
		if depth > 0 {
			level <<= ipv4Lengths[depth] - ipv4Lengths[depth-1]
		}
		n += level
	}
	return n
}

// wantStatus is the status a Subnet must end up with.
type wantStatus struct {
	EffectiveSite string
	InheritedFrom string
	Reason        string
}

// plannedSubnet is one Subnet to create and the status it must end up with.
type plannedSubnet struct {
	Name   string
	CIDR   netip.Prefix
	Site   string // spec.site; "" inherits
	Source siteopsv1.SubnetSource
	Want   wantStatus

	// parent is the CIDR of the enclosing subnet, invalid for a site block.
	parent netip.Prefix
}

// plan is a generated topology: what to create, in which order, and what
// every status must say once the controllers are done.
type plan struct {
	// Sites are the names of the Sites, in creation order.
	Sites []string
	// SubnetsBySite holds, per site, the Subnets inside that site's address
	// blocks in creation order: every subnet after the subnets enclosing it,
	// and an ActiveDirectory subnet just before the Manual one it overrides,
	// so that the first status each Subnet gets is already its final one.
	SubnetsBySite [][]plannedSubnet
	// SiteSubnets is the status.subnets every Site must end up with.
	SiteSubnets map[string]int32
}

// subnetCount is the number of Subnets in the plan.
func (p *plan) subnetCount() int {
	n := 0
	for _, subnets := range p.SubnetsBySite {
		n += len(subnets)
	}
	return n
}

// wantSubnets maps every Subnet's name to the status it must end up with.
func (p *plan) wantSubnets() map[string]wantStatus {
	want := make(map[string]wantStatus, p.subnetCount())
	for _, subnets := range p.SubnetsBySite {
		for _, s := range subnets {
			want[s.Name] = s.Want
		}
	}
	return want
}

// siteName is the name of the i-th Site.
func siteName(i int) string { return fmt.Sprintf("site-%04d", i) }

// generate returns a deterministic topology of sites Sites and exactly
// subnets Subnets for seed, spread evenly over the sites.
func generate(sites, subnets int, seed uint64) (*plan, error) {
	if sites < 1 || sites > maxSites() {
		return nil, fmt.Errorf("the address plan has room for 1 to %d sites, not %d", maxSites(), sites)
	}
	if subnets < 0 {
		return nil, fmt.Errorf("the number of subnets must not be negative, got %d", subnets)
	}
	if perSite := (subnets + sites - 1) / sites; perSite > maxSubnetsPerSite() {
		return nil, fmt.Errorf("the address plan has room for %d subnets per site, not %d", maxSubnetsPerSite(), perSite)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x5173))
	p := &plan{SubnetsBySite: make([][]plannedSubnet, sites)}
	exists := make(map[string]bool, sites)
	for i := range sites {
		p.Sites = append(p.Sites, siteName(i))
		exists[siteName(i)] = true
	}
	for i := range sites {
		budget := subnets / sites
		if i < subnets%sites {
			budget++
		}
		g := siteGenerator{rng: rng, sites: sites, site: i}
		p.SubnetsBySite[i] = g.generate(budget)
	}

	p.SiteSubnets = make(map[string]int32, sites)
	for _, name := range p.Sites {
		p.SiteSubnets[name] = 0
	}
	for i := range p.SubnetsBySite {
		if err := resolve(p.SubnetsBySite[i], exists); err != nil {
			return nil, fmt.Errorf("computing the statuses of %s's subnets: %w", siteName(i), err)
		}
		for _, s := range p.SubnetsBySite[i] {
			if s.Want.Reason == siteopsv1.ReasonEffective {
				p.SiteSubnets[s.Want.EffectiveSite]++
			}
		}
	}
	return p, nil
}

// block is a CIDR that can take nested subnets.
type block struct {
	prefix netip.Prefix
	depth  int           // 0 for a site's own block
	family [maxDepth]int // prefix lengths per depth in this address family
	used   map[int]bool  // child slots taken
}

// slots is the number of child prefixes a block at this depth holds.
func (b *block) slots() int { return 1 << (b.family[b.depth+1] - b.family[b.depth]) }

// full reports whether no subnet can be nested in b any more.
func (b *block) full() bool { return b.depth+1 >= maxDepth || len(b.used) == b.slots() }

// siteGenerator lays out the subnets inside one site's address blocks.
type siteGenerator struct {
	rng   *rand.Rand
	sites int // number of sites
	site  int // index of the site

	out    []plannedSubnet
	blocks []*block // blocks that can still take nested subnets
}

// generate returns budget subnets in creation order.
func (g *siteGenerator) generate(budget int) []plannedSubnet {
	if budget == 0 {
		return nil
	}
	own := siteName(g.site)
	source := siteopsv1.SourceManual
	if g.rng.Float64() < importedSiteShare {
		source = siteopsv1.SourceActiveDirectory
	}
	g.addBlock(sitePrefix(g.site), ipv4Lengths, 0, netip.Prefix{}, own, source)
	// An IPv6 block needs room for itself and a subnet or two inside it.
	withIPv6 := budget >= 3 && g.rng.Float64() < ipv6SiteShare
	for len(g.out) < budget {
		if withIPv6 && len(g.out) >= budget/2 {
			g.addBlock(subprefix(ipv6Pool, ipv6Lengths[0], g.site), ipv6Lengths, 0, netip.Prefix{}, own, source)
			withIPv6 = false
			continue
		}
		g.addNested(budget-len(g.out), own, source)
	}
	return g.out
}

// addNested adds one subnet, or a conflicting pair when room is left, inside
// a random block that is not full.
func (g *siteGenerator) addNested(room int, own string, source siteopsv1.SubnetSource) {
	var open []*block
	for _, b := range g.blocks {
		if !b.full() {
			open = append(open, b)
		}
	}
	parent := open[g.rng.IntN(len(open))]
	slot := g.rng.IntN(parent.slots())
	for parent.used[slot] {
		slot = (slot + 1) % parent.slots()
	}
	parent.used[slot] = true
	depth := parent.depth + 1
	prefix := subprefix(parent.prefix, parent.family[depth], slot)

	r := g.rng.Float64()
	if r < duplicateShare && room < 2 {
		r = 1 // no room left for a pair: a site-less subnet instead
	}
	switch {
	case r < duplicateShare:
		g.addBlock(prefix, parent.family, depth, parent.prefix, own, siteopsv1.SourceActiveDirectory)
		g.out = append(g.out, plannedSubnet{
			Name:   subnetName(prefix, siteopsv1.SourceManual),
			CIDR:   prefix,
			Site:   g.otherSite(),
			Source: siteopsv1.SourceManual,
			parent: parent.prefix,
		})
	case r < duplicateShare+missingSiteShare:
		g.addBlock(prefix, parent.family, depth, parent.prefix, fmt.Sprintf("retired-%04d", g.site), siteopsv1.SourceManual)
	case r < duplicateShare+missingSiteShare+namedSiteShare:
		site := own
		if g.rng.Float64() < foreignSiteShare {
			site = g.otherSite()
		}
		g.addBlock(prefix, parent.family, depth, parent.prefix, site, source)
	default:
		g.addBlock(prefix, parent.family, depth, parent.prefix, "", siteopsv1.SourceManual)
	}
}

// addBlock adds a subnet that further subnets may be nested in.
func (g *siteGenerator) addBlock(prefix netip.Prefix, family [maxDepth]int, depth int, parent netip.Prefix,
	site string, source siteopsv1.SubnetSource) {
	g.out = append(g.out, plannedSubnet{
		Name:   subnetName(prefix, source),
		CIDR:   prefix,
		Site:   site,
		Source: source,
		parent: parent,
	})
	g.blocks = append(g.blocks, &block{prefix: prefix, depth: depth, family: family, used: map[int]bool{}})
}

// otherSite is a random site other than the generator's own, or its own
// when it is the only one.
func (g *siteGenerator) otherSite() string {
	if g.sites == 1 {
		return siteName(g.site)
	}
	return siteName((g.site + 1 + g.rng.IntN(g.sites-1)) % g.sites)
}

// sitePrefix is the IPv4 block of the i-th site.
func sitePrefix(i int) netip.Prefix {
	for _, pool := range ipv4Pools {
		n := 1 << (ipv4Lengths[0] - pool.Bits())
		if i < n {
			return subprefix(pool, ipv4Lengths[0], i)
		}
		i -= n
	}
	panic(fmt.Sprintf("site index beyond the address plan (%d sites)", maxSites()))
}

// subprefix is the n-th prefix of length bits inside p.
func subprefix(p netip.Prefix, bits, n int) netip.Prefix {
	addr := p.Addr().AsSlice()
	for k := 0; n>>k != 0; k++ {
		if n>>k&1 == 1 {
			pos := bits - 1 - k
			addr[pos/8] |= 0x80 >> (pos % 8)
		}
	}
	a, _ := netip.AddrFromSlice(addr)
	return netip.PrefixFrom(a, bits)
}

// subnetName names a Subnet after its CIDR, as the directory import and most
// people do; imported subnets carry an "ad-" prefix.
func subnetName(prefix netip.Prefix, source siteopsv1.SubnetSource) string {
	name := strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(prefix.String())
	if source == siteopsv1.SourceActiveDirectory {
		return "ad-" + name
	}
	return name
}

// inheritance is what subnets nested in a CIDR inherit through it: a site
// and the subnet whose spec.site supplied it.
type inheritance struct {
	site, from string
}

// resolve fills in Want for subnets, one site's subnets in creation order,
// following ARCHITECTURE.md §2: an ActiveDirectory subnet overrides a Manual
// one at the same CIDR; a subnet naming a missing Site or with nothing to
// inherit is not effective and passes down what its CIDR inherits; a
// site-less subnet inherits the site of the nearest enclosing effective
// subnet. It is written independently of internal/topology so that it
// checks the controllers rather than repeats them. The generator never
// makes two subnets with the same CIDR and source, so rule 3 (the oldest
// wins) never applies.
func resolve(subnets []plannedSubnet, siteExists map[string]bool) error {
	byCIDR := map[netip.Prefix][]int{}
	var order []netip.Prefix
	for i, s := range subnets {
		if _, seen := byCIDR[s.CIDR]; !seen {
			order = append(order, s.CIDR)
		}
		byCIDR[s.CIDR] = append(byCIDR[s.CIDR], i)
	}
	passDown := map[netip.Prefix]inheritance{}
	// Parents come first in creation order, so a CIDR's parent is resolved
	// before it.
	for _, cidr := range order {
		members := byCIDR[cidr]
		inherited := passDown[subnets[members[0]].parent]
		candidate := func(s plannedSubnet) bool {
			if s.Site != "" {
				return siteExists[s.Site]
			}
			return inherited.site != ""
		}
		winner := -1
		for _, i := range members {
			s := subnets[i]
			if !candidate(s) {
				continue
			}
			if winner >= 0 {
				if subnets[winner].Source == s.Source {
					return fmt.Errorf("CIDR %s has two %s subnets", cidr, s.Source)
				}
				if s.Source != siteopsv1.SourceActiveDirectory {
					continue
				}
			}
			winner = i
		}

		passDown[cidr] = inherited
		for _, i := range members {
			s := &subnets[i]
			switch {
			case i == winner && s.Site != "":
				s.Want = wantStatus{EffectiveSite: s.Site, Reason: siteopsv1.ReasonEffective}
				passDown[cidr] = inheritance{site: s.Site, from: s.Name}
			case i == winner:
				s.Want = wantStatus{EffectiveSite: inherited.site, InheritedFrom: inherited.from, Reason: siteopsv1.ReasonEffective}
			case winner >= 0 && subnets[winner].Source == siteopsv1.SourceActiveDirectory:
				s.Want = wantStatus{Reason: siteopsv1.ReasonOverriddenByImport}
			case s.Site != "":
				s.Want = wantStatus{Reason: siteopsv1.ReasonSiteNotFound}
			default:
				s.Want = wantStatus{Reason: siteopsv1.ReasonNoSite}
			}
		}
	}
	return nil
}
