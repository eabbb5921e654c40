package task

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// A held check-in costs what net/http keeps for a request in flight (a
// goroutine and its stack, the connection's read and write buffers, the
// request): about 40 KiB, measured. So the service takes the connection
// from net/http for the hold (http.Hijacker): what remains is the TLS
// connection, a timer and a polls entry, about 12 KiB. The answer is
// written straight to the connection. When the agent comes back at once
// (the answer carries work, whose Running report follows, or the agent is
// held all the time), the connection is given back to the API server
// (host.GiveBackOf) for its next request: a task that starts for ten
// thousand held agents costs no TLS handshake. Otherwise the answer says
// Connection: close, and the agent's next check-in, minutes later, opens
// a new connection (a TLS session resumption, not a full handshake).
//
// polls holds the detached check-ins by Computer: at most one per
// Computer (a newer one answers the older at once), so that work for an
// agent can wake its check-in, and a stopping service answers them all.
type polls struct {
	mu sync.Mutex
	m  map[types.NamespacedName]*heldPoll
}

// heldPoll is one detached check-in.
type heldPoll struct {
	s    *Server
	key  types.NamespacedName
	conn net.Conn
	// giveBack hands conn back to the API server; nil when it cannot.
	giveBack host.GiveBackFunc
	resp     protocol.WorkResponse
	plan     Plan
	start    time.Time
	timer    *time.Timer
	done     atomic.Bool
	// busy is the work the agent said it carries out: it gets no other
	// until that work's result is recorded (then it is cleared).
	busy atomic.Pointer[string]
	// work, when set before the answer, goes in it.
	work atomic.Pointer[protocol.WorkItem]
}

// answerTimeout bounds the write of a held check-in's answer.
const answerTimeout = 10 * time.Second

// keepWithin: an answer that tells the agent to come back within this
// keeps its connection open for that check-in.
const keepWithin = 5 * time.Second

// detach takes the request's connection from net/http and holds the
// check-in for plan.Hold, or reports false when the connection cannot be
// taken (HTTP/2, or bytes of a next request already read), and the caller
// holds it in the handler. The hold slot is taken; answering releases it.
func (p *polls) detach(s *Server, w http.ResponseWriter, r *http.Request, key types.NamespacedName, resp protocol.WorkResponse, plan Plan, busy string) bool {
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	held := &heldPoll{s: s, key: key, conn: conn, giveBack: host.GiveBackOf(r.Context()), resp: resp, plan: plan, start: s.now()}
	if busy != "" {
		held.busy.Store(&busy)
	}
	if rw.Reader.Buffered() > 0 {
		// A pipelined request: answer this one now rather than lose it,
		// and close: the next one's bytes are in rw, not the connection.
		held.giveBack = nil
		held.answer()
		return true
	}
	// net/http's deadlines of the request no longer apply.
	_ = conn.SetDeadline(time.Time{})
	p.mu.Lock()
	if p.m == nil {
		p.m = map[types.NamespacedName]*heldPoll{}
	}
	older := p.m[key]
	p.m[key] = held
	held.timer = time.AfterFunc(plan.Hold, held.answer)
	p.mu.Unlock()
	if older != nil {
		older.answer()
	}
	if s.stoppingNow() {
		held.answer()
	}
	return true
}

// snapshot returns the held check-ins.
func (p *polls) snapshot() []*heldPoll {
	p.mu.Lock()
	defer p.mu.Unlock()
	all := make([]*heldPoll, 0, len(p.m))
	for _, h := range p.m {
		all = append(all, h)
	}
	return all
}

// get returns the held check-in of key, or nil.
func (p *polls) get(key types.NamespacedName) *heldPoll {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.m[key]
}

// isBusy reports whether the agent said it carries out work.
func (h *heldPoll) isBusy() bool { return h.busy.Load() != nil }

// answerWork answers the held check-in with item, unless it was answered
// already (then the agent's next check-in is offered the item again).
func (h *heldPoll) answerWork(item *protocol.WorkItem) {
	h.work.Store(item)
	h.answer()
}

// answerAll answers every held check-in: the service stops.
func (p *polls) answerAll() {
	p.mu.Lock()
	all := make([]*heldPoll, 0, len(p.m))
	for _, h := range p.m {
		all = append(all, h)
	}
	p.mu.Unlock()
	for _, h := range all {
		h.answer()
	}
}

// answer writes the check-in's answer, gives the connection back or
// closes it, and releases the hold; once, whoever calls it first (the
// timer, work, a newer check-in of the agent, the service stopping).
func (h *heldPoll) answer() {
	if !h.done.CompareAndSwap(false, true) {
		return
	}
	s := h.s
	// Under the lock that detach holds while it sets the timer.
	s.polls.mu.Lock()
	timer := h.timer
	if s.polls.m[h.key] == h {
		delete(s.polls.m, h.key)
	}
	s.polls.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	defer s.releaseHold()

	held := s.now().Sub(h.start)
	resp := h.resp
	resp.HeldMillis = held.Milliseconds()
	item := h.work.Load()
	if item != nil {
		resp.Work = []protocol.WorkItem{*item}
	}
	stopping := s.stoppingNow()
	var next time.Duration
	if stopping || item != nil {
		// Every held agent is answered at this instant (the service stops,
		// or a task for all of them starts): spread them over a cycle,
		// rather than have them all come back at once.
		next = s.pacer.Scatter(h.plan, nil)
	} else {
		next = s.pacer.Next(h.plan, held, nil)
	}
	resp.NextCheckInMillis = next.Milliseconds()
	keep := h.giveBack != nil && !stopping && (item != nil || next <= keepWithin)
	body, err := json.Marshal(resp)
	if err != nil {
		_ = h.conn.Close()
		return
	}
	body = append(body, '\n')
	msg := make([]byte, 0, 160+len(body))
	msg = append(msg, "HTTP/1.1 200 OK\r\nContent-Type: "+protocol.ContentType+"\r\nCache-Control: no-store\r\n"...)
	if !keep {
		msg = append(msg, "Connection: close\r\n"...)
	}
	msg = append(msg, "Content-Length: "...)
	msg = strconv.AppendInt(msg, int64(len(body)), 10)
	msg = append(msg, "\r\n\r\n"...)
	msg = append(msg, body...)
	_ = h.conn.SetWriteDeadline(time.Now().Add(answerTimeout))
	if _, err := h.conn.Write(msg); err != nil {
		s.log.Debug("Answering a held check-in", "computer", h.key.String(), "error", fmt.Sprint(err))
		keep = false
	}
	if !keep || !h.giveBack(h.conn) {
		_ = h.conn.Close()
	}
}
