package controllers

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// The kstatus conditions (Reconciling, Stalled) of every kind are set
// through these three functions, so that at most one of them is present
// and a converged object carries neither (kstatus reads an absent
// abnormal-true condition as False). Every reconcile ends in exactly one of
// them, beside Ready.

// setReconciling says that the controller is converging on generation:
// Reconciling=True with reason and message, Stalled removed.
func setReconciling(conds *[]metav1.Condition, generation int64, reason, message string) {
	meta.RemoveStatusCondition(conds, siteopsv1.ConditionStalled)
	meta.SetStatusCondition(conds, metav1.Condition{Type: siteopsv1.ConditionReconciling, Status: metav1.ConditionTrue,
		Reason: reason, Message: message, ObservedGeneration: generation})
}

// setStalled says that the controller cannot progress on generation until
// something changes: Stalled=True with reason and message, Reconciling
// removed.
func setStalled(conds *[]metav1.Condition, generation int64, reason, message string) {
	meta.RemoveStatusCondition(conds, siteopsv1.ConditionReconciling)
	meta.SetStatusCondition(conds, metav1.Condition{Type: siteopsv1.ConditionStalled, Status: metav1.ConditionTrue,
		Reason: reason, Message: message, ObservedGeneration: generation})
}

// setConverged says that the object has converged: both removed.
func setConverged(conds *[]metav1.Condition) {
	meta.RemoveStatusCondition(conds, siteopsv1.ConditionReconciling)
	meta.RemoveStatusCondition(conds, siteopsv1.ConditionStalled)
}
