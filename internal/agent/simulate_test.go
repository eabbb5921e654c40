package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

func TestSimulate(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	// Check-ins are held 100ms (the long poll) and come back every 50ms.
	task.Set(func(b *agenttest.Behaviour) { b.MaxHold, b.NextCheckIn = 100*time.Millisecond, 50*time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))

	const count = 50
	var out bytes.Buffer
	tm := testTimings()
	final, err := Simulate(context.Background(), SimulateOptions{
		Count:           count,
		Addresses:       "10.20.0.0/16",
		SourceAddresses: "127.1.0.0/24",
		Locators:        []string{locator.URL},
		RootCAs:         pool(t, ca),
		Token:           testToken,
		Wait:            time.Second,
		RegisterRate:    500, // 50 agents start within 100ms
		StatsInterval:   200 * time.Millisecond,
		Duration:        1500 * time.Millisecond,
		Stats:           &out,
		timings:         &tm,
	})
	if err != nil {
		t.Fatal(err)
	}

	// Every agent registered once, with its own identity and address.
	regs := task.Registrations()
	if len(regs) != count {
		t.Fatalf("%d registrations, want %d", len(regs), count)
	}
	hosts, macs, hwids, addrs := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, r := range regs {
		hosts[r.Request.Hostname], hwids[r.Request.HardwareID] = true, true
		macs[strings.Join(r.Request.MACAddresses, ",")] = true
		addrs[strings.Join(r.Request.Addresses, ",")] = true
	}
	if len(hosts) != count || len(macs) != count || len(hwids) != count || len(addrs) != count {
		t.Errorf("identities are not unique: %d host names, %d MACs, %d hardware IDs, %d addresses", len(hosts), len(macs), len(hwids), len(addrs))
	}
	if !addrs["10.20.0.1"] || !addrs["10.20.0.50"] {
		t.Errorf("the claimed addresses are not 10.20.0.1 to .50: %v", addrs)
	}
	// Registrations are paced: 50 at 500/s take about 100ms.
	if span := regs[count-1].At.Sub(regs[0].At); span < 80*time.Millisecond {
		t.Errorf("50 registrations at 500/s took %s, want about 100ms", span)
	}

	// Each agent checks in from its own source address over its own one
	// connection.
	sources, credentials := map[string]bool{}, map[string]bool{}
	for _, c := range task.CheckIns() {
		host, _, _ := net.SplitHostPort(c.RemoteAddr)
		sources[host] = true
		credentials[c.Credential] = true
	}
	if len(sources) != count || !sources["127.1.0.1"] || !sources["127.1.0.50"] {
		t.Errorf("check-ins came from %d source addresses, want %d from 127.1.0.1 to .50", len(sources), count)
	}
	if len(credentials) != count {
		t.Errorf("%d distinct credentials checked in, want %d", len(credentials), count)
	}
	if n := task.Conns.Load(); n != count {
		t.Errorf("the task service accepted %d connections, want %d: one per agent, kept alive", n, count)
	}

	// The statistics: a JSON line per interval, a final one.
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("%d lines of statistics in 1.5s at 200ms:\n%s", len(lines), out.String())
	}
	var sumInterval, mostHeld int64
	for i, line := range lines {
		var s SimStats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		if s.Final != (i == len(lines)-1) {
			t.Errorf("line %d has final=%v", i, s.Final)
		}
		sumInterval += s.CheckInsInterval
		if !s.Final {
			mostHeld = max(mostHeld, s.Held)
		}
	}
	var raw map[string]any
	_ = json.Unmarshal([]byte(lines[len(lines)-2]), &raw)
	for _, field := range []string{"elapsedSeconds", "agents", "registered", "registrations", "registrationErrors", "checkIns",
		"checkInsInterval", "checkInErrors", "held", "relocations", "failovers", "latencyP50Ms", "latencyP99Ms"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("the statistics lack %q: %s", field, lines[len(lines)-2])
		}
	}
	if final.Agents != count || final.Registered != count || final.Registrations != count || final.RegistrationErrors != 0 {
		t.Errorf("final statistics %+v", final)
	}
	// 50 agents, a check-in every ~150ms for ~1.4s: several hundred.
	// At the end, each agent may drop one answer already sent.
	answered := int64(task.SuccessfulCheckIns())
	if final.CheckIns < 5*count || final.CheckIns > answered || final.CheckIns < answered-count || sumInterval != final.CheckIns {
		t.Errorf("%d check-ins counted (%d over the intervals), the server answered %d", final.CheckIns, sumInterval, task.SuccessfulCheckIns())
	}
	if final.Held != 0 {
		t.Errorf("%d check-ins in flight after the end", final.Held)
	}
	// Each sample sees the check-ins held at that instant: 2/3 of the
	// agents on an idle machine; on a busy one the answers and the next
	// check-ins lag, so the test asks for half at the best sample.
	if mostHeld < count/2 {
		t.Errorf("at most %d check-ins were held at once, while the service holds each for 100ms of every 150ms", mostHeld)
	}
	var mid SimStats
	_ = json.Unmarshal([]byte(lines[len(lines)/2]), &mid)
	// Latency excludes the service's hold: loopback answers in a few ms,
	// not in the 100ms held.
	if mid.LatencyP50Ms <= 0 || mid.LatencyP50Ms > 50 || mid.LatencyP99Ms < mid.LatencyP50Ms {
		t.Errorf("mid-run latency p50 %gms, p99 %gms: want the round trip less the hold", mid.LatencyP50Ms, mid.LatencyP99Ms)
	}
}

