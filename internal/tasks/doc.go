// Package tasks holds the pure rules of DeploymentTasks that the manager
// and the task services share: which computers a task targets, when its
// schedule lets work start, how far its rollout may go, where a computer's
// dispatch entry lives, and the work item IDs. No client, no I/O.
package tasks
