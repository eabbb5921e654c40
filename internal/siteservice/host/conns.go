package host

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// maxConnectionsCeiling bounds the default cap whatever the file limit:
	// each connection costs memory too.
	maxConnectionsCeiling = 16384
	// fdReserve is what the default cap leaves of the file limit for the
	// process's own files: listeners, logs, the store's directory.
	fdReserve = 64
	// maxRejecting bounds the connections being told to come back later at
	// once; beyond it, a connection over the cap is closed at once.
	maxRejecting = 64
	// rejectTimeout bounds the time spent on a connection over the cap.
	rejectTimeout = 2 * time.Second
)

// DefaultMaxConnections is the cap on open API connections when none is
// configured: half the file descriptors the process may open (its
// RLIMIT_NOFILE soft limit, which Go raises to the hard limit at start),
// less a reserve, since a download holds a connection and a file; at most
// 16384 and at least 1.
func DefaultMaxConnections() int {
	nofile, ok := fileLimit()
	if !ok {
		return 1024 / 2
	}
	return connectionsFor(nofile)
}

// fileLimit is the process's RLIMIT_NOFILE soft limit; false when it cannot
// be read.
func fileLimit() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, false
	}
	return rl.Cur, true
}

// connectionsFor is the default cap under a file limit of nofile.
func connectionsFor(nofile uint64) int {
	return min(connectionsAllowed(nofile, 2), maxConnectionsCeiling)
}

// connectionsAllowed is the most connections a file limit of nofile lets
// the process hold when each may hold filesPerConn descriptors (its socket,
// and for a download the file it sends), fdReserve left for its own files
// and its connections to the Kubernetes API; at least 1. Beyond it, accept
// and the opening of files fail (EMFILE) before the cap turns clients away.
func connectionsAllowed(nofile uint64, filesPerConn int) int {
	per := uint64(max(filesPerConn, 1))
	if nofile < fdReserve+per {
		return 1
	}
	return int(min((nofile-fdReserve)/per, math.MaxInt32))
}

// capConnections is the cap on open connections for an explicit cap of
// asked under a file limit of nofile, each connection holding up to
// filesPerConn descriptors: asked, or what the file limit allows when that
// is less. A cap above the file limit is never reached: the process runs
// out of descriptors first, and then fails its clients, its downloads and
// its own files alike instead of telling new clients to come back later.
func capConnections(asked int, nofile uint64, filesPerConn int) int {
	return min(asked, connectionsAllowed(nofile, filesPerConn))
}

// capListener admits at most max connections at once. Beyond it, it closes
// an idle keep-alive connection to make room, or else answers the new
// connection 503 with Retry-After and closes it, so that a flood of clients
// costs the service neither its file descriptors nor its other clients.
type capListener struct {
	net.Listener
	max int
	log *slog.Logger
	// tls, when set, is the API's TLS configuration: a refused client is
	// told so over TLS, or it could not read the answer.
	tls *tls.Config

	mu   sync.Mutex
	open int
	idle map[net.Conn]struct{} // admitted connections between requests

	rejecting atomic.Int32
	rejected  atomic.Int64 // since the last log
	lastLog   atomic.Int64 // unix nanoseconds
}

func newCapListener(ln net.Listener, maxConns int, log *slog.Logger) *capListener {
	return &capListener{Listener: ln, max: maxConns, log: log, idle: make(map[net.Conn]struct{})}
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit() {
			return &capConn{Conn: c, l: l}, nil
		}
		l.reject(c)
	}
}

// admit counts a new connection in, making room by closing an idle one
// if need be; false means there is no room.
func (l *capListener) admit() bool {
	l.mu.Lock()
	if l.open < l.max {
		l.open++
		l.mu.Unlock()
		return true
	}
	for c := range l.idle {
		delete(l.idle, c)
		l.open++ // c leaves when it is closed
		l.mu.Unlock()
		// Its client opens a new connection for its next request. Closed
		// aside: a TLS close sends an alert and may wait on a client that
		// does not read, and Accept must not.
		go func() { _ = c.Close() }()
		return true
	}
	l.mu.Unlock()
	return false
}

// connState follows the connections' states for admit (http.Server.ConnState).
func (l *capListener) connState(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if state == http.StateIdle {
		l.idle[c] = struct{}{}
	} else {
		delete(l.idle, c)
	}
}

// busy counts the admitted connections that are not idle.
func (l *capListener) busy() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open - len(l.idle)
}

func (l *capListener) closed() {
	l.mu.Lock()
	l.open--
	l.mu.Unlock()
}

// reject tells the client of c to come back later, within rejectTimeout,
// without holding up Accept.
func (l *capListener) reject(c net.Conn) {
	l.noteRejected()
	if l.rejecting.Add(1) > maxRejecting {
		l.rejecting.Add(-1)
		_ = c.Close()
		return
	}
	if l.tls != nil {
		c = tls.Server(c, l.tls)
	}
	go func() {
		defer l.rejecting.Add(-1)
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(rejectTimeout))
		// Read the request's head first: a client that gets an answer
		// before it has sent its request may take it for a broken
		// connection and retry at once.
		readHead(c)
		body := "the service is at its connection limit: retry later\n"
		_, err := fmt.Fprintf(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
			"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
			5+rand.IntN(11), len(body), body) // spread the retries over 5 to 15 seconds
		if err != nil {
			return
		}
		// Closing with unread input would reset the connection, and the
		// client could lose the answer: close our side, then drain.
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
			_, _ = io.CopyN(io.Discard, c, 64<<10)
		}
	}()
}

// readHead reads from c until the end of an HTTP request head, 8 KiB or
// c's deadline, whichever comes first.
func readHead(c net.Conn) {
	buf := make([]byte, 8<<10)
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if bytes.Contains(buf[:n], []byte("\r\n\r\n")) || err != nil {
			return
		}
	}
}

// noteRejected logs connections refused, at most every 10 seconds.
func (l *capListener) noteRejected() {
	count := l.rejected.Add(1)
	now := time.Now().UnixNano()
	last := l.lastLog.Load()
	if now-last < int64(10*time.Second) || !l.lastLog.CompareAndSwap(last, now) {
		return
	}
	l.rejected.Add(-count)
	l.log.Warn("Refusing connections over the cap", "maxConnections", l.max, "refused", count)
}

// capConn is an admitted connection; closing it makes room.
type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.l.closed)
	return err
}

// ReadFrom keeps the connection's sendfile path, which http.ServeContent
// takes through the server's response.
func (c *capConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}
