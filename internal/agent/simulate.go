package agent

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"time"
)

// SimulateOptions configure a simulation: Count agents in one process, for
// load tests of the locator and the task services.
type SimulateOptions struct {
	// Count is how many agents to run.
	Count int
	// FirstIndex is the index of the first agent (0 by default): agents are
	// numbered FirstIndex to FirstIndex+Count-1, and their host names, MAC
	// addresses and hardware IDs derive from the number, so that several
	// processes with disjoint ranges simulate distinct computers.
	FirstIndex int
	// Addresses is the CIDR the agents' claimed addresses come from, one
	// each, consecutive (see EnumerateAddresses).
	Addresses string
	// SourceAddresses, when set, is a CIDR of local addresses: each agent
	// binds its connections to its own ("127.1.0.0/16"), since one source
	// address has only about 28,000 ports.
	SourceAddresses string
	// HostnamePrefix starts every host name; empty means "sim-agent-".
	HostnamePrefix string
	// Locators, CAFile, RootCAs, Token, Wait, RelocateInterval and Version
	// are as in Config; every agent follows the one CA file.
	Locators         []string
	CAFile           string
	RootCAs          *x509.CertPool
	Token            string
	Wait             time.Duration
	RelocateInterval time.Duration
	Version          string
	// RegisterRate is how many registrations per second all agents make at
	// most (agents also start at that pace); 0 means no limit.
	RegisterRate float64
	// StatsInterval is how often a line of statistics is written; 0 means
	// 10s.
	StatsInterval time.Duration
	// Duration ends the simulation after that long; 0 runs until ctx ends.
	Duration time.Duration
	// Stats receives one JSON line (SimStats) per interval and a final one;
	// nil writes none.
	Stats io.Writer
	// OnStats, when set, is called with every line too.
	OnStats func(SimStats)
	// Logger receives the agents' log, with an "agent" attribute; nil
	// discards it (ten thousand agents log a lot).
	Logger *slog.Logger
	// WorkDuration is how long a simulated agent takes to carry out a
	// runScript or reboot item (it runs nothing); 0 means
	// DefaultWorkDuration.
	WorkDuration time.Duration
	// WorkFailPercent is the share of agents, 0 to 100, whose items fail
	// (reason ExitCode, exit code 1); the others succeed. Which agents
	// fail depends only on their index (SimulatedFails), so that runs
	// repeat.
	WorkFailPercent float64

	// timings, when set, replace the agents' default delays (tests).
	timings *timings
}

// DefaultWorkDuration is how long a simulated agent's work takes unless
// told otherwise.
const DefaultWorkDuration = 200 * time.Millisecond

// SimulatedFails says whether the simulated agent number index fails its
// work when percent of agents do. The failing agents are spread evenly:
// of the agents 0 to n-1, exactly ⌊n·percent/100⌋ fail (percent is counted
// in hundredths).
func SimulatedFails(index int, percent float64) bool {
	bp := int64(math.Round(min(max(percent, 0), 100) * 100)) // basis points
	i := int64(max(index, 0))
	return (i+1)*bp/10000 > i*bp/10000
}

// SimulatedIdentity is the identity of the simulated agent number index.
func SimulatedIdentity(prefix string, index int) (hostname, mac, hardwareID string) {
	if prefix == "" {
		prefix = "sim-agent-"
	}
	u := uint32(index)
	return fmt.Sprintf("%s%06d", prefix, index),
		// A locally administered unicast address (02:…): never a real card's.
		fmt.Sprintf("02:53:%02x:%02x:%02x:%02x", byte(u>>24), byte(u>>16), byte(u>>8), byte(u)),
		fmt.Sprintf("5e0a1c00-0000-4000-8000-%012x", u)
}

