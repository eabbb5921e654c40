// Package certs issues and renews the TLS certificates that agents meet:
// one CA kept by the operator, a serving certificate per SiteServer (its
// task and package services) and one for the locator, all signed by that
// CA, whose certificate agents trust through the published bundle.
//
// It is pure Go standard library (crypto/x509, crypto/tls) and links
// neither controller-runtime nor client-go: the site services import it
// to serve and to load certificates, and the controllers import it to
// decide what to issue. The agent does not import it (it links only the
// standard library and internal/protocol); it reloads its own bundle file
// (internal/agent, Config.CAFile).
//
// # Rules
//
//   - Keys are ECDSA P-256; serial numbers are random (128 bits); a leaf
//     certificate is for server authentication only and carries every name
//     it is reached by as a SAN (DNS names and IP addresses, no common-name
//     fallback).
//   - A serving certificate is renewed at 2/3 of its lifetime ([RenewAt]),
//     so a failed renewal has a third of the lifetime to succeed.
//   - [Decide] says whether a serving certificate must be (re-)issued, and
//     why: none or unreadable, a key that does not match, not signed by the
//     current CA (signing switched to the next CA), its names differ from
//     the wanted ones, or it is due for renewal. Otherwise it is kept as it
//     is, so a steady state writes nothing.
//
// # The CA's rotation
//
// Agents are given the bundle once and may take months to receive a new
// one, so the CA is replaced in stages ([PlanCA], [RotateCA]); the CA
// Secret holds the CA that signs, the next one and the previous one
// ([CAFiles]):
//
//   - At 2/3 of the current CA's lifetime ([PrepareAt]) the next CA is made
//     and published in the bundle beside the current one, which keeps
//     signing: no serving certificate changes.
//   - At 5/6 of the current CA's lifetime ([SwitchAt]) the next CA takes
//     over the signing, and every serving certificate is re-issued by it
//     ([Decide]: not signed by the current CA). Between the two, a sixth
//     of the lifetime (10 months of [DefaultCALifetime]), agents are to
//     receive the new bundle. A next CA made late (the operator was off)
//     still gets that window, except that the switch comes no later than
//     11/12 of the current CA's lifetime, so that the servers move before
//     it expires.
//   - The CA signing before the switch becomes the previous one and stays
//     in the bundle ([CAFiles.Bundle], [Bundle]) until it expires, so
//     certificates it signed keep verifying while they are re-issued.
//
// An agent holding only the old CA therefore keeps trusting every server
// until the switch, and one holding the bundle published after 2/3 trusts
// them across it. A CA that is missing or does not load is made anew and
// signs at once ([CACreate]): there is nothing to stage from.
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
