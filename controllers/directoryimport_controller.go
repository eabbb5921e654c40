package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/directory"
)

// DirectoryReader reads a directory; directory.Read in the manager.
type DirectoryReader func(ctx context.Context, cfg directory.Config) (directory.Directory, error)

// DirectoryImportReconciler imports Sites and Subnets from Active Directory
// (internal/directory): it reads the whole directory, plans with
// directory.Make and applies the plan; a failed read changes nothing.
type DirectoryImportReconciler struct {
	client.Client
	// Namespace holds the bind Secrets: the operator's own (the manager
	// reads Secrets nowhere else).
	Namespace string
	// Read reads the directory.
	Read DirectoryReader
	// ReadTimeout bounds the connection and each request to the directory;
	// 0 means 30 s.
	ReadTimeout time.Duration
	// now is the clock; nil means time.Now.
	now func() time.Time
	// Events records the changes of Ready's reason (a sync failing,
	// succeeding again); SetupWithManager defaults it to the manager's
	// recorder.
	Events events.EventRecorder
}

// Keys of a DirectoryImport's bind Secret.
const (
	bindUsernameKey = "username"
	bindPasswordKey = "password"
)

// importWorkers is how many Sites and Subnets an import writes at once.
const importWorkers = 16

// SetupWithManager registers the controller.
func (r *DirectoryImportReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Events == nil {
		r.Events = mgr.GetEventRecorder(EventReportingController)
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("directoryimport").
		For(&siteopsv1.DirectoryImport{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 2}).
		Complete(r)
}

func (r *DirectoryImportReconciler) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// Reconcile runs one import and comes back after spec.interval.
func (r *DirectoryImportReconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	di := &siteopsv1.DirectoryImport{}
	if err := r.Get(ctx, req.NamespacedName, di); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if di.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	log := logf.FromContext(ctx).WithValues("directoryImport", klog.KObj(di))
	ctx = logf.IntoContext(ctx, log)
	before := di.DeepCopy()
	status := di.Status.DeepCopy()
	defer func() {
		di.Status = *status
		if err := r.Status().Patch(ctx, di, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
			retErr = errors.Join(retErr, fmt.Errorf("patching the status of DirectoryImport %s: %w", di.Name, err))
			return
		}
		recordReadyChange(r.Events, di, readyCondition(before.Status.Conditions), readyCondition(di.Status.Conditions),
			eventActionImport, importReadyWarning)
	}()
	gen := di.Generation
	interval := di.Spec.Interval.Duration
	if interval <= 0 {
		interval = time.Hour
	}

	if di.Spec.Suspend {
		setImportReady(status, gen, metav1.ConditionFalse, siteopsv1.ReasonSuspended, "spec.suspend is true: no import runs; what was imported stays")
		setConverged(&status.Conditions)
		status.ObservedGeneration = gen
		return ctrl.Result{}, nil
	}
	cfg, err := r.directoryConfig(ctx, di)
	if err != nil {
		setImportReady(status, gen, metav1.ConditionFalse, siteopsv1.ReasonBindFailed, err.Error())
		setStalled(&status.Conditions, gen, siteopsv1.ReasonBindFailed, err.Error())
		status.ObservedGeneration = gen
		// The Secret may be created later: look again in a minute.
		return ctrl.Result{RequeueAfter: min(interval, time.Minute)}, nil
	}
	readCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	dir, err := r.Read(readCtx, cfg)
	cancel()
	if err != nil {
		reason := siteopsv1.ReasonSearchFailed
		switch {
		case errors.Is(err, directory.ErrBind):
			reason = siteopsv1.ReasonBindFailed
		case errors.Is(err, directory.ErrUnreachable):
			reason = siteopsv1.ReasonDirectoryUnreachable
		}
		msg := boundedMessage("Nothing imported was changed: " + err.Error())
		setImportReady(status, gen, metav1.ConditionFalse, reason, msg)
		if reason == siteopsv1.ReasonBindFailed {
			setStalled(&status.Conditions, gen, reason, msg)
			status.ObservedGeneration = gen
			return ctrl.Result{RequeueAfter: interval}, nil
		}
		setReconciling(&status.Conditions, gen, reason, msg)
		log.Info("Reading the directory failed; retrying", "error", err)
		// Retried with the controller's back-off.
		return ctrl.Result{}, fmt.Errorf("importing from %s: %w", di.Spec.URL, err)
	}

	cluster, err := r.clusterView(ctx, di.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	plan := directory.Make(di.Name, dir, cluster, int(di.Spec.MaxDeletePercent))
	applyErr := r.apply(ctx, di.Name, plan)

	now := metav1.NewTime(r.clock()).Rfc3339Copy()
	status.Sites, status.Subnets = int32(plan.Sites), int32(plan.Subnets)
	status.SkippedCount = int32(len(plan.Skipped))
	status.Skipped = nil
	for _, s := range plan.Skipped[:min(len(plan.Skipped), siteopsv1.MaxSkippedListed)] {
		status.Skipped = append(status.Skipped, siteopsv1.SkippedEntry{DN: boundedString(s.DN, 1024), Reason: boundedString(s.Reason, 1024)})
	}
	switch {
	case applyErr != nil:
		msg := boundedMessage("Writing the import failed: " + applyErr.Error())
		setImportReady(status, gen, metav1.ConditionFalse, siteopsv1.ReasonApplyFailed, msg)
		setReconciling(&status.Conditions, gen, siteopsv1.ReasonApplyFailed, msg)
		return ctrl.Result{}, applyErr
	case plan.DeletionsHeld:
		msg := fmt.Sprintf("The directory no longer lists %d Sites and %d Subnets this import created, more than spec.maxDeletePercent (%d%%) of what it manages: nothing was deleted. If the directory is right, raise spec.maxDeletePercent; the rest of the import was applied",
			len(plan.DeleteSites), len(plan.DeleteSubnets), di.Spec.MaxDeletePercent)
		setImportReady(status, gen, metav1.ConditionFalse, siteopsv1.ReasonDeletionsHeld, msg)
		setStalled(&status.Conditions, gen, siteopsv1.ReasonDeletionsHeld, msg)
	default:
		msg := fmt.Sprintf("Imported %d sites and %d subnets", plan.Sites, plan.Subnets)
		if len(plan.Skipped) > 0 {
			msg += fmt.Sprintf("; %d entries skipped (status.skipped)", len(plan.Skipped))
		}
		setImportReady(status, gen, metav1.ConditionTrue, siteopsv1.ReasonSynced, msg)
		setConverged(&status.Conditions)
	}
	status.LastSyncTime = &now
	status.ObservedGeneration = gen
	log.Info("Imported the directory", "sites", plan.Sites, "subnets", plan.Subnets, "skipped", len(plan.Skipped),
		"created", len(plan.CreateSites)+len(plan.CreateSubnets), "updated", len(plan.UpdateSites)+len(plan.UpdateSubnets),
		"deleted", len(plan.DeleteSites)+len(plan.DeleteSubnets), "deletionsHeld", plan.DeletionsHeld)
	return ctrl.Result{RequeueAfter: interval}, nil
}

// importReadyWarning: a sync that failed or held deletions is a Warning; a
// sync that succeeded (first, or after failing) and a suspension are
// Normal.
func importReadyWarning(_, after *metav1.Condition) bool {
	switch after.Reason {
	case siteopsv1.ReasonBindFailed, siteopsv1.ReasonSearchFailed, siteopsv1.ReasonDirectoryUnreachable,
		siteopsv1.ReasonApplyFailed, siteopsv1.ReasonDeletionsHeld:
		return true
	}
	return false
}

func setImportReady(status *siteopsv1.DirectoryImportStatus, gen int64, s metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: siteopsv1.ConditionReady, Status: s,
		Reason: reason, Message: boundedMessage(msg), ObservedGeneration: gen})
}

