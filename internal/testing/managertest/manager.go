package managertest

import (
	"context"
	"errors"
	"fmt"
	"runtime/pprof"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/topology"
)

// stopTimeout bounds how long Stop waits for the manager to return.
const stopTimeout = time.Minute

// Options configure Start.
type Options struct {
	// Controllers configure controllers.Setup; start from
	// controllers.DefaultOptions().
	Controllers controllers.Options
	// Requests, if set, counts every request the manager sends.
	Requests *RequestCounter
	// Informers are kinds whose informers start with the manager's cache,
	// so that Start returns only once they have synced (the controllers'
	// own informers start later, with the controllers).
	Informers []client.Object
	// Configure, if set, adjusts the manager's options before the manager
	// is made, such as to turn leader election on.
	Configure func(*ctrl.Options)
}

// Manager is a manager running in process.
type Manager struct {
	// Resolver is the topology resolver that controllers.Setup returned:
	// what this replica's locator answers from.
	Resolver *topology.Resolver

	elected <-chan struct{}
	cancel  context.CancelFunc
	done    chan error
	once    sync.Once
	err     error
}

// Start starts a manager against cfg, as cmd/manager builds it but with
// neither metrics nor health endpoints, and returns once its cache has
// synced. Its goroutines carry the pprof label component=manager, so that a
// CPU profile of a benchmark tells the manager's share. The manager runs
// until Stop or until ctx ends.
func Start(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, opts Options) (*Manager, error) {
	cfg = rest.CopyConfig(cfg)
	// What ctrl.GetConfig sets when nothing else does: API Priority and
	// Fairness, not a client-side rate limiter, paces the manager.
	cfg.QPS = -1
	if opts.Requests != nil {
		cfg.Wrap(opts.Requests.Wrap)
	}
	mgrOpts := ctrl.Options{
		Scheme:  scheme,
		Cache:   controllers.CacheOptions(opts.Controllers.Workloads.Namespace),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// A restarted manager, or a second replica, registers the same
		// controller names again in the same process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if opts.Configure != nil {
		opts.Configure(&mgrOpts)
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("creating the manager: %w", err)
	}
	resolver, err := controllers.Setup(mgr, opts.Controllers)
	if err != nil {
		return nil, fmt.Errorf("setting up the controllers: %w", err)
	}
	for _, obj := range opts.Informers {
		if _, err := mgr.GetCache().GetInformer(ctx, obj); err != nil {
			return nil, fmt.Errorf("getting the manager's informer for %T: %w", obj, err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	m := &Manager{Resolver: resolver, elected: mgr.Elected(), cancel: cancel, done: make(chan error, 1)}
	go pprof.Do(ctx, pprof.Labels("component", "manager"), func(ctx context.Context) {
		m.done <- mgr.Start(ctx)
	})
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		err := m.Stop()
		return nil, fmt.Errorf("waiting for the manager's cache to sync: %w", errors.Join(err, context.Cause(ctx)))
	}
	return m, nil
}

// Elected is closed once the manager leads: at once without leader
// election.
func (m *Manager) Elected() <-chan struct{} {
	return m.elected
}

// Stop stops the manager and returns what its Start returned, or an error
// if it has not returned within a minute; calling it again returns the
// same.
func (m *Manager) Stop() error {
	m.once.Do(func() {
		m.cancel()
		select {
		case m.err = <-m.done:
		case <-time.After(stopTimeout):
			m.err = fmt.Errorf("the manager did not stop within %s", stopTimeout)
		}
	})
	return m.err
}
