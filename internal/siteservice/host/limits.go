package host

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// Defaults of [Limits].
const (
	// DefaultMaxBodyBytes bounds a request body: the agent API sends small
	// JSON documents. Routes that take uploads raise it.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMinRate is the slowest transfer, in bytes per second, that a
	// request body or a response may sustain: far under what any agent on a
	// branch-office link reaches, far over what a client that holds a
	// connection on purpose gives.
	DefaultMinRate = 1 << 10
	// DefaultRateWindow is the time over which the rate is measured.
	DefaultRateWindow = 30 * time.Second
	// DefaultIdleTimeout is how long a request may move no byte at all.
	DefaultIdleTimeout = time.Minute
)

// Limits bound what one request may hold of the server. Zero fields take
// the Host's value, and the Host's zero fields the defaults above.
//
// A transfer is cut when, in RateWindow spent waiting on the client, it
// moves fewer than MinRate×RateWindow bytes: each time it moves that many,
// the deadline renews. Only time spent reading the body or writing the
// response counts, so a handler that thinks, or waits for work to hand out,
// is not cut for it. A request that moves no byte at all for IdleTimeout
// (a handler that waits too long for something) has its context cancelled
// and its connection's pending reads and writes failed; a long poll opts
// into a longer wait with [WithLimits].
type Limits struct {
	// MaxBodyBytes bounds the request body; a larger body is refused with
	// 413. Negative means no bound (uploads, which the rate still bounds).
	MaxBodyBytes int64
	// MinRate is the slowest transfer allowed, in bytes per second.
	MinRate int64
	// RateWindow is the time over which MinRate is measured.
	RateWindow time.Duration
	// IdleTimeout is how long a request may move no byte at all; it is at
	// least RateWindow.
	IdleTimeout time.Duration
}

// or returns l with its zero fields taken from d.
func (l Limits) or(d Limits) Limits {
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.MinRate <= 0 {
		l.MinRate = d.MinRate
	}
	if l.RateWindow <= 0 {
		l.RateWindow = d.RateWindow
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	l.IdleTimeout = max(l.IdleTimeout, l.RateWindow)
	return l
}

// budget is how many bytes a transfer must move in each RateWindow.
func (l Limits) budget() int64 {
	return max(int64(float64(l.MinRate)*l.RateWindow.Seconds()), 1)
}

// defaultLimits are the package's defaults.
var defaultLimits = Limits{MaxBodyBytes: DefaultMaxBodyBytes, MinRate: DefaultMinRate,
	RateWindow: DefaultRateWindow, IdleTimeout: DefaultIdleTimeout}

// errIdle is the cause of a request's context cancelled for moving no byte
// for its IdleTimeout.
var errIdle = errors.New("the request moved no byte for its idle timeout")

// WithLimits serves h with limits instead of the Host's, for the fields
// that limits sets: a route that takes uploads raises MaxBodyBytes, a long
// poll raises IdleTimeout. Outside a Host it changes nothing.
func WithLimits(limits Limits, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ex, ok := r.Context().Value(exchangeKey{}).(*exchange); ok {
			ex.setLimits(limits)
		}
		h.ServeHTTP(w, r)
	})
}

type exchangeKey struct{}

// guard serves h with limits applied to every request.
func guard(limits Limits, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		ex := &exchange{rc: http.NewResponseController(w), limits: limits, cancel: cancel, lastMove: time.Now()}
		// A write deadline left by the previous request of the connection
		// must not fail an early write (100 Continue) of this one.
		_ = ex.rc.SetWriteDeadline(time.Time{})
		ex.mu.Lock()
		ex.idle = time.AfterFunc(limits.IdleTimeout, ex.checkIdle)
		ex.mu.Unlock()
		defer ex.finish()

		r = r.WithContext(context.WithValue(ctx, exchangeKey{}, ex))
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &meteredBody{ex: ex, w: w, body: r.Body}
		}
		h.ServeHTTP(&meteredWriter{ResponseWriter: w, ex: ex}, r)
	})
}

// exchange is the state of one request under its Limits.
type exchange struct {
	rc     *http.ResponseController
	cancel context.CancelCauseFunc
	idle   *time.Timer

	mu       sync.Mutex
	limits   Limits
	lastMove time.Time // when a byte last moved, or the request began
	expired  bool      // the idle timeout passed: every transfer fails
	done     bool      // the handler returned
	bodyDone bool      // the body hit its end: the server reads the connection again

	read, write window
}

// window is the progress of one direction within its rate window.
type window struct {
	waited time.Duration // spent waiting on the client in this window
	moved  int64         // bytes moved in this window
}

func (ex *exchange) setLimits(l Limits) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.limits = l.or(ex.limits)
	if !ex.expired && !ex.done {
		ex.idle.Reset(max(0, ex.limits.IdleTimeout-time.Since(ex.lastMove)))
	}
}

var errExpired = errors.New("request cut: it moved no byte for its idle timeout")

