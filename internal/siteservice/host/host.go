// Package host is the HTTP plumbing that the task service and the
// package service share: an API server and a health server with /healthz
// and /readyz, server timeouts, graceful shutdown, structured logging with
// log/slog, and [Run], the whole of a service binary (flags, configuration,
// signals).
//
// A slow or hostile client cannot hold the API server: every request is
// held to [Limits] (a bounded body, a minimum transfer rate measured over a
// window and renewed as bytes move, an idle timeout that long polls raise
// with [WithLimits]), and the open connections are capped (MaxConnections,
// by default under the process's file limit): beyond the cap an idle
// keep-alive connection is closed to make room, or else the new client is
// answered 503 with Retry-After and the connection closed.
//
// The API serves HTTPS when the Host has a TLS configuration (or Run puts
// one in its context, [WithServing]): [Run] loads the certificate and key
// files of the mounted Secret with certs.LoadFiles, which picks up a renewed
// pair at the next handshake, without a restart; connections already open
// keep theirs. Plain HTTP only with --insecure-http (tls.disabled). The
// probes are plain HTTP on the health port either way, as the kubelet
// probes them.
//
// When the API serves HTTPS on a listen host that is an IP address (a
// pod's own, --listen-host=$(POD_IP)), the Host is not ready until the
// certificate it serves names that address: the operator re-issues the
// certificate with a new pod's address once the pod has one, the kubelet
// refreshes the mounted Secret up to a minute later, and a ready pod is
// advertised by its address, which agents verify against the certificate.
//
// It links neither controller-runtime nor client-go, so that the agent may
// import it.
package host

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultShutdownTimeout is how long a Host waits for requests in flight
// when it stops: under the 30 seconds Kubernetes gives a pod by default.
const DefaultShutdownTimeout = 25 * time.Second

// ReadyFunc reports nil when a service can take traffic, or why it cannot.
type ReadyFunc func(ctx context.Context) error

// HealthHandler serves the probes: GET /healthz answers 200 while the
// process runs, GET /readyz answers 200 when ready returns nil and 503 with
// the reason in the body otherwise. A nil ready is always ready.
func HealthHandler(ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeText(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if ready != nil {
			if err := ready(r.Context()); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		writeText(w, "ok\n")
	})
	return mux
}

func writeText(w http.ResponseWriter, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, s)
}

// Host runs one service: its API on one listener and the probes of
// [HealthHandler] on another. A Host serves once.
type Host struct {
	// Name names the service in logs, e.g. "task-service".
	Name string
	// Handler serves the API.
	Handler http.Handler
	// Ready reports whether the service can take traffic beyond its API
	// listener being up and its certificate naming its listen address,
	// which the Host checks itself; nil adds nothing.
	Ready ReadyFunc
	// Logger receives the Host's logs; nil means slog.Default().
	Logger *slog.Logger
	// ShutdownTimeout bounds the wait for requests in flight when the Host
	// stops; 0 means DefaultShutdownTimeout. Connections still open after
	// it are closed.
	ShutdownTimeout time.Duration
	// Limits bound each API request; zero fields take the defaults
	// (DefaultMaxBodyBytes, DefaultMinRate, DefaultRateWindow,
	// DefaultIdleTimeout). Routes override them with WithLimits.
	Limits Limits
	// MaxConnections caps the open API connections; 0 means
	// DefaultMaxConnections().
	MaxConnections int
	// Metrics, when set, serves GET /metrics on the health port, beside the
	// probes (Prometheus scrapes it there).
	Metrics http.Handler
	// TLS serves the API over HTTPS with this configuration (see
	// certs.ServerConfig); nil takes the one of the context's Serving, and
	// without one the API is plain HTTP. The probes are plain HTTP always.
	TLS *tls.Config

	state  atomic.Int32                // one of the host* constants
	capped atomic.Pointer[capListener] // the API listener, once serving
	// certIP, set by Serve, is the address the served certificate must
	// name for the Host to be ready (certificateIP), with the TLS
	// configuration that serves it; "" checks nothing.
	certIP  string
	certTLS *tls.Config

	mu        sync.Mutex
	lastReady *string // the last readiness reported, to log its changes
}

