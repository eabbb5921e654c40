package controllers

import (
	"context"
	"crypto/tls"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/siteops/site-operator/internal/certs"
)

// DefaultLocatorSecret is the locator's serving certificate Secret in the
// workload namespace (the manager's own by default), which the manager's
// pod mounts.
const DefaultLocatorSecret = "site-operator-locator-tls"

// LocatorCertificateOptions say which certificate the locator serves.
type LocatorCertificateOptions struct {
	// Namespace holds the Secret and the CA: the workload namespace.
	Namespace string
	// SecretName is the kubernetes.io/tls Secret; empty means
	// DefaultLocatorSecret.
	SecretName string
	// Hosts are the names agents reach the locator by: its Service's DNS
	// names (ServiceDNSNames) and any configured extra names or addresses.
	Hosts []string
	// Interval is how often the leader checks the certificate and every
	// replica reloads it from the cache; 0 means a minute and 5 seconds.
	Interval, LoadInterval time.Duration
	// Certificates say who issues it: the operator's CA, or in cert-manager
	// mode a Certificate of the same name as the Secret.
	Certificates CertificateOptions
}

// ServiceDNSNames are the in-cluster DNS names of a Service.
func ServiceDNSNames(service, namespace string) []string {
	return []string{service + "." + namespace + ".svc", service + "." + namespace + ".svc." + clusterDomain}
}

// LocatorCertificate keeps the locator's serving certificate, signed by the
// operator's CA (the one agents trust through the published bundle), in
// its Secret, and holds it in memory on every replica.
type LocatorCertificate struct {
	client client.Client
	// reader reads cert-manager Certificates: the manager's cache, or the
	// client.
	reader  client.Reader
	opts    LocatorCertificateOptions
	names   certs.Names
	current certs.Current
}

// NewLocatorCertificate checks the options; c reads from the manager's cache.
func NewLocatorCertificate(c client.Client, opts LocatorCertificateOptions) (*LocatorCertificate, error) {
	if opts.Namespace == "" {
		return nil, fmt.Errorf("locator certificate: the namespace must be set")
	}
	if opts.SecretName == "" {
		opts.SecretName = DefaultLocatorSecret
	}
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.LoadInterval <= 0 {
		opts.LoadInterval = 5 * time.Second
	}
	names, err := certs.NamesOf(opts.Hosts...)
	if err != nil {
		return nil, fmt.Errorf("locator certificate hosts: %w", err)
	}
	if names.Empty() {
		return nil, fmt.Errorf("locator certificate hosts: at least one name or address must be set")
	}
	if err := opts.Certificates.Validate(); err != nil {
		return nil, fmt.Errorf("locator certificate: %w", err)
	}
	return &LocatorCertificate{client: c, reader: c, opts: opts, names: names}, nil
}

// AddLocatorCertificate registers with mgr the leader's upkeep of the
// locator's certificate Secret and every replica's reload of it, and
// returns what the locator's tls.Config serves from
// (certs.ServerConfig(lc.GetCertificate)). Handshakes fail until the first
// certificate is loaded; a renewed one is served at the next handshake.
func AddLocatorCertificate(mgr ctrl.Manager, opts LocatorCertificateOptions) (*LocatorCertificate, error) {
	lc, err := NewLocatorCertificate(mgr.GetClient(), opts)
	if err != nil {
		return nil, err
	}
	lc.reader = mgr.GetCache()
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		lc.every(ctx, lc.opts.Interval, "Keeping the locator's certificate", lc.Ensure)
		return nil
	})); err != nil {
		return nil, err
	}
	if err := mgr.Add(everyReplica(func(ctx context.Context) error {
		lc.every(ctx, lc.opts.LoadInterval, "Loading the locator's certificate", lc.Load)
		return nil
	})); err != nil {
		return nil, err
	}
	return lc, nil
}

// everyReplica is a runnable that runs whether or not the replica leads.
type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (everyReplica) NeedLeaderElection() bool          { return false }

