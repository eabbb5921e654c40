package main

import (
	"net/netip"
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a, err := generate(100, 1000, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := generate(100, 1000, 7)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("two plans from the same seed differ")
	}
	c, err := generate(100, 1000, 8)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a, c) {
		t.Error("plans from different seeds are equal")
	}
}

func TestGenerateShape(t *testing.T) {
	const sites, subnets = 1000, 10000
	p, err := generate(sites, subnets, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Sites) != sites || p.subnetCount() != subnets {
		t.Fatalf("got %d Sites and %d Subnets, want %d and %d", len(p.Sites), p.subnetCount(), sites, subnets)
	}

	names := map[string]bool{}
	bySource := map[siteopsv1.SubnetSource]map[netip.Prefix]bool{}
	var siteBlocks []netip.Prefix
	reasons := map[string]int{}
	inherited, ipv6, deepest := 0, 0, 0
	for i, site := range p.SubnetsBySite {
		created := map[netip.Prefix]int{}
		for _, s := range site {
			if names[s.Name] {
				t.Errorf("name %s is used twice", s.Name)
			}
			names[s.Name] = true
			if errs := validation.IsDNS1123Subdomain(s.Name); len(errs) > 0 {
				t.Errorf("name %s is not a valid object name: %v", s.Name, errs)
			}
			if s.CIDR.Masked() != s.CIDR {
				t.Errorf("%s: CIDR %s is not canonical", s.Name, s.CIDR)
			}
			if bySource[s.Source] == nil {
				bySource[s.Source] = map[netip.Prefix]bool{}
			}
			if bySource[s.Source][s.CIDR] {
				t.Errorf("two %s subnets have CIDR %s", s.Source, s.CIDR)
			}
			bySource[s.Source][s.CIDR] = true

			depth := 1
			if s.parent.IsValid() {
				parentDepth, ok := created[s.parent]
				if !ok {
					t.Errorf("%s comes before its parent %s", s.Name, s.parent)
				}
				if !s.parent.Contains(s.CIDR.Addr()) || s.parent.Bits() >= s.CIDR.Bits() {
					t.Errorf("%s is not nested in its parent %s", s.CIDR, s.parent)
				}
				depth = parentDepth + 1
			} else {
				siteBlocks = append(siteBlocks, s.CIDR)
				if s.Site != siteName(i) {
					t.Errorf("block %s of %s names site %q", s.CIDR, siteName(i), s.Site)
				}
			}
			created[s.CIDR] = depth
			deepest = max(deepest, depth)

			reasons[s.Want.Reason]++
			if s.Want.InheritedFrom != "" {
				inherited++
			}
			if s.CIDR.Addr().Is6() {
				ipv6++
			}
		}
	}
	for i, a := range siteBlocks {
		for _, b := range siteBlocks[i+1:] {
			if a.Overlaps(b) {
				t.Errorf("site blocks %s and %s overlap", a, b)
			}
		}
	}

	// The shares are random; these bounds hold for any reasonable seed.
	if deepest != maxDepth {
		t.Errorf("deepest nesting is %d levels, want %d", deepest, maxDepth)
	}
	if n := reasons[siteopsv1.ReasonOverriddenByImport]; n < subnets/200 || n > subnets/50 {
		t.Errorf("%d OverriddenByImport subnets, want about 1%%", n)
	}
	if reasons[siteopsv1.ReasonSiteNotFound] == 0 || inherited < subnets/4 || ipv6 == 0 {
		t.Errorf("topology lacks a case: %v, %d inherited, %d IPv6", reasons, inherited, ipv6)
	}
	t.Log(p.summary())
	var counted int32
	for _, n := range p.SiteSubnets {
		counted += n
	}
	if int(counted) != reasons[siteopsv1.ReasonEffective] {
		t.Errorf("Sites count %d subnets, %d are Effective", counted, reasons[siteopsv1.ReasonEffective])
	}
}

func TestResolve(t *testing.T) {
	block := netip.MustParsePrefix("10.0.0.0/18")
	dup := netip.MustParsePrefix("10.0.8.0/21")
	retired := netip.MustParsePrefix("10.0.16.0/21")
	subnets := []plannedSubnet{
		{Name: "block", CIDR: block, Site: "a", Source: siteopsv1.SourceManual},
		{Name: "ad-dup", CIDR: dup, Site: "a", Source: siteopsv1.SourceActiveDirectory, parent: block},
		{Name: "dup", CIDR: dup, Site: "b", Source: siteopsv1.SourceManual, parent: block},
		{Name: "under-dup", CIDR: netip.MustParsePrefix("10.0.9.0/24"), parent: dup},
		{Name: "retired", CIDR: retired, Site: "gone", Source: siteopsv1.SourceManual, parent: block},
		{Name: "under-retired", CIDR: netip.MustParsePrefix("10.0.17.0/24"), parent: retired},
		{Name: "orphan", CIDR: netip.MustParsePrefix("fd00::/48")},
	}
	if err := resolve(subnets, map[string]bool{"a": true, "b": true}); err != nil {
		t.Fatal(err)
	}
	want := map[string]wantStatus{
		"block":         {EffectiveSite: "a", Reason: siteopsv1.ReasonEffective},
		"ad-dup":        {EffectiveSite: "a", Reason: siteopsv1.ReasonEffective},
		"dup":           {Reason: siteopsv1.ReasonOverriddenByImport},
		"under-dup":     {EffectiveSite: "a", InheritedFrom: "ad-dup", Reason: siteopsv1.ReasonEffective},
		"retired":       {Reason: siteopsv1.ReasonSiteNotFound},
		"under-retired": {EffectiveSite: "a", InheritedFrom: "block", Reason: siteopsv1.ReasonEffective},
		"orphan":        {Reason: siteopsv1.ReasonNoSite},
	}
	for _, s := range subnets {
		if s.Want != want[s.Name] {
			t.Errorf("%s: got %+v, want %+v", s.Name, s.Want, want[s.Name])
		}
	}
}

// TestPlanAgreesWithResolver checks the harness's expectations against the
// resolver the controllers use, so that a disagreement shows up here in
// milliseconds rather than at the end of a load run.
func TestPlanAgreesWithResolver(t *testing.T) {
	p, err := generate(100, 1000, 1)
	if err != nil {
		t.Fatal(err)
	}
	var subnets []topology.Subnet
	for _, site := range p.SubnetsBySite {
		for _, s := range site {
			subnets = append(subnets, topology.Subnet{
				Name: s.Name, Prefix: s.CIDR, Site: s.Site, Source: topology.Source(s.Source),
			})
		}
	}
	got := topology.Build(subnets, p.Sites).Statuses()
	for name, want := range p.wantSubnets() {
		status := got[name]
		g := wantStatus{EffectiveSite: status.EffectiveSite, InheritedFrom: status.InheritedFrom, Reason: string(status.Reason)}
		if g != want {
			t.Errorf("%s: the resolver says %+v, the plan %+v", name, g, want)
		}
	}
}
