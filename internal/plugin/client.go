package plugin

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// NewScheme returns the scheme the plugin reads with: the siteops.io kinds
// only (it reads nothing else).
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := siteopsv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("registering the siteops.io kinds: %w", err)
	}
	return s, nil
}

// Client reads what the commands show from the API server. It only
// lists and gets; every rule is applied by the pure Build functions.
type Client struct {
	// Reader reads the objects: a controller-runtime client.
	Reader client.Reader
}

// pageSize is how many objects one list request asks for, so that a
// large inventory comes in pages rather than one huge answer.
const pageSize = 500

// Topology lists every Site, Subnet and SiteServer.
func (c Client) Topology(ctx context.Context) (Topology, error) {
	var t Topology
	var sites siteopsv1.SiteList
	if err := listAll(ctx, c.Reader, &sites, func() { t.Sites = append(t.Sites, sites.Items...) }); err != nil {
		return Topology{}, readError("listing Sites", err)
	}
	var subnets siteopsv1.SubnetList
	if err := listAll(ctx, c.Reader, &subnets, func() { t.Subnets = append(t.Subnets, subnets.Items...) }); err != nil {
		return Topology{}, readError("listing Subnets", err)
	}
	var servers siteopsv1.SiteServerList
	if err := listAll(ctx, c.Reader, &servers, func() { t.SiteServers = append(t.SiteServers, servers.Items...) }); err != nil {
		return Topology{}, readError("listing SiteServers", err)
	}
	return t, nil
}

// Site reads the named Site, the topology, the Computers located in it
// (by the field selector status.site, which the API server evaluates)
// and the Packages; namespace limits Computers and Packages to one
// namespace, "" reads every namespace.
func (c Client) Site(ctx context.Context, name, namespace string) (SiteInput, error) {
	var in SiteInput
	if err := c.Reader.Get(ctx, client.ObjectKey{Name: name}, &in.Site); err != nil {
		return SiteInput{}, readError(fmt.Sprintf("getting Site %q", name), err)
	}
	t, err := c.Topology(ctx)
	if err != nil {
		return SiteInput{}, err
	}
	in.Topology = t
	var computers siteopsv1.ComputerList
	if err := listAll(ctx, c.Reader, &computers, func() { in.Computers = append(in.Computers, computers.Items...) },
		client.InNamespace(namespace), client.MatchingFields{"status.site": name}); err != nil {
		return SiteInput{}, namespaceHint(readError(fmt.Sprintf("listing the Computers of site %q%s", name, inNamespace(namespace)), err), namespace)
	}
	var packages siteopsv1.PackageList
	if err := listAll(ctx, c.Reader, &packages, func() { in.Packages = append(in.Packages, packages.Items...) },
		client.InNamespace(namespace)); err != nil {
		return SiteInput{}, namespaceHint(readError("listing Packages"+inNamespace(namespace), err), namespace)
	}
	return in, nil
}

// Task gets the named DeploymentTask.
func (c Client) Task(ctx context.Context, namespace, name string) (*siteopsv1.DeploymentTask, error) {
	task := &siteopsv1.DeploymentTask{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, task); err != nil {
		return nil, readError(fmt.Sprintf("getting DeploymentTask %s/%s", namespace, name), err)
	}
	return task, nil
}

// Computer gets the named Computer.
func (c Client) Computer(ctx context.Context, namespace, name string) (*siteopsv1.Computer, error) {
	comp := &siteopsv1.Computer{}
	if err := c.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, comp); err != nil {
		return nil, readError(fmt.Sprintf("getting Computer %s/%s", namespace, name), err)
	}
	return comp, nil
}

// listAll lists into list page by page, calling collect after each page.
func listAll(ctx context.Context, r client.Reader, list client.ObjectList, collect func(), opts ...client.ListOption) error {
	cont := ""
	for {
		if err := r.List(ctx, list, append(opts, client.Limit(pageSize), client.Continue(cont))...); err != nil {
			return err
		}
		collect()
		if cont = list.GetContinue(); cont == "" {
			return nil
		}
	}
}

// readError says what was being read and, for the errors a user meets
// first, what to do about them.
func readError(doing string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return fmt.Errorf("%s: not found", doing)
	case meta.IsNoMatchError(err):
		return fmt.Errorf("%s: the siteops.io CRDs are not installed in this cluster: %w", doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// namespaceHint adds to a refusal to list in every namespace that -n
// limits the site command to one.
func namespaceHint(err error, namespace string) error {
	if namespace == "" && apierrors.IsForbidden(err) {
		return fmt.Errorf("%w; -n <namespace> counts the Computers and Packages of one namespace only", err)
	}
	return err
}

// inNamespace is " in namespace <ns>", or "" for every namespace.
func inNamespace(namespace string) string {
	if namespace == "" {
		return ""
	}
	return " in namespace " + namespace
}
