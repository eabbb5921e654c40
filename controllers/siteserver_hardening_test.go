package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
)

// kstatusOf computes what kubectl wait, Helm 4, Argo CD and Flux make of the
// object as the API server holds it.
func kstatusOf(ctx context.Context, obj client.Object) func(Gomega) kstatus.Status {
	return func(g Gomega) kstatus.Status {
		u := &unstructured.Unstructured{}
		gvk, err := k8sClient.GroupVersionKindFor(obj)
		g.Expect(err).NotTo(HaveOccurred())
		u.SetGroupVersionKind(gvk)
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), u)).To(Succeed())
		res, err := kstatus.Compute(u)
		g.Expect(err).NotTo(HaveOccurred())
		return res.Status
	}
}

var _ = Describe("SiteServer hardening", func() {
	ctx := context.Background()

	It("keeps serving its other sites when one Site is deleted or its node loses the label, and says so", func() {
		createSite(ctx, "h1-a")
		siteB := createSite(ctx, "h1-b")
		node := createNode(ctx, "h1-node", map[string]string{"test.siteops.io/role": "h1"})
		createStorageClass(ctx, "h1-class")
		ss := createSiteServer(ctx, "h1-srv", []string{"h1-a", "h1-b"}, "h1", "h1-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("h1-srv-task")), timeout, interval).Should(BeTrue())
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("h1-srv-package")), timeout, interval).Should(BeTrue())
		By("reading InProgress while the workloads roll out")
		Eventually(condition(ctx, "h1-srv", siteopsv1.ConditionReconciling), timeout, interval).Should(Equal("True/Progressing"))
		Expect(kstatusOf(ctx, ss)(Default)).To(Equal(kstatus.InProgressStatus))

		markDeploymentAvailable(ctx, "h1-srv-task")
		markStatefulSetAvailable(ctx, "h1-srv-package")
		Eventually(condition(ctx, "h1-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
		Eventually(kstatusOf(ctx, ss), timeout, interval).Should(Equal(kstatus.CurrentStatus))

		By("deleting Site h1-b: the workloads stay, h1-a stays ready")
		Expect(k8sClient.Delete(ctx, siteB)).To(Succeed())
		Eventually(condition(ctx, "h1-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).Should(Equal("False/SiteNotFound"))
		Expect(condition(ctx, "h1-srv", siteopsv1.ConditionReady)(Default)).To(Equal("False/Degraded"))
		Expect(conditionMessage(ctx, "h1-srv", siteopsv1.ConditionReady)).To(ContainSubstring(`Site "h1-b" does not exist`))
		Expect(condition(ctx, "h1-srv", siteopsv1.ConditionTaskServiceReady)(Default)).To(Equal("True/Available"))
		Expect(kstatusOf(ctx, ss)(Default)).To(Equal(kstatus.FailedStatus))
		Consistently(exists(ctx, &appsv1.Deployment{}, workload("h1-srv-task")), 2*time.Second, interval).Should(BeTrue())
		Expect(exists(ctx, &appsv1.StatefulSet{}, workload("h1-srv-package"))()).To(BeTrue())
		Eventually(siteReady(ctx, "h1-a"), timeout, interval).Should(HavePrefix("True/"))

		By("removing the node's label: the workloads still stay")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(node), node)).To(Succeed())
		node.Labels = nil
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		Eventually(func() string { return conditionMessage(ctx, "h1-srv", siteopsv1.ConditionPrerequisitesMet) }, timeout, interval).
			Should(ContainSubstring("no node matches"))
		Consistently(exists(ctx, &appsv1.Deployment{}, workload("h1-srv-task")), 2*time.Second, interval).Should(BeTrue())
		Expect(exists(ctx, &appsv1.StatefulSet{}, workload("h1-srv-package"))()).To(BeTrue())

		By("fixing spec.sites and the label: Ready again")
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(node), node)).To(Succeed())
		node.Labels = map[string]string{"test.siteops.io/role": "h1"}
		Expect(k8sClient.Update(ctx, node)).To(Succeed())
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) { ss.Spec.Sites = []string{"h1-a"} })
		// The pods' labels change: play the rollout of the new templates.
		Eventually(func(g Gomega) {
			var dep appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, workload("h1-srv-task"), &dep)).To(Succeed())
			g.Expect(dep.Spec.Template.Labels).NotTo(HaveKey("site.siteops.io/h1-b"))
			var sts appsv1.StatefulSet
			g.Expect(k8sClient.Get(ctx, workload("h1-srv-package"), &sts)).To(Succeed())
			g.Expect(sts.Spec.Template.Labels).NotTo(HaveKey("site.siteops.io/h1-b"))
		}, timeout, interval).Should(Succeed())
		markDeploymentAvailable(ctx, "h1-srv-task")
		markStatefulSetAvailable(ctx, "h1-srv-package")
		Eventually(condition(ctx, "h1-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
		Eventually(kstatusOf(ctx, ss), timeout, interval).Should(Equal(kstatus.CurrentStatus))
	})

	It("keeps running when the node that runs its workloads is deleted, and says that no node matches", func() {
		createSite(ctx, "h4-site")
		node := createNode(ctx, "h4-node", map[string]string{"test.siteops.io/role": "h4"})
		createStorageClass(ctx, "h4-class")
		ss := createSiteServer(ctx, "h4-srv", []string{"h4-site"}, "h4", "h4-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("h4-srv-task")), timeout, interval).Should(BeTrue())
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("h4-srv-package")), timeout, interval).Should(BeTrue())
		// The pods run on h4-node.
		createReadyPod(ctx, "h4-srv", "task-service", "h4-node", "10.244.9.4")
		createReadyPod(ctx, "h4-srv", "package-service", "h4-node", "10.244.9.5")
		markDeploymentAvailable(ctx, "h4-srv-task")
		markStatefulSetAvailable(ctx, "h4-srv-package")
		Eventually(condition(ctx, "h4-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
		Eventually(siteReady(ctx, "h4-site"), timeout, interval).Should(HavePrefix("True/"))

		By("deleting the node: the workloads stay, the conditions say what is missing")
		Expect(k8sClient.Delete(ctx, node)).To(Succeed())
		Eventually(condition(ctx, "h4-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).Should(Equal("False/NoMatchingNode"))
		Expect(conditionMessage(ctx, "h4-srv", siteopsv1.ConditionPrerequisitesMet)).To(
			ContainSubstring("no node matches spec.nodeSelector map[test.siteops.io/role:h4]"))
		Expect(condition(ctx, "h4-srv", siteopsv1.ConditionReady)(Default)).To(Equal("False/Degraded"))
		Expect(conditionMessage(ctx, "h4-srv", siteopsv1.ConditionReady)).To(
			And(ContainSubstring("The services run and are available"), ContainSubstring("no node matches")))
		Expect(condition(ctx, "h4-srv", siteopsv1.ConditionStalled)(Default)).To(Equal("True/NoMatchingNode"))
		Expect(condition(ctx, "h4-srv", siteopsv1.ConditionTaskServiceReady)(Default)).To(Equal("True/Available"))
		Expect(condition(ctx, "h4-srv", siteopsv1.ConditionPackageServiceReady)(Default)).To(Equal("True/Available"))
		Expect(kstatusOf(ctx, ss)(Default)).To(Equal(kstatus.FailedStatus))
		Consistently(exists(ctx, &appsv1.Deployment{}, workload("h4-srv-task")), 2*time.Second, interval).Should(BeTrue())
		Expect(exists(ctx, &appsv1.StatefulSet{}, workload("h4-srv-package"))()).To(BeTrue())
		Expect(siteReady(ctx, "h4-site")(Default)).To(HavePrefix("True/"))

		By("a node with the label joining: Ready again")
		createNode(ctx, "h4-node-2", map[string]string{"test.siteops.io/role": "h4"})
		Eventually(condition(ctx, "h4-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
		Expect(condition(ctx, "h4-srv", siteopsv1.ConditionPrerequisitesMet)(Default)).To(Equal("True/PrerequisitesMet"))
		Eventually(kstatusOf(ctx, ss), timeout, interval).Should(Equal(kstatus.CurrentStatus))
	})

	It("leaves an object of another owner alone and reports NotOwned", func() {
		createSite(ctx, "h2-site")
		createNode(ctx, "h2-node", map[string]string{"test.siteops.io/role": "h2"})
		createStorageClass(ctx, "h2-class")
		foreign := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "h2-srv-task", Namespace: workloadNamespace, Labels: map[string]string{"owner": "someone-else"}},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "other"},
				Ports: []corev1.ServicePort{{Name: "web", Port: 9999}}},
		}
		Expect(k8sClient.Create(ctx, foreign)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, foreign)

		ss := createSiteServer(ctx, "h2-srv", []string{"h2-site"}, "h2", "h2-class")
		Eventually(condition(ctx, "h2-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/NotOwned"))
		Expect(conditionMessage(ctx, "h2-srv", siteopsv1.ConditionReady)).To(
			And(ContainSubstring("h2-srv-task"), ContainSubstring("no controller"), ContainSubstring("SiteServer h2-srv")))
		Expect(condition(ctx, "h2-srv", siteopsv1.ConditionStalled)(Default)).To(Equal("True/NotOwned"))
		Expect(kstatusOf(ctx, ss)(Default)).To(Equal(kstatus.FailedStatus))

		var got corev1.Service
		Consistently(func(g Gomega) {
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), &got)).To(Succeed())
			g.Expect(got.OwnerReferences).To(BeEmpty())
			g.Expect(got.Spec.Selector).To(Equal(map[string]string{"app": "other"}))
			g.Expect(got.Spec.Ports).To(HaveLen(1))
			g.Expect(got.Spec.Ports[0].Port).To(Equal(int32(9999)))
		}, 2*time.Second, interval).Should(Succeed())

		By("disabling the task service: the foreign Service is not deleted either")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) { ss.Spec.Services.Task.Enabled = ptr.To(false) })
		Eventually(condition(ctx, "h2-srv", siteopsv1.ConditionTaskServiceReady), timeout, interval).Should(Equal("True/Disabled"))
		Eventually(condition(ctx, "h2-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/NotOwned"))
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(foreign), &got)).To(Succeed())
	})

	It("writes a failed apply into the status, naming the object and the API server's answer", func() {
		createSite(ctx, "h3-site")
		createNode(ctx, "h3-node", map[string]string{"test.siteops.io/role": "h3"})
		createStorageClass(ctx, "h3-class")
		// A ValidatingAdmissionPolicy plays a cluster policy that refuses
		// the operator's Deployment.
		policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
			ObjectMeta: metav1.ObjectMeta{Name: "h3-no-task-deployments"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr.To(admissionregistrationv1.Fail),
				MatchConstraints: &admissionregistrationv1.MatchResources{ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"},
							Resources: []string{"deployments"}},
					}}}},
				Validations: []admissionregistrationv1.Validation{{
					Expression: "object.metadata.name != 'h3-srv-task'",
					Message:    "h3 policy: no task service here",
				}},
			},
		}
		Expect(k8sClient.Create(ctx, policy)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, policy)
		binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "h3-no-task-deployments"},
			Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name,
				ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}},
		}
		Expect(k8sClient.Create(ctx, binding)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, binding)
		// The policy takes effect once the API server has loaded it.
		Eventually(func() error {
			return k8sClient.Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "h3-srv-task", Namespace: "default"},
				Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
					Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
						Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}}, client.DryRunAll)
		}, timeout, interval).Should(HaveOccurred())

		ss := createSiteServer(ctx, "h3-srv", []string{"h3-site"}, "h3", "h3-class")
		Eventually(condition(ctx, "h3-srv", siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/ApplyFailed"))
		Expect(conditionMessage(ctx, "h3-srv", siteopsv1.ConditionReady)).To(
			And(ContainSubstring("h3-srv-task"), ContainSubstring("h3 policy: no task service here")))
		Expect(kstatusOf(ctx, ss)(Default)).To(Equal(kstatus.FailedStatus))
		Expect(exists(ctx, &appsv1.Deployment{}, workload("h3-srv-task"))()).To(BeFalse())

		By("lifting the policy: the Deployment is created and the failure clears")
		Expect(k8sClient.Delete(ctx, binding)).To(Succeed())
		// The operator retries with back-off; nothing needs to change.
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("h3-srv-task")), 2*timeout, interval).Should(BeTrue())
		Eventually(condition(ctx, "h3-srv", siteopsv1.ConditionReady), timeout, interval).ShouldNot(Equal("False/ApplyFailed"))
	})
})