// Simulate runs opts.Count agents until ctx ends or opts.Duration passes,
// writes their statistics every opts.StatsInterval, and returns the final
// statistics. Each agent has its own claimed address, identity, credential
// (in memory), and HTTP transport; they share the CA pool and a TLS
// session cache. It costs one goroutine per agent, plus the two that
// net/http keeps per open connection. An agent carrying out a work item
// (which it only waits out, without its script) has one more goroutine,
// two while its progress report is sent, and one more connection while a
// report and its check-in are both in flight.
func Simulate(ctx context.Context, opts SimulateOptions) (SimStats, error) {
	if opts.Count <= 0 {
		return SimStats{}, errors.New("simulating: the count of agents must be positive")
	}
	addrs, err := EnumerateAddresses(opts.Addresses, opts.Count)
	if err != nil {
		return SimStats{}, fmt.Errorf("simulating: the agents' addresses: %w", err)
	}
	var sources []netip.Addr
	if opts.SourceAddresses != "" {
		if sources, err = EnumerateAddresses(opts.SourceAddresses, opts.Count); err != nil {
			return SimStats{}, fmt.Errorf("simulating: the source addresses: %w", err)
		}
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = 10 * time.Second
	}
	if opts.WorkDuration <= 0 {
		opts.WorkDuration = DefaultWorkDuration
	}
	if opts.WorkFailPercent < 0 || opts.WorkFailPercent > 100 {
		return SimStats{}, fmt.Errorf("simulating: the share of failing work must be from 0 to 100, not %g", opts.WorkFailPercent)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := defaultTimings()
	if opts.timings != nil {
		t = *opts.timings
	}
	stats := newSimStats(opts.Count)
	pace := newPacer(opts.RegisterRate)
	sessions := newSessionCache(256)
	var bundle *caFile
	if opts.CAFile != "" {
		var err error
		if bundle, err = openCAFile(opts.CAFile); err != nil {
			return SimStats{}, fmt.Errorf("simulating: %w", err)
		}
	}
	agents := make([]*Agent, opts.Count)
	for i := range agents {
		index := opts.FirstIndex + i
		hostname, mac, hwid := SimulatedIdentity(opts.HostnamePrefix, index)
		topts := transportOptions{roots: opts.RootCAs, caFile: bundle, sessions: sessions}
		if sources != nil {
			topts.source = sources[i]
		}
		a, err := newAgent(Config{
			Locators:         opts.Locators,
			RootCAs:          opts.RootCAs,
			Token:            StaticToken(opts.Token),
			Addresses:        StaticAddresses([]string{addrs[i].String()}),
			Hostname:         hostname,
			HardwareID:       hwid,
			MACAddresses:     []string{mac},
			Wait:             opts.Wait,
			RelocateInterval: opts.RelocateInterval,
			Version:          opts.Version,
			Logger:           logger.With("agent", index),
		}, t, topts)
		if err != nil {
			return SimStats{}, fmt.Errorf("simulating agent %d: %w", index, err)
		}
		a.stats, a.pace = stats, pace.wait
		a.sim = simWork{on: true, duration: opts.WorkDuration, fail: SimulatedFails(index, opts.WorkFailPercent)}
		agents[i] = a
	}

	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	report := func(s SimStats) {
		if opts.Stats != nil {
			b, _ := json.Marshal(s)
			_, _ = opts.Stats.Write(append(b, '\n'))
		}
		if opts.OnStats != nil {
			opts.OnStats(s)
		}
	}
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() {
			// Agents start at the registration pace, so that their first
			// locate and registration do not all come at once; that turn
			// is their first registration's.
			if pace.wait(ctx) != nil {
				return
			}
			a.pacedOnce = true
			_ = a.Run(ctx)
		})
	}
	ticker := time.NewTicker(opts.StatsInterval)
	defer ticker.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-ticker.C:
			report(stats.snapshot(false))
		}
	}
	wg.Wait()
	final := stats.snapshot(true)
	report(final)
	return final, nil
}

// pacer hands out turns at most rate per second, in order, without a
// ticker: each caller reserves the next slot and sleeps until it.
type pacer struct {
	interval time.Duration
	mu       sync.Mutex
	next     time.Time
}

func newPacer(rate float64) *pacer {
	if rate <= 0 {
		return &pacer{}
	}
	return &pacer{interval: time.Duration(float64(time.Second) / rate)}
}

// wait returns at the caller's turn, or ctx's error when it ends first.
func (p *pacer) wait(ctx context.Context) error {
	if p.interval == 0 {
		return ctx.Err()
	}
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.interval)
	p.mu.Unlock()
	d := time.Until(slot)
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
