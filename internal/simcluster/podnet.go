package simcluster

import (
	"fmt"
	"math/rand/v2"
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

// podBlockFirst and podBlockLast bound the second octet of a cluster's pod
// block, clear of the cluster's own hosts (pickHost: 127.100–199).
const (
	podBlockFirst = 200
	podBlockLast  = 254
)

// pickPodCIDR returns a random /16 of 127.0.0.0/8 for kwok's --cidr (the
// block's first address is kwok's gateway).
func pickPodCIDR() string {
	return fmt.Sprintf("127.%d.0.1/16", podBlockFirst+rand.IntN(podBlockLast-podBlockFirst+1))
}
