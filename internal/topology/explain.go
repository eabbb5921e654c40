package topology

import (
	"cmp"
	"net/netip"
	"slices"
)

// Role says what part a subnet that contains an address played in
// resolving it: the winner, a subnet the winner overrode, or a subnet that
// did not compete. It is what `kubectl siteops locate` explains.
type Role string

const (
	// RoleWinner is the subnet that Lookup returns for the address.
	RoleWinner Role = "Winner"
	// RoleLessSpecific is a subnet with a shorter prefix than the winner's:
	// rule 1 (longest prefix wins) overrode it for this address.
	RoleLessSpecific Role = "LessSpecific"
	// RoleSameCIDR is a subnet with the winner's CIDR that lost it under
	// rule 2 (Status.Reason OverriddenByImport) or rule 3 (Duplicate, or
	// Effective when it agrees with the winner on the site).
	RoleSameCIDR Role = "SameCIDR"
	// RoleNotEffective is a subnet that could not map its CIDR on its own
	// (Status.Reason SiteNotFound or NoSite, rules 4 and 5), so it did not
	// compete; every subnet containing an address that has no site has
	// this role.
	RoleNotEffective Role = "NotEffective"
)

// Candidate is one subnet that contains the explained address.
type Candidate struct {
	// Subnet is the subnet as the resolver holds it (Prefix masked).
	Subnet Subnet
	// Status is its current status: its reason and message say why it
	// is, or is not, effective.
	Status Status
	// Role is the part it played for this address.
	Role Role
}

// Overridden reports whether c would have mapped the address but the
// winner took it: a less specific subnet, or a loser of the same CIDR.
func (c Candidate) Overridden() bool {
	return c.Role == RoleLessSpecific || c.Role == RoleSameCIDR
}

// Explanation says why an address resolves as it does.
type Explanation struct {
	// Address is the address explained, unmapped and without zone, as
	// Lookup reads it.
	Address netip.Addr
	// Match is what Lookup returns for Address; valid when Found.
	Match Match
	// Found says whether an effective subnet contains Address.
	Found bool
	// Candidates are every valid subnet containing Address: the most
	// specific CIDR first; within a CIDR the winner first, then by name.
	Candidates []Candidate
}

// Overridden returns the candidates that the winner overrode, in the
// order of Candidates.
func (e Explanation) Overridden() []Candidate {
	var out []Candidate
	for _, c := range e.Candidates {
		if c.Overridden() {
			out = append(out, c)
		}
	}
	return out
}

// Explain returns how addr resolves: the same Match as Lookup, and every
// subnet containing addr with the role it played. It reads one consistent
// state of the resolver (it takes the read lock), so it is meant for
// tools and diagnostics, not for the per-request path.
func (r *Resolver) Explain(addr netip.Addr) Explanation {
	addr = addr.Unmap().WithZone("")
	e := Explanation{Address: addr}
	if !addr.IsValid() {
		return e
	}
	host := netip.PrefixFrom(addr, addr.BitLen())
	r.mu.RLock()
	defer r.mu.RUnlock()
	// Supernets yields the most specific CIDR first: the first one with a
	// winner is the longest-prefix match, exactly the lookup table's entry.
	var winner *group
	for _, g := range r.groups.Supernets(host) {
		if winner == nil && g.winner != nil {
			winner = g
			e.Found = true
			e.Match = Match{Subnet: g.winner.spec.Name, Site: g.winner.status.EffectiveSite, Prefix: g.prefix}
		}
		members := slices.Clone(g.members)
		slices.SortFunc(members, func(a, b *subnetState) int {
			if (a == g.winner) != (b == g.winner) {
				if a == g.winner {
					return -1
				}
				return 1
			}
			return cmp.Compare(a.spec.Name, b.spec.Name)
		})
		for _, m := range members {
			e.Candidates = append(e.Candidates, Candidate{Subnet: m.spec, Status: m.status, Role: roleOf(m, g, winner)})
		}
	}
	return e
}

// roleOf is the role of m, a member of g, for an address whose
// longest-prefix match is winner (nil when there is none). Only a subnet
// that competed can have been overridden: one that could not be effective
// on its own reports its own reason, unless an imported subnet took its
// CIDR (OverriddenByImport is reported first, see statusIn).
func roleOf(m *subnetState, g, winner *group) Role {
	switch {
	case winner == nil:
		return RoleNotEffective
	case m == winner.winner:
		return RoleWinner
	case m.status.Reason == ReasonSiteNotFound || m.status.Reason == ReasonNoSite:
		return RoleNotEffective
	case g == winner:
		return RoleSameCIDR
	case g.prefix.Bits() < winner.prefix.Bits():
		return RoleLessSpecific
	default:
		// More specific than the match yet without a winner of its own:
		// nothing there could compete.
		return RoleNotEffective
	}
}
