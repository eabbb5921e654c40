package controllers_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"math/big"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/certs"
)

// redatedCA is ca's certificate signed again by its own key for another
// validity: the same CA (subject and key, so what it issued still chains to
// it) as it would read after years of service.
func redatedCA(ca *certs.Authority, notBefore, notAfter time.Time) []byte {
	GinkgoHelper()
	tmpl := *ca.Cert
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	Expect(err).NotTo(HaveOccurred())
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = serial, notBefore, notAfter
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.Key.Public(), ca.Key)
	Expect(err).NotTo(HaveOccurred())
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// pemCertificates parses every certificate of a PEM bundle, in order.
func pemCertificates(data []byte) []*x509.Certificate {
	GinkgoHelper()
	var out []*x509.Certificate
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return out
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		Expect(err).NotTo(HaveOccurred())
		out = append(out, cert)
	}
}

// caSecret reads the operator's CA Secret.
func caSecret(ctx context.Context) func(Gomega) *corev1.Secret {
	return func(g Gomega) *corev1.Secret {
		var secret corev1.Secret
		g.Expect(k8sClient.Get(ctx, workload(controllers.CAName), &secret)).To(Succeed())
		return &secret
	}
}

// publishedBundle is the CA bundle agents trust, as PEM.
func publishedBundle(ctx context.Context) func(Gomega) string {
	return func(g Gomega) string {
		var cm corev1.ConfigMap
		g.Expect(k8sClient.Get(ctx, workload(controllers.CAName), &cm)).To(Succeed())
		return cm.Data[certs.CACertKey]
	}
}

// expectEveryServerIssuedBy waits until the serving certificate of every
// SiteServer is signed by ca, verifies against the published bundle for
// its in-cluster names, and carries that bundle as its ca.crt.
func expectEveryServerIssuedBy(ctx context.Context, ca *x509.Certificate) {
	GinkgoHelper()
	Eventually(func(g Gomega) {
		var list siteopsv1.SiteServerList
		g.Expect(k8sClient.List(ctx, &list)).To(Succeed())
		bundle := publishedBundle(ctx)(g)
		roots := x509.NewCertPool()
		g.Expect(roots.AppendCertsFromPEM([]byte(bundle))).To(BeTrue())
		for _, ss := range list.Items {
			if ss.DeletionTimestamp != nil {
				continue
			}
			var secret corev1.Secret
			g.Expect(k8sClient.Get(ctx, workload(ss.Name+"-tls"), &secret)).To(Succeed())
			cert, err := certs.ParseCertificate(secret.Data[certs.CertKey])
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(cert.CheckSignatureFrom(ca)).To(Succeed(), "the certificate of SiteServer %s", ss.Name)
			for _, name := range inClusterNames(ss.Name, ss.Spec.Sites...) {
				_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
				g.Expect(err).NotTo(HaveOccurred(), "verifying SiteServer %s's certificate for %s against the published bundle", ss.Name, name)
			}
			g.Expect(string(secret.Data[certs.CACertKey])).To(Equal(bundle), "the ca.crt of SiteServer %s", ss.Name)
		}
	}, timeout, interval).Should(Succeed())
}

// expectServingCertificatesKept checks for a while that no SiteServer's
// certificate is re-issued: each keeps the serial number it had.
func expectServingCertificatesKept(ctx context.Context, issued map[string]*x509.Certificate) {
	GinkgoHelper()
	Consistently(func(g Gomega) {
		for name, before := range issued {
			g.Expect(servingCertificate(ctx, name)(g).SerialNumber).To(Equal(before.SerialNumber), "SiteServer %s's certificate", name)
		}
	}, 3*time.Second, interval).Should(Succeed())
}

