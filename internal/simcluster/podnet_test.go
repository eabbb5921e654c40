package simcluster

import (
	"net/netip"
	"testing"
)

// Two clusters of one machine never share a pod block while both run, and
// a stopped cluster's block can be taken again.
func TestReservePodCIDRKeepsClustersApart(t *testing.T) {
	held := map[string]bool{}
	var locks []func()
	for range 5 {
		cidr, lock, err := reservePodCIDR()
		if err != nil {
			t.Fatal(err)
		}
		locks = append(locks, func() { _ = lock.Close() })
		prefix, err := netip.ParsePrefix(cidr)
		if err != nil || prefix.Bits() != 16 || !prefix.Addr().IsLoopback() {
			t.Fatalf("pod block %q is not a /16 of 127.0.0.0/8 (%v)", cidr, err)
		}
		if held[cidr] {
			t.Fatalf("pod block %s handed out twice while held", cidr)
		}
		held[cidr] = true
	}
	for _, unlock := range locks {
		unlock()
	}
	// Their blocks are free again.
	for cidr := range held {
		block := int(netip.MustParsePrefix(cidr).Addr().As4()[1])
		lock, err := lockFile(podBlockLock(block))
		if err != nil || lock == nil {
			t.Fatalf("the block of %s is still held after its cluster stopped (%v)", cidr, err)
		}
		_ = lock.Close()
	}
}
