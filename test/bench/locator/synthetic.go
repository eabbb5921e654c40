package main

import (
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/topology"
)

// synthetic is the locator's input: a resolver, a SiteServer snapshot and
// the agents' addresses.
type synthetic struct {
	resolver *topology.Resolver
	servers  *locator.ServerSet
	addrs    []netip.Addr
}

// newTopology returns nSubnets random subnets (90% IPv4 nested from /8 to
// /30, 10% IPv6 nested from /32 to /64; 60% name one of nSites sites, the
// rest inherit), nServers SiteServers (server i serves site 2i mod nSites,
// one in ten a second site too, one in fifty is unassigned, nine in ten
// have a ready task service) and 8,192 agent addresses, seven in ten in a
// subnet.
func newTopology(nSubnets, nSites, nServers int, seed uint64) *synthetic {
	rng := rand.New(rand.NewPCG(seed, 2))
	sites := make([]string, nSites)
	for i := range sites {
		sites[i] = fmt.Sprintf("site-%04d", i)
	}
	epoch := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var v4, v6, all []netip.Prefix
	subnets := make([]topology.Subnet, 0, nSubnets)
	for len(subnets) < nSubnets {
		var p netip.Prefix
		if rng.IntN(10) > 0 {
			p, v4 = nextPrefix(rng, v4, 8, 16, 30, randomAddr(rng, netip.MustParsePrefix("0.0.0.0/0")))
		} else {
			p, v6 = nextPrefix(rng, v6, 32, 48, 64, randomAddr(rng, netip.MustParsePrefix("2000::/3")))
		}
		all = append(all, p)
		s := topology.Subnet{Name: fmt.Sprintf("sn-%06d", len(subnets)), Prefix: p, Source: topology.SourceManual,
			Created: epoch.Add(time.Duration(len(subnets)) * time.Second)}
		if rng.IntN(10) < 6 {
			s.Site = sites[rng.IntN(len(sites))]
		}
		subnets = append(subnets, s)
	}
	servers := make([]locator.Server, nServers)
	for i := range servers {
		srv := locator.Server{
			Name:             fmt.Sprintf("server-%04d", i),
			TaskReady:        rng.IntN(10) > 0,
			TaskEndpoints:    []string{fmt.Sprintf("https://10.200.%d.%d:8443", i/250, i%250+1)},
			PackageEndpoints: []string{fmt.Sprintf("https://10.200.%d.%d:8444", i/250, i%250+1)},
		}
		if rng.IntN(50) > 0 {
			srv.Sites = []string{sites[(2*i)%nSites]}
			if rng.IntN(10) == 0 {
				srv.Sites = append(srv.Sites, sites[rng.IntN(nSites)])
			}
		}
		servers[i] = srv
	}
	set := locator.NewServerSet()
	set.Replace(servers)
	addrs := make([]netip.Addr, 8192)
	for i := range addrs {
		if rng.IntN(10) < 7 {
			addrs[i] = randomAddr(rng, all[rng.IntN(len(all))])
		} else {
			addrs[i] = randomAddr(rng, netip.MustParsePrefix("0.0.0.0/0"))
		}
	}
	return &synthetic{resolver: topology.Build(subnets, sites), servers: set, addrs: addrs}
}

// nextPrefix returns a new prefix: one in five a root of minRoot to maxRoot
// bits around addr, the others 1 to 8 bits below an existing prefix of at
// most maxBits.
func nextPrefix(rng *rand.Rand, pool []netip.Prefix, minRoot, maxRoot, maxBits int, addr netip.Addr) (netip.Prefix, []netip.Prefix) {
	var p netip.Prefix
	if len(pool) < 100 || rng.IntN(5) == 0 {
		p, _ = addr.Prefix(minRoot + rng.IntN(maxRoot-minRoot+1))
	} else {
		parent := pool[rng.IntN(len(pool))]
		for parent.Bits() >= maxBits {
			parent = pool[rng.IntN(len(pool))]
		}
		bits := min(maxBits, parent.Bits()+1+rng.IntN(8))
		p, _ = randomAddr(rng, parent).Prefix(bits)
	}
	return p, append(pool, p)
}

// randomAddr returns a random address inside p.
func randomAddr(rng *rand.Rand, p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	start := 0
	if p.Addr().Is4() {
		start = 12
	}
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := start; i < 16; i++ {
		for bit := range 8 {
			if i*8+bit >= bits {
				b[i] ^= byte(rng.IntN(2)) << (7 - bit)
			}
		}
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
