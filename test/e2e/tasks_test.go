//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/simcluster"
)

// DeploymentTasks run: the manager resolves a task's targets and follows
// its progress, the task services (real processes behind the pods) hand
// the work to the agents that check in with them, and real agent processes
// run the scripts and report. Every script appends a line naming its agent
// to one file, so the specs count the runs themselves.
var _ = Describe("DeploymentTasks", Ordered, func() {
	const (
		siteA, siteB       = "tsk-a", "tsk-b"
		srvA, srvB         = "tsk-a-srv", "tsk-b-srv"
		srvCentral         = "tsk-central"
		computersNamespace = "tasks"
		tokenID            = "e2etsk"
		tokenSecret        = "e2etsk0123456789"
	)
	var (
		runs               string // the file every script appends to
		a1, a2, b1, b2, n1 *agentProc
	)

	task := func(name string, spec siteopsv1.DeploymentTaskSpec) *siteopsv1.DeploymentTask {
		GinkgoHelper()
		t := &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: computersNamespace, Name: name}, Spec: spec}
		Expect(k8s.Create(context.Background(), t)).To(Succeed())
		return t
	}
	runScript := func(script string) siteopsv1.DeploymentTaskAction {
		return siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: script, Interpreter: "sh",
			Timeout: metav1.Duration{Duration: 2 * time.Minute}}}
	}
	// runsOf counts the lines of the runs file that start with prefix.
	runsOf := func(prefix string) map[string]int {
		data, _ := os.ReadFile(runs)
		n := map[string]int{}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
				n[rest]++
			}
		}
		return n
	}
	computer := func(ctx context.Context, g Gomega, name string) *siteopsv1.Computer {
		c := &siteopsv1.Computer{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: computersNamespace, Name: name}, c)).To(Succeed())
		return c
	}
	expectPhase := func(ctx context.Context, name, phase string, timeout time.Duration) *siteopsv1.DeploymentTask {
		GinkgoHelper()
		return expectTaskPhase(ctx, computersNamespace, name, phase, timeout, func() string { return diagnostics(ctx) })
	}

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no task service runs for agents to reach")
		}
		for _, site := range []string{siteA, siteB} {
			createSite(ctx, site)
			DeferCleanup(func(ctx SpecContext) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}))).To(Succeed())
			})
		}
		for name, cidr := range map[string]string{siteA: "10.43.0.0/16", siteB: "10.44.0.0/16"} {
			sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name + "-net"}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: name}}
			Expect(k8s.Create(ctx, sn)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, sn))).To(Succeed()) })
		}
		a := siteServer(srvA, []string{siteA}, siteServerSelector(), storageClass)
		a.Spec.Services.Task.Replicas = new(int32)
		*a.Spec.Services.Task.Replicas = 2
		for _, ss := range []*siteopsv1.SiteServer{a,
			siteServer(srvB, []string{siteB}, siteServerSelector(), storageClass),
			siteServer(srvCentral, nil, siteServerSelector(), storageClass),
		} {
			ss.Spec.Services.Package.Enabled = new(bool)
			Expect(k8s.Create(ctx, ss)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		}
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: computersNamespace}})).To(Succeed())
		Expect(simcluster.CreateBootstrapToken(ctx, k8s, tokenID, tokenSecret, computersNamespace)).To(Succeed())

		caFile := operatorCAFile(ctx)
		for name, endpoints := range map[string]int{srvA: 2, srvB: 1, srvCentral: 1} {
			Eventually(func(g Gomega) {
				ss := getSiteServer(ctx, g, name)
				g.Expect(ss.Status.Task.Ready).To(BeTrue(), "%s task ready", name)
				g.Expect(ss.Status.Task.Advertised).To(HaveLen(endpoints), "%s advertises", name)
			}).WithContext(ctx).Should(Succeed())
		}

		By("starting agents: two in site A, two in site B, one in no site")
		runs = filepath.Join(GinkgoT().TempDir(), "runs")
		start := func(name, address string) *agentProc {
			return startAgent(name, address, caFile, tokenID+"."+tokenSecret, "E2E_AGENT="+name, "E2E_RUNS="+runs)
		}
		a1, a2 = start("task-a1", "10.43.0.10"), start("task-a2", "10.43.0.11")
		b1, b2 = start("task-b1", "10.44.0.10"), start("task-b2", "10.44.0.11")
		n1 = start("task-n1", "198.51.100.30")
		By("labelling three of them ring=1 once they registered")
		for _, a := range []*agentProc{a1, a2, b1, b2, n1} {
			Eventually(func(g Gomega) {
				c := computer(ctx, g, a.name)
				g.Expect(condition(c.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
				if a != a2 && a != b2 {
					patch := client.MergeFrom(c.DeepCopy())
					c.Labels = map[string]string{"ring": "1"}
					g.Expect(k8s.Patch(ctx, c, patch)).To(Succeed())
				}
			}).WithContext(ctx).Should(Succeed(), func() string { return diagnostics(ctx) })
		}
	})

	It("runs a script exactly once on each computer a label selector targets, across sites, and succeeds", func(ctx SpecContext) {
		task("hello", siteopsv1.DeploymentTaskSpec{
			Action:  runScript(`echo "hello $E2E_AGENT" >> "$E2E_RUNS"; echo "output of $E2E_AGENT"`),
			Targets: siteopsv1.DeploymentTaskTargets{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"ring": "1"}}},
		})
		t := expectPhase(ctx, "hello", siteopsv1.TaskSucceeded, 2*time.Minute)
		Expect(t.Status.Targets).To(Equal(siteopsv1.TargetCounts{Total: 3, Succeeded: 3}))
		Expect(t.Status.Progress).To(Equal("3/3"))
		Expect(condition(t.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		Expect(runsOf("hello")).To(Equal(map[string]int{a1.name: 1, b1.name: 1, n1.name: 1}))
		for _, a := range []*agentProc{a1, b1, n1} {
			Eventually(func(g Gomega) {
				lt := computer(ctx, g, a.name).Status.LastTask
				g.Expect(lt).NotTo(BeNil())
				g.Expect(lt.Name).To(Equal("hello"))
				g.Expect(lt.State).To(Equal(siteopsv1.DispatchSucceeded))
				g.Expect(lt.Output).To(ContainSubstring("output of " + a.name))
			}).WithContext(ctx).Should(Succeed())
		}
		By("never running it again: the agents keep checking in")
		Consistently(func() map[string]int { return runsOf("hello") }).WithTimeout(8 * time.Second).
			Should(Equal(map[string]int{a1.name: 1, b1.name: 1, n1.name: 1}))
	})

	It("waits for its start time", func(ctx SpecContext) {
		startAt := time.Now().Add(15 * time.Second).Truncate(time.Second)
		task("later", siteopsv1.DeploymentTaskSpec{
			Action:   runScript(`echo "later $E2E_AGENT $(date +%s)" >> "$E2E_RUNS"`),
			Targets:  siteopsv1.DeploymentTaskTargets{Computers: []string{a2.name}},
			Schedule: &siteopsv1.DeploymentTaskSchedule{StartAt: &metav1.Time{Time: startAt}},
		})
		Consistently(func(g Gomega) {
			g.Expect(runsOf("later")).To(BeEmpty())
			g.Expect(getTask(ctx, g, computersNamespace, "later").Status.Phase).To(BeElementOf("", siteopsv1.TaskPending))
		}).WithContext(ctx).WithTimeout(time.Until(startAt) - time.Second).Should(Succeed())
		expectPhase(ctx, "later", siteopsv1.TaskSucceeded, time.Minute)
		Expect(runsOf("later")).To(HaveLen(1))
		for line := range runsOf("later") {
			var at int64
			_, _ = fmt.Sscan(strings.Fields(line)[1], &at)
			Expect(at).To(BeNumerically(">=", startAt.Unix()), "ran at %d, before its start time %d", at, startAt.Unix())
		}
	})

	It("stops dispatching once the failures pass the threshold", func(ctx SpecContext) {
		// Site B's one task service hands out the work: the bounds are
		// exact within one service (across services, see docs/tasks.md).
		one, zero := int32(1), int32(0)
		task("failing", siteopsv1.DeploymentTaskSpec{
			Action:  runScript(`echo "failing $E2E_AGENT" >> "$E2E_RUNS"; exit 3`),
			Targets: siteopsv1.DeploymentTaskTargets{Sites: []string{siteB}},
			Rollout: &siteopsv1.DeploymentTaskRollout{MaxConcurrent: &one, FailureThreshold: &zero},
		})
		t := expectPhase(ctx, "failing", siteopsv1.TaskStopped, 2*time.Minute)
		Expect(condition(t.Status.Conditions, siteopsv1.ConditionReady).Reason).To(Equal(siteopsv1.ReasonThresholdPassed))
		Expect(t.Status.Targets).To(Equal(siteopsv1.TargetCounts{Total: 2, Failed: 1, Pending: 1}))
		Expect(t.Status.Failures).To(HaveLen(1))
		Expect(t.Status.Failures[0].Reason).To(Equal(siteopsv1.FailureExitCode))
		Expect(*t.Status.Failures[0].ExitCode).To(Equal(int32(3)))
		Consistently(func() int { return len(runsOf("failing")) }).WithTimeout(8 * time.Second).Should(Equal(1))
	})

	It("loses no result and runs nothing twice when a task service dies mid-task", func(ctx SpecContext) {
		task("survive-server", siteopsv1.DeploymentTaskSpec{
			Action:  runScript(`echo "survive-server $E2E_AGENT" >> "$E2E_RUNS"; sleep 8`),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{a1.name}},
		})
		Eventually(func() map[string]int { return runsOf("survive-server") }).WithContext(ctx).WithTimeout(time.Minute).
			Should(HaveKey(a1.name))
		By("killing the task-service process agent a1 checks in with, while its script runs")
		endpoint := computer(ctx, Default, a1.name).Status.SiteServer
		Expect(endpoint).To(Equal(srvA))
		var victim corev1.Pod
		Eventually(func(g Gomega) {
			out, err := execAgentStatus(a1)
			g.Expect(err).NotTo(HaveOccurred())
			u, err := url.Parse(out["taskEndpoint"].(string))
			g.Expect(err).NotTo(HaveOccurred())
			for _, p := range pods(ctx, g, srvA, taskComponent) {
				if p.Status.PodIP == u.Hostname() {
					victim = p
				}
			}
			g.Expect(victim.Name).NotTo(BeEmpty())
		}).WithContext(ctx).Should(Succeed())
		Expect(syscall.Kill(containerPid(victim), syscall.SIGKILL)).To(Succeed())
		t := expectPhase(ctx, "survive-server", siteopsv1.TaskSucceeded, 2*time.Minute)
		Expect(t.Status.Targets).To(Equal(siteopsv1.TargetCounts{Total: 1, Succeeded: 1}))
		Expect(runsOf("survive-server")).To(Equal(map[string]int{a1.name: 1}))
	})

	It("reports an agent restarted mid-task as interrupted, without running the task twice", func(ctx SpecContext) {
		task("survive-agent", siteopsv1.DeploymentTaskSpec{
			Action:  runScript(`echo "survive-agent $E2E_AGENT" >> "$E2E_RUNS"; sleep 30`),
			Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{b1.name}},
		})
		Eventually(func() map[string]int { return runsOf("survive-agent") }).WithContext(ctx).WithTimeout(time.Minute).
			Should(HaveKey(b1.name))
		By("killing agent b1 while its script runs, and starting it again on the same state")
		b1.kill()
		b1.start()
		t := expectPhase(ctx, "survive-agent", siteopsv1.TaskFailed, 2*time.Minute)
		Expect(t.Status.Targets).To(Equal(siteopsv1.TargetCounts{Total: 1, Failed: 1}))
		Expect(t.Status.Failures).To(HaveLen(1))
		Expect(t.Status.Failures[0].Reason).To(Equal(siteopsv1.FailureInterrupted))
		Consistently(func() map[string]int { return runsOf("survive-agent") }).WithTimeout(8 * time.Second).
			Should(Equal(map[string]int{b1.name: 1}))
		Eventually(func(g Gomega) {
			lt := computer(ctx, g, b1.name).Status.LastTask
			g.Expect(lt).NotTo(BeNil())
			g.Expect(lt.Name).To(Equal("survive-agent"))
			g.Expect(lt.Reason).To(Equal(siteopsv1.FailureInterrupted))
		}).WithContext(ctx).Should(Succeed())
	})
})
