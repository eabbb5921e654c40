package controllers

// cert-manager mode (--certificates=cert-manager, docs/tls.md): instead of
// issuing the serving certificates from its own CA, the operator keeps, per
// SiteServer, a cert-manager Certificate (cert-manager.io/v1, handled as an
// unstructured object so that the project takes no cert-manager Go
// dependency) whose Secret is the one the site services mount today
// (<siteserver>-tls), with the same SANs the operator path computes
// (certificateHosts, upcomingHosts). cert-manager issues and renews it; the
// SiteServer's CertificateReady condition reports the Certificate's Ready
// condition. The CA bundle agents trust (ConfigMap site-operator-ca, key
// ca.crt) is then the union of the ca.crt of the issued Secrets, which the
// issuer must fill (CA and Vault issuers do). The locator's certificate
// follows the same way when --locator-operator-ca is set.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/certs"
)

// CertificateMode says who issues the site services' and the locator's
// serving certificates.
type CertificateMode string

const (
	// CertificatesOperator: the operator's own CA (the default).
	CertificatesOperator CertificateMode = "operator"
	// CertificatesCertManager: cert-manager, through one Certificate per
	// SiteServer.
	CertificatesCertManager CertificateMode = "cert-manager"
)

// CertManagerGroup is cert-manager's API group, the default issuer group.
const CertManagerGroup = "cert-manager.io"

// CertManagerIssuer is the issuerRef of the Certificates.
type CertManagerIssuer struct {
	// Kind is Issuer (in the workload namespace) or ClusterIssuer; an
	// external issuer's kind with its Group.
	Kind string
	// Name of the issuer.
	Name string
	// Group is the issuer's API group; cert-manager.io for cert-manager's
	// own issuers.
	Group string
}

// CertificateOptions say who issues the serving certificates.
type CertificateOptions struct {
	// Mode is operator (the default) or cert-manager.
	Mode CertificateMode
	// Issuer is the Certificates' issuerRef in cert-manager mode.
	Issuer CertManagerIssuer
}

// DefaultCertificateOptions: the operator's CA; in cert-manager mode an
// Issuer of cert-manager.io, whose name must be given.
func DefaultCertificateOptions() CertificateOptions {
	return CertificateOptions{Mode: CertificatesOperator, Issuer: CertManagerIssuer{Kind: "Issuer", Group: CertManagerGroup}}
}

// Validate says, naming the flag, what is wrong with the options.
func (o CertificateOptions) Validate() error {
	switch o.Mode {
	case "", CertificatesOperator:
		return nil
	case CertificatesCertManager:
	default:
		return fmt.Errorf("--certificates=%q: must be %q or %q", o.Mode, CertificatesOperator, CertificatesCertManager)
	}
	var problems []string
	if o.Issuer.Name == "" {
		problems = append(problems, "--cert-manager-issuer-name must name the Issuer or ClusterIssuer that signs the certificates")
	} else if errs := validation.IsDNS1123Subdomain(o.Issuer.Name); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("--cert-manager-issuer-name=%q: %s", o.Issuer.Name, strings.Join(errs, "; ")))
	}
	if errs := validation.IsDNS1123Subdomain(o.Issuer.Group); len(errs) > 0 {
		problems = append(problems, fmt.Sprintf("--cert-manager-issuer-group=%q: must be an API group such as %s", o.Issuer.Group, CertManagerGroup))
	}
	switch {
	case o.Issuer.Group == CertManagerGroup && o.Issuer.Kind != "Issuer" && o.Issuer.Kind != "ClusterIssuer":
		problems = append(problems, fmt.Sprintf("--cert-manager-issuer-kind=%q: must be Issuer or ClusterIssuer for group %s", o.Issuer.Kind, CertManagerGroup))
	case o.Issuer.Kind == "" || o.Issuer.Kind[0] < 'A' || o.Issuer.Kind[0] > 'Z':
		problems = append(problems, fmt.Sprintf("--cert-manager-issuer-kind=%q: must be the issuer's kind, such as Issuer or ClusterIssuer", o.Issuer.Kind))
	}
	if len(problems) > 0 {
		return errors.New("cert-manager mode: " + strings.Join(problems, "; "))
	}
	return nil
}

// certManager reports whether cert-manager issues the certificates.
func (o CertificateOptions) certManager() bool { return o.Mode == CertificatesCertManager }

