package topology

import (
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gaissmai/bart"
)

// persistLimit is the number of lookup-table edits up to which a change is
// published by copy-on-write inserts (about a microsecond each); beyond it
// cloning the whole table once and editing the clone is cheaper.
const persistLimit = 256

// Resolver holds every Subnet and Site and keeps each Subnet's Status and
// the address lookup table current as they change. A change recomputes
// only the CIDR it touches and the subnets nested inside it whose inherited
// site can change, never the whole table.
//
// A Resolver is safe for concurrent use. Lookup and LookupSite take no
// lock: they read an immutable table that each change replaces atomically.
//
// Create one with New or Build; the zero value is not usable.
type Resolver struct {
	// lookup is the published table of effective subnets, one per CIDR.
	// Tables are never modified once stored.
	lookup atomic.Pointer[bart.Table[entry]]
	// siteNames is the published site table: SiteID i names siteNames[i].
	// It only grows, and an element is never changed once published, so
	// an ID read from any table stays valid in every later one.
	siteNames atomic.Pointer[[]string]
	// siteCount is the number of Sites that exist, for SiteCount.
	siteCount atomic.Int64

	mu sync.RWMutex // guards everything below
	// subnets holds every subnet by name, valid or not.
	subnets map[string]*subnetState
	// groups holds, per CIDR, the valid subnets that have it.
	groups bart.Table[*group]
	// sites is the set of Site names that exist.
	sites map[string]struct{}
	// subnetsNaming maps a site name to the valid subnets whose spec.site
	// names it, existing or not, so a Site change touches only those.
	subnetsNaming map[string]map[string]*subnetState
	// effectiveCount maps a site to the number of subnets that report
	// Effective with that site.
	effectiveCount map[string]int
	// siteIDs maps a site name that some lookup entry carried to its ID.
	// IDs are never reused, so the table holds every site name a winner
	// ever mapped to during the resolver's life: a few thousand names.
	siteIDs map[string]SiteID
}

// SiteID is a small index that names a site in the resolver's site table:
// what LookupSite returns, turned back into the name by SiteName.
type SiteID int32

// entry is what the lookup table holds for an effective CIDR: the site by
// value, so that LookupSite reads nothing beyond the trie's own nodes, and
// the full Match for Lookup.
type entry struct {
	site  SiteID
	match *Match
}

// subnetState is one subnet and its current status.
type subnetState struct {
	spec   Subnet // Prefix masked when valid
	valid  bool
	status Status
}

// inheritance is the site that a CIDR passes down to site-less subnets
// nested inside it, and the subnet whose spec.site supplied it.
type inheritance struct {
	site string // "" when there is nothing to inherit
	from string
}

// group is every valid subnet with one CIDR: the candidates for it.
type group struct {
	prefix  netip.Prefix
	members []*subnetState
	// winner is the effective subnet for the CIDR, nil when none of the
	// members could be effective.
	winner *subnetState
	// passDown is what subnets nested inside this CIDR inherit through it:
	// the winner's effective site, or, without a winner, what this CIDR
	// itself inherits.
	passDown inheritance
}

// New returns a Resolver with no subnets and no sites.
func New() *Resolver {
	r := &Resolver{
		subnets:        map[string]*subnetState{},
		sites:          map[string]struct{}{},
		subnetsNaming:  map[string]map[string]*subnetState{},
		effectiveCount: map[string]int{},
		siteIDs:        map[string]SiteID{},
	}
	r.lookup.Store(new(bart.Table[entry]))
	r.siteNames.Store(new([]string))
	return r
}

