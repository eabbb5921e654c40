package task

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// agentState is what the service knows of one agent between check-ins,
// and what the Computer's status holds of it: the difference is written
// at most once per status interval.
type agentState struct {
	mu sync.Mutex
	// seen: the last check-in.
	lastSeen  time.Time
	addresses []string
	site      string
	version   string
	// written: what the API holds, and when it was last written.
	written   observed
	writtenAt time.Time
	queued    bool
	// lastTask is a result to write into the Computer's status.lastTask
	// with the next status write.
	lastTask *siteopsv1.ComputerTask
}

// observed is the part of a Computer's status that check-ins change.
type observed struct {
	lastSeen   time.Time
	addresses  []string
	site       string
	siteServer string
	version    string
}

func observedOf(c *siteopsv1.Computer) observed {
	o := observed{addresses: c.Status.Addresses, site: c.Status.Site, siteServer: c.Status.SiteServer,
		version: c.Status.AgentVersion}
	if c.Status.LastSeen != nil {
		o.lastSeen = c.Status.LastSeen.Time
	}
	return o
}

// registry holds the agents this process has seen, and writes what their
// check-ins change to their Computers' status: at most once per interval
// per Computer whatever the poll rate, in batches of bounded concurrency.
type registry struct {
	client     client.Client
	siteServer string
	interval   time.Duration
	log        *slog.Logger
	now        func() time.Time

	// spill takes the results of the agents the registry forgets.
	spill func(types.NamespacedName, siteopsv1.ComputerTask)
	// yield, when set and true, defers the writes owed only for lastSeen's
	// age until it is refreshAge(interval) old: the dispatch's writes go
	// first while a task is handed out.
	yield func() bool

	mu     sync.Mutex
	agents map[types.NamespacedName]*agentState
	// due holds the agents with a change to write, in no order.
	due []types.NamespacedName

	active atomic.Int64 // agents seen within activeWindow, counted by sweep
	writes atomic.Int64 // status writes done, for the metrics and tests
	failed atomic.Int64
}

// activeWindow is how recently an agent must have checked in to count
// among the active agents that pace the others.
const activeWindow = 15 * time.Minute

// forgetAfter drops an agent silent for that long from memory.
const forgetAfter = time.Hour

func newRegistry(c client.Client, siteServer string, interval time.Duration, log *slog.Logger) *registry {
	return &registry{client: c, siteServer: siteServer, interval: interval, log: log, now: time.Now,
		agents: map[types.NamespacedName]*agentState{}}
}

// get returns the state of key, loaded from comp (the cached Computer) the
// first time: what it holds counts as written at its lastSeen, so that a
// restarted service does not write every Computer again at once.
func (r *registry) get(key types.NamespacedName, comp *siteopsv1.Computer) *agentState {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.agents[key]
	if a == nil {
		a = &agentState{written: observedOf(comp)}
		a.writtenAt = a.written.lastSeen
		r.agents[key] = a
	}
	return a
}

// registered records that a registration wrote the Computer's status now.
// A state already held is updated in place, so that its place in the queue
// of writes stays the only one.
func (r *registry) registered(key types.NamespacedName, o observed) {
	r.mu.Lock()
	a := r.agents[key]
	if a == nil {
		a = &agentState{}
		r.agents[key] = a
	}
	r.mu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.lastSeen, a.addresses, a.site, a.version = o.lastSeen, o.addresses, o.site, o.version
	a.written, a.writtenAt = o, o.lastSeen
}

// forget drops what the service knows of an agent that another server
// serves now, so that no write of this one lands after the other's.
func (r *registry) forget(key types.NamespacedName) {
	r.mu.Lock()
	a := r.agents[key]
	delete(r.agents, key)
	r.mu.Unlock()
	if a != nil {
		a.mu.Lock()
		lt := a.lastTask
		a.lastTask = nil
		a.mu.Unlock()
		if lt != nil && r.spill != nil {
			r.spill(key, *lt)
		}
	}
}

// owe queues a result for the Computer's next status write: at most one
// per interval per Computer, so a result costs no write of its own when the
// agent's check-ins owe one anyway.
func (r *registry) owe(key types.NamespacedName, ct siteopsv1.ComputerTask) {
	r.mu.Lock()
	a := r.agents[key]
	if a == nil {
		a = &agentState{}
		r.agents[key] = a
	}
	r.mu.Unlock()
	a.mu.Lock()
	a.lastTask = &ct
	queue := !a.queued
	a.queued = true
	a.mu.Unlock()
	if queue {
		r.mu.Lock()
		r.due = append(r.due, key)
		r.mu.Unlock()
	}
}

