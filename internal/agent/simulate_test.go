package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
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
	var sumInterval int64
	for i, line := range lines {
		var s SimStats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i, err, line)
		}
		if s.Final != (i == len(lines)-1) {
			t.Errorf("line %d has final=%v", i, s.Final)
		}
		sumInterval += s.CheckInsInterval
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
	var mid SimStats
	_ = json.Unmarshal([]byte(lines[len(lines)/2]), &mid)
	if mid.Held < count/2 {
		t.Errorf("mid-run only %d check-ins were held, while the service holds each for 100ms of every 150ms", mid.Held)
	}
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