// Build returns a Resolver holding subnets and sites, resolved in one pass.
// It is the bulk-load equivalent of New followed by SetSite and SetSubnet
// calls; when two subnets share a name, the later one is kept.
func Build(subnets []Subnet, sites []string) *Resolver {
	r := New()
	for _, site := range sites {
		if site != "" {
			r.sites[site] = struct{}{}
		}
	}
	r.siteCount.Store(int64(len(r.sites)))
	r.subnets = make(map[string]*subnetState, len(subnets))
	for _, s := range subnets {
		if old, ok := r.subnets[s.Name]; ok {
			r.detach(old)
			r.dropIfEmpty(old.spec.Prefix)
		}
		r.attach(s)
	}
	table := new(bart.Table[entry])
	// AllSorted yields enclosing CIDRs before the CIDRs nested in them, so
	// every group sees its final inheritance.
	for prefix, g := range r.groups.AllSorted() {
		r.resolveGroup(g, nil)
		if g.winner != nil {
			table.Insert(prefix, r.newEntry(g))
		}
	}
	for _, st := range r.subnets {
		if !st.valid {
			st.status = invalidStatus(st.spec)
		}
		if st.status.Reason == ReasonEffective {
			r.effectiveCount[st.status.EffectiveSite]++
		}
	}
	r.lookup.Store(table)
	return r
}

// Lookup returns the most specific effective subnet containing addr and
// the site it maps to, or false when no effective subnet contains addr.
// An IPv4-mapped IPv6 address is looked up as the IPv4 address it carries;
// an IPv6 zone is ignored. It takes no lock and does not allocate.
func (r *Resolver) Lookup(addr netip.Addr) (Match, bool) {
	e, ok := r.lookup.Load().Lookup(addr.Unmap())
	if !ok {
		return Match{}, false
	}
	return *e.match, true
}

// LookupSite returns the site of the most specific effective subnet
// containing addr as an ID for SiteName, or false when no effective subnet
// contains addr: the same answer as Lookup's Match.Site. It walks the trie
// once and reads nothing else (the site is stored in the trie by value), so
// it is the fast path for callers that need only the site. It takes no lock
// and does not allocate.
func (r *Resolver) LookupSite(addr netip.Addr) (SiteID, bool) {
	e, ok := r.lookup.Load().Lookup(addr.Unmap())
	return e.site, ok
}

// SiteName returns the name of the site that id, from LookupSite, stands
// for; "" for an ID the resolver never returned.
func (r *Resolver) SiteName(id SiteID) string {
	names := *r.siteNames.Load()
	if id < 0 || int(id) >= len(names) {
		return ""
	}
	return names[id]
}

// SiteCount returns how many Sites exist as far as the resolver knows. It
// takes no lock: the serving rules ask it on every locate whether any Site
// exists at all.
func (r *Resolver) SiteCount() int {
	return int(r.siteCount.Load())
}

// Status returns the status of the named subnet, or false when the
// resolver does not hold it.
func (r *Resolver) Status(name string) (Status, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st, ok := r.subnets[name]
	if !ok {
		return Status{}, false
	}
	return st.status, true
}

// Statuses returns a fresh map of every subnet's status by name.
func (r *Resolver) Statuses() map[string]Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]Status, len(r.subnets))
	for name, st := range r.subnets {
		out[name] = st.status
	}
	return out
}

// SubnetCount returns how many subnets report Effective with site as their
// effective site (own or inherited): the Site's status.subnets. A subnet
// that agrees with an older winner for the same CIDR is counted too, so the
// number matches the Ready subnets a user sees for the site.
func (r *Resolver) SubnetCount(site string) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.effectiveCount[site]
}

// HasSite reports whether the named Site exists as far as the resolver
// knows: a replica can tell with it that its table has caught up with a Site.
func (r *Resolver) HasSite(name string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.sites[name]
	return ok
}

// SetSubnet adds the subnet or replaces the one with the same name, and
// returns the sorted names of the subnets whose status changed, including
// this one when it is new or its own status changed.
func (r *Resolver) SetSubnet(s Subnet) (changed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u := newUpdate()
	old, existed := r.subnets[s.Name]
	if existed {
		if old.spec == normalized(s) {
			return nil
		}
		u.remember(old)
		r.detach(old)
		if old.valid {
			u.touch(old.spec.Prefix)
		}
	} else {
		u.prior[s.Name] = priorStatus{}
	}
	st := r.attach(s)
	if st.valid {
		u.touch(st.spec.Prefix)
	} else {
		st.status = invalidStatus(st.spec)
	}
	return r.apply(u)
}

