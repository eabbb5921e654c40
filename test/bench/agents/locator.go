package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"

	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/topologyfeed"
)

// runningLocator is the locator serving HTTPS in this process, fed from a
// cache of the API server as the manager feeds its own.
type runningLocator struct {
	url  string
	stop func() error
}

// startLocator starts the cache and the locator's HTTPS server, and
// returns once the locator sends an agent of the site to taskURL.
func startLocator(ctx context.Context, cp *controlPlane, p pki, taskURL string) (*runningLocator, error) {
	c, err := cache.New(cp.cfg, cache.Options{Scheme: cp.scheme, DefaultTransform: cache.TransformStripManagedFields()})
	if err != nil {
		return nil, fmt.Errorf("creating the locator's cache: %w", err)
	}
	loc, topologySynced, err := topologyfeed.FeedLocator(ctx, c)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(p.locatorCert, p.locatorKey)
	if err != nil {
		return nil, err
	}
	hs, err := locator.NewHTTPServer(loc.Handler(), locator.HTTPOptions{
		Addr: net.JoinHostPort(locatorHost.String(), "0"), TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cacheDone, served := make(chan error, 1), make(chan error, 1)
	go func() { cacheDone <- c.Start(ctx) }()
	go func() { served <- hs.Start(ctx) }()
	stop := func() error {
		cancel()
		return errors.Join(<-served, <-cacheDone)
	}
	probe, _ := netip.ParseAddr("10.64.0.1")
	deadline := time.Now().Add(30 * time.Second)
	for hs.Addr() == nil || !topologySynced() ||
		!slices.Equal(loc.Locate([]netip.Addr{probe}).TaskEndpoints, []string{taskURL}) {
		if time.Now().After(deadline) {
			return nil, errors.Join(fmt.Errorf("the locator did not send agents to %s within 30s", taskURL), stop())
		}
		select {
		case err := <-served:
			cancel()
			return nil, errors.Join(fmt.Errorf("the locator did not start: %w", err), <-cacheDone)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return &runningLocator{url: "https://" + hs.Addr().String(), stop: stop}, nil
}
