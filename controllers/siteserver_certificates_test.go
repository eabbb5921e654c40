package controllers_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/certs"
)

// servingCertificate reads a SiteServer's serving certificate Secret and
// parses its certificate.
func servingCertificate(ctx context.Context, name string) func(Gomega) *x509.Certificate {
	return func(g Gomega) *x509.Certificate {
		var secret corev1.Secret
		g.Expect(k8sClient.Get(ctx, workload(name+"-tls"), &secret)).To(Succeed())
		cert, err := certs.ParseCertificate(secret.Data[certs.CertKey])
		g.Expect(err).NotTo(HaveOccurred())
		return cert
	}
}

// publishedRoots are the CA certificates of the bundle agents trust.
func publishedRoots(ctx context.Context) *x509.CertPool {
	var cm corev1.ConfigMap
	ExpectWithOffset(1, k8sClient.Get(ctx, workload(controllers.CAName), &cm)).To(Succeed())
	roots := x509.NewCertPool()
	ExpectWithOffset(1, roots.AppendCertsFromPEM([]byte(cm.Data[certs.CACertKey]))).To(BeTrue(), "the published bundle holds no certificate")
	return roots
}

// inClusterNames are the DNS names of a SiteServer's own Services and of
// its Sites' Services.
func inClusterNames(server string, sites ...string) []string {
	services := []string{server + "-task", server + "-package"}
	for _, site := range sites {
		services = append(services, "site-"+site+"-task", "site-"+site+"-package")
	}
	var names []string
	for _, svc := range services {
		names = append(names, fmt.Sprintf("%s.%s.svc", svc, workloadNamespace), fmt.Sprintf("%s.%s.svc.cluster.local", svc, workloadNamespace))
	}
	return names
}

var _ = Describe("SiteServer certificates", func() {
	ctx := context.Background()

	It("issues a certificate that verifies against the published CA, re-issues it for a new address or when it is due, and writes nothing in steady state", func() {
		createSite(ctx, "c1-site")
		createNode(ctx, "c1-node", map[string]string{"test.siteops.io/role": "c1"})
		createStorageClass(ctx, "c1-class")
		ss := createSiteServer(ctx, "c1-srv", []string{"c1-site"}, "c1", "c1-class")

		By("issuing the Secret, controlled by the SiteServer, with the CA bundle published")
		var secret corev1.Secret
		Eventually(exists(ctx, &secret, workload("c1-srv-tls")), timeout, interval).Should(BeTrue())
		expectControlledBy(&secret, "SiteServer", "c1-srv")
		Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
		cert := servingCertificate(ctx, "c1-srv")(Default)
		Expect(cert.DNSNames).To(ConsistOf(inClusterNames("c1-srv", "c1-site")))
		roots := publishedRoots(ctx)
		for _, name := range inClusterNames("c1-srv", "c1-site") {
			_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			Expect(err).NotTo(HaveOccurred(), "verifying for %s against the published CA", name)
		}
		var cm corev1.ConfigMap
		Expect(k8sClient.Get(ctx, workload(controllers.CAName), &cm)).To(Succeed())
		Expect(string(secret.Data[certs.CACertKey])).To(Equal(cm.Data[certs.CACertKey]), "the Secret's ca.crt is the published bundle")
		Expect(certs.RenewAt(cert)).To(BeTemporally(">", time.Now().Add(50*24*time.Hour)))

		By("writing nothing once converged")
		Eventually(condition(ctx, "c1-srv", siteopsv1.ConditionPrerequisitesMet), timeout, interval).Should(Equal("True/PrerequisitesMet"))
		// The first status writes settle; a certificate issued anew at
		// every reconcile would trigger the next one and never settle.
		Eventually(func() bool {
			n := manager.writes.Load()
			time.Sleep(time.Second)
			return manager.writes.Load() == n
		}, timeout, interval).Should(BeTrue())
		// A restarted manager reconciles every SiteServer again: the CA, the
		// bundle and the certificate are current, and nothing is written.
		manager.stop()
		reconciled := reconcileTotal("siteserver")
		manager = startManager()
		Eventually(func() float64 { return reconcileTotal("siteserver") - reconciled }, timeout, interval).
			Should(BeNumerically(">=", 1))
		Consistently(manager.writes.Load, 3*time.Second, interval).Should(BeZero(),
			func() string { return fmt.Sprintf("writes: %v", manager.writeList()) })

		By("re-issuing for a new advertised address")
		updateSiteServer(ctx, ss, func(ss *siteopsv1.SiteServer) {
			ss.Spec.Exposure.Addresses = []string{"tasks.c1.example:8443", "192.0.2.10"}
		})
		Eventually(func(g Gomega) []string { return servingCertificate(ctx, "c1-srv")(g).DNSNames }, timeout, interval).
			Should(ContainElement("tasks.c1.example"))
		cert = servingCertificate(ctx, "c1-srv")(Default)
		Expect(cert.IPAddresses).To(ContainElement(BeEquivalentTo(net.ParseIP("192.0.2.10").To4())))
		_, err := cert.Verify(x509.VerifyOptions{DNSName: "tasks.c1.example", Roots: publishedRoots(ctx)})
		Expect(err).NotTo(HaveOccurred())

		By("re-issuing a certificate past 2/3 of its lifetime")
		var caSecret corev1.Secret
		Expect(k8sClient.Get(ctx, workload(controllers.CAName), &caSecret)).To(Succeed())
		ca, err := certs.ParseAuthority(caSecret.Data[certs.CACertKey], caSecret.Data[certs.CAKeyKey])
		Expect(err).NotTo(HaveOccurred())
		names := certs.NamesOfCertificate(cert)
		// Issued 50 minutes ago for an hour: due since 10 minutes.
		oldPEM, oldKey, err := ca.Issue(names, time.Now().Add(-50*time.Minute), time.Hour)
		Expect(err).NotTo(HaveOccurred())
		old, err := certs.ParseCertificate(oldPEM)
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() error {
			if err := k8sClient.Get(ctx, workload("c1-srv-tls"), &secret); err != nil {
				return err
			}
			secret.Data[certs.CertKey], secret.Data[certs.KeyKey] = oldPEM, oldKey
			return k8sClient.Update(ctx, &secret)
		}, timeout, interval).Should(Succeed())
		Eventually(func(g Gomega) time.Time { return servingCertificate(ctx, "c1-srv")(g).NotAfter }, timeout, interval).
			Should(BeTemporally(">", time.Now().Add(80*24*time.Hour)))
		renewed := servingCertificate(ctx, "c1-srv")(Default)
		Expect(renewed.SerialNumber).NotTo(Equal(old.SerialNumber))
		Expect(certs.NamesOfCertificate(renewed).Equal(names)).To(BeTrue(), "the renewed certificate keeps the names")

		By("mounting the Secret and the projected token into the pods, which run as the site services' account")
		Eventually(func(g Gomega) {
			var dep appsv1.Deployment
			g.Expect(k8sClient.Get(ctx, workload("c1-srv-task"), &dep)).To(Succeed())
			spec := dep.Spec.Template.Spec
			g.Expect(spec.ServiceAccountName).To(Equal(controllers.DefaultSiteServiceAccount))
			g.Expect(*spec.AutomountServiceAccountToken).To(BeFalse())
			var secretName string
			var tokenSeconds int64
			for _, v := range spec.Volumes {
				if v.Secret != nil {
					secretName = v.Secret.SecretName
				}
				if v.Projected != nil && v.Projected.Sources[0].ServiceAccountToken != nil {
					tokenSeconds = *v.Projected.Sources[0].ServiceAccountToken.ExpirationSeconds
				}
			}
			g.Expect(secretName).To(Equal("c1-srv-tls"))
			g.Expect(tokenSeconds).To(Equal(int64(3600)))
		}, timeout, interval).Should(Succeed())
	})
})