// DeleteSubnet removes the named subnet and returns the sorted names of the
// other subnets whose status changed (a winner's removal promotes the next
// candidate; nested site-less subnets may lose or change what they
// inherit). Deleting an unknown name changes nothing.
func (r *Resolver) DeleteSubnet(name string) (changed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.subnets[name]
	if !ok {
		return nil
	}
	u := newUpdate()
	u.remember(st)
	r.detach(st)
	if st.valid {
		u.touch(st.spec.Prefix)
	}
	return r.apply(u)
}

// SetSite records that the named Site exists and returns the sorted names
// of the subnets whose status changed: those naming it and the subnets
// nested inside them that inherit from them.
func (r *Resolver) SetSite(name string) (changed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sites[name]; ok || name == "" {
		return nil
	}
	r.sites[name] = struct{}{}
	r.siteCount.Store(int64(len(r.sites)))
	return r.apply(r.touchNaming(name))
}

// DeleteSite records that the named Site no longer exists and returns the
// sorted names of the subnets whose status changed.
func (r *Resolver) DeleteSite(name string) (changed []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.sites[name]; !ok {
		return nil
	}
	delete(r.sites, name)
	r.siteCount.Store(int64(len(r.sites)))
	return r.apply(r.touchNaming(name))
}

// touchNaming starts an update that re-resolves every CIDR with a subnet
// naming site.
func (r *Resolver) touchNaming(site string) *update {
	u := newUpdate()
	for _, st := range r.subnetsNaming[site] {
		u.touch(st.spec.Prefix)
	}
	return u
}

// normalized returns s as the resolver stores it.
func normalized(s Subnet) Subnet {
	if validPrefix(s.Prefix) {
		s.Prefix = s.Prefix.Masked()
	}
	return s
}

// validPrefix reports whether a lookup can ever reach an address in p.
func validPrefix(p netip.Prefix) bool {
	return p.IsValid() && !p.Masked().Addr().Is4In6()
}

// attach stores s and adds it to its CIDR's group and the site index,
// without resolving anything.
func (r *Resolver) attach(s Subnet) *subnetState {
	st := &subnetState{spec: normalized(s), valid: validPrefix(s.Prefix)}
	r.subnets[s.Name] = st
	if !st.valid {
		return st
	}
	g, ok := r.groups.Get(st.spec.Prefix)
	if !ok {
		// A new CIDR passes down what it inherits until it is resolved,
		// which is what the subnets nested in it see today.
		g = &group{prefix: st.spec.Prefix, passDown: r.inheritedAt(st.spec.Prefix)}
		r.groups.Insert(st.spec.Prefix, g)
	}
	g.members = append(g.members, st)
	if site := st.spec.Site; site != "" {
		if r.subnetsNaming[site] == nil {
			r.subnetsNaming[site] = map[string]*subnetState{}
		}
		r.subnetsNaming[site][st.spec.Name] = st
	}
	return st
}

// detach removes st from the resolver and its indexes, without resolving
// anything. An emptied group stays until apply, so its old passDown is
// known when its nested subnets are re-resolved.
func (r *Resolver) detach(st *subnetState) {
	delete(r.subnets, st.spec.Name)
	if !st.valid {
		return
	}
	if g, ok := r.groups.Get(st.spec.Prefix); ok {
		g.members = slices.DeleteFunc(g.members, func(m *subnetState) bool { return m == st })
	}
	if site := st.spec.Site; site != "" {
		delete(r.subnetsNaming[site], st.spec.Name)
		if len(r.subnetsNaming[site]) == 0 {
			delete(r.subnetsNaming, site)
		}
	}
}

