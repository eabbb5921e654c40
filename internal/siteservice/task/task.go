// Package task is the task service of a SiteServer: agents of its sites
// register there and check in to receive work (ARCHITECTURE.md §3). It
// serves on the task port:
//
//   - GET /v1/info: which SiteServer and sites it is;
//   - POST /v1/register: an agent with a bootstrap token becomes a
//     Computer and receives its credential (register.go);
//   - GET /v1/work?wait=…: the check-in, a long poll paced so that all its
//     agents together stay under a configured rate (checkin.go,
//     pacing.go);
//
// and the probes and /metrics on the health port.
//
// Check-ins are not API writes: what they change (lastSeen, addresses,
// site) is written to the Computer's status at most once per status
// interval per Computer, in batches (agents.go). The service reads the
// Computers, the bootstrap tokens of its token namespace and the topology
// from an informer cache, and answers only the agents that the serving
// rules give its SiteServer (locator.Serves).
//
// Trust: an agent proves who it is with its credential, which only it and
// (as a hash) the Computer hold. The addresses it reports are its own
// word: the service does not compare them with the connection's source
// address, which NAT and proxies change. An agent with a valid credential
// can therefore claim another site's addresses, and its Computer then
// shows that site; it still receives only its own Computer's work. A
// bootstrap token enrols computers into its namespace only; whoever can
// write Secrets in the token namespace can enrol computers anywhere.
package task

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"k8s.io/client-go/rest"

	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// Options are what a Server needs besides its configuration.
type Options struct {
	host.ServiceOptions
	// RestConfig reaches the API server; nil serves no agent API (only
	// /v1/info and the probes), for tests of the binary.
	RestConfig *rest.Config
}

// Server is one task service.
type Server struct {
	cfg  config.Config
	host *host.Host
	log  *slog.Logger
	now  func() time.Time

	kube           *kube
	tokenNamespace string
	tokenMu        sync.Mutex
	polls          polls
	replays        replays
	identities     identityLocks
	// registering holds a token per registration in flight: beyond
	// maxRegistrations the agent is told to come back, rather than wait
	// on the API client's budget past its own timeout.
	registering chan struct{}
	issued      issuedCredentials
	liveReads   *rate.Limiter
	agents      *registry
	dispatch    *dispatcher
	lastTasks   *lastTaskWriter
	wakeKick    chan struct{}
	pacer       Pacer
	maxHeld     int
	held        atomic.Int64
	assigned    atomic.Int64
	stopping    chan struct{}
	metrics     metrics
}

// metrics are the service's counters, exported on /metrics.
type metrics struct {
	registrations, registrationsDeferred, checkIns, refused, relocated, turnedAway atomic.Int64
}

// New returns the task service configured by cfg.
func New(cfg config.Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("task service configuration: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, now: time.Now, stopping: make(chan struct{}),
		liveReads: rate.NewLimiter(20, 40), registering: make(chan struct{}, maxRegistrations)}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/info", host.InfoHandler(host.Info{
		Service: "task", SiteServer: cfg.SiteServer, Sites: cfg.Sites, Version: opts.Version,
	}))
	maxConns := cfg.Task.MaxConnections
	if maxConns <= 0 {
		maxConns = DefaultMaxConnections()
	}
	s.host = &host.Host{Name: "task-service", Handler: mux, Logger: log,
		MaxConnections: maxConns, Limits: host.Limits{MinRate: cfg.Task.MinTransferRate}}
	if opts.RestConfig == nil {
		log.Warn("Serving no agent API: no Kubernetes API configuration (--no-agent-api)")
		return s, nil
	}

	a := cfg.Task.Agents
	s.tokenNamespace = or(a.TokenNamespace, config.DefaultTokenNamespace)
	k, err := newKube(opts.RestConfig, s.tokenNamespace)
	if err != nil {
		return nil, fmt.Errorf("connecting to the Kubernetes API: %w", err)
	}
	s.kube = k
	s.wakeKick = make(chan struct{}, 1)
	s.dispatch = newDispatcher(k, cfg.SiteServer, log, s.wakeHeld)
	if err := s.dispatch.watch(context.Background()); err != nil {
		return nil, err
	}
	s.lastTasks = newLastTaskWriter(s)
	s.host.Ready = k.ready
	interval := time.Duration(orInt(a.StatusIntervalSeconds, config.DefaultStatusIntervalSeconds)) * time.Second
	s.agents = newRegistry(k.writer, cfg.SiteServer, interval, log)
	s.agents.spill = s.lastTasks.addNow
	s.agents.yield = s.dispatch.busy
	s.maxHeld = a.MaxLongPolls
	if s.maxHeld <= 0 {
		// Room beside the held check-ins for registrations and the
		// check-ins answered at once.
		s.maxHeld = max(maxConns-max(maxConns/16, 64), 1)
	}
	s.pacer = Pacer{
		// 2% under the bound: the count of agents that sets the cycle lags
		// new agents by up to a sweep.
		MaxRate:     0.98 * orFloat(a.MaxCheckInRate, config.DefaultMaxCheckInRate),
		MaxHeld:     s.maxHeld,
		MaxWait:     time.Duration(orInt(a.MaxWaitSeconds, config.DefaultMaxWaitSeconds)) * time.Second,
		MinInterval: time.Duration(orInt(a.MinIntervalSeconds, config.DefaultMinIntervalSeconds)) * time.Second,
		Jitter:      0.1,
	}
	// The check-in is a long poll: it may move no byte for its whole hold.
	longPoll := host.Limits{IdleTimeout: s.pacer.MaxWait + 30*time.Second}
	mux.Handle("POST "+protocol.RegisterPath, host.WithLimits(host.Limits{MaxBodyBytes: protocol.MaxRegisterBodyBytes},
		http.HandlerFunc(s.register)))
	mux.Handle("GET "+protocol.WorkPath, host.WithLimits(longPoll, http.HandlerFunc(s.work)))
	mux.Handle(protocol.WorkStatusPattern, host.WithLimits(host.Limits{MaxBodyBytes: protocol.MaxWorkStatusBodyBytes},
		http.HandlerFunc(s.workStatus)))
	s.host.Metrics = s.metricsHandler()
	log.Info("Serving the agent API", "tokenNamespace", s.tokenNamespace, "maxCheckInRate", s.pacer.MaxRate,
		"maxLongPolls", s.maxHeld, "maxWait", s.pacer.MaxWait, "statusInterval", interval)
	return s, nil
}

