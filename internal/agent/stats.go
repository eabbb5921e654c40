package agent

import (
	"maps"
	"math"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
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

	// WorkReceived is how many work items agents took from check-ins'
	// answers (each then carried out once).
	WorkReceived int64 `json:"workReceived"`
	// WorkIgnored is how many items offered were not taken: carried out
	// already, or offered while the agent carried out another.
	WorkIgnored int64 `json:"workIgnored"`
	// Working is how many items are being carried out or reported now.
	Working int64 `json:"working"`
	// ResultsAcknowledged is how many results the task services
	// acknowledged (200).
	ResultsAcknowledged int64 `json:"resultsAcknowledged"`
	// ResultsDropped is how many results were refused for good (409, 404,
	// another 4xx) and not sent again.
	ResultsDropped int64 `json:"resultsDropped"`
	// ReportRetries is how many times a result was sent again after a
	// failed attempt; ReportErrors counts the failed attempts by kind (the
	// status code, or "transport").
	ReportRetries int64            `json:"reportRetries"`
	ReportErrors  map[string]int64 `json:"reportErrors"`
	// ProgressReportErrors is how many Running reports failed (they are
	// not retried).
	ProgressReportErrors int64 `json:"progressReportErrors"`
	// WorkReceivedAt and ResultsAcknowledgedAt summarize when items were
	// received and their results acknowledged, over all tasks.
	WorkReceivedAt        EventTimes `json:"workReceivedAt"`
	ResultsAcknowledgedAt EventTimes `json:"resultsAcknowledgedAt"`
	// Tasks breaks the work down by DeploymentTask (the items' Task,
	// "<namespace>/<name>").
	Tasks map[string]TaskStats `json:"tasks"`

	// Final marks the last line, printed on exit.
	Final bool `json:"final,omitempty"`
}

// TaskStats is the work of one DeploymentTask in a simulation.
type TaskStats struct {
	// Received summarizes when agents received the task's items.
	Received EventTimes `json:"received"`
	// Acknowledged summarizes when their results were acknowledged.
	Acknowledged EventTimes `json:"acknowledged"`
	// Succeeded and Failed count the acknowledged results by state.
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	// ReportToAck summarizes how long each result took from its first
	// send to the service's 200, which the service answers only once the
	// result is in the task's dispatch state: report → recorded, as the
	// agent sees it, retries included.
	ReportToAck Durations `json:"reportToAck"`
}

// Durations summarizes durations, in milliseconds. Percentiles are exact
// (nearest rank).
type Durations struct {
	Count int64 `json:"count"`
	P50Ms int64 `json:"p50Ms"`
	P99Ms int64 `json:"p99Ms"`
	MaxMs int64 `json:"maxMs"`
}

// durationsOf summarizes sorted durations (ms).
func durationsOf(sorted []int64) Durations {
	n := len(sorted)
	if n == 0 {
		return Durations{}
	}
	rank := func(q float64) int64 { return sorted[max(int(math.Ceil(q*float64(n))), 1)-1] }
	return Durations{Count: int64(n), P50Ms: rank(0.50), P99Ms: rank(0.99), MaxMs: sorted[n-1]}
}

// EventTimes summarizes when events of one kind happened (items received,
// results acknowledged), in wall-clock Unix milliseconds, so that a
// harness can measure from an instant of its own (a task's creation):
// P99UnixMs less the creation time is how long 99% of the events took.
// Every time is 0 while Count is 0. Percentiles are exact (nearest rank):
// the simulation keeps every event's time, 8 bytes each.
type EventTimes struct {
	// Count is how many events happened.
	Count int64 `json:"count"`
	// FirstUnixMs, P50UnixMs, P99UnixMs and MaxUnixMs are the first
	// event's time, the median, the 99th percentile and the last one's.
	FirstUnixMs int64 `json:"firstUnixMs"`
	P50UnixMs   int64 `json:"p50UnixMs"`
	P99UnixMs   int64 `json:"p99UnixMs"`
	MaxUnixMs   int64 `json:"maxUnixMs"`
	// Agents99UnixMs is when the events reached 99% of the simulation's
	// agents in number (the time of the ⌈0.99·agents⌉-th event): for a
	// task that targets every agent, the time until 99% of agents received
	// their item, or had their result acknowledged. 0 until then.
	Agents99UnixMs int64 `json:"agents99UnixMs"`
}

// eventTimesOf summarizes sorted times (Unix ms) for agents agents.
func eventTimesOf(sorted []int64, agents int) EventTimes {
	n := len(sorted)
	if n == 0 {
		return EventTimes{}
	}
	rank := func(q float64) int64 { // nearest rank, from 1
		return sorted[max(int(math.Ceil(q*float64(n))), 1)-1]
	}
	e := EventTimes{Count: int64(n), FirstUnixMs: sorted[0], P50UnixMs: rank(0.50), P99UnixMs: rank(0.99), MaxUnixMs: sorted[n-1]}
	if k := int(math.Ceil(0.99 * float64(agents))); agents > 0 && n >= k {
		e.Agents99UnixMs = sorted[max(k, 1)-1]
	}
	return e
}