// dropIfEmpty forgets the group at p if it has no members left.
func (r *Resolver) dropIfEmpty(p netip.Prefix) {
	if g, ok := r.groups.Get(p); ok && len(g.members) == 0 {
		r.groups.Delete(p)
	}
}

// inheritedAt returns what the nearest CIDR strictly enclosing p passes
// down to it.
func (r *Resolver) inheritedAt(p netip.Prefix) inheritance {
	if p.Bits() == 0 {
		return inheritance{}
	}
	parent := netip.PrefixFrom(p.Addr(), p.Bits()-1).Masked()
	if _, g, ok := r.groups.LookupPrefixLPM(parent); ok {
		return g.passDown
	}
	return inheritance{}
}

// update collects what one change touched.
type update struct {
	// touched holds the CIDRs whose candidates or their sites changed.
	touched map[netip.Prefix]struct{}
	// resolved holds every CIDR re-resolved, whose lookup entry may differ.
	resolved map[netip.Prefix]struct{}
	// prior holds the status each subnet had before the change, for the
	// subnets whose status was recomputed.
	prior map[string]priorStatus
}

type priorStatus struct {
	status  Status
	existed bool
}

func newUpdate() *update {
	return &update{
		touched:  map[netip.Prefix]struct{}{},
		resolved: map[netip.Prefix]struct{}{},
		prior:    map[string]priorStatus{},
	}
}

func (u *update) touch(p netip.Prefix) { u.touched[p] = struct{}{} }

// remember records st's status before the change, once.
func (u *update) remember(st *subnetState) {
	if _, ok := u.prior[st.spec.Name]; !ok {
		u.prior[st.spec.Name] = priorStatus{status: st.status, existed: true}
	}
}

// apply re-resolves the touched CIDRs and what is nested in them, drops
// emptied groups, updates the site counts, publishes the lookup table and
// returns the sorted names of subnets whose status changed.
func (r *Resolver) apply(u *update) []string {
	// Enclosing CIDRs first, so a nested one is never resolved against a
	// stale parent more than necessary.
	touched := slices.SortedFunc(maps.Keys(u.touched), comparePrefixes)
	for _, p := range touched {
		r.refresh(p, u)
	}
	for _, p := range touched {
		r.dropIfEmpty(p)
	}

	var changed []string
	for name, prior := range u.prior {
		if prior.existed && prior.status.Reason == ReasonEffective {
			if r.effectiveCount[prior.status.EffectiveSite]--; r.effectiveCount[prior.status.EffectiveSite] == 0 {
				delete(r.effectiveCount, prior.status.EffectiveSite)
			}
		}
		st, ok := r.subnets[name]
		if !ok {
			continue
		}
		if st.status.Reason == ReasonEffective {
			r.effectiveCount[st.status.EffectiveSite]++
		}
		if !prior.existed || prior.status != st.status {
			changed = append(changed, name)
		}
	}
	slices.Sort(changed)
	r.publish(u.resolved)
	return changed
}

// refresh re-resolves the group at p and, when that changes what it passes
// down, the groups nested in it, skipping any subtree below a group whose
// passDown came out unchanged.
func (r *Resolver) refresh(p netip.Prefix, u *update) {
	g, ok := r.groups.Get(p)
	if !ok {
		return
	}
	before := g.passDown
	r.resolveGroup(g, u)
	if g.passDown == before {
		return
	}
	// settled is a nested CIDR whose passDown did not change, so the CIDRs
	// inside it, which follow it in this order, need no work.
	var settled netip.Prefix
	for q, nested := range r.groups.Subnets(p) {
		if q == p {
			continue
		}
		if settled.IsValid() && settled.Contains(q.Addr()) {
			continue
		}
		before := nested.passDown
		r.resolveGroup(nested, u)
		if nested.passDown == before {
			settled = q
		} else {
			settled = netip.Prefix{}
		}
	}
}

