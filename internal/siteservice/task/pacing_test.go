package task

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestPacerPlan(t *testing.T) {
	p := Pacer{MaxRate: 200, MaxHeld: 16000, MaxWait: time.Minute, MinInterval: time.Minute, Jitter: 0.1}
	for _, tc := range []struct {
		name        string
		active      int
		wait        time.Duration
		hold, cycle time.Duration
	}{
		{"a few agents: the minimum interval, held all along", 10, time.Minute, time.Minute, time.Minute},
		{"no agent counted yet", 0, time.Minute, time.Minute, time.Minute},
		{"10,000 agents: every one held all the time", 10_000, time.Minute, time.Minute, time.Minute},
		{"20,000 agents: the rate sets the cycle", 20_000, time.Minute, time.Minute, 100 * time.Second},
		{"50,000 agents: held a minute of 250 s", 50_000, time.Minute, time.Minute, 250 * time.Second},
		{"the agent asks for less", 10, 5 * time.Second, 5 * time.Second, time.Minute},
		{"the agent asks for no hold", 10, 0, 0, time.Minute},
		{"the service's cap on the hold", 10, 5 * time.Minute, time.Minute, time.Minute},
		{"1,000,000 agents: the hold is capped, the cycle long", 1_000_000, time.Minute, time.Minute, 5000 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Plan(tc.active, tc.wait)
			if got.Hold != tc.hold || got.Cycle != tc.cycle {
				t.Errorf("Plan(%d, %s) = hold %s, cycle %s; want %s, %s", tc.active, tc.wait, got.Hold, got.Cycle, tc.hold, tc.cycle)
			}
		})
	}
	// With a longer cap, 1,000,000 agents are held for their share of the
	// held slots: 16,000 × 5000 s / 1,000,000 = 80 s.
	big := p
	big.MaxWait = 10 * time.Minute
	if got := big.Plan(1_000_000, 10*time.Minute); got.Hold != 80*time.Second {
		t.Errorf("hold for 1,000,000 agents = %s, want the held slots' share, 80s", got.Hold)
	}
}

// Whatever the number of agents, the check-ins they make stay under the
// rate and the long polls they hold under the cap.
func TestPacerBounds(t *testing.T) {
	p := Pacer{MaxRate: 200, MaxHeld: 16000, MaxWait: time.Minute, MinInterval: time.Minute, Jitter: 0.1}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 100, 12_000, 50_000, 200_000, 3_000_000} {
		plan := p.Plan(n, time.Minute)
		// Each agent's cycle: the hold, then the wait after the answer
		// (its jitter averages out, and is never negative).
		var total, heldTotal time.Duration
		const draws = 1000
		for range draws {
			h := p.Held(plan, r)
			heldTotal += h
			total += h + p.Next(plan, h, r)
		}
		mean := total / draws
		rate := float64(n) / mean.Seconds()
		if rate > p.MaxRate*1.02 {
			t.Errorf("%d agents: %.1f check-ins/s, over the bound %v", n, rate, p.MaxRate)
		}
		held := float64(n) * (heldTotal / draws).Seconds() / mean.Seconds()
		if held > float64(p.MaxHeld)*1.02 {
			t.Errorf("%d agents: %.0f held on average, over the cap %d", n, held, p.MaxHeld)
		}
	}
}

func TestPacerNext(t *testing.T) {
	p := Pacer{Jitter: 0.1}
	plan := Plan{Hold: 60 * time.Second, Cycle: 250 * time.Second}
	r := rand.New(rand.NewPCG(3, 4))
	lo, hi := time.Duration(1<<62), time.Duration(0)
	for range 10_000 {
		d := p.Next(plan, 60*time.Second, r)
		lo, hi = min(lo, d), max(hi, d)
	}
	// 190 s ± 25 s, and spread: not all the same.
	if lo < 165*time.Second || hi > 215*time.Second || hi-lo < 40*time.Second {
		t.Errorf("Next spreads over [%s, %s], want within and across [165s, 215s]", lo, hi)
	}
	// Held their whole cycle, agents come back at once, unless the rate
	// bound asks for more than the hold they had.
	whole := Pacer{MaxRate: 200, MaxHeld: 16000, MaxWait: time.Minute, MinInterval: time.Minute, Jitter: 0.1}
	for _, tc := range []struct {
		agents int
		held   time.Duration
		want   time.Duration
	}{
		{10_000, 57 * time.Second, 0},
		{10_000, 60 * time.Second, 0},
		{10_000, 30 * time.Second, 20 * time.Second},
		{12_000, 57 * time.Second, 3 * time.Second},
	} {
		plan := whole.Plan(tc.agents, time.Minute)
		if !plan.Whole {
			t.Fatalf("Plan(%d) = %+v, want a whole-cycle hold", tc.agents, plan)
		}
		if d := whole.Next(plan, tc.held, r); d != tc.want {
			t.Errorf("%d agents, held %s: Next = %s, want %s", tc.agents, tc.held, d, tc.want)
		}
	}
	if plan := whole.Plan(50_000, time.Minute); plan.Whole {
		t.Errorf("Plan(50000) = %+v: held a minute of 250 s is not a whole-cycle hold", plan)
	}
	if plan := whole.Plan(10, 0); plan.Whole {
		t.Errorf("Plan(10, no wait) = %+v: no hold is not a whole-cycle hold", plan)
	}
	if d := p.Busy(Plan{Cycle: 0}, r); d != time.Second {
		t.Errorf("Busy with no cycle = %s, want the 1s floor", d)
	}
}

// Holds vary by up to Jitter, so agents held their whole cycle drift apart.
func TestPacerHeld(t *testing.T) {
	p := Pacer{Jitter: 0.1}
	plan := Plan{Hold: time.Minute, Cycle: time.Minute}
	r := rand.New(rand.NewPCG(5, 6))
	lo, hi := time.Minute, time.Duration(0)
	for range 1000 {
		h := p.Held(plan, r)
		lo, hi = min(lo, h), max(hi, h)
	}
	if lo < 57*time.Second || hi > time.Minute || hi-lo < 2*time.Second {
		t.Errorf("holds within [%s, %s], want spread over [57s, 60s]", lo, hi)
	}
}

func TestRoomToHold(t *testing.T) {
	for _, tt := range []struct {
		busy, limit int
		want        bool
	}{
		{0, 0, true},          // not serving yet
		{16000, 18976, true},  // 2,976 free, the headroom is 2,372
		{16604, 18976, true},  // exactly the headroom left
		{16605, 18976, false}, // less than the headroom left
		{18976, 18976, false}, // at the cap
		{0, 100, true},        // a small cap keeps 64
		{37, 100, false},      // 63 left
	} {
		if got := roomToHold(tt.busy, tt.limit); got != tt.want {
			t.Errorf("roomToHold(%d, %d) = %v, want %v", tt.busy, tt.limit, got, tt.want)
		}
	}
}
