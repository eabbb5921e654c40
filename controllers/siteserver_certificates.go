package controllers

// The operator's CA and the SiteServers' serving certificates (see
// internal/certs for the rules). The CA lives in the Secret
// site-operator-ca of the workload namespace, with its successor from 2/3
// of its lifetime and its predecessor until that expires, and the bundle
// of all of them, which agents trust, in the ConfigMap of the same name
// (key ca.crt). Each SiteServer gets a kubernetes.io/tls Secret
// <name>-tls, signed by the CA, with every name agents and the cluster
// reach its services by; its pods mount it and reload it when it is
// renewed. The reconcile of a SiteServer issues it when certs.Decide says
// so and is requeued for its renewal or the CA's next stage, whichever
// comes first.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/certs"
)

const (
	// CAName names the Secret holding the operator's CA and the ConfigMap
	// publishing its bundle (key ca.crt) for agents, in the workload
	// namespace.
	CAName = "site-operator-ca"
	// clusterDomain is the DNS suffix of in-cluster Service names.
	clusterDomain = "cluster.local"
	// tlsVolume is the serving certificate's volume in the site services'
	// pods.
	tlsVolume = "tls"
)

func tlsSecretName(ss *siteopsv1.SiteServer) string { return ss.Name + "-tls" }

// certificateHosts are the names a SiteServer's serving certificate
// carries: the hosts of every URL it advertises and of spec.exposure.addresses,
// and the in-cluster DNS names of its own Services and of the Services of
// the Sites it serves (<svc>.<ns>.svc and <svc>.<ns>.svc.cluster.local).
// One certificate serves both services, so a pod answers by any of them.
func certificateHosts(ss *siteopsv1.SiteServer, namespace string) []string {
	var hosts []string
	for _, s := range slices.Concat(ss.Status.Task.Advertised, ss.Status.Package.Advertised, ss.Spec.Exposure.Addresses) {
		if h := hostOf(s); h != "" {
			hosts = append(hosts, h)
		}
	}
	services := []string{taskName(ss), packageName(ss)}
	for _, site := range ss.Spec.Sites {
		services = append(services, siteServiceName(site, componentTask), siteServiceName(site, componentPackage))
	}
	for _, svc := range services {
		hosts = append(hosts, svc+"."+namespace+".svc", svc+"."+namespace+".svc."+clusterDomain)
	}
	return hosts
}

// hostOf is the host of an advertised URL (https://host:port/...) or of an
// address (host, host:port, [v6]:port); "" when there is none.
func hostOf(s string) string {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil {
			return ""
		}
		return u.Hostname()
	}
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return strings.Trim(s, "[]")
}

// certificateNames are the SANs of hosts; a host that cannot be a SAN is
// left out and returned, so that one bad address does not keep the others
// from being served.
func certificateNames(hosts []string) (certs.Names, []string) {
	var good, bad []string
	for _, h := range hosts {
		if _, err := certs.NamesOf(h); err != nil {
			bad = append(bad, h)
			continue
		}
		good = append(good, h)
	}
	names, _ := certs.NamesOf(good...)
	return names, bad
}

// upcomingHosts are the hosts the status written by this reconcile will
// advertise, and the address of every pod of the server that has one, ready
// or not: a restarted pod's new address is in the certificate before the
// pod turns ready and is advertised, and a pod that flaps does not change
// the certificate.
func (s *siteServerScope) upcomingHosts() []string {
	var hosts []string
	for _, url := range slices.Concat(s.taskAdvertised, s.packageAdvertised) {
		if h := hostOf(url); h != "" {
			hosts = append(hosts, h)
		}
	}
	for _, pod := range slices.Concat(s.taskPods, s.packagePods) {
		if pod.Status.PodIP != "" && pod.DeletionTimestamp == nil {
			hosts = append(hosts, pod.Status.PodIP)
		}
	}
	return hosts
}