// resolveGroup picks g's winner and sets every member's status and g's
// passDown from the current sites and what g inherits. With u nil (Build)
// it records nothing.
func (r *Resolver) resolveGroup(g *group, u *update) {
	inherited := r.inheritedAt(g.prefix)
	var winner *subnetState
	for _, m := range g.members {
		if r.candidate(m, inherited) && (winner == nil || outranks(m, winner)) {
			winner = m
		}
	}
	g.winner = winner
	g.passDown = inherited
	if winner != nil {
		g.passDown = inheritance{site: effectiveSite(winner, inherited), from: winner.spec.Name}
		if winner.spec.Site == "" {
			g.passDown.from = inherited.from
		}
	}
	for _, m := range g.members {
		s := r.statusIn(m, g, inherited)
		if u != nil && s != m.status {
			u.remember(m)
		}
		m.status = s
	}
	if u != nil {
		u.resolved[g.prefix] = struct{}{}
	}
}

// candidate reports whether m could be effective on its own: its site
// exists, or it has none and there is a site to inherit.
func (r *Resolver) candidate(m *subnetState, inherited inheritance) bool {
	if m.spec.Site == "" {
		return inherited.site != ""
	}
	_, ok := r.sites[m.spec.Site]
	return ok
}

// outranks reports whether a wins the CIDR over b: ActiveDirectory first,
// then the older, then the name that sorts first.
func outranks(a, b *subnetState) bool {
	if aAD, bAD := a.spec.Source == SourceActiveDirectory, b.spec.Source == SourceActiveDirectory; aAD != bAD {
		return aAD
	}
	if !a.spec.Created.Equal(b.spec.Created) {
		return a.spec.Created.Before(b.spec.Created)
	}
	return a.spec.Name < b.spec.Name
}

// effectiveSite is the site m maps to when effective.
func effectiveSite(m *subnetState, inherited inheritance) string {
	if m.spec.Site != "" {
		return m.spec.Site
	}
	return inherited.site
}

// publish brings the lookup table in line with the winners of the
// resolved CIDRs and stores it for Lookup.
func (r *Resolver) publish(resolved map[netip.Prefix]struct{}) {
	current := r.lookup.Load()
	type edit struct {
		prefix netip.Prefix
		entry  entry // entry.match nil to delete
	}
	var edits []edit
	for p := range resolved {
		have, had := current.Get(p)
		g, ok := r.groups.Get(p)
		if !ok || g.winner == nil {
			if had {
				edits = append(edits, edit{prefix: p})
			}
			continue
		}
		if !had || have.match.Subnet != g.winner.spec.Name || have.match.Site != g.winner.status.EffectiveSite {
			edits = append(edits, edit{prefix: p, entry: r.newEntry(g)})
		}
	}
	if len(edits) == 0 {
		return
	}
	next := current
	if len(edits) <= persistLimit {
		for _, e := range edits {
			if e.entry.match == nil {
				next = next.DeletePersist(e.prefix)
			} else {
				next = next.InsertPersist(e.prefix, e.entry)
			}
		}
	} else {
		next = current.Clone()
		for _, e := range edits {
			if e.entry.match == nil {
				next.Delete(e.prefix)
			} else {
				next.Insert(e.prefix, e.entry)
			}
		}
	}
	r.lookup.Store(next)
}

// newEntry returns the lookup entry for g's winner. A site name seen for
// the first time gets the next ID, published before any table that carries
// it.
func (r *Resolver) newEntry(g *group) entry {
	site := g.winner.status.EffectiveSite
	id, ok := r.siteIDs[site]
	if !ok {
		names := *r.siteNames.Load()
		id = SiteID(len(names))
		r.siteIDs[site] = id
		// Appending may write past the published length in place: readers
		// of the old slice never look there.
		names = append(names, site)
		r.siteNames.Store(&names)
	}
	return entry{site: id, match: &Match{Subnet: g.winner.spec.Name, Site: site, Prefix: g.prefix}}
}

// comparePrefixes orders prefixes so that an enclosing prefix comes before
// the prefixes nested in it (IPv4 before IPv6).
func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
