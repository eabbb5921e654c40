package plugin

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// ComputerReport is the output of `kubectl siteops computer <name>`.
type ComputerReport struct {
	// Namespace is the Computer's namespace.
	Namespace string `json:"namespace"`
	// Name is its name.
	Name string `json:"name"`
	// Hostname is spec.hostname.
	Hostname string `json:"hostname,omitempty"`
	// Site is the site its addresses map to (status.site); "" for none.
	Site string `json:"site"`
	// SiteServer is the SiteServer whose task service it last checked in
	// with.
	SiteServer string `json:"siteServer"`
	// Addresses are the addresses its agent last reported.
	Addresses []string `json:"addresses"`
	// Online is its Ready condition: True while its agent checks in.
	Online Condition `json:"online"`
	// LastSeen is when its agent last checked in (written at most every
	// few minutes).
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`
	// AgentVersion is the version of its agent.
	AgentVersion string `json:"agentVersion,omitempty"`
	// LastTask is the last DeploymentTask work its agent was handed, and
	// its result; absent before any.
	LastTask *siteopsv1.ComputerTask `json:"lastTask,omitempty"`
}

// BuildComputer makes the report of a Computer from its status.
func BuildComputer(c *siteopsv1.Computer) ComputerReport {
	return ComputerReport{
		Namespace:    c.Namespace,
		Name:         c.Name,
		Hostname:     c.Spec.Hostname,
		Site:         c.Status.Site,
		SiteServer:   c.Status.SiteServer,
		Addresses:    nonNil(c.Status.Addresses),
		Online:       conditionOf(c.Status.Conditions, siteopsv1.ConditionReady),
		LastSeen:     c.Status.LastSeen,
		AgentVersion: c.Status.AgentVersion,
		LastTask:     c.Status.LastTask,
	}
}

// outputLines is how many of the last task's output lines the text form
// shows.
const outputLines = 5

// writeText writes the computer's site, server, check-in and last task.
func (r ComputerReport) writeText(t *text, now time.Time) {
	t.line("Computer %s/%s", r.Namespace, r.Name)
	if r.Hostname != "" {
		t.field("Hostname", r.Hostname)
	}
	t.field("Site", orNone(r.Site))
	t.field("Site server", orNone(r.SiteServer))
	t.field("Addresses", joinOr(r.Addresses))
	online := r.Online.text()
	if r.Online.Status != metav1.ConditionTrue && r.Online.Message != "" {
		online += ": " + r.Online.Message
	}
	t.field("Online", online)
	t.field("Last seen", when(r.LastSeen, now))
	if r.AgentVersion != "" {
		t.field("Agent version", r.AgentVersion)
	}
	lt := r.LastTask
	if lt == nil {
		t.field("Last task", "(none)")
		return
	}
	t.field("Last task", fmt.Sprintf("%s (attempt %d)", lt.Name, lt.Attempt))
	state := lt.State
	if lt.Reason != "" {
		state += ", " + lt.Reason
	}
	if lt.ExitCode != nil {
		state += fmt.Sprintf(", exit code %d", *lt.ExitCode)
	}
	t.field("  State", state)
	if lt.Started != nil {
		t.field("  Started", when(lt.Started, now))
	}
	if lt.Finished != nil {
		t.field("  Finished", when(lt.Finished, now))
	}
	if out := strings.TrimRight(lt.Output, "\n"); out != "" {
		lines := strings.Split(out, "\n")
		label := "  Output"
		if len(lines) > outputLines || lt.OutputTruncated {
			label = "  Output (end)"
			lines = lines[max(0, len(lines)-outputLines):]
		}
		t.line("%s:", label)
		for _, l := range lines {
			t.line("    %s", strings.ReplaceAll(strings.TrimRight(l, "\r"), "\t", "    "))
		}
	}
}
