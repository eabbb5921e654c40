package task

import (
	"context"
	"time"

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

// offerHeld offers work to every held check-in whose agent is idle.
func (s *Server) offerHeld() {
	if s.kube.ready(context.Background()) != nil {
		return
	}
	for _, h := range s.polls.snapshot() {
		if h.busy != "" || h.done.Load() {
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
}
