package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/tasks"
)

// taskNamespace holds the DeploymentTask specs' tasks and Computers (envtest
// runs no namespace controller, so it is made once and kept). Each spec
// labels its Computers with a value of its own.
const taskNamespace = "dt-tenant"

// scriptTask is a runScript task in taskNamespace for the Computers
// labelled dt-spec=<spec>; change adjusts it before it is created.
func scriptTask(name, spec string, change ...func(*siteopsv1.DeploymentTask)) *siteopsv1.DeploymentTask {
	t := &siteopsv1.DeploymentTask{
		ObjectMeta: metav1.ObjectMeta{Namespace: taskNamespace, Name: name},
		Spec: siteopsv1.DeploymentTaskSpec{
			Action: siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{
				Script: "echo hello", Interpreter: siteopsv1.InterpreterSh, Timeout: metav1.Duration{Duration: time.Minute}}},
			Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{
				MatchLabels: map[string]string{"dt-spec": spec}}},
		},
	}
	for _, c := range change {
		c(t)
	}
	return t
}

// createTask creates t and deletes it, and the shards written for it,
// after the spec (no garbage collector runs here).
func createTask(ctx context.Context, t *siteopsv1.DeploymentTask) *siteopsv1.DeploymentTask {
	GinkgoHelper()
	Expect(k8sClient.Create(ctx, t)).To(Succeed())
	DeferCleanup(func() {
		Expect(deleteIgnoringNotFound(ctx, t)).To(Succeed())
		Expect(k8sClient.DeleteAllOf(ctx, &siteopsv1.DispatchShard{}, client.InNamespace(t.Namespace),
			client.MatchingLabels{siteopsv1.DispatchTaskLabel: t.Name})).To(Succeed())
	})
	return t
}

// createTarget creates a Computer in taskNamespace with labels, located by
// a task service in site ("" for none).
func createTarget(ctx context.Context, name, site string, labels map[string]string) *siteopsv1.Computer {
	GinkgoHelper()
	c := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: taskNamespace, Name: name, Labels: labels}}
	Expect(k8sClient.Create(ctx, c)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, c)
	if site != "" {
		writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) { s.Site = site })
	}
	return c
}

// dispatch writes entries into the task's DispatchShards as the task
// services do: each computer's entry in shard tasks.ShardOf(name), named
// tasks.ShardName, owned by the task.
func dispatch(ctx context.Context, t *siteopsv1.DeploymentTask, entries map[string]siteopsv1.DispatchEntry) {
	GinkgoHelper()
	byShard := map[int32]map[string]siteopsv1.DispatchEntry{}
	for name, e := range entries {
		n := tasks.ShardOf(name)
		if byShard[n] == nil {
			byShard[n] = map[string]siteopsv1.DispatchEntry{}
		}
		byShard[n][name] = e
	}
	for n, shardEntries := range byShard {
		Eventually(func() error {
			var sh siteopsv1.DispatchShard
			key := client.ObjectKey{Namespace: t.Namespace, Name: tasks.ShardName(t.Name, n)}
			err := k8sClient.Get(ctx, key, &sh)
			if apierrors.IsNotFound(err) {
				sh = siteopsv1.DispatchShard{
					ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name,
						Labels: map[string]string{siteopsv1.DispatchTaskLabel: t.Name},
						OwnerReferences: []metav1.OwnerReference{{APIVersion: siteopsv1.GroupVersion.String(),
							Kind: "DeploymentTask", Name: t.Name, UID: t.UID}}},
					Spec:    siteopsv1.DispatchShardSpec{Task: t.Name, TaskUID: string(t.UID), Shard: n},
					Entries: shardEntries,
				}
				return k8sClient.Create(ctx, &sh)
			}
			if err != nil {
				return err
			}
			if sh.Entries == nil {
				sh.Entries = map[string]siteopsv1.DispatchEntry{}
			}
			for name, e := range shardEntries {
				sh.Entries[name] = e
			}
			return k8sClient.Update(ctx, &sh)
		}, timeout, interval).Should(Succeed())
	}
}

func claimedAt(at time.Time) siteopsv1.DispatchEntry {
	return siteopsv1.DispatchEntry{Attempt: 1, State: siteopsv1.DispatchClaimed, Server: "dt-srv", Claimed: metav1.NewTime(at)}
}

func succeededEntry() siteopsv1.DispatchEntry {
	e := claimedAt(time.Now().Add(-time.Minute))
	e.State, e.Finished = siteopsv1.DispatchSucceeded, ptr.To(metav1.Now())
	return e
}