var _ = Describe("SiteServer exposure", func() {
	ctx := context.Background()

	readyPod := func(ss, component, node, ip string) *corev1.Pod { return createReadyPod(ctx, ss, component, node, ip) }
	advertised := func(name string) func(Gomega) []string {
		return func(g Gomega) []string {
			var ss siteopsv1.SiteServer
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ss)).To(Succeed())
			return ss.Status.Task.Advertised
		}
	}

	It("advertises the ready pods, then the node port, then explicit addresses, and the Site lists them", func() {
		createSite(ctx, "x1-site")
		node := createNode(ctx, "x1-node", map[string]string{"test.siteops.io/role": "x1"})
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.21"}}
		Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())
		createStorageClass(ctx, "x1-class")
		ss := createSiteServer(ctx, "x1-srv", []string{"x1-site"}, "x1", "x1-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("x1-srv-task")), timeout, interval).Should(BeTrue())
		Consistently(advertised("x1-srv"), time.Second, interval).Should(BeEmpty())

		By("a ready pod: its own address")
		pod := readyPod("x1-srv", "task-service", "x1-node", "10.244.7.5")
		Eventually(advertised("x1-srv"), timeout, interval).Should(Equal([]string{"https://10.244.7.5:8080"}))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "x1-site")(g).TaskEndpoints }, timeout, interval).
			Should(Equal([]string{"https://10.244.7.5:8080"}))

		By("NodePort: the Service changes, the node's address and port are advertised")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureNodePort, Annotations: map[string]string{"example.net/zone": "lyon"}}
		})
		var svc corev1.Service
		Eventually(func(g Gomega) corev1.ServiceType {
			g.Expect(k8sClient.Get(ctx, workload("x1-srv-task"), &svc)).To(Succeed())
			return svc.Spec.Type
		}, timeout, interval).Should(Equal(corev1.ServiceTypeNodePort))
		Expect(svc.Spec.ExternalTrafficPolicy).To(Equal(corev1.ServiceExternalTrafficPolicyLocal))
		Expect(svc.Annotations).To(HaveKeyWithValue("example.net/zone", "lyon"))
		nodePort := svc.Spec.Ports[0].NodePort
		Expect(nodePort).NotTo(BeZero())
		Eventually(advertised("x1-srv"), timeout, interval).Should(Equal([]string{fmt.Sprintf("https://192.0.2.21:%d", nodePort)}))

		By("the node's addresses change: the URL follows, its ExternalIP ahead of its InternalIP")
		setAddresses := func(addresses ...corev1.NodeAddress) {
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(node), node)).To(Succeed())
			node.Status.Addresses = addresses
			Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())
		}
		setAddresses(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.22"})
		Eventually(advertised("x1-srv"), timeout, interval).Should(Equal([]string{fmt.Sprintf("https://192.0.2.22:%d", nodePort)}))
		setAddresses(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "192.0.2.22"},
			corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.51.100.7"})
		Eventually(advertised("x1-srv"), timeout, interval).Should(Equal([]string{fmt.Sprintf("https://198.51.100.7:%d", nodePort)}))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "x1-site")(g).TaskEndpoints }, timeout, interval).
			Should(Equal([]string{fmt.Sprintf("https://198.51.100.7:%d", nodePort)}))

		By("the pod no longer ready: nothing to advertise on a node port")
		pod.Status.Conditions[0].Status = corev1.ConditionFalse
		Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
		Eventually(advertised("x1-srv"), timeout, interval).Should(BeEmpty())

		By("explicit addresses: advertised whatever the pods do")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure.Addresses = []string{"srv.lyon.example.net", "10.20.0.5:443"}
		})
		Eventually(advertised("x1-srv"), timeout, interval).Should(Equal(
			[]string{"https://10.20.0.5:443", "https://srv.lyon.example.net:8080"}))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "x1-site")(g).TaskEndpoints }, timeout, interval).
			Should(Equal([]string{"https://10.20.0.5:443", "https://srv.lyon.example.net:8080"}))
	})

	It("refuses an address that is not host or host:port, and a load-balancer class without type LoadBalancer", func() {
		for _, tc := range []struct {
			exposure siteopsv1.Exposure
			want     string
		}{
			{siteopsv1.Exposure{Addresses: []string{"https://srv.example.net"}}, "spec.exposure.addresses entries must be host or host:port"},
			{siteopsv1.Exposure{Addresses: []string{"srv example"}}, "spec.exposure.addresses"},
			{siteopsv1.Exposure{Type: siteopsv1.ExposureNodePort, LoadBalancerClass: ptr.To("x")}, "loadBalancerClass is allowed only with type LoadBalancer"},
		} {
			ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "x2-srv"}, Spec: siteopsv1.SiteServerSpec{Exposure: tc.exposure}}
			err := k8sClient.Create(ctx, ss)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%+v: got %v", tc.exposure, err)
			Expect(err.Error()).To(ContainSubstring(tc.want))
		}
	})
})