// Connections returns the API connections that are not idle between
// requests (in a request, held or hijacked) and the cap on open
// connections; 0, 0 before the Host serves. An idle keep-alive connection
// is not counted: the cap closes one to make room for a new client.
func (h *Host) Connections() (busy, limit int) {
	l := h.capped.Load()
	if l == nil {
		return 0, 0
	}
	return l.busy(), l.max
}

// States of a Host, as readiness sees them.
const (
	hostStarting int32 = iota
	hostServing
	hostStopping
)

// Serving is what Run decides for the service it builds, and passes to its
// Host through the context of ListenAndServe and Serve: the address to bind
// and the TLS configuration of the API.
type Serving struct {
	// ListenHost replaces the host part of the listen addresses when set
	// (a pod binds its own IP).
	ListenHost string
	// TLS serves the API over HTTPS; nil is plain HTTP.
	TLS *tls.Config
}

type servingKey struct{}

// WithServing returns ctx carrying s for the Host that serves with it.
func WithServing(ctx context.Context, s Serving) context.Context {
	return context.WithValue(ctx, servingKey{}, s)
}

func servingOf(ctx context.Context) Serving {
	s, _ := ctx.Value(servingKey{}).(Serving)
	return s
}

// onHost replaces the host of addr (host:port) by host, when set.
func onHost(addr, host string) string {
	if host == "" {
		return addr
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // net.Listen reports it
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), port)
}

// ListenAndServe listens on addr for the API and on healthAddr for the
// probes (host:port, as net.Listen takes them; the context's
// Serving.ListenHost replaces their host), then calls Serve.
func (h *Host) ListenAndServe(ctx context.Context, addr, healthAddr string) error {
	listenHost := servingOf(ctx).ListenHost
	addr, healthAddr = onHost(addr, listenHost), onHost(healthAddr, listenHost)
	var lc net.ListenConfig
	api, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening for the %s API: %w", h.Name, err)
	}
	health, err := lc.Listen(ctx, "tcp", healthAddr)
	if err != nil {
		_ = api.Close()
		return fmt.Errorf("listening for the %s health probes: %w", h.Name, err)
	}
	return h.Serve(ctx, api, health)
}

// Serve serves the API on api and the probes on health until ctx is done
// or a server fails, then shuts down: /readyz turns 503, requests in
// flight finish (within ShutdownTimeout), and the probes stop last. It
// closes both listeners. It returns nil after a shutdown asked for by ctx.
func (h *Host) Serve(ctx context.Context, api, health net.Listener) error {
	log := h.logger()
	maxConns := h.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections()
	}
	tlsConfig := h.TLS
	if tlsConfig == nil {
		tlsConfig = servingOf(ctx).TLS
	}
	capped := newCapListener(api, maxConns, log)
	capped.tls = tlsConfig
	h.capped.Store(capped)
	api = capped
	scheme := "http"
	if tlsConfig != nil {
		api = tls.NewListener(capped, tlsConfig)
		scheme = "https"
	}
	h.certIP, h.certTLS = certificateIP(tlsConfig, servingOf(ctx).ListenHost), tlsConfig
	gb := newGivebackListener(api)
	api = gb
	apiServer := newAPIServer(guard(h.Limits.or(defaultLimits), h.Handler), log)
	apiServer.ConnState = capped.connState
	apiServer.BaseContext = func(net.Listener) context.Context {
		return context.WithValue(context.Background(), givebackKey{}, gb)
	}
	healthHandler := HealthHandler(h.ready)
	if h.Metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", h.Metrics)
		mux.Handle("/", healthHandler)
		healthHandler = mux
	}
	healthServer := newHealthServer(healthHandler, log)

	errs := make(chan error, 2)
	go func() { errs <- serve(apiServer, api, "API") }()
	go func() { errs <- serve(healthServer, health, "health probes") }()
	h.state.Store(hostServing)
	log.Info("Serving", "address", api.Addr().String(), "scheme", scheme, "healthAddress", health.Addr().String(),
		"maxConnections", maxConns)

	var err error
	select {
	case <-ctx.Done():
		log.Info("Shutting down")
	case err = <-errs:
		log.Error("Shutting down after a server failed", "error", err)
	}
	h.state.Store(hostStopping)

	timeout := h.ShutdownTimeout
	if timeout <= 0 {
		timeout = DefaultShutdownTimeout
	}
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	for _, s := range []struct {
		what   string
		server *http.Server
	}{{"API", apiServer}, {"health probes", healthServer}} {
		if serr := s.server.Shutdown(stopCtx); serr != nil {
			log.Warn("Closing the connections still open at the shutdown timeout", "server", s.what, "error", serr)
			_ = s.server.Close()
		}
	}
	log.Info("Stopped")
	return err
}