// boundedString cuts s to n bytes.
func boundedString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// directoryConfig reads the bind Secret and builds the reader's
// configuration.
func (r *DirectoryImportReconciler) directoryConfig(ctx context.Context, di *siteopsv1.DirectoryImport) (directory.Config, error) {
	var secret corev1.Secret
	key := types.NamespacedName{Namespace: r.Namespace, Name: di.Spec.BindSecretRef.Name}
	if err := r.Get(ctx, key, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			return directory.Config{}, fmt.Errorf("spec.bindSecretRef: no Secret %s in the operator's namespace", key)
		}
		return directory.Config{}, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	user, password := string(secret.Data[bindUsernameKey]), string(secret.Data[bindPasswordKey])
	if user == "" || password == "" {
		return directory.Config{}, fmt.Errorf("spec.bindSecretRef: Secret %s must hold %q and %q", key, bindUsernameKey, bindPasswordKey)
	}
	return directory.Config{URL: di.Spec.URL, BaseDN: di.Spec.BaseDN, Username: user, Password: password,
		CABundle: []byte(di.Spec.TLS.CABundle), ServerName: di.Spec.TLS.ServerName, PageSize: uint32(max(di.Spec.PageSize, 10)),
		Timeout: r.ReadTimeout}, nil
}

// clusterView reads what a plan depends on: every Site, which of them a
// SiteServer lists, and the Subnets of this import.
func (r *DirectoryImportReconciler) clusterView(ctx context.Context, importName string) (directory.Cluster, error) {
	var sites siteopsv1.SiteList
	if err := r.List(ctx, &sites); err != nil {
		return directory.Cluster{}, fmt.Errorf("listing Sites: %w", err)
	}
	var servers siteopsv1.SiteServerList
	if err := r.List(ctx, &servers); err != nil {
		return directory.Cluster{}, fmt.Errorf("listing SiteServers: %w", err)
	}
	listed := map[string]bool{}
	for _, ss := range servers.Items {
		for _, s := range ss.Spec.Sites {
			listed[s] = true
		}
	}
	c := directory.Cluster{Sites: map[string]directory.ExistingSite{}, Subnets: map[string]directory.ExistingSubnet{}}
	for _, s := range sites.Items {
		c.Sites[s.Name] = directory.ExistingSite{
			Import:         s.Labels[siteopsv1.LabelDirectoryImport],
			Adopted:        s.Annotations[siteopsv1.AnnotationAdopted] != "",
			DisplayName:    s.Spec.DisplayName,
			Description:    s.Spec.Description,
			Location:       s.Spec.Location,
			ListedByServer: listed[s.Name],
		}
	}
	var subnets siteopsv1.SubnetList
	if err := r.List(ctx, &subnets, client.MatchingLabels{siteopsv1.LabelDirectoryImport: importName}); err != nil {
		return directory.Cluster{}, fmt.Errorf("listing the imported Subnets: %w", err)
	}
	for _, sn := range subnets.Items {
		c.Subnets[sn.Name] = directory.ExistingSubnet{CIDR: sn.Spec.CIDR, Site: sn.Spec.Site,
			Description: sn.Spec.Description, Location: sn.Spec.Location}
	}
	return c, nil
}

