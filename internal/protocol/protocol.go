// Package protocol holds the agent protocol's request and response types:
// the HTTP/JSON contract between the agent on a managed computer and the
// services it talks to (the locator in the manager, the task and package
// services of its site). The agent and the services both import it, so the
// two sides cannot drift.
//
// It uses only the standard library: the agent must not link
// controller-runtime or client-go, and importing this package must not
// bring them in (a test checks the import graph).
//
// Every path is versioned (/v1/...). A field is added, never renamed; an
// incompatible change is a new version beside the old one.
//
// It holds locate (locate.go), the task service's agent API (register
// and check-in, work reports: agent.go), and the package service's content
// and capture upload (content.go).
package protocol

// ContentType is the media type of every request and response body.
const ContentType = "application/json"

// Error is the body of every response that is not a success: what was
// wrong, and with which field of the request, so that an agent's log says
// what to fix.
type Error struct {
	// Error says what went wrong, in English.
	Error string `json:"error"`
	// Field names the request field at fault, as a JSON path
	// ("addresses[2]"); empty when the request as a whole is at fault.
	Field string `json:"field,omitempty"`
}
