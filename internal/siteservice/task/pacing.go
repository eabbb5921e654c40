package task

import (
	"math/rand/v2"
	"time"
)

// Pacer sets how long a check-in is held and when the agent comes back, so
// that the check-ins of all the agents of one task-service process stay
// under MaxRate however many there are, and the held check-ins under
// MaxHeld. It is pure.
//
// With N active agents, each agent's cycle (one check-in to the next) is
//
//	T = max(N / MaxRate, MinInterval)
//
// so the process receives N/T ≤ MaxRate check-ins per second. Of each
// cycle the check-in is held for at most
//
//	w = min(requested wait, MaxWait, T, MaxHeld·T/N)
//
// (held on average N·w/T ≤ MaxHeld at once), and the agent waits T − w
// after the answer, spread by ±Jitter of T so that agents that started
// together drift apart. With 50,000 agents at 200/s, T = 250 s: each is
// held 60 s and sleeps about 190 s.
//
// When the hold is the whole cycle (w = T: 10,000 agents at 200/s and a
// 60 s minimum), the agent comes back at once after a hold that ran out,
// or after N/MaxRate when the hold was shorter than that: every agent is
// in a long poll all the time, so work reaches all of them at once, and
// the rate bound still holds. The holds' own spread (Held) keeps agents
// that started together apart.
type Pacer struct {
	// MaxRate is the bound on check-ins per second.
	MaxRate float64
	// MaxHeld is the most check-ins held at once.
	MaxHeld int
	// MaxWait is the longest hold.
	MaxWait time.Duration
	// MinInterval is the shortest cycle, however few agents there are.
	MinInterval time.Duration
	// Jitter is the spread of the wait after an answer, as a share of the
	// cycle (0.1 = ±10%).
	Jitter float64
}

// Plan is what a check-in gets: how long it may be held, and how long the
// agent waits after the answer.
type Plan struct {
	// Hold is the longest the check-in is held when there is no work.
	Hold time.Duration
	// Cycle is T, the time from one check-in to the next.
	Cycle time.Duration
	// Whole: the check-in is held its whole cycle.
	Whole bool
	// Floor is the shortest cycle the rate bound allows: N / MaxRate.
	Floor time.Duration
}

// Plan returns the plan of a check-in among active agents, where the agent
// asked to be held for wait.
func (p Pacer) Plan(active int, wait time.Duration) Plan {
	active = max(active, 1)
	floor := time.Duration(float64(active) / p.MaxRate * float64(time.Second))
	cycle := max(floor, p.MinInterval)
	hold := min(wait, p.MaxWait, cycle)
	if share := time.Duration(float64(cycle) * float64(p.MaxHeld) / float64(active)); share < hold {
		hold = share
	}
	hold = max(hold, 0)
	return Plan{Hold: hold, Cycle: cycle, Whole: hold > 0 && hold >= cycle, Floor: floor}
}

// Held returns how long to hold one check-in of plan: plan.Hold less up to
// half of Jitter of it, drawn at random. When agents are held their whole
// cycle the wait after the answer is near zero and its own jitter mostly
// clamped to zero; a varying hold keeps agents that started together
// drifting apart, and a small one keeps them held most of the time.
func (p Pacer) Held(plan Plan, r *rand.Rand) time.Duration {
	return plan.Hold - time.Duration(p.Jitter/2*draw(r)*float64(plan.Hold))
}

// Next returns how long the agent waits after an answer without work that
// came after held (the whole hold, or less when the request ended): the
// rest of the cycle, spread by ±Jitter of the cycle; or, when the agent is
// held its whole cycle, what the rate bound asks (usually nothing). r
// draws the spread; nil means the global source.
func (p Pacer) Next(plan Plan, held time.Duration, r *rand.Rand) time.Duration {
	if plan.Whole {
		return max(plan.Floor-held, 0)
	}
	rest := plan.Cycle - held
	spread := time.Duration(p.Jitter * float64(plan.Cycle))
	if spread > 0 {
		rest += time.Duration((2*draw(r) - 1) * float64(spread))
	}
	return max(rest, 0)
}

// Busy returns how long an agent turned away at once (every long poll
// taken) waits: drawn evenly from half its cycle to one and a half, so that
// the agents turned away together come back spread over a whole cycle; at
// least a second.
func (p Pacer) Busy(plan Plan, r *rand.Rand) time.Duration {
	return max(plan.Cycle/2+time.Duration(float64(plan.Cycle)*draw(r)), time.Second)
}

// Scatter returns how long an agent waits when many are answered at the
// same instant, by a stopping service or one that cannot serve yet, or
// with work that became due for all of them at once: drawn
// evenly over the cycle, at least a second, so that they come back at the
// rate the cycle allows rather than all at once.
func (p Pacer) Scatter(plan Plan, r *rand.Rand) time.Duration {
	return max(time.Duration(float64(plan.Cycle)*draw(r)), time.Second)
}

func draw(r *rand.Rand) float64 {
	if r != nil {
		return r.Float64()
	}
	return rand.Float64()
}
