package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
)


// rolloutProgress enqueues the SiteServer that controls a Deployment or
// StatefulSet. In a burst of new SiteServers the queue is long; a rollout
// status change goes ahead of it (priority 1, above the default 0), so that
// readiness is reported when it happens rather than after the whole burst.
var rolloutProgress = handler.Funcs{
	CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueControllingSiteServer(q, e.Object)
	},
	UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueControllingSiteServer(q, e.ObjectNew)
	},
	DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		enqueueControllingSiteServer(q, e.Object)
	},
}

func enqueueControllingSiteServer(q workqueue.TypedRateLimitingInterface[reconcile.Request], obj client.Object) {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != "SiteServer" || ref.APIVersion != siteopsv1.GroupVersion.String() {
		return
	}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Name: ref.Name}}
	if pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request]); ok {
		pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(1)}, req)
		return
	}
	q.Add(req)
}

// annotationDefaultStorageClass marks the cluster's default StorageClass.
const annotationDefaultStorageClass = "storageclass.kubernetes.io/is-default-class"

// SiteServerReconciler runs each SiteServer's task-service Deployment and
// package-service StatefulSet, once their prerequisites hold, and reports
// their state.
type SiteServerReconciler struct {
	client.Client
	Workloads WorkloadConfig
}

// SetupWithManager registers the controller.
func (r *SiteServerReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	all := handler.EnqueueRequestsFromMapFunc(r.allSiteServers)
	return ctrl.NewControllerManagedBy(mgr).
		Named("siteserver").
		For(&siteopsv1.SiteServer{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// A workload's rollout status reaches the SiteServer's status ahead
		// of SiteServers still waiting for their first reconcile.
		Watches(&appsv1.Deployment{}, rolloutProgress).
		Watches(&appsv1.StatefulSet{}, rolloutProgress).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		// A Site appearing or going changes PrerequisitesMet of the
		// SiteServers that list it.
		Watches(&siteopsv1.Site{}, handler.EnqueueRequestsFromMapFunc(r.siteServersOfSite),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		// Nodes and StorageClasses are few and change rarely; node status
		// heartbeats are filtered out by the label predicate.
		Watches(&corev1.Node{}, all, builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&storagev1.StorageClass{}, all).
		WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).
		Complete(r)
}

func (r *SiteServerReconciler) allSiteServers(ctx context.Context, _ client.Object) []reconcile.Request {
	var list siteopsv1.SiteServerList
	if err := r.List(ctx, &list); err != nil {
		log.FromContext(ctx).Error(err, "Listing SiteServers")
		return nil
	}
	return siteServerRequests(list.Items)
}

func (r *SiteServerReconciler) siteServersOfSite(ctx context.Context, site client.Object) []reconcile.Request {
	var list siteopsv1.SiteServerList
	if err := r.List(ctx, &list, client.MatchingFields{IndexSiteServerSites: site.GetName()}); err != nil {
		log.FromContext(ctx).Error(err, "Listing SiteServers of a Site", "site", site.GetName())
		return nil
	}
	return siteServerRequests(list.Items)
}

func siteServerRequests(servers []siteopsv1.SiteServer) []reconcile.Request {
	requests := make([]reconcile.Request, 0, len(servers))
	for _, ss := range servers {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ss)})
	}
	return requests
}

// prerequisites is what a SiteServer's services need and what is missing.
type prerequisites struct {
	missingSites   []string
	noMatchingNode bool
	noStorageClass string // what is missing, "" when the class exists
	packageBlocked bool
	taskBlocked    bool
	// storageChange says why spec.services.package.storage is not applied,
	// "" when it is.
	storageChange string
}

// Reconcile brings one SiteServer's workloads to its spec.
func (r *SiteServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var ss siteopsv1.SiteServer
	if err := r.Get(ctx, req.NamespacedName, &ss); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	pre, err := r.checkPrerequisites(ctx, &ss)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := r.reconcileWorkloads(ctx, &ss, &pre); err != nil {
		return ctrl.Result{}, err
	}
	status, err := r.computeStatus(ctx, &ss, pre)
	if err != nil {
		return ctrl.Result{}, err
	}
	if equality.Semantic.DeepEqual(status, &ss.Status) {
		return ctrl.Result{}, nil
	}
	log.FromContext(ctx).V(1).Info("Updating SiteServer status", "siteServer", klog.KObj(&ss))
	patch := client.MergeFrom(ss.DeepCopy())
	ss.Status = *status
	if err := r.Status().Patch(ctx, &ss, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("patching status of SiteServer %s: %w", ss.Name, err)
	}
	return ctrl.Result{}, nil
}

