// Package agentauth holds the pure rules of an agent's credential, which
// the task service issues at registration and the site services check on
// every request of the agent: its form, its hash, the bearer header that
// carries it, and whether a Computer accepts it.
//
// A credential is "<base64url(namespace/name)>.<base64url(32 random
// bytes)>". The first part names the Computer, so that a service finds the
// hash to compare with in one lookup; the second is the secret, of which
// the Computer's status keeps only the SHA-256 (status.credential.hash,
// "sha256:<hex>"). A credential issued before the Computer's
// spec.credentialsNotBefore is revoked.
package agentauth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

const (
	// SecretBytes is the length of a credential's secret before encoding.
	SecretBytes = 32
	// HashPrefix starts every stored hash.
	HashPrefix = "sha256:"
)

// ErrMalformed is the error of Parse: the credential does not have the
// form of one.
var ErrMalformed = errors.New("the credential is malformed")

// New draws a credential for the Computer key and returns it with the hash
// to store in its status.
func New(key types.NamespacedName) (credential, hash string) {
	secret := make([]byte, SecretBytes)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	s := base64.RawURLEncoding.EncodeToString(secret)
	return base64.RawURLEncoding.EncodeToString([]byte(key.String())) + "." + s, Hash(s)
}

// Hash is the stored form of a credential's secret part.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return HashPrefix + hex.EncodeToString(sum[:])
}

// Parse splits a credential into the Computer it names and its secret
// part; ErrMalformed when it is not a credential.
func Parse(credential string) (types.NamespacedName, string, error) {
	id, secret, ok := strings.Cut(credential, ".")
	if !ok || id == "" || len(secret) != base64.RawURLEncoding.EncodedLen(SecretBytes) {
		return types.NamespacedName{}, "", ErrMalformed
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return types.NamespacedName{}, "", ErrMalformed
	}
	ns, name, ok := strings.Cut(string(raw), "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, "", ErrMalformed
	}
	return types.NamespacedName{Namespace: ns, Name: name}, secret, nil
}

// SecretMatches reports whether secret hashes to the stored hash, in time
// that does not depend on where they differ.
func SecretMatches(secret, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(Hash(secret)), []byte(stored)) == 1
}

// Bearer returns the token of an "Authorization: Bearer <token>" header.
func Bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// Valid checks secret against the credential in comp's status: nil when
// comp exists, has a credential, the secret matches its hash and
// spec.credentialsNotBefore does not revoke it; otherwise why not.
func Valid(comp *siteopsv1.Computer, secret string) error {
	if comp == nil {
		return errors.New("no such Computer")
	}
	cred := comp.Status.Credential
	if cred == nil {
		return errors.New("it has no credential")
	}
	if !SecretMatches(secret, cred.Hash) {
		return errors.New("the secret does not match its credential")
	}
	return NotRevoked(comp, cred.IssuedAt.Time)
}

// NotRevoked reports an error when comp's spec.credentialsNotBefore
// revokes a credential issued at issuedAt.
func NotRevoked(comp *siteopsv1.Computer, issuedAt time.Time) error {
	if nb := comp.Spec.CredentialsNotBefore; nb != nil && issuedAt.Before(nb.Time) {
		return fmt.Errorf("its credential, issued at %s, is revoked by spec.credentialsNotBefore", issuedAt.UTC().Format(time.RFC3339))
	}
	return nil
}