func failedEntry(code int32, message string) siteopsv1.DispatchEntry {
	e := claimedAt(time.Now().Add(-time.Minute))
	e.State, e.Finished = siteopsv1.DispatchFailed, ptr.To(metav1.Now())
	e.Reason, e.ExitCode, e.Message = siteopsv1.FailureExitCode, ptr.To(code), message
	return e
}

// taskStatus is the task's status once the controller has computed it for
// the task's generation.
func taskStatus(ctx context.Context, t *siteopsv1.DeploymentTask) func(Gomega) siteopsv1.DeploymentTaskStatus {
	return func(g Gomega) siteopsv1.DeploymentTaskStatus {
		var got siteopsv1.DeploymentTask
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(t), &got)).To(Succeed())
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation), "generation not observed yet")
		return got.Status
	}
}

func taskPhase(ctx context.Context, t *siteopsv1.DeploymentTask) func(Gomega) string {
	return func(g Gomega) string { return taskStatus(ctx, t)(g).Phase }
}

func taskTargets(ctx context.Context, t *siteopsv1.DeploymentTask) func(Gomega) siteopsv1.TargetCounts {
	return func(g Gomega) siteopsv1.TargetCounts { return taskStatus(ctx, t)(g).Targets }
}

func taskCondition(ctx context.Context, t *siteopsv1.DeploymentTask, condType string) func(Gomega) string {
	return func(g Gomega) string { return condString(taskStatus(ctx, t)(g).Conditions, condType) }
}

func targetCounts(total, pending, running, succeeded, failed int32) siteopsv1.TargetCounts {
	return siteopsv1.TargetCounts{Total: total, Pending: pending, Running: running, Succeeded: succeeded, Failed: failed}
}

// taskEvents are "Type/Reason: note" of the events.k8s.io Events about the
// task, oldest first.
func taskEvents(ctx context.Context, t *siteopsv1.DeploymentTask) func(Gomega) []string {
	return func(g Gomega) []string {
		var list eventsv1.EventList
		g.Expect(k8sClient.List(ctx, &list, client.InNamespace(t.Namespace))).To(Succeed())
		slices.SortStableFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
		var out []string
		for _, e := range list.Items {
			if e.Regarding.Kind == "DeploymentTask" && e.Regarding.UID == t.UID {
				g.Expect(e.ReportingController).To(Equal(controllers.EventReportingController))
				out = append(out, fmt.Sprintf("%s/%s: %s", e.Type, e.Reason, e.Note))
			}
		}
		return out
	}
}