var _ = Describe("SiteServer admission", func() {
	ctx := context.Background()

	// create sends a SiteServer as unstructured JSON with strict field
	// validation, as kubectl does, so that unknown fields are refused too.
	create := func(name string, spec map[string]any) error {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": siteopsv1.GroupVersion.String(), "kind": "SiteServer",
			"metadata": map[string]any{"name": name}, "spec": spec,
		}}
		err := k8sClient.Create(ctx, u, client.FieldValidation("Strict"))
		if err == nil {
			DeferCleanup(deleteIgnoringNotFound, ctx, u)
		}
		return err
	}
	svc := func(kind string, fields map[string]any) map[string]any {
		return map[string]any{"services": map[string]any{kind: fields}}
	}
	res := func(requests, limits map[string]any) map[string]any {
		r := map[string]any{}
		if requests != nil {
			r["requests"] = requests
		}
		if limits != nil {
			r["limits"] = limits
		}
		return r
	}

	DescribeTable("refuses what cannot run, naming the field",
		func(name string, spec map[string]any, want ...string) {
			err := create(name, spec)
			Expect(err).To(HaveOccurred())
			Expect(apierrors.IsInvalid(err) || apierrors.IsBadRequest(err)).To(BeTrue(), "got %v", err)
			for _, w := range want {
				Expect(err.Error()).To(ContainSubstring(w))
			}
		},
		Entry("a name that a Site's Services use", "site-paris", map[string]any{}, "must not start with 'site-'"),
		Entry("a negative bandwidthLimit", "adm-bw-neg", svc("package", map[string]any{"bandwidthLimit": "-5Mi"}),
			"spec.services.package.bandwidthLimit", "at least 1Ki"),
		Entry("a zero bandwidthLimit", "adm-bw-zero", svc("package", map[string]any{"bandwidthLimit": "0"}),
			"spec.services.package.bandwidthLimit"),
		Entry("a negative storage size", "adm-size-neg", svc("package", map[string]any{"storage": map[string]any{"size": "-1Gi"}}),
			"spec.services.package.storage.size", "at least 1Gi"),
		Entry("a storage size too small to hold an image", "adm-size-small", svc("package", map[string]any{"storage": map[string]any{"size": "100Mi"}}),
			"spec.services.package.storage.size"),
		Entry("a request above its limit", "adm-req-limit", svc("task", map[string]any{"resources": res(
			map[string]any{"memory": "1Gi"}, map[string]any{"memory": "256Mi"})}),
			"spec.services.task.resources", "resources.requests.memory must not exceed resources.limits.memory"),
		Entry("a resource that is not cpu, memory or ephemeral-storage", "adm-res-gpu", svc("package", map[string]any{"resources": res(
			nil, map[string]any{"nvidia.com/gpu": "1"})}),
			`unknown field "spec.services.package.resources.limits.nvidia.com/gpu"`),
		Entry("a zero limit", "adm-res-zero", svc("task", map[string]any{"resources": res(nil, map[string]any{"cpu": "0"})}),
			"spec.services.task.resources.limits", "cpu must be a positive quantity"),
		Entry("resource claims", "adm-claims", svc("task", map[string]any{"resources": map[string]any{
			"claims": []any{map[string]any{"name": "gpu"}}}}),
			`unknown field "spec.services.task.resources.claims"`),
		Entry("a nodeSelector key that is not a label key", "adm-ns-key", map[string]any{"nodeSelector": map[string]any{"bad key!": "x"}},
			"spec.nodeSelector", "label keys"),
		Entry("a nodeSelector value that is not a label value", "adm-ns-value",
			map[string]any{"nodeSelector": map[string]any{"role": "not a value"}}, "spec.nodeSelector.role", "should match"),
		Entry("a toleration operator that does not exist", "adm-tol-op",
			map[string]any{"tolerations": []any{map[string]any{"key": "k", "operator": "Maybe"}}},
			"spec.tolerations[0].operator", `supported values: "Equal", "Exists"`),
		Entry("a toleration effect that does not exist", "adm-tol-effect",
			map[string]any{"tolerations": []any{map[string]any{"key": "k", "effect": "Sometimes"}}},
			"spec.tolerations[0].effect", `"NoSchedule"`),
		Entry("a toleration value that is not a label value", "adm-tol-value",
			map[string]any{"tolerations": []any{map[string]any{"key": "k", "value": "a b"}}},
			"spec.tolerations[0].value", "should match"),
		Entry("tolerationSeconds without NoExecute", "adm-tol-seconds",
			map[string]any{"tolerations": []any{map[string]any{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}}},
			"spec.tolerations[0]", "only with effect NoExecute"),
	)

	It("accepts limits below the default requests, and runs the services with requests that follow them", func() {
		createSite(ctx, "adm-ll-site")
		createNode(ctx, "adm-ll-node", map[string]string{"test.siteops.io/role": "adm-ll"})
		createStorageClass(ctx, "adm-ll-class")
		// Below the requests the operator adds (50m of CPU, 64Mi of
		// memory) where the spec names none.
		Expect(create("adm-low-limits", map[string]any{
			"sites":        []any{"adm-ll-site"},
			"nodeSelector": map[string]any{"test.siteops.io/role": "adm-ll"},
			"services": map[string]any{
				"task": map[string]any{"resources": res(nil, map[string]any{"cpu": "10m", "memory": "32Mi"})},
				"package": map[string]any{
					"resources": res(map[string]any{"memory": "16Mi"}, map[string]any{"cpu": "20m", "memory": "48Mi"}),
					"storage":   map[string]any{"storageClassName": "adm-ll-class", "size": "1Gi"},
				},
			},
		})).To(Succeed())

		// resources reads what the API server stored for a pod template.
		resources := func(spec corev1.PodSpec) (requests, limits map[corev1.ResourceName]string) {
			GinkgoHelper()
			Expect(spec.Containers).To(HaveLen(1))
			str := func(list corev1.ResourceList) map[corev1.ResourceName]string {
				out := map[corev1.ResourceName]string{}
				for name, q := range list {
					out[name] = q.String()
				}
				return out
			}
			return str(spec.Containers[0].Resources.Requests), str(spec.Containers[0].Resources.Limits)
		}
		// On a timeout, what the operator reported.
		ready := func() string {
			var ss siteopsv1.SiteServer
			if err := k8sClient.Get(ctx, client.ObjectKey{Name: "adm-low-limits"}, &ss); err != nil {
				return err.Error()
			}
			return fmt.Sprintf("Ready: %+v", meta.FindStatusCondition(ss.Status.Conditions, siteopsv1.ConditionReady))
		}
		var dep appsv1.Deployment
		Eventually(exists(ctx, &dep, workload("adm-low-limits-task")), timeout, interval).Should(BeTrue(), ready)
		requests, limits := resources(dep.Spec.Template.Spec)
		Expect(limits).To(Equal(map[corev1.ResourceName]string{corev1.ResourceCPU: "10m", corev1.ResourceMemory: "32Mi"}))
		Expect(requests).To(Equal(limits))
		var sts appsv1.StatefulSet
		Eventually(exists(ctx, &sts, workload("adm-low-limits-package")), timeout, interval).Should(BeTrue(), ready)
		requests, limits = resources(sts.Spec.Template.Spec)
		Expect(limits).To(Equal(map[corev1.ResourceName]string{corev1.ResourceCPU: "20m", corev1.ResourceMemory: "48Mi"}))
		Expect(requests).To(Equal(map[corev1.ResourceName]string{corev1.ResourceCPU: "20m", corev1.ResourceMemory: "16Mi"}),
			"the CPU request follows the limit, the memory request is the spec's")

		Eventually(condition(ctx, "adm-low-limits", siteopsv1.ConditionReady), timeout, interval).Should(Equal("False/Progressing"))
		markDeploymentAvailable(ctx, "adm-low-limits-task")
		markStatefulSetAvailable(ctx, "adm-low-limits-package")
		Eventually(condition(ctx, "adm-low-limits", siteopsv1.ConditionReady), timeout, interval).Should(Equal("True/ServicesReady"))
	})
})