func enabled(b *bool) bool { return b == nil || *b }

// checkPrerequisites reads from the cache whether the SiteServer's sites,
// a node for its pods and its storage class exist.
func (r *SiteServerReconciler) checkPrerequisites(ctx context.Context, ss *siteopsv1.SiteServer) (prerequisites, error) {
	var pre prerequisites
	for _, name := range ss.Spec.Sites {
		var site siteopsv1.Site
		if err := r.Get(ctx, client.ObjectKey{Name: name}, &site); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return pre, fmt.Errorf("reading Site %s: %w", name, err)
			}
			pre.missingSites = append(pre.missingSites, name)
		}
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.MatchingLabels(ss.Spec.NodeSelector), client.UnsafeDisableDeepCopy); err != nil {
		return pre, fmt.Errorf("listing Nodes: %w", err)
	}
	pre.noMatchingNode = len(nodes.Items) == 0

	if enabled(ss.Spec.Services.Package.Enabled) {
		missing, err := r.missingStorageClass(ctx, ss.Spec.Services.Package.Storage.StorageClassName)
		if err != nil {
			return pre, err
		}
		pre.noStorageClass = missing
	}
	pre.taskBlocked = len(pre.missingSites) > 0 || pre.noMatchingNode
	pre.packageBlocked = pre.taskBlocked || pre.noStorageClass != ""
	return pre, nil
}

// missingStorageClass says what is missing when the named StorageClass (or,
// for "", a default one) does not exist.
func (r *SiteServerReconciler) missingStorageClass(ctx context.Context, name string) (string, error) {
	if name != "" {
		var sc storagev1.StorageClass
		if err := r.Get(ctx, client.ObjectKey{Name: name}, &sc); err != nil {
			if client.IgnoreNotFound(err) != nil {
				return "", fmt.Errorf("reading StorageClass %s: %w", name, err)
			}
			return fmt.Sprintf("StorageClass %q does not exist", name), nil
		}
		return "", nil
	}
	var classes storagev1.StorageClassList
	if err := r.List(ctx, &classes, client.UnsafeDisableDeepCopy); err != nil {
		return "", fmt.Errorf("listing StorageClasses: %w", err)
	}
	for _, sc := range classes.Items {
		if sc.Annotations[annotationDefaultStorageClass] == "true" {
			return "", nil
		}
	}
	return "no StorageClass is named in spec.services.package.storage.storageClassName and the cluster has no default one", nil
}

// packageStatefulSet is the package service's StatefulSet to apply. The
// volume claim templates of an existing StatefulSet cannot change: when the
// spec's storage differs from the running one, the running storage is kept
// (so everything else still applies) and pre.storageChange says so.
func (r *SiteServerReconciler) packageStatefulSet(ctx context.Context, ss *siteopsv1.SiteServer, configHash string,
	pre *prerequisites) (*appsv1ac.StatefulSetApplyConfiguration, error) {
	var live appsv1.StatefulSet
	exists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: r.Workloads.Namespace, Name: packageName(ss)}, &live)
	if err != nil || !exists || len(live.Spec.VolumeClaimTemplates) == 0 {
		return desiredPackageStatefulSet(ss, r.Workloads, configHash), err
	}
	claim := live.Spec.VolumeClaimTemplates[0].Spec
	running := siteopsv1.PackageStorage{Size: ptr.To(claim.Resources.Requests[corev1.ResourceStorage]),
		StorageClassName: ptr.Deref(claim.StorageClassName, "")}
	wanted := ss.Spec.Services.Package.Storage
	wantedSize := resource.MustParse("10Gi")
	if wanted.Size != nil {
		wantedSize = *wanted.Size
	}
	if wantedSize.Cmp(*running.Size) == 0 && wanted.StorageClassName == running.StorageClassName {
		return desiredPackageStatefulSet(ss, r.Workloads, configHash), nil
	}
	pre.storageChange = fmt.Sprintf("spec.services.package.storage asks for %s of class %q but StatefulSet %s runs with %s of class %q,"+
		" and a StatefulSet's volume claims cannot change: delete it with `kubectl delete statefulset -n %s %s --cascade=orphan`"+
		" and the operator recreates it (claims that exist keep their size and class)",
		wantedSize.String(), wanted.StorageClassName, live.Name, running.Size.String(), running.StorageClassName, live.Namespace, live.Name)
	keep := ss.DeepCopy()
	keep.Spec.Services.Package.Storage = running
	return desiredPackageStatefulSet(keep, r.Workloads, configHash), nil
}

