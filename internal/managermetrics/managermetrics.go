// Package managermetrics says how the manager serves /metrics: over HTTPS
// behind controller-runtime's authentication and authorization filter (the
// default), or over plain HTTP for development.
//
// Secure serving checks every scrape with the API server: the bearer token
// by a TokenReview, then a SubjectAccessReview for `get` on the non-resource
// URL /metrics. The manager therefore needs `create` on
// tokenreviews.authentication.k8s.io and
// subjectaccessreviews.authorization.k8s.io (controllers/rbac.go), and a
// scraper a ClusterRole with nonResourceURLs ["/metrics"], verbs ["get"].
// An unauthenticated scrape is answered 401, an unauthorised one 403.
package managermetrics

import (
	"crypto/tls"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Config is what the manager's flags say about its metrics endpoint.
type Config struct {
	// BindAddress is where /metrics is served; "0" turns it off.
	BindAddress string
	// Secure serves HTTPS behind the authentication and authorization
	// filter; false serves plain HTTP to anyone who reaches the port.
	Secure bool
	// CertDir holds tls.crt and tls.key (a mounted kubernetes.io/tls
	// Secret), reloaded when they change. Empty: controller-runtime
	// generates a self-signed certificate at start, which scrapers accept
	// with insecureSkipVerify (the token, not the certificate, is what
	// authenticates; the connection is still encrypted).
	CertDir string
}

// ServerOptions are the manager's metricsserver.Options for c.
func ServerOptions(c Config) metricsserver.Options {
	opts := metricsserver.Options{BindAddress: c.BindAddress}
	if !c.Secure {
		return opts
	}
	opts.SecureServing = true
	opts.FilterProvider = filters.WithAuthenticationAndAuthorization
	opts.CertDir = c.CertDir
	// HTTP/1.1 only, as kubebuilder's scaffold does by default: HTTP/2's
	// stream-reset weaknesses (CVE-2023-44487, CVE-2023-39325) are not
	// worth it for one scrape every few seconds.
	opts.TLSOpts = []func(*tls.Config){func(tc *tls.Config) { tc.NextProtos = []string{"http/1.1"} }}
	return opts
}
