package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// computerConcurrency is how many Computers are reconciled at once. A
// reconcile reads the cache and, when the verdict changed, sends one status
// patch: a few workers keep up with a first start over tens of thousands of
// Computers, and with many agents going offline at once.
const computerConcurrency = 8

// ComputerReconciler keeps each Computer's Ready condition: whether an
// agent registered as it and still checks in (computer_status.go). The task
// services write the rest of the status.
type ComputerReconciler struct {
	client.Client
	// OfflineAfter is how long an agent may go without a check-in recorded
	// in status.lastSeen before its Computer turns AgentOffline.
	OfflineAfter time.Duration
	// now is the clock; time.Now when nil.
	now func() time.Time
	// Events records an agent going offline and coming back
	// (computerReadyEvent); SetupWithManager defaults it to the manager's
	// recorder.
	Events events.EventRecorder
}

// SetupWithManager registers the controller.
func (r *ComputerReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.OfflineAfter <= 0 {
		return fmt.Errorf("the Computer offline timeout must be positive, not %s", r.OfflineAfter)
	}
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(EventReportingController)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("computer").
		For(&siteopsv1.Computer{}, builder.WithPredicates(computerVerdictInputsChanged())).
		WithOptions(controller.Options{MaxConcurrentReconciles: computerConcurrency}).
		Complete(r)
}

// computerVerdictInputsChanged passes creates and deletes, and the updates
// that change what the Ready verdict reads: the spec, status.lastSeen and
// status.credential. The task services' other status fields, labels and
// the operator's own condition writes trigger nothing; the passing of time
// is a RequeueAfter.
func computerVerdictInputsChanged() predicate.Predicate {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		oldC, okOld := e.ObjectOld.(*siteopsv1.Computer)
		newC, okNew := e.ObjectNew.(*siteopsv1.Computer)
		if !okOld || !okNew {
			return true
		}
		return oldC.Generation != newC.Generation ||
			!equality.Semantic.DeepEqual(oldC.Status.LastSeen, newC.Status.LastSeen) ||
			!equality.Semantic.DeepEqual(oldC.Status.Credential, newC.Status.Credential)
	}}
}

// Reconcile judges one Computer and writes its status once, when the
// verdict changed; it comes back when the verdict would change by time
// alone.
func (r *ComputerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	var computer siteopsv1.Computer
	if err := r.Get(ctx, req.NamespacedName, &computer); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !computer.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	scope := &computerScope{computer: &computer, now: r.clock(), offlineAfter: r.OfflineAfter}
	defer func() {
		retErr = errors.Join(retErr, r.patchStatus(ctx, scope))
	}()
	return ctrl.Result{RequeueAfter: nextComputerVerdict(scope)}, nil
}

func (r *ComputerReconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// patchStatus writes the operator's part of the status when it differs from
// the stored one, so that a steady state writes nothing. The merge patch
// holds only what changed (the conditions, observedGeneration), so it never
// undoes a task service's write of the other fields.
func (r *ComputerReconciler) patchStatus(ctx context.Context, scope *computerScope) error {
	computer := scope.computer
	status := desiredComputerStatus(scope)
	if equality.Semantic.DeepEqual(status, &computer.Status) {
		return nil
	}
	ready := computerReadyCondition(scope)
	log.FromContext(ctx).V(1).Info("Updating Computer status", "computer", klog.KObj(computer),
		"ready", ready.Status, "reason", ready.Reason)
	before := readyCondition(computer.Status.Conditions)
	patch := client.MergeFromWithOptions(computer.DeepCopy(), client.MergeFromWithOptimisticLock{})
	computer.Status = *status
	if err := r.Status().Patch(ctx, computer, patch); err != nil {
		return fmt.Errorf("patching status of Computer %s: %w", klog.KObj(computer), err)
	}
	if r.Events != nil && computerReadyEvent(before, &ready) {
		eventType := corev1.EventTypeNormal
		if ready.Status != metav1.ConditionTrue {
			eventType = corev1.EventTypeWarning
		}
		r.Events.Eventf(computer, nil, eventType, ready.Reason, eventActionCheckIn, "%s", eventNote(ready.Message))
	}
	return nil
}

// computerReadyEvent tells whether a change of Ready from before to after
// is worth an Event: an agent going offline or its credential revoked (a
// Warning), and an agent back online after either. A registration (from
// NotRegistered to AgentOnline) records none: agents registering by the
// thousand are no news.
func computerReadyEvent(before, after *metav1.Condition) bool {
	if before != nil && before.Reason == after.Reason {
		return false
	}
	switch after.Reason {
	case siteopsv1.ReasonAgentOffline, siteopsv1.ReasonCredentialRevoked:
		return true
	case siteopsv1.ReasonAgentOnline:
		return before != nil && (before.Reason == siteopsv1.ReasonAgentOffline || before.Reason == siteopsv1.ReasonCredentialRevoked)
	}
	return false
}
