// Package certs issues and renews the TLS certificates that agents meet:
// one CA kept by the operator, a serving certificate per SiteServer (its
// task and package services) and one for the locator, all signed by that
// CA, whose certificate agents trust through the published bundle.
//
// It is pure Go standard library (crypto/x509, crypto/tls) and links
// neither controller-runtime nor client-go: the site services (and the
// agent, some day) import it to serve and to load certificates, and the
// controllers import it to decide what to issue.
//
// # Rules
//
//   - Keys are ECDSA P-256; serial numbers are random (128 bits); a leaf
//     certificate is for server authentication only and carries every name
//     it is reached by as a SAN (DNS names and IP addresses, no common-name
//     fallback).
//   - A certificate is renewed at 2/3 of its lifetime ([RenewAt]), so a
//     failed renewal has a third of the lifetime to succeed; the same holds
//     for the CA.
//   - [Decide] says whether a serving certificate must be (re-)issued, and
//     why: none or unreadable, a key that does not match, not signed by the
//     current CA (the CA was renewed), its names differ from the wanted
//     ones, or it is due for renewal. Otherwise it is kept as it is, so a
//     steady state writes nothing.
//   - When the CA is renewed the previous one stays in the published bundle
//     ([Bundle]) until it expires, so an agent holding an older bundle and a
//     server still serving an older certificate keep trusting each other
//     while the new certificates roll out.
//
// # Serving
//
// [FileCertificate] serves a certificate and key from files (a mounted
// Secret volume) and picks up a renewed pair without a restart: its
// GetCertificate, used in a tls.Config, looks at the files at most once per
// interval and reloads them when they changed. The kubelet swaps a Secret
// volume's files at once (its ..data symlink), and a pair that does not
// load (a writer caught half-way) is retried while the previous one is
// served, so a handshake never fails for a rotation. Connections already
// open keep the certificate they were established with.
//
// [Current] holds a certificate that its owner replaces in memory (the
// locator: its Secret read from the manager's cache); see
// controllers.AddLocatorCertificate for the Kubernetes side.
package certs
