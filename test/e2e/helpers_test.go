//go:build e2e

package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

// Components of a SiteServer, as its pods' app.kubernetes.io/component.
const (
	taskComponent    = "task-service"
	packageComponent = "package-service"
)

// siteServer builds a SiteServer whose package service stores its content
// on class.
func siteServer(name string, sites []string, nodeSelector map[string]siteopsv1.LabelValue, class string) *siteopsv1.SiteServer {
	ss := &siteopsv1.SiteServer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: siteopsv1.SiteServerSpec{
			Sites:        sites,
			NodeSelector: nodeSelector,
		},
	}
	ss.Spec.Services.Package.Storage.StorageClassName = class
	return ss
}

// siteServerSelector is the nodeSelector of the suite's ordinary
// SiteServers.
func siteServerSelector() map[string]siteopsv1.LabelValue {
	return map[string]siteopsv1.LabelValue{labelSiteServerNode: "true"}
}

func createSite(ctx context.Context, name string) {
	GinkgoHelper()
	Expect(k8s.Create(ctx, &siteopsv1.Site{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       siteopsv1.SiteSpec{DisplayName: "Site " + name},
	})).To(Succeed())
}

// serviceURL is the endpoint the operator reports for a Service of the
// workload namespace.
func serviceURL(service string) string {
	return fmt.Sprintf("https://%s.%s.svc:%d", service, namespace, config.DefaultPort)
}

// condition is the condition of type t, or an Unknown one when absent so
// that matchers print something useful.
func condition(conds []metav1.Condition, t string) metav1.Condition {
	if c := meta.FindStatusCondition(conds, t); c != nil {
		return *c
	}
	return metav1.Condition{Type: t, Status: metav1.ConditionUnknown, Reason: "Absent"}
}

// haveCondition matches a condition's status and reason.
func haveCondition(status metav1.ConditionStatus, reason string) OmegaMatcher {
	return And(HaveField("Status", status), HaveField("Reason", reason))
}

func getSiteServer(ctx context.Context, g Gomega, name string) *siteopsv1.SiteServer {
	var ss siteopsv1.SiteServer
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: name}, &ss)).To(Succeed())
	return &ss
}

func getSite(ctx context.Context, g Gomega, name string) *siteopsv1.Site {
	var site siteopsv1.Site
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: name}, &site)).To(Succeed())
	return &site
}

// expectSiteServerReady waits until the SiteServer's status, for its
// current generation, reports every service ready with its endpoints.
func expectSiteServerReady(ctx context.Context, name string) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		ss := getSiteServer(ctx, g, name)
		g.Expect(ss.Status.ObservedGeneration).To(Equal(ss.Generation), "status.observedGeneration")
		g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionPrerequisitesMet)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonPrerequisitesMet))
		g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionTaskServiceReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAvailable))
		g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionPackageServiceReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonAvailable))
		g.Expect(condition(ss.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonServicesReady))
		g.Expect(ss.Status.Task.Ready).To(BeTrue(), "status.task.ready")
		g.Expect(ss.Status.Task.Endpoint).To(Equal(serviceURL(name+"-task")), "status.task.endpoint")
		g.Expect(ss.Status.Package.Ready).To(BeTrue(), "status.package.ready")
		g.Expect(ss.Status.Package.Endpoint).To(Equal(serviceURL(name+"-package")), "status.package.endpoint")
	}).WithContext(ctx).Should(Succeed(), "SiteServer %s turns Ready", name)
}

// expectSiteReady waits until the Site reports a ready task service of
// its own, served by exactly servers.
func expectSiteReady(ctx context.Context, name string, servers ...string) {
	GinkgoHelper()
	slices.Sort(servers)
	Eventually(func(g Gomega) {
		site := getSite(ctx, g, name)
		g.Expect(site.Status.ObservedGeneration).To(Equal(site.Generation), "status.observedGeneration")
		g.Expect(condition(site.Status.Conditions, siteopsv1.ConditionReady)).To(haveCondition(metav1.ConditionTrue, siteopsv1.ReasonSiteReady))
		g.Expect(site.Status.SiteServers).To(Equal(servers), "status.siteServers")
		// The site's endpoints are what its servers advertise: here, with
		// ClusterIP exposure, their ready pods' addresses.
		var task, pkg []string
		for _, server := range servers {
			ss := getSiteServer(ctx, g, server)
			g.Expect(ss.Status.Task.Advertised).NotTo(BeEmpty(), "status.task.advertised of %s", server)
			task = append(task, ss.Status.Task.Advertised...)
			pkg = append(pkg, ss.Status.Package.Advertised...)
		}
		slices.Sort(task)
		slices.Sort(pkg)
		g.Expect(site.Status.TaskEndpoints).To(Equal(slices.Compact(task)), "status.taskEndpoints")
		g.Expect(site.Status.PackageEndpoints).To(Equal(slices.Compact(pkg)), "status.packageEndpoints")
	}).WithContext(ctx).Should(Succeed(), "Site %s turns Ready", name)
}

