package protocol

// LocatePath is the locator's endpoint: POST a LocateRequest, receive a
// LocateResponse.
const LocatePath = "/v1/locate"

// Locate limits: a request beyond them, an oversized body included, is
// refused with 400 and changes nothing.
const (
	// MaxLocateAddresses is the most addresses one request may carry.
	MaxLocateAddresses = 16
	// MaxLocateBodyBytes is the largest request body accepted.
	MaxLocateBodyBytes = 16 << 10
)

// LocateRequest asks which servers serve an agent.
type LocateRequest struct {
	// Addresses are the agent's own IP addresses (IPv4 or IPv6, no zone
	// needed), most preferred first: the first one in an effective subnet
	// decides the site. At least one, at most MaxLocateAddresses.
	Addresses []string `json:"addresses"`
}

// Rule says which serving rule chose the servers of a LocateResponse
// (ARCHITECTURE.md §2, "Which servers serve an agent").
type Rule string

const (
	// RuleSite: the agent's site has a ready server; its servers serve it.
	RuleSite Rule = "Site"
	// RuleNoSites: no Site exists at all, so every SiteServer serves every
	// agent.
	RuleNoSites Rule = "NoSites"
	// RuleSiteNotReady: the agent's site has no ready server, so the
	// unassigned SiteServers serve it.
	RuleSiteNotReady Rule = "SiteNotReady"
	// RuleNoSite: no address of the agent is in an effective subnet, so
	// the unassigned SiteServers serve it.
	RuleNoSite Rule = "NoSite"
)

// LocateResponse says which servers serve the agent, in the order to try
// them.
type LocateResponse struct {
	// Site is the agent's site; empty when no address is in an effective
	// subnet.
	Site string `json:"site,omitempty"`
	// Subnet is the Subnet that mapped the deciding address to Site.
	Subnet string `json:"subnet,omitempty"`
	// Address is the request address that decided the site (the first
	// one, when none did): the one the order below was computed for.
	Address string `json:"address,omitempty"`
	// Rule is the serving rule that chose the servers.
	Rule Rule `json:"rule"`
	// TaskEndpoints are the task services' URLs in the order to try them:
	// servers whose task service is ready first, then the others; within
	// each, an order that is stable for this agent and spreads agents
	// evenly over the servers. Empty when no server serves the agent.
	TaskEndpoints []string `json:"taskEndpoints"`
	// PackageEndpoints are the package services' URLs, in the same server
	// order.
	PackageEndpoints []string `json:"packageEndpoints"`
	// RetryAfterSeconds is when to locate again: set when no server serves
	// the agent (TaskEndpoints is empty), and when it is served by a
	// fallback (its site's own servers may come back); 0 otherwise, when
	// the agent locates again only once every endpoint has failed.
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
}
