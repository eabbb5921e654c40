package controllers

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/tasks"
)

var taskNow = time.Date(2026, 3, 2, 10, 0, 0, 0, time.UTC)

const testTaskUID = "0b6f7d1e-task"

// testTask is a runScript task (timeout 1m) for the Computers labelled
// role=kiosk, started by nothing yet.
func testTask(change ...func(*siteopsv1.DeploymentTask)) *siteopsv1.DeploymentTask {
	t := &siteopsv1.DeploymentTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "patch", UID: testTaskUID, Generation: 1},
		Spec: siteopsv1.DeploymentTaskSpec{
			Action: siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: "true",
				Interpreter: "sh", Timeout: metav1.Duration{Duration: time.Minute}}},
			Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"role": "kiosk"}}},
		},
	}
	for _, c := range change {
		c(t)
	}
	return t
}

func kiosk(name, site string) siteopsv1.Computer {
	c := siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: name,
		Labels: map[string]string{"role": "kiosk"}}}
	c.Status.Site = site
	return c
}

func ago(d time.Duration) metav1.Time { return metav1.NewTime(taskNow.Add(-d)) }

func claimed(at metav1.Time) siteopsv1.DispatchEntry {
	return siteopsv1.DispatchEntry{Attempt: 1, State: siteopsv1.DispatchClaimed, Server: "paris-srv", Claimed: at}
}

func succeeded(at metav1.Time) siteopsv1.DispatchEntry {
	e := claimed(at)
	e.State, e.Finished = siteopsv1.DispatchSucceeded, ptr.To(metav1.NewTime(at.Add(10*time.Second)))
	return e
}

func failed(at metav1.Time, code int32, message string) siteopsv1.DispatchEntry {
	e := claimed(at)
	e.State, e.Finished = siteopsv1.DispatchFailed, ptr.To(metav1.NewTime(at.Add(10*time.Second)))
	e.Reason, e.ExitCode, e.Message = siteopsv1.FailureExitCode, ptr.To(code), message
	return e
}

// shardsOf puts entries into the task's shards, as the task services do.
func shardsOf(uid types.UID, entries map[string]siteopsv1.DispatchEntry) []siteopsv1.DispatchShard {
	byShard := map[int32]*siteopsv1.DispatchShard{}
	var shards []siteopsv1.DispatchShard
	for name, e := range entries {
		n := tasks.ShardOf(name)
		sh := byShard[n]
		if sh == nil {
			sh = &siteopsv1.DispatchShard{Spec: siteopsv1.DispatchShardSpec{Task: "patch", TaskUID: string(uid), Shard: n},
				Entries: map[string]siteopsv1.DispatchEntry{}}
			byShard[n] = sh
		}
		sh.Entries[name] = e
	}
	for _, sh := range byShard {
		shards = append(shards, *sh)
	}
	return shards
}

func verdictOf(task *siteopsv1.DeploymentTask, comps []siteopsv1.Computer, entries map[string]siteopsv1.DispatchEntry) taskVerdict {
	return desiredTaskStatus(&taskScope{task: task, now: taskNow, computers: comps, shards: shardsOf(task.UID, entries)})
}

func counts(total, pending, running, ok, bad int32) siteopsv1.TargetCounts {
	return siteopsv1.TargetCounts{Total: total, Pending: pending, Running: running, Succeeded: ok, Failed: bad}
}