// dropLastTask forgets the result key's next status write owes, if any: a
// newer one is written now.
func (r *registry) dropLastTask(key types.NamespacedName) {
	r.mu.Lock()
	a := r.agents[key]
	r.mu.Unlock()
	if a != nil {
		a.mu.Lock()
		a.lastTask = nil
		a.mu.Unlock()
	}
}

// spillAll hands every result still owed to spill: the service stops.
func (r *registry) spillAll() {
	r.mu.Lock()
	all := make(map[types.NamespacedName]*agentState, len(r.agents))
	for k, a := range r.agents {
		all[k] = a
	}
	r.mu.Unlock()
	for key, a := range all {
		a.mu.Lock()
		lt := a.lastTask
		a.lastTask = nil
		a.mu.Unlock()
		if lt != nil && r.spill != nil {
			r.spill(key, *lt)
		}
	}
}

// checkedIn records a check-in and queues a write when one is owed.
func (r *registry) checkedIn(key types.NamespacedName, a *agentState, addresses []string, site, version string) {
	now := r.now()
	a.mu.Lock()
	a.lastSeen = now
	if !slices.Equal(a.addresses, addresses) {
		a.addresses = slices.Clone(addresses)
	}
	a.site, a.version = site, version
	owed := !a.queued && r.owed(a)
	if owed {
		a.queued = true
	}
	a.mu.Unlock()
	if owed {
		r.mu.Lock()
		r.due = append(r.due, key)
		r.mu.Unlock()
	}
}

// owed reports whether a's Computer lacks something a check-in changed:
// another address, site, server or version, or a lastSeen older than the
// interval. Called with a.mu held.
func (r *registry) owed(a *agentState) bool {
	w := a.written
	return a.lastTask != nil || !slices.Equal(w.addresses, a.addresses) || w.site != a.site || w.siteServer != r.siteServer ||
		w.version != a.version || a.lastSeen.Sub(w.lastSeen) >= r.interval
}

// refreshOnly reports whether a's write is owed only for the age of the
// lastSeen the API holds. Called with a.mu held.
func (r *registry) refreshOnly(a *agentState) bool {
	w := a.written
	return a.lastTask == nil && slices.Equal(w.addresses, a.addresses) && w.site == a.site &&
		w.siteServer == r.siteServer && w.version == a.version
}

// yieldedAge is how old a Computer's lastSeen may grow while its refresh
// yields to the dispatch's writes: one and a half status intervals. A
// refresh is owed from the first check-in after lastSeen is an interval
// old, so the API's lastSeen is up to an interval plus a check-in cycle old
// when it is written anyway; yielding makes that at most the larger of it
// and this age, which the manager's --computer-offline-after must exceed
// (15 minutes against 7.5 by default).
func yieldedAge(interval time.Duration) time.Duration { return interval + interval/2 }

// flushBatch is the most Computers written in one round, and
// flushWorkers how many writes a round runs at once.
const (
	flushBatch   = 1000
	flushWorkers = 16
)

// run writes what is owed every tick until ctx is done, and counts the
// active agents.
func (r *registry) run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	lastSweep := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// A round finishes the writes it started, even when the loop is
		// told to stop: a cancelled write would be a lost refresh.
		round, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		r.flush(round)
		cancel()
		if now := r.now(); now.Sub(lastSweep) >= 10*time.Second {
			r.sweep(now)
			lastSweep = now
		}
	}
}

// flush writes the Computers whose write is due: owed, and last written at
// least an interval ago. The others stay queued.
func (r *registry) flush(ctx context.Context) {
	now := r.now()
	yielding := r.yield != nil && r.yield()
	r.mu.Lock()
	var batch []types.NamespacedName
	inBatch := map[types.NamespacedName]bool{}
	keep := r.due[:0]
	for _, key := range r.due {
		a := r.agents[key]
		if a == nil || inBatch[key] {
			continue
		}
		a.mu.Lock()
		ready := len(batch) < flushBatch && !now.Before(a.writtenAt.Add(r.interval))
		if ready && yielding && r.refreshOnly(a) {
			ready = !now.Before(a.written.lastSeen.Add(yieldedAge(r.interval)))
		}
		a.mu.Unlock()
		if ready {
			batch = append(batch, key)
			inBatch[key] = true
		} else {
			keep = append(keep, key)
		}
	}
	r.due = keep
	agents := make([]*agentState, len(batch))
	for i, key := range batch {
		agents[i] = r.agents[key]
	}
	r.mu.Unlock()

	var wg sync.WaitGroup
	work := make(chan int)
	for range min(flushWorkers, len(batch)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				r.write(ctx, batch[i], agents[i])
			}
		}()
	}
	for i := range batch {
		work <- i
	}
	close(work)
	wg.Wait()
}

