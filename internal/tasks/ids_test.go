package tasks

import (
	"fmt"
	"strings"
	"testing"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

const testUID = "0b5c6a8e-3f1d-4c7a-9e2b-5d8f1a2c3b4e"

func TestWorkIDRoundTrip(t *testing.T) {
	for _, attempt := range []int32{1, 2, 10, 1<<31 - 1} {
		id := WorkID(testUID, attempt)
		uid, got, err := ParseWorkID(id)
		if err != nil {
			t.Errorf("ParseWorkID(%q): %v", id, err)
			continue
		}
		if uid != testUID || got != attempt {
			t.Errorf("ParseWorkID(%q) = %q, %d, want %q, %d", id, uid, got, testUID, attempt)
		}
	}
	if got, want := WorkID(testUID, 3), testUID+".3"; got != want {
		t.Errorf("WorkID = %q, want %q", got, want)
	}
}

func TestParseWorkIDMalformed(t *testing.T) {
	for _, id := range []string{
		"",
		testUID,                        // no dot
		".1",                           // no UID
		testUID + ".",                  // no attempt
		testUID + ".0",                 // attempts count from 1
		testUID + ".-1",                // negative
		testUID + ".one",               // not a number
		testUID + ".1a",                // not a number
		testUID + ".01",                // not as WorkID writes it
		testUID + ".+1",                // not as WorkID writes it
		testUID + ". 1",                // not as WorkID writes it
		testUID + ".2147483648",        // beyond int32
		strings.Repeat("a", 79) + ".1", // too long
	} {
		if uid, attempt, err := ParseWorkID(id); err == nil {
			t.Errorf("ParseWorkID(%q) = %q, %d, want an error", id, uid, attempt)
		}
	}
	// The longest accepted ID is 80 characters.
	if _, _, err := ParseWorkID(strings.Repeat("a", 78) + ".1"); err != nil {
		t.Errorf("ParseWorkID of 80 characters: %v", err)
	}
}

func TestShardOf(t *testing.T) {
	// Every task service finds a computer's entry in the same shard, so the
	// shard of a name must never change: fnv-1a (32 bits) mod 64, computed
	// apart from Go.
	for name, want := range map[string]int32{
		"":                5,
		"lab-01":          0,
		"pc-0001":         8,
		"workstation":     12,
		"desk-42.example": 33,
	} {
		if got := ShardOf(name); got != want {
			t.Errorf("ShardOf(%q) = %d, want %d", name, got, want)
		}
	}
	counts := make([]int, siteopsv1.DispatchShards)
	for i := range 6400 {
		name := fmt.Sprintf("pc-%05d", i)
		n := ShardOf(name)
		if n < 0 || n >= siteopsv1.DispatchShards {
			t.Fatalf("ShardOf(%q) = %d, outside [0, %d)", name, n, siteopsv1.DispatchShards)
		}
		if again := ShardOf(name); again != n {
			t.Fatalf("ShardOf(%q) = %d, then %d", name, n, again)
		}
		counts[n]++
	}
	// Spread: 100 names per shard on average; none empty or crowded.
	for n, c := range counts {
		if c < 50 || c > 150 {
			t.Errorf("shard %d holds %d of 6400 names, want about 100", n, c)
		}
	}
}

func TestShardName(t *testing.T) {
	tests := []struct {
		task string
		n    int32
		want string
	}{
		{"patch-tuesday", 0, "patch-tuesday.00"},
		{"patch-tuesday", 7, "patch-tuesday.07"},
		{"patch-tuesday", siteopsv1.DispatchShards - 1, "patch-tuesday.63"},
	}
	for _, tt := range tests {
		if got := ShardName(tt.task, tt.n); got != tt.want {
			t.Errorf("ShardName(%q, %d) = %q, want %q", tt.task, tt.n, got, tt.want)
		}
	}
	// A task name of at most 60 characters gives a name within 63.
	if got := ShardName(strings.Repeat("a", 60), siteopsv1.DispatchShards-1); len(got) > 63 {
		t.Errorf("ShardName of a 60-character task is %d characters", len(got))
	}
}

func TestActionName(t *testing.T) {
	tests := []struct {
		action siteopsv1.DeploymentTaskAction
		want   string
	}{
		{siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: "true"}}, "runScript"},
		{siteopsv1.DeploymentTaskAction{Reboot: &siteopsv1.RebootAction{}}, "reboot"},
		{siteopsv1.DeploymentTaskAction{InstallSoftware: &siteopsv1.PackageAction{Package: "firefox"}}, "installSoftware"},
		{siteopsv1.DeploymentTaskAction{DeployImage: &siteopsv1.PackageAction{Package: "win11"}}, "deployImage"},
		{siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: "golden"}}, "captureImage"},
		{siteopsv1.DeploymentTaskAction{}, ""},
	}
	for _, tt := range tests {
		if got := ActionName(tt.action); got != tt.want {
			t.Errorf("ActionName(%+v) = %q, want %q", tt.action, got, tt.want)
		}
	}
}