// apply writes the plan, importWorkers writes at a time; the deletions only
// when they are not held. It returns every error, joined.
func (r *DirectoryImportReconciler) apply(ctx context.Context, importName string, plan directory.Plan) error {
	var writes []func() error
	for _, s := range plan.CreateSites {
		writes = append(writes, func() error { return r.createSite(ctx, importName, s) })
	}
	for _, s := range plan.UpdateSites {
		writes = append(writes, func() error { return r.updateSite(ctx, importName, s) })
	}
	for _, s := range plan.CreateSubnets {
		writes = append(writes, func() error { return r.createSubnet(ctx, importName, s) })
	}
	for _, s := range plan.UpdateSubnets {
		writes = append(writes, func() error { return r.updateSubnet(ctx, s) })
	}
	for _, name := range plan.ReleaseSites {
		writes = append(writes, func() error { return r.releaseSite(ctx, importName, name) })
	}
	if !plan.DeletionsHeld {
		for _, name := range plan.DeleteSubnets {
			writes = append(writes, func() error {
				return client.IgnoreNotFound(r.Delete(ctx, &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name}}))
			})
		}
		for _, name := range plan.DeleteSites {
			writes = append(writes, func() error { return r.deleteSite(ctx, importName, name) })
		}
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	work := make(chan func() error)
	for range min(importWorkers, len(writes)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for w := range work {
				if err := w(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for _, w := range writes {
		work <- w
	}
	close(work)
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return errors.Join(errs...)
}

func (r *DirectoryImportReconciler) createSite(ctx context.Context, importName string, s directory.DesiredSite) error {
	site := &siteopsv1.Site{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: map[string]string{siteopsv1.LabelDirectoryImport: importName}},
		Spec:       siteopsv1.SiteSpec{DisplayName: s.DisplayName, Description: s.Description, Location: s.Location},
	}
	if err := r.Create(ctx, site); err != nil {
		return fmt.Errorf("creating Site %s: %w", s.Name, err)
	}
	return nil
}

// updateSite writes the directory's fields, and takes over a manual Site.
func (r *DirectoryImportReconciler) updateSite(ctx context.Context, importName string, s directory.DesiredSite) error {
	site := &siteopsv1.Site{}
	if err := r.Get(ctx, types.NamespacedName{Name: s.Name}, site); err != nil {
		return fmt.Errorf("reading Site %s: %w", s.Name, err)
	}
	patch := client.MergeFrom(site.DeepCopy())
	if s.Adopt {
		if owner := site.Labels[siteopsv1.LabelDirectoryImport]; owner != "" && owner != importName {
			return fmt.Errorf("site %s is managed by DirectoryImport %s", s.Name, owner)
		}
		metav1.SetMetaDataLabel(&site.ObjectMeta, siteopsv1.LabelDirectoryImport, importName)
		metav1.SetMetaDataAnnotation(&site.ObjectMeta, siteopsv1.AnnotationAdopted, importName)
	}
	site.Spec.DisplayName, site.Spec.Description, site.Spec.Location = s.DisplayName, s.Description, s.Location
	if err := r.Patch(ctx, site, patch); err != nil {
		return fmt.Errorf("updating Site %s: %w", s.Name, err)
	}
	return nil
}

// releaseSite gives an adopted Site back to its owners.
func (r *DirectoryImportReconciler) releaseSite(ctx context.Context, importName, name string) error {
	site := &siteopsv1.Site{}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, site); err != nil {
		return client.IgnoreNotFound(err)
	}
	if site.Labels[siteopsv1.LabelDirectoryImport] != importName {
		return nil
	}
	patch := client.MergeFrom(site.DeepCopy())
	delete(site.Labels, siteopsv1.LabelDirectoryImport)
	delete(site.Annotations, siteopsv1.AnnotationAdopted)
	if err := r.Patch(ctx, site, patch); err != nil {
		return fmt.Errorf("releasing Site %s: %w", name, err)
	}
	return nil
}

