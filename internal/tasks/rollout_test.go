package tasks

import (
	"testing"

	"k8s.io/utils/ptr"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func TestRoom(t *testing.T) {
	tests := []struct {
		name    string
		rollout *siteopsv1.DeploymentTaskRollout
		running int
		want    int
	}{
		{"no rollout: no bound", nil, 5, -1},
		{"no maxConcurrent: no bound", &siteopsv1.DeploymentTaskRollout{FailureThreshold: ptr.To[int32](10)}, 5, -1},
		{"none running", &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](3)}, 0, 3},
		{"some running", &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](3)}, 2, 1},
		{"full", &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](3)}, 3, 0},
		// Two task services dispatching at once may exceed the bound.
		{"over the bound: never negative", &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](3)}, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Room(tt.rollout, tt.running); got != tt.want {
				t.Errorf("Room(running %d) = %d, want %d", tt.running, got, tt.want)
			}
		})
	}
}

func TestThresholdPassed(t *testing.T) {
	threshold := func(pct int32) *siteopsv1.DeploymentTaskRollout {
		return &siteopsv1.DeploymentTaskRollout{FailureThreshold: ptr.To(pct)}
	}
	tests := []struct {
		name          string
		rollout       *siteopsv1.DeploymentTaskRollout
		failed, total int
		want          bool
	}{
		{"no rollout: never", nil, 100, 100, false},
		{"no failureThreshold: never", &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](1)}, 100, 100, false},
		{"threshold 0, no failure", threshold(0), 0, 100, false},
		{"threshold 0 stops at the first failure", threshold(0), 1, 100, true},
		{"10% of 100: 10 failures do not pass", threshold(10), 10, 100, false},
		{"10% of 100: 11 failures pass", threshold(10), 11, 100, true},
		{"10% of 7: 0.7 targets, 1 failure passes", threshold(10), 1, 7, true},
		{"50% of 3: 1 failure does not pass", threshold(50), 1, 3, false},
		{"50% of 3: 2 failures pass", threshold(50), 2, 3, true},
		{"100%: not even all failing passes", threshold(100), 100, 100, false},
		{"total 0, no failure", threshold(10), 0, 0, false},
		{"total 0, a failure", threshold(10), 1, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ThresholdPassed(tt.rollout, tt.failed, tt.total); got != tt.want {
				t.Errorf("ThresholdPassed(failed %d, total %d) = %v, want %v", tt.failed, tt.total, got, tt.want)
			}
		})
	}
}
