//go:build e2e

package e2e

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/simcluster"
)

// The SiteServers are created together in BeforeAll, so that their
// rollouts overlap and each spec then checks one of them.
var _ = Describe("SiteServers on a cluster", Ordered, ContinueOnFailure, func() {
	const (
		// missingClass is a StorageClass that a spec creates late.
		missingClass = "e2e-late"
	)

	BeforeAll(func(ctx SpecContext) {
		for _, name := range []string{"alpha", "bravo", "charlie", "delta", "echo"} {
			createSite(ctx, name)
		}
		alpha := siteServer("alpha-ss", []string{"alpha"}, siteServerSelector(), storageClass)
		alpha.Spec.Services.Task.Replicas = ptr.To[int32](2)
		charlie := siteServer("charlie-ss", []string{"charlie"}, map[string]siteopsv1.LabelValue{labelDedicated: "true"}, storageClass)
		charlie.Spec.Tolerations = []siteopsv1.Toleration{{
			Key: labelDedicated, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule,
		}}
		for _, ss := range []*siteopsv1.SiteServer{
			alpha,
			siteServer("bravo-ss", []string{"bravo"}, siteServerSelector(), storageClass),
			charlie,
			siteServer("central", nil, siteServerSelector(), storageClass),
			siteServer("late-ss", []string{"delta"}, map[string]siteopsv1.LabelValue{labelLatePool: "late"}, storageClass),
			siteServer("nostore-ss", []string{"echo"}, siteServerSelector(), missingClass),
			siteServer("orphan-ss", []string{"foxtrot"}, siteServerSelector(), storageClass),
		} {
			Expect(k8s.Create(ctx, ss)).To(Succeed())
		}
	})

	It("refuses pods that break the restricted Pod Security Standard in the workload namespace", func(ctx SpecContext) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "not-restricted", Namespace: namespace},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}
		err := k8s.Create(ctx, pod, client.DryRunAll)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "creating a pod without a restricted security context: %v", err)
		Expect(err.Error()).To(ContainSubstring("violates PodSecurity"))
	})

	It("runs each site's services only on the nodes its SiteServer selects", func(ctx SpecContext) {
		expectRolledOut(ctx, "alpha-ss", 2)
		expectRolledOut(ctx, "bravo-ss", 1)
		expectRolledOut(ctx, "charlie-ss", 1)

		// The ReplicaSet and StatefulSet controllers created these pods in
		// a namespace that enforces the restricted standard.
		for _, tc := range []struct {
			server, site        string
			task                int
			taskNodes, pkgNodes []string
		}{
			{"alpha-ss", "alpha", 2, siteServerNodes, storageNodes},
			{"bravo-ss", "bravo", 1, siteServerNodes, storageNodes},
			{"charlie-ss", "charlie", 1, []string{dedicatedNode}, []string{dedicatedNode}},
		} {
			By("checking the pods and Services of " + tc.server)
			Eventually(func(g Gomega) {
				task := expectPodsOn(ctx, g, tc.server, taskComponent, tc.task, tc.taskNodes)
				pkg := expectPodsOn(ctx, g, tc.server, packageComponent, 1, tc.pkgNodes)
				for _, p := range append(task, pkg...) {
					g.Expect(p.Labels).To(HaveKeyWithValue(controllers.LabelSitePrefix+tc.site, "true"), "labels of pod %s", p.Name)
					g.Expect(p.Labels).NotTo(HaveKey(controllers.LabelUnassigned), "labels of pod %s", p.Name)
				}
				g.Expect(selectedIPs(ctx, g, "site-"+tc.site+"-task")).To(Equal(podIPs(task)), "endpoints of site-%s-task", tc.site)
				g.Expect(selectedIPs(ctx, g, "site-"+tc.site+"-package")).To(Equal(podIPs(pkg)), "endpoints of site-%s-package", tc.site)
				g.Expect(selectedIPs(ctx, g, tc.server+"-task")).To(Equal(podIPs(task)), "endpoints of %s-task", tc.server)
				g.Expect(selectedIPs(ctx, g, tc.server+"-package")).To(Equal(podIPs(pkg)), "endpoints of %s-package", tc.server)
				g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: tc.server + "-config"}, &corev1.ConfigMap{})).To(Succeed())
			}).WithContext(ctx).Should(Succeed())
			expectSiteServerReady(ctx, tc.server)
			expectSiteReady(ctx, tc.site, tc.server)
		}

		By("checking that the package services' claims bound to volumes of their pods' nodes")
		Eventually(func(g Gomega) {
			for _, server := range []string{"alpha-ss", "bravo-ss", "charlie-ss"} {
				pkg := pods(ctx, g, server, packageComponent)
				g.Expect(pkg).To(HaveLen(1))
				var pvc corev1.PersistentVolumeClaim
				g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "content-" + pkg[0].Name}, &pvc)).To(Succeed())
				g.Expect(pvc.Status.Phase).To(Equal(corev1.ClaimBound), "claim %s", pvc.Name)
				var pv corev1.PersistentVolume
				g.Expect(k8s.Get(ctx, client.ObjectKey{Name: pvc.Spec.VolumeName}, &pv)).To(Succeed())
				g.Expect(pv.Labels).To(HaveKeyWithValue(simcluster.LabelVolumeNode, pkg[0].Spec.NodeName), "volume %s", pv.Name)
				g.Expect(pv.Spec.StorageClassName).To(Equal(storageClass))
			}
		}).WithContext(ctx).Should(Succeed())
	})

	It("labels the pods of an unassigned SiteServer as unassigned", func(ctx SpecContext) {
		expectRolledOut(ctx, "central", 1)
		Eventually(func(g Gomega) {
			task := expectPodsOn(ctx, g, "central", taskComponent, 1, siteServerNodes)
			pkg := expectPodsOn(ctx, g, "central", packageComponent, 1, storageNodes)
			for _, p := range append(task, pkg...) {
				g.Expect(p.Labels).To(HaveKeyWithValue(controllers.LabelUnassigned, "true"), "labels of pod %s", p.Name)
				for key := range p.Labels {
					g.Expect(strings.HasPrefix(key, controllers.LabelSitePrefix)).To(BeFalse(), "pod %s has site label %s", p.Name, key)
				}
			}
			g.Expect(selectedIPs(ctx, g, "central-task")).To(Equal(podIPs(task)))
			g.Expect(selectedIPs(ctx, g, "central-package")).To(Equal(podIPs(pkg)))
		}).WithContext(ctx).Should(Succeed())
		expectSiteServerReady(ctx, "central")
	})

	It("waits for a node matching its selector, then rolls out there", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, "late-ss")
			g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionPrerequisitesMet)).To(haveCondition(metav1.ConditionFalse, siteopsv1.ReasonNoMatchingNode))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
			site := getSite(ctx, g, "delta")
			g.Expect(condition(site.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionFalse, siteopsv1.ReasonServicesNotReady))
		}).WithContext(ctx).Should(Succeed())
		Consistently(func(g Gomega) {
			expectAbsent(ctx, g, &appsv1.Deployment{}, "late-ss-task")
			expectAbsent(ctx, g, &appsv1.StatefulSet{}, "late-ss-package")
		}).WithContext(ctx).Should(Succeed())

		By("adding a node that matches")
		Expect(simcluster.NodePool{Names: []string{lateNode}, Node: simcluster.FakeNode{Labels: map[string]string{labelLatePool: "late"}},
			StorageClass: storageClass, Volumes: 2}.Create(ctx, k8s)).To(Succeed())
		expectRolledOut(ctx, "late-ss", 1)
		Eventually(func(g Gomega) {
			expectPodsOn(ctx, g, "late-ss", taskComponent, 1, []string{lateNode})
			expectPodsOn(ctx, g, "late-ss", packageComponent, 1, []string{lateNode})
		}).WithContext(ctx).Should(Succeed())
		expectSiteServerReady(ctx, "late-ss")
		expectSiteReady(ctx, "delta", "late-ss")
	})

	It("runs the task service but no package service while its StorageClass is missing", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, "nostore-ss")
			g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionPrerequisitesMet)).To(haveCondition(metav1.ConditionFalse, siteopsv1.ReasonStorageClassNotFound))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionTaskServiceReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAvailable))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionPackageServiceReady)).To(haveCondition(metav1.ConditionFalse, siteopsv1.ReasonPrerequisitesNotMet))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
			g.Expect(ss.Status.Package.Ready).To(BeFalse())

			var dep appsv1.Deployment
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "nostore-ss-task"}, &dep)).To(Succeed())
			g.Expect(dep.Status.AvailableReplicas).To(Equal(int32(1)))
			expectPodsOn(ctx, g, "nostore-ss", taskComponent, 1, siteServerNodes)
		}).WithContext(ctx).Should(Succeed())
		// A Site is Ready when a task service of its own is.
		expectSiteReady(ctx, "echo", "nostore-ss")
		Consistently(func(g Gomega) {
			expectAbsent(ctx, g, &appsv1.StatefulSet{}, "nostore-ss-package")
			g.Expect(pods(ctx, g, "nostore-ss", packageComponent)).To(BeEmpty())
		}).WithContext(ctx).Should(Succeed())

		By("creating the StorageClass and a volume of it")
		Expect(simcluster.CreateLocalVolumes(ctx, k8s, simcluster.LocalVolumes{StorageClass: missingClass, Node: storageNodes[0], Count: 1})).To(Succeed())
		Expect(simcluster.CreateLocalStorageClass(ctx, k8s, missingClass)).To(Succeed())
		expectRolledOut(ctx, "nostore-ss", 1)
		Eventually(func(g Gomega) {
			expectPodsOn(ctx, g, "nostore-ss", packageComponent, 1, storageNodes[:1])
		}).WithContext(ctx).Should(Succeed())
		expectSiteServerReady(ctx, "nostore-ss")
	})

	It("waits for the Sites it names, then rolls out", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, "orphan-ss")
			g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation))
			pre := condition(ss.Status.Conditions, siteopsv1.ConditionPrerequisitesMet)
			g.Expect(pre).To(haveCondition(metav1.ConditionFalse, siteopsv1.ReasonSiteNotFound))
			g.Expect(pre.Message).To(ContainSubstring("foxtrot"))
			g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionFalse))
		}).WithContext(ctx).Should(Succeed())
		Consistently(func(g Gomega) {
			expectAbsent(ctx, g, &appsv1.Deployment{}, "orphan-ss-task")
			expectAbsent(ctx, g, &appsv1.StatefulSet{}, "orphan-ss-package")
		}).WithContext(ctx).Should(Succeed())

		By("creating the Site")
		createSite(ctx, "foxtrot")
		expectRolledOut(ctx, "orphan-ss", 1)
		expectSiteServerReady(ctx, "orphan-ss")
		expectSiteReady(ctx, "foxtrot", "orphan-ss")
	})

	It("moves a SiteServer's pods from one site's Services to another's when its sites change", func(ctx SpecContext) {
		Expect(k8s.Create(ctx, siteServer("mover", []string{"alpha"}, siteServerSelector(), storageClass))).To(Succeed())
		expectRolledOut(ctx, "mover", 1)
		expectSiteReady(ctx, "alpha", "alpha-ss", "mover")
		Eventually(func(g Gomega) {
			g.Expect(selectedIPs(ctx, g, "site-alpha-task")).To(Equal(podIPs(
				pods(ctx, g, "alpha-ss", taskComponent), pods(ctx, g, "mover", taskComponent))))
			g.Expect(selectedIPs(ctx, g, "site-alpha-package")).To(Equal(podIPs(
				pods(ctx, g, "alpha-ss", packageComponent), pods(ctx, g, "mover", packageComponent))))
			g.Expect(pods(ctx, g, "mover", taskComponent)).To(HaveLen(1))
		}).WithContext(ctx).Should(Succeed())

		By("moving it from alpha to bravo")
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, "mover")
			ss.Spec.Sites = []string{"bravo"}
			g.Expect(k8s.Update(ctx, ss)).To(Succeed())
		}).WithContext(ctx).Should(Succeed())
		expectRolledOut(ctx, "mover", 1)
		Eventually(func(g Gomega) {
			task := expectPodsOn(ctx, g, "mover", taskComponent, 1, siteServerNodes)
			pkg := expectPodsOn(ctx, g, "mover", packageComponent, 1, storageNodes)
			for _, p := range append(task, pkg...) {
				g.Expect(p.Labels).To(HaveKeyWithValue(controllers.LabelSitePrefix+"bravo", "true"), "labels of pod %s", p.Name)
				g.Expect(p.Labels).NotTo(HaveKey(controllers.LabelSitePrefix+"alpha"), "labels of pod %s", p.Name)
			}
			g.Expect(selectedIPs(ctx, g, "site-bravo-task")).To(Equal(podIPs(pods(ctx, g, "bravo-ss", taskComponent), task)))
			g.Expect(selectedIPs(ctx, g, "site-bravo-package")).To(Equal(podIPs(pods(ctx, g, "bravo-ss", packageComponent), pkg)))
			g.Expect(selectedIPs(ctx, g, "site-alpha-task")).To(Equal(podIPs(pods(ctx, g, "alpha-ss", taskComponent))))
			g.Expect(selectedIPs(ctx, g, "site-alpha-package")).To(Equal(podIPs(pods(ctx, g, "alpha-ss", packageComponent))))
		}).WithContext(ctx).Should(Succeed())
		expectSiteServerReady(ctx, "mover")
		expectSiteReady(ctx, "alpha", "alpha-ss")
		expectSiteReady(ctx, "bravo", "bravo-ss", "mover")
	})
})