// deleteSite deletes a Site the import created, if it still is one.
func (r *DirectoryImportReconciler) deleteSite(ctx context.Context, importName, name string) error {
	site := &siteopsv1.Site{}
	if err := r.Get(ctx, types.NamespacedName{Name: name}, site); err != nil {
		return client.IgnoreNotFound(err)
	}
	if site.Labels[siteopsv1.LabelDirectoryImport] != importName || site.Annotations[siteopsv1.AnnotationAdopted] != "" {
		return nil
	}
	// Only the version read: a Site changed since is judged again next
	// time.
	err := r.Delete(ctx, site, client.Preconditions{UID: &site.UID, ResourceVersion: &site.ResourceVersion})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting Site %s: %w", name, err)
	}
	return nil
}

func (r *DirectoryImportReconciler) createSubnet(ctx context.Context, importName string, s directory.DesiredSubnet) error {
	sn := &siteopsv1.Subnet{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: map[string]string{siteopsv1.LabelDirectoryImport: importName}},
		Spec: siteopsv1.SubnetSpec{CIDR: s.CIDR, Site: s.Site, Source: siteopsv1.SourceActiveDirectory,
			Description: s.Description, Location: s.Location},
	}
	if err := r.Create(ctx, sn); err != nil {
		return fmt.Errorf("creating Subnet %s: %w", s.Name, err)
	}
	return nil
}

func (r *DirectoryImportReconciler) updateSubnet(ctx context.Context, s directory.DesiredSubnet) error {
	sn := &siteopsv1.Subnet{}
	if err := r.Get(ctx, types.NamespacedName{Name: s.Name}, sn); err != nil {
		return fmt.Errorf("reading Subnet %s: %w", s.Name, err)
	}
	patch := client.MergeFrom(sn.DeepCopy())
	sn.Spec.CIDR, sn.Spec.Site, sn.Spec.Source = s.CIDR, s.Site, siteopsv1.SourceActiveDirectory
	sn.Spec.Description, sn.Spec.Location = s.Description, s.Location
	if err := r.Patch(ctx, sn, patch); err != nil {
		return fmt.Errorf("updating Subnet %s: %w", s.Name, err)
	}
	return nil
}
