// Package topologyfeed turns the siteops.io objects of an informer cache
// into the views that the pure address resolution needs: a Subnet as a
// topology.Subnet, a SiteServer as a locator.Server. The manager (its
// resolver feed and its locator) and the task service (which answers only
// the agents it serves) feed their tables with it, so both read the API
// the same way.
package topologyfeed

import (
	"context"
	"fmt"
	"net/netip"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/topology"
)

// Subnet is the resolver's view of a Subnet. A CIDR that does not parse
// (admission rejects those, so only objects stored before the rule
// existed) is passed as the zero Prefix, which the resolver ignores.
func Subnet(sn *siteopsv1.Subnet) topology.Subnet {
	prefix, _ := netip.ParsePrefix(sn.Spec.CIDR)
	source := topology.SourceManual
	if sn.Spec.Source == siteopsv1.SourceActiveDirectory {
		source = topology.SourceActiveDirectory
	}
	return topology.Subnet{
		Name:    sn.Name,
		Prefix:  prefix,
		Site:    sn.Spec.Site,
		Source:  source,
		Created: sn.CreationTimestamp.Time,
	}
}

// Server is the locator's view of a SiteServer: its sites, whether its
// task service is available, and the URLs it advertises to agents.
func Server(ss *siteopsv1.SiteServer) locator.Server {
	return locator.Server{
		Name:             ss.Name,
		Sites:            ss.Spec.Sites,
		TaskReady:        ss.ServesTasks(),
		TaskEndpoints:    ss.Status.Task.Advertised,
		PackageEndpoints: ss.Status.Package.Advertised,
	}
}

// DeletedName is the name of a deleted cluster-scoped object, which an
// informer hands over as the object or, when it missed the delete, as a
// tombstone keyed by the name.
func DeletedName(obj any) string {
	if tombstone, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		return tombstone.Key
	}
	return obj.(interface{ GetName() string }).GetName()
}

// FeedServerSet registers on c the handler that copies each SiteServer's
// locator view into servers, and returns whether servers holds the initial
// list. A status write that changes none of the fields the locator reads
// publishes nothing (ServerSet.Set compares). Registered on a cache that
// already runs, it first receives every SiteServer the cache holds.
func FeedServerSet(ctx context.Context, c cache.Informers, servers *locator.ServerSet) (synced func() bool, err error) {
	informer, err := c.GetInformer(ctx, &siteopsv1.SiteServer{})
	if err != nil {
		return nil, fmt.Errorf("getting the SiteServer informer: %w", err)
	}
	reg, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { servers.Set(Server(obj.(*siteopsv1.SiteServer))) },
		UpdateFunc: func(_, newObj any) { servers.Set(Server(newObj.(*siteopsv1.SiteServer))) },
		DeleteFunc: func(obj any) { servers.Delete(DeletedName(obj)) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding the locator's SiteServer handler: %w", err)
	}
	return reg.HasSynced, nil
}

// FeedResolver registers on c the handlers that keep resolver in step with
// the Subnets and Sites, and returns whether it holds the initial lists.
// It is the plain feed, for readers of the table; the manager's Subnet
// controller has its own, which also queues the Subnets whose verdict
// changed.
func FeedResolver(ctx context.Context, c cache.Informers, resolver *topology.Resolver) (synced func() bool, err error) {
	subnets, err := c.GetInformer(ctx, &siteopsv1.Subnet{})
	if err != nil {
		return nil, fmt.Errorf("getting the Subnet informer: %w", err)
	}
	subnetsFed, err := subnets.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { resolver.SetSubnet(Subnet(obj.(*siteopsv1.Subnet))) },
		UpdateFunc: func(oldObj, newObj any) {
			before, after := oldObj.(*siteopsv1.Subnet), newObj.(*siteopsv1.Subnet)
			if before.Generation != after.Generation || before.UID != after.UID {
				resolver.SetSubnet(Subnet(after))
			}
		},
		DeleteFunc: func(obj any) { resolver.DeleteSubnet(DeletedName(obj)) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding the resolver's Subnet handler: %w", err)
	}
	sites, err := c.GetInformer(ctx, &siteopsv1.Site{})
	if err != nil {
		return nil, fmt.Errorf("getting the Site informer: %w", err)
	}
	sitesFed, err := sites.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { resolver.SetSite(obj.(*siteopsv1.Site).Name) },
		DeleteFunc: func(obj any) { resolver.DeleteSite(DeletedName(obj)) },
	})
	if err != nil {
		return nil, fmt.Errorf("adding the resolver's Site handler: %w", err)
	}
	return func() bool { return subnetsFed.HasSynced() && sitesFed.HasSynced() }, nil
}

// FeedLocator returns a locator whose resolver and server set follow c's
// Subnets, Sites and SiteServers (FeedResolver, FeedServerSet), with the
// default options, and a function that tells when both are synced: the
// site services answer by it only the agents the serving rules give them.
func FeedLocator(ctx context.Context, c cache.Informers) (loc *locator.Locator, synced func() bool, err error) {
	resolver, servers := topology.New(), locator.NewServerSet()
	resolverSynced, err := FeedResolver(ctx, c, resolver)
	if err != nil {
		return nil, nil, err
	}
	serversSynced, err := FeedServerSet(ctx, c, servers)
	if err != nil {
		return nil, nil, err
	}
	return locator.New(resolver, servers, locator.Options{}), func() bool { return resolverSynced() && serversSynced() }, nil
}
