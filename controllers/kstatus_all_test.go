package controllers_test

// What kubectl wait, Helm's --wait, Argo CD and Flux make of every kind:
// kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status) computed on the real
// objects, read back as unstructured from the API server, in progress,
// current and failed. Sites and Subnets have their own specs
// (site_kstatus_test.go, subnet_kstatus_test.go).

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/directory"
)

var _ = Describe("kstatus of every kind", func() {
	ctx := context.Background()

	// expectKstatus waits for kstatus to read want on obj.
	expectKstatus := func(obj client.Object, want kstatus.Status) {
		GinkgoHelper()
		Eventually(kstatusOf(ctx, obj), timeout, interval).Should(Equal(want),
			func() string { return kstatusMessage(ctx, obj) })
	}

	It("SiteServer: InProgress while its workloads roll out, Current once ready, Failed when a Site it serves is gone", func() {
		createSite(ctx, "ka-ss-a")
		gone := createSite(ctx, "ka-ss-b")
		createNode(ctx, "ka-ss-node", map[string]string{"test.siteops.io/role": "ka-ss"})
		createStorageClass(ctx, "ka-ss-class")
		ss := createSiteServer(ctx, "ka-ss", []string{"ka-ss-a", "ka-ss-b"}, "ka-ss", "ka-ss-class")
		// Observed, not merely not yet reconciled.
		Eventually(condition(ctx, "ka-ss", siteopsv1.ConditionReconciling), timeout, interval).Should(Equal("True/Progressing"))
		expectKstatus(ss, kstatus.InProgressStatus)

		markDeploymentAvailable(ctx, "ka-ss-task")
		markStatefulSetAvailable(ctx, "ka-ss-package")
		expectKstatus(ss, kstatus.CurrentStatus)

		Expect(k8sClient.Delete(ctx, gone)).To(Succeed())
		expectKstatus(ss, kstatus.FailedStatus)
		Expect(kstatusMessage(ctx, ss)).To(ContainSubstring(`Site "ka-ss-b" does not exist`))
	})

	It("Computer: InProgress before its agent registers and once it is offline, Current while it checks in; never Failed", func() {
		ensureNamespace(ctx, computerNamespace)
		c := createComputer(ctx, computerNamespace, "ka-comp")
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNotRegistered))
		expectKstatus(c, kstatus.InProgressStatus)
		Expect(kstatusMessage(ctx, c)).NotTo(ContainSubstring("observed generation"), "the status is the controller's verdict")

		writeComputerStatus(ctx, c, register(time.Now()))
		expectKstatus(c, kstatus.CurrentStatus)

		// Its agent stops checking in: Ready=False (AgentOffline) after
		// the suite's computerOfflineAfter. Nothing in the Computer's spec
		// could fix that, so it is not Stalled: kstatus reads InProgress,
		// and a GitOps tool waits rather than reporting a failed sync.
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonAgentOffline))
		expectKstatus(c, kstatus.InProgressStatus)
	})

	It("Package: Failed for a missing Site, InProgress while it replicates, Current once held, Failed when a copy fails", func() {
		ensureNamespace(ctx, packageNamespace)
		createSite(ctx, "ka-pk-a")
		createNode(ctx, "ka-pk-node", map[string]string{"test.siteops.io/role": "ka-pk"})
		createStorageClass(ctx, "ka-pk-class")
		p := diskImage("ka-pkg", func(p *siteopsv1.Package) {
			p.Spec.Replication = siteopsv1.PackageReplication{Policy: siteopsv1.ReplicateSites, Sites: []string{"ka-pk-a", "ka-pk-b"}}
		})
		Expect(k8sClient.Create(ctx, p)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, p)
		expectKstatus(p, kstatus.FailedStatus)
		Expect(kstatusMessage(ctx, p)).To(ContainSubstring("ka-pk-b"))

		createSite(ctx, "ka-pk-b")
		createSiteServer(ctx, "ka-pk-srv", []string{"ka-pk-a", "ka-pk-b"}, "ka-pk", "ka-pk-class")
		markStatefulSetAvailable(ctx, "ka-pk-srv-package")
		markDeploymentAvailable(ctx, "ka-pk-srv-task")
		Eventually(packageCondition(ctx, p, siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/Replicating"))
		reportCopy(ctx, p, "ka-pk-srv", siteopsv1.ContentReplicating, 1<<20, "")
		expectKstatus(p, kstatus.InProgressStatus)

		reportCopy(ctx, p, "ka-pk-srv", siteopsv1.ContentReady, p.Spec.Size, "")
		expectKstatus(p, kstatus.CurrentStatus)

		reportCopy(ctx, p, "ka-pk-srv", siteopsv1.ContentFailed, 0, "digest mismatch")
		expectKstatus(p, kstatus.FailedStatus)
		Expect(kstatusMessage(ctx, p)).To(ContainSubstring("digest mismatch"))
	})

	It("DeploymentTask: InProgress while it runs, Current once it succeeded, Failed once a target failed", func() {
		ensureNamespace(ctx, taskNamespace)
		kiosk := map[string]string{"dt-spec": "ka"}
		createTarget(ctx, "ka-dt-1", "", kiosk)
		ok := createTask(ctx, scriptTask("ka-dt-ok", "ka"))
		dispatch(ctx, ok, map[string]siteopsv1.DispatchEntry{"ka-dt-1": claimedAt(time.Now())})
		Eventually(taskPhase(ctx, ok), timeout, interval).Should(Equal(siteopsv1.TaskRunning))
		expectKstatus(ok, kstatus.InProgressStatus)

		dispatch(ctx, ok, map[string]siteopsv1.DispatchEntry{"ka-dt-1": succeededEntry()})
		Eventually(taskPhase(ctx, ok), timeout, interval).Should(Equal(siteopsv1.TaskSucceeded))
		expectKstatus(ok, kstatus.CurrentStatus)

		bad := createTask(ctx, scriptTask("ka-dt-bad", "ka"))
		dispatch(ctx, bad, map[string]siteopsv1.DispatchEntry{"ka-dt-1": failedEntry(3, "exit 3")})
		Eventually(taskPhase(ctx, bad), timeout, interval).Should(Equal(siteopsv1.TaskFailed))
		expectKstatus(bad, kstatus.FailedStatus)
	})

	It("DirectoryImport: Failed without its bind Secret, Current once synced, InProgress while the directory fails", func() {
		url := "ldaps://ka-dc.corp.example"
		// An empty directory: the import converges without creating Sites
		// that the other specs would see.
		directories.set(url, directory.Directory{}, nil)
		di := &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: "ka-import"}, Spec: siteopsv1.DirectoryImportSpec{
			URL: url, BaseDN: adBase, BindSecretRef: siteopsv1.SecretReference{Name: "ka-bind"},
			Interval: metav1.Duration{Duration: time.Minute}, MaxDeletePercent: 50}}
		Expect(k8sClient.Create(ctx, di)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, di)
		expectKstatus(di, kstatus.FailedStatus)
		Expect(kstatusMessage(ctx, di)).To(ContainSubstring("ka-bind"))

		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ka-bind", Namespace: workloadNamespace},
			StringData: map[string]string{"username": "CN=reader", "password": "s3cret"}}
		Expect(k8sClient.Create(ctx, secret)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, secret)
		// A spec change makes it look again now rather than in a minute.
		updateObject(ctx, di, func(di *siteopsv1.DirectoryImport) { di.Spec.PageSize = 123 })
		expectKstatus(di, kstatus.CurrentStatus)

		directories.set(url, directory.Directory{}, fmt.Errorf("%w: connection reset", directory.ErrSearch))
		updateObject(ctx, di, func(di *siteopsv1.DirectoryImport) { di.Spec.PageSize = 124 })
		// Once the controller has seen the failure, not merely the new
		// generation: Reconciling (it retries), so InProgress.
		Eventually(func() string { return kstatusMessage(ctx, di) }, timeout, interval).Should(
			And(HavePrefix(string(kstatus.InProgressStatus)+": "), ContainSubstring("connection reset")))
	})
})
