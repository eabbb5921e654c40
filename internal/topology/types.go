// Package topology computes which site an address belongs to: the
// address → Subnet → Site table, and the status every Subnet reports.
//
// It is pure: no Kubernetes client and no I/O. Every manager replica feeds
// a [Resolver] every Subnet and Site its informers see (leader or not); the
// leader's Subnet controller writes back the [Status] it computes for the
// subnets whose status a change touched; the agent locator asks it for
// [Resolver.Lookup] on every replica. [Resolver.LookupSite] is the fast path
// for a caller that needs only the site: one trie walk that yields a small
// [SiteID] into a compact table of site names ([Resolver.SiteName]).
//
// The rules (ARCHITECTURE.md §2, "Subnet"):
//
//  1. Longest prefix wins: an address belongs to the most specific
//     effective subnet containing it. Subnets that are not effective are
//     not in the lookup table.
//  2. For the same CIDR, an ActiveDirectory subnet overrides a Manual one;
//     every Manual subnet at that CIDR reports OverriddenByImport.
//  3. For the same CIDR and source, the oldest subnet (creation time, then
//     name) wins. The others report Duplicate when they would map the CIDR
//     to a different site, and Effective (with a message naming the winner)
//     when they agree with it — see [ReasonEffective].
//  4. A subnet naming a Site that does not exist is not effective
//     (SiteNotFound) and does not compete for its CIDR; it becomes effective
//     by itself once the Site exists.
//  5. A subnet without a site inherits the effective site of the nearest
//     enclosing effective subnet; with nothing to inherit it reports NoSite,
//     is not effective and, like rule 4, does not compete for its CIDR.
//     An address in no effective subnet has no site.
//
// Rules 4 and 5 follow one principle: only a subnet that could map its CIDR
// on its own competes for it, so a broken subnet never hides a working one.
package topology

import (
	"net/netip"
	"time"
)

// Source says who manages a Subnet: a person or the directory import.
type Source string

const (
	// SourceManual is a Subnet written by a user (the API default). Any
	// value other than SourceActiveDirectory is treated as Manual.
	SourceManual Source = "Manual"
	// SourceActiveDirectory is a Subnet created by the Active Directory
	// import; it overrides a Manual Subnet with the same CIDR.
	SourceActiveDirectory Source = "ActiveDirectory"
)

// Subnet is what the resolver needs to know about one Subnet object.
type Subnet struct {
	// Name is the object name; it identifies the subnet.
	Name string
	// Prefix is spec.cidr. Admission only lets canonical prefixes in; a
	// prefix with host bits set is masked here rather than rejected. An
	// invalid prefix, or an IPv4-mapped IPv6 one (::ffff:a.b.c.d/n, which
	// no lookup could reach because lookups unmap addresses), makes the
	// subnet report [ReasonInvalidCIDR].
	Prefix netip.Prefix
	// Site is spec.site, "" when the subnet inherits its site.
	Site string
	// Source is spec.source.
	Source Source
	// Created is the object's creationTimestamp; older subnets win ties.
	Created time.Time
}

// Reason says why a Subnet is or is not effective. The values are the
// reasons of the Subnet's Ready condition.
type Reason string

const (
	// ReasonEffective means the subnet maps its CIDR to EffectiveSite
	// (Ready=True). A subnet with the same CIDR, source and effective site
	// as an older winner also reports Effective: it agrees with the winner,
	// so nothing is wrong for the user to fix, and the message names the
	// winner, which is the one lookups return.
	ReasonEffective Reason = "Effective"
	// ReasonOverriddenByImport means an ActiveDirectory subnet with the
	// same CIDR is effective instead of this Manual one.
	ReasonOverriddenByImport Reason = "OverriddenByImport"
	// ReasonDuplicate means an older subnet with the same CIDR and source
	// maps the CIDR to a different site and wins.
	ReasonDuplicate Reason = "Duplicate"
	// ReasonSiteNotFound means spec.site names a Site that does not exist.
	ReasonSiteNotFound Reason = "SiteNotFound"
	// ReasonNoSite means the subnet has no site and no enclosing effective
	// subnet supplies one.
	ReasonNoSite Reason = "NoSite"
	// ReasonInvalidCIDR means the prefix is not a usable IPv4 or IPv6
	// prefix. Admission rejects such objects, so this only shows if that
	// validation was bypassed; it is not one of the API's five reasons.
	ReasonInvalidCIDR Reason = "InvalidCIDR"
)

// Status is what a Subnet reports: status.effectiveSite,
// status.inheritedFrom and the reason and message of its Ready condition.
type Status struct {
	// EffectiveSite is the site the subnet's addresses map to; "" unless
	// Reason is ReasonEffective.
	EffectiveSite string
	// InheritedFrom names the enclosing subnet whose spec.site supplied
	// EffectiveSite; "" when the subnet has its own site.
	InheritedFrom string
	// Reason is the Ready condition's reason.
	Reason Reason
	// Message is the Ready condition's message, in English for the user.
	Message string
}

// Effective reports whether the subnet maps its addresses to a site
// (the Ready condition is True).
func (s Status) Effective() bool { return s.Reason == ReasonEffective }

// Match is the answer to an address lookup: the effective subnet that
// contains the address most specifically, and the site it maps to.
type Match struct {
	// Subnet is the name of the winning Subnet.
	Subnet string
	// Site is that subnet's effective site (its own or inherited).
	Site string
	// Prefix is that subnet's CIDR.
	Prefix netip.Prefix
}
