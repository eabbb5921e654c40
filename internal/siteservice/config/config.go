// Package config is the configuration of the task-service and
// package-service binaries: the SiteServer controller writes it into a
// ConfigMap mounted in their pods, and the binaries load it at start. One
// type on both sides keeps them from drifting.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// FileName is the key of the ConfigMap and the file name in the mounted
// directory.
const FileName = "config.yaml"

// Default ports of both services.
const (
	// DefaultPort serves the agent API (task service) or content (package
	// service).
	DefaultPort = 8080
	// DefaultHealthPort serves /healthz and /readyz.
	DefaultHealthPort = 8081
	// DefaultStoragePath is where the package service keeps its content.
	DefaultStoragePath = "/var/lib/site-operator/content"
	// DefaultTLSDir is where the operator mounts the serving certificate's
	// Secret (tls.crt, tls.key, ca.crt).
	DefaultTLSDir = "/var/run/secrets/siteops.io/tls"
)

// Config is the configuration of one SiteServer's services.
type Config struct {
	// SiteServer is the name of the SiteServer the pod belongs to.
	SiteServer string `json:"siteServer"`
	// Sites are the names of the Sites served; empty means unassigned.
	Sites []string `json:"sites,omitempty"`
	// Task configures the task service.
	Task TaskConfig `json:"task"`
	// Package configures the package service.
	Package PackageConfig `json:"package"`
	// ListenHost is the address the service binds, its API and its probes;
	// empty means every interface. The pods pass their own IP with
	// --listen-host.
	ListenHost string `json:"listenHost,omitempty"`
	// TLS is how the API serves HTTPS. Absent means HTTPS with the
	// certificate and key in DefaultTLSDir.
	TLS TLSConfig `json:"tls,omitzero"`
	// Kubeconfig is the path of a kubeconfig file to reach the API server
	// with; empty means the pod's own ServiceAccount (in-cluster).
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

// TLSConfig is the serving certificate of a service's API. The probes on
// the health port stay plain HTTP.
type TLSConfig struct {
	// Disabled serves plain HTTP: for development only (--insecure-http).
	Disabled bool `json:"disabled,omitempty"`
	// CertFile is the PEM certificate chain; empty means
	// DefaultTLSDir/tls.crt. A renewed file is picked up without a restart.
	CertFile string `json:"certFile,omitempty"`
	// KeyFile is the PEM private key; empty means DefaultTLSDir/tls.key.
	KeyFile string `json:"keyFile,omitempty"`
}

// Files are the certificate and key files, defaulted.
func (t TLSConfig) Files() (certFile, keyFile string) {
	certFile, keyFile = t.CertFile, t.KeyFile
	if certFile == "" {
		certFile = DefaultTLSDir + "/tls.crt"
	}
	if keyFile == "" {
		keyFile = DefaultTLSDir + "/tls.key"
	}
	return certFile, keyFile
}

// TaskConfig configures the task service.
type TaskConfig struct {
	// Port serves the agent API.
	Port int `json:"port"`
	// HealthPort serves /healthz and /readyz.
	HealthPort int `json:"healthPort"`
	// MaxConnections caps the open connections of the agent API; 0 means a
	// default under the process's file limit. A larger value than the file
	// limit allows is lowered to it, with a warning.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MinTransferRate is the slowest a request body or a response may move,
	// in bytes per second, before it is cut; 0 means the default (1 KiB/s).
	MinTransferRate int64 `json:"minTransferRate,omitempty"`
	// Agents configures the agent API: registration and check-ins.
	Agents AgentsConfig `json:"agents,omitzero"`
}

// AgentsConfig configures how a task service registers agents and paces
// their check-ins.
type AgentsConfig struct {
	// Disabled serves no agent API and reaches no API server: for tests of
	// the binary only (--no-agent-api).
	Disabled bool `json:"disabled,omitempty"`
	// TokenNamespace holds the bootstrap token Secrets; empty means
	// DefaultTokenNamespace.
	TokenNamespace string `json:"tokenNamespace,omitempty"`
	// MaxCheckInRate bounds the check-ins per second of all the agents of
	// one task-service process: it sets each agent's interval from how many
	// agents it serves. 0 means DefaultMaxCheckInRate.
	MaxCheckInRate float64 `json:"maxCheckInRate,omitempty"`
	// MaxLongPolls caps the check-ins held at once; beyond it an agent is
	// answered at once with the time to come back. 0 means a default under
	// the connection cap.
	MaxLongPolls int `json:"maxLongPolls,omitempty"`
	// MaxWaitSeconds is the longest a check-in is held; 0 means
	// DefaultMaxWaitSeconds.
	MaxWaitSeconds int `json:"maxWaitSeconds,omitempty"`
	// MinIntervalSeconds is the shortest time between two check-ins of one
	// agent, however few agents there are; 0 means DefaultMinIntervalSeconds.
	MinIntervalSeconds int `json:"minIntervalSeconds,omitempty"`
	// StatusIntervalSeconds is the least time between two status writes of
	// one Computer; 0 means DefaultStatusIntervalSeconds (5 minutes).
	// Lower values are for tests.
	StatusIntervalSeconds int `json:"statusIntervalSeconds,omitempty"`
}

// Defaults of AgentsConfig.
const (
	DefaultTokenNamespace        = "site-operator-tokens"
	DefaultMaxCheckInRate        = 200
	DefaultMaxWaitSeconds        = 60
	DefaultMinIntervalSeconds    = 60
	DefaultStatusIntervalSeconds = 300
)

// PackageConfig configures the package service.
type PackageConfig struct {
	// Port serves content.
	Port int `json:"port"`
	// HealthPort serves /healthz and /readyz.
	HealthPort int `json:"healthPort"`
	// StoragePath is the directory of the content store.
	StoragePath string `json:"storagePath"`
	// BandwidthLimit caps replication in bytes per second; 0 means no cap.
	// The service follows its SiteServer's spec.services.package.
	// bandwidthLimit through the API once it runs: a change applies to the
	// transfers under way without a restart, and this value is the one it
	// starts with.
	BandwidthLimit int64 `json:"bandwidthLimit,omitempty"`
	// Replication configures how the service fills its store.
	Replication ReplicationConfig `json:"replication,omitzero"`
	// MaxConnections caps the open connections of the content API; 0 means
	// a default under the process's file limit. A larger value than the
	// file limit allows (two files per connection: a download holds the
	// file it sends) is lowered to it, with a warning.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MinTransferRate is the slowest a request body or a response may move,
	// in bytes per second, before it is cut; 0 means the default (1 KiB/s).
	MinTransferRate int64 `json:"minTransferRate,omitempty"`
	// ScrubRate bounds how fast the store is re-hashed after a start, in
	// bytes per second, so the scrub leaves the disk to the agents; 0 means
	// the default (64 MiB/s).
	ScrubRate int64 `json:"scrubRate,omitempty"`
}

// ReplicationConfig configures the package service's replication: which
// Packages it holds follows the placement rules, read through the API.
type ReplicationConfig struct {
	// Disabled serves the store only and reaches no API server: for tests
	// of the binary (--no-replication).
	Disabled bool `json:"disabled,omitempty"`
	// MaxTransfers bounds the transfers under way at once; 0 means
	// DefaultMaxTransfers.
	MaxTransfers int `json:"maxTransfers,omitempty"`
	// RemoveAfterSeconds is how long content that no Package gives this
	// server any more stays in the store before it is removed; 0 means
	// DefaultRemoveAfterSeconds.
	RemoveAfterSeconds int `json:"removeAfterSeconds,omitempty"`
}

// DefaultRemoveAfterSeconds is the grace period before unwanted content is
// removed: a Package whose sites change back within the hour is not
// transferred again.
const DefaultRemoveAfterSeconds = 3600

// DefaultMaxTransfers is how many packages one package service fetches at
// once when ReplicationConfig.MaxTransfers is 0.
const DefaultMaxTransfers = 2

// Defaults returns the configuration of a SiteServer with default ports.
func Defaults(siteServer string, sites []string) Config {
	return Config{
		SiteServer: siteServer,
		Sites:      sites,
		Task:       TaskConfig{Port: DefaultPort, HealthPort: DefaultHealthPort},
		Package: PackageConfig{Port: DefaultPort, HealthPort: DefaultHealthPort,
			StoragePath: DefaultStoragePath},
	}
}

// Marshal renders c as the ConfigMap's file.
func (c Config) Marshal() (string, error) {
	data, err := yaml.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("rendering the service configuration: %w", err)
	}
	return string(data), nil
}

