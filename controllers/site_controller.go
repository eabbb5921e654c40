package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
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
	"github.com/siteops/site-operator/internal/topology"
)

// SiteReconciler keeps each Site's task and package Services, which select
// the pods of every SiteServer serving the site, and its status: how many
// Subnets map to it, how many Computers are located in it, which SiteServers
// serve it and whether one of their task services is ready.
type SiteReconciler struct {
	client.Client
	Workloads WorkloadConfig
	// Events records the changes of Ready; SetupWithManager defaults it
	// to the manager's recorder.
	Events events.EventRecorder
}

// SetupWithManager registers the controller; concurrency is the number of
// Sites reconciled at once.
func (r *SiteReconciler) SetupWithManager(mgr ctrl.Manager, concurrency int) error {
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(EventReportingController)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("site").
		// The directory import's label shows in status.importedBy.
		For(&siteopsv1.Site{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		// A Subnet moving between sites changes the counts of both.
		Watches(&siteopsv1.Subnet{}, siteMoves(func(sn *siteopsv1.Subnet) string { return sn.Status.EffectiveSite })).
		// A Computer located in another site (by the task service, in
		// status.site), created or deleted changes the counts of both. Other
		// Computer updates, such as check-ins, change no count.
		Watches(&siteopsv1.Computer{}, siteMoves(func(c *siteopsv1.Computer) string { return c.Status.Site })).
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

// siteMoves enqueues, coalesced, the site of an object that is created or
// deleted, and both sites of one whose site changes; other updates enqueue
// nothing.
func siteMoves[T client.Object](siteOf func(T) string) handler.Funcs {
	return handler.Funcs{
		CreateFunc: func(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueueSiteCoalesced(q, siteOf(e.Object.(T)))
		},
		UpdateFunc: func(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if before, after := siteOf(e.ObjectOld.(T)), siteOf(e.ObjectNew.(T)); before != after {
				enqueueSiteCoalesced(q, before)
				enqueueSiteCoalesced(q, after)
			}
		},
		DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			enqueueSiteCoalesced(q, siteOf(e.Object.(T)))
		},
	}
}

func enqueueSites(q workqueue.TypedRateLimitingInterface[reconcile.Request], sites []string) {
	for _, site := range sites {
		enqueueSite(q, site)
	}
}

// subnetCountDelay lets the Subnet and Computer changes of a burst (an
// import, a GitOps sync, agents registering or relocating together) land
// before a Site recounts them, so that the Site's status is written once per
// burst rather than once per Subnet or Computer. A queue holds a delayed
// item once, whatever the number of adds.
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

// siteScope is what one reconcile of a Site works from: observe fills it
// from the cache, the phases add their outcome, and the status setters read
// it.
type siteScope struct {
	site *siteopsv1.Site
	// subnets is the number of Subnets effectively mapped to the site.
	subnets int
	// computers is the number of Computers located in the site.
	computers int
	// servers are the SiteServers that serve the site.
	servers []siteopsv1.SiteServer
	// servicesErr is why the site's Services could not be applied or
	// removed, nil when they were.
	servicesErr error
}

// Reconcile keeps one Site's Services and writes its status once, whatever
// the outcome of the phases, when it changed.
func (r *SiteReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	var site siteopsv1.Site
	if err := r.Get(ctx, req.NamespacedName, &site); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !site.DeletionTimestamp.IsZero() {
		// Its Services go with it (garbage collection); recreating them
		// would hold up a foreground deletion.
		return ctrl.Result{}, nil
	}
	// observe reads the cache only; it fails only on a programming error (a
	// missing index), with nothing new to report.
	scope, err := r.observe(ctx, &site)
	if err != nil {
		return ctrl.Result{}, err
	}
	defer func() {
		retErr = errors.Join(retErr, r.patchStatus(ctx, scope))
	}()

	// A failure is in the status; returning it retries with back-off, so a
	// Service in the way is noticed when it goes.
	scope.servicesErr = r.reconcileServices(ctx, scope)
	return ctrl.Result{}, scope.servicesErr
}

// observe reads what the site's status reports from the cache.
func (r *SiteReconciler) observe(ctx context.Context, site *siteopsv1.Site) (*siteScope, error) {
	var subnets siteopsv1.SubnetList
	if err := r.List(ctx, &subnets, client.MatchingFields{IndexSubnetEffectiveSite: site.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Subnets of Site %s: %w", site.Name, err)
	}
	var servers siteopsv1.SiteServerList
	if err := r.List(ctx, &servers, client.MatchingFields{IndexSiteServerSites: site.Name}); err != nil {
		return nil, fmt.Errorf("listing SiteServers of Site %s: %w", site.Name, err)
	}
	slices.SortFunc(servers.Items, func(a, b siteopsv1.SiteServer) int { return strings.Compare(a.Name, b.Name) })
	// Every namespace's: a site's computers belong to many tenants.
	var computers siteopsv1.ComputerList
	if err := r.List(ctx, &computers, client.MatchingFields{IndexComputerSite: site.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Computers of Site %s: %w", site.Name, err)
	}
	return &siteScope{site: site, subnets: len(subnets.Items), computers: len(computers.Items),
		servers: servers.Items}, nil
}

// reconcileServices keeps the site's task and package Services while
// SiteServers serve it, and removes them when none does.
func (r *SiteReconciler) reconcileServices(ctx context.Context, scope *siteScope) error {
	for _, component := range []string{componentTask, componentPackage} {
		if len(scope.servers) > 0 {
			if err := applyIfChanged(ctx, r.Client, &corev1.Service{}, desiredSiteService(scope.site, component, r.Workloads),
				corev1ac.ExtractService); err != nil {
				return err
			}
			continue
		}
		key := client.ObjectKey{Namespace: r.Workloads.Namespace, Name: siteServiceName(scope.site.Name, component)}
		if err := deleteIfExists(ctx, r.Client, &corev1.Service{}, key, scope.site); err != nil {
			return err
		}
	}
	return nil
}

// patchStatus writes the status computed from scope when it differs from
// the stored one, so that a steady state writes nothing, and records an
// Event when Ready changed reason (siteReadyEvent).
func (r *SiteReconciler) patchStatus(ctx context.Context, scope *siteScope) error {
	site := scope.site
	status := desiredSiteStatus(scope)
	if equality.Semantic.DeepEqual(status, &site.Status) {
		return nil
	}
	log.FromContext(ctx).V(1).Info("Updating Site status", "site", klog.KObj(site), "subnets", status.Subnets,
		"computers", status.Computers, "siteServers", status.SiteServerCount)
	before := readyCondition(site.Status.Conditions)
	patch := client.MergeFromWithOptions(site.DeepCopy(), client.MergeFromWithOptimisticLock{})
	site.Status = *status
	if err := r.Status().Patch(ctx, site, patch); err != nil {
		return fmt.Errorf("patching status of Site %s: %w", site.Name, err)
	}
	recordReadyChange(r.Events, site, before, readyCondition(site.Status.Conditions), eventActionServe, siteReadyWarning)
	return nil
}

// siteReadyWarning: a Site's Services that cannot be applied, and a site
// whose own servers stopped serving it, are Warnings; a site becoming ready
// or waiting for its first server is Normal.
func siteReadyWarning(before, after *metav1.Condition) bool {
	return after.Reason == siteopsv1.ReasonApplyFailed || after.Reason == siteopsv1.ReasonNotOwned ||
		lostReadiness(before, after)
}

// desiredSiteStatus is the status that reports scope, one setter per part.
// observedGeneration moves only when the site's Services were applied or the
// reconcile is Stalled (a verdict on this generation that only a change can
// alter); while a failure is retried it keeps the last generation applied.
func desiredSiteStatus(scope *siteScope) *siteopsv1.SiteStatus {
	status := scope.site.Status.DeepCopy()
	status.Subnets = int32(scope.subnets)
	status.Computers = int32(scope.computers)
	status.ImportedBy = scope.site.Labels[siteopsv1.LabelDirectoryImport]
	setSiteServers(status, scope.servers)
	setSiteEndpoints(status, scope)
	meta.SetStatusCondition(&status.Conditions, siteReadyCondition(scope))
	setSiteProgress(&status.Conditions, scope)
	if scope.servicesErr == nil || stalledBy(scope.servicesErr) {
		status.ObservedGeneration = scope.site.Generation
	}
	return status
}

// setSiteServers lists the servers' names, cut to the list's cap, and
// counts them all.
func setSiteServers(status *siteopsv1.SiteStatus, servers []siteopsv1.SiteServer) {
	status.SiteServerCount = int32(len(servers))
	status.SiteServers = nil
	for _, ss := range servers[:min(len(servers), siteopsv1.MaxSiteServersListed)] {
		status.SiteServers = append(status.SiteServers, ss.Name)
	}
}

// setSiteEndpoints lists the URLs agents use for the site: what the
// SiteServers serving it advertise (their ready pods, node ports, load
// balancers or explicit addresses), sorted and cut at the list's cap.
func setSiteEndpoints(status *siteopsv1.SiteStatus, scope *siteScope) {
	var task, pkg []string
	for _, ss := range scope.servers {
		task = append(task, ss.Status.Task.Advertised...)
		pkg = append(pkg, ss.Status.Package.Advertised...)
	}
	status.TaskEndpoints, status.PackageEndpoints = endpointList(task), endpointList(pkg)
}

// endpointList is urls sorted, distinct and cut at MaxEndpointsListed; nil
// for none.
func endpointList(urls []string) []string {
	if len(urls) == 0 {
		return nil
	}
	slices.Sort(urls)
	urls = slices.Compact(urls)
	return urls[:min(len(urls), siteopsv1.MaxEndpointsListed)]
}

// maxNamesInMessage bounds the server names a condition message lists.
const maxNamesInMessage = 10

// maxMessageLength bounds a condition message that carries an error, well
// under the API's 32768.
const maxMessageLength = 2048

// siteReadyCondition is True when a SiteServer serving the site has an
// available task service of its own (a disabled one does not count), by the
// serving rules the locator uses too; False when the site's Services could
// not be applied, naming the object and the API server's answer.
func siteReadyCondition(scope *siteScope) metav1.Condition {
	cond := metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionFalse,
		ObservedGeneration: scope.site.Generation}
	if err := scope.servicesErr; err != nil {
		cond.Reason, cond.Message = failureReason(err), boundedMessage(err.Error())
		return cond
	}
	if len(scope.servers) == 0 {
		cond.Reason = siteopsv1.ReasonNoSiteServer
		cond.Message = "No SiteServer serves this site: its agents are served by the unassigned SiteServers" +
			" (create a SiteServer that lists this site in spec.sites)"
		return cond
	}
	ready := readyServers(scope.site.Name, scope.servers)
	if len(ready) == 0 {
		cond.Reason = siteopsv1.ReasonServicesNotReady
		cond.Message = "No task service of the SiteServers serving this site is ready: its agents are served by the unassigned SiteServers"
		return cond
	}
	cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonSiteReady
	cond.Message = "Task service available on SiteServer " + nameList(topology.ServerNames(ready))
	return cond
}

// setSiteProgress sets the kstatus conditions: Stalled when the site's
// Services were refused or another controller's object is in their way,
// Reconciling while a failed apply is retried or the servers roll out, and
// converged otherwise: a site no SiteServer serves is served by the
// unassigned ones by design, so it is not waiting for anything.
func setSiteProgress(conds *[]metav1.Condition, scope *siteScope) {
	generation := scope.site.Generation
	switch err := scope.servicesErr; {
	case err != nil && stalledBy(err):
		setStalled(conds, generation, failureReason(err), boundedMessage(err.Error()))
	case err != nil:
		setReconciling(conds, generation, siteopsv1.ReasonApplyFailed, boundedMessage("Retrying: "+err.Error()))
	case len(readyServers(scope.site.Name, scope.servers)) == 0 && slices.ContainsFunc(scope.servers, runsTasks):
		// Only a server whose task service is enabled can become ready:
		// one with it disabled leaves nothing to wait for.
		setReconciling(conds, generation, siteopsv1.ReasonServicesNotReady,
			"Waiting for a task service of SiteServer "+nameList(serverNames(scope.servers))+" to become available")
	default:
		setConverged(conds)
	}
}

// runsTasks tells whether a SiteServer's task service is enabled.
func runsTasks(ss siteopsv1.SiteServer) bool {
	return ss.Spec.Services.Task.Enabled == nil || *ss.Spec.Services.Task.Enabled
}

// failureReason is the condition reason for an error of the Services phase.
func failureReason(err error) string {
	if errors.Is(err, ErrNotOwned) {
		return siteopsv1.ReasonNotOwned
	}
	return siteopsv1.ReasonApplyFailed
}

// stalledBy tells the errors that retrying cannot fix: an object another
// controller owns, and a request the API server refused as such.
func stalledBy(err error) bool {
	return errors.Is(err, ErrNotOwned) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// readyServers are the servers whose task service serves the site's agents.
func readyServers(site string, servers []siteopsv1.SiteServer) []topology.Server {
	var ready []topology.Server
	for _, s := range topology.OfSite(site, servingServers(servers)) {
		if s.TaskReady {
			ready = append(ready, s)
		}
	}
	return ready
}

// servingServers is what the serving rules need to know of SiteServers.
func servingServers(servers []siteopsv1.SiteServer) []topology.Server {
	out := make([]topology.Server, 0, len(servers))
	for i := range servers {
		out = append(out, topology.Server{Name: servers[i].Name, Sites: servers[i].Spec.Sites,
			TaskReady: servers[i].ServesTasks()})
	}
	return out
}

func serverNames(servers []siteopsv1.SiteServer) []string {
	names := make([]string, 0, len(servers))
	for _, ss := range servers {
		names = append(names, ss.Name)
	}
	return names
}

// nameList joins names for a message, the first maxNamesInMessage of them.
func nameList(names []string) string {
	if len(names) <= maxNamesInMessage {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(names[:maxNamesInMessage], ", "), len(names)-maxNamesInMessage)
}

// boundedMessage cuts message to maxMessageLength bytes on a rune boundary.
func boundedMessage(message string) string {
	return cutMessage(message, maxMessageLength)
}

// cutMessage cuts message to limit bytes on a rune boundary, ending with an
// ellipsis when it cut.
func cutMessage(message string, limit int) string {
	if len(message) <= limit {
		return message
	}
	cut := limit - len("…")
	for cut > 0 && !utf8.RuneStart(message[cut]) {
		cut--
	}
	return message[:cut] + "…"
}

// maxEventNoteLength is the longest note the Events API accepts
// (events.k8s.io/v1 Event.note: 1 kB).
const maxEventNoteLength = 1024

// eventNote is message cut to what an Event's note may hold.
func eventNote(message string) string {
	return cutMessage(message, maxEventNoteLength)
}

// Actions of the Events about the topology kinds (events.k8s.io/v1
// Event.action: what the controller did or saw happen).
const (
	// eventActionServe: whether a Site's own servers serve its agents
	// changed.
	eventActionServe = "Serve"
	// eventActionRun: the state of a SiteServer's services changed.
	eventActionRun = "Run"
	// eventActionResolve: a Subnet's place in address resolution changed.
	eventActionResolve = "Resolve"
	// eventActionCheckIn: a Computer's agent went offline or came back.
	eventActionCheckIn = "CheckIn"
	// eventActionImport: a DirectoryImport's sync failed or succeeded.
	eventActionImport = "Import"
)

// readyCondition is a copy of the Ready condition of conds, nil when there
// is none.
func readyCondition(conds []metav1.Condition) *metav1.Condition {
	if c := meta.FindStatusCondition(conds, siteopsv1.ConditionReady); c != nil {
		cp := *c
		return &cp
	}
	return nil
}

// lostReadiness tells whether Ready went from True to False: always worth a
// Warning.
func lostReadiness(before, after *metav1.Condition) bool {
	return before != nil && before.Status == metav1.ConditionTrue && after.Status != metav1.ConditionTrue
}

// recordReadyChange records an Event when obj's Ready condition changed
// reason from before to after (nil when there was none): Warning when
// warning says so, Normal otherwise, with the condition's reason and
// message. A first verdict is recorded only when it is True or a warning: a
// new object waiting for its prerequisites is no news. A nil recorder
// records nothing. Only a change is recorded, never a reconcile: the
// callers compare statuses read before and written after one patch.
func recordReadyChange(rec events.EventRecorder, obj runtime.Object, before, after *metav1.Condition, action string,
	warning func(before, after *metav1.Condition) bool) {
	if rec == nil || after == nil || (before != nil && before.Reason == after.Reason) {
		return
	}
	eventType := corev1.EventTypeNormal
	if warning(before, after) {
		eventType = corev1.EventTypeWarning
	}
	if before == nil && after.Status != metav1.ConditionTrue && eventType == corev1.EventTypeNormal {
		return
	}
	rec.Eventf(obj, nil, eventType, after.Reason, action, "%s", eventNote(after.Message))
}
