package controllers

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func siteServer(name string, taskAvailable bool) siteopsv1.SiteServer {
	ss := siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: siteopsv1.SiteServerSpec{Sites: []string{"lyon"}}}
	cond := metav1.Condition{Type: siteopsv1.ConditionTaskServiceReady, Status: metav1.ConditionFalse, Reason: siteopsv1.ReasonProgressing}
	if taskAvailable {
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonAvailable
	}
	ss.Status.Conditions = []metav1.Condition{cond}
	if taskAvailable {
		ss.Status.Task.Advertised = []string{"https://" + name + ".lyon.example:8080"}
	}
	return ss
}

// condString is "Status/Reason" of the condition, "" when absent.
func condString(conds []metav1.Condition, condType string) string {
	c := meta.FindStatusCondition(conds, condType)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s", c.Status, c.Reason)
}

func TestDesiredSiteStatus(t *testing.T) {
	taskURL := "https://b.lyon.example:8080"
	foreign := &OwnershipError{Object: "*v1.Service ops/site-lyon-task", Expected: "Site lyon", Actual: "Deployment other"}
	refused := fmt.Errorf("applying *v1.Service ops/site-lyon-task: %w", apierrors.NewInvalid(
		schema.GroupKind{Kind: "Service"}, "site-lyon-task", field.ErrorList{field.Invalid(field.NewPath("spec", "ports"), 0, "bad port")}))
	conflict := fmt.Errorf("applying *v1.Service ops/site-lyon-task: %w",
		apierrors.NewConflict(schema.GroupResource{Resource: "services"}, "site-lyon-task", errors.New("try again")))

	tests := []struct {
		name    string
		servers []siteopsv1.SiteServer
		err     error
		// stored endpoints before the reconcile
		storedEndpoints []string

		wantReady, wantReconciling, wantStalled string
		wantObserved                            bool
		wantEndpoints                           []string
		wantMessage                             string // a substring of Ready's message
	}{{
		name:      "no SiteServer: converged, served by the unassigned ones",
		wantReady: "False/NoSiteServer", wantObserved: true,
		storedEndpoints: []string{taskURL},
	}, {
		name: "only servers with the task service disabled: nothing to wait for, converged",
		servers: func() []siteopsv1.SiteServer {
			ss := siteServer("a", false)
			ss.Spec.Services.Task.Enabled = new(bool)
			return []siteopsv1.SiteServer{ss}
		}(),
		wantReady: "False/ServicesNotReady", wantObserved: true,
	}, {
		name:      "servers rolling out: Reconciling, nothing advertised yet",
		servers:   []siteopsv1.SiteServer{siteServer("a", false), siteServer("b", false)},
		wantReady: "False/ServicesNotReady", wantReconciling: "True/ServicesNotReady", wantObserved: true,
	}, {
		name:      "one task service available: Ready, converged",
		servers:   []siteopsv1.SiteServer{siteServer("a", false), siteServer("b", true)},
		wantReady: "True/TaskServiceAvailable", wantObserved: true, wantEndpoints: []string{taskURL},
		wantMessage: "SiteServer b",
	}, {
		name:    "a Service of another controller in the way: Stalled NotOwned, the servers still advertised",
		servers: []siteopsv1.SiteServer{siteServer("a", true)}, err: foreign, storedEndpoints: []string{taskURL},
		wantReady: "False/NotOwned", wantStalled: "True/NotOwned", wantObserved: true,
		wantEndpoints: []string{"https://a.lyon.example:8080"},
		wantMessage:   "site-lyon-task exists with controller Deployment other",
	}, {
		name:    "the API server refuses the Service: Stalled ApplyFailed",
		servers: []siteopsv1.SiteServer{siteServer("a", true)}, err: refused, storedEndpoints: []string{taskURL},
		wantReady: "False/ApplyFailed", wantStalled: "True/ApplyFailed", wantObserved: true,
		wantEndpoints: []string{"https://a.lyon.example:8080"}, wantMessage: "bad port",
	}, {
		name:    "a transient failure: Reconciling ApplyFailed, generation not observed, the servers still advertised",
		servers: []siteopsv1.SiteServer{siteServer("a", true)}, err: conflict, storedEndpoints: []string{taskURL},
		wantReady: "False/ApplyFailed", wantReconciling: "True/ApplyFailed",
		wantEndpoints: []string{"https://a.lyon.example:8080"}, wantMessage: "services \"site-lyon-task\"",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			site := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "lyon", Generation: 3}}
			site.Status.ObservedGeneration = 2
			site.Status.TaskEndpoints = tt.storedEndpoints
			// Start from both kstatus conditions' opposite, so that the
			// setter must clear what no longer holds.
			setStalled(&site.Status.Conditions, 2, "Old", "old")
			if tt.wantStalled != "" {
				setReconciling(&site.Status.Conditions, 2, "Old", "old")
			}
			scope := &siteScope{site: site, subnets: 5, servers: tt.servers, servicesErr: tt.err}
			status := desiredSiteStatus(scope)

			if got := condString(status.Conditions, siteopsv1.ConditionReady); got != tt.wantReady {
				t.Errorf("Ready = %s, want %s", got, tt.wantReady)
			}
			if got := condString(status.Conditions, siteopsv1.ConditionReconciling); got != tt.wantReconciling {
				t.Errorf("Reconciling = %q, want %q", got, tt.wantReconciling)
			}
			if got := condString(status.Conditions, siteopsv1.ConditionStalled); got != tt.wantStalled {
				t.Errorf("Stalled = %q, want %q", got, tt.wantStalled)
			}
			ready := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReady)
			if !strings.Contains(ready.Message, tt.wantMessage) {
				t.Errorf("Ready message %q does not contain %q", ready.Message, tt.wantMessage)
			}
			wantObserved := int64(2)
			if tt.wantObserved {
				wantObserved = 3
			}
			if status.ObservedGeneration != wantObserved {
				t.Errorf("observedGeneration = %d, want %d", status.ObservedGeneration, wantObserved)
			}
			if !equality.Semantic.DeepEqual(status.TaskEndpoints, tt.wantEndpoints) {
				t.Errorf("taskEndpoints = %q, want %q", status.TaskEndpoints, tt.wantEndpoints)
			}
			if status.Subnets != 5 || status.SiteServerCount != int32(len(tt.servers)) || len(status.SiteServers) != len(tt.servers) {
				t.Errorf("subnets %d, siteServerCount %d, siteServers %q", status.Subnets, status.SiteServerCount, status.SiteServers)
			}

			site.Status = *status
			if again := desiredSiteStatus(scope); !equality.Semantic.DeepEqual(again, &site.Status) {
				t.Errorf("an unchanged reconcile changed the status:\nstored  %+v\ndesired %+v", site.Status, *again)
			}
		})
	}
}

