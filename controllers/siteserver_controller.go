package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	policyv1ac "k8s.io/client-go/applyconfigurations/policy/v1"
	"k8s.io/client-go/tools/events"
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
	// Certificates say who issues the serving certificates.
	Certificates CertificateOptions
	// CertificateReader reads cert-manager Certificates (the manager's
	// cache); nil means the client.
	CertificateReader client.Reader
	// Events records the changes of Ready's reason; SetupWithManager
	// defaults it to the manager's recorder.
	Events events.EventRecorder
}

// SetupWithManager registers the controller.
func (r *SiteServerReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(EventReportingController)
	}
	all := handler.EnqueueRequestsFromMapFunc(r.allSiteServers)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("siteserver").
		// A change of what it advertises re-issues its certificate.
		For(&siteopsv1.SiteServer{}, builder.WithPredicates(
			predicate.Or[client.Object](predicate.GenerationChangedPredicate{}, advertisedChanged))).
		// A workload's rollout status reaches the SiteServer's status ahead
		// of SiteServers still waiting for their first reconcile.
		Watches(&appsv1.Deployment{}, rolloutProgress).
		Watches(&appsv1.StatefulSet{}, rolloutProgress).
		Owns(&corev1.Service{}).
		// A pod turning ready, unready or moving changes the advertised URLs.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(siteServerOfPod),
			builder.WithPredicates(podAddressChanged)).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.Secret{}).
		// A replaced CA (its Secret deleted to rotate it, or edited) or a
		// CA bundle that went missing re-issues every server's certificate
		// now, not at its renewal time.
		Watches(&corev1.Secret{}, all, builder.WithPredicates(isCAObject)).
		Watches(&corev1.ConfigMap{}, all, builder.WithPredicates(isCAObject)).
		Owns(&policyv1.PodDisruptionBudget{}).
		// A Site appearing or going changes PrerequisitesMet of the
		// SiteServers that list it.
		Watches(&siteopsv1.Site{}, handler.EnqueueRequestsFromMapFunc(r.siteServersOfSite),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		// Nodes and StorageClasses are few and change rarely; node status
		// heartbeats are filtered out (nodeChanged).
		Watches(&corev1.Node{}, all, builder.WithPredicates(nodeChanged)).
		Watches(&storagev1.StorageClass{}, all)
	if r.Certificates.certManager() {
		// The Certificate's Ready condition, and the Secret cert-manager
		// writes (labelled by the Certificate's secretTemplate, not owned),
		// whose ca.crt goes into the published bundle.
		b = b.Owns(newCertificate()).
			Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(siteServerOfPod))
	}
	return b.WithOptions(controller.Options{MaxConcurrentReconciles: concurrency}).Complete(r)
}

// isCAObject passes events of the CA's Secret and bundle ConfigMap.
var isCAObject = predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetName() == CAName })

// siteServerOfPod maps a site-service pod to its SiteServer by label.
func siteServerOfPod(_ context.Context, pod client.Object) []reconcile.Request {
	name := pod.GetLabels()[LabelSiteServer]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: name}}}
}

// nodeChanged passes the node events that can change a SiteServer's
// status: creation, deletion, and a change of labels (spec.nodeSelector,
// PrerequisitesMet) or of addresses (the URLs advertised on a node port).
// The kubelet's status heartbeats change neither.
var nodeChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Node)
		after, ok2 := e.ObjectNew.(*corev1.Node)
		if !ok1 || !ok2 {
			return true
		}
		return !maps.Equal(before.Labels, after.Labels) || !slices.Equal(before.Status.Addresses, after.Status.Addresses)
	},
}

// podAddressChanged passes the pod events that can change what a SiteServer
// advertises: creation, deletion, and a change of address, node, readiness
// or deletion mark.
var podAddressChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*corev1.Pod)
		after, ok2 := e.ObjectNew.(*corev1.Pod)
		if !ok1 || !ok2 {
			return true
		}
		return before.Status.PodIP != after.Status.PodIP || before.Spec.NodeName != after.Spec.NodeName ||
			(before.DeletionTimestamp == nil) != (after.DeletionTimestamp == nil) ||
			len(readyPods([]corev1.Pod{*before})) != len(readyPods([]corev1.Pod{*after}))
	},
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

