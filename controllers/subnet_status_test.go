package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)

// Every verdict gives Ready and exactly the kstatus condition documented for
// its reason (api/v1alpha1/conditions.go), and observedGeneration.
func TestDesiredSubnetStatusKstatus(t *testing.T) {
	tests := []struct {
		reason      topology.Reason
		wantReady   metav1.ConditionStatus
		wantStalled bool
	}{
		{topology.ReasonEffective, metav1.ConditionTrue, false},
		{topology.ReasonOverriddenByImport, metav1.ConditionFalse, false},
		{topology.ReasonNoSite, metav1.ConditionFalse, false},
		{topology.ReasonDuplicate, metav1.ConditionFalse, true},
		{topology.ReasonSiteNotFound, metav1.ConditionFalse, true},
		{topology.ReasonInvalidCIDR, metav1.ConditionFalse, true},
	}
	for _, tt := range tests {
		t.Run(string(tt.reason), func(t *testing.T) {
			subnet := &siteopsv1.Subnet{}
			subnet.Name, subnet.Generation = "sn", 4
			// Start from the opposite kstatus state, so that the setter must
			// remove what no longer holds.
			if tt.wantStalled {
				setReconciling(&subnet.Status.Conditions, 3, "Old", "old")
			} else {
				setStalled(&subnet.Status.Conditions, 3, "Old", "old")
			}
			verdict := topology.Status{Reason: tt.reason, Message: "why " + string(tt.reason)}
			status := desiredSubnetStatus(subnet, verdict)

			if status.ObservedGeneration != 4 {
				t.Errorf("observedGeneration = %d, want 4", status.ObservedGeneration)
			}
			ready := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReady)
			if ready == nil || ready.Status != tt.wantReady || ready.Reason != string(tt.reason) || ready.ObservedGeneration != 4 {
				t.Errorf("Ready = %+v, want %s/%s at generation 4", ready, tt.wantReady, tt.reason)
			}
			if c := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReconciling); c != nil {
				t.Errorf("a Subnet reports Reconciling: %+v", c)
			}
			stalled := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionStalled)
			switch {
			case tt.wantStalled && (stalled == nil || stalled.Status != metav1.ConditionTrue ||
				stalled.Reason != string(tt.reason) || stalled.Message != verdict.Message || stalled.ObservedGeneration != 4):
				t.Errorf("Stalled = %+v, want True/%s with the verdict's message", stalled, tt.reason)
			case !tt.wantStalled && stalled != nil:
				t.Errorf("Stalled = %+v, want none (converged)", stalled)
			}

			subnet.Status = *status
			if again := desiredSubnetStatus(subnet, verdict); !equality.Semantic.DeepEqual(again, &subnet.Status) {
				t.Errorf("an unchanged verdict changed the status:\nstored  %+v\ndesired %+v", subnet.Status, *again)
			}
		})
	}
}
