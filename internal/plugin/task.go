package plugin

import (
	"fmt"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// TaskReport is the output of `kubectl siteops task <name>`.
type TaskReport struct {
	// Namespace is the DeploymentTask's namespace.
	Namespace string `json:"namespace"`
	// Name is its name.
	Name string `json:"name"`
	// Action is the member of spec.action: runScript, reboot,
	// deployImage, installSoftware or captureImage.
	Action string `json:"action"`
	// Package is the Package the action needs; "" for none.
	Package string `json:"package,omitempty"`
	// Phase is status.phase.
	Phase string `json:"phase"`
	// Progress is status.progress, "<succeeded>/<total>".
	Progress string `json:"progress"`
	// StartTime is when work could first be handed out.
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// CompletionTime is when the task succeeded, failed or stopped.
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
	// Ready is the task's Ready condition.
	Ready Condition `json:"ready"`
	// ContentReady is its ContentReady condition.
	ContentReady Condition `json:"contentReady"`
	// Targets counts the targets by state.
	Targets siteopsv1.TargetCounts `json:"targets"`
	// Sites counts the targets per site ("" for those in no site) and
	// says whether the content is ready there.
	Sites []siteopsv1.TaskSiteStatus `json:"sites"`
	// Failures are the first failed targets (status.failures, at most
	// 100); Targets.Failed counts them all.
	Failures []siteopsv1.TaskFailure `json:"failures"`
	// MissingComputers are targeted names with no Computer.
	MissingComputers []string `json:"missingComputers"`
}

// BuildTask makes the report of a DeploymentTask from its status.
func BuildTask(task *siteopsv1.DeploymentTask) TaskReport {
	pkg, _ := task.Spec.Action.Package()
	return TaskReport{
		Namespace:        task.Namespace,
		Name:             task.Name,
		Action:           actionName(task),
		Package:          pkg,
		Phase:            task.Status.Phase,
		Progress:         task.Status.Progress,
		StartTime:        task.Status.StartTime,
		CompletionTime:   task.Status.CompletionTime,
		Ready:            conditionOf(task.Status.Conditions, siteopsv1.ConditionReady),
		ContentReady:     conditionOf(task.Status.Conditions, siteopsv1.ConditionContentReady),
		Targets:          task.Status.Targets,
		Sites:            nonNil(task.Status.Sites),
		Failures:         nonNil(task.Status.Failures),
		MissingComputers: nonNil(task.Status.MissingComputers),
	}
}

// actionName is status.action, or the member of spec.action set when the
// manager has not reported it yet.
func actionName(task *siteopsv1.DeploymentTask) string {
	if task.Status.Action != "" {
		return task.Status.Action
	}
	a := task.Spec.Action
	switch {
	case a.RunScript != nil:
		return "runScript"
	case a.Reboot != nil:
		return "reboot"
	case a.DeployImage != nil:
		return "deployImage"
	case a.InstallSoftware != nil:
		return "installSoftware"
	case a.CaptureImage != nil:
		return "captureImage"
	}
	return ""
}

// writeText writes the task's progress per site and its failures.
func (r TaskReport) writeText(t *text, now time.Time) {
	t.line("DeploymentTask %s/%s", r.Namespace, r.Name)
	action := orNone(r.Action)
	if r.Package != "" {
		action += " of Package " + r.Package
	}
	t.field("Action", action)
	phase := orNone(r.Phase)
	if r.Progress != "" {
		phase += ", " + r.Progress + " succeeded"
	}
	t.field("Phase", phase)
	// The Ready message says more than the phase once the task stopped,
	// failed, or cannot start; while it runs it repeats the counts.
	if r.Ready.Status == metav1.ConditionFalse && r.Ready.Reason != siteopsv1.ReasonTaskRunning && r.Ready.Message != "" {
		t.field("", r.Ready.Message)
	}
	t.field("Started", when(r.StartTime, now))
	if r.CompletionTime != nil {
		t.field("Completed", when(r.CompletionTime, now))
	}
	content := r.ContentReady.text()
	if r.ContentReady.Status == metav1.ConditionFalse && r.ContentReady.Message != "" {
		content += ": " + r.ContentReady.Message
	}
	t.field("Content ready", content)
	c := r.Targets
	t.field("Targets", fmt.Sprintf("%d total: %d pending, %d running, %d succeeded, %d failed",
		c.Total, c.Pending, c.Running, c.Succeeded, c.Failed))
	if len(r.MissingComputers) > 0 {
		t.field("Missing computers", joinOr(r.MissingComputers))
	}

	t.line("")
	if len(r.Sites) == 0 {
		t.line("Sites: (none yet)")
	} else {
		rows := [][]string{{"SITE", "CONTENT", "TOTAL", "PENDING", "RUNNING", "SUCCEEDED", "FAILED"}}
		for _, s := range r.Sites {
			content := "waiting"
			if s.ContentReady {
				content = "ready"
			}
			n := s.Targets
			rows = append(rows, []string{siteName(s.Site), content, itoa(n.Total), itoa(n.Pending),
				itoa(n.Running), itoa(n.Succeeded), itoa(n.Failed)})
		}
		t.table("", rows)
	}

	t.line("")
	switch {
	case len(r.Failures) == 0 && c.Failed == 0:
		t.line("Failures: none")
		return
	case int(c.Failed) > len(r.Failures):
		t.line("Failures (the first %d of %d):", len(r.Failures), c.Failed)
	default:
		t.line("Failures (%d):", len(r.Failures))
	}
	if len(r.Failures) == 0 {
		return
	}
	rows := [][]string{{"COMPUTER", "REASON", "EXIT", "MESSAGE"}}
	for _, f := range r.Failures {
		exit := "-"
		if f.ExitCode != nil {
			exit = strconv.Itoa(int(*f.ExitCode))
		}
		rows = append(rows, []string{f.Computer, f.Reason, exit, f.Message})
	}
	t.table("", rows)
}

// siteName shows the site of targets in no site as "(no site)".
func siteName(site string) string {
	if site == "" {
		return "(no site)"
	}
	return site
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
