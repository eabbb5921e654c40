// Package config is the configuration of the task-service and
// package-service binaries: the SiteServer controller writes it into a
// ConfigMap mounted in their pods, and the binaries load it at start. One
// type on both sides keeps them from drifting.
package config

import (
	"errors"
	"fmt"
	"os"

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
}

// TaskConfig configures the task service.
type TaskConfig struct {
	// Port serves the agent API.
	Port int `json:"port"`
	// HealthPort serves /healthz and /readyz.
	HealthPort int `json:"healthPort"`
	// MaxConnections caps the open connections of the agent API; 0 means a
	// default under the process's file limit.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MinTransferRate is the slowest a request body or a response may move,
	// in bytes per second, before it is cut; 0 means the default (1 KiB/s).
	MinTransferRate int64 `json:"minTransferRate,omitempty"`
}

// PackageConfig configures the package service.
type PackageConfig struct {
	// Port serves content.
	Port int `json:"port"`
	// HealthPort serves /healthz and /readyz.
	HealthPort int `json:"healthPort"`
	// StoragePath is the directory of the content store.
	StoragePath string `json:"storagePath"`
	// BandwidthLimit caps replication in bytes per second; 0 means no cap.
	BandwidthLimit int64 `json:"bandwidthLimit,omitempty"`
	// MaxConnections caps the open connections of the content API; 0 means
	// a default under the process's file limit.
	MaxConnections int `json:"maxConnections,omitempty"`
	// MinTransferRate is the slowest a request body or a response may move,
	// in bytes per second, before it is cut; 0 means the default (1 KiB/s).
	MinTransferRate int64 `json:"minTransferRate,omitempty"`
	// ScrubRate bounds how fast the store is re-hashed after a start, in
	// bytes per second, so the scrub leaves the disk to the agents; 0 means
	// the default (64 MiB/s).
	ScrubRate int64 `json:"scrubRate,omitempty"`
}

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
		{"package.scrubRate", c.Package.ScrubRate}} {
		if f.value < 0 {
			errs = append(errs, fmt.Errorf("%s must be 0 (the default) or positive, not %d", f.field, f.value))
		}
	}
	if c.Package.BandwidthLimit < 0 {
		errs = append(errs, fmt.Errorf("package.bandwidthLimit must be 0 (no cap) or positive, not %d", c.Package.BandwidthLimit))
	}
	return errors.Join(errs...)
}
