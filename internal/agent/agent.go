package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// TokenSource returns the bootstrap token ("id.secret"). The agent calls it
// before each registration, so that a token file fixed by an administrator
// is used without a restart.
type TokenSource func() (string, error)

// StaticToken is a TokenSource that returns token.
func StaticToken(token string) TokenSource {
	return func() (string, error) { return token, nil }
}

// TokenFile is a TokenSource that reads path at each call.
func TokenFile(path string) TokenSource {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("reading the bootstrap token: %w", err)
		}
		t := strings.TrimSpace(string(b))
		if t == "" {
			return "", fmt.Errorf("reading the bootstrap token: %s is empty", path)
		}
		return t, nil
	}
}

// Defaults of Config.
const (
	DefaultWait             = 60 * time.Second
	DefaultRelocateInterval = time.Hour
)

// Config configures an agent.
type Config struct {
	// Locators are the locators' base URLs ("https://manager:9443"), tried
	// in turn.
	Locators []string
	// CAFile is the PEM bundle of the only CAs the agent trusts (--ca-file):
	// reread when it changes, at the next connection (looked at at most
	// once a second), so a bundle rewritten with the operator's next CA is
	// trusted without a restart; a rewrite that does not load leaves the
	// CAs loaded last. It is read at New: a missing or empty file fails it.
	CAFile string
	// RootCAs, when CAFile is empty, are the only CAs the agent trusts: a
	// fixed pool.
	RootCAs *x509.CertPool
	// Token is the bootstrap token; nil when the agent has none (it then
	// only checks in with the credential it already has).
	Token TokenSource
	// Addresses returns the agent's addresses; nil means the global-unicast
	// addresses of its interfaces.
	Addresses AddressSource
	// Hostname is the computer's host name; empty means os.Hostname.
	Hostname string
	// HardwareID is the SMBIOS system UUID; empty means read it from the
	// firmware when readable.
	HardwareID string
	// MACAddresses are the computer's MAC addresses; nil means those of its
	// non-loopback interfaces.
	MACAddresses []string
	// Wait is the long poll asked of the task service (whole seconds, at
	// most protocol.MaxWaitSeconds); 0 means DefaultWait.
	Wait time.Duration
	// SourceAddress, when valid, is the local address of every connection.
	SourceAddress netip.Addr
	// StateDir keeps the credential, State and the work (WorkFile,
	// DoneFile, and the scripts while they run); empty keeps them in
	// memory only (the simulation).
	StateDir string
	// RebootCommand restarts the computer after a reboot work item
	// succeeded and the task service recorded it ("shutdown -r now"),
	// split at spaces; empty restarts nothing (DefaultRebootCommand is the
	// command's default).
	RebootCommand string
	// RelocateInterval is how often the agent locates again while all is
	// well, jittered; 0 means DefaultRelocateInterval.
	RelocateInterval time.Duration
	// Disk is the disk that deployImage writes and captureImage reads: a
	// block device ("/dev/sda"), or a file (tests). Empty: those actions
	// fail with reason DiskFailed.
	Disk string
	// Version is the agent's version, sent to the services.
	Version string
	// Logger receives the agent's log; nil means slog.Default().
	Logger *slog.Logger
}

