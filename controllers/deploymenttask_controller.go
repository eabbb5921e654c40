package controllers

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
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

// DeploymentTasks in every namespace: the manager writes their status only.
// It reads the task services' dispatch state and never writes it.
// +kubebuilder:rbac:groups=siteops.io,resources=deploymenttasks,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=deploymenttasks/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=dispatchshards,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=packages,verbs=get;list;watch

// IndexDispatchShardTaskUID indexes DispatchShards by spec.taskUID: a
// DeploymentTask finds its shards with it, never those of an older task of
// the same name. (Registered by the DeploymentTask controller, which is its
// only reader.)
const IndexDispatchShardTaskUID = "spec.taskUID"

// taskRecountDelay lets the shard writes and Computer changes of a burst
// (task services batching claims and results, agents registering) land
// before a task recounts them: a queue holds a delayed item once, so a
// busy task is recounted about once per delay, not once per write.
const taskRecountDelay = time.Second

// deploymentTaskConcurrency is how many DeploymentTasks are reconciled at
// once: tasks are few, and a reconcile reads the cache only.
const deploymentTaskConcurrency = 2

// DeploymentTaskReconciler keeps each DeploymentTask's status: its targets
// resolved to the Computers of its namespace, their progress read from the
// task's DispatchShards, the phase, and an Event per phase change
// (deploymenttask_status.go). The task services hand out the work; this
// controller never writes a spec, a DispatchShard or a Computer.
type DeploymentTaskReconciler struct {
	client.Client
	// Events records the phase changes; nil records none.
	Events events.EventRecorder
	// now is the clock; time.Now when nil.
	now func() time.Time
}

// SetupWithManager registers the DispatchShard index and the controller.
func (r *DeploymentTaskReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &siteopsv1.DispatchShard{},
		IndexDispatchShardTaskUID, func(o client.Object) []string {
			return []string{o.(*siteopsv1.DispatchShard).Spec.TaskUID}
		}); err != nil {
		return fmt.Errorf("indexing DispatchShards by %s: %w", IndexDispatchShardTaskUID, err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("deploymenttask").
		For(&siteopsv1.DeploymentTask{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		// The task services' claims and results.
		Watches(&siteopsv1.DispatchShard{}, r.shardChanges()).
		// Computers joining or leaving the targets, or moving between sites.
		Watches(&siteopsv1.Computer{}, r.computerChanges()).
		// The content of the Packages the tasks need, reaching their sites.
		Watches(&siteopsv1.Package{}, handler.EnqueueRequestsFromMapFunc(r.packageTasks)).
		WithOptions(controller.Options{MaxConcurrentReconciles: deploymentTaskConcurrency}).
		Complete(r)
}

// shardChanges enqueues, coalesced, the task of a shard that changed: the
// task of its namespace named spec.task, if its UID is spec.taskUID (a
// shard of an older task of the same name, not yet collected, is not this
// task's).
func (r *DeploymentTaskReconciler) shardChanges() handler.Funcs {
	enqueue := func(ctx context.Context, obj client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		sh, ok := obj.(*siteopsv1.DispatchShard)
		if !ok {
			return
		}
		key := types.NamespacedName{Namespace: sh.Namespace, Name: sh.Spec.Task}
		var task siteopsv1.DeploymentTask
		if err := r.Get(ctx, key, &task); err != nil || string(task.UID) != sh.Spec.TaskUID {
			return
		}
		q.AddAfter(reconcile.Request{NamespacedName: key}, taskRecountDelay)
	}
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.ObjectNew, q)
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueue(ctx, e.Object, q)
		},
	}
}

// packageTasks maps a Package to the unfinished tasks of its namespace
// that need it.
func (r *DeploymentTaskReconciler) packageTasks(ctx context.Context, obj client.Object) []reconcile.Request {
	var list siteopsv1.DeploymentTaskList
	if err := r.List(ctx, &list, client.InNamespace(obj.GetNamespace()),
		client.MatchingFields{IndexDeploymentTaskPackage: obj.GetName()}, client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing the DeploymentTasks that need a Package", "package", klog.KObj(obj))
		return nil
	}
	var out []reconcile.Request
	for i := range list.Items {
		if t := &list.Items[i]; !terminalPhase(t.Status.Phase) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(t)})
		}
	}
	return out
}

// computerChanges enqueues, coalesced, the tasks of a Computer's namespace
// that are not finished when the Computer is created or deleted, or when
// its labels or status.site change: what targeting and the per-site counts
// read. Check-ins (status.lastSeen) and the task services' other status
// writes enqueue nothing. The Computers of the initial list enqueue nothing
// either: every task is reconciled on start anyway.
func (r *DeploymentTaskReconciler) computerChanges() handler.Funcs {
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if !e.IsInInitialList {
				r.enqueueActiveTasks(ctx, e.Object.GetNamespace(), q)
			}
		},
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if computerTargetingChanged(e.ObjectOld, e.ObjectNew) {
				r.enqueueActiveTasks(ctx, e.ObjectNew.GetNamespace(), q)
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			r.enqueueActiveTasks(ctx, e.Object.GetNamespace(), q)
		},
	}
}

// computerTargetingChanged tells whether an update of a Computer changes
// what a task reads of it: its labels (selectors) or status.site (sites,
// per-site counts).
func computerTargetingChanged(oldObj, newObj client.Object) bool {
	oldC, okOld := oldObj.(*siteopsv1.Computer)
	newC, okNew := newObj.(*siteopsv1.Computer)
	if !okOld || !okNew {
		return true
	}
	return oldC.Status.Site != newC.Status.Site || !equality.Semantic.DeepEqual(oldC.Labels, newC.Labels)
}

