package task

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// A credential is what an agent presents at each check-in once it has
// registered: "<base64url(namespace/name)>.<base64url(32 random bytes)>".
// The first part names the Computer, so that the service finds the hash to
// compare with in one lookup; the second is the secret, of which the
// Computer's status keeps only the SHA-256 (status.credential.hash).
const (
	credentialSecretBytes = 32
	// hashPrefix starts every stored hash.
	hashPrefix = "sha256:"
)

var errMalformedCredential = errors.New("the credential is malformed")

// newCredential draws a credential for the Computer key and returns it
// with the hash to store.
func newCredential(key types.NamespacedName) (credential, hash string) {
	secret := make([]byte, credentialSecretBytes)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	s := base64.RawURLEncoding.EncodeToString(secret)
	return base64.RawURLEncoding.EncodeToString([]byte(key.String())) + "." + s, hashSecret(s)
}

// hashSecret is the stored form of a credential's secret part.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hashPrefix + hex.EncodeToString(sum[:])
}

// parseCredential splits a credential into the Computer it names and its
// secret part.
func parseCredential(credential string) (types.NamespacedName, string, error) {
	id, secret, ok := strings.Cut(credential, ".")
	if !ok || id == "" || len(secret) != base64.RawURLEncoding.EncodedLen(credentialSecretBytes) {
		return types.NamespacedName{}, "", errMalformedCredential
	}
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return types.NamespacedName{}, "", errMalformedCredential
	}
	ns, name, ok := strings.Cut(string(raw), "/")
	if !ok || ns == "" || name == "" {
		return types.NamespacedName{}, "", errMalformedCredential
	}
	return types.NamespacedName{Namespace: ns, Name: name}, secret, nil
}

// secretMatches reports whether secret hashes to the stored hash, in time
// that does not depend on where they differ.
func secretMatches(secret, stored string) bool {
	return subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(stored)) == 1
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(header string) (string, bool) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
