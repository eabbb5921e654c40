package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"runtime/pprof"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/siteops/site-operator/internal/testing/managertest"
)

// harness is one run against a started control plane.
type harness struct {
	opts   options
	plan   *plan
	cfg    *rest.Config // the API server's admin configuration
	scheme *runtime.Scheme
	procs  map[string]int // the processes whose CPU and memory are reported

	obs     *observer
	clients []client.Client             // one per worker
	creates *managertest.RequestCounter // the workers' requests
	manager *managertest.Manager        // the first manager
	writes  *managertest.RequestCounter // the first manager's requests

	res results
}

// newHarness starts the observer and the first manager, and creates the
// workers' clients. Everything it starts stops when ctx ends.
func newHarness(ctx context.Context, opts options, p *plan, cfg *rest.Config, scheme *runtime.Scheme) (*harness, error) {
	h := &harness{
		opts: opts, plan: p, cfg: cfg, scheme: scheme,
		creates: newRequestCounter(), writes: newRequestCounter(),
		res: results{opts: opts, plan: p},
	}
	var err error
	if h.procs, err = processes(); err != nil {
		return nil, err
	}
	if h.obs, err = newObserver(cfg, scheme, p); err != nil {
		return nil, err
	}
	pprof.Do(ctx, pprof.Labels("component", "observer"), func(ctx context.Context) { err = h.obs.run(ctx) })
	if err != nil {
		return nil, err
	}
	if h.manager, err = startManager(ctx, cfg, scheme, opts.controllers, h.writes); err != nil {
		return nil, err
	}
	if h.clients, err = newClients(cfg, scheme, opts.workers, h.creates); err != nil {
		return nil, errors.Join(err, h.manager.Stop())
	}
	return h, nil
}

// createSites creates the Sites and waits until each has its first status,
// so that the Subnet measurements start from a quiet manager.
func (h *harness) createSites(ctx context.Context) error {
	if err := waitIdle(ctx, h.procs); err != nil {
		return err
	}
	log.Printf("Creating %d Sites", len(h.plan.Sites))
	start := time.Now()
	if _, err := createAll(ctx, h.clients, siteObjects(h.plan)); err != nil {
		return err
	}
	if err := h.obs.waitFor(ctx, "the Sites' first statuses", h.opts.timeout, func(m milestones) bool {
		return m.statused == len(h.plan.Sites)
	}); err != nil {
		return err
	}
	h.res.siteWrites = h.writes.Snapshot()
	log.Printf("Sites created and given a status in %s", time.Since(start).Round(time.Millisecond))
	return nil
}

// measureConvergence creates the Subnets while the manager runs and waits
// until every Subnet and Site status is the planned one.
func (h *harness) measureConvergence(ctx context.Context) error {
	r := &h.res
	subnets := subnetObjects(h.plan)
	if err := waitIdle(ctx, h.procs); err != nil {
		return err
	}
	stopProfile, err := startCPUProfile(h.opts.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	writesBefore := h.writes.Snapshot()
	cpuBefore, err := sampleCPU(h.procs)
	if err != nil {
		return err
	}

	log.Printf("Creating %d Subnets with %d workers", h.plan.subnetCount(), len(h.clients))
	profileDone := profileAPIServer(ctx, h.cfg, h.opts.apiServerProfile)
	defer func() { <-profileDone }()
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go newProgress(h.obs, h.creates, h.writes).log(progressCtx)
	start := time.Now()
	lastCreate, err := createAll(ctx, h.clients, subnets)
	if err != nil {
		return err
	}
	r.tCreate = lastCreate.Sub(start)
	cpuCreated, err := sampleCPU(h.procs)
	if err != nil {
		return err
	}
	r.cpuCreate = cpuCreated.sub(cpuBefore)
	log.Printf("Subnets created in %s; waiting for the statuses", r.tCreate.Round(time.Millisecond))

	err = h.obs.waitFor(ctx, "every Subnet and Site status", h.opts.timeout, func(m milestones) bool {
		return m.final == h.plan.subnetCount() && m.settled == len(h.plan.Sites)
	})
	if err != nil {
		return err
	}
	m := h.obs.milestones()
	r.converged = time.Since(start)
	stopProgress()
	stopProfile()
	cpuConverged, err := sampleCPU(h.procs)
	if err != nil {
		return err
	}
	r.cpuConverge = cpuConverged.sub(cpuBefore)
	r.tReady, r.tFinal, r.tSettled = m.readyAt.Sub(start), m.finalAt.Sub(start), m.settledAt.Sub(start)
	log.Printf("Converged in %s; counting the manager's writes for %s more",
		r.converged.Round(time.Millisecond), h.opts.settle)
	if err := sleep(ctx, h.opts.settle); err != nil {
		return err
	}
	r.convergeWrites = h.writes.Snapshot().Sub(writesBefore)
	return nil
}

// measureResync starts a second manager with a fresh cache over the
// converged objects, waits until it has reconciled every Subnet and Site
// once, plus the settle time, and records the writes it sent.
func (h *harness) measureResync(ctx context.Context) error {
	before, err := managertest.ReconcileTotals()
	if err != nil {
		return err
	}
	writes := newRequestCounter()
	log.Printf("Restarting the manager")
	start := time.Now()
	mgr, err := startManager(ctx, h.cfg, h.scheme, h.opts.controllers, writes)
	if err != nil {
		return fmt.Errorf("restarting the manager: %w", err)
	}
	defer func() { _ = mgr.Stop() }() // on an early return; stopped below otherwise

	subnets, sites := float64(h.plan.subnetCount()), float64(len(h.plan.Sites))
	waitCtx, cancel := context.WithTimeout(ctx, h.opts.timeout)
	defer cancel()
	for {
		now, err := managertest.ReconcileTotals()
		if err != nil {
			return err
		}
		if now["subnet"]-before["subnet"] >= subnets && now["site"]-before["site"] >= sites {
			break
		}
		if err := sleep(waitCtx, 20*time.Millisecond); err != nil {
			return fmt.Errorf("waiting for the restarted manager to reconcile every object (%v of %v Subnets, %v of %v Sites): %w",
				now["subnet"]-before["subnet"], subnets, now["site"]-before["site"], sites, err)
		}
	}
	h.res.tResync = time.Since(start)
	log.Printf("Restarted manager reconciled every object in %s; counting its writes for %s more",
		h.res.tResync.Round(time.Millisecond), h.opts.settle)
	if err := sleep(ctx, h.opts.settle); err != nil {
		return err
	}
	h.res.resyncWrites = writes.Snapshot()
	if err := mgr.Stop(); err != nil {
		return fmt.Errorf("stopping the restarted manager: %w", err)
	}
	return nil
}
