// Package siteservice groups the site services: the processes that a
// SiteServer runs in its pods and that agents talk to.
//
//   - host: the HTTP plumbing both services share (API and probe servers,
//     per-request limits and a connection cap against slow or hostile
//     clients, graceful shutdown) and Run, the whole of a service binary.
//   - config: the configuration the operator mounts into their pods.
//   - task: the task service (agents check in, receive work, report).
//   - content: the package service's content store, served by digest,
//     holding only content verified against its digest.
//
// None of them links controller-runtime or client-go.
package siteservice
