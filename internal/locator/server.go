package locator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// HTTPOptions say where and how the locator listens.
type HTTPOptions struct {
	// Addr is the address to listen on, such as ":9443".
	Addr string
	// TLSConfig, if set, serves HTTPS with it (its GetCertificate or
	// Certificates): the operator's own CA, when it keeps one.
	TLSConfig *tls.Config
	// CertDir, used when TLSConfig is nil, holds tls.crt and tls.key (a
	// mounted kubernetes.io/tls Secret); they are reloaded when they
	// change, without dropping connections. The server waits for them to
	// appear (an optional Secret volume fills in once the Secret exists).
	CertDir string
	// InsecureHTTP serves plain HTTP: for development only.
	InsecureHTTP bool
	// MaxConnections caps the connections held at once (default 10,000):
	// a process has 20,000 open files, and the manager needs some for
	// itself. Beyond it, new connections wait in the listen backlog.
	MaxConnections int
}

// HTTPServer serves a Locator. It is a manager.Runnable that runs on every
// replica, leader or not.
type HTTPServer struct {
	handler http.Handler
	opts    HTTPOptions

	mu   sync.Mutex
	addr net.Addr
	tls  *tls.Config // as served; nil for plain HTTP
}

var (
	_ manager.Runnable               = (*HTTPServer)(nil)
	_ manager.LeaderElectionRunnable = (*HTTPServer)(nil)
)

// NewHTTPServer returns an HTTPServer for h, the Locator's Handler. It
// checks the options now, so that a manager refuses to start with a locator
// that cannot serve.
func NewHTTPServer(h http.Handler, opts HTTPOptions) (*HTTPServer, error) {
	if opts.TLSConfig == nil && opts.CertDir == "" && !opts.InsecureHTTP {
		return nil, errors.New("the locator needs a certificate: a TLS configuration, a certificate directory, or plain HTTP for development")
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 10_000
	}
	return &HTTPServer{handler: h, opts: opts}, nil
}

// NeedLeaderElection is false: every replica answers agents.
func (s *HTTPServer) NeedLeaderElection() bool { return false }

// Addr is the address the server listens on, nil before Start listens.
func (s *HTTPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// ReadyCheck is a readiness check (manager.AddReadyzCheck) that passes
// once the server listens and, for HTTPS, has a certificate to present, so
// that a Service sends agents only to replicas that can answer them.
func (s *HTTPServer) ReadyCheck(_ *http.Request) error {
	s.mu.Lock()
	addr, cfg := s.addr, s.tls
	s.mu.Unlock()
	if addr == nil {
		return errors.New("the locator is not listening yet")
	}
	if cfg == nil || len(cfg.Certificates) > 0 {
		return nil
	}
	if cfg.GetCertificate == nil {
		return errors.New("the locator has no certificate")
	}
	cert, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		return fmt.Errorf("the locator has no certificate yet: %w", err)
	}
	if cert == nil {
		return errors.New("the locator has no certificate yet")
	}
	return nil
}

// Start listens and serves until ctx ends, then shuts down gracefully.
func (s *HTTPServer) Start(ctx context.Context) error {
	log := logf.FromContext(ctx).WithName("locator")
	srv := newStdServer(s.handler)
	if !s.opts.InsecureHTTP {
		cfg := s.opts.TLSConfig
		if cfg == nil {
			certFile, keyFile := filepath.Join(s.opts.CertDir, "tls.crt"), filepath.Join(s.opts.CertDir, "tls.key")
			if err := waitForFiles(ctx, log, certFile, keyFile); err != nil {
				return nil
			}
			watcher, err := certwatcher.New(certFile, keyFile)
			if err != nil {
				return fmt.Errorf("loading the locator's certificate from %s: %w", s.opts.CertDir, err)
			}
			go func() {
				if err := watcher.Start(ctx); err != nil {
					log.Error(err, "Watching the locator's certificate")
				}
			}()
			cfg = &tls.Config{GetCertificate: watcher.GetCertificate}
		}
		cfg = cfg.Clone()
		if cfg.MinVersion < tls.VersionTLS12 {
			cfg.MinVersion = tls.VersionTLS12
		}
		srv.TLSConfig = cfg
	}
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s for the locator: %w", s.opts.Addr, err)
	}
	s.mu.Lock()
	s.addr = ln.Addr()
	s.tls = srv.TLSConfig
	s.mu.Unlock()
	ln = LimitListener(ln, s.opts.MaxConnections)
	log.Info("Serving the locator", "address", ln.Addr().String(), "https", !s.opts.InsecureHTTP)

	errc := make(chan error, 1)
	go func() {
		if s.opts.InsecureHTTP {
			errc <- srv.Serve(ln)
		} else {
			errc <- srv.ServeTLS(ln, "", "")
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serving the locator: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutting the locator down: %w", err)
	}
	return nil
}

// waitForFiles returns once every file exists, or ctx's error when it
// ends first. A Secret volume marked optional is empty until the Secret
// exists, and the kubelet fills it in later: the locator starts serving
// then, without a restart of the manager.
func waitForFiles(ctx context.Context, log logr.Logger, files ...string) error {
	logged := false
	for {
		missing := ""
		for _, f := range files {
			if _, err := os.Stat(f); err != nil {
				missing = f
				break
			}
		}
		if missing == "" {
			return nil
		}
		if !logged {
			log.Info("Waiting for the locator's certificate", "file", missing)
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Second):
		}
	}
}

// newStdServer bounds what one client can hold: slow headers and bodies
// time out, and idle keep-alive connections close after 15 seconds, since
// an agent locates once and then rarely, and the connection cap must not
// fill with idle connections.
func newStdServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       15 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
}

// LimitListener returns a listener that holds at most n accepted
// connections open at once; Accept waits for one to close beyond that.
func LimitListener(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem       chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
