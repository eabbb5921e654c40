package controllers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

// siteServerStatus is the status that reports what a reconcile found. It is
// pure: everything comes from the scope, filled by the phases. One setter
// per condition, in the order they depend on each other.
//
// status.observedGeneration moves to the SiteServer's generation when the
// reconcile reached a verdict on it: the spec was applied, or it cannot be
// (Stalled). A transient failure leaves it where it was, so kstatus keeps
// reading the object as in progress while the controller retries.
func siteServerStatus(s *siteServerScope, wc WorkloadConfig) *siteopsv1.SiteServerStatus {
	status := s.ss.Status.DeepCopy()
	gen := s.ss.Generation
	status.Task = taskServiceStatus(s, wc)
	status.Package = packageServiceStatus(s, wc)
	if s.deployment != nil && enabled(s.ss.Spec.Services.Task.Enabled) {
		status.Task.Advertised = s.taskAdvertised
	}
	if s.statefulSet != nil && enabled(s.ss.Spec.Services.Package.Enabled) {
		status.Package.Advertised = s.packageAdvertised
	}
	setPrerequisitesMet(status, s, gen)
	setTaskServiceReady(status, s, gen)
	setPackageServiceReady(status, s, gen)
	setSiteServerReady(status, s, gen)
	if s.applyErr == nil || applyErrorStalls(s.applyErr) {
		status.ObservedGeneration = gen
	}
	return status
}

// siteServerReadFailedStatus is the status after a read phase failed with
// err. What the phases found is incomplete, so nothing is computed from
// it: the services' statuses and conditions stay as last reported, only
// Ready and the kstatus conditions say that the state could not be read.
// status.observedGeneration does not move (no verdict was reached), and
// kstatus reads the SiteServer as in progress while the read is retried.
func siteServerReadFailedStatus(ss *siteopsv1.SiteServer, err error) *siteopsv1.SiteServerStatus {
	status := ss.Status.DeepCopy()
	gen := ss.Generation
	message := boundedMessage(err.Error())
	setReconciling(&status.Conditions, gen, siteopsv1.ReasonReadFailed, "Retrying: "+message)
	meta.SetStatusCondition(&status.Conditions, metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionFalse,
		Reason: siteopsv1.ReasonReadFailed, Message: message, ObservedGeneration: gen})
	return status
}

// advertise computes the URLs each service advertises, from what
// readExposure found.
func (s *siteServerScope) advertise(wc WorkloadConfig) {
	s.taskAdvertised = advertisedURLs(s.exposureOf(wc, s.taskService, s.taskPods))
	s.packageAdvertised = advertisedURLs(s.exposureOf(wc, s.packageService, s.packagePods))
}

// exposureOf is what decides the advertised URLs of one service.
func (s *siteServerScope) exposureOf(wc WorkloadConfig, svc *corev1.Service, pods []corev1.Pod) serviceExposure {
	return serviceExposure{exposure: s.ss.Spec.Exposure, scheme: wc.scheme(), port: config.DefaultPort,
		targetPort: config.DefaultPort, service: svc, pods: pods, nodes: s.nodes}
}

// applyErrorStalls reports whether err is one that retrying cannot fix: an
// object in the way, or a spec the API server refuses.
func applyErrorStalls(err error) bool {
	return errors.Is(err, ErrNotOwned) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || apierrors.IsForbidden(err)
}

// taskServiceStatus reports the task-service Deployment.
func taskServiceStatus(s *siteServerScope, wc WorkloadConfig) siteopsv1.ServiceStatus {
	if !enabled(s.ss.Spec.Services.Task.Enabled) {
		return siteopsv1.ServiceStatus{Ready: true}
	}
	dep := s.deployment
	if dep == nil {
		return siteopsv1.ServiceStatus{}
	}
	want := taskReplicas(s.ss)
	current := dep.Status.ObservedGeneration >= dep.Generation && dep.Status.UpdatedReplicas >= want
	return siteopsv1.ServiceStatus{
		Ready:         current && dep.Status.AvailableReplicas >= want,
		Replicas:      want,
		ReadyReplicas: dep.Status.AvailableReplicas,
		Endpoint:      serviceURL(wc.scheme(), taskName(s.ss), wc.Namespace, config.DefaultPort),
	}
}

// packageServiceStatus reports the package-service StatefulSet.
func packageServiceStatus(s *siteServerScope, wc WorkloadConfig) siteopsv1.ServiceStatus {
	if !enabled(s.ss.Spec.Services.Package.Enabled) {
		return siteopsv1.ServiceStatus{Ready: true}
	}
	sts := s.statefulSet
	if sts == nil {
		return siteopsv1.ServiceStatus{}
	}
	current := sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdatedReplicas >= 1 &&
		sts.Status.CurrentRevision == sts.Status.UpdateRevision
	return siteopsv1.ServiceStatus{
		Ready:         current && sts.Status.AvailableReplicas >= 1,
		Replicas:      1,
		ReadyReplicas: sts.Status.AvailableReplicas,
		Endpoint:      serviceURL(wc.scheme(), packageName(s.ss), wc.Namespace, config.DefaultPort),
	}
}