// maxRegistrations is how many registrations one process handles at once.
// Each makes two or three API writes; more at once only queue on the API
// client, and agents beyond it come back later.
const maxRegistrations = 32

// DefaultMaxConnections is the task service's connection cap when none is
// configured: the file limit less a reserve of 1024 for the process's own
// files (a check-in holds a connection and nothing else), at most 65536.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur < 2048 {
		return host.DefaultMaxConnections()
	}
	return int(min(rl.Cur-1024, 65536))
}

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func orInt(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func orFloat(v, d float64) float64 {
	if v <= 0 {
		return d
	}
	return v
}

// Command is the task-service binary, for host.Run.
func Command(version string) host.Command {
	return host.Command{
		Name:    "task-service",
		Version: version,
		Section: func(c *config.Config) host.Section {
			return host.Section{Name: "task", Port: &c.Task.Port, HealthPort: &c.Task.HealthPort,
				MaxConnections: &c.Task.MaxConnections, MinTransferRate: &c.Task.MinTransferRate}
		},
		Flags: commandFlags,
		New: func(cfg config.Config, version string, log *slog.Logger) (host.Service, error) {
			opts := Options{ServiceOptions: host.ServiceOptions{Version: version, Logger: log}}
			if !cfg.Task.Agents.Disabled {
				rc, err := host.RestConfig(cfg.Kubeconfig, "--no-agent-api to serve no agent API")
				if err != nil {
					return nil, err
				}
				opts.RestConfig = rc
			}
			return New(cfg, opts)
		},
	}
}

// ListenAndServe serves on the configured ports of every interface until
// ctx is done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	return s.run(ctx, func(ctx context.Context) error {
		return s.host.ListenAndServe(ctx, host.PortAddr(s.cfg.Task.Port), host.PortAddr(s.cfg.Task.HealthPort))
	})
}

// Serve serves the API on api and the probes on health until ctx is done,
// then shuts down gracefully. It closes both listeners.
func (s *Server) Serve(ctx context.Context, api, health net.Listener) error {
	return s.run(ctx, func(ctx context.Context) error { return s.host.Serve(ctx, api, health) })
}

