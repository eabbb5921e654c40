// Package content is the package service of a SiteServer: the
// site's content store, addressed by digest, served to the site's agents
// over HTTP with ranges. It serves GET /v1/info and
// GET /v1/content/{digest} on the package port and the probes on the
// health port.
//
// Content is what its digest says, or it is not served. The store is a
// directory (the pod's volume):
//
//	sha256/<hex>             the content of sha256:<hex>
//	meta/sha256/<hex>.json   its size, verified when it came in
//	tmp/                     ingests in progress, cleared at start
//	partial/<hex>            transfers in progress (Store.Resume), kept
//	                         across restarts to resume from
//	uploads/<id>/            capture uploads in progress (upload.go): data
//	                         and upload.json, kept across restarts
//	quarantine/              files withdrawn from serving, for a look
//
// Content enters three ways, each ending in the same verified install:
// [Store.Ingest] writes a temporary file in tmp/ and hashes it while
// writing; [Store.Resume], for replication, continues a transfer in
// partial/ and hashes the whole; a capture upload's PUT adopts the data
// file of uploads/<id>/, hashed as its chunks came in (upload.go). Each
// checks the digest and the size first; the install then syncs the file,
// renames it into sha256/ and records its size in meta/. Serving reads an
// index, not the directory: a file that appears there by another way is
// not served (after a restart it is one without a recorded size, below).
// It opens only regular files (Lstat, then open with
// O_NOFOLLOW|O_NONBLOCK, then fstat: no symbolic links, FIFOs or devices)
// whose size is the one verified, so a truncated, emptied or replaced file
// is never served: it is moved to quarantine/ and the request answered 500
// with what was wrong (404 afterwards), never with its bytes.
//
// Start-up is bounded in time whatever the size of the store: the scan
// costs one stat per file and checks each size against the one recorded at
// ingest, after which the service is ready and serves that content. The
// full re-hash (the scrub) runs in the background, paced at
// package.scrubRate (64 MiB/s by default, leaving the disk to the agents;
// a terabyte takes about four and a half hours), and quarantines what does
// not match. A same-size corruption is therefore served until the scrub
// reaches it; agents verify the digest of what they download, so it costs
// a retry, not a bad image. Files without a recorded size (put there
// before this store, or by a crash between the rename and the metadata)
// are hashed first and answered 503 with Retry-After until then.
//
// Readiness asks that the store's directory exist and be writable; it
// creates a file at most every 30 seconds, names no path to the client
// (the log does), and rescans the store when its directory is a new one.
package content

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// Options are what a Server needs besides its configuration.
type Options struct {
	// Version is reported by /v1/info.
	Version string
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
	// RestConfig reaches the API server for replication and capture
	// uploads; nil serves the store only.
	RestConfig *rest.Config
	// UploadIdleTimeout is how long a capture upload lives without a
	// request; 0 means protocol.UploadIdleTimeoutSeconds.
	UploadIdleTimeout time.Duration
}

// Server is one package service.
type Server struct {
	cfg   config.Config
	store *Store
	log   *slog.Logger
	host  *host.Host
	// replicator fills the store; nil without API access.
	replicator *replicator
	// uploads are the capture uploads (upload.go).
	uploads *uploads
}

// New returns the package service configured by cfg. It does not create
// the store: a missing volume must show as a pod that is not ready, not
// as content written to the container's own file system.
func New(cfg config.Config, opts Options) (*Server, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("service", "package-service")
	s := &Server{cfg: cfg, log: log,
		store: NewStore(cfg.Package.StoragePath, StoreOptions{ScrubRate: cfg.Package.ScrubRate, Logger: log})}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/info", host.InfoHandler(host.Info{
		Service: "package", SiteServer: cfg.SiteServer, Sites: cfg.Sites, Version: opts.Version,
	}))
	mux.HandleFunc("GET /v1/content/{digest}", s.serveContent)
	uploads, err := newUploads(s.store, cfg.SiteServer, opts.RestConfig, opts.UploadIdleTimeout, log)
	if err != nil {
		return nil, fmt.Errorf("package service capture uploads: %w", err)
	}
	s.uploads = uploads
	uploads.register(mux) // POST /v1/uploads; PATCH, GET, PUT, DELETE /v1/uploads/{id}
	if opts.RestConfig != nil {
		caFile := ""
		if !cfg.TLS.Disabled {
			caFile = config.DefaultTLSDir + "/ca.crt"
		}
		r, err := newReplicator(opts.RestConfig, cfg.SiteServer, s.store, caFile, cfg.Package.Replication,
			cfg.Package.BandwidthLimit, log)
		if err != nil {
			return nil, fmt.Errorf("package service replication: %w", err)
		}
		s.replicator = r
	} else {
		log.Warn("Replicating nothing: no Kubernetes API configuration (--no-replication)")
	}
	s.host = &host.Host{Name: "package-service", Handler: mux, Ready: s.store.Ready, Logger: opts.Logger,
		MaxConnections: cfg.Package.MaxConnections, Limits: host.Limits{MinRate: cfg.Package.MinTransferRate}}
	s.instrument() // GET /metrics on the health port (metrics.go)
	return s, nil
}

