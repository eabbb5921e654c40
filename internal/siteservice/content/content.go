// Package content is the package service of a SiteServer: the
// site's content store, addressed by digest, served to the site's agents
// over HTTP with ranges. It serves GET /v1/info and
// GET /v1/content/{digest} on the package port and the probes on the
// health port.
//
// The store is a directory (the pod's volume) that holds each piece of
// content at sha256/<hex> under it. Only content verified against its
// digest is written there, by whoever fills the store, so serving does
// not hash multi-gigabyte files on every request.
package content

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// Options are what a Server needs besides its configuration.
type Options struct {
	// Version is reported by /v1/info.
	Version string
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Server is one package service.
type Server struct {
	cfg     config.Config
	storage string
	log     *slog.Logger
	host    *host.Host
}

// New returns the package service configured by cfg. It does not create
// the store: a missing volume must show as a pod that is not ready, not
// as content written to the container's own file system.
func New(cfg config.Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("package service configuration: %w", err)
	}
	if cfg.Package.StoragePath == "" {
		return nil, errors.New("package service configuration: package.storagePath must be set")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, storage: cfg.Package.StoragePath, log: log.With("service", "package-service")}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/info", host.InfoHandler(host.Info{
		Service: "package", SiteServer: cfg.SiteServer, Sites: cfg.Sites, Version: opts.Version,
	}))
	mux.HandleFunc("GET /v1/content/{digest}", s.serveContent)
	s.host = &host.Host{Name: "package-service", Handler: mux, Ready: s.Ready, Logger: log}
	return s, nil
}

// ListenAndServe serves on the configured ports of every interface until
// ctx is done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	return s.host.ListenAndServe(ctx, host.PortAddr(s.cfg.Package.Port), host.PortAddr(s.cfg.Package.HealthPort))
}

// Serve serves the API on api and the probes on health until ctx is done,
// then shuts down gracefully. It closes both listeners.
func (s *Server) Serve(ctx context.Context, api, health net.Listener) error {
	return s.host.Serve(ctx, api, health)
}

// Ready reports whether the store exists and is writable, by creating and
// removing a file in it. The Server's /readyz reports it.
func (s *Server) Ready(context.Context) error {
	f, err := os.CreateTemp(s.storage, ".readyz-*")
	if err != nil {
		return fmt.Errorf("content store %s is not writable: %w", s.storage, err)
	}
	if err := errors.Join(f.Close(), os.Remove(f.Name())); err != nil {
		return fmt.Errorf("content store %s: removing the readiness check's file: %w", s.storage, err)
	}
	return nil
}

// serveContent serves GET /v1/content/{digest} with ranges, conditional
// requests and HEAD.
func (s *Server) serveContent(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	rel, err := contentPath(digest)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// os.Root keeps the open inside the store, symbolic links included.
	f, err := os.OpenInRoot(s.storage, rel)
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, "no content "+digest+" at this site", http.StatusNotFound)
		return
	}
	if err != nil {
		s.log.Error("Opening content", "digest", digest, "error", err)
		http.Error(w, "content "+digest+" cannot be read", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		s.log.Error("Reading content", "digest", digest, "error", err)
		http.Error(w, "content "+digest+" cannot be read", http.StatusInternalServerError)
		return
	}
	if !info.Mode().IsRegular() {
		http.Error(w, "no content "+digest+" at this site", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", strconv.Quote(digest))
	h.Set("Cache-Control", "public, max-age=31536000, immutable") // content never changes under its digest
	http.ServeContent(w, r, "", info.ModTime(), f)
}

// digestPattern is the only digest form accepted: SHA-256 in lower-case
// hexadecimal, as Package.spec.digest holds it.
var digestPattern = regexp.MustCompile(`^sha256:([0-9a-f]{64})$`)

// ContentPath returns where the content of digest lives under the store
// storagePath, or an error when digest is not sha256:<64 lower-case hex
// digits>.
func ContentPath(storagePath, digest string) (string, error) {
	rel, err := contentPath(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(storagePath, rel), nil
}

// contentPath returns where the content of digest lives, relative to the
// store.
func contentPath(digest string) (string, error) {
	m := digestPattern.FindStringSubmatch(digest)
	if m == nil {
		return "", fmt.Errorf("invalid digest %q: want sha256: and 64 lower-case hexadecimal digits", digest)
	}
	return filepath.Join("sha256", m[1]), nil
}
