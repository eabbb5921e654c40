package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func createNode(ctx context.Context, name string, labels map[string]string) *corev1.Node {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	ExpectWithOffset(1, k8sClient.Create(ctx, node)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, node)
	return node
}

func createStorageClass(ctx context.Context, name string) *storagev1.StorageClass {
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: "kubernetes.io/no-provisioner"}
	ExpectWithOffset(1, k8sClient.Create(ctx, sc)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, sc)
	return sc
}

func createSiteServer(ctx context.Context, name string, sites []string, role, storageClass string) *siteopsv1.SiteServer {
	ss := &siteopsv1.SiteServer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: siteopsv1.SiteServerSpec{
			Sites:        sites,
			NodeSelector: map[string]siteopsv1.LabelValue{"test.siteops.io/role": siteopsv1.LabelValue(role)},
			Services: siteopsv1.SiteServices{Package: siteopsv1.PackageService{
				Storage: siteopsv1.PackageStorage{StorageClassName: storageClass, Size: ptr.To(resource.MustParse("1Gi"))}}},
		},
	}
	ExpectWithOffset(1, k8sClient.Create(ctx, ss)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, ss)
	return ss
}

func workload(name string) client.ObjectKey {
	return client.ObjectKey{Namespace: workloadNamespace, Name: name}
}

// condition returns the status and reason of one of a SiteServer's
// conditions, once the status describes the current generation.
func condition(ctx context.Context, name, condType string) func(Gomega) string {
	return func(g Gomega) string {
		var ss siteopsv1.SiteServer
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ss)).To(Succeed())
		g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation))
		c := meta.FindStatusCondition(ss.Status.Conditions, condType)
		g.Expect(c).NotTo(BeNil())
		return fmt.Sprintf("%s/%s", c.Status, c.Reason)
	}
}

func conditionMessage(ctx context.Context, name, condType string) string {
	var ss siteopsv1.SiteServer
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ss)).To(Succeed())
	c := meta.FindStatusCondition(ss.Status.Conditions, condType)
	ExpectWithOffset(1, c).NotTo(BeNil())
	return c.Message
}

func exists(ctx context.Context, obj client.Object, key client.ObjectKey) func() bool {
	return func() bool { return k8sClient.Get(ctx, key, obj) == nil }
}

func expectControlledBy(obj client.Object, kind, name string) {
	ref := metav1.GetControllerOf(obj)
	ExpectWithOffset(1, ref).NotTo(BeNil(), "%T %s has no controller reference", obj, obj.GetName())
	ExpectWithOffset(1, ref.Kind).To(Equal(kind))
	ExpectWithOffset(1, ref.Name).To(Equal(name))
	ExpectWithOffset(1, ref.APIVersion).To(Equal(siteopsv1.GroupVersion.String()))
}

func siteStatus(ctx context.Context, name string) func(Gomega) siteopsv1.SiteStatus {
	return func(g Gomega) siteopsv1.SiteStatus {
		var site siteopsv1.Site
		g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &site)).To(Succeed())
		g.Expect(site.Status.ObservedGeneration).To(Equal(site.Generation))
		return site.Status
	}
}

