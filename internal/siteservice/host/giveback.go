package host

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

// A handler may take a connection from net/http (http.Hijacker) to hold a
// long poll cheaply, and answer it later itself. When the client comes
// back at once (its answer carries work, or it is held all the time), a
// new connection for its next request would cost a TLS handshake per
// client, and thousands of them at the same instant. GiveBack hands the
// answered connection back to the API server instead, which serves the
// client's next request on it as on any keep-alive connection.

// givebackListener is the API's listener (TLS included): it accepts new
// connections, and takes back connections a handler gave back, those
// first (their clients are about to send their next request).
type givebackListener struct {
	net.Listener
	accepted chan acceptResult
	back     chan net.Conn
	done     chan struct{}
	once     sync.Once
}

type acceptResult struct {
	c   net.Conn
	err error
}

type givebackKey struct{}

func newGivebackListener(ln net.Listener) *givebackListener {
	l := &givebackListener{Listener: ln, accepted: make(chan acceptResult), back: make(chan net.Conn, 256),
		done: make(chan struct{})}
	go l.pump()
	return l
}

// pump accepts from the inner listener until it fails for good or l is
// closed.
func (l *givebackListener) pump() {
	for {
		c, err := l.Listener.Accept()
		select {
		case l.accepted <- acceptResult{c, err}:
		case <-l.done:
			if c != nil {
				_ = c.Close()
			}
			return
		}
		if err != nil && !temporary(err) {
			return
		}
	}
}

// temporary reports whether an Accept error is a timeout, after which
// accepting goes on (as http.Server does).
func temporary(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (l *givebackListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.back:
		return c, nil
	default:
	}
	select {
	case c := <-l.back:
		return c, nil
	case r := <-l.accepted:
		return r.c, r.err
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *givebackListener) Close() error {
	l.once.Do(func() { close(l.done) })
	err := l.Listener.Close()
	// Connections given back and not served yet.
	for {
		select {
		case c := <-l.back:
			_ = c.Close()
		default:
			return err
		}
	}
}

// giveBack queues c to be served again; false when the listener is
// closed (the caller closes c).
func (l *givebackListener) giveBack(c net.Conn) bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.back <- c:
		return true
	case <-l.done:
		return false
	}
}

// GiveBackFunc hands a connection taken from the API server back to it.
type GiveBackFunc func(net.Conn) bool

// GiveBackOf returns the function that hands a connection taken from the
// server of ctx (a request's context) back to it, or nil when the request
// did not come through a Host. The connection must be at a request's
// boundary: its response written in full, nothing of a next request read.
// The function clears the connection's deadlines and reports false when
// the server no longer serves (then the caller closes the connection).
func GiveBackOf(ctx context.Context) GiveBackFunc {
	l, ok := ctx.Value(givebackKey{}).(*givebackListener)
	if !ok {
		return nil
	}
	return func(c net.Conn) bool {
		if err := c.SetDeadline(time.Time{}); err != nil {
			return false
		}
		return l.giveBack(c)
	}
}