// setPrerequisitesMet: True when the sites, a node and the storage class
// exist; otherwise False with the first missing one's reason and every
// problem in the message.
func setPrerequisitesMet(status *siteopsv1.SiteServerStatus, s *siteServerScope, gen int64) {
	reason, problems := prerequisiteProblems(s)
	cond := metav1.Condition{Type: siteopsv1.ConditionPrerequisitesMet, Status: metav1.ConditionTrue,
		Reason: siteopsv1.ReasonPrerequisitesMet, Message: "Sites, nodes and storage are in place", ObservedGeneration: gen}
	if len(problems) > 0 {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, reason, strings.Join(problems, "; ")
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

// prerequisiteProblems returns the reason of the first missing prerequisite
// and a sentence for each, none when every prerequisite holds.
func prerequisiteProblems(s *siteServerScope) (string, []string) {
	var reasons, problems []string
	if len(s.missingSites) > 0 {
		reasons = append(reasons, siteopsv1.ReasonSiteNotFound)
		problems = append(problems, fmt.Sprintf("Site %s does not exist", quoteJoin(s.missingSites)))
	}
	if s.noMatchingNode {
		reasons = append(reasons, siteopsv1.ReasonNoMatchingNode)
		problems = append(problems, fmt.Sprintf("no node matches spec.nodeSelector %v", s.ss.Spec.NodeLabels()))
	}
	if s.noStorageClass != "" {
		reasons = append(reasons, siteopsv1.ReasonStorageClassNotFound)
		problems = append(problems, s.noStorageClass)
	}
	if len(reasons) == 0 {
		return "", nil
	}
	return reasons[0], problems
}

// setTaskServiceReady reports the task service.
func setTaskServiceReady(status *siteopsv1.SiteServerStatus, s *siteServerScope, gen int64) {
	meta.SetStatusCondition(&status.Conditions, serviceCondition(siteopsv1.ConditionTaskServiceReady, gen,
		enabled(s.ss.Spec.Services.Task.Enabled), s.taskBlocked(), s.deployment != nil, status.Task))
}

// setPackageServiceReady reports the package service; a storage change that
// cannot be applied makes it False whatever the pods do.
func setPackageServiceReady(status *siteopsv1.SiteServerStatus, s *siteServerScope, gen int64) {
	cond := serviceCondition(siteopsv1.ConditionPackageServiceReady, gen,
		enabled(s.ss.Spec.Services.Package.Enabled), s.packageBlocked(), s.statefulSet != nil, status.Package)
	if s.storageChange != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, siteopsv1.ReasonStorageChangePending, s.storageChange
	}
	meta.SetStatusCondition(&status.Conditions, cond)
}

// serviceCondition reports one service from its status.
func serviceCondition(condType string, gen int64, isEnabled, blocked, exists bool, svc siteopsv1.ServiceStatus) metav1.Condition {
	cond := metav1.Condition{Type: condType, ObservedGeneration: gen}
	switch {
	case !isEnabled:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, siteopsv1.ReasonDisabled, "The service is disabled in the spec"
	case !exists && blocked:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonPrerequisitesNotMet
		cond.Message = "The service is not created until PrerequisitesMet is True"
	case !exists:
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, siteopsv1.ReasonProgressing, "The workload is being created"
	case svc.Ready:
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonAvailable
		cond.Message = fmt.Sprintf("%d of %d pods available", svc.ReadyReplicas, svc.Replicas)
	default:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonProgressing
		cond.Message = fmt.Sprintf("%d of %d pods available", svc.ReadyReplicas, svc.Replicas)
	}
	return cond
}

// setSiteServerReady sets Ready and the kstatus conditions, by the first
// of: a failed apply, a storage change pending, a missing prerequisite,
// services not yet available. Each of the first three stalls the
// SiteServer (it cannot progress until something changes); the last one
// is Reconciling.
func setSiteServerReady(status *siteopsv1.SiteServerStatus, s *siteServerScope, gen int64) {
	ready := metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionFalse, ObservedGeneration: gen}
	task := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionTaskServiceReady)
	pkg := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionPackageServiceReady)
	servicesUp := task.Status == metav1.ConditionTrue && pkg.Status == metav1.ConditionTrue
	preReason, problems := prerequisiteProblems(s)

	switch {
	case s.applyErr != nil:
		ready.Reason = siteopsv1.ReasonApplyFailed
		if errors.Is(s.applyErr, ErrNotOwned) {
			ready.Reason = siteopsv1.ReasonNotOwned
		}
		ready.Message = boundedMessage(s.applyErr.Error())
		if applyErrorStalls(s.applyErr) {
			setStalled(&status.Conditions, gen, ready.Reason, ready.Message)
		} else {
			setReconciling(&status.Conditions, gen, ready.Reason, "Retrying: "+ready.Message)
		}
	case s.storageChange != "":
		ready.Reason, ready.Message = siteopsv1.ReasonStorageChangePending, s.storageChange
		setStalled(&status.Conditions, gen, ready.Reason, ready.Message)
	case len(problems) > 0:
		ready.Reason, ready.Message = preReason, "PrerequisitesMet: "+strings.Join(problems, "; ")
		if servicesUp {
			ready.Reason = siteopsv1.ReasonDegraded
			ready.Message = "The services run and are available, but " + strings.Join(problems, "; ")
		}
		setStalled(&status.Conditions, gen, preReason, strings.Join(problems, "; "))
	case !servicesUp:
		for _, c := range []*metav1.Condition{task, pkg} {
			if c.Status != metav1.ConditionTrue {
				ready.Reason, ready.Message = c.Reason, c.Type+": "+c.Message
				break
			}
		}
		setReconciling(&status.Conditions, gen, siteopsv1.ReasonProgressing, ready.Message)
	default:
		ready.Status, ready.Reason, ready.Message = metav1.ConditionTrue, siteopsv1.ReasonServicesReady, "Every enabled service is available"
		setConverged(&status.Conditions)
	}
	meta.SetStatusCondition(&status.Conditions, ready)
}

func quoteJoin(names []string) string {
	quoted := make([]string, len(names))
	for i, n := range slices.Sorted(slices.Values(names)) {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(quoted, ", ")
}
