package locator

import (
	"net/netip"
)

// addrKey hashes an address (unmapped, without zone) for rendezvous
// ordering: FNV-1a over its 16-byte form, so IPv4 and its IPv4-mapped form
// agree.
func addrKey(addr netip.Addr) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	b := addr.Unmap().As16()
	h := uint64(offset)
	for _, c := range b {
		h ^= uint64(c)
		h *= prime
	}
	return h
}

// score is the rendezvous weight of a server for an agent: a 64-bit
// finalizer (splitmix64's) over both keys, so that every (agent, server)
// pair gets an independent-looking weight.
func score(agent, server uint64) uint64 {
	z := agent ^ server
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// scored is a candidate and its weight.
type scored struct {
	e     *entry
	ready bool
	score uint64
}

// before orders candidates: ready first, then higher score, then name
// (scores of distinct names collide only by accident).
func (a scored) before(b scored) bool {
	if a.ready != b.ready {
		return a.ready
	}
	if a.score != b.score {
		return a.score > b.score
	}
	return a.e.Name < b.e.Name
}

// order returns at most limit of servers in the order agent should try them,
// appended to buf[:0]. It keeps the best limit by insertion, O(n·limit), which
// for the few servers of a site is a handful of comparisons.
func order(agent uint64, servers []*entry, limit int, buf []scored) []scored {
	top := buf[:0]
	for _, e := range servers {
		c := scored{e: e, ready: e.TaskReady, score: score(agent, e.key)}
		if len(top) == limit && !c.before(top[len(top)-1]) {
			continue
		}
		if len(top) < limit {
			top = append(top, c)
		} else {
			top[len(top)-1] = c
		}
		for i := len(top) - 1; i > 0 && top[i].before(top[i-1]); i-- {
			top[i], top[i-1] = top[i-1], top[i]
		}
	}
	return top
}
