package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DeploymentTaskAction is what the agents do: exactly one member is set.
// +kubebuilder:validation:XValidation:rule="[has(self.runScript), has(self.reboot), has(self.installSoftware), has(self.deployImage), has(self.captureImage)].filter(x, x).size() == 1",message="spec.action must set exactly one of runScript, reboot, installSoftware, deployImage or captureImage"
type DeploymentTaskAction struct {
	// runScript runs a script on each target with an interpreter.
	// +optional
	RunScript *RunScriptAction `json:"runScript,omitempty"`

	// reboot restarts each target (the agent reports success first).
	// +optional
	Reboot *RebootAction `json:"reboot,omitempty"`

	// installSoftware runs a Software Package's content, an installer
	// program, on each target: its exit code decides, as for a script. A
	// site's targets get the work once the content is Ready at that site.
	// +optional
	InstallSoftware *PackageAction `json:"installSoftware,omitempty"`

	// deployImage writes a DiskImage Package to the disk each target's
	// agent is configured with (its --disk). A site's targets get the work
	// once the content is Ready at that site.
	// +optional
	DeployImage *PackageAction `json:"deployImage,omitempty"`

	// captureImage uploads the disk of the one target (its agent's
	// --disk) to a package service of its site, which makes it the
	// DiskImage Package packageName (source.captured), replicated by its
	// policy like any other.
	// +optional
	CaptureImage *CaptureImageAction `json:"captureImage,omitempty"`
}

// Package returns the name of the Package the action needs (deployImage,
// installSoftware) and the type that Package must have; "" for the
// actions that need none.
func (a DeploymentTaskAction) Package() (name string, typ PackageType) {
	switch {
	case a.DeployImage != nil:
		return a.DeployImage.Package, PackageDiskImage
	case a.InstallSoftware != nil:
		return a.InstallSoftware.Package, PackageSoftware
	}
	return "", ""
}

// Interpreters a runScript action may name.
const (
	InterpreterSh         = "sh"
	InterpreterBash       = "bash"
	InterpreterPython3    = "python3"
	InterpreterPowerShell = "powershell"
	InterpreterPwsh       = "pwsh"
	InterpreterCmd        = "cmd"
)

// MaxScriptBytes is the largest script a runScript action may carry.
const MaxScriptBytes = 32 << 10

// RunScriptAction runs a script.
type RunScriptAction struct {
	// script is the script's text, at most 32 KiB. The agent writes it to a
	// file of its own and runs the interpreter on that file.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32768
	Script string `json:"script"`

	// interpreter runs the script: sh, bash or python3 (Linux, macOS);
	// powershell, pwsh or cmd (Windows; pwsh also elsewhere). Default sh.
	// An interpreter the computer lacks fails the target with reason
	// InterpreterNotFound.
	// +optional
	// +kubebuilder:default=sh
	// +kubebuilder:validation:Enum=sh;bash;python3;powershell;pwsh;cmd
	Interpreter string `json:"interpreter,omitempty"`

	// timeout bounds one run: the agent kills the script past it and
	// reports the target Failed with reason TimedOut. Default 10m, from 1s
	// to 24h.
	// +optional
	// +kubebuilder:default="10m0s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1s') && duration(self) <= duration('24h')",message="spec.action.runScript.timeout must be from 1s to 24h"
	Timeout metav1.Duration `json:"timeout,omitempty"`
}

// RebootAction restarts the computer. It has no fields.
type RebootAction struct{}