// advertisedChanged passes SiteServer updates that change what it
// advertises (its status): the certificate follows. Other status changes
// are filtered, as GenerationChangedPredicate does.
var advertisedChanged = predicate.Funcs{
	CreateFunc:  func(event.CreateEvent) bool { return false },
	DeleteFunc:  func(event.DeleteEvent) bool { return false },
	GenericFunc: func(event.GenericEvent) bool { return false },
	UpdateFunc: func(e event.UpdateEvent) bool {
		before, ok1 := e.ObjectOld.(*siteopsv1.SiteServer)
		after, ok2 := e.ObjectNew.(*siteopsv1.SiteServer)
		return ok1 && ok2 && (!slices.Equal(before.Status.Task.Advertised, after.Status.Task.Advertised) ||
			!slices.Equal(before.Status.Package.Advertised, after.Status.Package.Advertised))
	},
}

// certificateState is what the certificate phase decided.
type certificateState struct {
	// secret is the serving certificate's Secret to apply.
	secret *corev1ac.SecretApplyConfiguration
	// renewAt is when the certificate is due, or the CA's next stage
	// (certs.CAPlan.RecheckAt) if sooner; the reconcile is requeued for it.
	renewAt time.Time
	// certManager is set in cert-manager mode instead of secret
	// (siteserver_certificates_certmanager.go).
	certManager *certManagerState
}

// earliest is the earlier of two times, a zero one left out.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// requeueAfter is how long until the certificate is due, 0 when nothing is.
func (c certificateState) requeueAfter(now time.Time) time.Duration {
	if c.renewAt.IsZero() {
		return 0
	}
	return max(c.renewAt.Sub(now), time.Second)
}

// reconcileCertificate is the certificate phase: it keeps the CA and
// decides the SiteServer's serving certificate, issuing a new one when
// certs.Decide says so.
func (r *SiteServerReconciler) reconcileCertificate(ctx context.Context, s *siteServerScope) error {
	if r.Certificates.certManager() {
		return r.reconcileCertManagerCertificate(ctx, s)
	}
	now := time.Now()
	caPlan, bundle, err := reconcileCA(ctx, r.Client, r.Workloads.Namespace, now)
	if err != nil {
		return err
	}
	ca := caPlan.Signer
	names, bad := certificateNames(append(certificateHosts(s.ss, r.Workloads.Namespace), s.upcomingHosts()...))
	if len(bad) > 0 {
		log.FromContext(ctx).Info("Leaving out of the serving certificate hosts that cannot be names of one",
			"siteServer", klog.KObj(s.ss), "hosts", bad)
	}
	var live corev1.Secret
	exists, err := r.getIfExists(ctx, client.ObjectKey{Namespace: r.Workloads.Namespace, Name: tlsSecretName(s.ss)}, &live)
	if err != nil {
		return err
	}
	certPEM, keyPEM := live.Data[certs.CertKey], live.Data[certs.KeyKey]
	decision := certs.Decide(ca, certPEM, keyPEM, names, now)
	if decision.Issue {
		if certPEM, keyPEM, err = ca.Issue(names, now, certs.DefaultLifetime); err != nil {
			return fmt.Errorf("issuing the serving certificate of SiteServer %s: %w", s.ss.Name, err)
		}
		reason := decision.Reason
		if !exists {
			reason = "new"
		}
		log.FromContext(ctx).Info("Issuing a serving certificate", "siteServer", klog.KObj(s.ss), "reason", reason, "names", names.String())
		cert, _ := certs.ParseCertificate(certPEM)
		decision.RenewAt = certs.RenewAt(cert)
	}
	s.certificate = certificateState{
		secret:  desiredTLSSecret(s.ss, r.Workloads, certPEM, keyPEM, bundle),
		renewAt: earliest(decision.RenewAt, caPlan.RecheckAt),
	}
	return nil
}

// desiredTLSSecret is the SiteServer's serving certificate, with the CA
// bundle as ca.crt.
func desiredTLSSecret(ss *siteopsv1.SiteServer, wc WorkloadConfig, certPEM, keyPEM, bundle []byte) *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(tlsSecretName(ss), wc.Namespace).
		WithLabels(commonLabels(ss, "tls")).
		WithOwnerReferences(ownerReference(ss)).
		WithType(corev1.SecretTypeTLS).
		WithData(map[string][]byte{certs.CertKey: certPEM, certs.KeyKey: keyPEM, certs.CACertKey: bundle})
}