// timings are the agent's delays. Tests shorten them.
type timings struct {
	// failoverDelay bounds the random delay before the next endpoint is
	// tried.
	failoverDelay time.Duration
	// relocate is the back-off between rounds of locating once every
	// endpoint (or every locator) failed.
	relocateBase, relocateMax time.Duration
	// refused is the back-off after the service refused the agent (401 or
	// 400), waiting for an administrator.
	refusedBase, refusedMax time.Duration
	// requestTimeout bounds a locate or a registration; pollMargin is added
	// to the long poll to bound a check-in.
	requestTimeout, pollMargin time.Duration
	// stateWriteInterval is how often the state file is written when only
	// the last check-in changed.
	stateWriteInterval time.Duration
	// secondUnit is what a second of Retry-After or retryAfterSeconds lasts.
	secondUnit time.Duration
	// retryJitter is the fraction by which a delay the server asked for is
	// lengthened at most.
	retryJitter float64
	// report is the back-off between attempts to send a result.
	reportBase, reportMax time.Duration
	// scriptWaitDelay is how long the output of a script that ended is
	// still read (processes it started may hold it open).
	scriptWaitDelay time.Duration
	// rebootGrace is how long the agent takes no other work after its
	// reboot command succeeded, while the computer goes down.
	rebootGrace time.Duration
	// content is the back-off between the rounds of a download over the
	// package endpoints; contentRounds is how many rounds fail before the
	// download does.
	contentBase, contentMax time.Duration
	contentRounds           int
	// stallTimeout is how long a download or an upload request may go
	// without moving a byte before it is given up.
	stallTimeout time.Duration
	// uploadChunk is the size of a capture's PATCH (at most
	// protocol.MaxUploadChunkBytes).
	uploadChunk int64
	// upload is the back-off between the attempts of a capture's requests
	// and between rounds over the package endpoints; uploadTries is how
	// many times an upload's status is asked after a failed request
	// before its endpoint counts as down.
	uploadBase, uploadMax time.Duration
	uploadTries           int
}

func defaultTimings() timings {
	return timings{
		failoverDelay:      2 * time.Second,
		relocateBase:       time.Second,
		relocateMax:        5 * time.Minute,
		refusedBase:        15 * time.Second,
		refusedMax:         10 * time.Minute,
		requestTimeout:     30 * time.Second,
		pollMargin:         15 * time.Second,
		stateWriteInterval: time.Minute,
		secondUnit:         time.Second,
		retryJitter:        0.5,
		reportBase:         time.Second,
		reportMax:          time.Minute,
		scriptWaitDelay:    5 * time.Second,
		rebootGrace:        5 * time.Minute,
		contentBase:        2 * time.Second,
		contentMax:         time.Minute,
		contentRounds:      10,
		stallTimeout:       time.Minute,
		uploadChunk:        8 << 20,
		uploadBase:         time.Second,
		uploadMax:          30 * time.Second,
		uploadTries:        4,
	}
}

// Agent is one agent. Run drives it.
type Agent struct {
	cfg    Config
	t      timings
	log    *slog.Logger
	client *client
	// closeIdle drops the idle connection when the agent moves to other
	// endpoints.
	closeIdle func()
	stats     *simStats // nil outside a simulation
	// pace, when set, waits for the agent's turn to register.
	pace func(ctx context.Context) error
	// pacedOnce says the agent already waited for a turn (at its start),
	// which its next registration uses.
	pacedOnce bool

	addrs        []string // as last read
	locatedAddrs []string // as last located with
	endpoints    []string // the task endpoints of the last locate answer
	current      int      // index in endpoints
	needLocate   bool
	hasLocated   bool // a locate answer was received at least once
	relocateAt   time.Time
	locatorNext  int // index in cfg.Locators to try first

	credential string
	state      State // as the agent knows it
	written    State // as last written
	writtenAt  time.Time

	relocate backoff
	refused  backoff

	// work is the item the agent carries out and what it finished;
	// workers are the goroutines of the item, which Run waits for.
	work    workState
	workers sync.WaitGroup
	// sim, in a simulation, stands for the work.
	sim simWork
}

// simWork says how a simulated agent carries out work.
type simWork struct {
	on bool
	// duration is how long an item takes.
	duration time.Duration
	// fail makes every item fail, with exit code 1.
	fail bool
}

// New checks cfg and returns an agent. It reads the state directory, so
// that a restarted agent keeps its credential.
func New(cfg Config) (*Agent, error) {
	return newAgent(cfg, defaultTimings(), transportOptions{roots: cfg.RootCAs, source: cfg.SourceAddress})
}

