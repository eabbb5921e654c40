package certs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCheckInterval is how often a FileCertificate looks at its files.
const DefaultCheckInterval = time.Second

// ServerConfig is the TLS configuration of an agent-facing server whose
// certificate comes from get: TLS 1.2 at least, HTTP/1.1 (the site
// services' limits are per connection).
func ServerConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		NextProtos:     []string{"http/1.1"},
	}
}

// FileCertificate serves the certificate and key of two PEM files and
// reloads them when they change; see the package doc.
type FileCertificate struct {
	certFile, keyFile string
	// Interval bounds how often the files are looked at; 0 means
	// DefaultCheckInterval.
	Interval time.Duration
	// OnReload, when set, is told of each reload attempt: nil for a new
	// pair served, the error for a pair that does not load (the previous
	// one is still served).
	OnReload func(error)

	current atomic.Pointer[tls.Certificate]
	checked atomic.Int64 // unix nanoseconds of the last look

	mu    sync.Mutex // one reload at a time
	stamp [2]fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

// LoadFiles loads the pair at once, so that a missing or broken one fails
// the start with an error naming the file.
func LoadFiles(certFile, keyFile string) (*FileCertificate, error) {
	f := &FileCertificate{certFile: certFile, keyFile: keyFile}
	stamps, err := f.stamps()
	if err != nil {
		return nil, err
	}
	if err := f.load(stamps); err != nil {
		return nil, err
	}
	f.checked.Store(time.Now().UnixNano())
	return f, nil
}

// GetCertificate is for tls.Config.GetCertificate.
func (f *FileCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.maybeReload(time.Now())
	return f.current.Load(), nil
}

// Certificate is the pair served now.
func (f *FileCertificate) Certificate() *tls.Certificate { return f.current.Load() }

func (f *FileCertificate) maybeReload(now time.Time) {
	interval := f.Interval
	if interval <= 0 {
		interval = DefaultCheckInterval
	}
	last := f.checked.Load()
	if now.UnixNano()-last < int64(interval) || !f.checked.CompareAndSwap(last, now.UnixNano()) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	stamps, err := f.stamps()
	if err == nil && stamps == f.stamp {
		return
	}
	if err == nil {
		err = f.load(stamps)
	}
	if f.OnReload != nil {
		f.OnReload(err)
	}
}

func (f *FileCertificate) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, path := range []string{f.certFile, f.keyFile} {
		info, err := os.Stat(path) // follows the kubelet's ..data symlinks
		if err != nil {
			return out, fmt.Errorf("reading the TLS files: %w", err)
		}
		out[i] = fileStamp{mod: info.ModTime(), size: info.Size(), ino: inode(info)}
	}
	return out, nil
}

func (f *FileCertificate) load(stamps [2]fileStamp) error {
	pair, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return fmt.Errorf("loading the TLS certificate %s and key %s: %w", f.certFile, f.keyFile, err)
	}
	f.current.Store(&pair)
	f.stamp = stamps
	return nil
}

// Current is a certificate that its owner replaces in memory; handshakes
// get the latest one.
type Current struct {
	pair atomic.Pointer[tls.Certificate]
	pem  atomic.Pointer[[2][]byte]
}

// Set replaces the certificate by certPEM and keyPEM, unless they do not
// form a pair. Setting the same PEM again is a no-op.
func (c *Current) Set(certPEM, keyPEM []byte) error {
	if old := c.pem.Load(); old != nil && string(old[0]) == string(certPEM) && string(old[1]) == string(keyPEM) {
		return nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("loading a TLS key pair: %w", err)
	}
	c.pair.Store(&pair)
	c.pem.Store(&[2][]byte{certPEM, keyPEM})
	return nil
}

// ErrNoCertificate is returned by Current.GetCertificate before the first
// Set: the handshake fails and the client retries.
var ErrNoCertificate = errors.New("no serving certificate yet")

// GetCertificate is for tls.Config.GetCertificate.
func (c *Current) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	pair := c.pair.Load()
	if pair == nil {
		return nil, ErrNoCertificate
	}
	return pair, nil
}
