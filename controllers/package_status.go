package controllers

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/packages"
)

// packageScope is what a Package's status is computed from.
type packageScope struct {
	pkg *siteopsv1.Package
	// sites are the names of the Sites that exist.
	sites []string
	// servers are the SiteServers, as the placement rules see them.
	servers []packages.Server
	// demanded are the sites of the computers that the unfinished
	// DeploymentTasks needing the package target: wanted whatever the
	// policy (internal/packages, rule 1).
	demanded []string
}

// desiredPackageStatus computes a Package's status: the policy that
// applies, the wanted sites rolled up from the package services' entries
// in status.servers (kept as they are, since they are theirs, but for
// those of SiteServers that no longer exist), and the conditions.
func desiredPackageStatus(s *packageScope) *siteopsv1.PackageStatus {
	p := s.pkg
	st := p.Status.DeepCopy()
	st.ObservedGeneration = p.Generation
	st.Policy = p.EffectivePolicy()
	wanted, missing := packages.WantedSites(st.Policy, s.sites, p.Spec.Replication.Sites, s.demanded)
	// The entries of SiteServers that are gone are dropped: a deleted
	// server leaves no claim on the content behind.
	exists := map[string]bool{}
	for _, sv := range s.servers {
		exists[sv.Name] = true
	}
	st.Servers = slices.DeleteFunc(st.Servers, func(c siteopsv1.PackageServerStatus) bool { return !exists[c.Server] })
	if len(st.Servers) == 0 {
		st.Servers = nil
	}
	copies := map[string]packages.Copy{}
	for _, c := range st.Servers {
		copies[c.Server] = packages.Copy{State: c.State, Bytes: c.Bytes, Message: c.Message}
	}
	st.Sites = packages.RollUp(wanted, len(s.sites) > 0, s.servers, copies)
	if len(st.Sites) == 0 {
		st.Sites = nil
	}
	ready := packages.Ready(st.Sites)
	st.SitesReady = fmt.Sprintf("%d/%d", ready, len(wanted))

	gen := p.Generation
	cond := metav1.Condition{Type: siteopsv1.ConditionReady, ObservedGeneration: gen}
	var failed, noServer, waiting []string
	for _, site := range st.Sites {
		switch {
		case site.State == siteopsv1.ContentFailed:
			failed = append(failed, fmt.Sprintf("%s (%s)", siteLabel(site.Site), site.Message))
		case site.State == siteopsv1.ContentPending && strings.HasPrefix(site.Message, "no running package server"):
			noServer = append(noServer, siteLabel(site.Site))
		case site.State != siteopsv1.ContentReady:
			waiting = append(waiting, siteLabel(site.Site))
		}
	}
	switch {
	case len(missing) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonSiteNotFound
		cond.Message = fmt.Sprintf("spec.replication.sites names Sites that do not exist: %s; the content goes there once they are created", strings.Join(missing, ", "))
		setStalled(&st.Conditions, gen, cond.Reason, cond.Message)
	case len(failed) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonReplicationFailed
		cond.Message = "replication failed at " + strings.Join(failed, "; ") + "; the package services try again"
		setStalled(&st.Conditions, gen, cond.Reason, cond.Message)
	case len(noServer) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonNoPackageServer
		cond.Message = "no running package server serves " + strings.Join(noServer, ", ") + "; the content goes there once one runs"
		setReconciling(&st.Conditions, gen, cond.Reason, cond.Message)
	case len(waiting) > 0:
		cond.Status, cond.Reason = metav1.ConditionFalse, siteopsv1.ReasonReplicating
		cond.Message = fmt.Sprintf("%d of %d sites hold the content; waiting for %s", ready, len(wanted), strings.Join(waiting, ", "))
		setReconciling(&st.Conditions, gen, cond.Reason, cond.Message)
	case len(wanted) == 0:
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonNotNeeded
		cond.Message = fmt.Sprintf("policy %s: no site wants the content yet", st.Policy)
		setConverged(&st.Conditions)
	default:
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonReplicated
		cond.Message = fmt.Sprintf("every wanted site holds the content (%d)", len(wanted))
		setConverged(&st.Conditions)
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// siteLabel names a wanted site in a message.
func siteLabel(site string) string {
	if site == "" {
		return "the computers in no site"
	}
	return "site " + site
}