func newAgent(cfg Config, t timings, topts transportOptions) (*Agent, error) {
	if len(cfg.Locators) == 0 {
		return nil, errors.New("no locator: give at least one locator URL")
	}
	for _, l := range cfg.Locators {
		if !strings.HasPrefix(l, "https://") {
			return nil, fmt.Errorf("locator %q: the agent speaks HTTPS only", l)
		}
	}
	if cfg.CAFile != "" && topts.caFile == nil {
		f, err := openCAFile(cfg.CAFile)
		if err != nil {
			return nil, err
		}
		topts.caFile = f
	}
	if cfg.RootCAs == nil && topts.caFile == nil {
		return nil, errors.New("no CA bundle: the agent trusts only the CAs it is given")
	}
	if cfg.Wait == 0 {
		cfg.Wait = DefaultWait
	}
	if cfg.Wait < time.Second || cfg.Wait > protocol.MaxWaitSeconds*time.Second {
		return nil, fmt.Errorf("wait %s: must be between 1s and %ds", cfg.Wait, protocol.MaxWaitSeconds)
	}
	if cfg.RelocateInterval == 0 {
		cfg.RelocateInterval = DefaultRelocateInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Addresses == nil {
		cfg.Addresses = InterfaceAddresses
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("reading the host name: %w", err)
		}
		cfg.Hostname = h
	}
	if cfg.HardwareID == "" {
		cfg.HardwareID = HardwareID()
	}
	if cfg.MACAddresses == nil {
		macs, err := MACAddresses()
		if err != nil {
			return nil, err
		}
		cfg.MACAddresses = macs
	}
	if topts.dialTimeout == 0 {
		topts.dialTimeout = min(t.requestTimeout, 15*time.Second)
	}
	tr := newTransport(topts)
	a := &Agent{
		cfg: cfg,
		t:   t,
		log: cfg.Logger,
		client: &client{
			http:           &http.Client{Transport: tr},
			requestTimeout: t.requestTimeout,
			secondUnit:     t.secondUnit,
			userAgent:      "site-agent/" + cfg.Version,
		},
		closeIdle:  tr.CloseIdleConnections,
		needLocate: true,
		relocate:   backoff{base: t.relocateBase, max: t.relocateMax},
		refused:    backoff{base: t.refusedBase, max: t.refusedMax, floor: 0.5},
	}
	if cfg.StateDir != "" {
		var err error
		if a.state, err = ReadState(cfg.StateDir); err != nil {
			return nil, err
		}
		if a.credential, err = ReadCredential(cfg.StateDir); err != nil {
			return nil, err
		}
		a.written = a.state
		if err := a.loadWork(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// State returns what the agent knows of itself. Run must not be running.
func (a *Agent) State() State { return a.state }

// Run runs the agent until ctx ends. It returns nil then: every failure on
// the way is logged and retried.
func (a *Agent) Run(ctx context.Context) error {
	if a.credential != "" {
		a.log.Info("Starting with the credential of an earlier registration", "computer", a.state.ComputerName())
	} else {
		a.log.Info("Starting unregistered")
	}
	a.resumeWork(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			a.workers.Wait()
			a.saveState(true)
			return nil
		case <-timer.C:
		}
		timer.Reset(a.step(ctx))
	}
}

// step does the next thing the agent must do and returns how long to wait
// before the one after.
func (a *Agent) step(ctx context.Context) time.Duration {
	addrs, err := a.cfg.Addresses()
	if err != nil || len(addrs) == 0 {
		if err == nil {
			err = errors.New("no global-unicast address")
		}
		if a.addrs == nil {
			a.log.Error("Reading the agent's addresses", "error", err)
			return a.relocate.next()
		}
		a.log.Warn("Reading the agent's addresses: keeping the last ones", "error", err, "addresses", a.addrs)
		addrs = a.addrs
	}
	a.addrs = addrs
	if refused := a.takeRefused(); refused != "" && refused == a.credential {
		return a.credentialRefused(errors.New("a report or an upload was refused with 401"))
	}
	if a.takeRelocateAsked() && a.hasLocated && !a.needLocate {
		a.log.Info("A package service does not serve this agent: locating again")
		a.needLocate = true
	}
	if a.hasLocated && !a.needLocate && !slices.Equal(addrs, a.locatedAddrs) {
		a.log.Info("The agent's addresses changed: locating again", "addresses", addrs, "previous", a.locatedAddrs)
		a.needLocate = true
	}
	if a.hasLocated && !a.needLocate && !a.relocateAt.IsZero() && !time.Now().Before(a.relocateAt) {
		a.log.Info("Locating again, as the agent does periodically or when a fallback serves it")
		a.needLocate = true
	}
	if a.needLocate {
		return a.locate(ctx)
	}
	if a.credential == "" {
		return a.register(ctx)
	}
	return a.checkIn(ctx)
}

// locate asks the locators, in turn, which servers serve the agent.
func (a *Agent) locate(ctx context.Context) time.Duration {
	n := len(a.cfg.Locators)
	var asked time.Duration // the longest Retry-After of the round
	for i := range n {
		locator := a.cfg.Locators[(a.locatorNext+i)%n]
		resp, err := a.client.locate(ctx, locator, a.addrs)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			asked = max(asked, retryAfterOf(err))
			a.log.Warn("Locating failed: trying the next locator", "locator", locator, "error", err)
			continue
		}
		a.locatorNext = (a.locatorNext + i) % n
		return a.located(resp, locator)
	}
	d := max(a.relocate.next(), jitter(asked, a.t.retryJitter, nil))
	a.log.Error("Every locator failed: trying again later", "locators", a.cfg.Locators, "retryIn", d.String())
	return d
}

// located takes a locate answer.
func (a *Agent) located(resp protocol.LocateResponse, locator string) time.Duration {
	if a.hasLocated {
		a.stats.relocated()
	}
	a.hasLocated, a.needLocate = true, false
	a.locatedAddrs = a.addrs
	a.state.Locator, a.state.Addresses = locator, a.addrs
	retryAfter := time.Duration(resp.RetryAfterSeconds) * a.t.secondUnit
	a.setPackageEndpoints(resp.PackageEndpoints, len(resp.TaskEndpoints) > 0)
	if len(resp.TaskEndpoints) == 0 {
		a.endpoints, a.current = nil, 0
		a.needLocate = true
		d := jitter(retryAfter, a.t.retryJitter, nil)
		if d == 0 {
			d = a.relocate.next()
		}
		a.log.Warn("No server serves this agent yet: locating again later", "site", resp.Site, "rule", resp.Rule,
			"address", resp.Address, "retryIn", d.String())
		a.saveState(false)
		return d
	}
	if !slices.Equal(a.endpoints, resp.TaskEndpoints) {
		a.closeIdle()
		a.log.Info("Located the agent's servers", "site", resp.Site, "rule", resp.Rule, "subnet", resp.Subnet,
			"taskEndpoints", resp.TaskEndpoints, "packageEndpoints", resp.PackageEndpoints, "locator", locator)
	}
	a.endpoints, a.current = resp.TaskEndpoints, 0
	a.state.Site = resp.Site
	a.relocateAt = time.Now().Add(jitter(a.cfg.RelocateInterval, 0.2, nil))
	if retryAfter > 0 {
		// A fallback serves the agent: its own site's servers may be back
		// by then.
		a.relocateAt = minTime(a.relocateAt, time.Now().Add(jitter(retryAfter, a.t.retryJitter, nil)))
	}
	a.saveState(false)
	return 0
}

func (a *Agent) endpoint() string { return a.endpoints[a.current] }

// register asks the current task endpoint for a credential.
func (a *Agent) register(ctx context.Context) time.Duration {
	if a.cfg.Token == nil {
		d := a.refused.next()
		a.log.Error("The agent has no credential and no bootstrap token: give it one with --token or --token-file", "retryIn", d.String())
		return d
	}
	token, err := a.cfg.Token()
	if err != nil {
		d := a.refused.next()
		a.log.Error("Reading the bootstrap token", "error", err, "retryIn", d.String())
		return d
	}
	if a.pace != nil && !a.pacedOnce {
		if err := a.pace(ctx); err != nil {
			return 0
		}
	}
	a.pacedOnce = false
	endpoint := a.endpoint()
	req := protocol.RegisterRequest{
		RequestID:    NewRequestID(),
		Hostname:     a.cfg.Hostname,
		HardwareID:   a.cfg.HardwareID,
		MACAddresses: a.cfg.MACAddresses,
		Addresses:    a.addrs,
		AgentVersion: a.cfg.Version,
	}
	resp, err := a.client.register(ctx, endpoint, token, req)
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		a.stats.registerFailed(err)
		return a.failed("registering", err)
	}
	a.credential = resp.Credential
	if a.cfg.StateDir != "" {
		if err := WriteCredential(a.cfg.StateDir, resp.Credential); err != nil {
			a.log.Error("Keeping the credential: the agent will register again after a restart", "error", err)
		}
	}
	a.state.Namespace, a.state.Computer = resp.Namespace, resp.Computer
	a.state.SiteServer, a.state.TaskEndpoint = resp.SiteServer, endpoint
	if resp.Site != "" {
		a.state.Site = resp.Site
	}
	a.state.RegisteredAt = time.Now().UTC()
	a.state.AgentVersion = a.cfg.Version
	a.saveState(true)
	a.refused.reset()
	a.relocate.reset()
	a.stats.registered()
	a.log.Info("Registered", "computer", a.state.ComputerName(), "site", resp.Site, "siteServer", resp.SiteServer, "endpoint", endpoint)
	return 0
}

