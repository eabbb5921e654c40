package controllers

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// A read failure changes only Ready and the kstatus conditions: the rest of
// the status stays as last reported, observedGeneration included, and
// kstatus reads the SiteServer as in progress.
func TestSiteServerReadFailedStatus(t *testing.T) {
	cond := func(condType string, status metav1.ConditionStatus, reason string) metav1.Condition {
		return metav1.Condition{Type: condType, Status: status, Reason: reason, Message: reason + " message", ObservedGeneration: 7}
	}
	services := siteopsv1.SiteServerStatus{
		ObservedGeneration: 7,
		Task: siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1, Endpoint: "https://x-task.ns.svc:8080",
			Advertised: []string{"https://10.0.0.5:8080"}},
		Package: siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1, Endpoint: "https://x-package.ns.svc:8080"},
	}
	readErr := errors.New(`listing Nodes: the server is currently unable to handle the request`)

	for _, tc := range []struct {
		name       string
		generation int64
		conditions []metav1.Condition
	}{
		{"ready, the spec unchanged", 7, []metav1.Condition{
			cond(siteopsv1.ConditionPrerequisitesMet, metav1.ConditionTrue, siteopsv1.ReasonPrerequisitesMet),
			cond(siteopsv1.ConditionTaskServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable),
			cond(siteopsv1.ConditionPackageServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable),
			cond(siteopsv1.ConditionReady, metav1.ConditionTrue, siteopsv1.ReasonServicesReady),
		}},
		{"stalled, then the spec changed", 8, []metav1.Condition{
			cond(siteopsv1.ConditionPrerequisitesMet, metav1.ConditionFalse, siteopsv1.ReasonNoMatchingNode),
			cond(siteopsv1.ConditionTaskServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable),
			cond(siteopsv1.ConditionPackageServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable),
			cond(siteopsv1.ConditionReady, metav1.ConditionFalse, siteopsv1.ReasonDegraded),
			cond(siteopsv1.ConditionStalled, metav1.ConditionTrue, siteopsv1.ReasonNoMatchingNode),
		}},
		{"never reported", 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "x", Generation: tc.generation}}
			if tc.conditions != nil {
				ss.Status = *services.DeepCopy()
				ss.Status.Conditions = tc.conditions
			}
			before := ss.DeepCopy()

			got := siteServerReadFailedStatus(ss, readErr)

			if !equality.Semantic.DeepEqual(ss, before) {
				t.Errorf("the SiteServer passed in changed")
			}
			ready := meta.FindStatusCondition(got.Conditions, siteopsv1.ConditionReady)
			if ready == nil || ready.Status != metav1.ConditionFalse || ready.Reason != siteopsv1.ReasonReadFailed ||
				ready.Message != readErr.Error() || ready.ObservedGeneration != tc.generation {
				t.Errorf("Ready: got %+v, want False/%s with the error, for generation %d", ready, siteopsv1.ReasonReadFailed, tc.generation)
			}
			reconciling := meta.FindStatusCondition(got.Conditions, siteopsv1.ConditionReconciling)
			if reconciling == nil || reconciling.Status != metav1.ConditionTrue || reconciling.Reason != siteopsv1.ReasonReadFailed ||
				!strings.Contains(reconciling.Message, readErr.Error()) {
				t.Errorf("Reconciling: got %+v, want True/%s with the error", reconciling, siteopsv1.ReasonReadFailed)
			}
			if stalled := meta.FindStatusCondition(got.Conditions, siteopsv1.ConditionStalled); stalled != nil {
				t.Errorf("Stalled: got %+v, want none", stalled)
			}

			// Everything else is as it was.
			rest, wantRest := got.DeepCopy(), before.Status.DeepCopy()
			for _, c := range []string{siteopsv1.ConditionReady, siteopsv1.ConditionReconciling, siteopsv1.ConditionStalled} {
				meta.RemoveStatusCondition(&rest.Conditions, c)
				meta.RemoveStatusCondition(&wantRest.Conditions, c)
			}
			if !equality.Semantic.DeepEqual(rest, wantRest) {
				t.Errorf("the rest of the status changed:\n got %+v\nwant %+v", rest, wantRest)
			}

			ss.Status = *got
			obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ss)
			if err != nil {
				t.Fatal(err)
			}
			u := &unstructured.Unstructured{Object: obj}
			u.SetGroupVersionKind(siteopsv1.GroupVersion.WithKind("SiteServer"))
			res, err := kstatus.Compute(u)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != kstatus.InProgressStatus {
				t.Errorf("kstatus: got %s (%s), want %s", res.Status, res.Message, kstatus.InProgressStatus)
			}
		})
	}
}
