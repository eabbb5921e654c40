package controllers

import (
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"testing"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)

// The Subnet controller writes the resolver's reasons into conditions as
// they are, so they must be the API's documented reasons.
func TestResolverReasonsAreAPIReasons(t *testing.T) {
	for resolverReason, apiReason := range map[topology.Reason]string{
		topology.ReasonEffective:          siteopsv1.ReasonEffective,
		topology.ReasonOverriddenByImport: siteopsv1.ReasonOverriddenByImport,
		topology.ReasonDuplicate:          siteopsv1.ReasonDuplicate,
		topology.ReasonSiteNotFound:       siteopsv1.ReasonSiteNotFound,
		topology.ReasonNoSite:             siteopsv1.ReasonNoSite,
		topology.ReasonInvalidCIDR:        siteopsv1.ReasonInvalidCIDR,
	} {
		if string(resolverReason) != apiReason {
			t.Errorf("resolver reason %q is written as %q but the API documents %q", resolverReason, resolverReason, apiReason)
		}
	}
}

// A verdict that did not change must give back the stored status exactly,
// or every resync would write.
func TestDesiredSubnetStatusIsStableAndKeepsTransitionTime(t *testing.T) {
	subnet := &siteopsv1.Subnet{}
	subnet.Name, subnet.Generation = "lab", 3
	verdict := topology.Status{EffectiveSite: "lyon", InheritedFrom: "lyon-16",
		Reason: topology.ReasonEffective, Message: "inherited"}

	first := desiredSubnetStatus(subnet, verdict)
	subnet.Status = *first
	again := desiredSubnetStatus(subnet, verdict)
	if !equality.Semantic.DeepEqual(again, &subnet.Status) {
		t.Fatalf("an unchanged verdict changed the status:\nstored %+v\ndesired %+v", subnet.Status, *again)
	}

	moved := verdict
	moved.InheritedFrom, moved.Message = "lyon-8", "inherited from lyon-8"
	changed := desiredSubnetStatus(subnet, moved)
	if changed.InheritedFrom != "lyon-8" || changed.Conditions[0].Message != "inherited from lyon-8" {
		t.Fatalf("the new verdict was not written: %+v", changed)
	}
	if !changed.Conditions[0].LastTransitionTime.Equal(&first.Conditions[0].LastTransitionTime) {
		t.Errorf("Ready stayed True but its lastTransitionTime moved")
	}

	lost := topology.Status{Reason: topology.ReasonNoSite, Message: "no site"}
	notReady := desiredSubnetStatus(subnet, lost)
	if notReady.EffectiveSite != "" || notReady.Conditions[0].Status != metav1.ConditionFalse ||
		notReady.Conditions[0].Reason != siteopsv1.ReasonNoSite || notReady.ObservedGeneration != 3 {
		t.Errorf("a subnet that lost its site reports %+v", notReady)
	}
}