// checkIn asks the current task endpoint for work.
func (a *Agent) checkIn(ctx context.Context) time.Duration {
	endpoint := a.endpoint()
	// Reports go where check-ins go, from now on: a result need not wait
	// for this check-in's long poll.
	a.setLink(endpoint, a.credential)
	a.stats.checkInStarted()
	start := time.Now()
	resp, err := a.client.checkIn(ctx, endpoint, a.credential, a.cfg.Wait, a.t.pollMargin, a.addrs, a.cfg.Version, a.busyID())
	rtt := time.Since(start)
	a.stats.checkInEnded()
	if ctx.Err() != nil {
		return 0
	}
	if err != nil {
		a.stats.checkInFailed(err)
		if statusOf(err) == http.StatusUnauthorized {
			return a.credentialRefused(err)
		}
		return a.failed("checking in", err)
	}
	a.stats.checkedIn(rtt - time.Duration(resp.HeldMillis)*time.Millisecond)
	a.relocate.reset()
	a.refused.reset()
	a.takeWork(ctx, resp.Work)
	if ns, name, ok := strings.Cut(resp.Computer, "/"); ok {
		a.state.Namespace, a.state.Computer = ns, name
	}
	a.state.Site, a.state.SiteServer, a.state.TaskEndpoint = resp.Site, resp.SiteServer, endpoint
	a.state.AgentVersion = a.cfg.Version
	a.state.LastCheckIn = time.Now().UTC()
	a.saveState(false)
	return max(resp.NextCheckIn(), 0)
}