// siteServerScope is what one reconcile of a SiteServer learns, filled by
// the phases in order and read by the status functions.
type siteServerScope struct {
	ss *siteopsv1.SiteServer

	// Prerequisites (checkPrerequisites).
	missingSites   []string // names in spec.sites without a Site
	noMatchingNode bool     // no node matches spec.nodeSelector
	noStorageClass string   // what is missing of the storage class, "" when it exists

	// The workloads as the cache holds them (readWorkloads); nil when absent.
	deployment  *appsv1.Deployment
	statefulSet *appsv1.StatefulSet
	// What decides the advertised URLs (readExposure): the server's own
	// Services, the pods of each service and the nodes they run on.
	taskService, packageService *corev1.Service
	taskPods, packagePods       []corev1.Pod
	nodes                       map[string]*corev1.Node
	// The URLs each service advertises (advertise), computed once for the
	// certificate and the status.
	taskAdvertised, packageAdvertised []string

	// The plan (plan).
	runTask, runPackage bool
	// packageStorage is the storage to run the package service with: the
	// spec's, or the running one when the spec's cannot be applied.
	packageStorage siteopsv1.PackageStorage
	// storageChange says why spec.services.package.storage is not applied,
	// "" when it is.
	storageChange string

	// The serving certificate (reconcileCertificate).
	certificate certificateState

	// applyErr is the first error of applying or deleting a child.
	applyErr error
}

// taskBlocked: a prerequisite of the task service is missing.
func (s *siteServerScope) taskBlocked() bool { return len(s.missingSites) > 0 || s.noMatchingNode }

// packageBlocked: a prerequisite of the package service is missing.
func (s *siteServerScope) packageBlocked() bool { return s.taskBlocked() || s.noStorageClass != "" }

// Reconcile brings one SiteServer's workloads to its spec. Its status is
// patched once on every path: by a deferred call once the read phases have
// filled the scope, or, when a read fails, with only what that says.
func (r *SiteServerReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	var ss siteopsv1.SiteServer
	if err := r.Get(ctx, req.NamespacedName, &ss); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !ss.DeletionTimestamp.IsZero() {
		// Its children go with it (garbage collection); recreating them
		// would hold up a foreground deletion.
		return ctrl.Result{}, nil
	}
	s := &siteServerScope{ss: &ss}
	if err := r.readState(ctx, s); err != nil {
		// The scope is half filled: the status says only that the read
		// failed (siteServerReadFailedStatus), and the error retries it.
		if patchErr := r.writeStatus(ctx, &ss, siteServerReadFailedStatus(&ss, err)); patchErr != nil {
			err = errors.Join(err, patchErr)
		}
		return ctrl.Result{}, err
	}
	s.advertise(r.Workloads)
	defer func() {
		if err := r.patchStatus(ctx, s); err != nil {
			// Retried with back-off; a RequeueAfter would be ignored.
			result, retErr = ctrl.Result{}, errors.Join(retErr, err)
		}
	}()
	planWorkloads(s)
	if s.applyErr = r.reconcileCertificate(ctx, s); s.applyErr != nil {
		return resultOfApplyError(s.applyErr)
	}
	if s.applyErr = r.applyChildren(ctx, s); s.applyErr != nil {
		return resultOfApplyError(s.applyErr)
	}
	return ctrl.Result{RequeueAfter: s.certificate.requeueAfter(time.Now())}, nil
}

// notOwnedRetry is how often a SiteServer whose child name is taken by a
// foreign object looks again: nothing else tells it the object went away.
const notOwnedRetry = time.Minute

// resultOfApplyError turns a failed apply into what the queue should do: an
// object in the way is polled, anything else is retried with back-off (a
// cluster policy or quota that refuses an object can be lifted at any time).
func resultOfApplyError(err error) (ctrl.Result, error) {
	if errors.Is(err, ErrNotOwned) {
		return ctrl.Result{RequeueAfter: notOwnedRetry}, nil
	}
	return ctrl.Result{}, err
}

