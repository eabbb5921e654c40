package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/siteops/site-operator/internal/agent"
)

// statsInterval is how often each simulate process prints its statistics.
const statsInterval = 10 * time.Second

// statsLine is one line of a simulate process's statistics, with the time
// the harness read it.
type statsLine struct {
	agent.SimStats
	process int
	at      time.Time
}

// simulation is the simulate processes of one level.
type simulation struct {
	procs []*simProcess
	start time.Time

	mu    sync.Mutex
	lines []statsLine
	// last is each process's latest line.
	last []agent.SimStats
}

type simProcess struct {
	cmd     *exec.Cmd
	count   int
	logFile string
	exited  chan struct{}
	waitErr error
}

// startAgents starts n agents in processes of at most perProcess agents,
// sharing registerRate: process p runs agents p·perProcess onwards,
// claiming addresses from 10.64+p.0.0/16 and binding to 127.1+p.0.0/16.
// extra are more flags for every process.
func startAgents(bin, dir string, n, perProcess int, registerRate float64, locatorURL, caFile string, extra ...string) (*simulation, error) {
	nProcs := (n + perProcess - 1) / perProcess
	if nProcs > 63 {
		return nil, fmt.Errorf("%d simulate processes: at most 63 (10.64.0.0/10 holds 64 /16s)", nProcs)
	}
	s := &simulation{last: make([]agent.SimStats, nProcs), start: time.Now()}
	for p := range nProcs {
		first := p * perProcess
		count := min(perProcess, n-first)
		sp := &simProcess{count: count, logFile: filepath.Join(dir, fmt.Sprintf("agents-%d.log", p)), exited: make(chan struct{})}
		args := []string{"simulate",
			"--count", strconv.Itoa(count),
			"--first-index", strconv.Itoa(first),
			"--addresses", fmt.Sprintf("10.%d.0.0/16", 64+p),
			"--source-addresses", fmt.Sprintf("127.%d.0.0/16", 1+p),
			"--locator", locatorURL,
			"--ca-file", caFile,
			"--token", token,
			"--register-rate", strconv.FormatFloat(registerRate*float64(count)/float64(n), 'f', 3, 64),
			"--stats-interval", statsInterval.String(),
		}
		sp.cmd = exec.Command(bin, append(args, extra...)...)
		logf, err := os.Create(sp.logFile)
		if err != nil {
			s.stop()
			return nil, err
		}
		sp.cmd.Stderr = logf
		stdout, err := sp.cmd.StdoutPipe()
		if err != nil {
			logf.Close()
			s.stop()
			return nil, err
		}
		if err := sp.cmd.Start(); err != nil {
			logf.Close()
			s.stop()
			return nil, fmt.Errorf("starting simulate process %d: %w", p, err)
		}
		s.procs = append(s.procs, sp)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var line agent.SimStats
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					continue
				}
				s.mu.Lock()
				s.lines = append(s.lines, statsLine{SimStats: line, process: p, at: time.Now()})
				s.last[p] = line
				s.mu.Unlock()
			}
			sp.waitErr = sp.cmd.Wait()
			logf.Close()
			close(sp.exited)
		}()
	}
	return s, nil
}

// alive returns an error once a process has exited.
func (s *simulation) alive() error {
	for i, p := range s.procs {
		select {
		case <-p.exited:
			return fmt.Errorf("simulate process %d exited (%w); see %s", i, p.waitErr, p.logFile)
		default:
		}
	}
	return nil
}

// totals sums the processes' latest lines.
func (s *simulation) totals() simTotals {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := simTotals{checkInErrors: map[string]int64{}}
	for _, l := range s.last {
		t.registered += l.Registered
		t.registrations += l.Registrations
		t.registrationErrors += l.RegistrationErrors
		t.checkIns += l.CheckIns
		t.held += l.Held
		t.relocations += l.Relocations
		t.failovers += l.Failovers
		for k, v := range l.CheckInErrors {
			t.checkInErrors[k] += v
		}
	}
	return t
}

// linesBetween returns the lines read in (from, to].
func (s *simulation) linesBetween(from, to time.Time) []statsLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []statsLine
	for _, l := range s.lines {
		if l.at.After(from) && !l.at.After(to) {
			out = append(out, l)
		}
	}
	return out
}

// stop ends every process with SIGTERM (each prints a final line).
func (s *simulation) stop() {
	var wg sync.WaitGroup
	for _, p := range s.procs {
		wg.Go(func() { stopProcess(p.cmd.Process, p.exited, 30*time.Second) })
	}
	wg.Wait()
}

// cpu is the CPU time of every simulate process.
func (s *simulation) cpu() time.Duration {
	var total time.Duration
	for _, p := range s.procs {
		if d, err := cpuTime(p.cmd.Process.Pid); err == nil {
			total += d
		}
	}
	return total
}

// simTotals are the sums of the processes' counters.
type simTotals struct {
	registered, registrations, registrationErrors int64
	checkIns, held, relocations, failovers        int64
	checkInErrors                                 map[string]int64
}