func siteReady(ctx context.Context, name string) func(Gomega) string {
	return func(g Gomega) string {
		c := meta.FindStatusCondition(siteStatus(ctx, name)(g).Conditions, siteopsv1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		return fmt.Sprintf("%s/%s", c.Status, c.Reason)
	}
}

// markDeploymentAvailable plays the Deployment controller, which envtest
// does not run, by writing an available status.
func markDeploymentAvailable(ctx context.Context, name string) {
	Eventually(func(g Gomega) {
		var dep appsv1.Deployment
		g.Expect(k8sClient.Get(ctx, workload(name), &dep)).To(Succeed())
		replicas := ptr.Deref(dep.Spec.Replicas, 1)
		dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: replicas,
			UpdatedReplicas: replicas, ReadyReplicas: replicas, AvailableReplicas: replicas}
		g.Expect(k8sClient.Status().Update(ctx, &dep)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

var _ = Describe("SiteServer", func() {
	ctx := context.Background()

	It("runs a task-service Deployment and a package-service StatefulSet for its sites", func() {
		createSite(ctx, "s1-lyon")
		createNode(ctx, "s1-node", map[string]string{"test.siteops.io/role": "s1"})
		createStorageClass(ctx, "s1-local")
		createSiteServer(ctx, "s1-lyon-srv", []string{"s1-lyon"}, "s1", "s1-local")

		Eventually(condition(ctx, "s1-lyon-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("True/PrerequisitesMet"))

		var dep appsv1.Deployment
		Eventually(exists(ctx, &dep, workload("s1-lyon-srv-task")), timeout, interval).Should(BeTrue())
		expectControlledBy(&dep, "SiteServer", "s1-lyon-srv")
		Expect(*dep.Spec.Replicas).To(Equal(int32(1)))
		pod := dep.Spec.Template
		Expect(pod.Labels).To(HaveKeyWithValue("site.siteops.io/s1-lyon", "true"))
		Expect(pod.Spec.NodeSelector).To(Equal(map[string]string{"test.siteops.io/role": "s1"}))
		Expect(pod.Spec.Containers[0].Command[0]).To(Equal("/usr/local/bin/task-service"))

		var sts appsv1.StatefulSet
		Eventually(exists(ctx, &sts, workload("s1-lyon-srv-package")), timeout, interval).Should(BeTrue())
		expectControlledBy(&sts, "SiteServer", "s1-lyon-srv")
		Expect(sts.Spec.Template.Labels).To(HaveKeyWithValue("site.siteops.io/s1-lyon", "true"))
		Expect(sts.Spec.VolumeClaimTemplates[0].Spec.StorageClassName).To(Equal(ptr.To("s1-local")))

		var cm corev1.ConfigMap
		Eventually(exists(ctx, &cm, workload("s1-lyon-srv-config")), timeout, interval).Should(BeTrue())
		expectControlledBy(&cm, "SiteServer", "s1-lyon-srv")
		Expect(cm.Data["config.yaml"]).To(ContainSubstring("s1-lyon"))

		for _, name := range []string{"s1-lyon-srv-task", "s1-lyon-srv-package"} {
			var svc corev1.Service
			Eventually(exists(ctx, &svc, workload(name)), timeout, interval).Should(BeTrue(), name)
			expectControlledBy(&svc, "SiteServer", "s1-lyon-srv")
		}
		var siteTask corev1.Service
		Eventually(exists(ctx, &siteTask, workload("site-s1-lyon-task")), timeout, interval).Should(BeTrue())
		expectControlledBy(&siteTask, "Site", "s1-lyon")
		Expect(siteTask.Spec.Selector).To(Equal(map[string]string{
			"site.siteops.io/s1-lyon": "true", "app.kubernetes.io/component": "task-service"}))

		Eventually(func(g Gomega) []string { return siteStatus(ctx, "s1-lyon")(g).SiteServers }, timeout, interval).
			Should(Equal([]string{"s1-lyon-srv"}))
		Expect(siteStatus(ctx, "s1-lyon")(Default).TaskEndpoints).To(BeEmpty(), "nothing is advertised before a pod is ready")
		Expect(siteReady(ctx, "s1-lyon")(Default)).To(Equal("False/ServicesNotReady"))
		Expect(condition(ctx, "s1-lyon-srv", siteopsv1.ConditionTaskServiceReady)(Default)).To(Equal("False/Progressing"))

		By("the Deployment becoming available")
		markDeploymentAvailable(ctx, "s1-lyon-srv-task")
		Eventually(condition(ctx, "s1-lyon-srv", siteopsv1.ConditionTaskServiceReady), timeout, interval).
			Should(Equal("True/Available"))
		Eventually(siteReady(ctx, "s1-lyon"), timeout, interval).Should(Equal("True/TaskServiceAvailable"))
		var ss siteopsv1.SiteServer
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "s1-lyon-srv"}, &ss)).To(Succeed())
		Expect(ss.Status.Task).To(Equal(siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1,
			Endpoint: "https://s1-lyon-srv-task." + workloadNamespace + ".svc:8080"}))
		// The package service is not available (no StatefulSet controller here).
		Expect(condition(ctx, "s1-lyon-srv", siteopsv1.ConditionReady)(Default)).To(Equal("False/Progressing"))
	})

	It("holds back the services whose prerequisites are missing until they appear", func() {
		createSiteServer(ctx, "s2-srv", []string{"s2-site"}, "s2", "s2-class")
		Eventually(condition(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("False/SiteNotFound"))
		Expect(conditionMessage(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet)).To(
			And(ContainSubstring(`Site "s2-site" does not exist`), ContainSubstring("no node matches")))
		Expect(condition(ctx, "s2-srv", siteopsv1.ConditionTaskServiceReady)(Default)).To(Equal("False/PrerequisitesNotMet"))
		Expect(exists(ctx, &appsv1.Deployment{}, workload("s2-srv-task"))()).To(BeFalse())

		By("creating the Site")
		createSite(ctx, "s2-site")
		Eventually(condition(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("False/NoMatchingNode"))
		Consistently(exists(ctx, &appsv1.Deployment{}, workload("s2-srv-task")), time.Second, interval).Should(BeFalse())

		By("creating a matching node")
		createNode(ctx, "s2-node", map[string]string{"test.siteops.io/role": "s2"})
		Eventually(condition(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("False/StorageClassNotFound"))
		Expect(conditionMessage(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet)).To(ContainSubstring(`"s2-class"`))
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("s2-srv-task")), timeout, interval).Should(BeTrue())
		Expect(exists(ctx, &appsv1.StatefulSet{}, workload("s2-srv-package"))()).To(BeFalse())
		Expect(condition(ctx, "s2-srv", siteopsv1.ConditionPackageServiceReady)(Default)).To(Equal("False/PrerequisitesNotMet"))

		By("creating the StorageClass")
		createStorageClass(ctx, "s2-class")
		Eventually(condition(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("True/PrerequisitesMet"))
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("s2-srv-package")), timeout, interval).Should(BeTrue())

		By("deleting the Site again: the running workloads stay, the condition says what is missing")
		var site siteopsv1.Site
		Expect(k8sClient.Get(ctx, client.ObjectKey{Name: "s2-site"}, &site)).To(Succeed())
		Expect(k8sClient.Delete(ctx, &site)).To(Succeed())
		Eventually(condition(ctx, "s2-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).
			Should(Equal("False/SiteNotFound"))
		Consistently(exists(ctx, &appsv1.Deployment{}, workload("s2-srv-task")), time.Second, interval).Should(BeTrue())
		Expect(exists(ctx, &appsv1.StatefulSet{}, workload("s2-srv-package"))()).To(BeTrue())
	})

	It("moves the pods between the sites' Services when spec.sites changes", func() {
		createSite(ctx, "s3-a")
		createSite(ctx, "s3-b")
		createNode(ctx, "s3-node", map[string]string{"test.siteops.io/role": "s3"})
		createStorageClass(ctx, "s3-class")
		ss := createSiteServer(ctx, "s3-srv", []string{"s3-a"}, "s3", "s3-class")

		Eventually(exists(ctx, &corev1.Service{}, workload("site-s3-a-task")), timeout, interval).Should(BeTrue())
		Expect(exists(ctx, &corev1.Service{}, workload("site-s3-b-task"))()).To(BeFalse())

		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Sites = []string{"s3-b"}
		})

		Eventually(func(g Gomega) map[string]string {
			var dep appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, workload("s3-srv-task"), &dep)).To(Succeed())
			return dep.Spec.Template.Labels
		}, timeout, interval).Should(And(HaveKeyWithValue("site.siteops.io/s3-b", "true"), Not(HaveKey("site.siteops.io/s3-a"))))
		Eventually(func(g Gomega) map[string]string {
			var sts appsv1.StatefulSet
			g.Expect(k8sClient.Get(ctx, workload("s3-srv-package"), &sts)).To(Succeed())
			return sts.Spec.Template.Labels
		}, timeout, interval).Should(And(HaveKeyWithValue("site.siteops.io/s3-b", "true"), Not(HaveKey("site.siteops.io/s3-a"))))
		Eventually(exists(ctx, &corev1.Service{}, workload("site-s3-b-task")), timeout, interval).Should(BeTrue())
		Eventually(exists(ctx, &corev1.Service{}, workload("site-s3-a-task")), timeout, interval).Should(BeFalse())
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "s3-a")(g).SiteServers }, timeout, interval).Should(BeEmpty())
		Eventually(siteReady(ctx, "s3-a"), timeout, interval).Should(Equal("False/NoSiteServer"))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "s3-b")(g).SiteServers }, timeout, interval).
			Should(Equal([]string{"s3-srv"}))
	})

	It("keeps a PodDisruptionBudget only while the task service has more than one replica, and writes nothing once converged", func() {
		createSite(ctx, "s4-site")
		createNode(ctx, "s4-node", map[string]string{"test.siteops.io/role": "s4"})
		createStorageClass(ctx, "s4-class")
		ss := createSiteServer(ctx, "s4-srv", []string{"s4-site"}, "s4", "s4-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("s4-srv-task")), timeout, interval).Should(BeTrue())
		Expect(exists(ctx, &policyv1.PodDisruptionBudget{}, workload("s4-srv-task"))()).To(BeFalse())

		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Services.Task.Replicas = ptr.To(int32(3))
		})
		var pdb policyv1.PodDisruptionBudget
		Eventually(exists(ctx, &pdb, workload("s4-srv-task")), timeout, interval).Should(BeTrue())
		expectControlledBy(&pdb, "SiteServer", "s4-srv")
		Eventually(func(g Gomega) int32 {
			var dep appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, workload("s4-srv-task"), &dep)).To(Succeed())
			return *dep.Spec.Replicas
		}, timeout, interval).Should(Equal(int32(3)))
		markDeploymentAvailable(ctx, "s4-srv-task")
		Eventually(siteReady(ctx, "s4-site"), timeout, interval).Should(Equal("True/TaskServiceAvailable"))

		By("restarting the manager: every SiteServer, Site and workload is reconciled and nothing is written")
		manager.stop()
		before := reconcileTotal("siteserver")
		manager = startManager()
		Eventually(func() float64 { return reconcileTotal("siteserver") - before }, timeout, interval).
			Should(BeNumerically(">=", 1))
		Consistently(manager.writes.Load, 3*time.Second, interval).Should(BeZero(), func() string {
			return fmt.Sprintf("writes: %v", manager.writeList())
		})

		By("going back to one replica")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Services.Task.Replicas = ptr.To(int32(1))
		})
		Eventually(exists(ctx, &policyv1.PodDisruptionBudget{}, workload("s4-srv-task")), timeout, interval).Should(BeFalse())
	})
})