// createReadyPod plays the ReplicaSet or StatefulSet controller and the
// kubelet, which envtest does not run: a pod of a SiteServer's component,
// bound to node, ready at ip.
func createReadyPod(ctx context.Context, ss, component, node, ip string) *corev1.Pod {
	GinkgoHelper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: ss + "-" + component + "-0", Namespace: workloadNamespace,
			Labels: map[string]string{controllers.LabelSiteServer: ss, controllers.LabelComponent: component}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
	Expect(k8sClient.Create(ctx, pod)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, pod)
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	Expect(k8sClient.Status().Update(ctx, pod)).To(Succeed())
	return pod
}

// updateSiteServer changes a SiteServer as a user would, retrying on a
// conflict with the operator's status writes.
func updateSiteServer(ctx context.Context, ss *siteopsv1.SiteServer, change func(*siteopsv1.SiteServer)) {
	GinkgoHelper()
	updateObject(ctx, ss, change)
}

// updateObject reads obj, changes it and updates it, again after a
// conflict: the operator writes status between a test's read and its write.
func updateObject[T client.Object](ctx context.Context, obj T, change func(T)) {
	GinkgoHelper()
	Eventually(func() error {
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		change(obj)
		return k8sClient.Update(ctx, obj)
	}, timeout, interval).Should(Succeed())
}