// expectRolledOut waits until the SiteServer's Deployment has taskReplicas
// available pods and its StatefulSet a ready pod, all of them of the
// current spec.
func expectRolledOut(ctx context.Context, name string, taskReplicas int32) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var dep appsv1.Deployment
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name + "-task"}, &dep)).To(Succeed())
		g.Expect(dep.Status.ObservedGeneration).To(Equal(dep.Generation), "Deployment %s status.observedGeneration", dep.Name)
		g.Expect(dep.Status.UpdatedReplicas).To(Equal(taskReplicas), "Deployment %s status.updatedReplicas", dep.Name)
		g.Expect(dep.Status.AvailableReplicas).To(Equal(taskReplicas), "Deployment %s status.availableReplicas", dep.Name)
		g.Expect(dep.Status.Replicas).To(Equal(taskReplicas), "Deployment %s status.replicas (old pods gone)", dep.Name)

		var sts appsv1.StatefulSet
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name + "-package"}, &sts)).To(Succeed())
		g.Expect(sts.Status.ObservedGeneration).To(Equal(sts.Generation), "StatefulSet %s status.observedGeneration", sts.Name)
		g.Expect(sts.Status.ReadyReplicas).To(Equal(int32(1)), "StatefulSet %s status.readyReplicas", sts.Name)
		g.Expect(sts.Status.AvailableReplicas).To(Equal(int32(1)), "StatefulSet %s status.availableReplicas", sts.Name)
		g.Expect(sts.Status.UpdateRevision).To(Equal(sts.Status.CurrentRevision), "StatefulSet %s revision", sts.Name)
	}).WithContext(ctx).Should(Succeed(), "SiteServer %s rolls out", name)
}

// pods lists the running pods of a SiteServer's component, leaving out pods
// being deleted.
func pods(ctx context.Context, g Gomega, siteServer, component string) []corev1.Pod {
	var list corev1.PodList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(namespace),
		client.MatchingLabels{controllers.LabelSiteServer: siteServer, controllers.LabelComponent: component})).To(Succeed())
	var out []corev1.Pod
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	return out
}

// expectPodsOn checks that the SiteServer's component has want running,
// ready pods, each on one of nodes.
func expectPodsOn(ctx context.Context, g Gomega, siteServer, component string, want int, nodes []string) []corev1.Pod {
	list := pods(ctx, g, siteServer, component)
	g.Expect(list).To(HaveLen(want), "pods of %s %s", siteServer, component)
	for _, p := range list {
		g.Expect(p.Spec.NodeName).To(BeElementOf(nodes), "node of pod %s", p.Name)
		g.Expect(p.Status.Phase).To(Equal(corev1.PodRunning), "phase of pod %s", p.Name)
		g.Expect(p.Status.PodIP).NotTo(BeEmpty(), "IP of pod %s", p.Name)
		g.Expect(p.Status.Conditions).To(ContainElement(And(
			HaveField("Type", corev1.PodReady), HaveField("Status", corev1.ConditionTrue))), "pod %s is Ready", p.Name)
	}
	return list
}

// podIPs are the pods' addresses, sorted.
func podIPs(lists ...[]corev1.Pod) []string {
	ips := []string{}
	for _, list := range lists {
		for _, p := range list {
			ips = append(ips, p.Status.PodIP)
		}
	}
	slices.Sort(ips)
	return ips
}

// selectedIPs are the addresses of the ready pods that the Service's
// selector picks, sorted: what its endpoints are. (With the pod runner the
// pods have loopback addresses, which the API server refuses in
// EndpointSlices, so the slices themselves stay empty.)
func selectedIPs(ctx context.Context, g Gomega, service string) []string {
	var svc corev1.Service
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: service}, &svc)).To(Succeed())
	g.Expect(svc.Spec.Selector).NotTo(BeEmpty(), "Service %s selects nothing", service)
	var list corev1.PodList
	g.Expect(k8s.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels(svc.Spec.Selector))).To(Succeed())
	ips := []string{}
	for _, pod := range list.Items {
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
			continue
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ips = append(ips, pod.Status.PodIP)
			}
		}
	}
	slices.Sort(ips)
	return ips
}

// expectAbsent checks that nothing named name of obj's kind exists in the
// workload namespace.
func expectAbsent(ctx context.Context, g Gomega, obj client.Object, name string) {
	err := k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	g.Expect(err).To(HaveOccurred(), "%T %s exists", obj, name)
	g.Expect(client.IgnoreNotFound(err)).NotTo(HaveOccurred())
}