var _ = Describe("DeploymentTask admission", func() {
	ctx := context.Background()

	BeforeEach(func() { ensureNamespace(ctx, taskNamespace) })

	DescribeTable("refuses a bad task with the rule's message, creating nothing",
		func(t *siteopsv1.DeploymentTask, wantMessages ...string) {
			expectRefused(ctx, t, &siteopsv1.DeploymentTask{}, wantMessages...)
		},
		Entry("two actions", scriptTask("dt-adm-two", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.Reboot = &siteopsv1.RebootAction{}
		}), "spec.action must set exactly one of runScript, reboot, installSoftware, deployImage or captureImage"),
		Entry("no action", scriptTask("dt-adm-none", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{}
		}), "spec.action must set exactly one of"),
		Entry("a capture of a selector", scriptTask("dt-adm-capture-sel", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: "golden"}}
			t.Spec.Targets.Selector = &metav1.LabelSelector{}
		}), "spec.action.captureImage needs exactly one target, named in spec.targets.computers"),
		Entry("a capture of two computers", scriptTask("dt-adm-capture-two", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: "golden"}}
			t.Spec.Targets = siteopsv1.DeploymentTaskTargets{Computers: []string{"pc-1", "pc-2"}}
		}), "spec.action.captureImage needs exactly one target"),
		Entry("a capture into a bad name", scriptTask("dt-adm-capture-name", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: "Golden_1"}}
			t.Spec.Targets = siteopsv1.DeploymentTaskTargets{Computers: []string{"pc-1"}}
		}), "spec.action.captureImage.packageName"),
		Entry("a package timeout of 30s", scriptTask("dt-adm-pkg-timeout", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action = siteopsv1.DeploymentTaskAction{DeployImage: &siteopsv1.PackageAction{Package: "win11",
				Timeout: &metav1.Duration{Duration: 30 * time.Second}}}
		}), "the timeout of a package action must be from 1m to 24h"),
		Entry("empty targets", scriptTask("dt-adm-targets", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Targets = siteopsv1.DeploymentTaskTargets{Computers: []string{}}
		}), "spec.targets must name at least one of computers, selector or sites"),
		Entry("a script over 32 KiB", scriptTask("dt-adm-script", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.RunScript.Script = strings.Repeat("#", siteopsv1.MaxScriptBytes+1)
		}), "spec.action.runScript.script", "32768"),
		Entry("an unknown interpreter", scriptTask("dt-adm-interp", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.RunScript.Interpreter = "zsh"
		}), "spec.action.runScript.interpreter", `Unsupported value: "zsh"`),
		Entry("a timeout of 0s", scriptTask("dt-adm-timeout-0", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.RunScript.Timeout = metav1.Duration{}
		}), "spec.action.runScript.timeout must be from 1s to 24h"),
		Entry("a timeout of 25h", scriptTask("dt-adm-timeout-25h", "adm", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.RunScript.Timeout = metav1.Duration{Duration: 25 * time.Hour}
		}), "spec.action.runScript.timeout must be from 1s to 24h"),
		Entry("a name over 60 characters", scriptTask("dt-"+strings.Repeat("n", 58), "adm"),
			"metadata.name of a DeploymentTask must be at most 60"),
	)

	It("makes the spec immutable once the task started, except spec.stop from false to true", func() {
		t := createTask(ctx, scriptTask("dt-immutable", "immutable"))
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskPending))

		By("changing the spec before the task started")
		updateObject(ctx, t, func(t *siteopsv1.DeploymentTask) { t.Spec.Targets.Sites = []string{"dt-nowhere"} })

		By("starting it: status.startTime, written as the controller writes it")
		Eventually(func() error {
			var now siteopsv1.DeploymentTask
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(t), &now); err != nil {
				return err
			}
			now.Status.StartTime = ptr.To(metav1.Now())
			return k8sClient.Status().Update(ctx, &now)
		}, timeout, interval).Should(Succeed())

		// change updates the task as a user would and returns the verdict.
		change := func(change func(*siteopsv1.DeploymentTask)) error { return tryUpdate(ctx, t, change) }
		for what, c := range map[string]func(*siteopsv1.DeploymentTask){
			"targets":  func(t *siteopsv1.DeploymentTask) { t.Spec.Targets.Sites = []string{"dt-elsewhere"} },
			"action":   func(t *siteopsv1.DeploymentTask) { t.Spec.Action.RunScript.Script = "echo bye" },
			"schedule": func(t *siteopsv1.DeploymentTask) { t.Spec.Schedule = &siteopsv1.DeploymentTaskSchedule{} },
			"rollout": func(t *siteopsv1.DeploymentTask) {
				t.Spec.Rollout = &siteopsv1.DeploymentTaskRollout{MaxConcurrent: ptr.To[int32](5)}
			},
		} {
			err := change(c)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "changing %s: want an Invalid error, got %v", what, err)
			Expect(err.Error()).To(ContainSubstring("spec is immutable once the task started (status.startTime is set), except spec.stop"))
		}

		By("stopping it")
		Expect(change(func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true })).To(Succeed())
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskStopped))

		By("undoing the stop")
		err := change(func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = false })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.stop cannot be undone: a stopped task stays stopped; create a new task"))
	})
})

