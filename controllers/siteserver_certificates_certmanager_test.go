package controllers_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// certManagerIssuer is the issuer the cert-manager mode specs name.
var certManagerIssuer = controllers.CertManagerIssuer{Kind: "ClusterIssuer", Name: "siteops-test-ca", Group: controllers.CertManagerGroup}

// certManagerModeManager is a manager in cert-manager mode that replaced
// the suite's for one spec (SiteServers are cluster scoped: two managers
// would both reconcile them).
type certManagerModeManager struct {
	*runningManager
	opts controllers.Options
}

// startCertManagerModeManager installs a stand-in for cert-manager's
// Certificate CRD and replaces the suite's manager by one in cert-manager
// mode until the spec ends.
func startCertManagerModeManager() *certManagerModeManager {
	_, err := envtest.InstallCRDs(restCfg, envtest.CRDInstallOptions{Paths: []string{"testdata/cert-manager"}, ErrorIfPathMissing: true})
	Expect(err).NotTo(HaveOccurred())
	manager.stop()
	m := &certManagerModeManager{opts: options}
	m.opts.Certificates = controllers.CertificateOptions{Mode: controllers.CertificatesCertManager, Issuer: certManagerIssuer}
	m.start()
	DeferCleanup(func() {
		m.stop()
		manager = startManager()
	})
	return m
}

func (m *certManagerModeManager) start() {
	writes := &managertest.RequestCounter{}
	started, err := managertest.Start(context.Background(), restCfg, scheme, managertest.Options{Controllers: m.opts, Requests: writes,
		// As cmd/manager builds it: the Certificates cached in the workload
		// namespace only.
		Configure: func(o *ctrl.Options) { o.Cache = controllers.CacheOptionsFor(m.opts) }})
	Expect(err).NotTo(HaveOccurred())
	m.runningManager = &runningManager{Manager: started, writes: writes}
}

// certificate reads a Certificate of the workload namespace.
func certificate(ctx context.Context, name string) func(Gomega) *unstructured.Unstructured {
	return func(g Gomega) *unstructured.Unstructured {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(controllers.CertificateGVK)
		g.Expect(k8sClient.Get(ctx, workload(name), u)).To(Succeed())
		return u
	}
}

func certificateStrings(u *unstructured.Unstructured, field string) []string {
	s, _, err := unstructured.NestedStringSlice(u.Object, "spec", field)
	Expect(err).NotTo(HaveOccurred())
	return s
}

// setCertificateStatus plays cert-manager: it writes the Certificate's
// conditions for its current generation.
func setCertificateStatus(ctx context.Context, name string, conditions ...map[string]any) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		u := certificate(ctx, name)(g)
		list := make([]any, len(conditions))
		for i, c := range conditions {
			c["observedGeneration"] = u.GetGeneration()
			c["lastTransitionTime"] = time.Now().UTC().Format(time.RFC3339)
			list[i] = c
		}
		g.Expect(unstructured.SetNestedSlice(u.Object, list, "status", "conditions")).To(Succeed())
		g.Expect(k8sClient.Status().Update(ctx, u)).To(Succeed())
	}, timeout, interval).Should(Succeed())
}

