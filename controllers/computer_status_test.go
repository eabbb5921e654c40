package controllers

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/controller-runtime/pkg/event"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func TestDesiredComputerStatus(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	offlineAfter := 15 * time.Minute
	at := func(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(d)} }
	issued := &siteopsv1.ComputerCredential{Hash: "sha256:00", IssuedAt: *at(-time.Hour)}

	tests := []struct {
		name        string
		notBefore   *metav1.Time
		credential  *siteopsv1.ComputerCredential
		lastSeen    *metav1.Time
		wantReady   string
		wantMessage string
		wantRequeue time.Duration
	}{{
		name:      "pre-created, no agent registered",
		wantReady: "False/NotRegistered", wantMessage: "No agent has registered",
	}, {
		name:      "a check-in without a credential is still not registered",
		lastSeen:  at(-time.Minute),
		wantReady: "False/NotRegistered",
	}, {
		name:       "registered, checked in a minute ago: online until 14 minutes from now",
		credential: issued, lastSeen: at(-time.Minute),
		wantReady: "True/AgentOnline", wantMessage: "offline after 15m0s", wantRequeue: 14 * time.Minute,
	}, {
		name:       "a check-in just short of the timeout: online for one more second",
		credential: issued, lastSeen: at(-offlineAfter + time.Second),
		wantReady: "True/AgentOnline", wantRequeue: time.Second,
	}, {
		name:       "a check-in exactly the timeout ago: offline, since then",
		credential: issued, lastSeen: at(-offlineAfter),
		wantReady: "False/AgentOffline", wantMessage: "not checked in since 2026-03-02T09:45:00Z",
	}, {
		name:       "registered, never checked in: offline since the credential was issued",
		credential: issued,
		wantReady:  "False/AgentOffline", wantMessage: "since its credential was issued at 2026-03-02T09:00:00Z",
	}, {
		name:       "credentialsNotBefore after the issue: revoked, even while checking in",
		credential: issued, lastSeen: at(-time.Minute), notBefore: at(-30 * time.Minute),
		wantReady: "False/CredentialRevoked", wantMessage: "must register again",
	}, {
		name:       "credentialsNotBefore at the issue itself: not revoked",
		credential: issued, lastSeen: at(-time.Minute), notBefore: at(-time.Hour),
		wantReady: "True/AgentOnline", wantRequeue: 14 * time.Minute,
	}, {
		name:       "credentialsNotBefore before the issue (the agent registered again): not revoked",
		credential: issued, lastSeen: at(-time.Minute), notBefore: at(-2 * time.Hour),
		wantReady: "True/AgentOnline", wantRequeue: 14 * time.Minute,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Name: "ws-1", Namespace: "lab", Generation: 4}}
			c.Spec.CredentialsNotBefore = tt.notBefore
			c.Status = siteopsv1.ComputerStatus{ObservedGeneration: 3, Credential: tt.credential, LastSeen: tt.lastSeen,
				Site: "lyon", Addresses: []string{"10.20.2.7"}, AgentVersion: "1.0.0"}
			// Start from the kstatus conditions a converged Computer must
			// not carry.
			setStalled(&c.Status.Conditions, 3, "Old", "old")
			scope := &computerScope{computer: c, now: now, offlineAfter: offlineAfter}
			status := desiredComputerStatus(scope)

			if got := condString(status.Conditions, siteopsv1.ConditionReady); got != tt.wantReady {
				t.Errorf("Ready = %s, want %s", got, tt.wantReady)
			}
			ready := meta.FindStatusCondition(status.Conditions, siteopsv1.ConditionReady)
			if !strings.Contains(ready.Message, tt.wantMessage) || ready.ObservedGeneration != 4 {
				t.Errorf("Ready message %q (generation %d): want it to contain %q, generation 4",
					ready.Message, ready.ObservedGeneration, tt.wantMessage)
			}
			for _, kstatus := range []string{siteopsv1.ConditionReconciling, siteopsv1.ConditionStalled} {
				if got := condString(status.Conditions, kstatus); got != "" {
					t.Errorf("%s = %s, want none: every verdict is converged", kstatus, got)
				}
			}
			if status.ObservedGeneration != 4 {
				t.Errorf("observedGeneration = %d, want 4", status.ObservedGeneration)
			}
			if status.Site != "lyon" || status.AgentVersion != "1.0.0" || len(status.Addresses) != 1 {
				t.Errorf("the task service's fields changed: %+v", status)
			}
			if got := nextComputerVerdict(scope); got != tt.wantRequeue {
				t.Errorf("next verdict in %s, want %s", got, tt.wantRequeue)
			}

			// Judged again later with the same verdict, nothing changes.
			c.Status = *status
			later := &computerScope{computer: c, now: now.Add(time.Second / 2), offlineAfter: offlineAfter}
			if again := desiredComputerStatus(later); !equality.Semantic.DeepEqual(again, &c.Status) {
				t.Errorf("an unchanged verdict changed the status:\nstored  %+v\ndesired %+v", c.Status, *again)
			}
		})
	}
}