// write patches the Computer's status with what the agent's check-ins
// changed. A failed write stays owed and is tried again after an interval.
func (r *registry) write(ctx context.Context, key types.NamespacedName, a *agentState) {
	a.mu.Lock()
	o := observed{lastSeen: a.lastSeen, addresses: slices.Clone(a.addresses), site: a.site,
		siteServer: r.siteServer, version: a.version}
	lt := a.lastTask
	a.writtenAt = r.now()
	a.queued = false
	a.mu.Unlock()

	// Another server may have answered the agent since (it moved): a write
	// of this one's older news would undo the other's.
	var cached siteopsv1.Computer
	if err := r.client.Get(ctx, key, &cached); err == nil && cached.Status.SiteServer != r.siteServer &&
		cached.Status.LastSeen != nil && !cached.Status.LastSeen.Time.Before(metav1.NewTime(o.lastSeen).Rfc3339Copy().Time) {
		r.forget(key)
		return
	}
	var err error
	if o.lastSeen.IsZero() {
		// Only a result: the agent reported here without a check-in.
		if lt != nil {
			err = patchStatus(ctx, r.client, key, map[string]any{"lastTask": lt})
		}
	} else {
		err = patchObserved(ctx, r.client, key, o, lt)
	}
	if apierrors.IsNotFound(err) {
		// The Computer was deleted: its agent's credential goes with it.
		r.mu.Lock()
		if r.agents[key] == a {
			delete(r.agents, key)
		}
		r.mu.Unlock()
		return
	}
	a.mu.Lock()
	if err == nil {
		if !o.lastSeen.IsZero() {
			a.written = o
		}
		if lt != nil && a.lastTask == lt {
			a.lastTask = nil
		}
	}
	requeue := !a.queued && r.owed(a)
	if requeue {
		a.queued = true
	}
	a.mu.Unlock()
	if err == nil {
		r.writes.Add(1)
	} else {
		r.failed.Add(1)
		r.log.Warn("Writing a Computer's status", "computer", key.String(), "error", err)
	}
	if requeue {
		r.mu.Lock()
		r.due = append(r.due, key)
		r.mu.Unlock()
	}
}

// patchObserved writes o into the Computer's status with a merge patch:
// no read, no conflict with the operator's conditions.
func patchObserved(ctx context.Context, c client.Client, key types.NamespacedName, o observed, lastTask *siteopsv1.ComputerTask) error {
	status := map[string]any{
		"lastSeen":     metav1.NewTime(o.lastSeen).Rfc3339Copy(),
		"addresses":    o.addresses,
		"site":         nilIfEmpty(o.site),
		"siteServer":   nilIfEmpty(o.siteServer),
		"agentVersion": nilIfEmpty(o.version),
	}
	if lastTask != nil {
		status["lastTask"] = lastTask
	}
	return patchStatus(ctx, c, key, status)
}

func patchStatus(ctx context.Context, c client.Client, key types.NamespacedName, status map[string]any) error {
	data, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return err
	}
	comp := &siteopsv1.Computer{}
	comp.Namespace, comp.Name = key.Namespace, key.Name
	if err := c.Status().Patch(ctx, comp, client.RawPatch(types.MergePatchType, data)); err != nil {
		return fmt.Errorf("patching the status of Computer %s: %w", key, err)
	}
	return nil
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// sweep counts the active agents and forgets the long silent ones.
func (r *registry) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var active int64
	for key, a := range r.agents {
		a.mu.Lock()
		seen, queued := a.lastSeen, a.queued
		a.mu.Unlock()
		switch {
		case now.Sub(seen) < activeWindow:
			active++
		case now.Sub(seen) > forgetAfter && !queued:
			delete(r.agents, key)
		}
	}
	r.active.Store(active)
}