// More SiteServers than status.siteServers can hold: the list is cut to its
// cap (the API server would refuse the whole status otherwise), the count
// says how many there are, and the messages stay short.
func TestDesiredSiteStatusCutsTheServerList(t *testing.T) {
	n := siteopsv1.MaxSiteServersListed + 44
	var servers []siteopsv1.SiteServer
	for i := range n {
		servers = append(servers, siteServer(fmt.Sprintf("srv-%03d", i), true))
	}
	site := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "lyon", Generation: 1}}
	status := desiredSiteStatus(&siteScope{site: site, servers: servers})
	if len(status.TaskEndpoints) != siteopsv1.MaxEndpointsListed || status.TaskEndpoints[0] != "https://srv-000.lyon.example:8080" {
		t.Errorf("taskEndpoints has %d URLs starting %q; want the first %d", len(status.TaskEndpoints), status.TaskEndpoints[:1],
			siteopsv1.MaxEndpointsListed)
	}

	if len(status.SiteServers) != siteopsv1.MaxSiteServersListed || status.SiteServerCount != int32(n) {
		t.Fatalf("siteServers has %d names, siteServerCount %d; want %d and %d",
			len(status.SiteServers), status.SiteServerCount, siteopsv1.MaxSiteServersListed, n)
	}
	if status.SiteServers[0] != "srv-000" || status.SiteServers[len(status.SiteServers)-1] != "srv-255" {
		t.Errorf("siteServers are not the first names in order: %s … %s", status.SiteServers[0], status.SiteServers[len(status.SiteServers)-1])
	}
	ready := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReady)
	if want := fmt.Sprintf("and %d more", n-maxNamesInMessage); !strings.HasSuffix(ready.Message, want) || len(ready.Message) > 200 {
		t.Errorf("Ready message %q: want it short, ending in %q", ready.Message, want)
	}
}

func TestBoundedMessage(t *testing.T) {
	long := strings.Repeat("é", maxMessageLength) // two bytes each
	got := boundedMessage(long)
	if len(got) > maxMessageLength || !strings.HasSuffix(got, "…") || !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("boundedMessage cut %d bytes to %d: %q…", len(long), len(got), got[:20])
	}
	if short := "short"; boundedMessage(short) != short {
		t.Errorf("boundedMessage changed a short message")
	}
}
