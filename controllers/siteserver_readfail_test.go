package controllers_test

import (
	"context"
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
)

var _ = Describe("SiteServer read failures", func() {
	ctx := context.Background()

	// withoutReadiness is a status without Ready and the kstatus
	// conditions: what a failed read must leave as it was.
	withoutReadiness := func(status siteopsv1.SiteServerStatus) siteopsv1.SiteServerStatus {
		out := *status.DeepCopy()
		for _, c := range []string{siteopsv1.ConditionReady, siteopsv1.ConditionReconciling, siteopsv1.ConditionStalled} {
			meta.RemoveStatusCondition(&out.Conditions, c)
		}
		return out
	}

	It("writes a failed read into Ready and Reconciling, leaves the rest of the status, and retries", func() {
		createSite(ctx, "rf-site")
		createNode(ctx, "rf-node", map[string]string{"test.siteops.io/role": "rf"})
		createStorageClass(ctx, "rf-class")
		ss := createSiteServer(ctx, "rf-srv", []string{"rf-site"}, "rf", "rf-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("rf-srv-task")), timeout, interval).Should(BeTrue())
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("rf-srv-package")), timeout, interval).Should(BeTrue())
		markDeploymentAvailable(ctx, "rf-srv-task")
		markStatefulSetAvailable(ctx, "rf-srv-package")
		Eventually(condition(ctx, "rf-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
		Eventually(siteReady(ctx, "rf-site"), timeout, interval).Should(HavePrefix("True/"))

		// The reconcilers here read from the API server itself, as the
		// manager reads from its cache, and fail one read.
		direct, err := client.NewWithWatch(restCfg, client.Options{Scheme: scheme})
		Expect(err).NotTo(HaveOccurred())
		recorder := events.NewFakeRecorder(1000)
		reconciler := func(c client.Client) *controllers.SiteServerReconciler {
			return &controllers.SiteServerReconciler{Client: c, Workloads: options.Workloads,
				Certificates: options.Certificates, Events: recorder}
		}
		injected := errors.New("injected read failure")
		failList := func(fails func(client.ObjectList) bool) interceptor.Funcs {
			return interceptor.Funcs{List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
				if fails(list) {
					return injected
				}
				return c.List(ctx, list, opts...)
			}}
		}
		req := reconcile.Request{NamespacedName: client.ObjectKeyFromObject(ss)}

		for _, tc := range []struct {
			read  string
			funcs interceptor.Funcs
			want  string // what the error and Ready's message name
		}{
			{"the Nodes (prerequisites)", failList(func(l client.ObjectList) bool { _, ok := l.(*corev1.NodeList); return ok }),
				"listing Nodes"},
			{"the task-service Deployment (workloads)", interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch,
				key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if _, ok := obj.(*appsv1.Deployment); ok {
					return injected
				}
				return c.Get(ctx, key, obj, opts...)
			}}, "rf-srv-task"},
			{"the pods (exposure)", failList(func(l client.ObjectList) bool { _, ok := l.(*corev1.PodList); return ok }),
				"listing the task-service pods of SiteServer rf-srv"},
		} {
			By("failing to read " + tc.read)
			failing := reconciler(interceptor.NewClient(direct, tc.funcs))
			// The running manager reconciles rf-srv too, on events of other
			// objects: a status it writes between the reads here and the
			// reconcile's fails the round, which runs again.
			Eventually(func(g Gomega) {
				var before, after siteopsv1.SiteServer
				g.Expect(k8sClient.Get(ctx, req.NamespacedName, &before)).To(Succeed())
				_, err := failing.Reconcile(ctx, req)
				g.Expect(err).To(MatchError(And(ContainSubstring(tc.want), ContainSubstring(injected.Error()))),
					"the error is returned, so that the read is retried")
				g.Expect(k8sClient.Get(ctx, req.NamespacedName, &after)).To(Succeed())

				ready := meta.FindStatusCondition(after.Status.Conditions, siteopsv1.ConditionReady)
				g.Expect(ready).NotTo(BeNil())
				g.Expect(ready.Status).To(Equal(metav1.ConditionFalse))
				g.Expect(ready.Reason).To(Equal(siteopsv1.ReasonReadFailed))
				g.Expect(ready.Message).To(And(ContainSubstring(tc.want), ContainSubstring(injected.Error())))
				g.Expect(ready.ObservedGeneration).To(Equal(after.Generation))
				reconciling := meta.FindStatusCondition(after.Status.Conditions, siteopsv1.ConditionReconciling)
				g.Expect(reconciling).NotTo(BeNil())
				g.Expect(reconciling.Status).To(Equal(metav1.ConditionTrue))
				g.Expect(reconciling.Reason).To(Equal(siteopsv1.ReasonReadFailed))
				g.Expect(meta.FindStatusCondition(after.Status.Conditions, siteopsv1.ConditionStalled)).To(BeNil())
				// Nothing else is computed from what was half read: the
				// services, their conditions and observedGeneration stay.
				g.Expect(withoutReadiness(after.Status)).To(Equal(withoutReadiness(before.Status)))
				g.Expect(after.Status.Task.Ready).To(BeTrue())
				g.Expect(kstatusOf(ctx, ss)(g)).To(Equal(kstatus.InProgressStatus))
			}, timeout, interval).Should(Succeed())
			// TaskServiceReady still says the task service runs: the
			// Site keeps its server.
			Consistently(siteReady(ctx, "rf-site"), time.Second, interval).Should(HavePrefix("True/"))

			By("reading again: the status is computed in full")
			Eventually(func(g Gomega) {
				_, err := reconciler(direct).Reconcile(ctx, req)
				g.Expect(err).NotTo(HaveOccurred())
				g.Expect(condition(ctx, "rf-srv", siteopsv1.ConditionReady)(g)).To(Equal("True/ServicesReady"))
				g.Expect(kstatusOf(ctx, ss)(g)).To(Equal(kstatus.CurrentStatus))
			}, timeout, interval).Should(Succeed())
		}

		var recorded []string
		for len(recorder.Events) > 0 {
			recorded = append(recorded, <-recorder.Events)
		}
		Expect(recorded).To(ContainElement(HavePrefix("Warning ReadFailed listing Nodes")))
		Expect(recorded).To(ContainElement(HavePrefix("Normal ServicesReady")))
	})
})
