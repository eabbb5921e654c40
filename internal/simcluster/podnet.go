package simcluster

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
)

// Pod addresses for the pod runner. A process of a pod must bind its pod
// address, and kube-controller-manager must accept that address in an
// EndpointSlice, which refuses loopback (127.0.0.0/8), link-local and
// unspecified addresses. So the pods of a cluster with a pod runner get a
// /22 of 198.18.0.0/15 (RFC 2544's benchmarking range, routed nowhere) that
// a `local` route on lo makes this machine's own, as 127.0.0.0/8 is: every
// address in it can be bound and reached here, none is announced anywhere.
// The route needs root (as the pod runner's mount namespaces do) and
// iproute2's ip; the kernel refuses a second identical route, so
// concurrent clusters on one machine pick different blocks. Stop deletes
// the route; a test binary killed outright leaves it behind, harmless
// (`ip route show type local` lists it, `ip route del local <cidr> dev lo`
// removes it).

// podNetwork is the range that pod blocks are taken from.
var podNetwork = netip.MustParsePrefix("198.18.0.0/15")

// podBlockBits is the size of one cluster's block: 1,022 pod addresses.
const podBlockBits = 22

// addPodRoute makes a free block of podNetwork local and returns the CIDR
// kwok's --cidr takes (the block's first address reserved).
func (c *Cluster) addPodRoute() (string, error) {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return "", fmt.Errorf("the pod runner's addresses need ip (iproute2): %w", err)
	}
	blocks := 1 << (podBlockBits - podNetwork.Bits())
	var lastErr error
	for range 20 {
		base := podNetwork.Addr().As4()
		n := rand.IntN(blocks) << (32 - podBlockBits)
		base[1] += byte(n >> 16)
		base[2] += byte(n >> 8)
		block := netip.PrefixFrom(netip.AddrFrom4(base), podBlockBits)
		out, err := exec.Command(ip, "route", "add", "local", block.String(), "dev", "lo").CombinedOutput()
		if err == nil {
			c.podRoute = block.String()
			return block.Addr().Next().String() + "/" + fmt.Sprint(podBlockBits), nil
		}
		lastErr = fmt.Errorf("ip route add local %s dev lo: %w: %s", block, err, strings.TrimSpace(string(out)))
		if !strings.Contains(string(out), "File exists") {
			break
		}
	}
	return "", fmt.Errorf("making the pods' addresses local: %w", lastErr)
}

// deletePodRoute removes the route that addPodRoute added.
func (c *Cluster) deletePodRoute() error {
	if c.podRoute == "" {
		return nil
	}
	out, err := exec.Command("ip", "route", "del", "local", c.podRoute, "dev", "lo").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip route del local %s dev lo: %w: %s", c.podRoute, err, strings.TrimSpace(string(out)))
	}
	c.podRoute = ""
	return nil
}
