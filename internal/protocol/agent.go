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
	// QueryBusy is the ID of the work item the agent is carrying out, if
	// any: the service hands out no other work meanwhile, and does not hand
	// that item again.
	QueryBusy = "busy"
)

// WorkStatusPattern is the task service's report endpoint, as a net/http
// pattern: POST a WorkStatus for the work item {id} with the agent's
// credential, receive a WorkStatusResponse. WorkStatusPath makes its path.
const WorkStatusPattern = "POST /v1/work/{id}/status"

// WorkStatusPath is the path of the report endpoint for work item id.
func WorkStatusPath(id string) string { return WorkPath + "/" + id + "/status" }

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
	// MaxWorkStatusBodyBytes is the largest report body accepted.
	MaxWorkStatusBodyBytes = 64 << 10
	// MaxOutputBytes is the most output a report carries: the agent keeps
	// the end of a longer output and sets OutputTruncated.
	MaxOutputBytes = 4096
	// MaxMessageLength is the longest message a report carries.
	MaxMessageLength = 256
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

// WorkItem is one piece of work for the agent: one attempt of a
// DeploymentTask's action on this computer.
type WorkItem struct {
	// ID names the work item in the reports of the agent
	// (WorkStatusPath(ID)): "<task UID>.<attempt>". The agent carries out an
	// ID at most once, even if it is offered again.
	ID string `json:"id"`
	// Task is the DeploymentTask, "<namespace>/<name>", for the logs.
	Task string `json:"task"`
	// Attempt numbers the attempts of this work on this computer, from 1.
	Attempt int32 `json:"attempt"`
	// Action is what to do: exactly one member is set.
	Action Action `json:"action"`
}

// Action is what a work item asks; exactly one member is set. An agent
// that does not know the action reports the item Failed with reason
// StartFailed.
type Action struct {
	RunScript       *RunScript       `json:"runScript,omitempty"`
	Reboot          *Reboot          `json:"reboot,omitempty"`
	DeployImage     *DeployImage     `json:"deployImage,omitempty"`
	InstallSoftware *InstallSoftware `json:"installSoftware,omitempty"`
	CaptureImage    *CaptureImage    `json:"captureImage,omitempty"`
}

// RunScript runs Script with Interpreter (sh, bash, python3, powershell,
// pwsh or cmd), killed after TimeoutSeconds.
type RunScript struct {
	Script         string `json:"script"`
	Interpreter    string `json:"interpreter"`
	TimeoutSeconds int64  `json:"timeoutSeconds"`
}

// Reboot restarts the computer once its success is acknowledged.
type Reboot struct{}

// Content is a Package's content: the agent downloads it from the package
// endpoints of its site (GET ContentPath(Digest), resumed with Range,
// failing over to the next endpoint of the same site, never to another
// site's) and verifies Digest and Size before it uses it.
type Content struct {
	// Package is the Package, "<namespace>/<name>", for the logs.
	Package string `json:"package"`
	// Digest is "sha256:<64 lower-case hex digits>".
	Digest string `json:"digest"`
	// Size is the content's length in bytes.
	Size int64 `json:"size"`
}

// DeployImage writes a disk image to the disk the agent is configured
// with, once downloaded and verified. TimeoutSeconds bounds the whole.
type DeployImage struct {
	Content
	TimeoutSeconds int64 `json:"timeoutSeconds"`
}

// InstallSoftware runs a software package's content, an installer program,
// once downloaded and verified; its exit code decides, as for a script.
// TimeoutSeconds bounds the whole.
type InstallSoftware struct {
	Content
	TimeoutSeconds int64 `json:"timeoutSeconds"`
}

// CaptureImage uploads the disk the agent is configured with to a package
// endpoint of its site (UploadsPath): the service makes the upload the
// Package PackageName of the work item's task's namespace.
// TimeoutSeconds bounds the whole.
type CaptureImage struct {
	PackageName    string `json:"packageName"`
	TimeoutSeconds int64  `json:"timeoutSeconds"`
}

// States a report carries.
const (
	// WorkRunning: the agent started the work (a progress report).
	WorkRunning = "Running"
	// WorkSucceeded and WorkFailed are final.
	WorkSucceeded = "Succeeded"
	WorkFailed    = "Failed"
)

// Reasons of a Failed report.
const (
	ReasonExitCode            = "ExitCode"
	ReasonTimedOut            = "TimedOut"
	ReasonInterrupted         = "Interrupted"
	ReasonInterpreterNotFound = "InterpreterNotFound"
	ReasonStartFailed         = "StartFailed"
	// ReasonContentUnavailable: no package endpoint of the agent's site
	// served the content, or what they served did not match its digest.
	ReasonContentUnavailable = "ContentUnavailable"
	// ReasonDiskFailed: the configured disk could not be read or written
	// (none configured, too small, an I/O error).
	ReasonDiskFailed = "DiskFailed"
	// ReasonUploadFailed: no package endpoint of the agent's site took
	// the capture.
	ReasonUploadFailed = "UploadFailed"
)

// WorkStatus is an agent's report on a work item: progress (Running) or
// its result (Succeeded, Failed). Reports are idempotent: the same final
// report sent again is acknowledged again and changes nothing; a report of
// another attempt than the service's current one is refused with 409.
type WorkStatus struct {
	// Attempt is the work item's attempt.
	Attempt int32 `json:"attempt"`
	// State is Running, Succeeded or Failed.
	State string `json:"state"`
	// Reason says why a Failed item failed: ExitCode, TimedOut,
	// Interrupted (the agent restarted while it ran: it is not run again),
	// InterpreterNotFound, StartFailed, ContentUnavailable, DiskFailed or
	// UploadFailed.
	Reason string `json:"reason,omitempty"`
	// ExitCode is the script's exit code when it ran to an end.
	ExitCode *int32 `json:"exitCode,omitempty"`
	// Message is a short description, at most MaxMessageLength bytes.
	Message string `json:"message,omitempty"`
	// Output is the end of the standard output and error, at most
	// MaxOutputBytes; OutputTruncated says its beginning was cut.
	Output          string `json:"output,omitempty"`
	OutputTruncated bool   `json:"outputTruncated,omitempty"`
	// Started and Finished are when the agent started and finished the
	// work (RFC 3339).
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
}

// Final reports whether the report is a result.
func (s WorkStatus) Final() bool { return s.State == WorkSucceeded || s.State == WorkFailed }

// WorkStatusResponse acknowledges a report: once the service answers 200,
// the report is recorded in the API server and the agent may forget it. A
// Running report (progress, sent once and at best) may be answered 202
// Accepted instead: it is queued for the next write, not yet recorded, and
// Recorded is the state held before it.
type WorkStatusResponse struct {
	// Recorded is the state the service holds for the item now.
	Recorded string `json:"recorded"`
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
