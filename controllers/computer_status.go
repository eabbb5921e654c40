package controllers

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// The operator's part of a Computer's status: the Ready condition and
// observedGeneration. The task services write the rest (lastSeen,
// addresses, site, siteServer, agentVersion, credential) with their own
// field manager and never Ready.
//
// Ready, judged in this order:
//   - no status.credential: False, NotRegistered (an administrator created
//     the Computer and no agent has registered as it yet);
//   - spec.credentialsNotBefore after status.credential.issuedAt: False,
//     CredentialRevoked (the task service refuses the credential; the agent
//     must register again);
//   - status.lastSeen absent, or offlineAfter or longer ago: False,
//     AgentOffline, the message saying since when;
//   - otherwise True, AgentOnline.
//
// Every verdict is a converged state: the operator has nothing to roll out
// and nothing it could retry, so a Computer carries neither Reconciling nor
// Stalled (kstatus reads both as False). kstatus therefore reads a Computer
// whose Ready is False (not registered, revoked, offline) as InProgress and
// an online one as Current.
//
// Only AgentOffline's message carries a time, and only a time that does not
// move while the verdict holds (the last check-in, or the credential's issue
// when there was none): a check-in that keeps a Computer online changes
// nothing the operator writes, so the task services' lastSeen writes are
// never followed by one of the operator's.

// computerScope is what one reconcile of a Computer works from.
type computerScope struct {
	computer *siteopsv1.Computer
	// now is when the verdict is taken.
	now time.Time
	// offlineAfter is how long an agent may go without a check-in.
	offlineAfter time.Duration
}

// desiredComputerStatus is the stored status with the operator's part
// set from scope; the fields the task services write are kept as they are.
func desiredComputerStatus(scope *computerScope) *siteopsv1.ComputerStatus {
	status := scope.computer.Status.DeepCopy()
	meta.SetStatusCondition(&status.Conditions, computerReadyCondition(scope))
	setConverged(&status.Conditions)
	status.ObservedGeneration = scope.computer.Generation
	return status
}

// computerReadyCondition is the Ready verdict on scope's Computer at
// scope.now.
func computerReadyCondition(scope *computerScope) metav1.Condition {
	c := scope.computer
	cond := metav1.Condition{Type: siteopsv1.ConditionReady, Status: metav1.ConditionFalse,
		ObservedGeneration: c.Generation}
	credential := c.Status.Credential
	switch {
	case credential == nil:
		cond.Reason = siteopsv1.ReasonNotRegistered
		cond.Message = "No agent has registered as this computer yet"
	case credentialRevoked(c):
		cond.Reason = siteopsv1.ReasonCredentialRevoked
		cond.Message = fmt.Sprintf("spec.credentialsNotBefore (%s) revoked the agent's credential issued at %s:"+
			" the agent must register again with a bootstrap token",
			formatTime(c.Spec.CredentialsNotBefore.Time), formatTime(credential.IssuedAt.Time))
	case c.Status.LastSeen == nil:
		cond.Reason = siteopsv1.ReasonAgentOffline
		cond.Message = fmt.Sprintf("The agent has not checked in since its credential was issued at %s",
			formatTime(credential.IssuedAt.Time))
	case !scope.now.Before(offlineAt(scope)):
		cond.Reason = siteopsv1.ReasonAgentOffline
		cond.Message = fmt.Sprintf("The agent has not checked in since %s (offline after %s without a check-in)",
			formatTime(c.Status.LastSeen.Time), scope.offlineAfter)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonAgentOnline
		cond.Message = fmt.Sprintf("The agent checks in (offline after %s without a check-in)", scope.offlineAfter)
	}
	return cond
}

// nextComputerVerdict is how long after scope.now the Ready verdict changes
// by the passing of time alone: until an online agent's check-in is too
// old. Zero when only a change of the Computer can change it.
func nextComputerVerdict(scope *computerScope) time.Duration {
	cond := computerReadyCondition(scope)
	if cond.Reason != siteopsv1.ReasonAgentOnline {
		return 0
	}
	return offlineAt(scope).Sub(scope.now)
}

// offlineAt is when an agent that checked in last at status.lastSeen
// turns offline; lastSeen must be set.
func offlineAt(scope *computerScope) time.Time {
	return scope.computer.Status.LastSeen.Add(scope.offlineAfter)
}

// credentialRevoked tells whether spec.credentialsNotBefore is after the
// issue of the credential the agent holds.
func credentialRevoked(c *siteopsv1.Computer) bool {
	return c.Spec.CredentialsNotBefore != nil && c.Status.Credential != nil &&
		c.Spec.CredentialsNotBefore.After(c.Status.Credential.IssuedAt.Time)
}

// formatTime writes t as the API writes times (RFC 3339, UTC, seconds).
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339)
}