// run runs serve beside the cache and the status writer.
func (s *Server) run(ctx context.Context, serve func(context.Context) error) error {
	if s.kube == nil {
		return serve(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	bg, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()
	go func() {
		<-gctx.Done()
		close(s.stopping)
		s.polls.answerAll()
	}()
	go func() {
		if err := s.kube.run(bg); err != nil {
			s.log.Error("The cache stopped", "error", err)
		}
	}()
	go s.kube.countAssigned(bg, s.cfg.SiteServer, 30*time.Second, func(n int) { s.assigned.Store(int64(n)) })
	writerCtx, stopWriter := context.WithCancel(bg)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		s.agents.run(writerCtx, time.Second)
	}()
	lastTasksCtx, stopLastTasks := context.WithCancel(bg)
	lastTasksDone := make(chan struct{})
	go func() {
		defer close(lastTasksDone)
		s.lastTasks.run(lastTasksCtx)
	}()
	go s.runDispatch(bg)
	g.Go(func() error { return serve(gctx) })
	err := g.Wait()
	// The writer's last round ends (its writes were not cancelled: the
	// round finishes what it started), then what the last check-ins
	// changed is written before the process ends.
	stopWriter()
	<-writerDone
	// The results still waiting for a status write are written now.
	s.agents.spillAll()
	stopLastTasks()
	<-lastTasksDone
	flushCtx, cancel := context.WithTimeout(bg, 5*time.Second)
	s.agents.flush(flushCtx)
	cancel()
	stopBackground()
	return err
}

// metricsHandler exports the service's figures for Prometheus.
func (s *Server) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, v *atomic.Int64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) }))
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter("siteops_task_registrations_total", "Agents registered.", &s.metrics.registrations)
	counter("siteops_task_registrations_deferred_total", "Registrations answered 503: too many at once.", &s.metrics.registrationsDeferred)
	counter("siteops_task_check_ins_total", "Check-ins accepted.", &s.metrics.checkIns)
	counter("siteops_task_check_ins_refused_total", "Check-ins refused for their credential.", &s.metrics.refused)
	counter("siteops_task_check_ins_relocated_total", "Check-ins sent to locate again: the rules give the agent to other servers.", &s.metrics.relocated)
	counter("siteops_task_check_ins_turned_away_total", "Check-ins answered at once because every long poll was taken.", &s.metrics.turnedAway)
	counter("siteops_task_work_dispatched_total", "Work items claimed and handed to agents.", &s.dispatch.dispatched)
	counter("siteops_task_work_offered_again_total", "Work items handed again to an agent that did not report them.", &s.dispatch.reoffered)
	counter("siteops_task_work_results_total", "Results of work recorded.", &s.dispatch.results)
	counter("siteops_task_dispatch_writes_total", "Writes of dispatch shards (each carries many claims and reports).", &s.dispatch.shardWrites)
	counter("siteops_task_dispatch_write_failures_total", "Writes of dispatch shards that failed.", &s.dispatch.shardWriteFailures)
	counter("siteops_task_dispatch_writes_requeued_total", "Writes of dispatch shards that failed for a passing reason (timeout, overload): their claims and reports went to the next write.", &s.dispatch.requeued)
	counter("siteops_task_dispatch_conflicts_total", "Writes of dispatch shards that another writer beat (read again, decided again).", &s.dispatch.conflicts)
	counter("siteops_task_last_task_writes_total", "Computer status.lastTask writes.", &s.lastTasks.written)
	counter("siteops_task_last_task_write_failures_total", "Computer status.lastTask writes that failed.", &s.lastTasks.failed)
	counter("siteops_task_last_task_deferred_total", "Results left for the Computer's next status write (over the budget of writes at once).", &s.lastTasks.deferred)
	counter("siteops_task_computer_status_writes_total", "Computer status writes of check-ins.", &s.agents.writes)
	counter("siteops_task_computer_status_write_failures_total", "Computer status writes that failed.", &s.agents.failed)
	gauge("siteops_task_long_polls", "Check-ins held now.", func() float64 { return float64(s.held.Load()) })
	gauge("siteops_task_long_polls_max", "The most check-ins held at once.", func() float64 { return float64(s.maxHeld) })
	gauge("siteops_task_agents_active", "Agents that pace the check-ins.", func() float64 { return float64(s.activeAgents()) })
	gauge("siteops_task_check_in_cycle_seconds", "Time from one check-in of an agent to its next.", func() float64 {
		return s.pacer.Plan(s.activeAgents(), s.pacer.MaxWait).Cycle.Seconds()
	})
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// commandFlags are the task service's own flags.
func commandFlags(fs *flag.FlagSet) map[string]func(*config.Config) {
	kubeconfig := fs.String("kubeconfig", "", "Path of a kubeconfig file to reach the API server with; overrides kubeconfig of the configuration file. Default: $KUBECONFIG, else the pod's ServiceAccount.")
	noAgentAPI := fs.Bool("no-agent-api", false, "Serve no agent API and reach no API server (only /v1/info and the probes): for tests of the binary.")
	return map[string]func(*config.Config){
		"kubeconfig":   func(c *config.Config) { c.Kubeconfig = *kubeconfig },
		"no-agent-api": func(c *config.Config) { c.Task.Agents.Disabled = *noAgentAPI },
	}
}