func (lc *LocatorCertificate) every(ctx context.Context, interval time.Duration, what string, do func(context.Context) error) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if err := do(ctx); err != nil {
			log.FromContext(ctx).Error(err, what)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// GetCertificate is for the locator's tls.Config.
func (lc *LocatorCertificate) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return lc.current.GetCertificate(hello)
}

// Ensure issues the certificate when certs.Decide says so (none yet, names
// or CA changed, due for renewal) and writes it with the CA bundle; a
// steady state reads the cache and writes nothing.
func (lc *LocatorCertificate) Ensure(ctx context.Context) error {
	if lc.opts.Certificates.certManager() {
		return lc.ensureCertManager(ctx)
	}
	now := time.Now()
	ca, bundle, err := ensureCA(ctx, lc.client, lc.opts.Namespace, now)
	if err != nil {
		return err
	}
	key := client.ObjectKey{Namespace: lc.opts.Namespace, Name: lc.opts.SecretName}
	var live corev1.Secret
	if err := lc.client.Get(ctx, key, &live); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("reading the locator's certificate Secret %s: %w", key, err)
	}
	certPEM, keyPEM := live.Data[certs.CertKey], live.Data[certs.KeyKey]
	if d := certs.Decide(ca, certPEM, keyPEM, lc.names, now); d.Issue {
		log.FromContext(ctx).Info("Issuing the locator's certificate", "secret", key, "reason", d.Reason, "names", lc.names.String())
		if certPEM, keyPEM, err = ca.Issue(lc.names, now, certs.DefaultLifetime); err != nil {
			return fmt.Errorf("issuing the locator's certificate: %w", err)
		}
	}
	secret := corev1ac.Secret(key.Name, key.Namespace).
		WithLabels(map[string]string{"app.kubernetes.io/name": "site-operator", "app.kubernetes.io/managed-by": "site-operator",
			LabelComponent: "locator"}).
		WithType(corev1.SecretTypeTLS).
		WithData(map[string][]byte{certs.CertKey: certPEM, certs.KeyKey: keyPEM, certs.CACertKey: bundle})
	return applyIfChanged(ctx, lc.client, &corev1.Secret{}, secret, corev1ac.ExtractSecret)
}

// Load reads the Secret (from the cache) into memory, when it holds a pair.
func (lc *LocatorCertificate) Load(ctx context.Context) error {
	key := client.ObjectKey{Namespace: lc.opts.Namespace, Name: lc.opts.SecretName}
	var secret corev1.Secret
	if err := lc.client.Get(ctx, key, &secret); err != nil {
		return client.IgnoreNotFound(err)
	}
	if err := lc.current.Set(secret.Data[certs.CertKey], secret.Data[certs.KeyKey]); err != nil {
		return fmt.Errorf("loading the locator's certificate from Secret %s: %w", key, err)
	}
	return nil
}

// ensureCertManager keeps, in cert-manager mode, a Certificate for the
// locator's Secret (what Load reads, whoever writes it) and publishes the
// CA bundle with its ca.crt.
func (lc *LocatorCertificate) ensureCertManager(ctx context.Context) error {
	key := client.ObjectKey{Namespace: lc.opts.Namespace, Name: lc.opts.SecretName}
	desired := desiredCertificate(key.Name, key.Namespace, map[string]string{"app.kubernetes.io/name": "site-operator",
		"app.kubernetes.io/managed-by": "site-operator", LabelComponent: "locator"}, nil, lc.opts.Certificates.Issuer, lc.names)
	live := newCertificate()
	if err := lc.reader.Get(ctx, key, live); err != nil {
		if client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("reading the locator's Certificate %s: %w", key, err)
		}
		live = nil
	}
	if applied, err := applyCertificate(ctx, lc.client, live, desired, nil); err != nil {
		return err
	} else if applied {
		log.FromContext(ctx).Info("Asking cert-manager for the locator's certificate", "certificate", key, "names", lc.names.String())
	}
	return publishCertManagerBundle(ctx, lc.client, lc.opts.Namespace)
}