// taskTimes are the times kept for one task.
type taskTimes struct {
	received, acknowledged []int64 // Unix ms, in the order recorded
	reportToAck            []int64 // ms
	succeeded, failed      int64
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

	workReceivedN, workIgnoredN, working atomic.Int64
	resultsAcknowledged, resultsDroppedN atomic.Int64
	reportRetries, progressReportErrors  atomic.Int64
	workMu                               sync.Mutex
	reportErrors                         map[string]int64
	tasks                                map[string]*taskTimes
}

func newSimStats(agents int) *simStats {
	return &simStats{start: time.Now(), agents: agents, checkInErrors: map[string]int64{},
		reportErrors: map[string]int64{}, tasks: map[string]*taskTimes{}}
}

// task returns the times of task; workMu is held.
func (s *simStats) task(task string) *taskTimes {
	t := s.tasks[task]
	if t == nil {
		t = &taskTimes{}
		s.tasks[task] = t
	}
	return t
}

func (s *simStats) workReceived(task string, at time.Time) {
	if s != nil {
		s.workReceivedN.Add(1)
		s.workMu.Lock()
		t := s.task(task)
		t.received = append(t.received, at.UnixMilli())
		s.workMu.Unlock()
	}
}

func (s *simStats) workIgnored() {
	if s != nil {
		s.workIgnoredN.Add(1)
	}
}

func (s *simStats) workStarted() {
	if s != nil {
		s.working.Add(1)
	}
}

func (s *simStats) workEnded() {
	if s != nil {
		s.working.Add(-1)
	}
}

// resultAcknowledged counts a result of task acknowledged at, first sent
// at sent.
func (s *simStats) resultAcknowledged(task, state string, sent, at time.Time) {
	if s != nil {
		s.resultsAcknowledged.Add(1)
		s.workMu.Lock()
		t := s.task(task)
		t.acknowledged = append(t.acknowledged, at.UnixMilli())
		t.reportToAck = append(t.reportToAck, at.Sub(sent).Milliseconds())
		if state == protocol.WorkSucceeded {
			t.succeeded++
		} else {
			t.failed++
		}
		s.workMu.Unlock()
	}
}

func (s *simStats) resultDropped() {
	if s != nil {
		s.resultsDroppedN.Add(1)
	}
}

func (s *simStats) reportRetried() {
	if s != nil {
		s.reportRetries.Add(1)
	}
}

func (s *simStats) reportFailed(err error) {
	if s != nil {
		s.workMu.Lock()
		s.reportErrors[errorKind(err)]++
		s.workMu.Unlock()
	}
}

func (s *simStats) progressFailed() {
	if s != nil {
		s.progressReportErrors.Add(1)
	}
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
	s.snapshotWork(&st)
	return st
}

// snapshotWork fills in the work's statistics.
func (s *simStats) snapshotWork(st *SimStats) {
	st.WorkReceived = s.workReceivedN.Load()
	st.WorkIgnored = s.workIgnoredN.Load()
	st.Working = s.working.Load()
	st.ResultsAcknowledged = s.resultsAcknowledged.Load()
	st.ResultsDropped = s.resultsDroppedN.Load()
	st.ReportRetries = s.reportRetries.Load()
	st.ProgressReportErrors = s.progressReportErrors.Load()
	// Copied under the lock, sorted outside it: agents keep recording.
	type copied struct {
		received, acknowledged, reportToAck []int64
		succeeded, failed                   int64
	}
	s.workMu.Lock()
	st.ReportErrors = maps.Clone(s.reportErrors)
	tasks := make(map[string]copied, len(s.tasks))
	for name, t := range s.tasks {
		tasks[name] = copied{slices.Clone(t.received), slices.Clone(t.acknowledged), slices.Clone(t.reportToAck), t.succeeded, t.failed}
	}
	s.workMu.Unlock()
	st.Tasks = make(map[string]TaskStats, len(tasks))
	var allReceived, allAcknowledged []int64
	for name, t := range tasks {
		slices.Sort(t.received)
		slices.Sort(t.acknowledged)
		slices.Sort(t.reportToAck)
		st.Tasks[name] = TaskStats{Received: eventTimesOf(t.received, s.agents), Acknowledged: eventTimesOf(t.acknowledged, s.agents),
			Succeeded: t.succeeded, Failed: t.failed, ReportToAck: durationsOf(t.reportToAck)}
		allReceived = append(allReceived, t.received...)
		allAcknowledged = append(allAcknowledged, t.acknowledged...)
	}
	slices.Sort(allReceived)
	slices.Sort(allAcknowledged)
	st.WorkReceivedAt = eventTimesOf(allReceived, s.agents)
	st.ResultsAcknowledgedAt = eventTimesOf(allAcknowledged, s.agents)
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