// credentialRefused handles a check-in refused with 401: the credential
// was revoked or its Computer deleted.
func (a *Agent) credentialRefused(err error) time.Duration {
	if a.cfg.Token == nil {
		d := a.refused.next()
		a.log.Error("The credential was refused and the agent has no bootstrap token to register again: "+
			"give it one, or restore its Computer", "computer", a.state.ComputerName(), "error", err, "retryIn", d.String())
		return d
	}
	a.log.Warn("The credential was refused: registering again", "computer", a.state.ComputerName(), "error", err)
	a.credential = ""
	a.setLink("", "")
	a.stats.credentialDropped()
	if a.cfg.StateDir != "" {
		if err := DeleteCredential(a.cfg.StateDir); err != nil {
			a.log.Error("Forgetting the refused credential", "error", err)
		}
	}
	return 0
}

// failed handles a failed registration or check-in (what) other than a
// refused credential.
func (a *Agent) failed(what string, err error) time.Duration {
	code := statusOf(err)
	switch {
	case code == protocol.StatusRelocate:
		// Locate again at once the first time; after that with the
		// relocation back-off, reset by the next accepted check-in: the
		// locator and the task service may disagree for a moment (their
		// informers see a change at different times), and agents must not
		// bounce between them as fast as they can.
		d := a.relocate.next()
		a.log.Info("The task service does not serve this agent: locating again", "endpoint", a.endpoint(), "error", err, "retryIn", d.String())
		a.needLocate = true
		return d
	case (code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests) && retryAfterOf(err) > 0:
		d := jitter(retryAfterOf(err), a.t.retryJitter, nil)
		a.log.Info("The task service asked the agent to come back later", "endpoint", a.endpoint(), "status", code, "retryIn", d.String())
		return d
	case code == http.StatusTooManyRequests:
		d := a.t.failoverDelay/2 + randomUpTo(a.t.failoverDelay, nil)
		a.log.Info("The task service asked the agent to come back later", "endpoint", a.endpoint(), "status", code, "retryIn", d.String())
		return d
	case unreachable(err):
		return a.failOver(what, err)
	case code == http.StatusConflict:
		// A replayed request ID: the next attempt draws a new one.
		d := randomUpTo(a.t.failoverDelay, nil)
		a.log.Warn("The registration's request ID was refused as a replay: retrying with a new one", "endpoint", a.endpoint(), "retryIn", d.String())
		return d
	case code == http.StatusUnauthorized:
		d := a.refused.next()
		a.log.Error("The bootstrap token was refused: check the token given to the agent", "endpoint", a.endpoint(), "error", err, "retryIn", d.String())
		return d
	default:
		d := a.refused.next()
		var se *statusError
		errors.As(err, &se)
		a.log.Error("The task service refused the request", "what", what, "endpoint", a.endpoint(), "status", code,
			"reason", se.body.Error, "field", se.body.Field, "retryIn", d.String())
		return d
	}
}

