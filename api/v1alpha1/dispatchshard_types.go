package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DispatchShards is how many shards a DeploymentTask's dispatch state is
// split into: a Computer's entry is in shard fnv32a(name) mod DispatchShards
// (internal/tasks.ShardOf), so every task service finds it in the same
// place, and a claim batch is one write per shard.
const DispatchShards = 64

// DispatchTaskLabel labels a DispatchShard with its task's name.
const DispatchTaskLabel = "siteops.io/deployment-task"

// States of a dispatch entry.
const (
	// DispatchClaimed: a task service claimed the work for the computer and
	// handed it out; no report yet.
	DispatchClaimed = "Claimed"
	// DispatchRunning: the agent reported that it runs the work.
	DispatchRunning = "Running"
	// DispatchSucceeded and DispatchFailed: the agent's final report.
	DispatchSucceeded = "Succeeded"
	DispatchFailed    = "Failed"
)

// Reasons of a failed target (TaskFailure.reason, DispatchEntry.reason,
// ComputerTask.reason).
const (
	FailureExitCode            = "ExitCode"
	FailureTimedOut            = "TimedOut"
	FailureInterrupted         = "Interrupted"
	FailureInterpreterNotFound = "InterpreterNotFound"
	FailureStartFailed         = "StartFailed"
	FailureLost                = "Lost"
)

// DispatchEntry is one computer's dispatch state for a task.
type DispatchEntry struct {
	// attempt numbers the claims of this work for this computer, from 1.
	Attempt int32 `json:"attempt"`
	// state is Claimed, Running, Succeeded or Failed.
	// +kubebuilder:validation:Enum=Claimed;Running;Succeeded;Failed
	State string `json:"state"`
	// server is the SiteServer whose task service claimed the work.
	// +kubebuilder:validation:MaxLength=253
	Server string `json:"server"`
	// claimed is when the work was claimed.
	Claimed metav1.Time `json:"claimed"`
	// finished is when the final report was recorded.
	// +optional
	Finished *metav1.Time `json:"finished,omitempty"`
	// reason of a failure (see TaskFailure.reason).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
	// exitCode of a script that ran to an end.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`
	// message of a failure, short.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Message string `json:"message,omitempty"`
}

// DispatchShardSpec names the task and the shard.
type DispatchShardSpec struct {
	// task is the DeploymentTask's name (same namespace).
	// +kubebuilder:validation:MaxLength=63
	Task string `json:"task"`
	// taskUID is the DeploymentTask's UID: a shard of an older task of the
	// same name is never read as this one's.
	// +kubebuilder:validation:MaxLength=64
	TaskUID string `json:"taskUID"`
	// shard is the shard's number, 0 to DispatchShards-1.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=63
	Shard int32 `json:"shard"`
}

// DispatchShard is internal: a part of a DeploymentTask's dispatch state,
// kept by the task services. Each entry says which computer was handed the
// work, by which server, and its result. Task services claim work by
// updating a shard with optimistic concurrency (its resourceVersion), so a
// restart, a second replica or a computer that moves to another site's
// server never hands the same work twice; many claims and results share
// one write. The DeploymentTask owns its shards (deleted with it); users
// read tasks and Computers, not shards.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=dshard
// +kubebuilder:printcolumn:name="Task",type=string,JSONPath=`.spec.task`
// +kubebuilder:printcolumn:name="Shard",type=integer,JSONPath=`.spec.shard`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type DispatchShard struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec names the task and the shard.
	// +required
	Spec DispatchShardSpec `json:"spec"`

	// entries are the computers of this shard that were handed the work,
	// by Computer name: each a DispatchEntry. Atomic: the task services
	// write many entries per request, and the API server then keeps one
	// managed-fields entry for the map instead of one per computer and
	// field, which would cost more than the entries themselves on every
	// write. Schemaless (unknown fields preserved): every write of a shard
	// makes the API server walk the whole object through its schema, and
	// typed entries cost it about three times the CPU of the same bytes
	// unchecked (106 against 37 ms for a shard of 780 entries, 86 KB; see
	// docs/benchmarks.md, "DispatchShard writes"). Only the task services
	// write shards, from this type, and readers decode them into it.
	// +optional
	// +mapType=atomic
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:MaxProperties=50000
	Entries map[string]DispatchEntry `json:"entries,omitempty"`
}

// DispatchShardList is a list of DispatchShards.
//
// +kubebuilder:object:root=true
type DispatchShardList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DispatchShard `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DispatchShard{}, &DispatchShardList{})
}