var _ = Describe("SiteServer certificates from cert-manager", func() {
	ctx := context.Background()

	It("keeps a Certificate per SiteServer with the operator's SANs, follows the advertised addresses, and reports its Ready condition", func() {
		m := startCertManagerModeManager()
		createSite(ctx, "cm1-site")
		createNode(ctx, "cm1-node", map[string]string{"test.siteops.io/role": "cm1"})
		createStorageClass(ctx, "cm1-class")
		ss := createSiteServer(ctx, "cm1-srv", []string{"cm1-site"}, "cm1", "cm1-class")
		DeferCleanup(func() {
			// No garbage collector runs here.
			for _, obj := range []client.Object{certificate(ctx, "cm1-srv-tls")(Default),
				&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cm1-srv-tls", Namespace: workloadNamespace}}} {
				Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, obj))).To(Succeed())
			}
		})

		By("creating the Certificate, controlled by the SiteServer, for the Secret the pods mount, with the issuer of the flags")
		var cert *unstructured.Unstructured
		Eventually(func(g Gomega) { cert = certificate(ctx, "cm1-srv-tls")(g) }, timeout, interval).Should(Succeed())
		expectControlledBy(cert, "SiteServer", "cm1-srv")
		spec, _, _ := unstructured.NestedMap(cert.Object, "spec")
		Expect(spec).To(HaveKeyWithValue("secretName", "cm1-srv-tls"))
		Expect(spec).To(HaveKeyWithValue("issuerRef", map[string]any{"kind": "ClusterIssuer", "name": "siteops-test-ca", "group": "cert-manager.io"}))
		Expect(spec).To(HaveKeyWithValue("duration", "2160h"))
		Expect(spec).To(HaveKeyWithValue("renewBefore", "720h"))
		Expect(certificateStrings(cert, "dnsNames")).To(ConsistOf(inClusterNames("cm1-srv", "cm1-site")))
		Expect(certificateStrings(cert, "ipAddresses")).To(BeEmpty())
		Eventually(condition(ctx, "cm1-srv", siteopsv1.ConditionCertificateReady), timeout, interval).
			Should(Equal("False/" + siteopsv1.ReasonCertManagerIssuing))
		Expect(conditionMessage(ctx, "cm1-srv", siteopsv1.ConditionCertificateReady)).To(ContainSubstring(workloadNamespace + "/cm1-srv-tls"))
		var secret corev1.Secret
		Expect(k8sClient.Get(ctx, workload("cm1-srv-tls"), &secret)).NotTo(Succeed(), "the operator issued the Secret itself")

		By("changing the Certificate when the advertised addresses change")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure.Addresses = []string{"tasks.cm1.example:8443", "192.0.2.20"}
		})
		Eventually(func(g Gomega) []string { return certificateStrings(certificate(ctx, "cm1-srv-tls")(g), "dnsNames") }, timeout, interval).
			Should(ConsistOf(append(inClusterNames("cm1-srv", "cm1-site"), "tasks.cm1.example")))
		Expect(certificateStrings(certificate(ctx, "cm1-srv-tls")(Default), "ipAddresses")).To(ConsistOf("192.0.2.20"))

		By("reporting a failed issuance with cert-manager's message")
		setCertificateStatus(ctx, "cm1-srv-tls",
			map[string]any{"type": "Ready", "status": "False", "reason": "DoesNotExist", "message": "Issuing certificate as Secret does not exist"},
			map[string]any{"type": "Issuing", "status": "False", "reason": "Failed", "message": `clusterissuer "siteops-test-ca" not found`})
		Eventually(condition(ctx, "cm1-srv", siteopsv1.ConditionCertificateReady), timeout, interval).
			Should(Equal("False/" + siteopsv1.ReasonCertManagerFailed))
		Expect(conditionMessage(ctx, "cm1-srv", siteopsv1.ConditionCertificateReady)).To(
			And(ContainSubstring(workloadNamespace+"/cm1-srv-tls"), ContainSubstring(`clusterissuer "siteops-test-ca" not found`)))

		By("reporting Ready once cert-manager wrote the Secret, and publishing its ca.crt to agents")
		ca, err := certs.NewAuthority("cert-manager test CA", time.Now(), 24*time.Hour)
		Expect(err).NotTo(HaveOccurred())
		names, err := certs.NamesOf(append(inClusterNames("cm1-srv", "cm1-site"), "tasks.cm1.example", "192.0.2.20")...)
		Expect(err).NotTo(HaveOccurred())
		certPEM, keyPEM, err := ca.Issue(names, time.Now(), time.Hour)
		Expect(err).NotTo(HaveOccurred())
		labels, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "secretTemplate", "labels")
		Expect(labels).To(HaveKeyWithValue("siteops.io/siteserver", "cm1-srv"))
		Expect(k8sClient.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "cm1-srv-tls", Namespace: workloadNamespace, Labels: labels},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{certs.CertKey: certPEM, certs.KeyKey: keyPEM, certs.CACertKey: ca.CertPEM},
		})).To(Succeed())
		setCertificateStatus(ctx, "cm1-srv-tls",
			map[string]any{"type": "Ready", "status": "True", "reason": "Ready", "message": "Certificate is up to date and has not expired"})
		Eventually(condition(ctx, "cm1-srv", siteopsv1.ConditionCertificateReady), timeout, interval).
			Should(Equal("True/" + siteopsv1.ReasonCertManagerReady))
		Eventually(func(g Gomega) error {
			var cm corev1.ConfigMap
			g.Expect(k8sClient.Get(ctx, workload(controllers.CAName), &cm)).To(Succeed())
			roots := x509.NewCertPool()
			g.Expect(roots.AppendCertsFromPEM([]byte(cm.Data[certs.CACertKey]))).To(BeTrue())
			issued, err := certs.ParseCertificate(certPEM)
			g.Expect(err).NotTo(HaveOccurred())
			_, err = issued.Verify(x509.VerifyOptions{DNSName: "tasks.cm1.example", Roots: roots})
			return err
		}, timeout, interval).Should(Succeed(), "the published bundle does not verify the certificate cert-manager issued")
		Expect(k8sClient.Get(ctx, workload("cm1-srv-tls"), &secret)).To(Succeed())
		Expect(secret.OwnerReferences).To(BeEmpty())
		Expect(secret.Data[certs.CertKey]).To(Equal(certPEM), "the operator rewrote the Secret cert-manager owns")

		By("writing nothing once converged, across a restart")
		Eventually(func() bool {
			n := m.writes.Load()
			time.Sleep(time.Second)
			return m.writes.Load() == n
		}, timeout, interval).Should(BeTrue())
		m.stop()
		reconciled := reconcileTotal("siteserver")
		m.start()
		Eventually(func() float64 { return reconcileTotal("siteserver") - reconciled }, timeout, interval).
			Should(BeNumerically(">=", 1))
		Consistently(m.writes.Load, 3*time.Second, interval).Should(BeZero(),
			func() string { return fmt.Sprintf("writes: %v", m.writeList()) })
	})
})
