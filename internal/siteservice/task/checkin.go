package task

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/tasks"
)

// issuedCredentials remembers the credentials this process issued for a
// short while, for the check-ins that come before the cache shows them.
type issuedCredentials struct {
	mu sync.Mutex
	m  map[types.NamespacedName]issuedCredential
}

type issuedCredential struct {
	hash     string
	issuedAt time.Time
	until    time.Time
}

const issuedMemory = 2 * time.Minute

func (c *issuedCredentials) add(key types.NamespacedName, hash string, issuedAt, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[types.NamespacedName]issuedCredential{}
	}
	for k, v := range c.m {
		if now.After(v.until) {
			delete(c.m, k)
		}
	}
	c.m[key] = issuedCredential{hash: hash, issuedAt: issuedAt, until: now.Add(issuedMemory)}
}

func (c *issuedCredentials) get(key types.NamespacedName, now time.Time) (issuedCredential, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok && now.Before(v.until)
}

// errCredentialRefused is what an agent is told whatever the reason its
// credential is refused: the reason goes to the log.
var errCredentialRefused = errors.New("the credential is not valid: register again")

// errCannotCheck wraps what keeps the service from judging a credential
// now (the API unreachable, the cache behind and live reads used up): the
// agent is asked to come back, never told its credential is bad, since an
// agent told 401 forgets its credential.
var errCannotCheck = errors.New("the credential cannot be checked now")

// authenticate returns the Computer whose credential the request carries,
// or an error: errCannotCheck wrapped when the verdict must wait, else the
// reason the credential is refused.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (*siteopsv1.Computer, error) {
	raw, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, errors.New("no Authorization: Bearer credential")
	}
	key, secret, err := parseCredential(raw)
	if err != nil {
		return nil, err
	}
	comp := &siteopsv1.Computer{}
	if err := s.kube.client.Get(ctx, key, comp); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: reading Computer %s: %w", errCannotCheck, key, err)
		}
		comp = nil
	}
	if err := credentialValid(comp, secret); err == nil {
		return comp, nil
	}
	// The cache may lag a registration: this process's own, or another
	// replica's (read live, at a bounded rate).
	if issued, ok := s.issued.get(key, s.now()); ok && secretMatches(secret, issued.hash) {
		if comp == nil || comp.Status.Credential == nil || comp.Status.Credential.IssuedAt.Time.Before(issued.issuedAt) {
			if comp == nil {
				comp = &siteopsv1.Computer{}
				comp.Namespace, comp.Name = key.Namespace, key.Name
			}
			return comp, credentialNotRevoked(comp, issued.issuedAt)
		}
	}
	if !s.liveReads.Allow() {
		return nil, fmt.Errorf("%w: Computer %s does not match in the cache, and live reads are used up", errCannotCheck, key)
	}
	live := &siteopsv1.Computer{}
	if err := s.kube.live.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no Computer %s", key)
		}
		return nil, fmt.Errorf("%w: reading Computer %s: %w", errCannotCheck, key, err)
	}
	if err := credentialValid(live, secret); err != nil {
		return nil, fmt.Errorf("computer %s: %w", key, err)
	}
	return live, nil
}