var _ = Describe("DeploymentTask", func() {
	ctx := context.Background()

	BeforeEach(func() { ensureNamespace(ctx, taskNamespace) })

	It("resolves its targets, follows the task services' dispatch state to Failed, and records an Event per phase", func() {
		kiosk := map[string]string{"dt-spec": "resolve"}
		createTarget(ctx, "dt-r-paris-1", "dt-paris", kiosk)
		createTarget(ctx, "dt-r-paris-2", "dt-paris", kiosk)
		createTarget(ctx, "dt-r-lyon-1", "dt-lyon", nil)
		createTarget(ctx, "dt-r-lyon-2", "dt-lyon", map[string]string{"dt-spec": "other"})
		createTarget(ctx, "dt-r-elsewhere", "dt-nantes", nil) // not a target
		t := createTask(ctx, scriptTask("dt-resolve", "resolve", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Targets.Sites = []string{"dt-lyon"}
			t.Spec.Targets.Computers = []string{"dt-r-paris-1", "dt-r-ghost"}
			t.Spec.Schedule = &siteopsv1.DeploymentTaskSchedule{StartAt: ptr.To(metav1.NewTime(time.Now().Add(time.Hour)))}
		}))

		By("waiting for spec.schedule.startAt")
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(4, 4, 0, 0, 0)))
		s := taskStatus(ctx, t)(Default)
		Expect(s.Phase).To(Equal(siteopsv1.TaskPending))
		Expect(s.MissingComputers).To(Equal([]string{"dt-r-ghost"}))
		Expect(s.Action).To(Equal("runScript"))
		Expect(s.Progress).To(Equal("0/4"))
		Expect(s.StartTime).To(BeNil())
		Expect(condString(s.Conditions, siteopsv1.ConditionReady)).To(Equal("False/Pending"))
		Expect(condString(s.Conditions, siteopsv1.ConditionReconciling)).To(Equal("True/Pending"))
		Expect(meta.FindStatusCondition(s.Conditions, siteopsv1.ConditionReady).Message).To(ContainSubstring("work may start at"))

		By("starting at once: Running, and startTime set before anything is handed out (task services wait for it)")
		updateObject(ctx, t, func(t *siteopsv1.DeploymentTask) { t.Spec.Schedule = nil })
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskRunning))
		started := taskStatus(ctx, t)(Default).StartTime
		Expect(started).NotTo(BeNil())
		Expect(started.Time).To(BeTemporally("~", time.Now(), 5*time.Second))

		By("a task service claiming three targets")
		claim := time.Now().Add(-10 * time.Second).Truncate(time.Second)
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{
			"dt-r-paris-1": claimedAt(claim), "dt-r-paris-2": claimedAt(claim.Add(time.Second)), "dt-r-lyon-1": claimedAt(claim)})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(4, 1, 3, 0, 0)))
		s = taskStatus(ctx, t)(Default)
		Expect(s.StartTime.Time).To(BeTemporally("==", started.Time), "startTime is set once")

		By("their agents reporting, and the fourth target claimed and succeeding")
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{
			"dt-r-paris-1": succeededEntry(), "dt-r-paris-2": failedEntry(2, "exit status 2"),
			"dt-r-lyon-1": succeededEntry(), "dt-r-lyon-2": claimedAt(time.Now())})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(4, 0, 1, 2, 1)))
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-r-lyon-2": succeededEntry()})
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskFailed))

		s = taskStatus(ctx, t)(Default)
		Expect(s.Targets).To(Equal(targetCounts(4, 0, 0, 3, 1)))
		Expect(s.Progress).To(Equal("3/4"))
		Expect(s.StartTime.Time).To(BeTemporally("==", started.Time), "startTime is set once")
		Expect(s.CompletionTime).NotTo(BeNil())
		Expect(s.Failures).To(HaveLen(1))
		Expect(s.Failures[0].Computer).To(Equal("dt-r-paris-2"))
		Expect(s.Failures[0].Reason).To(Equal(siteopsv1.FailureExitCode))
		Expect(s.Failures[0].ExitCode).To(HaveValue(Equal(int32(2))))
		Expect(s.Failures[0].Message).To(Equal("exit status 2"))
		Expect(s.Sites).To(ConsistOf(
			siteopsv1.TaskSiteStatus{Site: "dt-lyon", ContentReady: true, Targets: targetCounts(2, 0, 0, 2, 0)},
			siteopsv1.TaskSiteStatus{Site: "dt-paris", ContentReady: true, Targets: targetCounts(2, 0, 0, 1, 1)},
		))
		Expect(condString(s.Conditions, siteopsv1.ConditionReady)).To(Equal("False/Failed"))
		Expect(condString(s.Conditions, siteopsv1.ConditionStalled)).To(Equal("True/Failed"))
		Expect(condString(s.Conditions, siteopsv1.ConditionReconciling)).To(BeEmpty())

		Eventually(taskEvents(ctx, t), timeout, interval).Should(Equal([]string{
			"Normal/Running: Phase Running: 0/4 succeeded, 0 failed, 0 running, 4 pending",
			"Warning/Failed: Phase Failed: 3/4 succeeded, 1 failed, 0 running, 0 pending",
		}))
	})

	It("succeeds once every target succeeded, counting a Computer that joined its selector while it ran", func() {
		kiosk := map[string]string{"dt-spec": "succeed"}
		createTarget(ctx, "dt-s-1", "dt-paris", kiosk)
		createTarget(ctx, "dt-s-2", "", kiosk)
		late := createTarget(ctx, "dt-s-3", "dt-paris", nil)
		t := createTask(ctx, scriptTask("dt-succeed", "succeed"))
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-s-1": claimedAt(time.Now())})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(2, 1, 1, 0, 0)))

		By("labelling a third Computer")
		updateObject(ctx, late, func(c *siteopsv1.Computer) { c.Labels = kiosk })
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(3, 2, 1, 0, 0)))

		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{
			"dt-s-1": succeededEntry(), "dt-s-2": succeededEntry(), "dt-s-3": succeededEntry()})
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskSucceeded))
		s := taskStatus(ctx, t)(Default)
		Expect(s.Targets).To(Equal(targetCounts(3, 0, 0, 3, 0)))
		Expect(s.Progress).To(Equal("3/3"))
		Expect(s.Failures).To(BeEmpty())
		Expect(s.Sites).To(ConsistOf(
			siteopsv1.TaskSiteStatus{Site: "", ContentReady: true, Targets: targetCounts(1, 0, 0, 1, 0)},
			siteopsv1.TaskSiteStatus{Site: "dt-paris", ContentReady: true, Targets: targetCounts(2, 0, 0, 2, 0)},
		))
		Expect(condString(s.Conditions, siteopsv1.ConditionReady)).To(Equal("True/Succeeded"))
		Expect(condString(s.Conditions, siteopsv1.ConditionReconciling)).To(BeEmpty())
		Expect(condString(s.Conditions, siteopsv1.ConditionStalled)).To(BeEmpty())
		Expect(s.CompletionTime).NotTo(BeNil())
		// The first claim may land before or after the task's first
		// reconcile: the Running note says 0/2 either way.
		Eventually(taskEvents(ctx, t), timeout, interval).Should(HaveExactElements(
			HavePrefix("Normal/Running: Phase Running: 0/2 succeeded, 0 failed"),
			"Normal/Succeeded: Phase Succeeded: 3/3 succeeded, 0 failed, 0 running, 0 pending",
		))

		By("the phase latching: a Computer joining the selector now is not a target, and nothing is written")
		writes := statusWrites(t)
		Expect(writes).To(BeNumerically(">", 0), "the manager's writes of this task's status are counted")
		createTarget(ctx, "dt-s-4", "dt-paris", kiosk)
		Consistently(taskTargets(ctx, t), 2*time.Second, interval).Should(Equal(targetCounts(3, 0, 0, 3, 0)))
		Expect(taskPhase(ctx, t)(Default)).To(Equal(siteopsv1.TaskSucceeded))
		Expect(statusWrites(t)).To(Equal(writes))
	})

	It("stops once more than spec.rollout.failureThreshold of its targets failed", func() {
		kiosk := map[string]string{"dt-spec": "threshold"}
		for i := range 4 {
			createTarget(ctx, fmt.Sprintf("dt-t-%d", i), "dt-paris", kiosk)
		}
		t := createTask(ctx, scriptTask("dt-threshold", "threshold", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Rollout = &siteopsv1.DeploymentTaskRollout{FailureThreshold: ptr.To[int32](25)}
		}))
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-t-0": failedEntry(1, "boom"), "dt-t-1": claimedAt(time.Now())})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(4, 2, 1, 0, 1)))
		Expect(taskPhase(ctx, t)(Default)).To(Equal(siteopsv1.TaskRunning), "1 of 4 is not more than 25%")

		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-t-1": failedEntry(1, "boom")})
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskStopped))
		Expect(taskCondition(ctx, t, siteopsv1.ConditionReady)(Default)).To(Equal("False/FailureThresholdPassed"))
		Expect(taskCondition(ctx, t, siteopsv1.ConditionStalled)(Default)).To(Equal("True/FailureThresholdPassed"))
		Expect(taskTargets(ctx, t)(Default)).To(Equal(targetCounts(4, 2, 0, 0, 2)))
		Eventually(taskEvents(ctx, t), timeout, interval).Should(ContainElement(
			"Warning/FailureThresholdPassed: Phase Stopped: 0/4 succeeded, 2 failed, 0 running, 2 pending"))
	})

	It("stops on spec.stop, and its running work still finishes", func() {
		kiosk := map[string]string{"dt-spec": "stop"}
		createTarget(ctx, "dt-st-1", "dt-lyon", kiosk)
		createTarget(ctx, "dt-st-2", "dt-lyon", kiosk)
		t := createTask(ctx, scriptTask("dt-stop", "stop"))
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-st-1": claimedAt(time.Now())})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(2, 1, 1, 0, 0)))

		updateObject(ctx, t, func(t *siteopsv1.DeploymentTask) { t.Spec.Stop = true })
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskStopped))
		Expect(taskCondition(ctx, t, siteopsv1.ConditionReady)(Default)).To(Equal("False/Stopped"))
		Expect(taskCondition(ctx, t, siteopsv1.ConditionStalled)(Default)).To(Equal("True/Stopped"))

		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{"dt-st-1": succeededEntry()})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(2, 1, 0, 1, 0)))
		Expect(taskPhase(ctx, t)(Default)).To(Equal(siteopsv1.TaskStopped))
		Eventually(taskEvents(ctx, t), timeout, interval).Should(ContainElement(
			"Warning/Stopped: Phase Stopped: 0/2 succeeded, 0 failed, 1 running, 1 pending"))
	})

	It("counts a target failed with reason Lost when no result came within the timeout and the grace", func() {
		kiosk := map[string]string{"dt-spec": "lost"}
		createTarget(ctx, "dt-l-1", "dt-paris", kiosk)
		createTarget(ctx, "dt-l-2", "dt-paris", kiosk)
		t := createTask(ctx, scriptTask("dt-lost", "lost", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Action.RunScript.Timeout = metav1.Duration{Duration: time.Second}
		}))
		lostAfter := time.Second + 5*time.Minute
		dispatch(ctx, t, map[string]siteopsv1.DispatchEntry{
			// Past the timeout and the grace already.
			"dt-l-1": claimedAt(time.Now().Add(-lostAfter - time.Minute)),
			// Within them for a few more seconds: Lost by the passing of time
			// (the controller comes back when it turns Lost).
			"dt-l-2": claimedAt(time.Now().Add(-lostAfter + 8*time.Second)),
		})
		Eventually(taskTargets(ctx, t), timeout, interval).Should(Equal(targetCounts(2, 0, 1, 0, 1)))
		Eventually(taskPhase(ctx, t), timeout, interval).Should(Equal(siteopsv1.TaskFailed))
		s := taskStatus(ctx, t)(Default)
		Expect(s.Targets).To(Equal(targetCounts(2, 0, 0, 0, 2)))
		Expect(s.Failures).To(HaveLen(2))
		for _, f := range s.Failures {
			Expect(f.Reason).To(Equal(siteopsv1.FailureLost))
			Expect(f.Message).To(ContainSubstring("dt-srv"))
		}
		Expect(s.Failures[0].Computer).To(Equal("dt-l-1"), "oldest first")
	})

	It("accepts the largest status the controller can write, under 256 KiB", func() {
		// The API server's own checks (every maxLength, maxItems, pattern
		// and enum of the status schema) on the worst case the status
		// computation can produce for 10,000 computers in 600 sites.
		t := createTask(ctx, scriptTask("dt-size", "size", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Schedule = &siteopsv1.DeploymentTaskSchedule{StartAt: ptr.To(metav1.NewTime(time.Now().Add(time.Hour)))}
		}))
		worst := controllers.WorstCaseTaskStatus()
		var written siteopsv1.DeploymentTask
		Eventually(func() error {
			if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(t), &written); err != nil {
				return err
			}
			worst.ObservedGeneration = written.Generation
			written.Status = worst
			return k8sClient.Status().Update(ctx, &written)
		}, timeout, interval).Should(Succeed())
		data, err := json.Marshal(written)
		Expect(err).NotTo(HaveOccurred())
		fmt.Fprintf(GinkgoWriter, "the API server accepted a DeploymentTask of %d bytes with the worst-case status\n", len(data))
		Expect(len(data)).To(BeNumerically("<", 256<<10))
		Expect(written.Status.Failures).To(HaveLen(siteopsv1.MaxTaskFailures))
		Expect(written.Status.Sites).To(HaveLen(siteopsv1.MaxTaskSites))
	})

	It("is Stalled with InvalidSelector when its selector cannot be used", func() {
		t := createTask(ctx, scriptTask("dt-invalid", "invalid", func(t *siteopsv1.DeploymentTask) {
			t.Spec.Targets.Selector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "dt-spec", Operator: "Near", Values: []string{"invalid"}}}}
		}))
		Eventually(taskCondition(ctx, t, siteopsv1.ConditionStalled), timeout, interval).Should(Equal("True/InvalidSelector"))
		Expect(taskCondition(ctx, t, siteopsv1.ConditionReady)(Default)).To(Equal("False/InvalidSelector"))
		Expect(taskPhase(ctx, t)(Default)).To(Equal(siteopsv1.TaskPending))
	})
})