// PackageAction names a Package in the task's namespace.
type PackageAction struct {
	// package is the name of a Package in the task's namespace: a
	// DiskImage for deployImage, a Software package for installSoftware.
	// A missing Package, or one of another type, holds the task in
	// WaitingForContent with the reason in its ContentReady condition.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Package string `json:"package"`

	// timeout bounds the work on one target, download included: the agent
	// stops past it and reports the target Failed, with reason
	// ContentUnavailable when the download did not finish in time, and
	// TimedOut when the disk write or the installer ran past it.
	// Default 1h, from 1m to 24h. (Defaults are written the way Go prints
	// a duration, so that a Go client that reads the task and writes it
	// back sends the same string, which the immutability rule compares.)
	// +optional
	// +kubebuilder:default="1h0m0s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="the timeout of a package action must be from 1m to 24h"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// CaptureImageAction names the Package a capture makes.
type CaptureImageAction struct {
	// packageName is the name of the DiskImage Package the capture
	// creates in the task's namespace. If it exists already with other
	// content, the capture fails and the Package is left as it is.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	PackageName string `json:"packageName"`

	// timeout bounds the capture, upload included: the agent stops past
	// it and reports the target Failed, with reason UploadFailed when the
	// upload did not finish in time (TimedOut while it still read the
	// disk). Default 1h, from 1m to 24h.
	// +optional
	// +kubebuilder:default="1h0m0s"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="spec.action.captureImage.timeout must be from 1m to 24h"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// DeploymentTaskTargets are the computers a task is for: the union of the
// three, each computer once. Computers are those of the task's namespace.
// +kubebuilder:validation:XValidation:rule="(has(self.computers) && self.computers.size() > 0) || has(self.selector) || (has(self.sites) && self.sites.size() > 0)",message="spec.targets must name at least one of computers, selector or sites"
type DeploymentTaskTargets struct {
	// computers are names of Computers. A name with no Computer is
	// reported in status.missingComputers, not an error: it is included as
	// soon as the Computer exists while the task runs.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=1000
	// +kubebuilder:validation:items:MaxLength=63
	Computers []string `json:"computers,omitempty"`

	// selector selects Computers by their labels. An empty selector ({})
	// selects every Computer of the namespace.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// sites selects every Computer whose agent is in one of these Sites
	// (status.site).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=63
	Sites []string `json:"sites,omitempty"`
}

// Weekdays a maintenance window may name.
// +kubebuilder:validation:Enum=Mon;Tue;Wed;Thu;Fri;Sat;Sun
type Weekday string

// MaintenanceWindow is a recurring time in which work may start.
type MaintenanceWindow struct {
	// start is the local time of day the window opens, "HH:MM" (24 h). On
	// the day clocks spring forward, a start inside the skipped hour opens
	// the window at the first instant after the gap.
	// +required
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`

	// duration is how long the window stays open, elapsed time, from 1m to
	// 24h. A window may cross midnight: 22:00 for 4h closes at 02:00.
	// +required
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('24h')",message="a window's duration must be from 1m to 24h"
	Duration metav1.Duration `json:"duration"`

	// timeZone is the IANA time zone of start, such as Europe/Paris.
	// Default UTC. An unknown zone stops the task from starting and is
	// reported in its Ready condition (reason InvalidSchedule).
	// +optional
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$`
	TimeZone string `json:"timeZone,omitempty"`

	// days are the local days on which the window opens (a window that
	// crosses midnight belongs to the day it opens). Default every day.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=7
	Days []Weekday `json:"days,omitempty"`
}

// DeploymentTaskSchedule says when work may start.
type DeploymentTaskSchedule struct {
	// startAt is the earliest time work starts; absent: at once.
	// +optional
	StartAt *metav1.Time `json:"startAt,omitempty"`

	// window is a recurring maintenance window: work starts only inside
	// it, and no new work starts outside it (work already started runs to
	// its end). Absent: any time.
	// +optional
	Window *MaintenanceWindow `json:"window,omitempty"`
}

// DeploymentTaskRollout bounds how fast work spreads.
type DeploymentTaskRollout struct {
	// maxConcurrent is the most targets running the work at once, across
	// all sites. Absent: no bound. Each task service enforces it from what
	// it sees of the dispatch state, so two task services dispatching at
	// the same instant may exceed it by the work they hand out in that
	// instant.
	// +optional
	// +kubebuilder:validation:Minimum=1
	MaxConcurrent *int32 `json:"maxConcurrent,omitempty"`

	// failureThreshold is a percentage of the targets (0 to 100): once the
	// failed targets are more than this share of all targets, no new work
	// is handed out and the task stops with phase Stopped. Absent: never
	// stop for failures. 0 stops at the first failure.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	FailureThreshold *int32 `json:"failureThreshold,omitempty"`
}

// DeploymentTaskSpec is a job for a set of computers.
// +kubebuilder:validation:XValidation:rule="!has(self.action.captureImage) || (has(self.targets.computers) && self.targets.computers.size() == 1 && !has(self.targets.selector) && (!has(self.targets.sites) || self.targets.sites.size() == 0))",message="spec.action.captureImage needs exactly one target, named in spec.targets.computers (no selector, no sites): one capture makes one Package"
type DeploymentTaskSpec struct {
	// action is what the agents do.
	// +required
	Action DeploymentTaskAction `json:"action"`

	// targets are the computers it is for.
	// +required
	Targets DeploymentTaskTargets `json:"targets"`

	// schedule says when work may start; absent: at once, any time.
	// +optional
	Schedule *DeploymentTaskSchedule `json:"schedule,omitempty"`

	// rollout bounds how fast work spreads; absent: no bound.
	// +optional
	Rollout *DeploymentTaskRollout `json:"rollout,omitempty"`

	// stop, once true, stops the task early: no new work is handed out
	// (work already running runs to its end) and the phase becomes Stopped.
	// It is the one field that may change once the task started, and only
	// from false to true.
	// +optional
	Stop bool `json:"stop,omitempty"`
}

// Phases of a DeploymentTask.
const (
	// TaskPending: no work handed out yet (before startAt, outside the
	// window, or no target yet).
	TaskPending = "Pending"
	// TaskWaitingForContent: nothing handed out yet, and the package is
	// not ready at any target's site (or does not exist).
	TaskWaitingForContent = "WaitingForContent"
	// TaskRunning: work is being handed out or carried out.
	TaskRunning = "Running"
	// TaskSucceeded: every target succeeded.
	TaskSucceeded = "Succeeded"
	// TaskFailed: every target finished, and some failed.
	TaskFailed = "Failed"
	// TaskStopped: stopped by spec.stop or by the failure threshold.
	TaskStopped = "Stopped"
)

// Reasons of a DeploymentTask's conditions (Ready, Reconciling, Stalled).
const (
	ReasonTaskPending      = "Pending"
	ReasonTaskRunning      = "Running"
	ReasonTaskSucceeded    = "Succeeded"
	ReasonTaskFailed       = "Failed"
	ReasonTaskStopped      = "Stopped"
	ReasonThresholdPassed  = "FailureThresholdPassed"
	ReasonNoTargets        = "NoTargets"
	ReasonInvalidSchedule  = "InvalidSchedule"
	ReasonInvalidSelector  = "InvalidSelector"
	ReasonWaitingForWindow = "WaitingForWindow"
)

// ConditionContentReady is True when the package the action needs is
// Ready at every site of the task's targets (always for the actions that
// need none); False names the sites that wait, or why the package cannot
// be used.
const ConditionContentReady = "ContentReady"

// Reasons of a DeploymentTask's ContentReady condition (and of its Ready
// condition while it waits for content).
const (
	ReasonNoContentNeeded   = "NoContentNeeded"
	ReasonContentReady      = "ContentReady"
	ReasonWaitingForContent = "WaitingForContent"
	ReasonPackageNotFound   = "PackageNotFound"
	ReasonWrongPackageType  = "WrongPackageType"
)

// TargetCounts counts a task's targets by state.
type TargetCounts struct {
	// total is every target: pending + running + succeeded + failed.
	Total int32 `json:"total"`
	// pending: no work handed out yet.
	Pending int32 `json:"pending"`
	// running: work handed out, no result yet.
	Running int32 `json:"running"`
	// succeeded: the work succeeded.
	Succeeded int32 `json:"succeeded"`
	// failed: the work failed, timed out, was interrupted, or its agent
	// never reported within the action's timeout and a grace period.
	Failed int32 `json:"failed"`
}

// TaskSiteStatus is a task's state at one site.
type TaskSiteStatus struct {
	// site is the Site's name; "" for the targets in no site.
	// +kubebuilder:validation:MaxLength=63
	Site string `json:"site"`
	// contentReady is true when the content the action needs is ready at
	// the site (always true for actions without a package).
	ContentReady bool `json:"contentReady"`
	// targets counts the site's targets by state.
	Targets TargetCounts `json:"targets"`
}

// TaskFailure is one failed target.
type TaskFailure struct {
	// computer is the Computer's name.
	// +kubebuilder:validation:MaxLength=63
	Computer string `json:"computer"`
	// reason is ExitCode, TimedOut, Interrupted, InterpreterNotFound,
	// StartFailed, ContentUnavailable, DiskFailed, UploadFailed or Lost
	// (no report within the timeout and grace).
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// exitCode is the script's exit code, when it ran to an end.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`
	// message is a short description; the output is on the Computer's
	// status.lastTask.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Message string `json:"message,omitempty"`
	// time is when the failure was recorded.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// MaxTaskFailures bounds status.failures; MaxMissingComputers bounds
// status.missingComputers.
const (
	MaxTaskFailures     = 100
	MaxMissingComputers = 100
	MaxTaskSites        = 500
)

// DeploymentTaskStatus is the task's progress; per-computer detail is on
// each Computer's status.lastTask.
type DeploymentTaskStatus struct {
	// observedGeneration is the metadata.generation this status is for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// phase is Pending, WaitingForContent, Running, Succeeded, Failed or
	// Stopped.
	// +optional
	// +kubebuilder:validation:Enum=Pending;WaitingForContent;Running;Succeeded;Failed;Stopped
	Phase string `json:"phase,omitempty"`

	// action names spec.action's member (runScript, reboot, ...), for the
	// printer column.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Action string `json:"action,omitempty"`

	// progress is "<succeeded>/<total>", for the printer column.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Progress string `json:"progress,omitempty"`

	// startTime is when the task started: the manager sets it when work
	// may first be handed out, and the task services hand out none before
	// it is set for the current generation. From then on the spec is
	// immutable except spec.stop.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the phase became Succeeded, Failed or Stopped.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// targets counts the targets by state.
	// +optional
	Targets TargetCounts `json:"targets,omitzero"`

	// sites counts the targets per site (at most 500 sites). Atomic: the
	// manager writes it whole, and its managed fields stay one entry
	// rather than one per site.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=500
	Sites []TaskSiteStatus `json:"sites,omitempty"`

	// failures are the first failed targets (at most 100); failed counts
	// them all.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	Failures []TaskFailure `json:"failures,omitempty"`

	// missingComputers are names in spec.targets.computers with no
	// Computer (at most 100).
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=100
	MissingComputers []string `json:"missingComputers,omitempty"`

	// conditions: Ready is True when every target succeeded; ContentReady
	// when the package the action needs is Ready at every target's site;
	// Reconciling while the task is pending, waiting for content or
	// running; Stalled once it failed or stopped, or when its schedule or
	// selector cannot be used.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// DeploymentTask is a job for a set of computers: run now, at a given time,
// or in a maintenance window. Its work is handed out by the task services
// that serve its targets and carried out by their agents.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=dt,categories=siteops
// +kubebuilder:printcolumn:name="Action",type=string,JSONPath=`.status.action`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Succeeded",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Failed",type=integer,JSONPath=`.status.targets.failed`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 60 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name of a DeploymentTask must be at most 60 lower-case letters, digits and '-', starting and ending with a letter or digit (it names the task's dispatch shards)"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.status) || !has(oldSelf.status.startTime) || (self.spec.action == oldSelf.spec.action && self.spec.targets == oldSelf.spec.targets && has(self.spec.schedule) == has(oldSelf.spec.schedule) && (!has(self.spec.schedule) || self.spec.schedule == oldSelf.spec.schedule) && has(self.spec.rollout) == has(oldSelf.spec.rollout) && (!has(self.spec.rollout) || self.spec.rollout == oldSelf.spec.rollout))",message="spec is immutable once the task started (status.startTime is set), except spec.stop"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec.stop) || !oldSelf.spec.stop || (has(self.spec.stop) && self.spec.stop)",message="spec.stop cannot be undone: a stopped task stays stopped; create a new task"
type DeploymentTask struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the job.
	// +required
	Spec DeploymentTaskSpec `json:"spec"`

	// status is its progress.
	// +optional
	Status DeploymentTaskStatus `json:"status,omitempty"`
}

// DeploymentTaskList is a list of DeploymentTasks.
//
// +kubebuilder:object:root=true
type DeploymentTaskList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeploymentTask `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DeploymentTask{}, &DeploymentTaskList{})
}
