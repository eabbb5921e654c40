package controllers

import (
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// The status of a SiteServer is a pure function of what a reconcile found;
// each case is one situation a user meets.
func TestSiteServerStatus(t *testing.T) {
	available := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: 3},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 3, UpdatedReplicas: 1, AvailableReplicas: 1},
	}
	rolling := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: 3},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 3, UpdatedReplicas: 1},
	}
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Generation: 2},
		Status: appsv1.StatefulSetStatus{ObservedGeneration: 2, UpdatedReplicas: 1, AvailableReplicas: 1,
			CurrentRevision: "r1", UpdateRevision: "r1"},
	}
	notOwned := &OwnershipError{Object: "*v1.Service ns/x-task", Expected: "SiteServer x", Actual: "Site y"}
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "x-task", nil)
	timeout := apierrors.NewServerTimeout(schema.GroupResource{Group: "apps", Resource: "deployments"}, "patch", 1)

	type want struct {
		ready, reason, stalled, reconciling string // stalled/reconciling: reason, "" when absent
		task, pkg                           string // status/reason
		observed                            int64
	}
	for _, tc := range []struct {
		name string
		s    siteServerScope
		want want
	}{
		{"both services available", siteServerScope{deployment: available, statefulSet: sts},
			want{"True", "ServicesReady", "", "", "True/Available", "True/Available", 7}},
		{"task rolling out", siteServerScope{deployment: rolling, statefulSet: sts},
			want{"False", "Progressing", "", "Progressing", "False/Progressing", "True/Available", 7}},
		{"workloads not created yet", siteServerScope{},
			want{"False", "Progressing", "", "Progressing", "False/Progressing", "False/Progressing", 7}},
		{"a missing site blocks creation", siteServerScope{missingSites: []string{"lyno"}},
			want{"False", "SiteNotFound", "SiteNotFound", "", "False/PrerequisitesNotMet", "False/PrerequisitesNotMet", 7}},
		{"a site deleted under running services: degraded, not torn down",
			siteServerScope{missingSites: []string{"gone"}, deployment: available, statefulSet: sts},
			want{"False", "Degraded", "SiteNotFound", "", "True/Available", "True/Available", 7}},
		{"a node label removed under running services", siteServerScope{noMatchingNode: true, deployment: available, statefulSet: sts},
			want{"False", "Degraded", "NoMatchingNode", "", "True/Available", "True/Available", 7}},
		{"storage class missing blocks only the package service", siteServerScope{noStorageClass: `StorageClass "x" does not exist`, deployment: available},
			want{"False", "StorageClassNotFound", "StorageClassNotFound", "", "True/Available", "False/PrerequisitesNotMet", 7}},
		{"storage change pending", siteServerScope{deployment: available, statefulSet: sts, storageChange: "delete it"},
			want{"False", "StorageChangePending", "StorageChangePending", "", "True/Available", "False/StorageChangePending", 7}},
		{"a name taken by another owner", siteServerScope{deployment: available, statefulSet: sts, applyErr: notOwned},
			want{"False", "NotOwned", "NotOwned", "", "True/Available", "True/Available", 7}},
		{"the API server refuses the spec", siteServerScope{applyErr: fmt.Errorf("applying: %w", invalid)},
			want{"False", "ApplyFailed", "ApplyFailed", "", "False/Progressing", "False/Progressing", 7}},
		{"a transient failure keeps observedGeneration", siteServerScope{deployment: available, statefulSet: sts, applyErr: timeout},
			want{"False", "ApplyFailed", "", "ApplyFailed", "True/Available", "True/Available", 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.ss = &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "x", Generation: 7},
				Status: siteopsv1.SiteServerStatus{ObservedGeneration: 5}}
			s.ss.Spec.Services.Package.Enabled = ptr.To(true)
			got := siteServerStatus(&s, WorkloadConfig{Namespace: "ns"})
			cond := func(typ string) *metav1.Condition { return meta.FindStatusCondition(got.Conditions, typ) }
			statusReason := func(typ string) string {
				c := cond(typ)
				if c == nil {
					return ""
				}
				return string(c.Status) + "/" + c.Reason
			}
			reasonIfTrue := func(typ string) string {
				if c := cond(typ); c != nil && c.Status == metav1.ConditionTrue {
					return c.Reason
				}
				return ""
			}
			ready := cond(siteopsv1.ConditionReady)
			if string(ready.Status) != tc.want.ready || ready.Reason != tc.want.reason {
				t.Errorf("Ready = %s/%s (%s), want %s/%s", ready.Status, ready.Reason, ready.Message, tc.want.ready, tc.want.reason)
			}
			if got := reasonIfTrue(siteopsv1.ConditionStalled); got != tc.want.stalled {
				t.Errorf("Stalled reason = %q, want %q", got, tc.want.stalled)
			}
			if got := reasonIfTrue(siteopsv1.ConditionReconciling); got != tc.want.reconciling {
				t.Errorf("Reconciling reason = %q, want %q", got, tc.want.reconciling)
			}
			if cond(siteopsv1.ConditionStalled) != nil && cond(siteopsv1.ConditionReconciling) != nil {
				t.Errorf("Stalled and Reconciling are both set")
			}
			if got := statusReason(siteopsv1.ConditionTaskServiceReady); got != tc.want.task {
				t.Errorf("TaskServiceReady = %s, want %s", got, tc.want.task)
			}
			if got := statusReason(siteopsv1.ConditionPackageServiceReady); got != tc.want.pkg {
				t.Errorf("PackageServiceReady = %s, want %s", got, tc.want.pkg)
			}
			if got.ObservedGeneration != tc.want.observed {
				t.Errorf("observedGeneration = %d, want %d", got.ObservedGeneration, tc.want.observed)
			}
		})
	}
}

// Running services are never torn down because a prerequisite went
// missing; a service that does not exist yet is not created while one is
// missing; a disabled service is removed.
func TestPlanWorkloads(t *testing.T) {
	for _, tc := range []struct {
		name                string
		s                   siteServerScope
		taskOff             bool
		runTask, runPackage bool
	}{
		{"nothing missing", siteServerScope{}, false, true, true},
		{"missing site, nothing running", siteServerScope{missingSites: []string{"a"}}, false, false, false},
		{"missing site, both running", siteServerScope{missingSites: []string{"a"}, deployment: &appsv1.Deployment{},
			statefulSet: &appsv1.StatefulSet{}}, false, true, true},
		{"no node, task running", siteServerScope{noMatchingNode: true, deployment: &appsv1.Deployment{}}, false, true, false},
		{"no storage class", siteServerScope{noStorageClass: "x"}, false, true, false},
		{"task disabled while running", siteServerScope{deployment: &appsv1.Deployment{}}, true, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.s
			s.ss = &siteopsv1.SiteServer{}
			if tc.taskOff {
				s.ss.Spec.Services.Task.Enabled = ptr.To(false)
			}
			planWorkloads(&s)
			if s.runTask != tc.runTask || s.runPackage != tc.runPackage {
				t.Errorf("runTask, runPackage = %v, %v; want %v, %v", s.runTask, s.runPackage, tc.runTask, tc.runPackage)
			}
		})
	}
}
