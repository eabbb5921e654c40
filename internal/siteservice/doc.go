// Package siteservice groups the site services: the processes that a
// SiteServer runs in its pods and that agents talk to.
//
//   - host: the HTTP plumbing both services share (API and probe servers,
//     limits, graceful shutdown).
//   - config: the configuration the operator mounts into their pods.
//   - task: the task service (agents check in, receive work, report).
//   - content: the package service's content store, served by digest.
//
// None of them links controller-runtime or client-go.
package siteservice
