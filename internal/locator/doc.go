// Package locator answers an agent's first question: which servers serve
// me? It serves POST /v1/locate (internal/protocol) from every manager
// replica, leader or not.
//
// An answer is address → Subnet → Site (the topology package's resolver)
// → servers (the serving rules of ARCHITECTURE.md §2, written once in
// topology/serving.go) → their advertised URLs. Everything comes from
// memory that informers keep current: the resolver, and a ServerSet of the
// SiteServers (name, sites, task readiness, advertised URLs) that
// controllers/serverset_feed.go fills on every replica and publishes as an
// immutable Snapshot. A locate sends no request to the API server and takes
// no lock.
//
// Order: the servers whose task service is ready come first, then the
// others; within each group the order is rendezvous hashing of the
// deciding address over the server names (highest score first). It is
// stable per agent, the same on every replica, spreads agents evenly over
// a site's servers, and adding or removing a server moves only the agents
// whose first choice it becomes or was. An answer lists at most
// Options.MaxServers servers.
//
// Trust model: the locator is unauthenticated, like the directory lookup it
// replaces. It answers only for the addresses given and tells nothing that
// the answer for some address would not: a site name, a subnet name and
// the URLs that agents of that site use anyway (which they could find by
// scanning). It reads nothing from the request other than the addresses,
// writes nothing, and a bad request (malformed JSON, unknown fields, too
// many addresses, an address that does not parse, a body over 16 KiB, the
// wrong method or content type) is refused with a JSON error naming the
// field. An agent can claim any address: the locator's answer is a hint of
// where to go, and the task service authenticates the agent when it
// registers (bootstrap token) and checks in (per-agent credential).
//
// Transport: HTTPS (HTTPServer), from a tls.Config given by the caller (the
// operator's CA) or from tls.crt and tls.key in a directory, reloaded when
// they change; plain HTTP only behind an explicit development option.
package locator