var _ = Describe("Operator CA renewal", func() {
	ctx := context.Background()
	const year = 365 * 24 * time.Hour

	It("prepares the next CA at 2/3 of the current one's lifetime and publishes it while the current one signs, then switches the signing to it and re-issues every serving certificate", func() {
		createSite(ctx, "car-site")
		createNode(ctx, "car-node", map[string]string{"test.siteops.io/role": "car"})
		createStorageClass(ctx, "car-class")
		createSiteServer(ctx, "car-a", []string{"car-site"}, "car", "car-class")
		// A server still waiting for its Site has a certificate too.
		createSiteServer(ctx, "car-b", []string{"car-missing-site"}, "car", "car-class")
		issued := map[string]*x509.Certificate{}
		for _, name := range []string{"car-a", "car-b"} {
			Eventually(servingCertificate(ctx, name), timeout, interval).ShouldNot(BeNil())
			issued[name] = servingCertificate(ctx, name)(Default)
		}

		// The CA is the suite's: the one it had comes back when the spec
		// ends, and the servers left are re-issued from it before the next
		// spec starts.
		original := maps.Clone(caSecret(ctx)(Default).Data)
		current, err := certs.ParseAuthority(original[certs.CACertKey], original[certs.CAKeyKey])
		Expect(err).NotTo(HaveOccurred())
		expectEveryServerIssuedBy(ctx, current.Cert)
		DeferCleanup(func() {
			By("restoring the suite's CA")
			updateObject(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controllers.CAName, Namespace: workloadNamespace}},
				func(s *corev1.Secret) { s.Data = maps.Clone(original) })
			Eventually(publishedBundle(ctx), timeout, interval).Should(Equal(string(current.CertPEM)))
			expectEveryServerIssuedBy(ctx, current.Cert)
		})

		By("the CA four years into its five: past 2/3 of its lifetime, before 5/6, which editing its Secret makes the operator look at")
		now := time.Now()
		aged := redatedCA(current, now.Add(-4*year), now.Add(year))
		agedCert, err := certs.ParseCertificate(aged)
		Expect(err).NotTo(HaveOccurred())
		Expect(certs.PrepareAt(agedCert)).To(BeTemporally("<", now))
		for name, cert := range issued {
			Expect(cert.CheckSignatureFrom(agedCert)).To(Succeed(), "the aged CA is still the issuer of SiteServer %s's certificate", name)
		}
		updateObject(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controllers.CAName, Namespace: workloadNamespace}},
			func(s *corev1.Secret) {
				s.Data[certs.CACertKey] = aged
				delete(s.Data, certs.PreviousCAKey)
			})

		By("making the next CA and keeping it beside the current one, which still signs")
		var next *certs.Authority
		Eventually(func(g Gomega) {
			secret := caSecret(ctx)(g)
			next, err = certs.ParseAuthority(secret.Data[certs.NextCAKey], secret.Data[certs.NextCAKeyKey])
			g.Expect(err).NotTo(HaveOccurred())
		}, timeout, interval).Should(Succeed())
		prepared := caSecret(ctx)(Default).Data
		Expect(prepared[certs.CACertKey]).To(Equal(aged), "the aged CA still signs")
		Expect(prepared[certs.CAKeyKey]).To(Equal(original[certs.CAKeyKey]))
		Expect(prepared).NotTo(HaveKey(certs.PreviousCAKey))
		Expect(next.Key.Public().(*ecdsa.PublicKey).Equal(current.Key.Public())).To(BeFalse(), "the next CA has a new key")
		Expect(next.Cert.NotAfter).To(BeTemporally(">", now.Add(4*year)))
		switchAt := certs.SwitchAt(agedCert, next.Cert)
		Expect(switchAt).To(BeTemporally(">", now.Add(6*30*24*time.Hour)),
			"agents get 7 months to receive the new bundle (up to 11/12 of the aged CA's lifetime), not the 2 months left to its 5/6")
		// Prepared once: the operator's own write does not prepare it again.
		Consistently(func(g Gomega) map[string][]byte { return caSecret(ctx)(g).Data }, 2*time.Second, interval).
			Should(Equal(prepared))

		By("publishing a bundle of both, the current CA first")
		Eventually(func(g Gomega) []*x509.Certificate { return pemCertificates([]byte(publishedBundle(ctx)(g))) }, timeout, interval).
			Should(HaveLen(2))
		bundle := pemCertificates([]byte(publishedBundle(ctx)(Default)))
		Expect(bundle[0].Equal(agedCert)).To(BeTrue(), "the bundle's first CA is the current one")
		Expect(bundle[1].Equal(next.Cert)).To(BeTrue(), "the bundle's second CA is the next one")
		preparedRoots := publishedRoots(ctx) // what agents receive from now on

		By("leaving every SiteServer's certificate signed by the current CA, with the new bundle as its ca.crt")
		expectEveryServerIssuedBy(ctx, agedCert)
		expectServingCertificatesKept(ctx, issued)
		agentRoots := x509.NewCertPool() // an agent installed with the old bundle
		agentRoots.AddCert(current.Cert)
		for name, cert := range issued {
			_, err := cert.Verify(x509.VerifyOptions{DNSName: inClusterNames(name)[0], Roots: agentRoots})
			Expect(err).NotTo(HaveOccurred(), "an agent with the old bundle verifying SiteServer %s's certificate", name)
		}

		By("the switch time reached: the current CA 4.5 years into its five and the next one made 11 months ago")
		now = time.Now()
		agedFurther := redatedCA(current, now.Add(-9*year/2), now.Add(year/2))
		agedFurtherCert, err := certs.ParseCertificate(agedFurther)
		Expect(err).NotTo(HaveOccurred())
		nextAged := redatedCA(next, now.Add(-11*30*24*time.Hour), now.Add(-11*30*24*time.Hour).Add(certs.DefaultCALifetime))
		nextAgedCert, err := certs.ParseCertificate(nextAged)
		Expect(err).NotTo(HaveOccurred())
		Expect(certs.SwitchAt(agedFurtherCert, nextAgedCert)).To(BeTemporally("<", now))
		updateObject(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: controllers.CAName, Namespace: workloadNamespace}},
			func(s *corev1.Secret) {
				s.Data[certs.CACertKey] = agedFurther
				s.Data[certs.NextCAKey] = nextAged
			})

		By("signing with the next CA, and keeping the old one as the previous")
		Eventually(func(g Gomega) []byte { return caSecret(ctx)(g).Data[certs.CACertKey] }, timeout, interval).Should(Equal(nextAged))
		switched := caSecret(ctx)(Default).Data
		Expect(switched[certs.CAKeyKey]).To(Equal(next.KeyPEM))
		Expect(switched[certs.PreviousCAKey]).To(Equal(agedFurther))
		Expect(switched).NotTo(HaveKey(certs.NextCAKey))
		Expect(switched).NotTo(HaveKey(certs.NextCAKeyKey))
		// Switched once: the operator's own write does not prepare or
		// switch again.
		Consistently(func(g Gomega) map[string][]byte { return caSecret(ctx)(g).Data }, 2*time.Second, interval).
			Should(Equal(switched))

		By("publishing the new CA first and the previous one after it")
		Eventually(func(g Gomega) []*x509.Certificate { return pemCertificates([]byte(publishedBundle(ctx)(g))) }, timeout, interval).
			Should(HaveLen(2))
		bundle = pemCertificates([]byte(publishedBundle(ctx)(Default)))
		Expect(bundle[0].Equal(nextAgedCert)).To(BeTrue(), "the bundle's first CA is the new one")
		Expect(bundle[1].Equal(agedFurtherCert)).To(BeTrue(), "the bundle's second CA is the previous one")
		By("agents with the new bundle still trusting the certificates of the previous CA, while servers are re-issued")
		roots := publishedRoots(ctx)
		for name, cert := range issued {
			_, err := cert.Verify(x509.VerifyOptions{DNSName: inClusterNames(name)[0], Roots: roots})
			Expect(err).NotTo(HaveOccurred(), "verifying SiteServer %s's certificate of the previous CA against the published bundle", name)
		}

		By("re-issuing every SiteServer's certificate from the new CA")
		expectEveryServerIssuedBy(ctx, nextAgedCert)
		for name, before := range issued {
			after := servingCertificate(ctx, name)(Default)
			Expect(after.SerialNumber).NotTo(Equal(before.SerialNumber))
			Expect(certs.NamesOfCertificate(after).Equal(certs.NamesOfCertificate(before))).To(BeTrue(),
				"SiteServer %s's certificate keeps its names", name)
			Expect(after.CheckSignatureFrom(current.Cert)).NotTo(Succeed(), "SiteServer %s's certificate is not the previous CA's", name)
			_, err := after.Verify(x509.VerifyOptions{DNSName: inClusterNames(name)[0], Roots: preparedRoots})
			Expect(err).NotTo(HaveOccurred(), "an agent with the bundle published at 2/3 verifying SiteServer %s's new certificate", name)
			_, err = after.Verify(x509.VerifyOptions{DNSName: inClusterNames(name)[0], Roots: agentRoots})
			Expect(err).To(HaveOccurred(), "an agent with only the old CA cannot verify SiteServer %s's new certificate", name)
		}
	})
})