// reconcileWorkloads applies what the SiteServer should run and deletes what
// it should not.
func (r *SiteServerReconciler) reconcileWorkloads(ctx context.Context, ss *siteopsv1.SiteServer, pre *prerequisites) error {
	wc := r.Workloads
	cm, configHash, err := desiredConfigMap(ss, wc)
	if err != nil {
		return err
	}
	if err := applyIfChanged(ctx, r.Client, &corev1.ConfigMap{}, cm, corev1ac.ExtractConfigMap); err != nil {
		return err
	}

	runTask := enabled(ss.Spec.Services.Task.Enabled) && !pre.taskBlocked
	taskKey := client.ObjectKey{Namespace: wc.Namespace, Name: taskName(ss)}
	if runTask {
		if err := applyIfChanged(ctx, r.Client, &appsv1.Deployment{}, desiredTaskDeployment(ss, wc, configHash), appsv1ac.ExtractDeployment); err != nil {
			return err
		}
		if err := applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredServerService(ss, componentTask, wc), corev1ac.ExtractService); err != nil {
			return err
		}
	} else {
		if err := deleteIfExists(ctx, r.Client, &appsv1.Deployment{}, taskKey, ss); err != nil {
			return err
		}
		if err := deleteIfExists(ctx, r.Client, &corev1.Service{}, taskKey, ss); err != nil {
			return err
		}
	}
	if runTask && taskReplicas(ss) > 1 {
		if err := applyIfChanged(ctx, r.Client, &policyv1.PodDisruptionBudget{}, desiredTaskPDB(ss, wc), policyv1ac.ExtractPodDisruptionBudget); err != nil {
			return err
		}
	} else if err := deleteIfExists(ctx, r.Client, &policyv1.PodDisruptionBudget{}, taskKey, ss); err != nil {
		return err
	}

	runPackage := enabled(ss.Spec.Services.Package.Enabled) && !pre.packageBlocked
	packageKey := client.ObjectKey{Namespace: wc.Namespace, Name: packageName(ss)}
	if runPackage {
		desired, err := r.packageStatefulSet(ctx, ss, configHash, pre)
		if err != nil {
			return err
		}
		if err := applyIfChanged(ctx, r.Client, &appsv1.StatefulSet{}, desired, extractStatefulSet); err != nil {
			return err
		}
		return applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredServerService(ss, componentPackage, wc), corev1ac.ExtractService)
	}
	// The content store's PersistentVolumeClaim is kept: content survives a
	// package service that is disabled for a while.
	if err := deleteIfExists(ctx, r.Client, &appsv1.StatefulSet{}, packageKey, ss); err != nil {
		return err
	}
	return deleteIfExists(ctx, r.Client, &corev1.Service{}, packageKey, ss)
}

