package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func readyCond(status metav1.ConditionStatus) []metav1.Condition {
	return []metav1.Condition{{Type: siteopsv1.ConditionReady, Status: status, Reason: "Test"}}
}

// statusObjects are a few objects of every kind, with the statuses their
// controllers would have written.
func statusObjects() []client.Object {
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }
	nm := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "tenant"} }
	return []client.Object{
		&siteopsv1.Site{ObjectMeta: om("a"), Status: siteopsv1.SiteStatus{Conditions: readyCond(metav1.ConditionTrue)}},
		&siteopsv1.Site{ObjectMeta: om("b"), Status: siteopsv1.SiteStatus{Conditions: readyCond(metav1.ConditionFalse)}},
		&siteopsv1.SiteServer{ObjectMeta: om("s1"), Status: siteopsv1.SiteServerStatus{Conditions: readyCond(metav1.ConditionTrue)}},
		&siteopsv1.SiteServer{ObjectMeta: om("s2"), Status: siteopsv1.SiteServerStatus{Conditions: readyCond(metav1.ConditionTrue)}},
		&siteopsv1.SiteServer{ObjectMeta: om("s3"), Status: siteopsv1.SiteServerStatus{Conditions: readyCond(metav1.ConditionFalse)}},
		&siteopsv1.SiteServer{ObjectMeta: om("s4")}, // not reconciled yet
		&siteopsv1.Computer{ObjectMeta: nm("c1"), Status: siteopsv1.ComputerStatus{Conditions: readyCond(metav1.ConditionTrue)}},
		&siteopsv1.Computer{ObjectMeta: nm("c2"), Status: siteopsv1.ComputerStatus{Conditions: readyCond(metav1.ConditionFalse)}},
		&siteopsv1.Computer{ObjectMeta: nm("c3"), Status: siteopsv1.ComputerStatus{Conditions: readyCond(metav1.ConditionUnknown)}},
		&siteopsv1.Package{ObjectMeta: nm("p1"), Status: siteopsv1.PackageStatus{Conditions: readyCond(metav1.ConditionTrue),
			Sites: []siteopsv1.PackageSiteStatus{{Site: "a", State: siteopsv1.ContentReady}, {Site: "b", State: siteopsv1.ContentReady}}}},
		&siteopsv1.Package{ObjectMeta: nm("p2"), Status: siteopsv1.PackageStatus{Conditions: readyCond(metav1.ConditionFalse),
			Sites: []siteopsv1.PackageSiteStatus{{Site: "a", State: siteopsv1.ContentFailed}, {Site: "b", State: siteopsv1.ContentReplicating}}}},
		&siteopsv1.DeploymentTask{ObjectMeta: nm("t1"), Status: siteopsv1.DeploymentTaskStatus{Phase: siteopsv1.TaskRunning,
			Targets: siteopsv1.TargetCounts{Total: 10, Pending: 2, Running: 3, Succeeded: 4, Failed: 1}}},
		&siteopsv1.DeploymentTask{ObjectMeta: nm("t2"), Status: siteopsv1.DeploymentTaskStatus{Phase: siteopsv1.TaskStopped,
			Targets: siteopsv1.TargetCounts{Total: 5, Pending: 3, Failed: 2}}},
		&siteopsv1.DeploymentTask{ObjectMeta: nm("t3")}, // not reconciled yet: Pending
		&siteopsv1.DirectoryImport{ObjectMeta: om("ad"), Status: siteopsv1.DirectoryImportStatus{Conditions: readyCond(metav1.ConditionTrue)}},
	}
}

func TestStatusCollector(t *testing.T) {
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(statusObjects()...).Build()

	t.Run("a replica that does not lead exports nothing", func(t *testing.T) {
		if n := testutil.CollectAndCount(StatusCollector(c, make(chan struct{}))); n != 0 {
			t.Errorf("%d metrics before the election, want none", n)
		}
	})

	elected := make(chan struct{})
	close(elected)
	collector := StatusCollector(c, elected)
	want := `
# HELP siteops_sites Sites by their Ready condition (true: a task service of their own is ready).
# TYPE siteops_sites gauge
siteops_sites{ready="false"} 1
siteops_sites{ready="true"} 1
siteops_sites{ready="unknown"} 0
# HELP siteops_siteservers SiteServers by their Ready condition.
# TYPE siteops_siteservers gauge
siteops_siteservers{ready="false"} 1
siteops_siteservers{ready="true"} 2
siteops_siteservers{ready="unknown"} 1
# HELP siteops_computers Computers by their Ready condition (true: the agent checked in recently; false: AgentOffline or not yet seen).
# TYPE siteops_computers gauge
siteops_computers{ready="false"} 1
siteops_computers{ready="true"} 1
siteops_computers{ready="unknown"} 1
# HELP siteops_packages Packages by their Ready condition (true: the content is Ready at every site that wants it).
# TYPE siteops_packages gauge
siteops_packages{ready="false"} 1
siteops_packages{ready="true"} 1
siteops_packages{ready="unknown"} 0
# HELP siteops_package_sites Copies of Packages at sites (the entries of every Package's status.sites) by state.
# TYPE siteops_package_sites gauge
siteops_package_sites{state="Failed"} 1
siteops_package_sites{state="Pending"} 0
siteops_package_sites{state="Ready"} 2
siteops_package_sites{state="Replicating"} 1
# HELP siteops_deploymenttasks DeploymentTasks by phase.
# TYPE siteops_deploymenttasks gauge
siteops_deploymenttasks{phase="Failed"} 0
siteops_deploymenttasks{phase="Pending"} 1
siteops_deploymenttasks{phase="Running"} 1
siteops_deploymenttasks{phase="Stopped"} 1
siteops_deploymenttasks{phase="Succeeded"} 0
siteops_deploymenttasks{phase="WaitingForContent"} 0
# HELP siteops_deploymenttask_targets Targets of every DeploymentTask (status.targets added up) by state.
# TYPE siteops_deploymenttask_targets gauge
siteops_deploymenttask_targets{state="failed"} 3
siteops_deploymenttask_targets{state="pending"} 5
siteops_deploymenttask_targets{state="running"} 3
siteops_deploymenttask_targets{state="succeeded"} 4
# HELP siteops_directoryimports DirectoryImports by their Ready condition.
# TYPE siteops_directoryimports gauge
siteops_directoryimports{ready="false"} 0
siteops_directoryimports{ready="true"} 1
siteops_directoryimports{ready="unknown"} 0
`
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// promlint: names, units and help follow Prometheus' conventions.
	problems, err := testutil.CollectAndLint(collector)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}

	t.Run("a kind that cannot be listed is left out, the others are exported", func(t *testing.T) {
		failing := fake.NewClientBuilder().WithScheme(scheme).WithObjects(statusObjects()...).
			WithInterceptorFuncs(interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, l client.ObjectList, opts ...client.ListOption) error {
				if _, ok := l.(*siteopsv1.ComputerList); ok {
					return errors.New("the cache is not synced")
				}
				return c.List(ctx, l, opts...)
			}}).Build()
		got := testutil.CollectAndCount(StatusCollector(failing, elected))
		if want := testutil.CollectAndCount(collector) - 3; got != want {
			t.Errorf("%d metrics, want %d (all but the 3 of siteops_computers)", got, want)
		}
	})
}