// readState runs the read phases, which fill the scope from the cache.
func (r *SiteServerReconciler) readState(ctx context.Context, s *siteServerScope) error {
	if err := r.checkPrerequisites(ctx, s); err != nil {
		return err
	}
	if err := r.readWorkloads(ctx, s); err != nil {
		return err
	}
	return r.readExposure(ctx, s)
}

// patchStatus writes the status computed from the scope.
func (r *SiteServerReconciler) patchStatus(ctx context.Context, s *siteServerScope) error {
	status := siteServerStatus(s, r.Workloads)
	setCertificateReady(status, s, r.Certificates.certManager(), s.ss.Generation)
	return r.writeStatus(ctx, s.ss, status)
}

// writeStatus writes status into ss when it differs from ss's, and records
// an Event when Ready changed reason (siteServerReadyWarning). The write is
// conditional on the version read: a reconcile from a cache that does not
// hold the last write yet fails with a conflict and runs again, instead of
// announcing the same change twice.
func (r *SiteServerReconciler) writeStatus(ctx context.Context, ss *siteopsv1.SiteServer, status *siteopsv1.SiteServerStatus) error {
	if equality.Semantic.DeepEqual(status, &ss.Status) {
		return nil
	}
	log.FromContext(ctx).V(1).Info("Updating SiteServer status", "siteServer", klog.KObj(ss))
	before := readyCondition(ss.Status.Conditions)
	patch := client.MergeFromWithOptions(ss.DeepCopy(), client.MergeFromWithOptimisticLock{})
	ss.Status = *status
	if err := r.Status().Patch(ctx, ss, patch); err != nil {
		return fmt.Errorf("patching status of SiteServer %s: %w", ss.Name, err)
	}
	recordReadyChange(r.Events, ss, before, readyCondition(ss.Status.Conditions), eventActionRun, siteServerReadyWarning)
	return nil
}

// siteServerReadyWarning: what stops a SiteServer (a failed read or apply,
// an object in the way, a storage change it cannot make, a missing
// prerequisite, running degraded) and services that stopped being ready
// are Warnings; progress and ServicesReady are Normal.
func siteServerReadyWarning(before, after *metav1.Condition) bool {
	switch after.Reason {
	case siteopsv1.ReasonReadFailed, siteopsv1.ReasonApplyFailed, siteopsv1.ReasonNotOwned, siteopsv1.ReasonStorageChangePending,
		siteopsv1.ReasonSiteNotFound, siteopsv1.ReasonNoMatchingNode, siteopsv1.ReasonStorageClassNotFound,
		siteopsv1.ReasonDegraded:
		return true
	}
	return lostReadiness(before, after)
}

func enabled(b *bool) bool { return b == nil || *b }

// checkPrerequisites reads from the cache whether the SiteServer's sites,
// a node for its pods and its storage class exist.
func (r *SiteServerReconciler) checkPrerequisites(ctx context.Context, s *siteServerScope) error {
	for _, name := range s.ss.Spec.Sites {
		var site siteopsv1.Site
		exists, err := r.getIfExists(ctx, client.ObjectKey{Name: name}, &site)
		if err != nil {
			return err
		}
		if !exists {
			s.missingSites = append(s.missingSites, name)
		}
	}
	var nodes corev1.NodeList
	if err := r.List(ctx, &nodes, client.MatchingLabels(s.ss.Spec.NodeLabels()), client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing Nodes: %w", err)
	}
	s.noMatchingNode = len(nodes.Items) == 0
	if enabled(s.ss.Spec.Services.Package.Enabled) {
		missing, err := r.missingStorageClass(ctx, s.ss.Spec.Services.Package.Storage.StorageClassName)
		if err != nil {
			return err
		}
		s.noStorageClass = missing
	}
	return nil
}

