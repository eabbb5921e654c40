// Package task is the task service of a SiteServer: agents of its
// sites check in there and receive work. It serves GET /v1/info on the
// task port and the probes on the health port; the agent API (register,
// work, status) is added on the same port.
package task

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// Options are what a Server needs besides its configuration.
type Options = host.ServiceOptions

// Server is one task service. It is ready once it serves: its
// configuration was loaded and validated by New, and its listener is up.
type Server struct {
	cfg  config.Config
	host *host.Host
}

// New returns the task service configured by cfg.
func New(cfg config.Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("task service configuration: %w", err)
	}
	s := &Server{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/info", host.InfoHandler(host.Info{
		Service: "task", SiteServer: cfg.SiteServer, Sites: cfg.Sites, Version: opts.Version,
	}))
	s.host = &host.Host{Name: "task-service", Handler: mux, Logger: opts.Logger,
		MaxConnections: cfg.Task.MaxConnections, Limits: host.Limits{MinRate: cfg.Task.MinTransferRate}}
	return s, nil
}

// Command is the task-service binary, for host.Run.
func Command(version string) host.Command {
	return host.Command{
		Name:    "task-service",
		Version: version,
		Section: func(c *config.Config) host.Section {
			return host.Section{Name: "task", Port: &c.Task.Port, HealthPort: &c.Task.HealthPort,
				MaxConnections: &c.Task.MaxConnections, MinTransferRate: &c.Task.MinTransferRate}
		},
		New: func(cfg config.Config, version string, log *slog.Logger) (host.Service, error) {
			return New(cfg, Options{Version: version, Logger: log})
		},
	}
}

// ListenAndServe serves on the configured ports of every interface until
// ctx is done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	return s.host.ListenAndServe(ctx, host.PortAddr(s.cfg.Task.Port), host.PortAddr(s.cfg.Task.HealthPort))
}

// Serve serves the API on api and the probes on health until ctx is done,
// then shuts down gracefully. It closes both listeners.
func (s *Server) Serve(ctx context.Context, api, health net.Listener) error {
	return s.host.Serve(ctx, api, health)
}
