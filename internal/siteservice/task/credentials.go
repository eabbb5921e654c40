package task

import (
	"time"

	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/agentauth"
)

// The rules of an agent's credential live in package agentauth, which the
// package service shares: these are the task service's names for them.

// newCredential draws a credential for the Computer key and returns it
// with the hash to store.
func newCredential(key types.NamespacedName) (credential, hash string) { return agentauth.New(key) }

// parseCredential splits a credential into the Computer it names and its
// secret part.
func parseCredential(credential string) (types.NamespacedName, string, error) {
	return agentauth.Parse(credential)
}

// secretMatches reports whether secret hashes to the stored hash, in time
// that does not depend on where they differ.
func secretMatches(secret, stored string) bool { return agentauth.SecretMatches(secret, stored) }

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, bool) { return agentauth.Bearer(header) }

// credentialValid checks secret against the Computer's credential.
func credentialValid(comp *siteopsv1.Computer, secret string) error {
	return agentauth.Valid(comp, secret)
}

// credentialNotRevoked reports an error when spec.credentialsNotBefore
// revokes a credential issued at issuedAt.
func credentialNotRevoked(comp *siteopsv1.Computer, issuedAt time.Time) error {
	return agentauth.NotRevoked(comp, issuedAt)
}
