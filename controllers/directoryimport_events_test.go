package controllers_test

import (
	"context"
	"fmt"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/directory"
)

var _ = Describe("DirectoryImport Events", func() {
	ctx := context.Background()

	It("records a sync failing and succeeding again, once per change", func() {
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "ad-bind", Namespace: workloadNamespace},
			StringData: map[string]string{"username": "CN=reader", "password": "s3cret"}}
		if err := k8sClient.Create(ctx, secret); err != nil && !apierrors.IsAlreadyExists(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		url := "ldaps://dc-events.corp.example"
		good := directory.Directory{Sites: []directory.Site{adSite("EVDI Branch", "")},
			Subnets: []directory.Subnet{adSubnet("198.18.0.0/16", "EVDI Branch")}}
		directories.set(url, good, nil)
		di := &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: "ev-di"}, Spec: siteopsv1.DirectoryImportSpec{
			URL: url, BaseDN: adBase, BindSecretRef: siteopsv1.SecretReference{Name: "ad-bind"},
			Interval: metav1.Duration{Duration: time.Minute}, MaxDeletePercent: 100}}
		Expect(k8sClient.Create(ctx, di)).To(Succeed())
		DeferCleanup(func() { Expect(client.IgnoreNotFound(k8sClient.Delete(ctx, di))).To(Succeed()) })
		Eventually(eventReasons(ctx, di), timeout, interval).Should(Equal([]string{"Normal/" + siteopsv1.ReasonSynced}))
		Expect(eventNotes(ctx, di)(Default)).To(Equal([]string{"Imported 1 sites and 1 subnets"}))

		// resync makes the controller import again now (a spec change).
		resync := func() {
			updateObject(ctx, &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: "ev-di"}}, func(d *siteopsv1.DirectoryImport) {
				d.Spec.PageSize = d.Spec.PageSize%1000 + 11
			})
		}

		By("the directory failing: one Warning, however often the import retries")
		directories.set(url, directory.Directory{}, fmt.Errorf("%w: connection reset", directory.ErrSearch))
		resync()
		Eventually(eventReasons(ctx, di), timeout, interval).Should(Equal([]string{
			"Normal/" + siteopsv1.ReasonSynced, "Warning/" + siteopsv1.ReasonSearchFailed}))
		Consistently(eventOccurrences(ctx, di), 2*time.Second, interval).Should(BeNumerically("<=", 3),
			"the retries of a failing import record no Event each")

		By("the directory back: the sync succeeds after failing")
		directories.set(url, good, nil)
		resync()
		// A second Synced Event may go into the first one's series (the
		// recorder's aggregation): count occurrences, not objects.
		Eventually(func(g Gomega) int32 {
			var n int32
			for _, e := range eventsAbout(ctx, g, di) {
				switch {
				case e.Reason != siteopsv1.ReasonSynced:
				case e.Series != nil:
					n += e.Series.Count
				default:
					n++
				}
			}
			return n
		}, timeout, interval).Should(BeNumerically(">=", 2), func() string {
			return fmt.Sprintf("events: %v", eventReasons(ctx, di)(Default))
		})
		Expect(eventReasons(ctx, di)(Default)).To(HaveEach(BeElementOf(
			"Normal/"+siteopsv1.ReasonSynced, "Warning/"+siteopsv1.ReasonSearchFailed)))
	})
})
