package v1alpha1

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A site keeps its own server while one of several task pods is replaced:
// its agents are not sent to the unassigned servers for that.
func TestServesTasks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status metav1.ConditionStatus
		reason string
		ready  int32
		want   bool
	}{
		{"every pod available", metav1.ConditionTrue, ReasonAvailable, 2, true},
		{"one of two pods available", metav1.ConditionFalse, ReasonProgressing, 1, true},
		{"no pod available yet", metav1.ConditionFalse, ReasonProgressing, 0, false},
		{"disabled", metav1.ConditionTrue, ReasonDisabled, 0, false},
		{"prerequisites missing", metav1.ConditionFalse, ReasonPrerequisitesNotMet, 0, false},
	} {
		ss := &SiteServer{}
		ss.Status.Task.ReadyReplicas = tc.ready
		ss.Status.Conditions = []metav1.Condition{{Type: ConditionTaskServiceReady, Status: tc.status, Reason: tc.reason}}
		if got := ss.ServesTasks(); got != tc.want {
			t.Errorf("%s: ServesTasks() = %v, want %v", tc.name, got, tc.want)
		}
		// The package service, by the same reading of its own condition.
		ps := &SiteServer{}
		ps.Status.Package.ReadyReplicas = tc.ready
		ps.Status.Conditions = []metav1.Condition{{Type: ConditionPackageServiceReady, Status: tc.status, Reason: tc.reason},
			{Type: ConditionTaskServiceReady, Status: metav1.ConditionTrue, Reason: ReasonAvailable}}
		if got := ps.ServesPackages(); got != tc.want {
			t.Errorf("%s: ServesPackages() = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (&SiteServer{}).ServesTasks() || (&SiteServer{}).ServesPackages() {
		t.Error("a SiteServer with no status serves tasks or packages")
	}
}