// CertificateGVK is cert-manager's Certificate kind.
var CertificateGVK = schema.GroupVersionKind{Group: CertManagerGroup, Version: "v1", Kind: "Certificate"}

// newCertificate is an empty Certificate, for reads and watches.
func newCertificate() *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(CertificateGVK)
	return u
}

// checkCertificateKind fails, saying what to install, when the API server
// does not serve cert-manager's Certificate kind.
func checkCertificateKind(mapper meta.RESTMapper) error {
	if _, err := mapper.RESTMapping(CertificateGVK.GroupKind(), CertificateGVK.Version); err != nil {
		return fmt.Errorf("--certificates=cert-manager needs cert-manager's CRDs (Certificate, %s) in the cluster: %w",
			CertificateGVK.GroupVersion(), err)
	}
	return nil
}

// Durations of the Certificates: the operator path's (90 days, renewed at
// 2/3 of the lifetime).
var (
	certificateDuration    = certs.DefaultLifetime
	certificateRenewBefore = certs.DefaultLifetime / 3
)

// goDuration formats d as cert-manager reads it ("2160h").
func goDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", int64(d/time.Hour))
	}
	return d.String()
}

// desiredCertificate is a cert-manager Certificate whose Secret, named like
// the Certificate, receives the labels too.
func desiredCertificate(name, namespace string, labels map[string]string, owner *metav1.OwnerReference,
	issuer CertManagerIssuer, names certs.Names) *unstructured.Unstructured {
	u := newCertificate()
	u.SetName(name)
	u.SetNamespace(namespace)
	u.SetLabels(labels)
	if owner != nil {
		u.SetOwnerReferences([]metav1.OwnerReference{*owner})
	}
	secretLabels := map[string]any{}
	for k, v := range labels {
		secretLabels[k] = v
	}
	spec := map[string]any{
		"secretName":     name,
		"secretTemplate": map[string]any{"labels": secretLabels},
		"issuerRef":      map[string]any{"name": issuer.Name, "kind": issuer.Kind, "group": issuer.Group},
		"duration":       goDuration(certificateDuration),
		"renewBefore":    goDuration(certificateRenewBefore),
		// A new key at each issuance, as the operator path does.
		"privateKey": map[string]any{"algorithm": "ECDSA", "size": int64(256), "rotationPolicy": "Always"},
		"usages":     []any{"server auth", "digital signature"},
	}
	if len(names.DNS) > 0 {
		dns := make([]any, len(names.DNS))
		for i, n := range names.DNS {
			dns[i] = n
		}
		spec["dnsNames"] = dns
	}
	if len(names.IPs) > 0 {
		ips := make([]any, len(names.IPs))
		for i, ip := range names.IPs {
			ips[i] = ip.String()
		}
		spec["ipAddresses"] = ips
	}
	u.Object["spec"] = spec
	return u
}

// desiredSiteServerCertificate is the SiteServer's Certificate, controlled
// by it, for its serving Secret.
func desiredSiteServerCertificate(ss *siteopsv1.SiteServer, namespace string, issuer CertManagerIssuer, names certs.Names) *unstructured.Unstructured {
	owner := metav1.NewControllerRef(ss, siteopsv1.GroupVersion.WithKind("SiteServer"))
	return desiredCertificate(tlsSecretName(ss), namespace, commonLabels(ss, "tls"), owner, issuer, names)
}

// certificateSpecFields are the spec fields the operator sets; a field it
// set before and no longer sets must be gone from the live object too.
var certificateSpecFields = []string{"secretName", "secretTemplate", "issuerRef", "duration", "renewBefore", "privateKey",
	"usages", "dnsNames", "ipAddresses"}

// certificateCurrent reports whether live already holds what desired sets:
// every label, and each spec field (the controller reference is checked
// before) (maps may hold more keys, which
// cert-manager or a user may add; lists must be equal).
func certificateCurrent(live, desired *unstructured.Unstructured) bool {
	labels := live.GetLabels()
	for k, v := range desired.GetLabels() {
		if labels[k] != v {
			return false
		}
	}
	liveSpec, _, _ := unstructured.NestedMap(live.Object, "spec")
	wantSpec, _, _ := unstructured.NestedMap(desired.Object, "spec")
	for _, f := range certificateSpecFields {
		if !holds(liveSpec[f], wantSpec[f]) {
			return false
		}
	}
	return true
}

