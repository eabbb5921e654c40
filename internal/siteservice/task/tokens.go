package task

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// A bootstrap token is "<id>.<secret>": the Secret named
// siteopsv1.BootstrapTokenSecretPrefix+id in the token namespace holds it
// (see siteopsv1.BootstrapTokenSecretType for its keys).
var (
	tokenPattern   = regexp.MustCompile(`^([a-z0-9]{6})\.([a-z0-9]{16})$`)
	tokenIDPattern = regexp.MustCompile(`^[a-z0-9]{6}$`)
	secretPattern  = regexp.MustCompile(`^[a-z0-9]{16}$`)
)

// errTokenRefused is what an agent is told whatever the reason a token is
// refused (unknown, wrong secret, expired, used up, malformed Secret): the
// reason goes to the service's log only, so that the answer tells an
// attacker nothing.
var errTokenRefused = errors.New("the bootstrap token is not valid")

// parseToken splits a presented bootstrap token into its ID and secret.
func parseToken(token string) (id, secret string, ok bool) {
	m := tokenPattern.FindStringSubmatch(token)
	if m == nil {
		return "", "", false
	}
	return m[1], m[2], true
}

// bootstrapToken is a token Secret, read and checked.
type bootstrapToken struct {
	id, secret string
	// namespace receives the Computers the token registers.
	namespace  string
	expiration time.Time // zero: never
	usageLimit int64     // 0: unlimited
	usageCount int64
}

// readToken checks the Secret's type and data and returns the token it
// holds, or why it cannot be used.
func readToken(s *corev1.Secret) (bootstrapToken, error) {
	if s.Type != siteopsv1.BootstrapTokenSecretType {
		return bootstrapToken{}, fmt.Errorf("the Secret's type is %q, not %s", s.Type, siteopsv1.BootstrapTokenSecretType)
	}
	t := bootstrapToken{
		id:        string(s.Data[siteopsv1.BootstrapTokenIDKey]),
		secret:    string(s.Data[siteopsv1.BootstrapTokenSecretKey]),
		namespace: string(s.Data[siteopsv1.BootstrapTokenNamespaceKey]),
	}
	if !tokenIDPattern.MatchString(t.id) || s.Name != siteopsv1.BootstrapTokenSecretPrefix+t.id {
		return bootstrapToken{}, fmt.Errorf("data.%s must be 6 characters [a-z0-9] and the Secret named %s<id>",
			siteopsv1.BootstrapTokenIDKey, siteopsv1.BootstrapTokenSecretPrefix)
	}
	if !secretPattern.MatchString(t.secret) {
		return bootstrapToken{}, fmt.Errorf("data.%s must be 16 characters [a-z0-9]", siteopsv1.BootstrapTokenSecretKey)
	}
	if errs := validation.IsDNS1123Label(t.namespace); len(errs) > 0 {
		return bootstrapToken{}, fmt.Errorf("data.%s must name a namespace: %s", siteopsv1.BootstrapTokenNamespaceKey, strings.Join(errs, "; "))
	}
	if v, ok := s.Data[siteopsv1.BootstrapTokenExpirationKey]; ok {
		exp, err := time.Parse(time.RFC3339, string(v))
		if err != nil {
			return bootstrapToken{}, fmt.Errorf("data.%s must be an RFC 3339 time: %w", siteopsv1.BootstrapTokenExpirationKey, err)
		}
		t.expiration = exp
	}
	if v, ok := s.Data[siteopsv1.BootstrapTokenUsageLimitKey]; ok {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n < 1 {
			return bootstrapToken{}, fmt.Errorf("data.%s must be a positive integer", siteopsv1.BootstrapTokenUsageLimitKey)
		}
		t.usageLimit = n
	}
	if v, ok := s.Annotations[siteopsv1.BootstrapTokenUsageAnnotation]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return bootstrapToken{}, fmt.Errorf("annotation %s must be a count", siteopsv1.BootstrapTokenUsageAnnotation)
		}
		t.usageCount = n
	}
	return t, nil
}

// check returns nil when the token accepts a registration with secret at
// now, or why not.
func (t bootstrapToken) check(secret string, now time.Time) error {
	if subtle.ConstantTimeCompare([]byte(secret), []byte(t.secret)) != 1 {
		return errors.New("the secret does not match")
	}
	if !t.expiration.IsZero() && !now.Before(t.expiration) {
		return fmt.Errorf("it expired at %s", t.expiration.Format(time.RFC3339))
	}
	if t.usageLimit > 0 && t.usageCount >= t.usageLimit {
		return fmt.Errorf("it has been used %d times, its limit", t.usageCount)
	}
	return nil
}