// caLock serialises the CA's renewal within a manager: every SiteServer
// reconcile and the locator's certificate read it.
var caLock sync.Mutex

// errCAPending is returned while another writer creates or renews the CA:
// the caller retries, and then reads the winner's from the cache.
var errCAPending = errors.New("the CA is being written by another reconcile; retrying")

// ensureCA returns the CA that signs the serving certificates and the
// bundle agents trust; see reconcileCA.
func ensureCA(ctx context.Context, c client.Client, namespace string, now time.Time) (*certs.Authority, []byte, error) {
	plan, bundle, err := reconcileCA(ctx, c, namespace, now)
	return plan.Signer, bundle, err
}

// reconcileCA keeps the operator's CA Secret as certs.RotateCA says
// (created, its successor prepared at 2/3 of its lifetime, signing
// switched to it at 5/6) and publishes the bundle in the ConfigMap. It
// returns the plan left (its signer, and when it changes by time alone)
// and the bundle. A steady state reads the cache and writes nothing.
func reconcileCA(ctx context.Context, c client.Client, namespace string, now time.Time) (certs.CAPlan, []byte, error) {
	caLock.Lock()
	defer caLock.Unlock()
	key := client.ObjectKey{Namespace: namespace, Name: CAName}
	var secret corev1.Secret
	exists := true
	if err := c.Get(ctx, key, &secret); err != nil {
		if !apierrors.IsNotFound(err) {
			return certs.CAPlan{}, nil, fmt.Errorf("reading the CA Secret %s: %w", key, err)
		}
		exists = false
	}
	files, plan, changes, err := certs.RotateCA(certs.CAFilesOf(secret.Data), now, func() (*certs.Authority, error) {
		return certs.NewAuthority("site-operator CA", now, certs.DefaultCALifetime)
	})
	if err != nil {
		return certs.CAPlan{}, nil, fmt.Errorf("renewing the CA in Secret %s: %w", key, err)
	}
	for _, change := range changes {
		log.FromContext(ctx).Info(caChangeMessages[change.Step], "secret", key, "reason", change.Reason)
	}
	if len(changes) > 0 {
		secret.Name, secret.Namespace, secret.Type = CAName, namespace, corev1.SecretTypeOpaque
		secret.Labels = map[string]string{"app.kubernetes.io/name": "site-operator", "app.kubernetes.io/managed-by": "site-operator",
			LabelComponent: "ca"}
		secret.Data = files.Data()
		// Create, or Update on the version read: two writers at once
		// cannot both win, and the loser retries with the winner's CA.
		write := c.Update
		if !exists {
			write = func(ctx context.Context, obj client.Object, _ ...client.UpdateOption) error {
				return c.Create(ctx, obj)
			}
		}
		if err := write(ctx, &secret); err != nil {
			if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
				return certs.CAPlan{}, nil, errCAPending
			}
			return certs.CAPlan{}, nil, fmt.Errorf("writing the CA Secret %s: %w", key, err)
		}
	}
	bundle := files.Bundle(now)
	cm := corev1ac.ConfigMap(CAName, namespace).
		WithLabels(map[string]string{"app.kubernetes.io/name": "site-operator", "app.kubernetes.io/managed-by": "site-operator",
			LabelComponent: "ca"}).
		WithData(map[string]string{certs.CACertKey: string(bundle)})
	if err := applyIfChanged(ctx, c, &corev1.ConfigMap{}, cm, corev1ac.ExtractConfigMap); err != nil {
		return certs.CAPlan{}, nil, fmt.Errorf("publishing the CA bundle: %w", err)
	}
	return plan, bundle, nil
}

// caChangeMessages are the log messages of the CA's changes.
var caChangeMessages = map[certs.CAStep]string{
	certs.CACreate:  "Issuing the CA",
	certs.CAPrepare: "Preparing the next CA, published beside the current one which keeps signing",
	certs.CASwitch:  "Switching the signing to the next CA; the current one stays in the bundle until it expires",
}