// enqueueActiveTasks enqueues the tasks of namespace whose phase has not
// latched: a finished task's targets no longer follow the Computers.
func (r *DeploymentTaskReconciler) enqueueActiveTasks(ctx context.Context, namespace string,
	q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	var list siteopsv1.DeploymentTaskList
	if err := r.List(ctx, &list, client.InNamespace(namespace), client.UnsafeDisableDeepCopy); err != nil {
		log.FromContext(ctx).Error(err, "Listing the DeploymentTasks of a Computer's namespace", "namespace", namespace)
		return
	}
	for i := range list.Items {
		if t := &list.Items[i]; !terminalPhase(t.Status.Phase) {
			q.AddAfter(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(t)}, taskRecountDelay)
		}
	}
}

// Reconcile computes one task's status from the cache and writes it once,
// when it changed; it comes back when time alone would change it.
func (r *DeploymentTaskReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var task siteopsv1.DeploymentTask
	if err := r.Get(ctx, req.NamespacedName, &task); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !task.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	scope, err := r.observe(ctx, &task)
	if err != nil {
		return ctrl.Result{}, err
	}
	verdict := desiredTaskStatus(scope)
	if err := r.patchStatus(ctx, &task, verdict.status); err != nil {
		return ctrl.Result{}, err
	}
	if verdict.invalid != nil {
		// In the status; only a change of the spec helps.
		return ctrl.Result{}, reconcile.TerminalError(verdict.invalid)
	}
	return ctrl.Result{RequeueAfter: verdict.requeueAfter}, nil
}

func (r *DeploymentTaskReconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// observe reads the task's Computers, shards and Package from the cache;
// it fails only on a programming error (a missing index).
func (r *DeploymentTaskReconciler) observe(ctx context.Context, task *siteopsv1.DeploymentTask) (*taskScope, error) {
	var computers siteopsv1.ComputerList
	if err := r.List(ctx, &computers, client.InNamespace(task.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the Computers of namespace %s: %w", task.Namespace, err)
	}
	var shards siteopsv1.DispatchShardList
	if err := r.List(ctx, &shards, client.InNamespace(task.Namespace),
		client.MatchingFields{IndexDispatchShardTaskUID: string(task.UID)}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing the DispatchShards of DeploymentTask %s: %w", klog.KObj(task), err)
	}
	scope := &taskScope{task: task, now: r.clock(), computers: computers.Items, shards: shards.Items}
	if name, _ := task.Spec.Action.Package(); name != "" {
		pkg := &siteopsv1.Package{}
		switch err := r.Get(ctx, client.ObjectKey{Namespace: task.Namespace, Name: name}, pkg); {
		case err == nil:
			scope.pkg = pkg
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("reading Package %s/%s: %w", task.Namespace, name, err)
		}
	}
	return scope, nil
}

// patchStatus writes status when it differs from the stored one, so that
// a steady state writes nothing, and records an Event when the phase
// changed. The patch is conditioned on the resourceVersion read: from a
// cache that does not hold the last write yet, a phase change would be
// computed, written and announced twice; this way the second write fails
// with a conflict and is computed again from the newer task.
func (r *DeploymentTaskReconciler) patchStatus(ctx context.Context, task *siteopsv1.DeploymentTask,
	status *siteopsv1.DeploymentTaskStatus) error {
	if equality.Semantic.DeepEqual(status, &task.Status) {
		return nil
	}
	before := task.Status.Phase
	log.FromContext(ctx).V(1).Info("Updating DeploymentTask status", "deploymentTask", klog.KObj(task),
		"phase", status.Phase, "progress", status.Progress, "failed", status.Targets.Failed)
	patch := client.MergeFromWithOptions(task.DeepCopy(), client.MergeFromWithOptimisticLock{})
	task.Status = *status
	if err := r.Status().Patch(ctx, task, patch); err != nil {
		return fmt.Errorf("patching status of DeploymentTask %s: %w", klog.KObj(task), err)
	}
	if status.Phase != before {
		r.recordPhase(task)
	}
	return nil
}

// recordPhase records an Event for the task's new phase: Normal when it
// starts running or succeeds, Warning when it fails or stops. Pending
// records none.
func (r *DeploymentTaskReconciler) recordPhase(task *siteopsv1.DeploymentTask) {
	if r.Events == nil {
		return
	}
	ev, ok := taskPhaseEvent(&task.Status)
	if !ok {
		return
	}
	r.Events.Eventf(task, nil, ev.eventType, ev.reason, ev.action, "%s", ev.note)
}

// taskEvent is what an Event about a task says.
type taskEvent struct {
	eventType, reason, action, note string
}

// taskPhaseEvent is the Event for status's phase, if it has one: reason
// the Ready condition's (the phase, or FailureThresholdPassed), the note
// the counts.
func taskPhaseEvent(status *siteopsv1.DeploymentTaskStatus) (taskEvent, bool) {
	ev := taskEvent{reason: status.Phase, note: "Phase " + status.Phase + ": " + countsSummary(status.Targets)}
	for _, c := range status.Conditions {
		if c.Type == siteopsv1.ConditionReady {
			ev.reason = c.Reason
		}
	}
	switch status.Phase {
	case siteopsv1.TaskRunning:
		ev.eventType, ev.action = corev1.EventTypeNormal, eventActionStart
	case siteopsv1.TaskSucceeded:
		ev.eventType, ev.action = corev1.EventTypeNormal, eventActionComplete
	case siteopsv1.TaskFailed:
		ev.eventType, ev.action = corev1.EventTypeWarning, eventActionComplete
	case siteopsv1.TaskStopped:
		ev.eventType, ev.action = corev1.EventTypeWarning, eventActionStop
	default:
		return taskEvent{}, false
	}
	return ev, true
}
