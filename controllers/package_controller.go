package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/packages"
)

// Packages in every namespace: the manager writes their status, except
// status.servers, which each package service writes for its own copy.
// +kubebuilder:rbac:groups=siteops.io,resources=packages,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=packages/status,verbs=get;update;patch

// PackageReconciler keeps each Package's status: the replication policy
// that applies, the wanted sites with the state of the content at each,
// rolled up from the package services' entries in status.servers by the
// placement rules (internal/packages), and the conditions. It records an
// Event when the Ready condition changes reason. It never writes a spec,
// nor status.servers.
type PackageReconciler struct {
	client.Client
	// Events records the Ready changes; nil records none.
	Events events.EventRecorder
}

// SetupWithManager registers the controller: a Package is reconciled when
// it changes (its spec, or a package service's entry), and every Package
// when a Site comes or goes or a SiteServer changes.
func (r *PackageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	all := handler.EnqueueRequestsFromMapFunc(r.allPackages)
	return ctrl.NewControllerManagedBy(mgr).
		Named("package").
		For(&siteopsv1.Package{}).
		Watches(&siteopsv1.Site{}, all).
		Watches(&siteopsv1.SiteServer{}, all).
		// The tasks that need a package bring it to their targets' sites.
		Watches(&siteopsv1.DeploymentTask{}, handler.EnqueueRequestsFromMapFunc(taskPackage)).
		Complete(r)
}

// taskPackage maps a DeploymentTask to the Package its action needs.
func taskPackage(_ context.Context, obj client.Object) []reconcile.Request {
	t, ok := obj.(*siteopsv1.DeploymentTask)
	if !ok {
		return nil
	}
	name, _ := t.Spec.Action.Package()
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: client.ObjectKey{Namespace: t.Namespace, Name: name}}}
}

// demandedSites are the sites of the targets of the tasks that need pkg
// and still may hand out or run its work: those not finished, and the
// finished ones whose targets still run it (a stopped task's work runs to
// its end).
func (r *PackageReconciler) demandedSites(ctx context.Context, pkg *siteopsv1.Package) ([]string, error) {
	var list siteopsv1.DeploymentTaskList
	if err := r.List(ctx, &list, client.InNamespace(pkg.Namespace),
		client.MatchingFields{IndexDeploymentTaskPackage: pkg.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the DeploymentTasks that need Package %s: %w", klog.KObj(pkg), err)
	}
	var sites []string
	for i := range list.Items {
		t := &list.Items[i]
		if terminalPhase(t.Status.Phase) && t.Status.Targets.Running == 0 {
			continue
		}
		for _, s := range t.Status.Sites {
			sites = append(sites, s.Site)
		}
	}
	return sites, nil
}

// allPackages maps a topology change to every Package.
func (r *PackageReconciler) allPackages(ctx context.Context, _ client.Object) []reconcile.Request {
	var list siteopsv1.PackageList
	if err := r.List(ctx, &list, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing Packages to reconcile after a topology change")
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

// Reconcile computes one Package's status from the cache and writes it
// when it changed.
func (r *PackageReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pkg siteopsv1.Package
	if err := r.Get(ctx, req.NamespacedName, &pkg); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pkg.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	var sites siteopsv1.SiteList
	if err := r.List(ctx, &sites, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing Sites: %w", err)
	}
	var servers siteopsv1.SiteServerList
	if err := r.List(ctx, &servers, client.UnsafeDisableDeepCopy); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing SiteServers: %w", err)
	}
	demanded, err := r.demandedSites(ctx, &pkg)
	if err != nil {
		return ctrl.Result{}, err
	}
	scope := &packageScope{pkg: &pkg, servers: packages.ServersOf(servers.Items), demanded: demanded}
	for i := range sites.Items {
		scope.sites = append(scope.sites, sites.Items[i].Name)
	}
	return ctrl.Result{}, r.patchStatus(ctx, &pkg, desiredPackageStatus(scope))
}

// patchStatus writes status when it differs from the stored one, as a
// merge patch conditioned on the resourceVersion read: a package service
// that wrote its entry meanwhile makes it fail with a conflict, and the
// status is computed again with that entry. It records an Event when the
// Ready condition's reason changed.
func (r *PackageReconciler) patchStatus(ctx context.Context, pkg *siteopsv1.Package, status *siteopsv1.PackageStatus) error {
	if equality.Semantic.DeepEqual(status, &pkg.Status) {
		return nil
	}
	before := meta.FindStatusCondition(pkg.Status.Conditions, siteopsv1.ConditionReady)
	patch := client.MergeFromWithOptions(pkg.DeepCopy(), client.MergeFromWithOptimisticLock{})
	pkg.Status = *status
	if err := r.Status().Patch(ctx, pkg, patch); err != nil {
		return fmt.Errorf("patching status of Package %s: %w", klog.KObj(pkg), err)
	}
	after := meta.FindStatusCondition(pkg.Status.Conditions, siteopsv1.ConditionReady)
	if r.Events != nil && after != nil && (before == nil || before.Reason != after.Reason) {
		kind := corev1.EventTypeNormal
		if after.Reason == siteopsv1.ReasonReplicationFailed || after.Reason == siteopsv1.ReasonSiteNotFound {
			kind = corev1.EventTypeWarning
		}
		r.Events.Eventf(pkg, nil, kind, after.Reason, eventActionReplicate, "%s", eventNote(after.Message))
	}
	return nil
}