// A check-in that keeps a Computer online must not make the operator
// write: the status the task service's write leads to is the stored one.
func TestComputerCheckInChangesNothingTheOperatorWrites(t *testing.T) {
	now := time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)
	c := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Name: "ws-1", Generation: 1}}
	c.Status.Credential = &siteopsv1.ComputerCredential{Hash: "sha256:00", IssuedAt: metav1.Time{Time: now.Add(-time.Hour)}}
	c.Status.LastSeen = &metav1.Time{Time: now.Add(-5 * time.Minute)}
	c.Status = *desiredComputerStatus(&computerScope{computer: c, now: now, offlineAfter: 15 * time.Minute})

	c.Status.LastSeen = &metav1.Time{Time: now.Add(5 * time.Minute)}
	scope := &computerScope{computer: c, now: now.Add(5 * time.Minute), offlineAfter: 15 * time.Minute}
	if got := desiredComputerStatus(scope); !equality.Semantic.DeepEqual(got, &c.Status) {
		t.Errorf("a check-in changed the operator's part:\nstored  %+v\ndesired %+v", c.Status, *got)
	}
	if got := nextComputerVerdict(scope); got != 15*time.Minute {
		t.Errorf("next verdict in %s, want 15m from the new check-in", got)
	}
}

func TestComputerPredicatePassesOnlyWhatTheVerdictReads(t *testing.T) {
	base := siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Name: "ws-1", Generation: 1, Labels: map[string]string{"a": "b"}}}
	base.Status.LastSeen = &metav1.Time{Time: time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)}
	base.Status.Credential = &siteopsv1.ComputerCredential{Hash: "sha256:00"}
	changes := map[string]func(*siteopsv1.Computer){
		"spec": func(c *siteopsv1.Computer) { c.Generation++ },
		"lastSeen": func(c *siteopsv1.Computer) {
			c.Status.LastSeen = &metav1.Time{Time: c.Status.LastSeen.Add(time.Minute)}
		},
		"lastSeen unset": func(c *siteopsv1.Computer) { c.Status.LastSeen = nil },
		"credential":     func(c *siteopsv1.Computer) { c.Status.Credential.Hash = "sha256:01" },
		"labels":         func(c *siteopsv1.Computer) { c.Labels = map[string]string{"a": "c"} },
		"addresses":      func(c *siteopsv1.Computer) { c.Status.Addresses = []string{"10.0.0.1"} },
		"site":           func(c *siteopsv1.Computer) { c.Status.Site = "lyon" },
		"agentVersion":   func(c *siteopsv1.Computer) { c.Status.AgentVersion = "1.1.0" },
		"conditions": func(c *siteopsv1.Computer) {
			c.Status.Conditions = []metav1.Condition{{Type: siteopsv1.ConditionReady, Status: metav1.ConditionTrue}}
		},
	}
	want := sets.New("spec", "lastSeen", "lastSeen unset", "credential")
	p := computerVerdictInputsChanged()
	for name, change := range changes {
		newC := base.DeepCopy()
		change(newC)
		if got := p.Update(event.UpdateEvent{ObjectOld: base.DeepCopy(), ObjectNew: newC}); got != want.Has(name) {
			t.Errorf("an update of %s passes: %v, want %v", name, got, want.Has(name))
		}
	}
}