// serve runs server on ln until it is shut down.
func serve(server *http.Server, ln net.Listener, what string) error {
	if err := server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving the %s on %s: %w", what, ln.Addr(), err)
	}
	return nil
}

// ready is the Host's readiness: its API listener is up, it is not
// stopping, its certificate names its listen address (certificateIP), and
// h.Ready agrees. Changes are logged.
func (h *Host) ready(ctx context.Context) error {
	var err error
	switch h.state.Load() {
	case hostStarting:
		err = errors.New("not serving yet")
	case hostStopping:
		err = errors.New("shutting down")
	default:
		if h.certIP != "" {
			err = certificateNames(h.certTLS, h.certIP)
		}
		if err == nil && h.Ready != nil {
			err = h.Ready(ctx)
		}
	}
	h.noteReadiness(err)
	return err
}

// certificateIP is the address that the certificate of tlsConfig must name
// before the Host is ready: the listen host when the API serves HTTPS and
// the listen host is an IP address, the one the pod is advertised by; ""
// for plain HTTP, a host name or every interface.
func certificateIP(tlsConfig *tls.Config, listenHost string) string {
	ip := net.ParseIP(strings.Trim(listenHost, "[]"))
	if tlsConfig == nil || ip == nil || ip.IsUnspecified() {
		return ""
	}
	return ip.String()
}

// certificateNames reports nil when the certificate that tlsConfig serves
// now (reloaded first if its files changed) names ip, as a client that
// dials ip verifies it.
func certificateNames(tlsConfig *tls.Config, ip string) error {
	var cert *tls.Certificate
	var err error
	switch {
	case tlsConfig.GetCertificate != nil:
		cert, err = tlsConfig.GetCertificate(&tls.ClientHelloInfo{})
	case len(tlsConfig.Certificates) > 0:
		cert = &tlsConfig.Certificates[0]
	}
	if err != nil {
		return fmt.Errorf("no serving certificate: %w", err)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return errors.New("no serving certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("the serving certificate does not parse: %w", err)
		}
	}
	if leaf.VerifyHostname(ip) != nil {
		return fmt.Errorf("the serving certificate does not name %s yet", ip)
	}
	return nil
}

func (h *Host) noteReadiness(err error) {
	reason := ""
	if err != nil {
		reason = err.Error()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.lastReady != nil && *h.lastReady == reason {
		return
	}
	h.lastReady = &reason
	if err != nil {
		h.logger().Warn("Not ready", "reason", reason)
	} else {
		h.logger().Info("Ready")
	}
}

func (h *Host) logger() *slog.Logger {
	log := h.Logger
	if log == nil {
		log = slog.Default()
	}
	if h.Name != "" {
		log = log.With("service", h.Name)
	}
	return log
}

// newAPIServer returns the server of a service's API. It has no read or
// write timeout: agents hold long polls and download multi-gigabyte
// images, so each request is held to its Limits instead (see guard). Slow
// or idle clients are still cut off.
func newAPIServer(handler http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// newHealthServer returns the server of the probes, whose requests and
// answers are small.
func newHealthServer(handler http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// PortAddr is the listen address of port on every interface.
func PortAddr(port int) string { return ":" + strconv.Itoa(port) }