// readWorkloads reads the SiteServer's Deployment and StatefulSet from the
// cache.
func (r *SiteServerReconciler) readWorkloads(ctx context.Context, s *siteServerScope) error {
	var dep appsv1.Deployment
	if exists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: r.Workloads.Namespace, Name: taskName(s.ss)}, &dep); err != nil {
		return err
	} else if exists {
		s.deployment = &dep
	}
	var sts appsv1.StatefulSet
	if exists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: r.Workloads.Namespace, Name: packageName(s.ss)}, &sts); err != nil {
		return err
	} else if exists {
		s.statefulSet = &sts
	}
	return nil
}

// readExposure reads from the cache what the advertised URLs are made of:
// the server's own Services, its pods and the nodes they run on.
func (r *SiteServerReconciler) readExposure(ctx context.Context, s *siteServerScope) error {
	s.nodes = map[string]*corev1.Node{}
	for _, c := range []struct {
		name      string
		component string
		service   **corev1.Service
		pods      *[]corev1.Pod
	}{
		{taskName(s.ss), componentTask, &s.taskService, &s.taskPods},
		{packageName(s.ss), componentPackage, &s.packageService, &s.packagePods},
	} {
		var svc corev1.Service
		exists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: r.Workloads.Namespace, Name: c.name}, &svc)
		if err != nil {
			return err
		}
		if exists {
			*c.service = &svc
		}
		var pods corev1.PodList
		if err := r.List(ctx, &pods, client.InNamespace(r.Workloads.Namespace),
			client.MatchingLabels(selectorLabels(s.ss, c.component))); err != nil {
			return fmt.Errorf("listing the %s pods of SiteServer %s: %w", c.component, s.ss.Name, err)
		}
		*c.pods = pods.Items
		for _, pod := range pods.Items {
			name := pod.Spec.NodeName
			if name == "" || s.nodes[name] != nil {
				continue
			}
			var node corev1.Node
			exists, err := r.getIfExists(ctx, client.ObjectKey{Name: name}, &node)
			if err != nil {
				return err
			}
			if exists {
				s.nodes[name] = &node
			}
		}
	}
	return nil
}

// planWorkloads decides what runs. Prerequisites gate only the creation of
// a service: one that runs keeps running when a Site, a node label or the
// storage class goes missing, so a typo or a deleted Site never takes down
// a server that works for its other sites. A disabled service is removed.
//
// The volume claims of an existing StatefulSet cannot change: when the
// spec's storage differs from the running one, the running storage is kept
// (so everything else still applies) and storageChange says so.
func planWorkloads(s *siteServerScope) {
	spec := s.ss.Spec.Services
	s.runTask = enabled(spec.Task.Enabled) && (s.deployment != nil || !s.taskBlocked())
	s.runPackage = enabled(spec.Package.Enabled) && (s.statefulSet != nil || !s.packageBlocked())

	wanted := spec.Package.Storage
	if wanted.Size == nil {
		wanted.Size = ptr.To(defaultStorageSize)
	}
	s.packageStorage = wanted
	if s.statefulSet == nil || len(s.statefulSet.Spec.VolumeClaimTemplates) == 0 {
		return
	}
	claim := s.statefulSet.Spec.VolumeClaimTemplates[0].Spec
	running := siteopsv1.PackageStorage{Size: ptr.To(claim.Resources.Requests[corev1.ResourceStorage]),
		StorageClassName: ptr.Deref(claim.StorageClassName, "")}
	if wanted.Size.Cmp(*running.Size) == 0 && wanted.StorageClassName == running.StorageClassName {
		return
	}
	live := s.statefulSet
	s.storageChange = fmt.Sprintf("spec.services.package.storage asks for %s of class %q but StatefulSet %s runs with %s of class %q,"+
		" and a StatefulSet's volume claims cannot change: delete it with `kubectl delete statefulset -n %s %s --cascade=orphan`"+
		" and the operator recreates it (claims that exist keep their size and class)",
		wanted.Size.String(), wanted.StorageClassName, live.Name, running.Size.String(), running.StorageClassName, live.Namespace, live.Name)
	s.packageStorage = running
}

// child is one object a SiteServer runs: applied while wanted, deleted
// otherwise.
type child struct {
	obj    client.Object // an empty object of the kind, for reads and deletes
	key    client.ObjectKey
	wanted bool
	apply  func(ctx context.Context) error
}