// begin sets the deadline of a transfer in direction d and returns how
// many bytes it may move before the window renews.
func (ex *exchange) begin(d *window, set func(time.Time) error) (int64, error) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.expired {
		return 0, errExpired
	}
	_ = set(time.Now().Add(ex.limits.RateWindow - d.waited))
	// At least one byte: limits lowered by WithLimits mid-window may leave
	// less budget than already moved.
	return max(ex.limits.budget()-d.moved, 1), nil
}

// end accounts for a transfer in direction d that moved n bytes in elapsed.
func (ex *exchange) end(d *window, n int64, elapsed time.Duration) {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	d.waited += elapsed
	d.moved += n
	if n > 0 {
		ex.lastMove = time.Now()
	}
	if d.moved >= ex.limits.budget() {
		*d = window{}
	}
}

// checkIdle runs when the idle timer fires: it cuts the request if no byte
// moved for the idle timeout, or waits for the rest of it.
func (ex *exchange) checkIdle() {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.done || ex.expired {
		return
	}
	if left := ex.limits.IdleTimeout - time.Since(ex.lastMove); left > 0 {
		ex.idle.Reset(left)
		return
	}
	ex.expired = true
	ex.cancel(errIdle)
	past := time.Unix(1, 0)
	_ = ex.rc.SetWriteDeadline(past)
	if !ex.bodyDone {
		_ = ex.rc.SetReadDeadline(past)
	}
}

// finish runs when the handler returns: what it wrote but the server still
// buffers must reach the client within a rate window too.
func (ex *exchange) finish() {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	ex.done = true
	ex.idle.Stop()
	if !ex.expired {
		_ = ex.rc.SetWriteDeadline(time.Now().Add(ex.limits.RateWindow))
		// A body the handler left unread is drained by the server before
		// it reuses the connection, with no deadline of its own: bound it
		// too, or a client that announces a body and never sends it holds
		// the connection forever. (The server sets a fresh deadline before
		// it waits for the next request.)
		if !ex.bodyDone {
			_ = ex.rc.SetReadDeadline(time.Now().Add(ex.limits.RateWindow))
		}
	}
}

// meteredWriter holds a response to the exchange's limits.
type meteredWriter struct {
	http.ResponseWriter
	ex *exchange
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *meteredWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *meteredWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		budget, err := w.ex.begin(&w.ex.write, w.ex.rc.SetWriteDeadline)
		if err != nil {
			return written, err
		}
		chunk := p[:min(int64(len(p)), budget)]
		began := time.Now()
		n, err := w.ResponseWriter.Write(chunk)
		w.ex.end(&w.ex.write, int64(n), time.Since(began))
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// ReadFrom keeps the server's sendfile path for files: http.ServeContent
// copies with it.
func (w *meteredWriter) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{w}, src)
	}
	// One level of io.LimitedReader over a file still takes the sendfile
	// path; two would not.
	inner, limit := src, int64(-1)
	if lr, ok := src.(*io.LimitedReader); ok {
		inner, limit = lr.R, lr.N
	}
	var total int64
	for limit != 0 {
		budget, err := w.ex.begin(&w.ex.write, w.ex.rc.SetWriteDeadline)
		if err != nil {
			return total, err
		}
		if limit > 0 {
			budget = min(budget, limit)
		}
		began := time.Now()
		n, err := rf.ReadFrom(&io.LimitedReader{R: inner, N: budget})
		w.ex.end(&w.ex.write, n, time.Since(began))
		total += n
		if limit > 0 {
			limit -= n
		}
		if err != nil {
			return total, err
		}
		if n < budget { // the source ended
			break
		}
	}
	if lr, ok := src.(*io.LimitedReader); ok {
		lr.N = limit
	}
	return total, nil
}

type writerOnly struct{ io.Writer }

// meteredBody holds a request body to the exchange's limits.
type meteredBody struct {
	ex    *exchange
	w     http.ResponseWriter // the server's, which MaxBytesReader needs
	body  io.ReadCloser
	bound io.ReadCloser // body under MaxBodyBytes, from the first Read
}

func (b *meteredBody) Read(p []byte) (int, error) {
	if b.bound == nil {
		b.ex.mu.Lock()
		maxBytes := b.ex.limits.MaxBodyBytes
		b.ex.mu.Unlock()
		b.bound = b.body
		if maxBytes >= 0 {
			b.bound = http.MaxBytesReader(b.w, b.body, maxBytes)
		}
	}
	b.ex.mu.Lock()
	bodyDone := b.ex.bodyDone
	b.ex.mu.Unlock()
	if bodyDone {
		return b.bound.Read(p)
	}
	if _, err := b.ex.begin(&b.ex.read, b.ex.rc.SetReadDeadline); err != nil {
		return 0, err
	}
	began := time.Now()
	n, err := b.bound.Read(p)
	b.ex.end(&b.ex.read, int64(n), time.Since(began))
	if err == io.EOF {
		// The server now reads the connection in the background to notice
		// a client that leaves, and clears the deadline itself.
		b.ex.mu.Lock()
		b.ex.bodyDone = true
		b.ex.mu.Unlock()
	}
	return n, err
}

func (b *meteredBody) Close() error { return b.body.Close() }
