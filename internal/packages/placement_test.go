package packages

import (
	"fmt"
	"strings"
	"testing"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
)

func TestWantedSites(t *testing.T) {
	existing := []string{"paris", "lyon", "nice"}
	for _, tc := range []struct {
		name             string
		policy           siteopsv1.ReplicationPolicy
		listed, demanded []string
		want, missing    string
	}{
		{"AllSites: every site and the computers in no site", siteopsv1.ReplicateAllSites, nil, nil, "[ lyon nice paris]", "[]"},
		{"Sites: the listed ones that exist; the others reported", siteopsv1.ReplicateSites, []string{"paris", "oslo", "paris"}, nil, "[paris]", "[oslo]"},
		{"OnDemand: the sites the tasks' computers are in, no site included", siteopsv1.ReplicateOnDemand, nil, []string{"nice", "", "nice", "gone"}, "[ nice]", "[]"},
		{"OnDemand with no task: nowhere", siteopsv1.ReplicateOnDemand, nil, nil, "[]", "[]"},
		{"Sites adds the sites the tasks need", siteopsv1.ReplicateSites, []string{"lyon"}, []string{"paris", "gone"}, "[lyon paris]", "[]"},
		{"AllSites: the tasks add nothing", siteopsv1.ReplicateAllSites, nil, []string{"paris", ""}, "[ lyon nice paris]", "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wanted, missing := WantedSites(tc.policy, existing, tc.listed, tc.demanded)
			if got := fmt.Sprint(wanted); got != tc.want {
				t.Errorf("wanted %s, want %s", got, tc.want)
			}
			if got := fmt.Sprint(missing); got != tc.missing {
				t.Errorf("missing %s, want %s", got, tc.missing)
			}
		})
	}
}

// servers: paris has two (one not ready for tasks), lyon one whose package
// service does not run, nice none; central is unassigned.
func testServers() []Server {
	return []Server{
		{Server: topology.Server{Name: "paris-1", Sites: []string{"paris"}, TaskReady: true}, PackageRunning: true},
		{Server: topology.Server{Name: "paris-2", Sites: []string{"paris"}}, PackageRunning: true},
		{Server: topology.Server{Name: "lyon-1", Sites: []string{"lyon"}, TaskReady: true}},
		{Server: topology.Server{Name: "central", TaskReady: true}, PackageRunning: true},
	}
}

func TestHolders(t *testing.T) {
	servers := testServers()
	for _, tc := range []struct {
		site string
		want string
	}{
		{"paris", "[paris-1 paris-2]"}, // every server of the site, ready or not
		{"lyon", "[]"},                 // its server's package service does not run
		{"nice", "[central]"},          // no server of its own: the unassigned ones
		{"", "[central]"},              // the computers in no site
	} {
		if got := fmt.Sprint(HoldersOf(tc.site, true, servers)); got != tc.want {
			t.Errorf("HoldersOf(%q) = %s, want %s", tc.site, got, tc.want)
		}
	}
	if got := fmt.Sprint(Holders([]string{"paris", "nice", ""}, true, servers)); got != "[central paris-1 paris-2]" {
		t.Errorf("Holders = %s", got)
	}
	// No Site at all: every server serves every agent.
	if got := fmt.Sprint(HoldersOf("", false, servers)); got != "[central paris-1 paris-2]" {
		t.Errorf("HoldersOf with no Site = %s", got)
	}
}

func TestRollUp(t *testing.T) {
	servers := testServers()
	const size = 1000
	for _, tc := range []struct {
		name   string
		copies map[string]Copy
		want   string // state of paris; message fragment
		msg    string
		bytes  int64
	}{
		{"nothing reported yet", nil, siteopsv1.ContentPending, "waiting for server paris-1", 0},
		{"one server ready, the other transferring", map[string]Copy{
			"paris-1": {State: siteopsv1.ContentReady, Bytes: size},
			"paris-2": {State: siteopsv1.ContentReplicating, Bytes: 300}}, siteopsv1.ContentReplicating, "1 of 2 servers hold the content", 300},
		{"every server of the site ready", map[string]Copy{
			"paris-1": {State: siteopsv1.ContentReady, Bytes: size},
			"paris-2": {State: siteopsv1.ContentReady, Bytes: size}}, siteopsv1.ContentReady, "", size},
		{"one failed: the site failed, with its reason", map[string]Copy{
			"paris-1": {State: siteopsv1.ContentReady, Bytes: size},
			"paris-2": {State: siteopsv1.ContentFailed, Message: "digest mismatch"}}, siteopsv1.ContentFailed, "server paris-2: digest mismatch", 0},
		{"one ready, one not started", map[string]Copy{
			"paris-1": {State: siteopsv1.ContentReady, Bytes: size}}, siteopsv1.ContentPending, "waiting for server paris-2", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := RollUp([]string{"paris"}, true, servers, tc.copies)
			if len(got) != 1 || got[0].Site != "paris" || got[0].State != tc.want || !strings.Contains(got[0].Message, tc.msg) || got[0].Bytes != tc.bytes {
				t.Errorf("RollUp = %+v, want %s with %q and %d bytes", got, tc.want, tc.msg, tc.bytes)
			}
		})
	}
	// A site that no running package server serves is Pending, and says so;
	// the computers in no site are named as such.
	got := RollUp([]string{"lyon", ""}, true, servers, map[string]Copy{"central": {State: siteopsv1.ContentReady, Bytes: size}})
	if got[0].State != siteopsv1.ContentPending || !strings.Contains(got[0].Message, "no running package server serves site lyon") {
		t.Errorf("lyon: %+v", got[0])
	}
	if got[1].Site != "" || got[1].State != siteopsv1.ContentReady {
		t.Errorf("no site: %+v", got[1])
	}
	if n := Ready(got); n != 1 {
		t.Errorf("Ready = %d, want 1", n)
	}
}

func TestEffectivePolicy(t *testing.T) {
	for _, tc := range []struct {
		typ    siteopsv1.PackageType
		policy siteopsv1.ReplicationPolicy
		want   siteopsv1.ReplicationPolicy
	}{
		{siteopsv1.PackageDiskImage, "", siteopsv1.ReplicateAllSites},
		{siteopsv1.PackageSoftware, "", siteopsv1.ReplicateOnDemand},
		{siteopsv1.PackageScript, "", siteopsv1.ReplicateOnDemand},
		{siteopsv1.PackageDiskImage, siteopsv1.ReplicateSites, siteopsv1.ReplicateSites},
		{siteopsv1.PackageSoftware, siteopsv1.ReplicateAllSites, siteopsv1.ReplicateAllSites},
	} {
		p := &siteopsv1.Package{Spec: siteopsv1.PackageSpec{Type: tc.typ, Replication: siteopsv1.PackageReplication{Policy: tc.policy}}}
		if got := p.EffectivePolicy(); got != tc.want {
			t.Errorf("%s with %q: %s, want %s", tc.typ, tc.policy, got, tc.want)
		}
	}
}
