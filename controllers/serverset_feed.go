package controllers

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/topologyfeed"
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
// locator view into servers (topologyfeed.FeedServerSet).
func FeedServerSet(ctx context.Context, c cache.Cache, servers *locator.ServerSet) (synced func() bool, err error) {
	return topologyfeed.FeedServerSet(ctx, c, servers)
}
