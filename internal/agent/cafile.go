package agent

import (
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// caFileCheckInterval bounds how often the CA bundle file is looked at: at
// a new connection's handshake, at most once per interval.
const caFileCheckInterval = time.Second

// caFile is the agent's CA bundle file (--ca-file), reread when it changes,
// so that a bundle an administrator or config management replaces (with
// the operator's next CA, within its propagation window) is trusted from
// the agent's next connection, without a restart. Connections already open
// keep the verification they were made with.
type caFile struct {
	path string
	// interval bounds how often the file is looked at; 0 looks at every
	// connection.
	interval time.Duration
	now      func() time.Time

	pool    atomic.Pointer[x509.CertPool]
	checked atomic.Int64 // unix nanoseconds of the last look

	mu    sync.Mutex // one reload at a time; guards stamp and err
	stamp caFileStamp
	err   error // why the file changed but was not loaded; nil once it was
}

// caFileStamp tells a changed file from the one loaded.
type caFileStamp struct {
	mod  time.Time
	size int64
	ino  uint64 // a file replaced by a rename
}

// openCAFile loads path at once, so that a missing or empty bundle fails
// the start with an error naming it.
func openCAFile(path string) (*caFile, error) {
	f := &caFile{path: path, interval: caFileCheckInterval, now: time.Now}
	stamp, err := f.look()
	if err == nil {
		err = f.load(stamp)
	}
	if err != nil {
		return nil, err
	}
	f.checked.Store(f.now().UnixNano())
	return f, nil
}

// roots are the CAs to trust now: the file is reread first when it changed
// since it was loaded (looked at at most once per interval). A file that
// does not load (missing, no certificate in it, a writer caught half-way)
// leaves the previous CAs in place and is tried again at the next look.
func (f *caFile) roots() *x509.CertPool {
	now := f.now().UnixNano()
	last := f.checked.Load()
	if now-last < int64(f.interval) || !f.checked.CompareAndSwap(last, now) {
		return f.pool.Load()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp, err := f.look()
	if err == nil && stamp == f.stamp {
		f.err = nil
		return f.pool.Load()
	}
	if err == nil {
		err = f.load(stamp)
	}
	f.err = err
	return f.pool.Load()
}

// loadError is why the file's last change was not loaded, nil when it was.
func (f *caFile) loadError() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

func (f *caFile) look() (caFileStamp, error) {
	info, err := os.Stat(f.path)
	if err != nil {
		return caFileStamp{}, fmt.Errorf("reading the CA bundle: %w", err)
	}
	return caFileStamp{mod: info.ModTime(), size: info.Size(), ino: inode(info)}, nil
}

// load reads the file, which stamp describes or precedes: a change while
// it is read is seen at the next look.
func (f *caFile) load(stamp caFileStamp) error {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("reading the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("reading the CA bundle %s: no PEM certificate in it", f.path)
	}
	f.pool.Store(pool)
	f.stamp = stamp
	return nil
}
