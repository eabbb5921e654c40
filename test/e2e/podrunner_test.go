//go:build e2e

package e2e

import (
	"strconv"
	"strings"
	"syscall"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The site services' pods run as processes (simcluster's pod runner): a
// process that dies is restarted and the pod is Ready again.
var _ = Describe("Site services as processes", Ordered, func() {
	const (
		site   = "runner"
		server = "runner-ss"
	)

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no process runs behind the pods")
		}
		createSite(ctx, site)
		ss := siteServer(server, []string{site}, siteServerSelector(), storageClass)
		Expect(k8s.Create(ctx, ss)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed())
		})
	})

	It("restarts a killed task-service process and lists its pod ready again", func(ctx SpecContext) {
		expectRolledOut(ctx, server, 1)
		var pod corev1.Pod
		Eventually(func(g Gomega) {
			list := expectPodsOn(ctx, g, server, taskComponent, 1, siteServerNodes)
			pod = list[0]
			g.Expect(selectedIPs(ctx, g, server+"-task")).To(ContainElement(pod.Status.PodIP))
		}).WithContext(ctx).Should(Succeed())
		pid := containerPid(pod)
		Expect(syscall.Kill(pid, 0)).To(Succeed(), "the task-service process %d of pod %s runs", pid, pod.Name)

		Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
		Eventually(func(g Gomega) {
			var now corev1.Pod
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(&pod), &now)).To(Succeed())
			g.Expect(now.Status.ContainerStatuses).To(HaveLen(1))
			st := now.Status.ContainerStatuses[0]
			g.Expect(st.RestartCount).To(BeEquivalentTo(1), "restartCount")
			g.Expect(st.LastTerminationState.Terminated).NotTo(BeNil(), "lastState.terminated")
			g.Expect(st.LastTerminationState.Terminated.ExitCode).To(BeEquivalentTo(128+int(syscall.SIGKILL)), "exit code")
			g.Expect(st.Ready).To(BeTrue(), "ready")
			newPid := containerPid(now)
			g.Expect(newPid).NotTo(Equal(pid))
			g.Expect(syscall.Kill(newPid, 0)).To(Succeed(), "the new process %d runs", newPid)
			g.Expect(selectedIPs(ctx, g, server+"-task")).To(ContainElement(now.Status.PodIP))
		}).WithContext(ctx).Should(Succeed())
	})
})

// containerPid is the process of the pod's first container, from the ID
// the pod runner reports (simcluster://<pid>).
func containerPid(pod corev1.Pod) int {
	GinkgoHelper()
	Expect(pod.Status.ContainerStatuses).NotTo(BeEmpty(), "container statuses of %s", pod.Name)
	id := pod.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "simcluster://"))
	Expect(err).NotTo(HaveOccurred(), "container ID %q of %s", id, pod.Name)
	return pid
}
