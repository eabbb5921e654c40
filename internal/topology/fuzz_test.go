package topology

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// FuzzResolver applies a sequence of operations decoded from the input to
// a Resolver and, after each one, checks it against Build on the same
// state and against referenceResolve, and checks that the changed list is
// exactly the set of statuses that changed.
func FuzzResolver(f *testing.F) {
	f.Add([]byte{})
	// Site a; s0 10.0.0.0/8 site a; s1 10.0.0.0/24 no site; delete site a.
	f.Add([]byte{2, 0, 0, 0, 1, 1, 0, 0, 1, 4, 0, 0, 3, 0})
	// Manual and AD at one CIDR, the AD one's site missing, then created
	// and deleted again.
	f.Add([]byte{2, 0, 0, 0, 2, 1, 0, 0, 1, 2, 2, 1, 2, 1, 3, 1})
	// Same-CIDR duplicates with equal creation times, a rebuild, deletes.
	f.Add([]byte{2, 0, 2, 1, 0, 2, 3, 1, 0, 0, 1, 3, 2, 0, 0, 0, 3, 1, 0, 4, 1, 1, 1, 2})
	// IPv6 nested three deep, an IPv4-mapped and an invalid prefix.
	f.Add([]byte{2, 2, 0, 0, 11, 3, 0, 0, 1, 12, 0, 0, 0, 2, 13, 0, 0, 0, 3, 15, 1, 0, 0, 4, 16, 1, 0, 1, 1, 3, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t, New())
		for _, o := range decodeOps(data) {
			h.step(o)
		}
	})
}

// Fuzz vocabulary: few names, CIDRs, sites and creation times, so that
// conflicts, nesting and ties are common.
var (
	fuzzNames     = []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	fuzzSiteNames = []string{"a", "b", "c"}
	fuzzPrefixes  = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("10.0.0.0/16"),
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("10.0.0.0/24"),
		netip.MustParsePrefix("10.0.1.0/24"),
		netip.MustParsePrefix("10.0.0.0/25"),
		netip.MustParsePrefix("10.0.0.128/25"),
		netip.MustParsePrefix("10.0.0.0/26"),
		netip.MustParsePrefix("10.0.0.7/24"), // not canonical: 10.0.0.0/24
		netip.MustParsePrefix("::/0"),
		netip.MustParsePrefix("2001:db8::/32"),
		netip.MustParsePrefix("2001:db8::/48"),
		netip.MustParsePrefix("2001:db8::/64"),
		netip.MustParsePrefix("2001:db8:0:1::/64"),
		netip.MustParsePrefix("::ffff:10.0.0.0/104"), // IPv4-mapped: invalid
		{}, // invalid
	}
	fuzzProbes = []netip.Addr{
		netip.MustParseAddr("10.0.0.1"),
		netip.MustParseAddr("10.0.0.200"),
		netip.MustParseAddr("10.0.1.5"),
		netip.MustParseAddr("10.1.0.9"),
		netip.MustParseAddr("10.2.0.0"),
		netip.MustParseAddr("11.0.0.1"),
		netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("2001:db8:0:1::1"),
		netip.MustParseAddr("2001:db8:1::1"),
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("::ffff:10.0.0.1"),
		netip.MustParseAddr("fe80::1%eth0"),
		{},
	}
	fuzzEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// decodeOps turns fuzz bytes into operations. Each starts with a kind
// byte; SetSubnet reads four more bytes (name, prefix, site, source and
// age), the others one (the name).
func decodeOps(data []byte) []op {
	next := func() byte {
		if len(data) == 0 {
			return 0
		}
		b := data[0]
		data = data[1:]
		return b
	}
	var ops []op
	for len(data) > 0 && len(ops) < 64 {
		kind := opKind(next() % uint8(opKinds))
		o := op{kind: kind}
		switch kind {
		case opSetSubnet, opSetSubnetToo:
			o.kind = opSetSubnet
			o.subnet.Name = fuzzNames[int(next())%len(fuzzNames)]
			o.subnet.Prefix = fuzzPrefixes[int(next())%len(fuzzPrefixes)]
			if site := int(next()) % (len(fuzzSiteNames) + 1); site > 0 {
				o.subnet.Site = fuzzSiteNames[site-1]
			}
			b := next()
			o.subnet.Source = SourceManual
			if b&1 == 1 {
				o.subnet.Source = SourceActiveDirectory
			}
			o.subnet.Created = fuzzEpoch.Add(time.Duration(b>>1%4) * time.Minute)
		case opDeleteSubnet:
			o.name = fuzzNames[int(next())%len(fuzzNames)]
		case opSetSite, opDeleteSite:
			o.name = fuzzSiteNames[int(next())%len(fuzzSiteNames)]
		}
		ops = append(ops, o)
	}
	return ops
}