// children lists the objects of a SiteServer in the order they are
// applied: configuration first, so that pods never start without it.
func (r *SiteServerReconciler) children(s *siteServerScope) ([]child, error) {
	ss, wc := s.ss, r.Workloads
	cm, configHash, err := desiredConfigMap(ss, wc)
	if err != nil {
		return nil, err
	}
	withStorage := ss
	if s.storageChange != "" {
		withStorage = ss.DeepCopy()
		withStorage.Spec.Services.Package.Storage = s.packageStorage
	}
	key := func(name string) client.ObjectKey { return client.ObjectKey{Namespace: wc.Namespace, Name: name} }
	return []child{
		{&corev1.ConfigMap{}, key(configName(ss)), true, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &corev1.ConfigMap{}, cm, corev1ac.ExtractConfigMap)
		}},
		// The serving certificate, before the pods that mount it.
		r.certificateChild(s, key(tlsSecretName(ss))),
		{&appsv1.Deployment{}, key(taskName(ss)), s.runTask, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &appsv1.Deployment{}, desiredTaskDeployment(ss, wc, configHash), appsv1ac.ExtractDeployment)
		}},
		{&corev1.Service{}, key(taskName(ss)), s.runTask, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredServerService(ss, componentTask, wc), corev1ac.ExtractService)
		}},
		{&policyv1.PodDisruptionBudget{}, key(taskName(ss)), s.runTask && taskReplicas(ss) > 1, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &policyv1.PodDisruptionBudget{}, desiredTaskPDB(ss, wc), policyv1ac.ExtractPodDisruptionBudget)
		}},
		// The content store's PersistentVolumeClaim is kept when the
		// StatefulSet goes: content survives a package service that is
		// disabled for a while.
		{&appsv1.StatefulSet{}, key(packageName(ss)), s.runPackage, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &appsv1.StatefulSet{}, desiredPackageStatefulSet(withStorage, wc, configHash), extractStatefulSet)
		}},
		{&corev1.Service{}, key(packageName(ss)), s.runPackage, func(ctx context.Context) error {
			return applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredServerService(ss, componentPackage, wc), corev1ac.ExtractService)
		}},
	}, nil
}

// certificateChild is the serving certificate's Secret, or in cert-manager
// mode the Certificate that makes it (the Secret is then cert-manager's:
// neither applied nor deleted).
func (r *SiteServerReconciler) certificateChild(s *siteServerScope, key client.ObjectKey) child {
	if s.certificate.certManager != nil {
		return child{newCertificate(), key, true, func(ctx context.Context) error {
			return r.applyCertManagerCertificate(ctx, s)
		}}
	}
	return child{&corev1.Secret{}, key, s.certificate.secret != nil, func(ctx context.Context) error {
		return applyIfChanged(ctx, r.Client, &corev1.Secret{}, s.certificate.secret, corev1ac.ExtractSecret)
	}}
}

// applyChildren applies the wanted children and deletes the others, and
// stops at the first failure.
func (r *SiteServerReconciler) applyChildren(ctx context.Context, s *siteServerScope) error {
	children, err := r.children(s)
	if err != nil {
		return err
	}
	for _, c := range children {
		if c.wanted {
			err = c.apply(ctx)
		} else {
			err = deleteIfExists(ctx, r.Client, c.obj, c.key, s.ss)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// missingStorageClass says what is missing when the named StorageClass (or,
// for "", a default one) does not exist.
func (r *SiteServerReconciler) missingStorageClass(ctx context.Context, name string) (string, error) {
	if name != "" {
		var sc storagev1.StorageClass
		exists, err := r.getIfExists(ctx, client.ObjectKey{Name: name}, &sc)
		if err != nil || exists {
			return "", err
		}
		return fmt.Sprintf("StorageClass %q does not exist", name), nil
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

func (r *SiteServerReconciler) getIfExists(ctx context.Context, key client.ObjectKey, obj client.Object) (bool, error) {
	if err := r.Get(ctx, key, obj); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return false, fmt.Errorf("reading %T %s: %w", obj, key, err)
		}
		return false, nil
	}
	return true, nil
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
