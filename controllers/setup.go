// Package controllers holds one reconciler per siteops.io kind, the field
// indexes they share and Setup, which registers them with a manager.
package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"

	"github.com/siteops/site-operator/internal/directory"
	"github.com/siteops/site-operator/internal/topology"
)

// Options tune the controllers registered by Setup.
type Options struct {
	// SubnetConcurrency is how many Subnets are reconciled at once.
	SubnetConcurrency int
	// SiteConcurrency is how many Sites are reconciled at once.
	SiteConcurrency int
	// SiteServerConcurrency is how many SiteServers are reconciled at once.
	SiteServerConcurrency int
	// Workloads says where and with which image the site services run.
	Workloads WorkloadConfig
	// ComputerOfflineAfter is how long a Computer's agent may go without a
	// check-in written to its status before the Computer turns
	// Ready=False (AgentOffline). It must exceed the task services' status
	// interval (5 minutes by default) and the agents' check-in interval.
	ComputerOfflineAfter time.Duration
	// DirectoryReader reads the directories of DirectoryImports; nil means
	// directory.Read (LDAP). Tests of the API side give canned directories.
	DirectoryReader DirectoryReader
	// DirectoryReadTimeout bounds the connection and each request to a
	// directory; 0 means 30 s.
	DirectoryReadTimeout time.Duration
	// Certificates say who issues the serving certificates: the operator's
	// CA or cert-manager (docs/tls.md).
	Certificates CertificateOptions
}

// DefaultOptions are the options the manager binary starts with.
func DefaultOptions() Options {
	return Options{
		// Reconciles mostly wait on their status write: many at once keep
		// up with a burst of creates (docs/benchmarks.md).
		SubnetConcurrency:     32,
		SiteConcurrency:       8,
		SiteServerConcurrency: 4,
		ComputerOfflineAfter:  15 * time.Minute,
		Certificates:          DefaultCertificateOptions(),
		Workloads: WorkloadConfig{
			Namespace:       "site-operator-system",
			Image:           "site-operator:0.1.0",
			ImagePullPolicy: corev1.PullIfNotPresent,
		},
	}
}

// Setup registers the field indexes and every controller with mgr. The
// returned Resolver is the live address → subnet → site table, fed from the
// cache's informers on every replica whether or not it leads (the
// controllers run on the leader only); the locator reads it. A readiness
// check named "topology" passes once it holds every Subnet and Site.
func Setup(mgr ctrl.Manager, opts Options) (*topology.Resolver, error) {
	if err := opts.Certificates.Validate(); err != nil {
		return nil, err
	}
	if opts.Certificates.certManager() {
		if err := checkCertificateKind(mgr.GetRESTMapper()); err != nil {
			return nil, err
		}
	}
	if err := setupIndexes(mgr); err != nil {
		return nil, fmt.Errorf("setting up field indexes: %w", err)
	}
	// The feed's handlers run on every replica, outside leader election, so
	// that every replica's resolver holds the whole table.
	feed, err := newResolverFeed(context.Background(), mgr.GetCache(), topology.New())
	if err != nil {
		return nil, fmt.Errorf("feeding the topology resolver: %w", err)
	}
	if err := mgr.AddReadyzCheck("topology", feed.readyCheck); err != nil {
		return nil, fmt.Errorf("adding the topology readiness check: %w", err)
	}
	subnets := &SubnetReconciler{Client: mgr.GetClient(), feed: feed}
	if err := subnets.SetupWithManager(mgr, opts.SubnetConcurrency); err != nil {
		return nil, fmt.Errorf("setting up the Subnet controller: %w", err)
	}
	sites := &SiteReconciler{Client: mgr.GetClient(), Workloads: opts.Workloads}
	if err := sites.SetupWithManager(mgr, opts.SiteConcurrency); err != nil {
		return nil, fmt.Errorf("setting up the Site controller: %w", err)
	}
	siteServers := &SiteServerReconciler{Client: mgr.GetClient(), Workloads: opts.Workloads,
		Certificates: opts.Certificates, CertificateReader: mgr.GetCache()}
	if err := siteServers.SetupWithManager(mgr, opts.SiteServerConcurrency); err != nil {
		return nil, fmt.Errorf("setting up the SiteServer controller: %w", err)
	}
	computers := &ComputerReconciler{Client: mgr.GetClient(), OfflineAfter: opts.ComputerOfflineAfter}
	if err := computers.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Computer controller: %w", err)
	}
	// The manager's Event recorder (events.k8s.io/v1, events.go), shared by
	// the controllers that record Events.
	recorder := mgr.GetEventRecorder(EventReportingController)
	deploymentTasks := &DeploymentTaskReconciler{Client: mgr.GetClient(), Events: recorder}
	if err := deploymentTasks.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the DeploymentTask controller: %w", err)
	}
	pkgs := &PackageReconciler{Client: mgr.GetClient(), Events: recorder}
	if err := pkgs.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the Package controller: %w", err)
	}
	read := opts.DirectoryReader
	if read == nil {
		read = directory.Read
	}
	imports := &DirectoryImportReconciler{Client: mgr.GetClient(), Namespace: opts.Workloads.Namespace, Read: read,
		ReadTimeout: opts.DirectoryReadTimeout}
	if err := imports.SetupWithManager(mgr); err != nil {
		return nil, fmt.Errorf("setting up the DirectoryImport controller: %w", err)
	}
	return feed.resolver, nil
}

// NewScheme returns a scheme with the built-in Kubernetes kinds and the
// siteops.io kinds, the one every client of the operator uses.
func NewScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the Kubernetes kinds: %w", err)
	}
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the siteops.io kinds: %w", err)
	}
	return scheme, nil
}

// CacheOptionsFor is CacheOptions for the manager that opts configure: in
// cert-manager mode the cache holds the Certificates of the workload
// namespace too (and only there: the manager's Role grants them there).
// The Certificate kind must then be served, or the cache cannot be made.
func CacheOptionsFor(opts Options) cache.Options {
	o := CacheOptions(opts.Workloads.Namespace)
	if opts.Certificates.certManager() {
		o.ByObject[newCertificate()] = cache.ByObject{Namespaces: map[string]cache.Config{opts.Workloads.Namespace: {}}}
	}
	return o
}

// CacheOptions limits the manager's cache of the workload kinds to the
// namespace that holds the site services, so that the operator neither
// watches nor holds every Deployment, Service and ConfigMap of the cluster.
// It holds Computers, which may number tens of thousands, without their
// managedFields (nothing in the manager reads them; the workload kinds keep
// theirs, which applyIfChanged reads).
func CacheOptions(workloadNamespace string) cache.Options {
	only := cache.ByObject{Namespaces: map[string]cache.Config{workloadNamespace: {}}}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&appsv1.Deployment{}:            only,
		&appsv1.StatefulSet{}:           only,
		&corev1.Service{}:               only,
		&corev1.ConfigMap{}:             only,
		&policyv1.PodDisruptionBudget{}: only,
		// The site services' pods, for the addresses they advertise.
		&corev1.Pod{}: only,
		// The CA and the serving certificates.
		&corev1.Secret{}:      only,
		&siteopsv1.Computer{}: {Transform: cache.TransformStripManagedFields()},
	}}
}