// Load reads and validates a configuration file.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading the service configuration: %w", err)
	}
	var c Config
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("parsing the service configuration %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("service configuration %s: %w", path, err)
	}
	return c, nil
}

// Validate reports the first field that cannot be used.
func (c Config) Validate() error {
	var errs []error
	if c.SiteServer == "" {
		errs = append(errs, errors.New("siteServer must be set"))
	}
	for _, p := range []struct {
		field string
		port  int
	}{{"task.port", c.Task.Port}, {"task.healthPort", c.Task.HealthPort},
		{"package.port", c.Package.Port}, {"package.healthPort", c.Package.HealthPort}} {
		if p.port < 1 || p.port > 65535 {
			errs = append(errs, fmt.Errorf("%s must be a port between 1 and 65535, not %d", p.field, p.port))
		}
	}
	if c.Task.Port == c.Task.HealthPort {
		errs = append(errs, fmt.Errorf("task.port and task.healthPort must differ, both are %d", c.Task.Port))
	}
	if c.Package.Port == c.Package.HealthPort {
		errs = append(errs, fmt.Errorf("package.port and package.healthPort must differ, both are %d", c.Package.Port))
	}
	for _, f := range []struct {
		field string
		value int64
	}{{"task.maxConnections", int64(c.Task.MaxConnections)}, {"task.minTransferRate", c.Task.MinTransferRate},
		{"package.maxConnections", int64(c.Package.MaxConnections)}, {"package.minTransferRate", c.Package.MinTransferRate},
		{"package.scrubRate", c.Package.ScrubRate}, {"package.replication.maxTransfers", int64(c.Package.Replication.MaxTransfers)},
		{"package.replication.removeAfterSeconds", int64(c.Package.Replication.RemoveAfterSeconds)}} {
		if f.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be 0 (the default) or positive, not %d", f.field, f.value))
		}
	}
	if c.ListenHost != "" {
		if _, err := netip.ParseAddr(strings.Trim(c.ListenHost, "[]")); err != nil && !isDNSName(c.ListenHost) {
			errs = append(errs, fmt.Errorf("listenHost must be an IP address or a host name, not %q", c.ListenHost))
		}
	}
	if c.TLS.Disabled && (c.TLS.CertFile != "" || c.TLS.KeyFile != "") {
		errs = append(errs, errors.New("tls.certFile and tls.keyFile must not be set with tls.disabled: true"))
	}
	a := c.Task.Agents
	for _, f := range []struct {
		field string
		value float64
	}{{"task.agents.maxCheckInRate", a.MaxCheckInRate}, {"task.agents.maxLongPolls", float64(a.MaxLongPolls)},
		{"task.agents.maxWaitSeconds", float64(a.MaxWaitSeconds)}, {"task.agents.minIntervalSeconds", float64(a.MinIntervalSeconds)},
		{"task.agents.statusIntervalSeconds", float64(a.StatusIntervalSeconds)}} {
		if f.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be 0 (the default) or positive, not %v", f.field, f.value))
		}
	}
	if c.Package.BandwidthLimit < 0 {
		errs = append(errs, fmt.Errorf("package.bandwidthLimit must be 0 (no cap) or positive, not %d", c.Package.BandwidthLimit))
	}
	return errors.Join(errs...)
}

// isDNSName accepts letters, digits, '-' and '.', as a host name.
func isDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range h {
		letterOrDigit := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !letterOrDigit && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