// diagnostics describes the SiteServers, Sites, workloads and pods, for a
// failed spec's report.
func diagnostics(ctx context.Context) string {
	var b strings.Builder
	var servers siteopsv1.SiteServerList
	if err := k8s.List(ctx, &servers); err == nil {
		fmt.Fprintln(&b, "SiteServers:")
		for _, ss := range servers.Items {
			fmt.Fprintf(&b, "  %s sites=%v gen=%d observed=%d task=%+v package=%+v\n", ss.Name, ss.Spec.Sites,
				ss.Generation, ss.Status.ObservedGeneration, ss.Status.Task, ss.Status.Package)
			for _, c := range ss.Status.Conditions {
				fmt.Fprintf(&b, "    %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
			}
		}
	}
	var sites siteopsv1.SiteList
	if err := k8s.List(ctx, &sites); err == nil {
		fmt.Fprintln(&b, "Sites:")
		for _, s := range sites.Items {
			ready := condition(s.Status.Conditions, siteopsv1.ConditionReady)
			fmt.Fprintf(&b, "  %s servers=%v task=%v Ready=%s %s: %s\n", s.Name, s.Status.SiteServers, s.Status.TaskEndpoints,
				ready.Status, ready.Reason, ready.Message)
		}
	}
	var deps appsv1.DeploymentList
	if err := k8s.List(ctx, &deps, client.InNamespace(namespace)); err == nil {
		fmt.Fprintln(&b, "Deployments:")
		for _, d := range deps.Items {
			fmt.Fprintf(&b, "  %s gen=%d %+v\n", d.Name, d.Generation, d.Status)
		}
	}
	var stss appsv1.StatefulSetList
	if err := k8s.List(ctx, &stss, client.InNamespace(namespace)); err == nil {
		fmt.Fprintln(&b, "StatefulSets:")
		for _, s := range stss.Items {
			fmt.Fprintf(&b, "  %s gen=%d %+v\n", s.Name, s.Generation, s.Status)
		}
	}
	var podList corev1.PodList
	if err := k8s.List(ctx, &podList, client.InNamespace(namespace)); err == nil {
		fmt.Fprintln(&b, "Pods:")
		for _, p := range podList.Items {
			fmt.Fprintf(&b, "  %s node=%s phase=%s ip=%s deleting=%v labels=%v\n", p.Name, p.Spec.NodeName, p.Status.Phase,
				p.Status.PodIP, p.DeletionTimestamp != nil, p.Labels)
			for _, c := range p.Status.Conditions {
				if c.Status != corev1.ConditionTrue {
					fmt.Fprintf(&b, "    %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
				}
			}
		}
	}
	var events corev1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(namespace)); err == nil {
		fmt.Fprintln(&b, "Warning events:")
		for _, e := range events.Items {
			if e.Type == corev1.EventTypeWarning {
				fmt.Fprintf(&b, "  %s %s: %s %s\n", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

// operatorCA waits for the CA bundle the operator publishes, the agents'
// only trust, and returns it.
func operatorCA(ctx context.Context) []byte {
	GinkgoHelper()
	var bundle corev1.ConfigMap
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "site-operator-ca"}, &bundle)).To(Succeed())
		g.Expect(bundle.Data).To(HaveKey("ca.crt"))
	}).WithContext(ctx).Should(Succeed())
	return []byte(bundle.Data["ca.crt"])
}

// operatorCAFile writes the operator's CA bundle to a file, for agents.
func operatorCAFile(ctx context.Context) string {
	GinkgoHelper()
	path := filepath.Join(GinkgoT().TempDir(), "ca.crt")
	Expect(os.WriteFile(path, operatorCA(ctx), 0o644)).To(Succeed())
	return path
}

// operatorCAPool is the operator's CA bundle as a certificate pool.
func operatorCAPool(ctx context.Context) *x509.CertPool {
	GinkgoHelper()
	return certPool(operatorCA(ctx))
}

// certPool is a certificate pool of a PEM bundle.
func certPool(pem []byte) *x509.CertPool {
	GinkgoHelper()
	pool := x509.NewCertPool()
	Expect(pool.AppendCertsFromPEM(pem)).To(BeTrue(), "the CA bundle holds a certificate")
	return pool
}

// getTask reads DeploymentTask namespace/name.
func getTask(ctx context.Context, g Gomega, namespace, name string) *siteopsv1.DeploymentTask {
	t := &siteopsv1.DeploymentTask{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, t)).To(Succeed())
	return t
}

// expectTaskPhase waits up to timeout for DeploymentTask namespace/name to
// reach phase, and returns it; diag says what to print when it does not.
func expectTaskPhase(ctx context.Context, namespace, name, phase string, timeout time.Duration, diag func() string) *siteopsv1.DeploymentTask {
	GinkgoHelper()
	var t *siteopsv1.DeploymentTask
	Eventually(func(g Gomega) string {
		t = getTask(ctx, g, namespace, name)
		return t.Status.Phase
	}).WithContext(ctx).WithTimeout(timeout).Should(Equal(phase), diag)
	return t
}