// holds reports whether got holds want: maps by key (got may have more),
// lists element by element, an absent want only an absent or empty got,
// numbers by value.
func holds(got, want any) bool {
	switch w := want.(type) {
	case nil:
		switch g := got.(type) {
		case nil:
			return true
		case []any:
			return len(g) == 0
		}
		return false
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return false
		}
		for k, v := range w {
			if !holds(g[k], v) {
				return false
			}
		}
		return true
	case []any:
		g, ok := got.([]any)
		return ok && slices.EqualFunc(g, w, holds)
	case int64:
		switch g := got.(type) {
		case int64:
			return g == w
		case float64:
			return g == float64(w)
		}
		return false
	}
	return equality.Semantic.DeepEqual(got, want)
}

// certManagerState is what the certificate phase found in cert-manager
// mode.
type certManagerState struct {
	// desired is the Certificate to apply.
	desired *unstructured.Unstructured
	// live is the Certificate the cache holds, nil when there is none.
	live *unstructured.Unstructured
	// applied: this reconcile changed (or created) it, so what live says
	// is about the previous spec.
	applied bool
}

// reconcileCertManagerCertificate is the certificate phase in cert-manager
// mode: the SiteServer's Certificate with the names the operator path would
// issue for, read from the cache (applied with the children), and the CA
// bundle gathered from the issued Secrets.
func (r *SiteServerReconciler) reconcileCertManagerCertificate(ctx context.Context, s *siteServerScope) error {
	ns := r.Workloads.Namespace
	names, bad := certificateNames(append(certificateHosts(s.ss, ns), s.upcomingHosts()...))
	if len(bad) > 0 {
		log.FromContext(ctx).Info("Leaving out of the Certificate hosts that cannot be names of one",
			"siteServer", klog.KObj(s.ss), "hosts", bad)
	}
	state := &certManagerState{desired: desiredSiteServerCertificate(s.ss, ns, r.Certificates.Issuer, names)}
	live := newCertificate()
	if err := r.certificateReader().Get(ctx, client.ObjectKey{Namespace: ns, Name: tlsSecretName(s.ss)}, live); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Certificate %s/%s: %w", ns, tlsSecretName(s.ss), err)
		}
	} else {
		state.live = live
	}
	s.certificate = certificateState{certManager: state}
	return publishCertManagerBundle(ctx, r.Client, ns)
}

// certificateReader reads Certificates: the manager's cache (the client
// reads unstructured objects from the API server).
func (r *SiteServerReconciler) certificateReader() client.Reader {
	if r.CertificateReader != nil {
		return r.CertificateReader
	}
	return r.Client
}

// applyCertManagerCertificate applies the SiteServer's Certificate unless
// the cached one already holds it.
func (r *SiteServerReconciler) applyCertManagerCertificate(ctx context.Context, s *siteServerScope) error {
	state := s.certificate.certManager
	applied, err := applyCertificate(ctx, r.Client, state.live, state.desired, s.ss)
	state.applied = applied
	return err
}

// applyCertificate applies desired with server-side apply unless live (nil
// when absent) already holds it; it reports whether it wrote. With an
// owner, a live Certificate controlled by anything else is left alone
// (ErrNotOwned), as for every child.
func applyCertificate(ctx context.Context, c client.Client, live, desired *unstructured.Unstructured, owner *siteopsv1.SiteServer) (bool, error) {
	key := client.ObjectKeyFromObject(desired)
	if live != nil {
		if owner != nil {
			if err := checkController(live, "SiteServer", owner.Name, owner.UID); err != nil {
				var oe *OwnershipError
				if errors.As(err, &oe) {
					oe.Object = "Certificate " + key.String()
				}
				return false, err
			}
		}
		if certificateCurrent(live, desired) {
			return false, nil
		}
	}
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(desired), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("applying Certificate %s: %w", key, err)
	}
	return true, nil
}

