package controllers

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
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
	"github.com/siteops/site-operator/internal/topology"
)

// SubnetReconciler writes every Subnet's place in address resolution to its
// status. It only writes: the resolver feed, which runs on every replica,
// keeps the resolver in step with the Subnets and Sites in the cache and
// hands this controller (on the leader) exactly the Subnets whose verdict a
// change affects; Reconcile then copies the resolver's verdict into the
// status, writing only when it differs.
type SubnetReconciler struct {
	client.Client
	feed *resolverFeed
	// Events records the changes of a Subnet's verdict after its first
	// (subnetChange); SetupWithManager defaults it to the manager's
	// recorder.
	Events events.EventRecorder

	// wrote holds, per Subnet, the resourceVersion this controller last
	// wrote its status over: while the cache still shows that version, it
	// does not hold the write yet, and a reconcile from it would write the
	// same status again (the write's own event brings the Subnet back).
	wrote sync.Map // name → resourceVersion
}

// SetupWithManager registers the controller; concurrency is the number of
// Subnets reconciled at once.
func (r *SubnetReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(EventReportingController)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("subnet").
		// For gives the initial list (every Subnet is reconciled when this
		// replica becomes the leader) and brings back a status someone
		// edited. A new Subnet, a spec change and a deletion reach the
		// controller through the feed, once the resolver has seen them:
		// enqueued by both, a Subnet would be reconciled twice, the second
		// time maybe from a cache that does not hold the first write yet.
		For(&siteopsv1.Subnet{}, builder.WithPredicates(predicate.Funcs{
			CreateFunc: func(e event.CreateEvent) bool { return e.IsInInitialList },
			UpdateFunc: func(e event.UpdateEvent) bool {
				return e.ObjectOld.GetGeneration() == e.ObjectNew.GetGeneration()
			},
			DeleteFunc:  func(event.DeleteEvent) bool { return false },
			GenericFunc: func(event.GenericEvent) bool { return false },
		})).
		WatchesRawSource(r.feed.source()).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
}

// Reconcile copies the resolver's verdict on one Subnet into its status.
func (r *SubnetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var subnet siteopsv1.Subnet
	if err := r.Get(ctx, req.NamespacedName, &subnet); err != nil {
		if apierrors.IsNotFound(err) {
			r.wrote.Delete(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if over, ok := r.wrote.Load(subnet.Name); ok {
		if over == subnet.ResourceVersion {
			return ctrl.Result{}, nil // the cache lags this controller's last write
		}
		r.wrote.Delete(subnet.Name)
	}
	verdict, ok := r.feed.resolver.Status(subnet.Name)
	if !ok || !r.feed.fed(subnet.Name, subnet.Generation) {
		// The cache is ahead of the resolver: the event that feeds this
		// generation is on its way and enqueues the Subnet again.
		return ctrl.Result{}, nil
	}

	status := desiredSubnetStatus(&subnet, verdict)
	if equality.Semantic.DeepEqual(status, &subnet.Status) {
		return ctrl.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("Updating Subnet status", "subnet", klog.KObj(&subnet),
		"effectiveSite", status.EffectiveSite, "reason", verdict.Reason)
	patch := client.MergeFromWithOptions(subnet.DeepCopy(), client.MergeFromWithOptimisticLock{})
	over := subnet.ResourceVersion
	before := subnet.Status.DeepCopy()
	subnet.Status = *status
	if err := r.Status().Patch(ctx, &subnet, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status of Subnet %s: %w", subnet.Name, err)
	}
	r.recordChange(&subnet, before)
	if subnet.ResourceVersion != over {
		// A write that changed nothing keeps the version, and brings no
		// event: nothing to wait for then.
		r.wrote.Store(subnet.Name, over)
	}
	return ctrl.Result{}, nil
}

// recordChange records an Event when a Subnet's verdict changed: Ready's
// reason, or the site it maps to. A first verdict records none: an import
// or a sync of thousands of Subnets is not thousands of Events, and a
// Subnet applied with its Site may well see a SiteNotFound for a moment.
func (r *SubnetReconciler) recordChange(subnet *siteopsv1.Subnet, before *siteopsv1.SubnetStatus) {
	was, now := readyCondition(before.Conditions), readyCondition(subnet.Status.Conditions)
	if r.Events == nil || was == nil || now == nil {
		return
	}
	if was.Reason != now.Reason {
		recordReadyChange(r.Events, subnet, was, now, eventActionResolve, subnetReadyWarning)
		return
	}
	if before.EffectiveSite != subnet.Status.EffectiveSite {
		r.Events.Eventf(subnet, nil, corev1.EventTypeNormal, now.Reason, eventActionResolve, "%s",
			eventNote(fmt.Sprintf("Effective site changed from %q to %q: %s", before.EffectiveSite,
				subnet.Status.EffectiveSite, now.Message)))
	}
}

// subnetReadyWarning: the verdicts that need a user to act (Stalled) and a
// subnet that stopped taking part in address resolution are Warnings.
func subnetReadyWarning(before, after *metav1.Condition) bool {
	return subnetStalled(topology.Reason(after.Reason)) || lostReadiness(before, after)
}

// desiredSubnetStatus is the status that reports verdict on subnet: the
// resolver's verdict is complete for the generation it was fed, so
// observedGeneration is always that generation. Conditions keep their
// lastTransitionTime unless their status flips.
func desiredSubnetStatus(subnet *siteopsv1.Subnet, verdict topology.Status) *siteopsv1.SubnetStatus {
	status := subnet.Status.DeepCopy()
	status.ObservedGeneration = subnet.Generation
	status.EffectiveSite = verdict.EffectiveSite
	status.InheritedFrom = verdict.InheritedFrom
	setSubnetReady(&status.Conditions, subnet.Generation, verdict)
	setSubnetProgress(&status.Conditions, subnet.Generation, verdict)
	return status
}

// setSubnetReady sets Ready: True when the subnet takes part in address
// resolution, with the resolver's reason and message either way.
func setSubnetReady(conds *[]metav1.Condition, generation int64, verdict topology.Status) {
	ready := metav1.ConditionFalse
	if verdict.Effective() {
		ready = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type:               siteopsv1.ConditionReady,
		Status:             ready,
		Reason:             string(verdict.Reason),
		Message:            verdict.Message,
		ObservedGeneration: generation,
	})
}

// setSubnetProgress sets the kstatus conditions. A verdict is final for the
// generation it was computed from, so a Subnet never reports Reconciling: it
// is Stalled when the verdict contradicts what its spec asks for and only
// a change by a user can fix it, and converged otherwise (see the reasons'
// comments in the API package).
func setSubnetProgress(conds *[]metav1.Condition, generation int64, verdict topology.Status) {
	if subnetStalled(verdict.Reason) {
		setStalled(conds, generation, string(verdict.Reason), verdict.Message)
		return
	}
	setConverged(conds)
}

// subnetStalled tells the verdicts that need a user to act: a spec.site
// naming no Site, a CIDR that cannot be used, and a CIDR that an older
// Subnet maps to another site (two people disagree; rule 3 picks the older
// one but the younger one's spec is not what happens). A Manual subnet
// overridden by an import and a site-less subnet with nothing to inherit
// are what their specs and the rules ask for: converged, Ready=False.
func subnetStalled(reason topology.Reason) bool {
	switch reason {
	case topology.ReasonSiteNotFound, topology.ReasonInvalidCIDR, topology.ReasonDuplicate:
		return true
	}
	return false
}