var _ = Describe("SiteServer storage", func() {
	ctx := context.Background()

	It("reports a storage change that a StatefulSet cannot take, and applies everything else", func() {
		createSite(ctx, "s5-a")
		createSite(ctx, "s5-b")
		createNode(ctx, "s5-node", map[string]string{"test.siteops.io/role": "s5"})
		createStorageClass(ctx, "s5-class")
		ss := createSiteServer(ctx, "s5-srv", []string{"s5-a"}, "s5", "s5-class")
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("s5-srv-package")), timeout, interval).Should(BeTrue())
		Eventually(condition(ctx, "s5-srv", siteopsv1.ConditionPackageServiceReady), timeout, interval).
			Should(Equal("False/Progressing"))

		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Services.Package.Storage.Size = ptr.To(resource.MustParse("5Gi"))
			ss.Spec.Sites = []string{"s5-b"}
		})

		Eventually(condition(ctx, "s5-srv", siteopsv1.ConditionPackageServiceReady), timeout, interval).
			Should(Equal("False/StorageChangePending"))
		Expect(conditionMessage(ctx, "s5-srv", siteopsv1.ConditionPackageServiceReady)).To(
			And(ContainSubstring("5Gi"), ContainSubstring("1Gi"), ContainSubstring("--cascade=orphan")))
		var sts appsv1.StatefulSet
		Expect(k8sClient.Get(ctx, workload("s5-srv-package"), &sts)).To(Succeed())
		Expect(sts.Spec.Template.Labels).To(HaveKeyWithValue("site.siteops.io/s5-b", "true"))
		Expect(sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()).To(Equal("1Gi"))

		By("deleting the StatefulSet as the message says")
		// No garbage collector runs here, so the orphan policy's finalizer
		// would never be removed; a plain delete leaves the pods alone too.
		Expect(k8sClient.Delete(ctx, &sts)).To(Succeed())
		Eventually(func(g Gomega) string {
			var again appsv1.StatefulSet
			g.Expect(k8sClient.Get(ctx, workload("s5-srv-package"), &again)).To(Succeed())
			return again.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests.Storage().String()
		}, timeout, interval).Should(Equal("5Gi"))
		Eventually(condition(ctx, "s5-srv", siteopsv1.ConditionPackageServiceReady), timeout, interval).
			Should(Equal("False/Progressing"))
	})
})
