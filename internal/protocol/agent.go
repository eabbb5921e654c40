package protocol

import (
	"net/http"
	"strconv"
	"time"
)

// RegisterPath is the task service's registration endpoint: POST a
// RegisterRequest with "Authorization: Bearer <bootstrap token>", receive
// a RegisterResponse.
const RegisterPath = "/v1/register"

// WorkPath is the task service's check-in endpoint: GET with
// "Authorization: Bearer <credential>" and the query parameters below,
// receive a WorkResponse.
const WorkPath = "/v1/work"

// Query parameters of a check-in (GET WorkPath).
const (
	// QueryWait is how long the service may hold the check-in when there
	// is no work, in whole seconds (0 to MaxWaitSeconds): the long poll.
	QueryWait = "wait"
	// QueryAddress is one of the agent's IP addresses, most preferred
	// first; repeat it for each (at most MaxAgentAddresses).
	QueryAddress = "address"
	// QueryVersion is the agent's version.
	QueryVersion = "version"
)

// Limits of the agent API: a request beyond them is refused with 400 and
// changes nothing.
const (
	// MaxRegisterBodyBytes is the largest registration body accepted.
	MaxRegisterBodyBytes = 16 << 10
	// MaxAgentAddresses is the most addresses a registration or a check-in
	// may carry.
	MaxAgentAddresses = 16
	// MaxMACAddresses is the most MAC addresses a registration may carry.
	MaxMACAddresses = 16
	// MaxWaitSeconds is the longest long poll an agent may ask for.
	MaxWaitSeconds = 300
	// MaxHostnameLength is the longest host name accepted.
	MaxHostnameLength = 253
	// MaxVersionLength is the longest agent version accepted.
	MaxVersionLength = 64
)

// RegisterRequest is an agent's registration. The bootstrap token goes in
// the Authorization header, never in the body.
type RegisterRequest struct {
	// RequestID is a random ID the agent draws for each registration it
	// sends, 16 to 64 characters [A-Za-z0-9_-]. A registration is accepted
	// once per ID: a replayed request is refused with 409 and changes
	// nothing. An agent that retries after a lost answer draws a new ID.
	RequestID string `json:"requestID"`
	// Hostname is the computer's host name.
	Hostname string `json:"hostname"`
	// HardwareID is the firmware's identity of the computer (the SMBIOS
	// system UUID), which survives re-imaging; optional.
	HardwareID string `json:"hardwareID,omitempty"`
	// MACAddresses are the computer's MAC addresses, "00:1a:2b:3c:4d:5e".
	// With HardwareID they tell a known computer from a new one.
	MACAddresses []string `json:"macAddresses,omitempty"`
	// Addresses are the computer's IP addresses, most preferred first, as
	// sent to the locator.
	Addresses []string `json:"addresses"`
	// AgentVersion is the agent's version.
	AgentVersion string `json:"agentVersion,omitempty"`
}

// RegisterResponse is the agent's identity.
type RegisterResponse struct {
	// Namespace and Computer name the Computer the agent is.
	Namespace string `json:"namespace"`
	Computer  string `json:"computer"`
	// Credential authenticates the agent's check-ins from now on
	// ("Authorization: Bearer <credential>"). The service keeps only its
	// hash: keep it secret (the agent writes it with mode 0600).
	Credential string `json:"credential"`
	// Site is the site the agent's addresses map to; empty when none does.
	Site string `json:"site,omitempty"`
	// SiteServer is the SiteServer that registered the agent.
	SiteServer string `json:"siteServer"`
}

// WorkResponse answers a check-in: the work to do, if any, and when to
// check in again.
type WorkResponse struct {
	// Work is what the agent must do now; empty when there is nothing.
	Work []WorkItem `json:"work"`
	// NextCheckInMillis is how long the agent waits, in milliseconds,
	// before its next check-in. The service sets it so that the check-ins
	// of all its agents stay under its configured rate, with jitter; 0
	// means at once (more work may be waiting).
	NextCheckInMillis int64 `json:"nextCheckInMillis"`
	// Computer is the Computer the credential belongs to, as
	// "<namespace>/<name>".
	Computer string `json:"computer"`
	// Site is the site the agent's addresses map to; empty when none does.
	Site string `json:"site,omitempty"`
	// SiteServer is the SiteServer that answered.
	SiteServer string `json:"siteServer"`
	// HeldMillis is how long the service held the check-in before it
	// answered (the long poll), so that the agent can tell the service's
	// latency from the wait it asked for.
	HeldMillis int64 `json:"heldMillis,omitempty"`
}

// NextCheckIn is NextCheckInMillis as a duration.
func (r WorkResponse) NextCheckIn() time.Duration {
	return time.Duration(r.NextCheckInMillis) * time.Millisecond
}

// WorkItem is one piece of work for the agent. DeploymentTasks fill it
// (their actions are added here); a check-in answers with none until then.
type WorkItem struct {
	// ID names the work item in the status the agent reports.
	ID string `json:"id"`
}

// Statuses of the agent API beyond the usual ones.
const (
	// StatusRelocate (421 Misdirected Request) answers an agent that this
	// service does not serve by the serving rules (its addresses map to a
	// site this server does not serve): the agent locates again.
	StatusRelocate = http.StatusMisdirectedRequest
)

// RetryAfter is the value of a Retry-After header (whole seconds, at least
// 1) for d, for a 503 or 429 answer.
func RetryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
}