// certificateCondition reports a Certificate from its conditions: Ready
// for its current generation, a failed issuance, or issuing.
func certificateCondition(state *certManagerState, gen int64) metav1.Condition {
	key := client.ObjectKeyFromObject(state.desired)
	cond := metav1.Condition{Type: siteopsv1.ConditionCertificateReady, Status: metav1.ConditionFalse, ObservedGeneration: gen,
		Reason: siteopsv1.ReasonCertManagerIssuing}
	if state.live == nil || state.applied {
		cond.Message = fmt.Sprintf("cert-manager is issuing Certificate %s for the current names", key)
		return cond
	}
	ready := certManagerCondition(state.live, "Ready")
	issuing := certManagerCondition(state.live, "Issuing")
	current := func(c map[string]any) bool {
		observed, found, _ := unstructured.NestedInt64(c, "observedGeneration")
		return !found || observed >= state.live.GetGeneration()
	}
	switch {
	case ready != nil && ready["status"] == "True" && current(ready):
		cond.Status, cond.Reason = metav1.ConditionTrue, siteopsv1.ReasonCertManagerReady
		cond.Message = fmt.Sprintf("Certificate %s is Ready: %v", key, ready["message"])
	case issuing != nil && issuing["status"] == "False" && issuing["reason"] == "Failed":
		cond.Reason = siteopsv1.ReasonCertManagerFailed
		cond.Message = fmt.Sprintf("cert-manager failed to issue Certificate %s: %v", key, issuing["message"])
	default:
		cond.Message = fmt.Sprintf("cert-manager is issuing Certificate %s", key)
		if ready != nil && ready["message"] != nil {
			cond.Message += fmt.Sprintf(" (Ready %v, %v: %v)", ready["status"], ready["reason"], ready["message"])
		}
	}
	cond.Message = boundedMessage(cond.Message)
	return cond
}

// certManagerCondition is the condition of the given type in a
// cert-manager object's status, nil when it has none.
func certManagerCondition(obj *unstructured.Unstructured, condType string) map[string]any {
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		if m, ok := c.(map[string]any); ok && m["type"] == condType {
			return m
		}
	}
	return nil
}

// setCertificateReady reports the Certificate in cert-manager mode (kept as
// it was when the reconcile failed before reading it); in operator mode the
// condition is not set (and removed, after a switch back).
func setCertificateReady(status *siteopsv1.SiteServerStatus, s *siteServerScope, certManager bool, gen int64) {
	switch {
	case !certManager:
		meta.RemoveStatusCondition(&status.Conditions, siteopsv1.ConditionCertificateReady)
	case s.certificate.certManager != nil:
		meta.SetStatusCondition(&status.Conditions, certificateCondition(s.certificate.certManager, gen))
	}
}

// publishCertManagerBundle publishes in the ConfigMap site-operator-ca the
// CA bundle of cert-manager mode: the ca.crt of every serving Secret of the
// site services and of the locator (sorted by Secret name, duplicates and
// expired certificates dropped). The issuer must fill ca.crt (cert-manager's
// CA and Vault issuers do). Nothing is written while no Secret holds one,
// nor when the bundle is unchanged.
func publishCertManagerBundle(ctx context.Context, c client.Client, namespace string) error {
	caLock.Lock()
	defer caLock.Unlock()
	var secrets corev1.SecretList
	if err := c.List(ctx, &secrets, client.InNamespace(namespace),
		client.MatchingLabels{"app.kubernetes.io/managed-by": "site-operator"}); err != nil {
		return fmt.Errorf("listing the serving certificate Secrets: %w", err)
	}
	slices.SortFunc(secrets.Items, func(a, b corev1.Secret) int { return strings.Compare(a.Name, b.Name) })
	var cas [][]byte
	for _, secret := range secrets.Items {
		if component := secret.Labels[LabelComponent]; component == "tls" || component == "locator" {
			cas = append(cas, secret.Data[certs.CACertKey])
		}
	}
	bundle := certs.Bundle(time.Now(), cas...)
	if len(bundle) == 0 {
		return nil
	}
	cm := corev1ac.ConfigMap(CAName, namespace).
		WithLabels(map[string]string{"app.kubernetes.io/name": "site-operator", "app.kubernetes.io/managed-by": "site-operator",
			LabelComponent: "ca"}).
		WithData(map[string]string{certs.CACertKey: string(bundle)})
	if err := applyIfChanged(ctx, c, &corev1.ConfigMap{}, cm, corev1ac.ExtractConfigMap); err != nil {
		return fmt.Errorf("publishing the CA bundle: %w", err)
	}
	return nil
}
