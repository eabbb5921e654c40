package simcluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// LabelSiteServer is the node label that the samples' and the tests'
// SiteServers select (spec.nodeSelector) for their site services.
const LabelSiteServer = "siteops.io/site-server"

// SiteServerLabels are the labels of a node meant for site services.
func SiteServerLabels() map[string]string {
	return map[string]string{LabelSiteServer: "true"}
}

// nodeReadyTimeout bounds how long NodePool.Create waits for kwok to report
// its nodes Ready.
const nodeReadyTimeout = 2 * time.Minute

// NodePool is a set of alike kwok nodes, each with local volumes of one
// StorageClass: for site-server nodes, a Node template labelled
// SiteServerLabels and volumes for the package services' content.
type NodePool struct {
	// Names of the nodes.
	Names []string
	// Node is every node's template; its Name is ignored.
	Node FakeNode
	// StorageClass of the volumes; Create creates it unless it exists.
	StorageClass string
	// Volumes per node, of VolumeSize each (default 10Gi).
	Volumes    int
	VolumeSize string
	// Workers create the nodes and volumes in parallel; default 1.
	Workers int
}

// Create creates the StorageClass, the nodes and their volumes, and waits
// until kwok reports every node Ready.
func (p NodePool) Create(ctx context.Context, c client.Client) error {
	if p.StorageClass != "" && p.Volumes > 0 {
		if err := CreateLocalStorageClass(ctx, c, p.StorageClass); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	err := p.forEachNode(ctx, func(ctx context.Context, name string) error {
		n := p.Node
		n.Name = name
		if _, err := CreateFakeNode(ctx, c, n); err != nil {
			return err
		}
		return p.createVolumes(ctx, c, name)
	})
	if err != nil {
		return err
	}
	return WaitForNodesReady(ctx, c, nodeReadyTimeout, p.Names...)
}

// CreateVolumes creates p.Volumes more volumes on every node of the pool,
// such as fresh ones for a benchmark's next phase.
func (p NodePool) CreateVolumes(ctx context.Context, c client.Client) error {
	return p.forEachNode(ctx, func(ctx context.Context, name string) error {
		return p.createVolumes(ctx, c, name)
	})
}

func (p NodePool) createVolumes(ctx context.Context, c client.Client, node string) error {
	if p.Volumes == 0 {
		return nil
	}
	return CreateLocalVolumes(ctx, c, LocalVolumes{StorageClass: p.StorageClass, Node: node, Count: p.Volumes, Size: p.VolumeSize})
}

// forEachNode calls f for every node name on p.Workers goroutines and
// returns the first error.
func (p NodePool) forEachNode(ctx context.Context, f func(ctx context.Context, name string) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
		slots    = make(chan struct{}, max(p.Workers, 1))
	)
	for _, name := range p.Names {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if err := f(ctx, name); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

// WaitForNodesReady waits until kwok reports every named node Ready, or
// fails after timeout.
func WaitForNodesReady(ctx context.Context, c client.Client, timeout time.Duration, names ...string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		notReady, err := nodesNotReady(ctx, c, names)
		if err != nil {
			return err
		}
		if len(notReady) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for nodes %v to turn Ready: %w", notReady, ctx.Err())
		case <-tick.C:
		}
	}
}

// nodesNotReady are the names whose node does not exist yet or is not
// Ready.
func nodesNotReady(ctx context.Context, c client.Client, names []string) ([]string, error) {
	var nodes corev1.NodeList
	if err := c.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	ready := map[string]bool{}
	for _, n := range nodes.Items {
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				ready[n.Name] = true
			}
		}
	}
	var notReady []string
	for _, name := range names {
		if !ready[name] {
			notReady = append(notReady, name)
		}
	}
	return notReady, nil
}
