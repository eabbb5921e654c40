package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"log/slog"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

const testToken = "abcdef.0123456789abcdef"

// testTimings are the agent's delays, shortened: a Retry-After second lasts
// 10ms.
func testTimings() timings {
	return timings{
		failoverDelay:      20 * time.Millisecond,
		relocateBase:       20 * time.Millisecond,
		relocateMax:        100 * time.Millisecond,
		refusedBase:        20 * time.Millisecond,
		refusedMax:         100 * time.Millisecond,
		requestTimeout:     2 * time.Second,
		pollMargin:         time.Second,
		stateWriteInterval: time.Hour,
		secondUnit:         10 * time.Millisecond,
		retryJitter:        0.5,
		reportBase:         20 * time.Millisecond,
		reportMax:          100 * time.Millisecond,
		scriptWaitDelay:    time.Second,
		rebootGrace:        300 * time.Millisecond,
		contentBase:        10 * time.Millisecond,
		contentMax:         50 * time.Millisecond,
		contentRounds:      3,
		stallTimeout:       2 * time.Second,
		uploadChunk:        64 << 10,
		uploadBase:         10 * time.Millisecond,
		uploadMax:          50 * time.Millisecond,
		uploadTries:        3,
	}
}

func pool(t *testing.T, ca *agenttest.CA) *x509.CertPool {
	t.Helper()
	p, err := LoadCAFile(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// baseConfig is an agent of address 10.0.0.9 with a bootstrap token.
func baseConfig(t *testing.T, ca *agenttest.CA, locators ...string) Config {
	return Config{
		Locators:     locators,
		RootCAs:      pool(t, ca),
		Token:        StaticToken(testToken),
		Addresses:    StaticAddresses([]string{"10.0.0.9"}),
		Hostname:     "pc-1",
		HardwareID:   "4c4c4544-0042-3510-8051-b7c04f4e4a32",
		MACAddresses: []string{"aa:bb:cc:dd:ee:01"},
		Wait:         time.Second,
		StateDir:     t.TempDir(),
		Version:      "v0.0.1-test",
		Logger:       slog.New(slog.NewJSONHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// start runs an agent until the test ends; stop ends it earlier.
func start(t *testing.T, cfg Config, tm timings) (a *Agent, stop func()) {
	t.Helper()
	a, err := newAgent(cfg, tm, transportOptions{roots: cfg.RootCAs, source: cfg.SourceAddress})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("the agent did not stop within 5s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

func TestLocateRegisterCheckIn(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	// The first check-in is held for the whole long poll (1s): the agent
	// must wait for it rather than time out. Later ones answer at once.
	task.Set(func(b *agenttest.Behaviour) {
		b.MaxHold, b.NextCheckIn = time.Second, 50*time.Millisecond
		b.Work = nil
		b.OnWork = func(n int, w http.ResponseWriter, r *http.Request) bool {
			if n == 1 {
				task.Set(func(b *agenttest.Behaviour) {
					b.MaxHold = 0
					b.Work = []protocol.WorkItem{{ID: "w-1"}}
				})
			}
			return false
		}
	})
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	cfg := baseConfig(t, ca, agenttest.DeadURL(t), locator.URL) // the first locator is down
	_, stop := start(t, cfg, testTimings())

	agenttest.Eventually(t, 10*time.Second, func() bool { return task.SuccessfulCheckIns() >= 4 }, "the agent checked in %d times, want 4", task.SuccessfulCheckIns())
	stop()

	if reqs := locator.Requests(); len(reqs) != 1 || !slices.Equal(reqs[0], []string{"10.0.0.9"}) {
		t.Errorf("locate requests %v, want one with the agent's address", reqs)
	}
	regs := task.Registrations()
	if len(regs) != 1 {
		t.Fatalf("%d registrations, want 1", len(regs))
	}
	r := regs[0]
	if r.Authorization != "Bearer "+testToken {
		t.Errorf("registered with Authorization %q, want the bootstrap token", r.Authorization)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{32}$`).MatchString(r.Request.RequestID) {
		t.Errorf("request ID %q", r.Request.RequestID)
	}
	want := protocol.RegisterRequest{RequestID: r.Request.RequestID, Hostname: "pc-1", HardwareID: cfg.HardwareID,
		MACAddresses: cfg.MACAddresses, Addresses: []string{"10.0.0.9"}, AgentVersion: "v0.0.1-test"}
	if !equalRegister(r.Request, want) {
		t.Errorf("registered with %+v, want %+v", r.Request, want)
	}

	checkIns := task.CheckIns()
	credential, _ := ReadCredential(cfg.StateDir)
	for i, c := range checkIns {
		if c.Credential != credential || credential == "" {
			t.Errorf("check-in %d used credential %q, want the one registered (%q)", i, c.Credential, credential)
		}
		if q := c.Query; q.Get(protocol.QueryWait) != "1" || !slices.Equal(q[protocol.QueryAddress], []string{"10.0.0.9"}) || q.Get(protocol.QueryVersion) != "v0.0.1-test" {
			t.Errorf("check-in %d has query %v", i, q)
		}
	}
	if held := checkIns[1].At.Sub(checkIns[0].At); held < time.Second {
		t.Errorf("the second check-in came %s after the first, which was held for 1s", held)
	}
	for i := 2; i < len(checkIns); i++ {
		if gap := checkIns[i].At.Sub(checkIns[i-1].At); gap < 50*time.Millisecond {
			t.Errorf("check-in %d came %s after the one before, sooner than the 50ms the service asked", i, gap)
		}
	}

	// The state is kept for `agent status`, the credential apart and
	// private.
	s, err := ReadState(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.ComputerName() != "sites/pc-1" || s.Site != "paris" || s.SiteServer != "paris-1" || s.TaskEndpoint != task.URL ||
		s.Locator != locator.URL || s.LastCheckIn.Before(checkIns[len(checkIns)-1].At.Add(-time.Second)) {
		t.Errorf("state %+v", s)
	}
	if fi, err := os.Stat(filepath.Join(cfg.StateDir, CredentialFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credential file: %v, %v", fi, err)
	}

	// A restarted agent keeps its identity: it checks in without
	// registering again.
	before := task.SuccessfulCheckIns()
	_, stop = start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() > before }, "the restarted agent did not check in")
	stop()
	if n := len(task.Registrations()); n != 1 {
		t.Errorf("the restarted agent registered again (%d registrations)", n)
	}
}

func equalRegister(a, b protocol.RegisterRequest) bool {
	return a.RequestID == b.RequestID && a.Hostname == b.Hostname && a.HardwareID == b.HardwareID &&
		slices.Equal(a.MACAddresses, b.MACAddresses) && slices.Equal(a.Addresses, b.Addresses) && a.AgentVersion == b.AgentVersion
}

func TestStateFileWrittenOnChangeOnly(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 5 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	cfg := baseConfig(t, ca, locator.URL)
	_, stop := start(t, cfg, testTimings()) // stateWriteInterval is 1h
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 2 }, "no check-in")
	first, err := ReadState(cfg.StateDir)
	if err != nil || first.LastCheckIn.IsZero() {
		t.Fatalf("after the first check-ins the state is %+v, %v: the first check-in must be written", first, err)
	}
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 20 }, "the agent stopped checking in")
	if s, _ := ReadState(cfg.StateDir); !s.LastCheckIn.Equal(first.LastCheckIn) {
		t.Errorf("the state file was rewritten for a mere check-in: %s then %s", first.LastCheckIn, s.LastCheckIn)
	}
	stop()
	if s, _ := ReadState(cfg.StateDir); !s.LastCheckIn.After(first.LastCheckIn) {
		t.Errorf("the agent did not write its last check-in when it stopped")
	}
}

func TestRefusesServerOfAnotherCA(t *testing.T) {
	ca, other := agenttest.NewCA(t), agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, other, "rogue", "paris", testToken)
	locator := agenttest.NewLocator(t, other, agenttest.Endpoints("paris", task.URL))
	a, err := newAgent(baseConfig(t, ca, locator.URL), testTimings(), transportOptions{roots: pool(t, ca)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.client.locate(context.Background(), locator.URL, []string{"10.0.0.9"})
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("locating at a server of another CA: %v, want an unknown authority error", err)
	}
	_, stop := start(t, baseConfig(t, ca, locator.URL), testTimings())
	time.Sleep(200 * time.Millisecond)
	stop()
	if n := len(locator.Requests()); n != 0 {
		t.Errorf("the agent sent %d locate requests to a server whose certificate is not from its CA", n)
	}
	if _, err := newAgent(Config{Locators: []string{locator.URL}}, testTimings(), transportOptions{}); err == nil {
		t.Error("an agent without a CA bundle was made: it would trust the system roots")
	}
	if _, err := newAgent(Config{Locators: []string{"http://x"}, RootCAs: pool(t, ca)}, testTimings(), transportOptions{}); err == nil {
		t.Error("an agent with a plain-HTTP locator was made")
	}
}

func TestRefusedCredentialRegistersAgain(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 10 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	cfg := baseConfig(t, ca, locator.URL)
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 2 }, "no check-in")
	first, _ := ReadCredential(cfg.StateDir)
	task.RevokeAll()
	agenttest.Eventually(t, 5*time.Second, func() bool { return len(task.Registrations()) == 2 }, "the agent did not register again after its credential was refused")
	agenttest.Eventually(t, 5*time.Second, func() bool {
		c := task.CheckIns()
		return c[len(c)-1].Status == http.StatusOK && c[len(c)-1].Credential != first
	}, "the agent does not check in with its new credential")
	if second, _ := ReadCredential(cfg.StateDir); second == first || second == "" {
		t.Errorf("the credential file still holds the refused credential")
	}
	if regs := task.Registrations(); regs[0].Request.RequestID == regs[1].Request.RequestID {
		t.Errorf("the second registration reused the request ID %q", regs[0].Request.RequestID)
	}
}

func TestRefusedCredentialWithoutToken(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	cfg := baseConfig(t, ca, locator.URL)
	cfg.Token = nil
	if err := WriteCredential(cfg.StateDir, "revoked"); err != nil {
		t.Fatal(err)
	}
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return len(task.CheckIns()) >= 3 }, "the agent gave up checking in")
	if n := len(task.Registrations()); n != 0 {
		t.Errorf("an agent without a token sent %d registrations", n)
	}
	for _, c := range task.CheckIns() {
		if c.Credential != "revoked" {
			t.Errorf("checked in with %q", c.Credential)
		}
	}
	gaps := task.CheckIns()
	if d := gaps[2].At.Sub(gaps[1].At); d < 5*time.Millisecond {
		t.Errorf("refused check-ins are retried %s apart: the agent must back off", d)
	}
}

func TestRegistrationAnswers(t *testing.T) {
	ca := agenttest.NewCA(t)
	for _, tc := range []struct {
		name string
		// answer answers the first registration; the second is the
		// server's usual.
		answer       func(w http.ResponseWriter)
		wantLocates  int
		minGap       time.Duration
		distinctIDs  bool
		sameEndpoint bool
	}{
		{"409 draws a new request ID", func(w http.ResponseWriter) { agenttest.WriteError(w, http.StatusConflict, "replay") }, 1, 0, true, true},
		{"401 backs off and retries", func(w http.ResponseWriter) { agenttest.WriteError(w, http.StatusUnauthorized, "bad token") }, 1, 5 * time.Millisecond, true, true},
		{"400 backs off and retries", func(w http.ResponseWriter) { agenttest.WriteError(w, http.StatusBadRequest, "bad hostname") }, 1, 5 * time.Millisecond, true, true},
		{"421 locates again", func(w http.ResponseWriter) { agenttest.WriteError(w, protocol.StatusRelocate, "not mine") }, 2, 0, true, true},
		{"503 with Retry-After waits that long", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "20") // 200ms in tests
			agenttest.WriteError(w, http.StatusServiceUnavailable, "busy")
		}, 1, 200 * time.Millisecond, true, true},
		{"429 with Retry-After waits that long", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "20")
			agenttest.WriteError(w, http.StatusTooManyRequests, "slow down")
		}, 1, 200 * time.Millisecond, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
			task.Set(func(b *agenttest.Behaviour) {
				b.OnRegister = func(n int, w http.ResponseWriter, _ *http.Request) bool {
					if n == 0 {
						tc.answer(w)
						return true
					}
					return false
				}
			})
			locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
			start(t, baseConfig(t, ca, locator.URL), testTimings())
			agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 1 }, "the agent never checked in")
			regs := task.Registrations()
			if len(regs) != 2 {
				t.Fatalf("%d registrations, want 2", len(regs))
			}
			if regs[0].Request.RequestID == regs[1].Request.RequestID {
				t.Errorf("the retry reused request ID %q", regs[0].Request.RequestID)
			}
			if gap := regs[1].At.Sub(regs[0].At); gap < tc.minGap {
				t.Errorf("retried after %s, want at least %s", gap, tc.minGap)
			}
			if n := len(locator.Requests()); n != tc.wantLocates {
				t.Errorf("%d locate requests, want %d", n, tc.wantLocates)
			}
		})
	}
}

func TestTokenFileFixedWhileRunning(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("wrong.token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, ca, locator.URL)
	cfg.Token = TokenFile(tokenFile)
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return len(task.Registrations()) >= 2 }, "the agent does not retry a refused token")
	if task.SuccessfulCheckIns() != 0 {
		t.Fatal("checked in with a refused token")
	}
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 1 }, "the agent did not pick up the fixed token file")
}

func TestCheckInAnswers(t *testing.T) {
	ca := agenttest.NewCA(t)
	for _, tc := range []struct {
		name        string
		answer      func(w http.ResponseWriter)
		wantLocates int
		minGap      time.Duration
	}{
		{"421 locates again", func(w http.ResponseWriter) { agenttest.WriteError(w, protocol.StatusRelocate, "not mine") }, 2, 0},
		{"503 with Retry-After comes back after it", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "20")
			agenttest.WriteError(w, http.StatusServiceUnavailable, "busy")
		}, 1, 200 * time.Millisecond},
		{"429 with Retry-After comes back after it", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "20")
			agenttest.WriteError(w, http.StatusTooManyRequests, "slow down")
		}, 1, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
			task.Set(func(b *agenttest.Behaviour) {
				b.OnWork = func(n int, w http.ResponseWriter, _ *http.Request) bool {
					if n == 0 {
						tc.answer(w)
						return true
					}
					return false
				}
			})
			locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
			start(t, baseConfig(t, ca, locator.URL), testTimings())
			agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 1 }, "the agent never checked in")
			c := task.CheckIns()
			if gap := c[1].At.Sub(c[0].At); gap < tc.minGap {
				t.Errorf("came back after %s, want at least %s", gap, tc.minGap)
			}
			if n := len(locator.Requests()); n != tc.wantLocates {
				t.Errorf("%d locate requests, want %d", n, tc.wantLocates)
			}
			if n := len(task.Registrations()); n != 1 {
				t.Errorf("%d registrations, want 1", n)
			}
		})
	}
}

func TestRelocateMovesToAnotherServer(t *testing.T) {
	ca := agenttest.NewCA(t)
	paris := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	lyon := agenttest.NewTaskServer(t, ca, "lyon-1", "lyon", testToken)
	agenttest.ShareCredentials(paris, lyon)
	paris.Set(func(b *agenttest.Behaviour) {
		b.NextCheckIn = 10 * time.Millisecond
		b.OnWork = func(n int, w http.ResponseWriter, _ *http.Request) bool {
			if n >= 2 {
				agenttest.WriteError(w, protocol.StatusRelocate, "the agent's site is lyon")
				return true
			}
			return false
		}
	})
	locator := agenttest.NewLocator(t, ca, func(n int, _ []string) protocol.LocateResponse {
		if n == 0 {
			return protocol.LocateResponse{Site: "paris", TaskEndpoints: []string{paris.URL}}
		}
		return protocol.LocateResponse{Site: "lyon", TaskEndpoints: []string{lyon.URL}}
	})
	cfg := baseConfig(t, ca, locator.URL)
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return lyon.SuccessfulCheckIns() >= 1 }, "the agent did not move to lyon after a 421")
	if n := len(lyon.Registrations()); n != 0 {
		t.Errorf("the agent registered again at lyon: its credential is valid at every server of the cluster")
	}
	if n := len(paris.CheckIns()); n != 3 {
		t.Errorf("%d check-ins at paris, want 3 (the last answered 421)", n)
	}
}

func TestFailOverToTheNextEndpoint(t *testing.T) {
	ca := agenttest.NewCA(t)
	backup := agenttest.NewTaskServer(t, ca, "paris-2", "paris", testToken)
	dead := agenttest.DeadURL(t)
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", dead, backup.URL))
	cfg := baseConfig(t, ca, locator.URL)
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return backup.SuccessfulCheckIns() >= 2 }, "the agent did not fail over to the second endpoint")
	if n := len(locator.Requests()); n != 1 {
		t.Errorf("%d locate requests: failing over to a live endpoint needs no relocation", n)
	}
	if s, _ := ReadState(cfg.StateDir); s.TaskEndpoint != backup.URL || s.SiteServer != "paris-2" {
		t.Errorf("the state says %s at %s", s.SiteServer, s.TaskEndpoint)
	}
}

func TestFailOverOnServerError(t *testing.T) {
	ca := agenttest.NewCA(t)
	sick := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	backup := agenttest.NewTaskServer(t, ca, "paris-2", "paris", testToken)
	sick.Set(func(b *agenttest.Behaviour) {
		b.OnWork = func(int, http.ResponseWriter, *http.Request) bool { panic(http.ErrAbortHandler) } // the connection drops
		b.OnRegister = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
			agenttest.WriteError(w, http.StatusBadGateway, "no API server")
			return true
		}
	})
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", sick.URL, backup.URL))
	start(t, baseConfig(t, ca, locator.URL), testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return backup.SuccessfulCheckIns() >= 1 }, "the agent did not fail over after a 502")
	if n := len(sick.Registrations()); n != 1 {
		t.Errorf("%d registrations at the failing server, want 1", n)
	}
}

func TestEveryEndpointDeadRelocates(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "lyon-1", "lyon", testToken)
	deadA, deadB := agenttest.DeadURL(t), agenttest.DeadURL(t)
	locator := agenttest.NewLocator(t, ca, func(n int, _ []string) protocol.LocateResponse {
		if n < 2 {
			return protocol.LocateResponse{Site: "paris", TaskEndpoints: []string{deadA, deadB}}
		}
		return protocol.LocateResponse{Site: "paris", TaskEndpoints: []string{task.URL}}
	})
	start(t, baseConfig(t, ca, locator.URL), testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 1 }, "the agent did not relocate when every endpoint was dead")
	if n := len(locator.Requests()); n != 3 {
		t.Errorf("%d locate requests, want 3 (two rounds of dead endpoints, then a live one)", n)
	}
}

func TestNoServerYetLocatesAgainAfterRetryAfter(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	var mu sync.Mutex
	var at []time.Time
	locator := agenttest.NewLocator(t, ca, func(n int, _ []string) protocol.LocateResponse {
		mu.Lock()
		at = append(at, time.Now())
		mu.Unlock()
		if n == 0 {
			return protocol.LocateResponse{Rule: protocol.RuleNoSite, RetryAfterSeconds: 20} // 200ms in tests
		}
		return protocol.LocateResponse{Site: "paris", TaskEndpoints: []string{task.URL}}
	})
	start(t, baseConfig(t, ca, locator.URL), testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return task.SuccessfulCheckIns() >= 1 }, "the agent never checked in")
	mu.Lock()
	defer mu.Unlock()
	if gap := at[1].Sub(at[0]); gap < 200*time.Millisecond {
		t.Errorf("located again after %s, want at least the 200ms asked", gap)
	}
}

func TestFallbackReturnsToPreferredServer(t *testing.T) {
	ca := agenttest.NewCA(t)
	fallback := agenttest.NewTaskServer(t, ca, "central", "", testToken)
	preferred := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	agenttest.ShareCredentials(fallback, preferred)
	for _, s := range []*agenttest.TaskServer{fallback, preferred} {
		s.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 10 * time.Millisecond })
	}
	locator := agenttest.NewLocator(t, ca, func(n int, _ []string) protocol.LocateResponse {
		if n == 0 {
			return protocol.LocateResponse{Site: "paris", Rule: protocol.RuleSiteNotReady, TaskEndpoints: []string{fallback.URL}, RetryAfterSeconds: 20}
		}
		return protocol.LocateResponse{Site: "paris", Rule: protocol.RuleSite, TaskEndpoints: []string{preferred.URL}}
	})
	start(t, baseConfig(t, ca, locator.URL), testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return preferred.SuccessfulCheckIns() >= 1 }, "the agent stayed on the fallback")
	if n := len(preferred.Registrations()); n != 0 {
		t.Errorf("the agent registered again at its preferred server")
	}
	if fallback.SuccessfulCheckIns() < 3 {
		t.Errorf("only %d check-ins at the fallback: the agent must use it until its retryAfterSeconds", fallback.SuccessfulCheckIns())
	}
}

func TestPeriodicRelocation(t *testing.T) {
	ca := agenttest.NewCA(t)
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 10 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, agenttest.Endpoints("paris", task.URL))
	cfg := baseConfig(t, ca, locator.URL)
	cfg.RelocateInterval = 100 * time.Millisecond
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return len(locator.Requests()) >= 3 }, "the agent does not locate again periodically")
}

func TestAddressChangeMovesToNewSite(t *testing.T) {
	ca := agenttest.NewCA(t)
	paris := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	lyon := agenttest.NewTaskServer(t, ca, "lyon-1", "lyon", testToken)
	agenttest.ShareCredentials(paris, lyon)
	for _, s := range []*agenttest.TaskServer{paris, lyon} {
		s.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 10 * time.Millisecond })
	}
	locator := agenttest.NewLocator(t, ca, func(_ int, addrs []string) protocol.LocateResponse {
		if strings.HasPrefix(addrs[0], "10.2.") {
			return protocol.LocateResponse{Site: "lyon", TaskEndpoints: []string{lyon.URL}}
		}
		return protocol.LocateResponse{Site: "paris", TaskEndpoints: []string{paris.URL}}
	})
	file := filepath.Join(t.TempDir(), "addresses")
	if err := os.WriteFile(file, []byte("10.1.0.5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t, ca, locator.URL)
	cfg.Addresses = AddressesFile(file)
	start(t, cfg, testTimings())
	agenttest.Eventually(t, 5*time.Second, func() bool { return paris.SuccessfulCheckIns() >= 2 }, "no check-in at paris")
	if err := os.WriteFile(file, []byte("10.2.0.5\nfd00::5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	agenttest.Eventually(t, 5*time.Second, func() bool { return lyon.SuccessfulCheckIns() >= 1 }, "the agent did not move to lyon when its address changed")
	if n := len(lyon.Registrations()); n != 0 {
		t.Errorf("the agent registered again at lyon")
	}
	reqs := locator.Requests()
	if !slices.Equal(reqs[len(reqs)-1], []string{"10.2.0.5", "fd00::5"}) {
		t.Errorf("located with %v, want the new addresses", reqs[len(reqs)-1])
	}
	if q := lyon.CheckIns()[0].Query; !slices.Equal(q[protocol.QueryAddress], []string{"10.2.0.5", "fd00::5"}) {
		t.Errorf("checked in at lyon with addresses %v", q[protocol.QueryAddress])
	}
	var s State
	agenttest.Eventually(t, 5*time.Second, func() bool {
		s, _ = ReadState(cfg.StateDir)
		return s.Site == "lyon" && s.SiteServer == "lyon-1" && slices.Equal(s.Addresses, []string{"10.2.0.5", "fd00::5"})
	}, "the state does not say the agent is at lyon-1 with its new addresses")
	// A broken file keeps the last addresses rather than stopping.
	if err := os.WriteFile(file, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := lyon.SuccessfulCheckIns()
	agenttest.Eventually(t, 5*time.Second, func() bool { return lyon.SuccessfulCheckIns() >= n+2 }, "a broken addresses file stopped the check-ins")
}