func TestSimulateCountsErrors(t *testing.T) {
	ca := agenttest.NewCA(t)
	dead := agenttest.DeadURL(t)
	task := agenttest.NewTaskServer(t, ca, "paris-2", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 20 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", dead, task.URL))
	tm := testTimings()
	ctx, cancel := context.WithCancel(context.Background())
	var revoked bool
	final, err := Simulate(ctx, SimulateOptions{
		Count: 5, Addresses: "10.30.0.0/24", Locators: []string{locator.URL}, RootCAs: pool(t, ca), Token: testToken,
		Wait: time.Second, StatsInterval: 100 * time.Millisecond, timings: &tm,
		OnStats: func(s SimStats) {
			if s.CheckIns >= 20 && !revoked {
				revoked = true
				task.RevokeAll()
			}
			if revoked && s.Registrations >= 10 && s.CheckInErrors["401"] >= 5 {
				cancel()
			}
			if s.ElapsedSeconds > 10 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if final.Failovers < 5 || final.RegistrationErrors < 5 {
		t.Errorf("%d failovers and %d registration errors: each agent tried the dead endpoint first", final.Failovers, final.RegistrationErrors)
	}
	if final.CheckInErrors["401"] < 5 || final.Registrations < 10 || final.Registered != 5 {
		t.Errorf("after revoking: %d refused check-ins, %d registrations, %d registered now", final.CheckInErrors["401"], final.Registrations, final.Registered)
	}
}

func TestSimulatedAgentsTakeWork(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	item := scriptItem("uid-s.1", "never run", 30)
	item.Task = "load/wave-1"
	// Every computer's first result is refused with 503: each is retried.
	var mu sync.Mutex
	refused := map[string]bool{}
	task.Set(func(b *agenttest.Behaviour) {
		b.MaxHold, b.NextCheckIn = 200*time.Millisecond, 20*time.Millisecond
		b.Offer = []protocol.WorkItem{item}
		b.OnReport = func(_ int, w http.ResponseWriter, r *http.Request) bool {
			if !isResult(r) {
				return false
			}
			mu.Lock()
			defer mu.Unlock()
			if refused[bearer(r)] {
				return false
			}
			refused[bearer(r)] = true
			agenttest.WriteError(w, http.StatusServiceUnavailable, "busy")
			return true
		}
	})
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	const count = 20
	tm := testTimings()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	begin := time.Now()
	var lines []SimStats
	final, err := Simulate(ctx, SimulateOptions{
		Count: count, Addresses: "10.50.0.0/24", Locators: []string{locator.URL}, RootCAs: pool(t, ca), Token: testToken,
		Wait: time.Second, StatsInterval: 50 * time.Millisecond, timings: &tm,
		WorkDuration: 150 * time.Millisecond, WorkFailPercent: 25,
		OnStats: func(s SimStats) {
			lines = append(lines, s)
			if s.ResultsAcknowledged >= count && s.Working == 0 {
				cancel()
			}
		},
	})
	end := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if final.ResultsAcknowledged != count {
		t.Fatalf("%d results acknowledged, want %d: %+v", final.ResultsAcknowledged, count, final)
	}

	// Each agent carried the item out once; those chosen to fail (3, 7,
	// 11, 15 and 19: a quarter, spread) failed with exit code 1.
	results := task.Results()
	for i := range count {
		host, _, _ := SimulatedIdentity("", i)
		st, ok := results["sites/"+host+" "+item.ID]
		switch {
		case !ok:
			t.Errorf("no result from %s", host)
		case SimulatedFails(i, 25) != (i%4 == 3):
			t.Errorf("agent %d fails: %v", i, SimulatedFails(i, 25))
		case i%4 == 3 && (st.State != protocol.WorkFailed || st.Reason != protocol.ReasonExitCode || st.ExitCode == nil || *st.ExitCode != 1):
			t.Errorf("%s: %+v, want Failed with exit code 1", host, st)
		case i%4 != 3 && (st.State != protocol.WorkSucceeded || st.ExitCode == nil || *st.ExitCode != 0):
			t.Errorf("%s: %+v, want Succeeded", host, st)
		case st.Finished.Sub(*st.Started) < 150*time.Millisecond:
			t.Errorf("%s: the work took %s, want the 150ms simulated", host, st.Finished.Sub(*st.Started))
		}
	}
	var acked, running int
	for _, r := range task.Reports() {
		if r.Work.Final() && r.Status == http.StatusOK {
			acked++
		}
		if r.Work.State == protocol.WorkRunning {
			running++
		}
	}
	if acked != count || running != count {
		t.Errorf("%d results acknowledged by the server and %d progress reports, want %d each", acked, running, count)
	}
	var busy int
	for _, c := range task.CheckIns() {
		if c.Query.Get(protocol.QueryBusy) == item.ID {
			busy++
		}
	}
	if busy == 0 {
		t.Error("no simulated agent said it was busy")
	}

	// The statistics.
	if final.WorkReceived != count || final.Working != 0 || final.ResultsDropped != 0 ||
		final.ReportRetries < count || final.ReportErrors["503"] < count || final.ProgressReportErrors != 0 {
		t.Errorf("final statistics %+v", final)
	}
	ts, ok := final.Tasks["load/wave-1"]
	if !ok || ts.Succeeded != 15 || ts.Failed != 5 || ts.Received.Count != count || ts.Acknowledged.Count != count {
		t.Fatalf("task statistics %+v", final.Tasks)
	}
	for name, e := range map[string]EventTimes{"received": ts.Received, "acknowledged": ts.Acknowledged} {
		if e.FirstUnixMs < begin.UnixMilli() || e.FirstUnixMs > e.P50UnixMs || e.P50UnixMs > e.P99UnixMs || e.P99UnixMs > e.MaxUnixMs ||
			e.MaxUnixMs > end.UnixMilli() || e.Agents99UnixMs != e.MaxUnixMs {
			t.Errorf("%s times %+v, want first <= p50 <= p99 <= max within [%d, %d], and 99%% of 20 agents at the last",
				name, e, begin.UnixMilli(), end.UnixMilli())
		}
	}
	if ts.Acknowledged.FirstUnixMs < ts.Received.FirstUnixMs+150 {
		t.Errorf("the first result was acknowledged at %d, less than the 150ms of work after the first receipt at %d",
			ts.Acknowledged.FirstUnixMs, ts.Received.FirstUnixMs)
	}
	if final.WorkReceivedAt != ts.Received || final.ResultsAcknowledgedAt != ts.Acknowledged {
		t.Errorf("the totals %+v / %+v differ from the only task's", final.WorkReceivedAt, final.ResultsAcknowledgedAt)
	}
	// Before every agent received its item, agents99 is 0.
	for _, s := range lines {
		if r := s.Tasks["load/wave-1"].Received; r.Count < count && r.Agents99UnixMs != 0 {
			t.Errorf("%d of %d received, yet agents99 is %d", r.Count, count, r.Agents99UnixMs)
		}
	}
	var raw map[string]any
	b, _ := json.Marshal(final)
	_ = json.Unmarshal(b, &raw)
	for _, field := range []string{"workReceived", "workIgnored", "working", "resultsAcknowledged", "resultsDropped", "reportRetries",
		"reportErrors", "progressReportErrors", "workReceivedAt", "resultsAcknowledgedAt", "tasks"} {
		if _, ok := raw[field]; !ok {
			t.Errorf("the statistics lack %q", field)
		}
	}
}

// bearer is the credential of a request.
func bearer(r *http.Request) string {
	v, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return v
}

// Simulated agents download, write, run and upload nothing: their content
// actions succeed after the simulated work's duration, without a package
// endpoint or a disk.
func TestSimulatedAgentsSimulateContentActions(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	content := protocol.Content{Package: "imaging/win11", Digest: "sha256:" + strings.Repeat("ab", 32), Size: 1 << 30}
	items := []protocol.WorkItem{
		{ID: "uid-sd.1", Task: "imaging/deploy", Attempt: 1, Action: protocol.Action{DeployImage: &protocol.DeployImage{Content: content}}},
		{ID: "uid-si.1", Task: "apps/install", Attempt: 1, Action: protocol.Action{InstallSoftware: &protocol.InstallSoftware{Content: content}}},
		{ID: "uid-sc.1", Task: "imaging/capture", Attempt: 1, Action: protocol.Action{CaptureImage: &protocol.CaptureImage{PackageName: "golden"}}},
	}
	task.Set(func(b *agenttest.Behaviour) {
		b.MaxHold, b.NextCheckIn, b.Offer = 100*time.Millisecond, 20*time.Millisecond, items
	})
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	const count = 2
	tm := testTimings()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	final, err := Simulate(ctx, SimulateOptions{
		Count: count, Addresses: "10.60.0.0/24", Locators: []string{locator.URL}, RootCAs: pool(t, ca), Token: testToken,
		Wait: time.Second, StatsInterval: 50 * time.Millisecond, timings: &tm, WorkDuration: 50 * time.Millisecond,
		OnStats: func(s SimStats) {
			if s.ResultsAcknowledged >= count*int64(len(items)) && s.Working == 0 {
				cancel()
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if final.ResultsAcknowledged != count*int64(len(items)) {
		t.Fatalf("%d results acknowledged, want %d", final.ResultsAcknowledged, count*len(items))
	}
	results := task.Results()
	for i := range count {
		host, _, _ := SimulatedIdentity("", i)
		for _, item := range items {
			st := results["sites/"+host+" "+item.ID]
			if st.State != protocol.WorkSucceeded || st.Finished.Sub(*st.Started) < 50*time.Millisecond {
				t.Errorf("%s %s: %+v, want Succeeded after the simulated 50ms", host, item.ID, st)
			}
			if (st.ExitCode != nil) != (item.Action.InstallSoftware != nil) {
				t.Errorf("%s %s: exit code %v, want one for installSoftware only", host, item.ID, st.ExitCode)
			}
		}
	}
}