func TestDeploymentTaskCounts(t *testing.T) {
	task := testTask(func(t *siteopsv1.DeploymentTask) {
		t.Spec.Targets.Computers = []string{"named-1", "gone-1", "gone-2"}
	})
	comps := []siteopsv1.Computer{
		kiosk("k-pending", "paris"), kiosk("k-running", "paris"), kiosk("k-ok", "lyon"), kiosk("k-bad", ""),
		// Not selected: a label that does not match; but named.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "named-1"}},
		// Left the selector after it was handed the work: still counts.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "relabelled", Labels: map[string]string{"role": "desk"}},
			Status: siteopsv1.ComputerStatus{Site: "lyon"}},
		// Neither selected nor handed the work.
		{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "other", Labels: map[string]string{"role": "desk"}}},
	}
	entries := map[string]siteopsv1.DispatchEntry{
		"k-running":  claimed(ago(30 * time.Second)),
		"k-ok":       succeeded(ago(2 * time.Minute)),
		"k-bad":      failed(ago(3*time.Minute), 3, "exit status 3"),
		"relabelled": succeeded(ago(4 * time.Minute)),
		// A computer deleted after it succeeded: counted, in no site.
		"deleted": succeeded(ago(5 * time.Minute)),
	}
	v := verdictOf(task, comps, entries)
	s := v.status

	if want := counts(7, 2, 1, 3, 1); s.Targets != want {
		t.Errorf("targets: got %+v, want %+v", s.Targets, want)
	}
	if s.Progress != "3/7" || s.Action != "runScript" || s.Phase != siteopsv1.TaskRunning {
		t.Errorf("progress %q, action %q, phase %q: want 3/7, runScript, Running", s.Progress, s.Action, s.Phase)
	}
	wantSites := []siteopsv1.TaskSiteStatus{
		{Site: "", ContentReady: true, Targets: counts(3, 1, 0, 1, 1)}, // named-1, deleted, k-bad
		{Site: "lyon", ContentReady: true, Targets: counts(2, 0, 0, 2, 0)},
		{Site: "paris", ContentReady: true, Targets: counts(2, 1, 1, 0, 0)},
	}
	if !equality.Semantic.DeepEqual(s.Sites, wantSites) {
		t.Errorf("sites: got %+v, want %+v", s.Sites, wantSites)
	}
	if want := []string{"gone-1", "gone-2"}; !equality.Semantic.DeepEqual(s.MissingComputers, want) {
		t.Errorf("missingComputers: got %q, want %q", s.MissingComputers, want)
	}
	if len(s.Failures) != 1 || s.Failures[0].Computer != "k-bad" || s.Failures[0].Reason != siteopsv1.FailureExitCode ||
		*s.Failures[0].ExitCode != 3 || s.Failures[0].Message != "exit status 3" {
		t.Errorf("failures: got %+v", s.Failures)
	}
	if want := ago(5 * time.Minute); s.StartTime == nil || !s.StartTime.Equal(&want) {
		t.Errorf("startTime: got %v, want the earliest claim %v", s.StartTime, want)
	}
	if got := condString(s.Conditions, siteopsv1.ConditionReconciling); got != "True/Running" {
		t.Errorf("Reconciling: got %q", got)
	}
	// The running entry turns Lost 1m+5m after its claim, 30s ago.
	if want := time.Minute + lostGrace - 30*time.Second; v.requeueAfter != want {
		t.Errorf("requeueAfter: got %s, want %s", v.requeueAfter, want)
	}

	what := "a shard of an older task of the same name is ignored"
	other := shardsOf("older-uid", map[string]siteopsv1.DispatchEntry{"k-pending": failed(ago(time.Hour), 1, "old")})
	scope := &taskScope{task: task, now: taskNow, computers: comps, shards: append(shardsOf(task.UID, entries), other...)}
	if got := desiredTaskStatus(scope).status.Targets; got != s.Targets {
		t.Errorf("%s: got %+v, want %+v", what, got, s.Targets)
	}
}

func TestDeploymentTaskLost(t *testing.T) {
	task := testTask()
	comps := []siteopsv1.Computer{kiosk("a", "paris"), kiosk("b", "paris"), kiosk("c", "paris")}
	lostAfter := time.Minute + lostGrace
	entries := map[string]siteopsv1.DispatchEntry{
		// Claimed just past the timeout and the grace: Lost.
		"a": claimed(ago(lostAfter + time.Second)),
		// Running (the agent reported it runs), past them too: Lost.
		"b": func() siteopsv1.DispatchEntry {
			e := claimed(ago(lostAfter + time.Hour))
			e.State = siteopsv1.DispatchRunning
			return e
		}(),
		// Claimed within them: running, Lost in 10s.
		"c": claimed(ago(lostAfter - 10*time.Second)),
	}
	v := verdictOf(task, comps, entries)
	if want := counts(3, 0, 1, 0, 2); v.status.Targets != want {
		t.Fatalf("targets: got %+v, want %+v", v.status.Targets, want)
	}
	if v.requeueAfter != 10*time.Second {
		t.Errorf("requeueAfter: got %s, want 10s (when c turns Lost)", v.requeueAfter)
	}
	f := v.status.Failures
	if len(f) != 2 || f[0].Computer != "b" || f[1].Computer != "a" {
		t.Fatalf("failures: got %+v, want b then a (oldest first)", f)
	}
	for _, x := range f {
		if x.Reason != siteopsv1.FailureLost || x.ExitCode != nil || !strings.Contains(x.Message, "paris-srv") {
			t.Errorf("failure %+v: want reason Lost naming the server", x)
		}
	}
	if want := ago(time.Second); !f[1].Time.Equal(&want) {
		t.Errorf("a turned Lost at %v, want claim + timeout + grace = %v", f[1].Time, want)
	}

	// A reboot has the default timeout.
	reboot := testTask(func(t *siteopsv1.DeploymentTask) {
		t.Spec.Action = siteopsv1.DeploymentTaskAction{Reboot: &siteopsv1.RebootAction{}}
	})
	v = verdictOf(reboot, comps, entries)
	if want := counts(3, 0, 2, 0, 1); v.status.Targets != want {
		t.Errorf("reboot targets: got %+v, want %+v (Lost after %s)", v.status.Targets, want, defaultActionTimeout+lostGrace)
	}
}

