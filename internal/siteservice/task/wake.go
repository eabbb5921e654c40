package task

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/siteops/site-operator/internal/protocol"
)

// The reference description's "tickle": a task service tells its agents
// that work is waiting. Here an agent's check-in is held open (the long
// poll), so when work becomes due (a task arrives, its window opens, room
// frees up under maxConcurrent) the service looks again at every held
// check-in and answers those that now have work, at once.

// wakeCoalesce gathers the wake-ups that come in a burst (a task's
// shards written one after another) into one look at the held check-ins.
const wakeCoalesce = 50 * time.Millisecond

// wakeHeld asks for a look at the held check-ins; it never blocks.
func (s *Server) wakeHeld() {
	select {
	case s.wakeKick <- struct{}{}:
	default:
	}
}

// runDispatch looks at the held check-ins when asked, and ticks the
// schedules every half second, until ctx is done.
func (s *Server) runDispatch(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			s.dispatch.tick()
		case <-s.wakeKick:
			select {
			case <-ctx.Done():
				return
			case <-time.After(wakeCoalesce):
			}
			s.offerHeld()
		}
	}
}

// freed says that the agent of key finished the work id (its result is
// recorded): a check-in it holds while busy with that work may now get
// the next, at once.
func (s *Server) freed(key types.NamespacedName, id string) {
	h := s.polls.get(key)
	if h == nil {
		return
	}
	if b := h.busy.Load(); b == nil || *b != id || !h.busy.CompareAndSwap(b, nil) {
		return
	}
	if comp := s.kube.computer(key); comp != nil {
		s.dispatch.next(comp, "", func(item *protocol.WorkItem) {
			if item != nil {
				h.answerWork(item)
			}
		})
	}
}

// offerHeld offers work to every held check-in whose agent is idle.
func (s *Server) offerHeld() {
	if s.kube.ready(context.Background()) != nil {
		return
	}
	s.dispatch.gather(func() {
		for _, h := range s.polls.snapshot() {
			if h.isBusy() || h.done.Load() {
				continue
			}
			comp := s.kube.computer(h.key)
			if comp == nil {
				continue
			}
			s.dispatch.next(comp, "", func(item *protocol.WorkItem) {
				if item != nil {
					h.answerWork(item)
				}
			})
		}
	})
}
