// Package packages holds the pure rules of Package placement: which sites
// want a package's content, which package servers must hold it, and how
// the servers' copies roll up into the state of each site. The Package
// controller writes what they decide into a Package's status, and each
// package service replicates what they say it must hold.
//
// It is pure: no Kubernetes client and no I/O.
//
// The rules:
//
//  1. The wanted sites follow the effective policy: every Site and the
//     computers in no site for AllSites; spec.replication.sites (those
//     that exist) for Sites; none of its own for OnDemand. Whatever the
//     policy, the sites of the computers that the unfinished
//     DeploymentTasks needing the package target are wanted too: a task
//     brings the content where it needs it, and keeps it there while it
//     runs. The empty site name stands for the computers in no site.
//  2. A site's content is held by the servers that serve its agents (the
//     topology package's serving rules): its own servers once one of them
//     is ready, else the unassigned servers.
//  3. Of those, only the servers whose package service runs count. A site
//     is Ready when every one of them holds the content, Failed when one
//     of them failed, Replicating while one transfers, and Pending
//     otherwise, or when no running package server serves it.
//
// Results are sorted and free of duplicates.
package packages

import (
	"fmt"
	"slices"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)

// Server is what the rules need to know about one SiteServer.
type Server struct {
	topology.Server
	// PackageRunning says that its package service runs (at least one
	// ready pod), so that it can hold content.
	PackageRunning bool
}

// ServersOf is the placement rules' view of SiteServers.
func ServersOf(list []siteopsv1.SiteServer) []Server {
	out := make([]Server, 0, len(list))
	for i := range list {
		ss := &list[i]
		out = append(out, Server{
			Server:         topology.Server{Name: ss.Name, Sites: ss.Spec.Sites, TaskReady: ss.ServesTasks()},
			PackageRunning: ss.ServesPackages(),
		})
	}
	return out
}

// Copy is one server's copy of the content, as its package service
// reports it.
type Copy struct {
	State   string
	Bytes   int64
	Message string
}

// WantedSites returns the sites that want the content under policy (rule
// 1). existing are the Sites that exist, listed spec.replication.sites,
// demanded the sites of the computers that unfinished tasks needing the
// package target (wanted under every policy). missing are the listed
// sites that do not exist.
func WantedSites(policy siteopsv1.ReplicationPolicy, existing, listed, demanded []string) (wanted, missing []string) {
	switch policy {
	case siteopsv1.ReplicateAllSites:
		wanted = append(slices.Clone(existing), "")
	case siteopsv1.ReplicateSites:
		for _, s := range listed {
			if slices.Contains(existing, s) {
				wanted = append(wanted, s)
			} else {
				missing = append(missing, s)
			}
		}
	}
	for _, s := range demanded {
		if s == "" || slices.Contains(existing, s) {
			wanted = append(wanted, s)
		}
	}
	return sortedSet(wanted), sortedSet(missing)
}

// HoldersOf returns the servers of site that must hold the content:
// those that serve its agents (rule 2) whose package service runs (rule
// 3). sitesExist says whether any Site exists at all.
func HoldersOf(site string, sitesExist bool, servers []Server) []string {
	topo := make([]topology.Server, len(servers))
	running := map[string]bool{}
	for i, s := range servers {
		topo[i] = s.Server
		if s.PackageRunning {
			running[s.Name] = true
		}
	}
	var out []string
	for _, name := range topology.ServersFor(site, sitesExist, topo) {
		if running[name] {
			out = append(out, name)
		}
	}
	return out
}

// Holders returns every server that must hold the content for the wanted
// sites: the package services replicate to exactly these.
func Holders(wanted []string, sitesExist bool, servers []Server) []string {
	var out []string
	for _, site := range wanted {
		out = append(out, HoldersOf(site, sitesExist, servers)...)
	}
	return sortedSet(out)
}

// RollUp returns the state of the content at each wanted site from the
// servers' copies (rule 3), in the order of wanted.
func RollUp(wanted []string, sitesExist bool, servers []Server, copies map[string]Copy) []siteopsv1.PackageSiteStatus {
	out := make([]siteopsv1.PackageSiteStatus, 0, len(wanted))
	for _, site := range wanted {
		out = append(out, rollUpSite(site, HoldersOf(site, sitesExist, servers), copies))
	}
	return out
}

func rollUpSite(site string, holders []string, copies map[string]Copy) siteopsv1.PackageSiteStatus {
	st := siteopsv1.PackageSiteStatus{Site: site}
	if len(holders) == 0 {
		st.State = siteopsv1.ContentPending
		st.Message = fmt.Sprintf("no running package server serves %s", siteName(site))
		return st
	}
	ready, replicating := 0, 0
	var failed, waiting string
	for i, name := range holders {
		c, ok := copies[name]
		if !ok {
			c = Copy{State: siteopsv1.ContentPending}
		}
		if i == 0 || c.Bytes < st.Bytes {
			st.Bytes = c.Bytes
		}
		switch c.State {
		case siteopsv1.ContentReady:
			ready++
		case siteopsv1.ContentReplicating:
			replicating++
		case siteopsv1.ContentFailed:
			if failed == "" {
				failed = fmt.Sprintf("server %s: %s", name, c.Message)
			}
		default:
			if waiting == "" {
				waiting = name
			}
		}
	}
	switch {
	case failed != "":
		st.State, st.Message = siteopsv1.ContentFailed, failed
	case ready == len(holders):
		st.State = siteopsv1.ContentReady
	case replicating > 0:
		st.State = siteopsv1.ContentReplicating
		st.Message = fmt.Sprintf("%d of %d servers hold the content", ready, len(holders))
	default:
		st.State = siteopsv1.ContentPending
		st.Message = fmt.Sprintf("waiting for server %s", waiting)
	}
	return st
}

// siteName names site in a message.
func siteName(site string) string {
	if site == "" {
		return "the computers in no site"
	}
	return "site " + site
}

// Ready counts the wanted sites whose content is Ready.
func Ready(sites []siteopsv1.PackageSiteStatus) int {
	n := 0
	for _, s := range sites {
		if s.State == siteopsv1.ContentReady {
			n++
		}
	}
	return n
}

func sortedSet(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