// validate checks what the package service needs of its configuration.
func validate(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("package service configuration: %w", err)
	}
	if cfg.Package.StoragePath == "" {
		return errors.New("package service configuration: package.storagePath must be set")
	}
	return nil
}

// Command is the package-service binary, for host.Run.
func Command(version string) host.Command {
	return host.Command{
		Name:    "package-service",
		Version: version,
		// A download holds its connection and the file it sends.
		FilesPerConnection: 2,
		Section: func(c *config.Config) host.Section {
			return host.Section{Name: "package", Port: &c.Package.Port, HealthPort: &c.Package.HealthPort,
				MaxConnections: &c.Package.MaxConnections, MinTransferRate: &c.Package.MinTransferRate}
		},
		Flags: func(fs *flag.FlagSet) map[string]func(*config.Config) {
			storage := fs.String("storage-path", "", "Directory of the content store; overrides package.storagePath of the configuration file.")
			kubeconfig := fs.String("kubeconfig", "", "Path of a kubeconfig file to reach the API server with; overrides kubeconfig of the configuration file. Default: $KUBECONFIG, else the pod's ServiceAccount.")
			noReplication := fs.Bool("no-replication", false, "Serve the store only and reach no API server: for tests of the binary.")
			return map[string]func(*config.Config){
				"storage-path":   func(c *config.Config) { c.Package.StoragePath = *storage },
				"kubeconfig":     func(c *config.Config) { c.Kubeconfig = *kubeconfig },
				"no-replication": func(c *config.Config) { c.Package.Replication.Disabled = *noReplication },
			}
		},
		New: func(cfg config.Config, version string, log *slog.Logger) (host.Service, error) {
			if err := validate(cfg); err != nil {
				return nil, err // before the API configuration, whose error would hide it
			}
			opts := Options{Version: version, Logger: log}
			if !cfg.Package.Replication.Disabled {
				rc, err := host.RestConfig(cfg.Kubeconfig, "--no-replication to serve the store only")
				if err != nil {
					return nil, err
				}
				opts.RestConfig = rc
			}
			return New(cfg, opts)
		},
	}
}

// Store is the service's content store, for what fills it.
func (s *Server) Store() *Store { return s.store }

// ListenAndServe serves on the configured ports of every interface until
// ctx is done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	return s.run(ctx, func(ctx context.Context) error {
		return s.host.ListenAndServe(ctx, host.PortAddr(s.cfg.Package.Port), host.PortAddr(s.cfg.Package.HealthPort))
	})
}

// Serve serves the API on api and the probes on health until ctx is done,
// then shuts down gracefully. It closes both listeners.
func (s *Server) Serve(ctx context.Context, api, health net.Listener) error {
	return s.run(ctx, func(ctx context.Context) error { return s.host.Serve(ctx, api, health) })
}

// run scans the store, serves, and stops the scrub when serving stops.
func (s *Server) run(ctx context.Context, serve func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		s.store.Wait()
		s.uploads.wait()
	}()
	s.store.Start(ctx)
	s.uploads.start(ctx)
	if s.replicator == nil {
		return serve(ctx)
	}
	replicated := make(chan error, 1)
	go func() {
		err := s.replicator.run(ctx)
		if ctx.Err() != nil {
			// The service stops: whatever the replication was doing (its
			// cache still syncing, a transfer) ends with it, no failure.
			err = nil
		}
		if err != nil {
			s.log.Error("Replication stopped: the store is served, nothing new comes in", "error", err)
		}
		replicated <- err
	}()
	err := serve(ctx)
	cancel()
	return errors.Join(err, <-replicated)
}

// serveContent serves GET /v1/content/{digest} with ranges, conditional
// requests and HEAD, from the checked file only.
func (s *Server) serveContent(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	if _, err := parseDigest(digest); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f, err := s.store.Open(digest)
	switch {
	case errors.Is(err, errNotFound):
		http.Error(w, "no content "+digest+" at this site", http.StatusNotFound)
		return
	case errors.Is(err, errVerifying):
		w.Header().Set("Retry-After", strconv.Itoa(retryVerified))
		http.Error(w, "content "+digest+" is being verified at this site: retry later", http.StatusServiceUnavailable)
		return
	case errors.Is(err, errDamaged):
		http.Error(w, "content "+digest+" failed its check at this site and was withdrawn: it is not served until it is stored again",
			http.StatusInternalServerError)
		return
	case err != nil:
		s.log.Error("Opening content", "digest", digest, "error", err)
		http.Error(w, "content "+digest+" cannot be read at this site", http.StatusInternalServerError)
		return
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		s.log.Error("Reading content", "digest", digest, "error", err)
		http.Error(w, "content "+digest+" cannot be read at this site", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("ETag", strconv.Quote(digest))
	h.Set("Cache-Control", "public, max-age=31536000, immutable") // content never changes under its digest
	http.ServeContent(w, r, "", info.ModTime(), f)
}

// ContentPath returns where the content of digest lives under the store
// storagePath, or an error when digest is not sha256:<64 lower-case hex
// digits>.
func ContentPath(storagePath, digest string) (string, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(storagePath, contentDir, h), nil
}
