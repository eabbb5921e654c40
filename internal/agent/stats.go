package agent

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// SimStats is one line of a simulation's statistics, printed as JSON.
type SimStats struct {
	// ElapsedSeconds since the simulation started.
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// Agents simulated.
	Agents int `json:"agents"`
	// Registered is how many agents hold a credential now.
	Registered int64 `json:"registered"`
	// Registrations is how many registrations succeeded (re-registrations
	// after a refused credential included).
	Registrations int64 `json:"registrations"`
	// RegistrationErrors is how many registrations failed.
	RegistrationErrors int64 `json:"registrationErrors"`
	// CheckIns is how many check-ins were answered with 200, in all and in
	// the last interval.
	CheckIns         int64 `json:"checkIns"`
	CheckInsInterval int64 `json:"checkInsInterval"`
	// CheckInErrors counts the failed check-ins by kind: the status code
	// ("401", "503", …) or "transport" (no answer).
	CheckInErrors map[string]int64 `json:"checkInErrors"`
	// Held is how many check-ins are in flight now (mostly held by the
	// service: the long polls).
	Held int64 `json:"held"`
	// Relocations is how many times agents located again after their first
	// answer.
	Relocations int64 `json:"relocations"`
	// Failovers is how many times agents moved to the next task endpoint.
	Failovers int64 `json:"failovers"`
	// LatencyP50Ms and LatencyP99Ms are percentiles of the check-ins'
	// latency over the last interval, in milliseconds: the round trip less
	// the service's own hold (HeldMillis). 0 when there was none.
	LatencyP50Ms float64 `json:"latencyP50Ms"`
	LatencyP99Ms float64 `json:"latencyP99Ms"`
	// Final marks the last line, printed on exit.
	Final bool `json:"final,omitempty"`
}

// simStats are the counters that simulated agents update. Its methods do
// nothing on a nil receiver: a real agent has none.
type simStats struct {
	start  time.Time
	agents int

	registeredNow, registrations, registrationErrors atomic.Int64
	checkIns, checkInsReported                       atomic.Int64
	held, relocations, failovers                     atomic.Int64

	mu            sync.Mutex
	checkInErrors map[string]int64

	latency histogram
}

func newSimStats(agents int) *simStats {
	return &simStats{start: time.Now(), agents: agents, checkInErrors: map[string]int64{}}
}

func (s *simStats) registered() {
	if s != nil {
		s.registrations.Add(1)
		s.registeredNow.Add(1)
	}
}

func (s *simStats) registerFailed(error) {
	if s != nil {
		s.registrationErrors.Add(1)
	}
}

func (s *simStats) credentialDropped() {
	if s != nil {
		s.registeredNow.Add(-1)
	}
}

func (s *simStats) checkInStarted() {
	if s != nil {
		s.held.Add(1)
	}
}

func (s *simStats) checkInEnded() {
	if s != nil {
		s.held.Add(-1)
	}
}

func (s *simStats) checkedIn(latency time.Duration) {
	if s != nil {
		s.checkIns.Add(1)
		s.latency.record(latency)
	}
}

func (s *simStats) checkInFailed(err error) {
	if s != nil {
		s.mu.Lock()
		s.checkInErrors[errorKind(err)]++
		s.mu.Unlock()
	}
}

func (s *simStats) relocated() {
	if s != nil {
		s.relocations.Add(1)
	}
}

func (s *simStats) failedOver() {
	if s != nil {
		s.failovers.Add(1)
	}
}

// snapshot returns the statistics and starts a new interval.
func (s *simStats) snapshot(final bool) SimStats {
	total := s.checkIns.Load()
	st := SimStats{
		ElapsedSeconds:     float64(time.Since(s.start).Milliseconds()) / 1000,
		Agents:             s.agents,
		Registered:         s.registeredNow.Load(),
		Registrations:      s.registrations.Load(),
		RegistrationErrors: s.registrationErrors.Load(),
		CheckIns:           total,
		CheckInsInterval:   total - s.checkInsReported.Swap(total),
		Held:               s.held.Load(),
		Relocations:        s.relocations.Load(),
		Failovers:          s.failovers.Load(),
		CheckInErrors:      map[string]int64{},
		Final:              final,
	}
	s.mu.Lock()
	for k, v := range s.checkInErrors {
		st.CheckInErrors[k] = v
	}
	s.mu.Unlock()
	st.LatencyP50Ms, st.LatencyP99Ms = s.latency.drain(0.50, 0.99)
	return st
}

// histogram counts durations in log-linear buckets of microseconds: 16
// buckets per power of two, so a percentile is off by at most about 6 %.
// It is lock-free: thousands of agents record into it at once.
type histogram struct {
	buckets [1024]atomic.Int64
}

func bucketOf(us uint64) int {
	if us < 16 {
		return int(us)
	}
	shift := bits.Len64(us) - 5
	return shift*16 + int(us>>shift)
}

// bucketMidMicros is the middle of bucket i, in microseconds.
func bucketMidMicros(i int) float64 {
	if i < 16 {
		return float64(i)
	}
	shift := i/16 - 1
	lo := uint64(i%16+16) << shift
	return float64(lo) + float64(uint64(1)<<shift)/2
}

func (h *histogram) record(d time.Duration) {
	h.buckets[bucketOf(uint64(max(d, 0)/time.Microsecond))].Add(1)
}

// drain returns the quantiles lo and hi (lo <= hi) in milliseconds, 0
// when nothing was recorded, and empties the histogram.
func (h *histogram) drain(lo, hi float64) (float64, float64) {
	var counts [len(h.buckets)]int64
	var n int64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Swap(0)
		n += counts[i]
	}
	if n == 0 {
		return 0, 0
	}
	qs := [2]float64{lo, hi}
	var out [2]float64
	qi, seen := 0, int64(0)
	for i, c := range counts {
		seen += c
		for qi < len(qs) && float64(seen) >= qs[qi]*float64(n) {
			out[qi] = bucketMidMicros(i) / 1000
			qi++
		}
	}
	return out[0], out[1]
}
