package controllers_test

import (
	"context"
	"net"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

var _ = Describe("SiteServer LoadBalancer exposure", func() {
	ctx := context.Background()

	// advertised is what each service of a SiteServer advertises.
	type advertisedURLs struct{ Task, Package []string }
	advertised := func(name string) func(Gomega) advertisedURLs {
		return func(g Gomega) advertisedURLs {
			var ss siteopsv1.SiteServer
			g.Expect(k8sClient.Get(ctx, client.ObjectKey{Name: name}, &ss)).To(Succeed())
			return advertisedURLs{Task: ss.Status.Task.Advertised, Package: ss.Status.Package.Advertised}
		}
	}
	both := func(urls ...string) advertisedURLs { return advertisedURLs{Task: urls, Package: urls} }

	// setIngress plays the cloud controller: it writes the load balancer's
	// ingress on a Service through the status subresource, again after a
	// conflict with the operator's applies.
	setIngress := func(name string, ingress ...corev1.LoadBalancerIngress) {
		GinkgoHelper()
		Eventually(func() error {
			var svc corev1.Service
			if err := k8sClient.Get(ctx, workload(name), &svc); err != nil {
				return err
			}
			svc.Status.LoadBalancer.Ingress = ingress
			return k8sClient.Status().Update(ctx, &svc)
		}, timeout, interval).Should(Succeed())
	}

	It("refuses a change of loadBalancerClass while the type stays LoadBalancer, and allows it through ClusterIP", func() {
		ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "lb2-srv"}, Spec: siteopsv1.SiteServerSpec{
			Exposure: siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer, LoadBalancerClass: ptr.To("example.net/a")}}}
		Expect(k8sClient.Create(ctx, ss)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, ss)
		const refused = "spec.exposure.loadBalancerClass cannot change while type stays LoadBalancer"
		for _, tc := range []struct {
			name  string
			class *string
		}{{"another class", ptr.To("example.net/b")}, {"no class", nil}} {
			err := tryUpdate(ctx, ss, func(ss *siteopsv1.SiteServer) { ss.Spec.Exposure.LoadBalancerClass = tc.class })
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: want Invalid, got %v", tc.name, err)
			Expect(err.Error()).To(ContainSubstring(refused))
		}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(ss), ss)).To(Succeed())
		Expect(ss.Spec.Exposure.LoadBalancerClass).To(HaveValue(Equal("example.net/a")), "nothing changed")

		By("through ClusterIP, then LoadBalancer with the new class")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureClusterIP}
		})
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer, LoadBalancerClass: ptr.To("example.net/b")}
		})
		By("a class set on a LoadBalancer that had none is refused too, as a Service refuses it")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureNodePort}
		})
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer}
		})
		err := tryUpdate(ctx, ss, func(ss *siteopsv1.SiteServer) { ss.Spec.Exposure.LoadBalancerClass = ptr.To("example.net/c") })
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
		Expect(err.Error()).To(ContainSubstring(refused))
	})

	It("makes LoadBalancer Services of the class asked, advertises their ingress, and lets explicit addresses win", func() {
		createSite(ctx, "lb1-site")
		node := createNode(ctx, "lb1-node", map[string]string{"test.siteops.io/role": "lb1"})
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.31"}}
		Expect(k8sClient.Status().Update(ctx, node)).To(Succeed())
		createStorageClass(ctx, "lb1-class")
		ss := createSiteServer(ctx, "lb1-srv", []string{"lb1-site"}, "lb1", "lb1-class")
		Eventually(exists(ctx, &appsv1.Deployment{}, workload("lb1-srv-task")), timeout, interval).Should(BeTrue())
		Eventually(exists(ctx, &appsv1.StatefulSet{}, workload("lb1-srv-package")), timeout, interval).Should(BeTrue())

		By("type LoadBalancer: both Services are load balancers of the class, with the annotations")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure = siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer,
				LoadBalancerClass: ptr.To("example.net/branch-lb"),
				Annotations:       map[string]string{"example.net/lb-subnet": "lyon-dmz", "example.net/zone": "lyon"}}
		})
		for _, name := range []string{"lb1-srv-task", "lb1-srv-package"} {
			var svc corev1.Service
			Eventually(func(g Gomega) corev1.ServiceType {
				g.Expect(k8sClient.Get(ctx, workload(name), &svc)).To(Succeed())
				return svc.Spec.Type
			}, timeout, interval).Should(Equal(corev1.ServiceTypeLoadBalancer), name)
			expectControlledBy(&svc, "SiteServer", "lb1-srv")
			Expect(svc.Spec.LoadBalancerClass).To(Equal(ptr.To("example.net/branch-lb")), name)
			Expect(svc.Spec.ExternalTrafficPolicy).To(Equal(corev1.ServiceExternalTrafficPolicyLocal), name)
			Expect(svc.Annotations).To(HaveKeyWithValue("example.net/lb-subnet", "lyon-dmz"), name)
			Expect(svc.Annotations).To(HaveKeyWithValue("example.net/zone", "lyon"), name)
			Expect(svc.Spec.Ports).To(HaveLen(1))
			Expect(svc.Spec.Ports[0].Port).To(Equal(int32(8080)), name)
		}
		Consistently(advertised("lb1-srv"), time.Second, interval).Should(Equal(advertisedURLs{}))

		By("ready pods before the load balancer answers: their own addresses, not the node port")
		createReadyPod(ctx, "lb1-srv", "task-service", "lb1-node", "10.244.9.5")
		createReadyPod(ctx, "lb1-srv", "package-service", "lb1-node", "10.244.9.6")
		Eventually(advertised("lb1-srv"), timeout, interval).Should(Equal(advertisedURLs{
			Task: []string{"https://10.244.9.5:8080"}, Package: []string{"https://10.244.9.6:8080"}}))

		By("the cloud controller writing an IP ingress: advertised instead, with the Service's port, and in the certificate")
		setIngress("lb1-srv-task", corev1.LoadBalancerIngress{IP: "203.0.113.10"})
		setIngress("lb1-srv-package", corev1.LoadBalancerIngress{IP: "203.0.113.11"})
		Eventually(advertised("lb1-srv"), timeout, interval).Should(Equal(advertisedURLs{
			Task: []string{"https://203.0.113.10:8080"}, Package: []string{"https://203.0.113.11:8080"}}))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "lb1-site")(g).TaskEndpoints }, timeout, interval).
			Should(Equal([]string{"https://203.0.113.10:8080"}))
		Eventually(func(g Gomega) []net.IP { return servingCertificate(ctx, "lb1-srv")(g).IPAddresses }, timeout, interval).
			Should(ContainElements(
				BeEquivalentTo(net.ParseIP("203.0.113.10").To4()), BeEquivalentTo(net.ParseIP("203.0.113.11").To4())))

		By("a hostname ingress, and an IPv6 one: both advertised, the IPv6 bracketed")
		setIngress("lb1-srv-task", corev1.LoadBalancerIngress{Hostname: "lb-tasks.lyon.example.net"},
			corev1.LoadBalancerIngress{IP: "2001:db8::10"})
		setIngress("lb1-srv-package", corev1.LoadBalancerIngress{Hostname: "lb-packages.lyon.example.net"})
		Eventually(advertised("lb1-srv"), timeout, interval).Should(Equal(advertisedURLs{
			Task:    []string{"https://[2001:db8::10]:8080", "https://lb-tasks.lyon.example.net:8080"},
			Package: []string{"https://lb-packages.lyon.example.net:8080"}}))
		Eventually(func(g Gomega) []string { return servingCertificate(ctx, "lb1-srv")(g).DNSNames }, timeout, interval).
			Should(ContainElements("lb-tasks.lyon.example.net", "lb-packages.lyon.example.net"))

		By("explicit addresses: advertised instead of the load balancer's")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure.Addresses = []string{"srv.lyon.example.net", "10.20.0.5:443"}
		})
		Eventually(advertised("lb1-srv"), timeout, interval).Should(Equal(
			both("https://10.20.0.5:443", "https://srv.lyon.example.net:8080")))
		Eventually(func(g Gomega) []string { return siteStatus(ctx, "lb1-site")(g).TaskEndpoints }, timeout, interval).
			Should(Equal([]string{"https://10.20.0.5:443", "https://srv.lyon.example.net:8080"}))
		// The Services stay load balancers: the addresses name what stands
		// in front of them.
		var svc corev1.Service
		Expect(k8sClient.Get(ctx, workload("lb1-srv-task"), &svc)).To(Succeed())
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))

		By("removing the addresses: the load balancer's ingress again")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) { ss.Spec.Exposure.Addresses = nil })
		Eventually(advertised("lb1-srv"), timeout, interval).Should(Equal(advertisedURLs{
			Task:    []string{"https://[2001:db8::10]:8080", "https://lb-tasks.lyon.example.net:8080"},
			Package: []string{"https://lb-packages.lyon.example.net:8080"}}))
	})
})
