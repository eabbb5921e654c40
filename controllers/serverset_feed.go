package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/locator"
)

// SetupServerSet keeps servers in step with the SiteServers of the
// manager's cache, for the locator. Like the resolver feed, its informer
// handler is registered at setup and runs on every replica, leader or not,
// so every replica's locator answers from the same servers. A readiness
// check named "locator-servers" passes once servers holds the initial list.
// Call it before the manager starts.
func SetupServerSet(mgr ctrl.Manager, servers *locator.ServerSet) error {
	synced, err := FeedServerSet(context.Background(), mgr.GetCache(), servers)
	if err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("locator-servers", func(_ *http.Request) error {
		if !synced() {
			return errors.New("the locator has not received every SiteServer yet")
		}
		return nil
	}); err != nil {
		return fmt.Errorf("adding the locator's readiness check: %w", err)
	}
	return nil
}

// FeedServerSet registers on c the handler that copies each SiteServer's
// locator view into servers, and returns whether servers holds the initial
// list. A status write that changes none of the fields the locator reads
// publishes nothing (ServerSet.Set compares). Registered on a cache that
// already runs, it first receives every SiteServer the cache holds.
func FeedServerSet(ctx context.Context, c cache.Cache, servers *locator.ServerSet) (synced func() bool, err error) {
	informer, err := c.GetInformer(ctx, &siteopsv1.SiteServer{})
	if err != nil {
		return nil, fmt.Errorf("getting the SiteServer informer: %w", err)
	}
	reg, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { servers.Set(locatorServer(obj.(*siteopsv1.SiteServer))) },
		UpdateFunc: func(_, newObj any) { servers.Set(locatorServer(newObj.(*siteopsv1.SiteServer))) },
		DeleteFunc: func(obj any) { servers.Delete(deletedName(obj)) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding the locator's SiteServer handler: %w", err)
	}
	return reg.HasSynced, nil
}

// locatorServer is the locator's view of a SiteServer: its sites, whether
// its task service is available, and the URLs it advertises to agents.
func locatorServer(ss *siteopsv1.SiteServer) locator.Server {
	return locator.Server{
		Name:             ss.Name,
		Sites:            ss.Spec.Sites,
		TaskReady:        ss.ServesTasks(),
		TaskEndpoints:    ss.Status.Task.Advertised,
		PackageEndpoints: ss.Status.Package.Advertised,
	}
}
