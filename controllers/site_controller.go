package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
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
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/topology"
)


// SiteReconciler keeps each Site's task and package Services, which select
// the pods of every SiteServer serving the site, and its status: how many
// Subnets map to it, which SiteServers serve it and whether one of their
// task services is ready.
type SiteReconciler struct {
	client.Client
	Workloads WorkloadConfig
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
				enqueueSiteCoalesced(q, e.Object.(*siteopsv1.Subnet).Status.EffectiveSite)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				oldSite := e.ObjectOld.(*siteopsv1.Subnet).Status.EffectiveSite
				newSite := e.ObjectNew.(*siteopsv1.Subnet).Status.EffectiveSite
				if oldSite != newSite {
					enqueueSiteCoalesced(q, oldSite)
					enqueueSiteCoalesced(q, newSite)
				}
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSiteCoalesced(q, e.Object.(*siteopsv1.Subnet).Status.EffectiveSite)
			},
		}).
		// A SiteServer joining, leaving or changing readiness changes the
		// sites it serves before and after.
		Watches(&siteopsv1.SiteServer{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSites(q, e.Object.(*siteopsv1.SiteServer).Spec.Sites)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSites(q, e.ObjectOld.(*siteopsv1.SiteServer).Spec.Sites)
				enqueueSites(q, e.ObjectNew.(*siteopsv1.SiteServer).Spec.Sites)
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSites(q, e.Object.(*siteopsv1.SiteServer).Spec.Sites)
			},
		}).
		Owns(&corev1.Service{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
}

func enqueueSites(q workqueue.TypedRateLimitingInterface[reconcile.Request], sites []string) {
	for _, site := range sites {
		enqueueSite(q, site)
	}
}

// subnetCountDelay lets the Subnet changes of a burst (an import, a
// GitOps sync) land before a Site recounts them, so that the Site's status
// is written once per burst rather than once per Subnet. A queue holds a
// delayed item once, whatever the number of adds.
const subnetCountDelay = 500 * time.Millisecond

func enqueueSiteCoalesced(q workqueue.TypedRateLimitingInterface[reconcile.Request], site string) {
	if site != "" {
		q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: site}}, subnetCountDelay)
	}
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

	var servers siteopsv1.SiteServerList
	if err := r.List(ctx, &servers, client.MatchingFields{IndexSiteServerSites: site.Name}); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing SiteServers of Site %s: %w", site.Name, err)
	}
	if err := r.reconcileServices(ctx, &site, len(servers.Items) > 0); err != nil {
		return ctrl.Result{}, err
	}

	status := site.Status.DeepCopy()
	status.ObservedGeneration = site.Generation
	status.Subnets = int32(len(subnets.Items))
	status.SiteServers, status.TaskEndpoints, status.PackageEndpoints = nil, nil, nil
	for _, ss := range servers.Items {
		status.SiteServers = append(status.SiteServers, ss.Name)
	}
	slices.Sort(status.SiteServers)
	if len(servers.Items) > 0 {
		ns := r.Workloads.Namespace
		status.TaskEndpoints = []string{serviceURL(siteServiceName(site.Name, componentTask), ns, config.DefaultPort)}
		status.PackageEndpoints = []string{serviceURL(siteServiceName(site.Name, componentPackage), ns, config.DefaultPort)}
	}
	meta.SetStatusCondition(&status.Conditions, siteReadyCondition(site.Name, servers.Items, site.Generation))
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

// reconcileServices keeps the site's task and package Services while
// SiteServers serve it, and removes them when none does.
func (r *SiteReconciler) reconcileServices(ctx context.Context, site *siteopsv1.Site, served bool) error {
	for _, component := range []string{componentTask, componentPackage} {
		if served {
			if err := applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredSiteService(site, component, r.Workloads),
				corev1ac.ExtractService); err != nil {
				return err
			}
			continue
		}
		key := client.ObjectKey{Namespace: r.Workloads.Namespace, Name: siteServiceName(site.Name, component)}
		if err := deleteIfExists(ctx, r.Client, &corev1.Service{}, key, site); err != nil {
			return err
		}
	}
	return nil
}

// siteReadyCondition is True when a SiteServer serving the site has a ready
// task service of its own (a disabled one does not count), by the serving
// rules the locator uses too.
func siteReadyCondition(site string, servers []siteopsv1.SiteServer, generation int64) metav1.Condition {
	cond := metav1.Condition{Type: siteopsv1.ConditionReady, ObservedGeneration: generation}
	if len(servers) == 0 {
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonNoSiteServer
		cond.Message = "No SiteServer serves this site: its agents are served by the unassigned SiteServers" +
			" (create a SiteServer that lists this site in spec.sites)"
		return cond
	}
	rules := servingServers(servers)
	if !topology.HasReadyServer(site, rules) {
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonServicesNotReady
		cond.Message = "No task service of the SiteServers serving this site is ready: its agents are served by the unassigned SiteServers"
		return cond
	}
	var ready []topology.Server
	for _, s := range rules {
		if s.TaskReady {
			ready = append(ready, s)
		}
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonSiteReady
	cond.Message = "Task service ready on SiteServer " + strings.Join(topology.ServerNames(ready), ", ")
	return cond
}

// servingServers is what the serving rules need to know of SiteServers.
func servingServers(servers []siteopsv1.SiteServer) []topology.Server {
	out := make([]topology.Server, 0, len(servers))
	for _, ss := range servers {
		task := meta.FindStatusCondition(ss.Status.Conditions, siteopsv1.ConditionTaskServiceReady)
		out = append(out, topology.Server{Name: ss.Name, Sites: ss.Spec.Sites,
			TaskReady: task != nil && task.Status == metav1.ConditionTrue && task.Reason == siteopsv1.ReasonAvailable})
	}
	return out
}