type opKind uint8

const (
	opSetSubnet opKind = iota
	opDeleteSubnet
	opSetSite
	opDeleteSite
	opRebuild      // replace the resolver by Build of the current state
	opSetSubnetToo // SetSubnet again, so that it is the commonest
	opKinds
)

// op is one change to the topology.
type op struct {
	kind   opKind
	subnet Subnet
	name   string
}

// harness drives a Resolver and a plain model of its inputs side by side.
type harness struct {
	t       testing.TB
	r       *Resolver
	subnets map[string]Subnet
	sites   map[string]bool
	probes  []netip.Addr
}

func newHarness(t testing.TB, r *Resolver) *harness {
	return &harness{t: t, r: r, subnets: map[string]Subnet{}, sites: map[string]bool{}, probes: fuzzProbes}
}

// step applies o and checks the resolver against the references.
func (h *harness) step(o op) {
	h.t.Helper()
	before := h.r.Statuses()
	var changed []string
	switch o.kind {
	case opSetSubnet:
		changed = h.r.SetSubnet(o.subnet)
		h.subnets[o.subnet.Name] = o.subnet
	case opDeleteSubnet:
		changed = h.r.DeleteSubnet(o.name)
		delete(h.subnets, o.name)
	case opSetSite:
		changed = h.r.SetSite(o.name)
		h.sites[o.name] = true
	case opDeleteSite:
		changed = h.r.DeleteSite(o.name)
		delete(h.sites, o.name)
	case opRebuild:
		h.r = Build(slices.Collect(maps.Values(h.subnets)), slices.Collect(maps.Keys(h.sites)))
		return
	}
	after := h.r.Statuses()
	var want []string
	for name, s := range after {
		if old, ok := before[name]; !ok || old != s {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	if !slices.Equal(changed, want) {
		h.t.Fatalf("%+v: changed = %q, statuses that changed = %q", o, changed, want)
	}
	h.check(o)
}

// check compares the resolver with Build on the same inputs and with
// referenceResolve.
func (h *harness) check(o op) {
	h.t.Helper()
	got := h.r.Statuses()
	built := Build(slices.Collect(maps.Values(h.subnets)), slices.Collect(maps.Keys(h.sites)))
	if want := built.Statuses(); !maps.Equal(got, want) {
		h.t.Fatalf("after %+v: incremental statuses differ from Build:\n got %v\nwant %v", o, got, want)
	}
	cidrs := map[netip.Prefix]bool{}
	for _, s := range h.subnets {
		if validPrefix(s.Prefix) {
			cidrs[s.Prefix.Masked()] = true
		}
	}
	if h.r.groups.Size() != len(cidrs) {
		h.t.Fatalf("after %+v: resolver holds %d CIDRs, the subnets have %d", o, h.r.groups.Size(), len(cidrs))
	}
	if h.r.SiteCount() != len(h.sites) {
		h.t.Fatalf("after %+v: SiteCount() = %d, %d Sites exist", o, h.r.SiteCount(), len(h.sites))
	}
	ref := referenceResolve(h.subnets, h.sites)
	if len(got) != len(ref.statuses) {
		h.t.Fatalf("after %+v: %d statuses, reference has %d", o, len(got), len(ref.statuses))
	}
	counts := map[string]int{}
	for name, want := range ref.statuses {
		s := got[name]
		if s.Reason != want.Reason || s.EffectiveSite != want.EffectiveSite || s.InheritedFrom != want.InheritedFrom {
			h.t.Fatalf("after %+v: subnet %s = %+v, reference says %+v (inputs %v, sites %v)", o, name, s, want, h.subnets, h.sites)
		}
		if want.Reason == ReasonEffective {
			counts[want.EffectiveSite]++
		}
	}
	for _, site := range append(slices.Collect(maps.Keys(counts)), fuzzSiteNames...) {
		if got := h.r.SubnetCount(site); got != counts[site] {
			h.t.Fatalf("after %+v: SubnetCount(%q) = %d, reference %d", o, site, got, counts[site])
		}
	}
	for _, addr := range h.probes {
		m, ok := h.r.Lookup(addr)
		bm, bok := built.Lookup(addr)
		rm, rok := ref.lookup(addr)
		if m != bm || ok != bok || m != rm || ok != rok {
			h.t.Fatalf("after %+v: Lookup(%s) = %+v %v, Build %+v %v, reference %+v %v", o, addr, m, ok, bm, bok, rm, rok)
		}
		// The fast path gives the same site, through IDs that stay valid
		// as the table changes.
		id, sok := h.r.LookupSite(addr)
		bid, bsok := built.LookupSite(addr)
		if sok != rok || bsok != rok || rok && (h.r.SiteName(id) != rm.Site || built.SiteName(bid) != rm.Site) {
			h.t.Fatalf("after %+v: LookupSite(%s) = %q %v, Build %q %v, reference %q %v", o, addr, h.r.SiteName(id), sok, built.SiteName(bid), bsok, rm.Site, rok)
		}
	}
}

// reference is the outcome of referenceResolve.
type reference struct {
	statuses map[string]Status // reason, sites and inheritance only
	winners  []Match
}

// referenceResolve applies the rules the slow and obvious way: CIDRs from
// shortest to longest, each inheriting from the longest already-resolved
// winner that strictly contains it, found by scanning all of them.
func referenceResolve(subnets map[string]Subnet, sites map[string]bool) reference {
	ref := reference{statuses: map[string]Status{}}
	byPrefix := map[netip.Prefix][]Subnet{}
	for name, s := range subnets {
		p := s.Prefix.Masked()
		if !s.Prefix.IsValid() || p.Addr().Is4In6() {
			ref.statuses[name] = Status{Reason: ReasonInvalidCIDR}
			continue
		}
		byPrefix[p] = append(byPrefix[p], s)
	}
	prefixes := slices.SortedFunc(maps.Keys(byPrefix), func(a, b netip.Prefix) int { return cmp.Compare(a.Bits(), b.Bits()) })
	inheritedFrom := map[string]string{} // winner name → the subnet whose site it has
	for _, p := range prefixes {
		var inherited Match // Subnet: the name the site came from
		for _, w := range ref.winners {
			if w.Prefix.Bits() < p.Bits() && w.Prefix.Contains(p.Addr()) && (inherited.Site == "" || w.Prefix.Bits() > inherited.Prefix.Bits()) {
				inherited = Match{Subnet: inheritedFrom[w.Subnet], Site: w.Site, Prefix: w.Prefix}
			}
		}
		siteOf := func(s Subnet) string { return cmp.Or(s.Site, inherited.Site) }
		canWin := func(s Subnet) bool {
			if s.Site != "" {
				return sites[s.Site]
			}
			return inherited.Site != ""
		}
		members := byPrefix[p]
		slices.SortFunc(members, func(a, b Subnet) int {
			return cmp.Or(
				cmp.Compare(sourceRank(a.Source), sourceRank(b.Source)),
				a.Created.Compare(b.Created),
				cmp.Compare(a.Name, b.Name))
		})
		var winner *Subnet
		for i := range members {
			if canWin(members[i]) {
				winner = &members[i]
				break
			}
		}
		for _, s := range members {
			var st Status
			switch {
			case winner != nil && s.Name == winner.Name, winner != nil && canWin(s) && s.Source == winner.Source && siteOf(s) == siteOf(*winner):
				st = Status{Reason: ReasonEffective, EffectiveSite: siteOf(s)}
				if s.Site == "" {
					st.InheritedFrom = inherited.Subnet
				}
			case winner != nil && winner.Source == SourceActiveDirectory && s.Source != SourceActiveDirectory:
				st = Status{Reason: ReasonOverriddenByImport}
			case s.Site != "" && !sites[s.Site]:
				st = Status{Reason: ReasonSiteNotFound}
			case s.Site == "" && inherited.Site == "":
				st = Status{Reason: ReasonNoSite}
			default:
				st = Status{Reason: ReasonDuplicate}
			}
			ref.statuses[s.Name] = st
		}
		if winner != nil {
			ref.winners = append(ref.winners, Match{Subnet: winner.Name, Site: siteOf(*winner), Prefix: p})
			inheritedFrom[winner.Name] = winner.Name
			if winner.Site == "" {
				inheritedFrom[winner.Name] = inherited.Subnet
			}
		}
	}
	return ref
}

// lookup returns the winner with the longest prefix containing addr, by
// scanning all of them.
func (ref reference) lookup(addr netip.Addr) (Match, bool) {
	addr = addr.Unmap().WithZone("")
	var best Match
	found := false
	for _, w := range ref.winners {
		if w.Prefix.Contains(addr) && (!found || w.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = w, true
		}
	}
	return best, found
}

// sourceRank orders sources by precedence: ActiveDirectory first.
func sourceRank(s Source) int {
	if s == SourceActiveDirectory {
		return 0
	}
	return 1
}
