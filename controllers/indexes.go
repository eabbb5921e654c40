package controllers

import (
	"context"

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
)

func setupIndexes(mgr ctrl.Manager) error {
	return mgr.GetFieldIndexer().IndexField(context.Background(), &siteopsv1.Subnet{}, IndexSubnetEffectiveSite,
		func(o client.Object) []string {
			site := o.(*siteopsv1.Subnet).Status.EffectiveSite
			if site == "" {
				return nil
			}
			return []string{site}
		})
}