var _ = Describe("Locator certificate", func() {
	ctx := context.Background()

	It("issues the locator's Secret from the operator's CA, serves it from memory, and keeps it while it is current", func() {
		hosts := append(controllers.ServiceDNSNames("site-operator-locator", workloadNamespace), "locate.example", "192.0.2.44")
		lc, err := controllers.NewLocatorCertificate(k8sClient, controllers.LocatorCertificateOptions{
			Namespace: workloadNamespace, SecretName: "test-locator-tls", Hosts: hosts})
		Expect(err).NotTo(HaveOccurred())
		_, err = lc.GetCertificate(nil)
		Expect(err).To(MatchError(certs.ErrNoCertificate))

		Eventually(func() error { return lc.Ensure(ctx) }, timeout, interval).Should(Succeed())
		var secret corev1.Secret
		Expect(k8sClient.Get(ctx, workload("test-locator-tls"), &secret)).To(Succeed())
		Expect(secret.Type).To(Equal(corev1.SecretTypeTLS))
		Expect(lc.Load(ctx)).To(Succeed())
		pair, err := lc.GetCertificate(nil)
		Expect(err).NotTo(HaveOccurred())
		cert, err := x509.ParseCertificate(pair.Certificate[0])
		Expect(err).NotTo(HaveOccurred())
		roots := publishedRoots(ctx)
		for _, host := range []string{"site-operator-locator." + workloadNamespace + ".svc", "locate.example", "192.0.2.44"} {
			_, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots})
			Expect(err).NotTo(HaveOccurred(), "verifying the locator's certificate for %s against the published CA", host)
		}

		By("keeping a current certificate")
		version := secret.ResourceVersion
		Expect(lc.Ensure(ctx)).To(Succeed())
		Expect(k8sClient.Get(ctx, workload("test-locator-tls"), &secret)).To(Succeed())
		Expect(secret.ResourceVersion).To(Equal(version), "a current certificate was rewritten")

		By("refusing a host that cannot be a certificate name, naming it")
		_, err = controllers.NewLocatorCertificate(k8sClient, controllers.LocatorCertificateOptions{
			Namespace: workloadNamespace, Hosts: []string{"locate.example:9443"}})
		Expect(err).To(MatchError(ContainSubstring(`"locate.example:9443"`)))
	})
})
