package controllers

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/certs"
)

func TestCertificateOptionsValidate(t *testing.T) {
	issuer := CertManagerIssuer{Kind: "ClusterIssuer", Name: "ca", Group: CertManagerGroup}
	for _, tt := range []struct {
		name string
		opts CertificateOptions
		want []string // substrings of the error; none: valid
	}{
		{"operator by default", DefaultCertificateOptions(), nil},
		{"cert-manager with an issuer", CertificateOptions{Mode: CertificatesCertManager, Issuer: issuer}, nil},
		{"external issuer", CertificateOptions{Mode: CertificatesCertManager,
			Issuer: CertManagerIssuer{Kind: "AWSPCAClusterIssuer", Name: "pca", Group: "awspca.cert-manager.io"}}, nil},
		{"unknown mode", CertificateOptions{Mode: "certmanager"}, []string{`--certificates="certmanager"`, "operator", "cert-manager"}},
		{"no issuer name", CertificateOptions{Mode: CertificatesCertManager, Issuer: CertManagerIssuer{Kind: "Issuer", Group: CertManagerGroup}},
			[]string{"--cert-manager-issuer-name must name"}},
		{"wrong kind", CertificateOptions{Mode: CertificatesCertManager, Issuer: CertManagerIssuer{Kind: "issuer", Name: "ca", Group: CertManagerGroup}},
			[]string{`--cert-manager-issuer-kind="issuer"`, "Issuer or ClusterIssuer"}},
		{"bad name and group", CertificateOptions{Mode: CertificatesCertManager, Issuer: CertManagerIssuer{Kind: "Issuer", Name: "My_CA", Group: "Cert Manager"}},
			[]string{`--cert-manager-issuer-name="My_CA"`, `--cert-manager-issuer-group="Cert Manager"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got valid, want an error saying %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestCertificateCurrent(t *testing.T) {
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "paris", UID: "u1"}}
	issuer := CertManagerIssuer{Kind: "Issuer", Name: "ca", Group: CertManagerGroup}
	names, _ := certs.NamesOf("paris-task.ns.svc", "192.0.2.1")
	desired := desiredSiteServerCertificate(ss, "ns", issuer, names)

	live := desired.DeepCopy()
	// What the API server and cert-manager add: more keys, floats from JSON.
	_ = unstructured.SetNestedField(live.Object, "PKCS1", "spec", "privateKey", "encoding")
	_ = unstructured.SetNestedField(live.Object, float64(256), "spec", "privateKey", "size")
	live.SetLabels(map[string]string{"extra": "x", LabelSiteServer: "paris", LabelComponent: "tls",
		"app.kubernetes.io/name": "site-operator", "app.kubernetes.io/managed-by": "site-operator"})
	if !certificateCurrent(live, desired) {
		t.Errorf("a live Certificate holding every field the operator sets is not current")
	}

	for name, change := range map[string]func(u *unstructured.Unstructured){
		"a name more": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedStringSlice(u.Object, []string{"paris-task.ns.svc", "tasks.paris.example"}, "spec", "dnsNames")
		},
		"an address left over": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedStringSlice(u.Object, []string{"192.0.2.1", "192.0.2.2"}, "spec", "ipAddresses")
		},
		"another issuer": func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "ClusterIssuer", "spec", "issuerRef", "kind")
		},
		"a label missing": func(u *unstructured.Unstructured) { u.SetLabels(nil) },
	} {
		changed := live.DeepCopy()
		change(changed)
		if certificateCurrent(changed, desired) {
			t.Errorf("%s: reported current", name)
		}
	}
	// Addresses the operator no longer sets must go.
	noIPs, _ := certs.NamesOf("paris-task.ns.svc")
	if certificateCurrent(live, desiredSiteServerCertificate(ss, "ns", issuer, noIPs)) {
		t.Errorf("a Certificate with an address no longer wanted is reported current")
	}
}

func TestCertificateCondition(t *testing.T) {
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "paris", UID: "u1"}}
	names, _ := certs.NamesOf("paris-task.ns.svc")
	desired := desiredSiteServerCertificate(ss, "ns", CertManagerIssuer{Kind: "Issuer", Name: "ca", Group: CertManagerGroup}, names)
	withConditions := func(gen int64, conds ...map[string]any) *unstructured.Unstructured {
		u := desired.DeepCopy()
		u.SetGeneration(gen)
		list := make([]any, len(conds))
		for i, c := range conds {
			list[i] = c
		}
		_ = unstructured.SetNestedSlice(u.Object, list, "status", "conditions")
		return u
	}
	ready := map[string]any{"type": "Ready", "status": "True", "reason": "Ready", "message": "up to date", "observedGeneration": int64(2)}
	for _, tt := range []struct {
		name    string
		state   certManagerState
		want    string
		message string
	}{
		{"absent", certManagerState{desired: desired}, "False/" + siteopsv1.ReasonCertManagerIssuing, "cert-manager is issuing Certificate ns/paris-tls for the current names"},
		{"just changed", certManagerState{desired: desired, live: withConditions(2, ready), applied: true}, "False/" + siteopsv1.ReasonCertManagerIssuing, ""},
		{"ready", certManagerState{desired: desired, live: withConditions(2, ready)}, "True/" + siteopsv1.ReasonCertManagerReady, "Certificate ns/paris-tls is Ready: up to date"},
		{"ready for an older spec", certManagerState{desired: desired, live: withConditions(3, ready)}, "False/" + siteopsv1.ReasonCertManagerIssuing, ""},
		{"failed", certManagerState{desired: desired, live: withConditions(2,
			map[string]any{"type": "Ready", "status": "False", "reason": "DoesNotExist"},
			map[string]any{"type": "Issuing", "status": "False", "reason": "Failed", "message": "issuer not found"})},
			"False/" + siteopsv1.ReasonCertManagerFailed, "cert-manager failed to issue Certificate ns/paris-tls: issuer not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := certificateCondition(&tt.state, 7)
			if got := string(c.Status) + "/" + c.Reason; got != tt.want {
				t.Errorf("got %s (%s), want %s", got, c.Message, tt.want)
			}
			if c.Type != siteopsv1.ConditionCertificateReady || c.ObservedGeneration != 7 {
				t.Errorf("got type %s, observedGeneration %d", c.Type, c.ObservedGeneration)
			}
			if tt.message != "" && c.Message != tt.message {
				t.Errorf("message %q, want %q", c.Message, tt.message)
			}
		})
	}
}
