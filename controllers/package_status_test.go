package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/packages"
	"github.com/siteops/site-operator/internal/topology"
)

// The Ready reason follows a fixed precedence, and the kstatus condition
// beside it matches; the package services' entries are kept as they are.
func TestDesiredPackageStatus(t *testing.T) {
	servers := []packages.Server{
		{Server: topology.Server{Name: "a-1", Sites: []string{"a"}, TaskReady: true}, PackageRunning: true},
		{Server: topology.Server{Name: "b-1", Sites: []string{"b"}, TaskReady: true}, PackageRunning: true},
	}
	entry := func(server, state string) siteopsv1.PackageServerStatus {
		return siteopsv1.PackageServerStatus{Server: server, State: state, Message: "disk full"}
	}
	for _, tc := range []struct {
		name     string
		sites    []string // policy Sites
		entries  []siteopsv1.PackageServerStatus
		reason   string
		kstatus  string // the kstatus condition present, if any
		ready    string
		policy   siteopsv1.ReplicationPolicy
		wantSite int
	}{
		{"a missing site wins over a failure", []string{"a", "zz"}, []siteopsv1.PackageServerStatus{entry("a-1", siteopsv1.ContentFailed)},
			siteopsv1.ReasonSiteNotFound, siteopsv1.ConditionStalled, "0/1", siteopsv1.ReplicateSites, 1},
		{"a failure wins over waiting", []string{"a", "b"}, []siteopsv1.PackageServerStatus{entry("a-1", siteopsv1.ContentFailed)},
			siteopsv1.ReasonReplicationFailed, siteopsv1.ConditionStalled, "0/2", siteopsv1.ReplicateSites, 2},
		{"waiting for one of two", []string{"a", "b"}, []siteopsv1.PackageServerStatus{entry("a-1", siteopsv1.ContentReady)},
			siteopsv1.ReasonReplicating, siteopsv1.ConditionReconciling, "1/2", siteopsv1.ReplicateSites, 2},
		{"every site holds it", []string{"a", "b"}, []siteopsv1.PackageServerStatus{entry("a-1", siteopsv1.ContentReady), entry("b-1", siteopsv1.ContentReady)},
			siteopsv1.ReasonReplicated, "", "2/2", siteopsv1.ReplicateSites, 2},
		{"a disk image with no policy goes to every site and the computers in no site, which no server serves", nil, nil,
			siteopsv1.ReasonNoPackageServer, siteopsv1.ConditionReconciling, "0/3", siteopsv1.ReplicateAllSites, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 3},
				Spec:   siteopsv1.PackageSpec{Type: siteopsv1.PackageDiskImage, Size: 10},
				Status: siteopsv1.PackageStatus{Servers: tc.entries}}
			if tc.sites != nil {
				p.Spec.Replication = siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: tc.sites}
			}
			st := desiredPackageStatus(&packageScope{pkg: p, sites: []string{"a", "b"}, servers: servers})
			ready := meta.FindStatusCondition(st.Conditions, siteopsv1.ConditionReady)
			if ready == nil || ready.Reason != tc.reason || ready.ObservedGeneration != 3 {
				t.Fatalf("Ready = %+v, want reason %s", ready, tc.reason)
			}
			for _, k := range []string{siteopsv1.ConditionReconciling, siteopsv1.ConditionStalled} {
				c := meta.FindStatusCondition(st.Conditions, k)
				if (k == tc.kstatus) != (c != nil) || c != nil && c.Reason != tc.reason {
					t.Errorf("%s = %+v, want present: %v with reason %s", k, c, k == tc.kstatus, tc.reason)
				}
			}
			if st.SitesReady != tc.ready || st.Policy != tc.policy || len(st.Sites) != tc.wantSite || st.ObservedGeneration != 3 {
				t.Errorf("status %+v", st)
			}
			if len(st.Servers) != len(tc.entries) {
				t.Errorf("servers %+v, want the package services' entries kept", st.Servers)
			}
		})
	}
}

// The entry of a SiteServer that was deleted is dropped, and no longer
// counts: here it was the only Ready copy.
func TestDesiredPackageStatusDropsDeletedServers(t *testing.T) {
	servers := []packages.Server{{Server: topology.Server{Name: "a-1", Sites: []string{"a"}, TaskReady: true}, PackageRunning: true}}
	p := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 1},
		Spec: siteopsv1.PackageSpec{Type: siteopsv1.PackageSoftware, Size: 10,
			Replication: siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{"a"}}},
		Status: siteopsv1.PackageStatus{Servers: []siteopsv1.PackageServerStatus{
			{Server: "a-1", State: siteopsv1.ContentReplicating},
			{Server: "gone-1", State: siteopsv1.ContentReady},
		}}}
	st := desiredPackageStatus(&packageScope{pkg: p, sites: []string{"a"}, servers: servers})
	if len(st.Servers) != 1 || st.Servers[0].Server != "a-1" {
		t.Errorf("servers %+v, want a-1's entry only", st.Servers)
	}
	if len(p.Status.Servers) != 2 {
		t.Error("the Package read from the cache was changed")
	}
}
