package tasks

import (
	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Counts are a task's targets by dispatch state.
type Counts struct {
	Total, Pending, Running, Succeeded, Failed int
}

// Room returns how many more targets may be handed work now under
// rollout.maxConcurrent, given how many run (claimed and not finished);
// -1 means no bound.
func Room(r *siteopsv1.DeploymentTaskRollout, running int) int {
	if r == nil || r.MaxConcurrent == nil {
		return -1
	}
	return max(0, int(*r.MaxConcurrent)-running)
}

// ThresholdPassed reports whether the failed targets are more than
// rollout.failureThreshold percent of all targets: dispatch stops.
func ThresholdPassed(r *siteopsv1.DeploymentTaskRollout, failed, total int) bool {
	if r == nil || r.FailureThreshold == nil || failed == 0 {
		return false
	}
	if total <= 0 {
		return true
	}
	// failed/total > threshold/100, in integers.
	return failed*100 > int(*r.FailureThreshold)*total
}
