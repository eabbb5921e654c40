package simcluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Pod addresses for the pod runner. A process of a pod binds its pod
// address, and the tests, the probes and (later) simulated agents connect
// to it. This workplace allows such traffic only to loopback addresses (or
// to hosts in network namespaces of its own), so the pods of a cluster with
// a pod runner get a /16 of 127.0.0.0/8: on Linux every address of it is
// already this machine's own, and nothing leaves the machine.
//
// The price: the API server refuses loopback addresses in EndpointSlices,
// so kube-controller-manager cannot list these pods in their Services'
// slices. The tests judge a Service by the ready pods its selector picks
// instead (what the operator decides); a pod network in a network
// namespace of its own would bring the slices back.
//
// Clusters that run at once on one machine (the e2e suite's, a spec's own,
// the simcluster package's tests) must not share a block: their pods would
// get the same addresses and the second process to bind one fails. Each
// block is reserved by an exclusive lock on a file of the temporary
// directory, held while the cluster runs and released by the kernel when
// its process ends, however it ends.

// podBlockFirst and podBlockLast bound the second octet of a cluster's pod
// block, clear of the cluster's own hosts (pickHost: 127.100–199).
const (
	podBlockFirst = 200
	podBlockLast  = 254
)

// reservePodCIDR returns a /16 of 127.0.0.0/8 for kwok's --cidr (the
// block's first address is kwok's gateway) that no other cluster of this
// machine holds, from a random one on, and the lock that holds it: close
// it when the cluster stops.
func reservePodCIDR() (string, *os.File, error) {
	blocks := podBlockLast - podBlockFirst + 1
	start := rand.IntN(blocks)
	for i := range blocks {
		block := podBlockFirst + (start+i)%blocks
		lock, err := lockFile(podBlockLock(block))
		if err != nil {
			return "", nil, err
		}
		if lock != nil {
			return fmt.Sprintf("127.%d.0.1/16", block), lock, nil
		}
	}
	return "", nil, fmt.Errorf("every pod block 127.%d.0.0/16 to 127.%d.0.0/16 is held by another cluster of this machine",
		podBlockFirst, podBlockLast)
}

// podBlockLock is the lock file of the block 127.<block>.0.0/16.
func podBlockLock(block int) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("simcluster-pods-127.%d.lock", block))
}
