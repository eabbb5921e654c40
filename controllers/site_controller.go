package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// +kubebuilder:rbac:groups=siteops.io,resources=sites,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=sites/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=subnets,verbs=get;list;watch

// SiteReconciler keeps each Site's status: how many Subnets map to it and
// whether it has a ready task service of its own.
type SiteReconciler struct {
	client.Client
}

// SetupWithManager registers the controller; concurrency is the number of
// Sites reconciled at once.
func (r *SiteReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("site").
		For(&siteopsv1.Site{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A Subnet moving between sites changes the counts of both.
		Watches(&siteopsv1.Subnet{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSite(q, e.Object.(*siteopsv1.Subnet).Status.EffectiveSite)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				oldSite := e.ObjectOld.(*siteopsv1.Subnet).Status.EffectiveSite
				newSite := e.ObjectNew.(*siteopsv1.Subnet).Status.EffectiveSite
				if oldSite != newSite {
					enqueueSite(q, oldSite)
					enqueueSite(q, newSite)
				}
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSite(q, e.Object.(*siteopsv1.Subnet).Status.EffectiveSite)
			},
		}).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
}

func enqueueSite(q workqueue.TypedRateLimitingInterface[reconcile.Request], site string) {
	if site != "" {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: site}})
	}
}

// Reconcile computes one Site's status from the cache and writes it when it
// changed.
func (r *SiteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var site siteopsv1.Site
	if err := r.Get(ctx, req.NamespacedName, &site); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	var subnets siteopsv1.SubnetList
	if err := r.List(ctx, &subnets, client.MatchingFields{IndexSubnetEffectiveSite: site.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing Subnets of Site %s: %w", site.Name, err)
	}

	status := site.Status.DeepCopy()
	status.ObservedGeneration = site.Generation
	status.Subnets = int32(len(subnets.Items))
	setSiteReady(status, site.Generation)
	if equality.Semantic.DeepEqual(status, &site.Status) {
		return ctrl.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("Updating Site status", "site", klog.KObj(&site), "subnets", status.Subnets)
	patch := client.MergeFrom(site.DeepCopy())
	site.Status = *status
	if err := r.Status().Patch(ctx, &site, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status of Site %s: %w", site.Name, err)
	}
	return ctrl.Result{}, nil
}

// setSiteReady sets the Ready condition. SiteServers do not exist yet in
// this API version, so no site has a task service of its own.
func setSiteReady(status *siteopsv1.SiteStatus, generation int64) {
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type:   siteopsv1.ConditionReady,
		Status: metav1.ConditionFalse,
		Reason: siteopsv1.ReasonNoSiteServer,
		Message: "No SiteServer serves this site yet: its agents are served by the unassigned SiteServers" +
			" (create a SiteServer that lists this site in spec.sites)",
		ObservedGeneration: generation,
	})
}