// tryUpdate changes a copy of obj as a user would and returns the API
// server's verdict, again after a conflict with the operator's status
// writes (the only verdict it does not return). obj is left as it was.
func tryUpdate[T client.Object](ctx context.Context, obj T, change func(T)) error {
	GinkgoHelper()
	var err error
	Eventually(func(g Gomega) bool {
		now := obj.DeepCopyObject().(T)
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), now)).To(Succeed())
		change(now)
		err = k8sClient.Update(ctx, now)
		return apierrors.IsConflict(err)
	}, timeout, interval).Should(BeFalse())
	return err
}

// expectRefused creates obj and expects the API server to refuse it as
// Invalid with every one of wantMessages, and nothing created: empty is a
// zero object of obj's kind to read it back into.
func expectRefused(ctx context.Context, obj, empty client.Object, wantMessages ...string) {
	GinkgoHelper()
	err := k8sClient.Create(ctx, obj)
	Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
	for _, want := range wantMessages {
		Expect(err.Error()).To(ContainSubstring(want))
	}
	Expect(apierrors.IsNotFound(k8sClient.Get(ctx, client.ObjectKeyFromObject(obj), empty))).
		To(BeTrue(), "the %T was created", obj)
}

// markStatefulSetAvailable plays the StatefulSet controller, which envtest
// does not run, by writing an available status.
func markStatefulSetAvailable(ctx context.Context, name string) {
	Eventually(func(g Gomega) {
		var sts appsv1.StatefulSet
		g.Expect(k8sClient.Get(ctx, workload(name), &sts)).To(Succeed())
		sts.Status = appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, Replicas: 1, ReadyReplicas: 1,
			AvailableReplicas: 1, UpdatedReplicas: 1, CurrentReplicas: 1, CurrentRevision: "r1", UpdateRevision: "r1"}
		g.Expect(k8sClient.Status().Update(ctx, &sts)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}