// failOver moves to the next task endpoint, or locates again when every
// one has failed.
func (a *Agent) failOver(what string, err error) time.Duration {
	failed := a.endpoint()
	a.current++
	if a.current >= len(a.endpoints) {
		a.current = 0
		a.needLocate = true
		d := a.relocate.next()
		a.log.Warn("Every task endpoint failed: locating again", "what", what, "endpoints", a.endpoints, "error", err, "retryIn", d.String())
		return d
	}
	a.stats.failedOver()
	d := randomUpTo(a.t.failoverDelay, nil)
	a.log.Warn("The task endpoint is unreachable: failing over to the next", "what", what, "endpoint", failed, "next", a.endpoint(), "error", err, "retryIn", d.String())
	return d
}

// saveState writes the state file when the state changed, or when only the
// last check-in changed and the file is older than stateWriteInterval (or
// force).
func (a *Agent) saveState(force bool) {
	if a.cfg.StateDir == "" {
		return
	}
	if a.state.sameButCheckIn(a.written) {
		if a.state.LastCheckIn.Equal(a.written.LastCheckIn) {
			return
		}
		// The first check-in is news; later ones are written at most once
		// per stateWriteInterval.
		if !force && !a.written.LastCheckIn.IsZero() && time.Since(a.writtenAt) < a.t.stateWriteInterval {
			return
		}
	}
	if err := WriteState(a.cfg.StateDir, a.state); err != nil {
		a.log.Error("Keeping the agent's state", "error", err)
		return
	}
	a.written, a.writtenAt = a.state, time.Now()
	a.written.Addresses = slices.Clone(a.state.Addresses)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// sessionCache is shared by simulated agents for TLS session resumption.
func newSessionCache(n int) tls.ClientSessionCache { return tls.NewLRUClientSessionCache(n) }