// computeStatus reads the workloads from the cache and reports them.
func (r *SiteServerReconciler) computeStatus(ctx context.Context, ss *siteopsv1.SiteServer, pre prerequisites) (*siteopsv1.SiteServerStatus, error) {
	status := ss.Status.DeepCopy()
	status.ObservedGeneration = ss.Generation
	wc := r.Workloads

	// PrerequisitesMet
	var problems []string
	reason := siteopsv1.ReasonPrerequisitesMet
	if len(pre.missingSites) > 0 {
		reason = siteopsv1.ReasonSiteNotFound
		problems = append(problems, fmt.Sprintf("Site %s does not exist", quoteJoin(pre.missingSites)))
	}
	if pre.noMatchingNode {
		if reason == siteopsv1.ReasonPrerequisitesMet {
			reason = siteopsv1.ReasonNoMatchingNode
		}
		problems = append(problems, fmt.Sprintf("no node matches spec.nodeSelector %v", ss.Spec.NodeSelector))
	}
	if pre.noStorageClass != "" {
		if reason == siteopsv1.ReasonPrerequisitesMet {
			reason = siteopsv1.ReasonStorageClassNotFound
		}
		problems = append(problems, pre.noStorageClass+": the package service is not created")
	}
	preCond := metav1.Condition{Type: siteopsv1.ConditionPrerequisitesMet, Status: metav1.ConditionTrue,
		Reason: reason, Message: "Sites, nodes and storage are in place", ObservedGeneration: ss.Generation}
	if len(problems) > 0 {
		preCond.Status = metav1.ConditionFalse
		preCond.Message = strings.Join(problems, "; ")
	}
	meta.SetStatusCondition(&status.Conditions, preCond)

	// TaskServiceReady
	var dep appsv1.Deployment
	taskExists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: wc.Namespace, Name: taskName(ss)}, &dep)
	if err != nil {
		return nil, err
	}
	status.Task = siteopsv1.ServiceStatus{}
	taskCond := serviceCondition(siteopsv1.ConditionTaskServiceReady, ss.Generation,
		enabled(ss.Spec.Services.Task.Enabled), pre.taskBlocked, taskExists, &status.Task, func() (int32, int32, bool) {
			want := taskReplicas(ss)
			current := dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas >= want
			return want, dep.Status.AvailableReplicas, current
		})
	if taskExists {
		status.Task.Endpoint = serviceURL(taskName(ss), wc.Namespace, config.DefaultPort)
	}
	meta.SetStatusCondition(&status.Conditions, taskCond)

	// PackageServiceReady
	var sts appsv1.StatefulSet
	packageExists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: wc.Namespace, Name: packageName(ss)}, &sts)
	if err != nil {
		return nil, err
	}
	status.Package = siteopsv1.ServiceStatus{}
	packageCond := serviceCondition(siteopsv1.ConditionPackageServiceReady, ss.Generation,
		enabled(ss.Spec.Services.Package.Enabled), pre.packageBlocked, packageExists, &status.Package, func() (int32, int32, bool) {
			current := sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdatedReplicas >= 1 &&
				sts.Status.CurrentRevision == sts.Status.UpdateRevision
			return 1, sts.Status.AvailableReplicas, current
		})
	if packageExists {
		status.Package.Endpoint = serviceURL(packageName(ss), wc.Namespace, config.DefaultPort)
	}
	if pre.storageChange != "" {
		packageCond.Status, packageCond.Reason, packageCond.Message =
			metav1.ConditionFalse, siteopsv1.ReasonStorageChangePending, pre.storageChange
	}
	meta.SetStatusCondition(&status.Conditions, packageCond)

	// Ready
	ready := metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionTrue,
		Reason: siteopsv1.ReasonServicesReady, Message: "Every enabled service is available", ObservedGeneration: ss.Generation}
	for _, c := range []metav1.Condition{preCond, taskCond, packageCond} {
		if c.Status != metav1.ConditionTrue {
			ready.Status, ready.Reason, ready.Message = metav1.ConditionFalse, c.Reason, c.Type+": "+c.Message
			break
		}
	}
	meta.SetStatusCondition(&status.Conditions, ready)
	return status, nil
}

// serviceCondition reports one service and fills its status. progress
// returns the desired and available replicas and whether the workload's
// status describes its current spec.
func serviceCondition(condType string, generation int64, isEnabled, blocked, exists bool,
	out *siteopsv1.ServiceStatus, progress func() (want, available int32, current bool)) metav1.Condition {
	cond := metav1.Condition{Type: condType, ObservedGeneration: generation}
	switch {
	case !isEnabled:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, siteopsv1.ReasonDisabled, "The service is disabled in the spec"
		out.Ready = true
	case blocked:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonPrerequisitesNotMet
		cond.Message = "The service is not created until PrerequisitesMet is True"
	case !exists:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, siteopsv1.ReasonProgressing, "The workload is being created"
	default:
		want, available, current := progress()
		out.Replicas, out.ReadyReplicas = want, available
		out.Ready = current && available >= want
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonProgressing
		cond.Message = fmt.Sprintf("%d of %d pods available", available, want)
		if out.Ready {
			cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonAvailable
		}
	}
	return cond
}

func (r *SiteServerReconciler) getIfExists(ctx context.Context, key client.ObjectKey, obj client.Object) (bool, error) {
	if err := r.Get(ctx, key, obj); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("reading %T %s: %w", obj, key, err)
		}
		return false, nil
	}
	return true, nil
}

func quoteJoin(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range slices.Sorted(slices.Values(names)) {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(quoted, ", ")
}

// extractStatefulSet is appsv1ac.ExtractStatefulSet for comparing with what
// the builder wants. volumeClaimTemplates is an atomic list, so the applier
// owns the whole of each template, including the status.phase that the API
// server sets on it; that field is dropped here.
func extractStatefulSet(sts *appsv1.StatefulSet, manager string) (*appsv1ac.StatefulSetApplyConfiguration, error) {
	ac, err := appsv1ac.ExtractStatefulSet(sts, manager)
	if err != nil || ac.Spec == nil {
		return ac, err
	}
	for i := range ac.Spec.VolumeClaimTemplates {
		ac.Spec.VolumeClaimTemplates[i].Status = nil
	}
	return ac, nil
}