// work serves GET /v1/work: the check-in, a long poll.
func (s *Server) work(w http.ResponseWriter, r *http.Request) {
	if s.kube == nil {
		comeBack(w, time.Minute, "this task service serves no agent API")
		return
	}
	if s.kube.ready(r.Context()) != nil {
		comeBack(w, s.spread(), "the task service is starting")
		return
	}
	q := r.URL.Query()
	wait, err := waitParam(q.Get(protocol.QueryWait))
	if err != nil {
		fail(w, http.StatusBadRequest, protocol.QueryWait, "%v", err)
		return
	}
	addrs, canon, err := parseAddresses(protocol.QueryAddress, q[protocol.QueryAddress])
	if err != nil {
		fail(w, http.StatusBadRequest, protocol.QueryAddress, "%v", err)
		return
	}
	version := q.Get(protocol.QueryVersion)
	if version != "" && !versionPattern.MatchString(version) {
		fail(w, http.StatusBadRequest, protocol.QueryVersion, "version must be at most %d characters [A-Za-z0-9-._+~]", protocol.MaxVersionLength)
		return
	}
	busy := q.Get(protocol.QueryBusy)
	if busy != "" {
		if _, _, err := tasks.ParseWorkID(busy); err != nil {
			fail(w, http.StatusBadRequest, protocol.QueryBusy, "%v", err)
			return
		}
	}
	comp, err := s.authenticate(r.Context(), r)
	if errors.Is(err, errCannotCheck) {
		s.log.Warn("Postponing a check-in", "reason", err)
		comeBack(w, s.spread(), "the credential cannot be checked now")
		return
	}
	if err != nil {
		s.log.Info("Refusing a check-in", "reason", err)
		s.metrics.refused.Add(1)
		fail(w, http.StatusUnauthorized, "", "%v", errCredentialRefused)
		return
	}
	key := types.NamespacedName{Namespace: comp.Namespace, Name: comp.Name}
	site, served := s.kube.locator.Serves(addrs, s.cfg.SiteServer)
	if !served {
		s.agents.forget(key)
		s.metrics.relocated.Add(1)
		fail(w, protocol.StatusRelocate, protocol.QueryAddress, "this task service (SiteServer %s) does not serve the site of these addresses (%q); locate again", s.cfg.SiteServer, site)
		return
	}
	agent := s.agents.get(key, comp)
	s.agents.checkedIn(key, agent, canon, site, version)
	s.metrics.checkIns.Add(1)

	resp := protocol.WorkResponse{Work: []protocol.WorkItem{}, Computer: key.String(), Site: site, SiteServer: s.cfg.SiteServer}
	plan := s.pacer.Plan(s.activeAgents(), wait)
	if item := s.workFor(r.Context(), comp, busy); item != nil {
		resp.Work = append(resp.Work, *item)
		resp.NextCheckInMillis = s.pacer.Scatter(plan, nil).Milliseconds()
		writeJSON(w, http.StatusOK, resp)
		return
	}
	if plan.Hold <= 0 {
		resp.NextCheckInMillis = s.pacer.Next(plan, 0, nil).Milliseconds()
		writeJSON(w, http.StatusOK, resp)
		return
	}
	if !s.takeHold() {
		s.metrics.turnedAway.Add(1)
		resp.NextCheckInMillis = s.pacer.Busy(plan, nil).Milliseconds()
		writeJSON(w, http.StatusOK, resp)
		return
	}
	plan.Hold = s.pacer.Held(plan, nil)
	if s.polls.detach(s, w, r, key, resp, plan, busy) {
		// Work that became due since workFor looked: the wake-up that
		// announced it may have found no held check-in of this agent.
		if h := s.polls.get(key); h != nil && !h.isBusy() {
			s.dispatch.next(comp, "", func(item *protocol.WorkItem) {
				if item != nil {
					h.answerWork(item)
				}
			})
		}
		return
	}
	held := s.hold(r.Context(), plan.Hold)
	s.releaseHold()
	resp.HeldMillis = held.Milliseconds()
	if s.stoppingNow() {
		// Every held agent is answered at this instant: spread them over
		// a cycle, rather than have them all come back at once.
		resp.NextCheckInMillis = s.pacer.Scatter(plan, nil).Milliseconds()
	} else {
		resp.NextCheckInMillis = s.pacer.Next(plan, held, nil).Milliseconds()
	}
	writeJSON(w, http.StatusOK, resp)
}

// claimWait bounds how long a check-in waits for the claim of its work.
const claimWait = 10 * time.Second

// workFor returns the work for the checking-in agent, if any, once it is
// claimed.
func (s *Server) workFor(ctx context.Context, comp *siteopsv1.Computer, busy string) *protocol.WorkItem {
	got := make(chan *protocol.WorkItem, 1)
	s.dispatch.next(comp, busy, func(item *protocol.WorkItem) { got <- item })
	select {
	case item := <-got:
		return item
	case <-ctx.Done():
	case <-time.After(claimWait):
	}
	// A claim decided after this is offered again at the next check-in.
	return nil
}

// hold waits up to d, until the request ends or the service stops, and
// returns how long it waited.
func (s *Server) hold(ctx context.Context, d time.Duration) time.Duration {
	start := s.now()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-s.stopping:
	}
	return s.now().Sub(start)
}

// spread is how long to tell an agent to come back when the service cannot
// answer it now: spread over a cycle, as many may be told at once.
func (s *Server) spread() time.Duration {
	return s.pacer.Scatter(s.pacer.Plan(s.activeAgents(), 0), nil)
}

// takeHold counts a check-in in among the held ones, unless maxHeld are
// held or the connections in use leave too little room under the cap for
// what must not wait: reports, registrations and the claims of check-ins.
// Holds are what gives way, since an agent told to come back later loses
// nothing.
func (s *Server) takeHold() bool {
	if !roomToHold(s.host.Connections()) {
		return false
	}
	for {
		n := s.held.Load()
		if n >= int64(s.maxHeld) {
			return false
		}
		if s.held.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// holdHeadroom is the room under a connection cap of limit that holds
// leave to the other requests: an eighth of it, at least 64. During a task
// for every agent, each check-in is followed by a result that may wait up
// to reportWait for its write: without the room, the held check-ins fill
// the cap and those results are turned away at the door.
func holdHeadroom(limit int) int { return max(limit/8, 64) }

// roomToHold reports whether busy connections of limit leave the headroom
// for one more held check-in; a limit of 0 (not serving) holds nothing back.
func roomToHold(busy, limit int) bool { return limit <= 0 || busy+holdHeadroom(limit) <= limit }

func (s *Server) releaseHold() { s.held.Add(-1) }

func (s *Server) stoppingNow() bool {
	select {
	case <-s.stopping:
		return true
	default:
		return false
	}
}

// activeAgents is how many agents pace the others: those seen recently,
// or, after a restart, the Computers that last checked in here.
func (s *Server) activeAgents() int {
	return int(max(s.agents.active.Load(), s.assigned.Load()))
}
