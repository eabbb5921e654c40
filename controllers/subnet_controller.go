package controllers

import (
	"context"
	"fmt"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)


// SubnetReconciler writes every Subnet's place in address resolution to its
// status. The event handlers keep Resolver in step with the Subnets and Sites
// in the cache and enqueue exactly the Subnets whose status the change
// affects; Reconcile then copies the resolver's verdict into the status,
// writing only when it differs.
type SubnetReconciler struct {
	client.Client
	Resolver *topology.Resolver

	mu sync.Mutex
	// fedGeneration is the metadata.generation of each Subnet last fed to
	// the resolver, so that a status is never stamped with a generation the
	// resolver has not seen yet.
	fedGeneration map[string]int64
}

// SetupWithManager registers the controller; concurrency is the number of
// Subnets reconciled at once.
func (r *SubnetReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	r.fedGeneration = map[string]int64{}
	return ctrl.NewControllerManagedBy(mgr).
		Named("subnet").
		// Subnets and Sites feed the resolver from their own handlers, so
		// the builder's For is replaced by Watches with those handlers.
		Watches(&siteopsv1.Subnet{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.feedSubnet(e.Object.(*siteopsv1.Subnet), q)
			},
			UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.feedSubnet(e.ObjectNew.(*siteopsv1.Subnet), q)
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				r.mu.Lock()
				delete(r.fedGeneration, e.Object.GetName())
				r.mu.Unlock()
				enqueueSubnets(q, r.Resolver.DeleteSubnet(e.Object.GetName()))
			},
		}).
		Watches(&siteopsv1.Site{}, handler.Funcs{
			CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSubnets(q, r.Resolver.SetSite(e.Object.GetName()))
			},
			DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				enqueueSubnets(q, r.Resolver.DeleteSite(e.Object.GetName()))
			},
		}).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
}

// feedSubnet gives the resolver the Subnet's current spec and enqueues the
// Subnet itself (its status may be stale or edited) and every Subnet whose
// status the change affects.
func (r *SubnetReconciler) feedSubnet(sn *siteopsv1.Subnet, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	changed := r.Resolver.SetSubnet(resolverSubnet(sn))
	r.mu.Lock()
	r.fedGeneration[sn.Name] = sn.Generation
	r.mu.Unlock()
	q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: sn.Name}})
	enqueueSubnets(q, changed)
}

// resolverSubnet is the resolver's view of a Subnet. A CIDR that does not
// parse (admission rejects those, so only objects stored before the rule
// existed) is passed as the zero Prefix, which the resolver ignores.
func resolverSubnet(sn *siteopsv1.Subnet) topology.Subnet {
	prefix, _ := netip.ParsePrefix(sn.Spec.CIDR)
	source := topology.SourceManual
	if sn.Spec.Source == siteopsv1.SourceActiveDirectory {
		source = topology.SourceActiveDirectory
	}
	return topology.Subnet{
		Name:    sn.Name,
		Prefix:  prefix,
		Site:    sn.Spec.Site,
		Source:  source,
		Created: sn.CreationTimestamp.Time,
	}
}

func enqueueSubnets(q workqueue.TypedRateLimitingInterface[reconcile.Request], names []string) {
	for _, name := range names {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Name: name}})
	}
}

// Reconcile copies the resolver's verdict on one Subnet into its status.
func (r *SubnetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var subnet siteopsv1.Subnet
	if err := r.Get(ctx, req.NamespacedName, &subnet); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	r.mu.Lock()
	fed, known := r.fedGeneration[subnet.Name]
	r.mu.Unlock()
	verdict, ok := r.Resolver.Status(subnet.Name)
	if !known || fed != subnet.Generation || !ok {
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
	patch := client.MergeFrom(subnet.DeepCopy())
	subnet.Status = *status
	if err := r.Status().Patch(ctx, &subnet, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status of Subnet %s: %w", subnet.Name, err)
	}
	return ctrl.Result{}, nil
}

// desiredSubnetStatus is the status that reports verdict on subnet. The Ready
// condition keeps its lastTransitionTime unless its status flips.
func desiredSubnetStatus(subnet *siteopsv1.Subnet, verdict topology.Status) *siteopsv1.SubnetStatus {
	status := subnet.Status.DeepCopy()
	status.ObservedGeneration = subnet.Generation
	status.EffectiveSite = verdict.EffectiveSite
	status.InheritedFrom = verdict.InheritedFrom
	ready := metav1.ConditionFalse
	if verdict.Reason == topology.ReasonEffective {
		ready = metav1.ConditionTrue
	}
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{
		Type:               siteopsv1.ConditionReady,
		Status:             ready,
		Reason:             string(verdict.Reason),
		Message:            verdict.Message,
		ObservedGeneration: subnet.Generation,
	})
	return status
}
