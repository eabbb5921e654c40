package controllers

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// Field indexes on the manager's cache. All of them live here so that every
// controller and test names them the same way.
const (
	// IndexSubnetEffectiveSite indexes Subnets by status.effectiveSite: the
	// Site controller counts a site's subnets with it.
	IndexSubnetEffectiveSite = "status.effectiveSite"
	// IndexSiteServerSites indexes SiteServers by each name in spec.sites:
	// a Site finds the servers that serve it, and a SiteServer finds the
	// Sites it waits for.
	IndexSiteServerSites = "spec.sites"
	// IndexComputerSite indexes Computers by status.site, the Site the task
	// service located the agent in: the Site controller counts a site's
	// computers with it.
	IndexComputerSite = "status.site"
	// IndexDeploymentTaskPackage indexes DeploymentTasks by the Package
	// their action needs (deployImage, installSoftware): a Package finds
	// the tasks that want it at their targets' sites, and a Package's
	// change finds the tasks that wait for it.
	IndexDeploymentTaskPackage = "spec.action.package"
)

func setupIndexes(mgr ctrl.Manager) error {
	indexer := mgr.GetFieldIndexer()
	if err := indexer.IndexField(context.Background(), &siteopsv1.Subnet{}, IndexSubnetEffectiveSite,
		func(o client.Object) []string {
			site := o.(*siteopsv1.Subnet).Status.EffectiveSite
			if site == "" {
				return nil
			}
			return []string{site}
		}); err != nil {
		return fmt.Errorf("indexing Subnets by %s: %w", IndexSubnetEffectiveSite, err)
	}
	if err := indexer.IndexField(context.Background(), &siteopsv1.SiteServer{}, IndexSiteServerSites,
		func(o client.Object) []string { return o.(*siteopsv1.SiteServer).Spec.Sites }); err != nil {
		return fmt.Errorf("indexing SiteServers by %s: %w", IndexSiteServerSites, err)
	}
	if err := indexer.IndexField(context.Background(), &siteopsv1.Computer{}, IndexComputerSite,
		func(o client.Object) []string {
			site := o.(*siteopsv1.Computer).Status.Site
			if site == "" {
				return nil
			}
			return []string{site}
		}); err != nil {
		return fmt.Errorf("indexing Computers by %s: %w", IndexComputerSite, err)
	}
	if err := indexer.IndexField(context.Background(), &siteopsv1.DeploymentTask{}, IndexDeploymentTaskPackage,
		func(o client.Object) []string {
			name, _ := o.(*siteopsv1.DeploymentTask).Spec.Action.Package()
			if name == "" {
				return nil
			}
			return []string{name}
		}); err != nil {
		return fmt.Errorf("indexing DeploymentTasks by %s: %w", IndexDeploymentTaskPackage, err)
	}
	return nil
}
