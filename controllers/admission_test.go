package controllers_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Admission is decided by the API server from the CRD's OpenAPI schema and
// CEL rules; these specs send bad objects to the real server.
var _ = Describe("Admission", func() {
	ctx := context.Background()

	subnet := func(name, cidr, site string, source siteopsv1.SubnetSource) *siteopsv1.Subnet {
		return &siteopsv1.Subnet{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       siteopsv1.SubnetSpec{CIDR: cidr, Site: site, Source: source},
		}
	}

	DescribeTable("rejects a bad Subnet with a message naming the field and what is allowed",
		func(obj *siteopsv1.Subnet, wantMessages ...string) {
			err := k8sClient.Create(ctx, obj)
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			for _, want := range wantMessages {
				Expect(err.Error()).To(ContainSubstring(want))
			}
		},
		Entry("IPv4 host bits set", subnet("adm-host-bits", "10.1.2.3/16", "", ""),
			"spec.cidr", `"10.1.2.3/16"`, "must be in canonical form with the host bits zero"),
		Entry("IPv6 host bits set", subnet("adm-host-bits-v6", "fd00:10::1/32", "", ""),
			"spec.cidr", `"fd00:10::1/32"`, "must be in canonical form with the host bits zero"),
		Entry("not a prefix at all", subnet("adm-nonsense", "nonsense", "", ""),
			"spec.cidr", "must be an IPv4 or IPv6 prefix in CIDR notation"),
		Entry("a bare address without a length", subnet("adm-no-length", "10.1.0.0", "", ""),
			"spec.cidr", "must be an IPv4 or IPv6 prefix in CIDR notation"),
		Entry("prefix length out of range", subnet("adm-len-33", "10.0.0.0/33", "", ""),
			"spec.cidr", "must be an IPv4 or IPv6 prefix in CIDR notation"),
		Entry("an IPv4-mapped IPv6 prefix", subnet("adm-mapped", "::ffff:10.0.0.0/104", "", ""),
			"spec.cidr", "IPv4-mapped"),
		Entry("an empty CIDR", subnet("adm-empty", "", "", ""),
			"spec.cidr"),
		Entry("a site that is not a DNS-1123 label (upper case)", subnet("adm-site-upper", "10.9.0.0/16", "Paris", ""),
			"spec.site", "must be the name of a Site"),
		Entry("a site that is not a DNS-1123 label (dot)", subnet("adm-site-dot", "10.9.0.0/16", "paris.hq", ""),
			"spec.site", "must be the name of a Site"),
		Entry("a site name longer than 50", subnet("adm-site-long", "10.9.0.0/16", "a12345678901234567890123456789012345678901234567890", ""),
			"spec.site", "50"),
		Entry("a site name starting with a digit", subnet("adm-site-digit", "10.9.0.0/16", "9th-floor", ""),
			"spec.site", "starting with a letter"),
		Entry("an unknown source", subnet("adm-source", "10.9.0.0/16", "", "LDAP"),
			"spec.source", `supported values: "Manual", "ActiveDirectory"`),
	)

	It("rejects a Site whose name is not a DNS-1123 label", func() {
		err := k8sClient.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "paris.hq"}})
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
		Expect(err.Error()).To(ContainSubstring("metadata.name of a Site must be at most 50 lower-case letters"))
	})

	It("accepts canonical IPv4 and IPv6 prefixes and defaults source to Manual", func() {
		for _, cidr := range []string{"192.0.2.0/24", "2001:db8:ad::/48", "198.51.100.7/32"} {
			sn := subnet("", cidr, "", "")
			sn.GenerateName = "adm-ok-"
			Expect(k8sClient.Create(ctx, sn)).To(Succeed(), cidr)
			DeferCleanup(k8sClient.Delete, ctx, sn)
			var got siteopsv1.Subnet
			Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(sn), &got)).To(Succeed())
			Expect(got.Spec.Source).To(Equal(siteopsv1.SourceManual))
		}
	})
})
