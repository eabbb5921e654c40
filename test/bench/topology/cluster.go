package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"runtime/pprof"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// startManager starts the manager in process, as cmd/manager builds it, with
// every request it sends counted by writes, and returns once its caches
// have synced.
func startManager(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme, opts controllers.Options,
	writes *managertest.RequestCounter) (*managertest.Manager, error) {
	return managertest.Start(ctx, cfg, scheme, managertest.Options{
		Controllers: opts, Requests: writes,
		Informers: []client.Object{&siteopsv1.Subnet{}, &siteopsv1.Site{}},
	})
}

// newClients returns n clients of the API server, each with its own
// connection and no client-side rate limit, and with their requests
// counted by counter.
func newClients(base *rest.Config, scheme *runtime.Scheme, n int, counter *managertest.RequestCounter) ([]client.Client, error) {
	clients := make([]client.Client, n)
	for i := range clients {
		cfg := rest.CopyConfig(base)
		cfg.QPS = -1
		// client-go shares one transport among configs that look alike; a
		// Dial function of its own gives each client its own connection.
		cfg.Dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		cfg.Wrap(counter.Wrap)
		c, err := client.New(cfg, client.Options{Scheme: scheme})
		if err != nil {
			return nil, fmt.Errorf("creating client %d: %w", i, err)
		}
		clients[i] = c
	}
	return clients, nil
}

// createAll creates batches with one worker per client: worker w creates
// batches w, w+len(clients), w+2·len(clients), …, each batch in order. It
// returns when the last create was accepted.
func createAll(ctx context.Context, clients []client.Client, batches [][]client.Object) (time.Time, error) {
	var wg sync.WaitGroup
	done := make([]time.Time, len(clients))
	errs := make([]error, len(clients))
	for w, c := range clients {
		wg.Go(func() {
			pprof.Do(ctx, pprof.Labels("component", "harness"), func(ctx context.Context) {
				for b := w; b < len(batches); b += len(clients) {
					for _, obj := range batches[b] {
						if err := c.Create(ctx, obj); err != nil {
							errs[w] = fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
							return
						}
					}
				}
				done[w] = time.Now()
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return time.Time{}, err
	}
	var last time.Time
	for _, t := range done {
		if t.After(last) {
			last = t
		}
	}
	return last, nil
}

// siteObjects is p's Sites, one batch each.
func siteObjects(p *plan) [][]client.Object {
	batches := make([][]client.Object, len(p.Sites))
	for i, name := range p.Sites {
		batches[i] = []client.Object{&siteopsv1.Site{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: siteopsv1.SiteSpec{
				DisplayName: fmt.Sprintf("Branch office %d", i),
				Location:    fmt.Sprintf("Building %d, ground floor", i),
			},
		}}
	}
	return batches
}

// subnetObjects is p's Subnets, one batch per site in creation order.
func subnetObjects(p *plan) [][]client.Object {
	batches := make([][]client.Object, len(p.SubnetsBySite))
	for i, subnets := range p.SubnetsBySite {
		for _, s := range subnets {
			batches[i] = append(batches[i], &siteopsv1.Subnet{
				ObjectMeta: metav1.ObjectMeta{Name: s.Name},
				Spec:       siteopsv1.SubnetSpec{CIDR: s.CIDR.String(), Site: s.Site, Source: s.Source},
			})
		}
	}
	return batches
}

// verify lists every Subnet and Site and compares its status with the plan.
func verify(ctx context.Context, c client.Client, p *plan) error {
	var problems []string
	want := p.wantSubnets()
	seen := 0
	err := listAll(ctx, c, func() *siteopsv1.SubnetList { return &siteopsv1.SubnetList{} }, func(l *siteopsv1.SubnetList) {
		for i := range l.Items {
			sn := &l.Items[i]
			w, planned := want[sn.Name]
			if !planned {
				problems = append(problems, fmt.Sprintf("Subnet %s is not in the plan", sn.Name))
				continue
			}
			seen++
			got := gotStatus(sn)
			ready := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
			readyOK := ready != nil && (ready.Status == metav1.ConditionTrue) == (w.Reason == siteopsv1.ReasonEffective)
			if got != w || !readyOK || sn.Status.ObservedGeneration != sn.Generation {
				problems = append(problems, fmt.Sprintf(
					"Subnet %s (%s, site %q, %s): got %+v (Ready %v, observedGeneration %d of %d), want %+v",
					sn.Name, sn.Spec.CIDR, sn.Spec.Site, sn.Spec.Source, got, ready, sn.Status.ObservedGeneration, sn.Generation, w))
			}
		}
	})
	if err != nil {
		return err
	}
	if seen != len(want) {
		problems = append(problems, fmt.Sprintf("%d planned Subnets are missing", len(want)-seen))
	}

	seen = 0
	err = listAll(ctx, c, func() *siteopsv1.SiteList { return &siteopsv1.SiteList{} }, func(l *siteopsv1.SiteList) {
		for _, site := range l.Items {
			w, planned := p.SiteSubnets[site.Name]
			if !planned {
				problems = append(problems, fmt.Sprintf("Site %s is not in the plan", site.Name))
				continue
			}
			seen++
			ready := meta.FindStatusCondition(site.Status.Conditions, siteopsv1.ConditionReady)
			if site.Status.Subnets != w || ready == nil || site.Status.ObservedGeneration != site.Generation {
				problems = append(problems, fmt.Sprintf("Site %s: got status.subnets %d (Ready %v, observedGeneration %d of %d), want %d",
					site.Name, site.Status.Subnets, ready, site.Status.ObservedGeneration, site.Generation, w))
			}
		}
	})
	if err != nil {
		return err
	}
	if seen != len(p.SiteSubnets) {
		problems = append(problems, fmt.Sprintf("%d planned Sites are missing", len(p.SiteSubnets)-seen))
	}

	if len(problems) == 0 {
		log.Printf("Every status is as planned: %d Subnets, %d Sites", len(want), len(p.SiteSubnets))
		return nil
	}
	const shown = 20
	for i, problem := range problems {
		if i == shown {
			log.Printf("... and %d more", len(problems)-shown)
			break
		}
		log.Print(problem)
	}
	return fmt.Errorf("verification failed: %d statuses differ from the plan", len(problems))
}

// listAll lists every object of a kind, a page at a time into a new list
// each, and hands each page to each.
func listAll[L client.ObjectList](ctx context.Context, c client.Client, newList func() L, each func(L)) error {
	opts := []client.ListOption{client.Limit(1000)}
	for {
		list := newList()
		if err := c.List(ctx, list, opts...); err != nil {
			return fmt.Errorf("listing %T: %w", list, err)
		}
		each(list)
		next := list.GetContinue()
		if next == "" {
			return nil
		}
		opts = []client.ListOption{client.Limit(1000), client.Continue(next)}
	}
}
