package topology

import "fmt"

// statusIn computes the status of m, a member of g, once g's winner is
// chosen. A Manual subnet beaten by an ActiveDirectory one reports that
// first, whatever else is wrong with it: the import now owns the CIDR.
// Otherwise a subnet that could not be effective on its own reports its own
// problem, since it did not compete.
func (r *Resolver) statusIn(m *subnetState, g *group, inherited inheritance) Status {
	w := g.winner
	switch {
	case m == w:
		return effectiveStatus(m, g, inherited)
	case w != nil && w.spec.Source == SourceActiveDirectory && m.spec.Source != SourceActiveDirectory:
		return Status{
			Reason: ReasonOverriddenByImport,
			Message: fmt.Sprintf("overridden by ActiveDirectory subnet %q for the same CIDR %s",
				w.spec.Name, g.prefix),
		}
	case !r.candidate(m, inherited):
		if m.spec.Site != "" {
			return Status{
				Reason:  ReasonSiteNotFound,
				Message: fmt.Sprintf("site %q does not exist", m.spec.Site),
			}
		}
		return Status{
			Reason:  ReasonNoSite,
			Message: "no site set and no enclosing subnet has one",
		}
	}
	site, winnerSite := effectiveSite(m, inherited), effectiveSite(w, inherited)
	if site != winnerSite {
		return Status{
			Reason: ReasonDuplicate,
			Message: fmt.Sprintf("duplicate of subnet %q (%s) for CIDR %s with site %q",
				w.spec.Name, seniority(w, m), g.prefix, winnerSite),
		}
	}
	// m agrees with the winner: Effective, but lookups name the winner.
	s := Status{
		EffectiveSite: site,
		Reason:        ReasonEffective,
		Message: fmt.Sprintf("same CIDR %s and site %q as subnet %q (%s), which lookups return",
			g.prefix, site, w.spec.Name, seniority(w, m)),
	}
	if m.spec.Site == "" {
		s.InheritedFrom = inherited.from
	}
	return s
}

// effectiveStatus is the status of g's winner m.
func effectiveStatus(m *subnetState, g *group, inherited inheritance) Status {
	if m.spec.Site != "" {
		return Status{
			EffectiveSite: m.spec.Site,
			Reason:        ReasonEffective,
			Message:       fmt.Sprintf("addresses in %s belong to site %q", g.prefix, m.spec.Site),
		}
	}
	return Status{
		EffectiveSite: inherited.site,
		InheritedFrom: inherited.from,
		Reason:        ReasonEffective,
		Message:       fmt.Sprintf("inherited site %q from enclosing subnet %q", inherited.site, inherited.from),
	}
}

// seniority says why winner w ranks above m of the same source.
func seniority(w, m *subnetState) string {
	if w.spec.Created.Equal(m.spec.Created) {
		return "same creation time, name sorts first"
	}
	return "older"
}

// invalidStatus is the status of a subnet whose prefix cannot be used.
func invalidStatus(s Subnet) Status {
	msg := "the CIDR is not a valid IPv4 or IPv6 prefix"
	if s.Prefix.IsValid() {
		// Only an IPv4-mapped IPv6 prefix is valid yet unusable.
		msg = fmt.Sprintf("CIDR %s is an IPv4-mapped IPv6 prefix; write it as an IPv4 prefix", s.Prefix)
		if v4, err := s.Prefix.Addr().Unmap().Prefix(s.Prefix.Bits() - 96); err == nil {
			msg = fmt.Sprintf("CIDR %s is an IPv4-mapped IPv6 prefix; write it as %s", s.Prefix, v4)
		}
	}
	return Status{Reason: ReasonInvalidCIDR, Message: msg}
}
