// Package controllers holds one reconciler per siteops.io kind, the field
// indexes they share and Setup, which registers them with a manager.
package controllers

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"

	"github.com/siteops/site-operator/internal/topology"
)

// Options tune the controllers registered by Setup.
type Options struct {
	// SubnetConcurrency is how many Subnets are reconciled at once.
	SubnetConcurrency int
	// SiteConcurrency is how many Sites are reconciled at once.
	SiteConcurrency int
}

// DefaultOptions are the options the manager binary starts with.
func DefaultOptions() Options {
	return Options{SubnetConcurrency: 8, SiteConcurrency: 4}
}

// Setup registers the field indexes and every controller with mgr. The
// returned Resolver is the live address → subnet → site table that the
// controllers keep current; the locator reads it.
func Setup(mgr ctrl.Manager, opts Options) (*topology.Resolver, error) {
	if err := setupIndexes(mgr); err != nil {
		return nil, fmt.Errorf("setting up field indexes: %w", err)
	}
	resolver := topology.New()
	subnets := &SubnetReconciler{Client: mgr.GetClient(), Resolver: resolver}
	if err := subnets.SetupWithManager(mgr, opts.SubnetConcurrency); err != nil {
		return nil, fmt.Errorf("setting up the Subnet controller: %w", err)
	}
	sites := &SiteReconciler{Client: mgr.GetClient()}
	if err := sites.SetupWithManager(mgr, opts.SiteConcurrency); err != nil {
		return nil, fmt.Errorf("setting up the Site controller: %w", err)
	}
	return resolver, nil
}

// NewScheme returns a scheme with the built-in Kubernetes kinds and the
// siteops.io kinds, the one every client of the operator uses.
func NewScheme() (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the Kubernetes kinds: %w", err)
	}
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering the siteops.io kinds: %w", err)
	}
	return scheme, nil
}