func TestDeploymentTaskFailures(t *testing.T) {
	task := testTask()
	var comps []siteopsv1.Computer
	entries := map[string]siteopsv1.DispatchEntry{}
	long := strings.Repeat("é", 300) // 600 bytes
	for i := range 150 {
		name := fmt.Sprintf("k-%03d", i)
		comps = append(comps, kiosk(name, "paris"))
		// Two at each finishing second, newest first by index.
		entries[name] = failed(ago(time.Duration(1000-i/2)*time.Second), int32(i), long)
	}
	s := verdictOf(task, comps, entries).status
	if s.Targets.Failed != 150 || len(s.Failures) != siteopsv1.MaxTaskFailures {
		t.Fatalf("failed %d, failures listed %d: want 150 and %d", s.Targets.Failed, len(s.Failures), siteopsv1.MaxTaskFailures)
	}
	for i, f := range s.Failures {
		if want := fmt.Sprintf("k-%03d", i); f.Computer != want {
			t.Fatalf("failures[%d] is %s, want %s (oldest first, then by name)", i, f.Computer, want)
		}
		if len(f.Message) > maxFailureMessage || !strings.HasPrefix(long, f.Message) || len(f.Message) < maxFailureMessage-1 {
			t.Fatalf("failures[%d].message: %d bytes, want cut on a rune boundary to at most %d", i, len(f.Message), maxFailureMessage)
		}
	}
	if s.Phase != siteopsv1.TaskFailed || condString(s.Conditions, siteopsv1.ConditionStalled) != "True/Failed" ||
		condString(s.Conditions, siteopsv1.ConditionReady) != "False/Failed" {
		t.Errorf("phase %s, conditions %+v: want Failed, Stalled", s.Phase, s.Conditions)
	}
}

