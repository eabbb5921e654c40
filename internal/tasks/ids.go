package tasks

import (
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// ShardOf is the dispatch shard that holds computer's entry.
func ShardOf(computer string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(computer))
	return int32(h.Sum32() % siteopsv1.DispatchShards)
}

// ShardName is the name of a task's dispatch shard n: "<task>.<nn>" (task
// names are at most 60 characters, so it is a valid object name).
func ShardName(task string, n int32) string {
	return fmt.Sprintf("%s.%02d", task, n)
}

// WorkID is the ID of a work item: "<task UID>.<attempt>".
func WorkID(taskUID string, attempt int32) string {
	return taskUID + "." + strconv.FormatInt(int64(attempt), 10)
}

// ParseWorkID splits a work item ID into the task's UID and the attempt.
func ParseWorkID(id string) (taskUID string, attempt int32, err error) {
	i := strings.LastIndexByte(id, '.')
	if i <= 0 || len(id) > 80 {
		return "", 0, fmt.Errorf("work ID %q is not <task UID>.<attempt>", id)
	}
	// Only the form WorkID writes: "01" or "+1" would name attempt 1 by
	// another ID.
	n, err := strconv.ParseInt(id[i+1:], 10, 32)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != id[i+1:] {
		return "", 0, fmt.Errorf("work ID %q is not <task UID>.<attempt>", id)
	}
	return id[:i], int32(n), nil
}

// ActionName names the member of the action that is set, for
// status.action.
func ActionName(a siteopsv1.DeploymentTaskAction) string {
	switch {
	case a.RunScript != nil:
		return "runScript"
	case a.Reboot != nil:
		return "reboot"
	case a.InstallSoftware != nil:
		return "installSoftware"
	case a.DeployImage != nil:
		return "deployImage"
	case a.CaptureImage != nil:
		return "captureImage"
	}
	return ""
}