func TestDeploymentTaskPhases(t *testing.T) {
	comps := []siteopsv1.Computer{kiosk("a", "paris"), kiosk("b", "lyon")}
	bothOK := map[string]siteopsv1.DispatchEntry{"a": succeeded(ago(time.Minute)), "b": succeeded(ago(time.Minute))}
	oneBad := map[string]siteopsv1.DispatchEntry{"a": succeeded(ago(time.Minute)), "b": failed(ago(time.Minute), 1, "")}
	window := func(start string, days ...siteopsv1.Weekday) func(*siteopsv1.DeploymentTask) {
		return func(t *siteopsv1.DeploymentTask) {
			t.Spec.Schedule = &siteopsv1.DeploymentTaskSchedule{Window: &siteopsv1.MaintenanceWindow{
				Start: start, Duration: metav1.Duration{Duration: time.Hour}, TimeZone: "Europe/Paris", Days: days}}
		}
	}
	threshold := func(pct int32) func(*siteopsv1.DeploymentTask) {
		return func(t *siteopsv1.DeploymentTask) {
			t.Spec.Rollout = &siteopsv1.DeploymentTaskRollout{FailureThreshold: ptr.To(pct)}
		}
	}
	// taskNow is Monday 2026-03-02 10:00 UTC, 11:00 in Paris.
	tests := []struct {
		name        string
		task        *siteopsv1.DeploymentTask
		comps       []siteopsv1.Computer
		entries     map[string]siteopsv1.DispatchEntry
		wantPhase   string
		wantReady   string
		wantKstatus string // Reconciling or Stalled condition, "" for neither
		wantMessage string
		wantRequeue time.Duration
	}{{
		name: "no Computer matches", task: testTask(), wantPhase: "Pending",
		wantReady: "False/NoTargets", wantKstatus: "Reconciling", wantMessage: "No Computer matches",
	}, {
		name: "targets, schedule open, nothing handed out yet", task: testTask(), comps: comps,
		wantPhase: "Running", wantReady: "False/Running", wantKstatus: "Reconciling", wantMessage: "0/2 succeeded",
	}, {
		name: "before startAt", comps: comps,
		task: testTask(func(t *siteopsv1.DeploymentTask) {
			t.Spec.Schedule = &siteopsv1.DeploymentTaskSchedule{StartAt: ptr.To(metav1.NewTime(taskNow.Add(90 * time.Second)))}
		}),
		wantPhase: "Pending", wantReady: "False/Pending", wantKstatus: "Reconciling",
		wantMessage: "work may start at 2026-03-02T10:01:30Z", wantRequeue: 90 * time.Second,
	}, {
		name: "outside the window", comps: comps, task: testTask(window("22:00")),
		wantPhase: "Pending", wantReady: "False/WaitingForWindow", wantKstatus: "Reconciling",
		wantMessage: "opens next at 2026-03-02T21:00:00Z", wantRequeue: 11 * time.Hour,
	}, {
		name: "window on another day", comps: comps, task: testTask(window("10:00", "Wed")),
		wantPhase: "Pending", wantReady: "False/WaitingForWindow", wantKstatus: "Reconciling",
		wantMessage: "2026-03-04T09:00:00Z", wantRequeue: 47 * time.Hour,
	}, {
		name: "inside the window, nothing handed out: back to Pending when it closes", comps: comps,
		task:      testTask(window("10:30")),
		wantPhase: "Running", wantReady: "False/Running", wantKstatus: "Reconciling", wantRequeue: 30 * time.Minute,
	}, {
		name: "outside the window with work handed out: running", comps: comps, task: testTask(window("22:00")),
		entries:   map[string]siteopsv1.DispatchEntry{"a": succeeded(ago(time.Minute))},
		wantPhase: "Running", wantReady: "False/Running", wantKstatus: "Reconciling", wantMessage: "1/2 succeeded",
	}, {
		name: "every target succeeded", task: testTask(), comps: comps, entries: bothOK,
		wantPhase: "Succeeded", wantReady: "True/Succeeded", wantMessage: "All 2 targets succeeded",
	}, {
		name: "every target finished, one failed", task: testTask(), comps: comps, entries: oneBad,
		wantPhase: "Failed", wantReady: "False/Failed", wantKstatus: "Stalled", wantMessage: "1/2 succeeded, 1 failed",
	}, {
		name: "spec.stop", comps: comps, entries: map[string]siteopsv1.DispatchEntry{"a": claimed(ago(time.Minute))},
		task:      testTask(func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true }),
		wantPhase: "Stopped", wantReady: "False/Stopped", wantKstatus: "Stalled", wantMessage: "Stopped by spec.stop",
		wantRequeue: 5 * time.Minute, // the running entry still turns Lost
	}, {
		name: "spec.stop before anything was handed out", comps: comps,
		task:      testTask(func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true }),
		wantPhase: "Stopped", wantReady: "False/Stopped", wantKstatus: "Stalled", wantMessage: "0/2 succeeded, 0 failed, 0 running, 2 pending",
	}, {
		name: "failed past the threshold: 1 of 2 is more than 49%", task: testTask(threshold(49)), comps: comps,
		entries:   map[string]siteopsv1.DispatchEntry{"b": failed(ago(time.Minute), 1, "")},
		wantPhase: "Stopped", wantReady: "False/FailureThresholdPassed", wantKstatus: "Stalled", wantMessage: "More than 49%",
	}, {
		name: "failed at the threshold: 1 of 2 is not more than 50%", task: testTask(threshold(50)), comps: comps,
		entries:   map[string]siteopsv1.DispatchEntry{"b": failed(ago(time.Minute), 1, "")},
		wantPhase: "Running", wantReady: "False/Running", wantKstatus: "Reconciling",
	}, {
		name: "threshold 0 stops at the first failure, even the last target's", task: testTask(threshold(0)),
		comps: comps, entries: oneBad,
		wantPhase: "Stopped", wantReady: "False/FailureThresholdPassed", wantKstatus: "Stalled",
	}, {
		name: "an invalid selector", comps: comps,
		task: testTask(func(t *siteopsv1.DeploymentTask) {
			t.Spec.Targets.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "role", Operator: "Near", Values: []string{"kiosk"}}}}
		}),
		wantPhase: "Pending", wantReady: "False/InvalidSelector", wantKstatus: "Stalled", wantMessage: "spec.targets.selector",
	}, {
		name: "an unknown time zone", comps: comps,
		task: testTask(window("22:00"), func(t *siteopsv1.DeploymentTask) {
			t.Spec.Schedule.Window.TimeZone = "Mars/Olympus_Mons"
		}),
		wantPhase: "Pending", wantReady: "False/InvalidSchedule", wantKstatus: "Stalled", wantMessage: `"Mars/Olympus_Mons"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := verdictOf(tt.task, tt.comps, tt.entries)
			s := v.status
			if s.Phase != tt.wantPhase {
				t.Errorf("phase: got %s, want %s", s.Phase, tt.wantPhase)
			}
			if got := condString(s.Conditions, siteopsv1.ConditionReady); got != tt.wantReady {
				t.Errorf("Ready: got %s, want %s", got, tt.wantReady)
			}
			reconciling := meta.FindStatusCondition(s.Conditions, siteopsv1.ConditionReconciling)
			stalled := meta.FindStatusCondition(s.Conditions, siteopsv1.ConditionStalled)
			switch {
			case tt.wantKstatus == "" && (reconciling != nil || stalled != nil),
				tt.wantKstatus == "Reconciling" && (reconciling == nil || stalled != nil),
				tt.wantKstatus == "Stalled" && (stalled == nil || reconciling != nil):
				t.Errorf("kstatus conditions %+v: want %q only", s.Conditions, tt.wantKstatus)
			}
			ready := meta.FindStatusCondition(s.Conditions, siteopsv1.ConditionReady)
			if !strings.Contains(ready.Message, tt.wantMessage) {
				t.Errorf("Ready message %q: want it to contain %q", ready.Message, tt.wantMessage)
			}
			if v.requeueAfter != tt.wantRequeue {
				t.Errorf("requeueAfter: got %s, want %s", v.requeueAfter, tt.wantRequeue)
			}
			if (v.invalid != nil) != (tt.wantReady == "False/InvalidSelector" || tt.wantReady == "False/InvalidSchedule") {
				t.Errorf("invalid: got %v", v.invalid)
			}
			if terminal := terminalPhase(s.Phase); terminal != (s.CompletionTime != nil) {
				t.Errorf("completionTime %v for phase %s", s.CompletionTime, s.Phase)
			}
			if s.ObservedGeneration != tt.task.Generation {
				t.Errorf("observedGeneration %d, want %d", s.ObservedGeneration, tt.task.Generation)
			}

			// The status it computes is a fixed point: computed again from
			// itself, nothing changes (a steady state writes nothing).
			again := tt.task.DeepCopy()
			again.Status = *s
			if v2 := verdictOf(again, tt.comps, tt.entries); !equality.Semantic.DeepEqual(v2.status, s) {
				t.Errorf("not a fixed point:\n first %+v\nsecond %+v", s, v2.status)
			}
		})
	}
}

// A terminal phase latches: later changes of the Computers and the
// dispatch state keep it, and keep its completionTime.
func TestDeploymentTaskLatches(t *testing.T) {
	comps := []siteopsv1.Computer{kiosk("a", "paris"), kiosk("b", "lyon")}
	at := func(task *siteopsv1.DeploymentTask, comps []siteopsv1.Computer, entries map[string]siteopsv1.DispatchEntry,
		now time.Time) *siteopsv1.DeploymentTask {
		v := desiredTaskStatus(&taskScope{task: task, now: now, computers: comps, shards: shardsOf(task.UID, entries)})
		next := task.DeepCopy()
		next.Status = *v.status
		return next
	}

	t.Run("Succeeded stays Succeeded when a Computer joins the selector", func(t *testing.T) {
		done := at(testTask(), comps, map[string]siteopsv1.DispatchEntry{
			"a": succeeded(ago(time.Minute)), "b": succeeded(ago(time.Minute))}, taskNow)
		if done.Status.Phase != siteopsv1.TaskSucceeded {
			t.Fatalf("phase %s, want Succeeded", done.Status.Phase)
		}
		later := at(done, append(comps, kiosk("c", "paris")), map[string]siteopsv1.DispatchEntry{
			"a": succeeded(ago(time.Minute)), "b": succeeded(ago(time.Minute))}, taskNow.Add(time.Hour))
		if later.Status.Phase != siteopsv1.TaskSucceeded || later.Status.Targets != counts(2, 0, 0, 2, 0) ||
			!later.Status.CompletionTime.Equal(done.Status.CompletionTime) {
			t.Errorf("later: phase %s, targets %+v, completion %v; want Succeeded, 2/2, %v", later.Status.Phase,
				later.Status.Targets, later.Status.CompletionTime, done.Status.CompletionTime)
		}
		if condString(later.Status.Conditions, siteopsv1.ConditionReady) != "True/Succeeded" {
			t.Errorf("Ready: %+v", later.Status.Conditions)
		}
	})

	t.Run("Stopped keeps its pending targets; running work still finishes", func(t *testing.T) {
		task := testTask(func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true })
		all := append(comps, kiosk("c", "paris"), kiosk("d", "paris"))
		running := map[string]siteopsv1.DispatchEntry{"a": claimed(ago(time.Minute))}
		stopped := at(task, all, running, taskNow)
		if stopped.Status.Phase != siteopsv1.TaskStopped || stopped.Status.Targets != counts(4, 3, 1, 0, 0) {
			t.Fatalf("phase %s, targets %+v; want Stopped with 3 pending, 1 running", stopped.Status.Phase, stopped.Status.Targets)
		}
		// a succeeds; c got claimed in the instant the task stopped; d is
		// deleted; e joins the selector: none of that moves the target set.
		later := at(stopped, append(comps, kiosk("c", "paris"), kiosk("e", "paris")), map[string]siteopsv1.DispatchEntry{
			"a": succeeded(ago(time.Minute)), "c": claimed(ago(30 * time.Second))}, taskNow.Add(time.Minute))
		s := later.Status
		if s.Phase != siteopsv1.TaskStopped || s.Targets != counts(4, 2, 1, 1, 0) || s.Progress != "1/4" {
			t.Errorf("later: phase %s, targets %+v, progress %s; want Stopped, 4 = 2 pending + c running + a succeeded",
				s.Phase, s.Targets, s.Progress)
		}
		wantSites := []siteopsv1.TaskSiteStatus{
			{Site: "lyon", ContentReady: true, Targets: counts(1, 1, 0, 0, 0)},
			{Site: "paris", ContentReady: true, Targets: counts(3, 1, 1, 1, 0)},
		}
		if !equality.Semantic.DeepEqual(s.Sites, wantSites) {
			t.Errorf("sites: got %+v, want %+v", s.Sites, wantSites)
		}
		if !s.CompletionTime.Equal(stopped.Status.CompletionTime) {
			t.Errorf("completionTime moved: %v, was %v", s.CompletionTime, stopped.Status.CompletionTime)
		}
	})

	t.Run("stopped by the threshold keeps its reason once the failure turns into a success", func(t *testing.T) {
		task := testTask(func(t *siteopsv1.DeploymentTask) {
			t.Spec.Rollout = &siteopsv1.DeploymentTaskRollout{FailureThreshold: ptr.To[int32](0)}
		})
		lost := map[string]siteopsv1.DispatchEntry{"a": claimed(ago(time.Hour))}
		stopped := at(task, comps, lost, taskNow)
		if got := condString(stopped.Status.Conditions, siteopsv1.ConditionReady); got != "False/FailureThresholdPassed" {
			t.Fatalf("Ready %s, want False/FailureThresholdPassed (a is Lost)", got)
		}
		// The agent's late report lands.
		later := at(stopped, comps, map[string]siteopsv1.DispatchEntry{"a": succeeded(ago(time.Hour))}, taskNow.Add(time.Minute))
		if later.Status.Phase != siteopsv1.TaskStopped || later.Status.Targets != counts(2, 1, 0, 1, 0) ||
			condString(later.Status.Conditions, siteopsv1.ConditionReady) != "False/FailureThresholdPassed" {
			t.Errorf("later: phase %s, targets %+v, conditions %+v", later.Status.Phase, later.Status.Targets, later.Status.Conditions)
		}
	})

	t.Run("Failed stays Failed when a Lost target reports success late", func(t *testing.T) {
		done := at(testTask(), comps, map[string]siteopsv1.DispatchEntry{
			"a": succeeded(ago(time.Hour)), "b": claimed(ago(time.Hour))}, taskNow)
		if done.Status.Phase != siteopsv1.TaskFailed || done.Status.Failures[0].Reason != siteopsv1.FailureLost {
			t.Fatalf("phase %s, failures %+v; want Failed, b Lost", done.Status.Phase, done.Status.Failures)
		}
		later := at(done, comps, map[string]siteopsv1.DispatchEntry{
			"a": succeeded(ago(time.Hour)), "b": succeeded(ago(time.Hour))}, taskNow.Add(time.Minute))
		s := later.Status
		if s.Phase != siteopsv1.TaskFailed || s.Targets != counts(2, 0, 0, 2, 0) || len(s.Failures) != 0 ||
			condString(s.Conditions, siteopsv1.ConditionStalled) != "True/Failed" {
			t.Errorf("later: phase %s, targets %+v, failures %+v, conditions %+v; want Failed with the counts of now",
				s.Phase, s.Targets, s.Failures, s.Conditions)
		}
	})

	t.Run("startTime is set once, from the earliest claim", func(t *testing.T) {
		first := at(testTask(), comps, map[string]siteopsv1.DispatchEntry{"b": claimed(ago(time.Minute))}, taskNow)
		want := ago(time.Minute)
		if first.Status.StartTime == nil || !first.Status.StartTime.Equal(&want) {
			t.Fatalf("startTime %v, want %v", first.Status.StartTime, want)
		}
		// An entry reporting an earlier claim (a clock behind) moves nothing.
		later := at(first, comps, map[string]siteopsv1.DispatchEntry{"b": claimed(ago(time.Minute)), "a": claimed(ago(time.Hour))},
			taskNow.Add(time.Second))
		if !later.Status.StartTime.Equal(&want) {
			t.Errorf("startTime moved to %v", later.Status.StartTime)
		}
	})
}

func TestDeploymentTaskSites(t *testing.T) {
	var comps []siteopsv1.Computer
	for i := range siteopsv1.MaxTaskSites + 20 {
		comps = append(comps, kiosk(fmt.Sprintf("k-%04d", i), fmt.Sprintf("site-%04d", i)))
	}
	comps = append(comps, kiosk("nowhere", ""))
	s := verdictOf(testTask(), comps, nil).status
	if len(s.Sites) != siteopsv1.MaxTaskSites || s.Sites[0].Site != "" || s.Sites[1].Site != "site-0000" ||
		s.Sites[len(s.Sites)-1].Site != "site-0498" {
		t.Fatalf("sites: %d listed, first %q, %q, last %q; want %d by name, the no-site entry first",
			len(s.Sites), s.Sites[0].Site, s.Sites[1].Site, s.Sites[len(s.Sites)-1].Site, siteopsv1.MaxTaskSites)
	}
	if s.Targets.Total != siteopsv1.MaxTaskSites+21 {
		t.Errorf("total %d: every target counts, listed site or not", s.Targets.Total)
	}
	if msg := meta.FindStatusCondition(s.Conditions, siteopsv1.ConditionReady).Message; !strings.Contains(msg, "21 more are not listed") {
		t.Errorf("Ready message %q: want it to say how many sites are not listed", msg)
	}
}

func TestDeploymentTaskPhaseEvents(t *testing.T) {
	for _, tt := range []struct {
		phase, readyReason       string
		wantType, wantReason, ac string
	}{
		{siteopsv1.TaskRunning, "Running", "Normal", "Running", eventActionStart},
		{siteopsv1.TaskSucceeded, "Succeeded", "Normal", "Succeeded", eventActionComplete},
		{siteopsv1.TaskFailed, "Failed", "Warning", "Failed", eventActionComplete},
		{siteopsv1.TaskStopped, "FailureThresholdPassed", "Warning", "FailureThresholdPassed", eventActionStop},
	} {
		status := &siteopsv1.DeploymentTaskStatus{Phase: tt.phase, Targets: counts(10, 1, 2, 3, 4),
			Conditions: []metav1.Condition{{Type: siteopsv1.ConditionReady, Reason: tt.readyReason}}}
		ev, ok := taskPhaseEvent(status)
		if !ok || ev.eventType != tt.wantType || ev.reason != tt.wantReason || ev.action != tt.ac ||
			ev.note != "Phase "+tt.phase+": 3/10 succeeded, 4 failed, 2 running, 1 pending" {
			t.Errorf("%s: got %+v, %v", tt.phase, ev, ok)
		}
	}
	if _, ok := taskPhaseEvent(&siteopsv1.DeploymentTaskStatus{Phase: siteopsv1.TaskPending}); ok {
		t.Errorf("Pending records an Event")
	}
}

func TestCutJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"exit status 3", 256, "exit status 3"},
		{strings.Repeat("a", 300), 256, strings.Repeat("a", 256)},
		{strings.Repeat("é", 200), 256, strings.Repeat("é", 128)}, // 2 bytes each, never cut inside one
		{strings.Repeat("<", 100), 256, strings.Repeat("<", 42)},  // \u003c
		{strings.Repeat(`"`, 200), 256, strings.Repeat(`"`, 128)}, // \"
		{"line 1\nline 2\x01", 14, "line 1\nline 2"},
	} {
		got := cutJSON(tt.in, tt.n)
		if got != tt.want {
			t.Errorf("cutJSON(%.20q…, %d) = %.20q… (%d bytes), want %d bytes", tt.in, tt.n, got, len(got), len(tt.want))
		}
		if data, _ := json.Marshal(got); len(data)-2 > tt.n {
			t.Errorf("cutJSON(%.20q…, %d) takes %d bytes as JSON", tt.in, tt.n, len(data)-2)
		}
	}
}

// The status of a task for any number of computers stays small by
// construction: its lists are bounded and its counts are numbers. The worst
// case is built through desiredTaskStatus (10,000 computers with names of
// the maximum length in 600 sites, 150 failures whose reasons and messages
// are made of the characters JSON escapes most, 1,000 missing names of
// them), then every count is set to the largest int32 and both conditions
// carry a message of maxMessageLength such characters. It measures 211,719
// bytes of JSON, under the 256 KiB this test allows (etcd's limit on a
// whole object is 1.5 MiB).
// worstCaseTaskStatus is the largest status the controller can write for
// a task: 10,000 computers with 63-character names in 600 sites, 150
// failures and 1,000 missing names of the characters JSON escapes most,
// every count at its largest, conditions with the longest messages.
func worstCaseTaskStatus() siteopsv1.DeploymentTaskStatus {
	maxName := func(prefix string, i int, fill string) string {
		s := fmt.Sprintf("%s-%05d-", prefix, i)
		return s + strings.Repeat(fill, 63-len(s))
	}
	task := testTask()
	var comps []siteopsv1.Computer
	entries := map[string]siteopsv1.DispatchEntry{}
	for i := range 10000 {
		name := maxName("comp", i, "x")
		comps = append(comps, kiosk(name, maxName("site", i%600, "x")))
		if i < 150 {
			e := failed(ago(time.Hour), -1<<31, strings.Repeat("<", 1000))
			e.Reason = strings.Repeat("&", 100)
			entries[name] = e
		}
	}
	for i := range 1000 {
		task.Spec.Targets.Computers = append(task.Spec.Targets.Computers, maxName("m", i, "<"))
	}
	status := verdictOf(task, comps, entries).status
	if len(status.Sites) != siteopsv1.MaxTaskSites || len(status.Failures) != siteopsv1.MaxTaskFailures ||
		len(status.MissingComputers) != siteopsv1.MaxMissingComputers {
		panic(fmt.Sprintf("lists not full: %d sites, %d failures, %d missing", len(status.Sites), len(status.Failures),
			len(status.MissingComputers)))
	}
	big := counts(1<<31-1, 1<<31-1, 1<<31-1, 1<<31-1, 1<<31-1)
	status.Targets = big
	for i := range status.Sites {
		status.Sites[i].Targets = big
	}
	status.ObservedGeneration = 1<<63 - 1
	status.Progress = fmt.Sprintf("%d/%d", big.Succeeded, big.Total)
	at := metav1.NewTime(taskNow)
	status.CompletionTime = &at
	for i := range status.Conditions {
		status.Conditions[i].Message = boundedMessage(strings.Repeat("<", 2*maxMessageLength))
		status.Conditions[i].ObservedGeneration = 1<<63 - 1
	}
	return *status
}

func TestDeploymentTaskStatusSizeBound(t *testing.T) {
	status := worstCaseTaskStatus()
	data, err := json.Marshal(status)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("worst-case DeploymentTask status: %d bytes of JSON", len(data))
	if len(data) > 256<<10 {
		t.Errorf("worst-case status is %d bytes, over 256 KiB", len(data))
	}
}

// deployTask is testTask deploying the DiskImage Package win11.
func deployTask() *siteopsv1.DeploymentTask {
	return testTask(func(t *siteopsv1.DeploymentTask) {
		t.Spec.Action = siteopsv1.DeploymentTaskAction{DeployImage: &siteopsv1.PackageAction{Package: "win11"}}
	})
}

// win11 is the DiskImage Package win11, Ready at the sites ready and
// Replicating at the others listed.
func win11(typ siteopsv1.PackageType, ready []string, replicating ...string) *siteopsv1.Package {
	p := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Namespace: "tenant", Name: "win11"},
		Spec: siteopsv1.PackageSpec{Type: typ}}
	for _, s := range ready {
		p.Status.Sites = append(p.Status.Sites, siteopsv1.PackageSiteStatus{Site: s, State: siteopsv1.ContentReady})
	}
	for _, s := range replicating {
		p.Status.Sites = append(p.Status.Sites, siteopsv1.PackageSiteStatus{Site: s, State: siteopsv1.ContentReplicating})
	}
	return p
}

func TestDeploymentTaskWaitsForContent(t *testing.T) {
	comps := []siteopsv1.Computer{kiosk("p1", "paris"), kiosk("l1", "lyon"), kiosk("n1", "")}
	for _, tc := range []struct {
		name         string
		task         *siteopsv1.DeploymentTask
		pkg          *siteopsv1.Package
		entries      map[string]siteopsv1.DispatchEntry
		phase        string
		reason       string // of Ready
		content      metav1.ConditionStatus
		contentWhy   string
		contentSites string // site=contentReady
		mentions     string // in the ContentReady message
	}{
		{name: "a script needs no content", task: testTask(), phase: siteopsv1.TaskRunning, reason: siteopsv1.ReasonTaskRunning,
			content: metav1.ConditionTrue, contentWhy: siteopsv1.ReasonNoContentNeeded, contentSites: "=true lyon=true paris=true"},
		{name: "no Package", task: deployTask(), phase: siteopsv1.TaskWaitingForContent, reason: siteopsv1.ReasonPackageNotFound,
			content: metav1.ConditionFalse, contentWhy: siteopsv1.ReasonPackageNotFound,
			contentSites: "=false lyon=false paris=false", mentions: "Package win11 does not exist in namespace tenant"},
		{name: "a Package of another type", task: deployTask(), pkg: win11(siteopsv1.PackageSoftware, []string{"paris", "lyon", ""}),
			phase: siteopsv1.TaskWaitingForContent, reason: siteopsv1.ReasonWrongPackageType,
			content: metav1.ConditionFalse, contentWhy: siteopsv1.ReasonWrongPackageType,
			contentSites: "=false lyon=false paris=false", mentions: "deployImage needs a DiskImage package"},
		{name: "ready nowhere yet", task: deployTask(), pkg: win11(siteopsv1.PackageDiskImage, nil, "paris", "lyon", ""),
			phase: siteopsv1.TaskWaitingForContent, reason: siteopsv1.ReasonWaitingForContent,
			content: metav1.ConditionFalse, contentWhy: siteopsv1.ReasonWaitingForContent,
			contentSites: "=false lyon=false paris=false", mentions: "(3 of 3 sites)"},
		{name: "ready at one site: it runs there", task: deployTask(), pkg: win11(siteopsv1.PackageDiskImage, []string{"paris"}, "lyon"),
			phase: siteopsv1.TaskRunning, reason: siteopsv1.ReasonTaskRunning,
			content: metav1.ConditionFalse, contentWhy: siteopsv1.ReasonWaitingForContent,
			contentSites: "=false lyon=false paris=true", mentions: "not Ready yet at the computers in no site, site lyon (2 of 3 sites)"},
		{name: "handed out, then a site waits: still running", task: deployTask(),
			pkg:     win11(siteopsv1.PackageDiskImage, nil, "paris", "lyon", ""),
			entries: map[string]siteopsv1.DispatchEntry{"p1": claimed(ago(time.Minute))},
			phase:   siteopsv1.TaskRunning, reason: siteopsv1.ReasonTaskRunning,
			content: metav1.ConditionFalse, contentWhy: siteopsv1.ReasonWaitingForContent, contentSites: "=false lyon=false paris=false"},
		{name: "ready everywhere", task: deployTask(), pkg: win11(siteopsv1.PackageDiskImage, []string{"paris", "lyon", ""}),
			phase: siteopsv1.TaskRunning, reason: siteopsv1.ReasonTaskRunning,
			content: metav1.ConditionTrue, contentWhy: siteopsv1.ReasonContentReady, contentSites: "=true lyon=true paris=true",
			mentions: "Ready at every site of the targets (3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := desiredTaskStatus(&taskScope{task: tc.task, now: taskNow, computers: comps,
				shards: shardsOf(tc.task.UID, tc.entries), pkg: tc.pkg})
			st := v.status
			if st.Phase != tc.phase {
				t.Errorf("phase %s, want %s", st.Phase, tc.phase)
			}
			if r := meta.FindStatusCondition(st.Conditions, siteopsv1.ConditionReady); r == nil || r.Reason != tc.reason {
				t.Errorf("Ready %+v, want reason %s", r, tc.reason)
			}
			c := meta.FindStatusCondition(st.Conditions, siteopsv1.ConditionContentReady)
			if c == nil || c.Status != tc.content || c.Reason != tc.contentWhy || !strings.Contains(c.Message, tc.mentions) {
				t.Errorf("ContentReady %+v, want %s %s mentioning %q", c, tc.content, tc.contentWhy, tc.mentions)
			}
			var sites []string
			for _, s := range st.Sites {
				sites = append(sites, fmt.Sprintf("%s=%t", s.Site, s.ContentReady))
			}
			if got := strings.Join(sites, " "); got != tc.contentSites {
				t.Errorf("sites %s, want %s", got, tc.contentSites)
			}
			// Work may be handed out only once the task is running.
			if started := st.StartTime != nil; started != (tc.phase == siteopsv1.TaskRunning) {
				t.Errorf("startTime %v with phase %s", st.StartTime, st.Phase)
			}
		})
	}
}
