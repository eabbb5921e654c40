package agentauth

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func TestCredential(t *testing.T) {
	key := types.NamespacedName{Namespace: "branch-a", Name: "pc-01"}
	cred, hash := New(key)
	gotKey, secret, err := Parse(cred)
	if err != nil || gotKey != key {
		t.Fatalf("Parse(New) = %v, %v", gotKey, err)
	}
	if !SecretMatches(secret, hash) || !strings.HasPrefix(hash, HashPrefix) || strings.Contains(hash, secret) {
		t.Errorf("hash %q does not match its secret, or holds it", hash)
	}
	other, _ := New(key)
	_, otherSecret, _ := Parse(other)
	if SecretMatches(otherSecret, hash) {
		t.Error("two credentials drawn for one Computer share a hash")
	}
	for _, bad := range []string{"", "abc", cred + "x", "!!!." + secret, strings.Replace(cred, ".", "", 1),
		"YnJhbmNoLWE." + secret /* "branch-a": no name */} {
		if _, _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestBearer(t *testing.T) {
	for h, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc"} {
		if tok, ok := Bearer(h); !ok || tok != want {
			t.Errorf("Bearer(%q) = %q, %v; want %q", h, tok, ok, want)
		}
	}
	for _, h := range []string{"", "Basic abc", "Bearer ", "abc"} {
		if _, ok := Bearer(h); ok {
			t.Errorf("Bearer(%q) accepted", h)
		}
	}
}

func TestValid(t *testing.T) {
	key := types.NamespacedName{Namespace: "branch-a", Name: "pc-01"}
	cred, hash := New(key)
	_, secret, _ := Parse(cred)
	issued := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	computer := func(hash string, notBefore *time.Time) *siteopsv1.Computer {
		c := &siteopsv1.Computer{}
		if hash != "" {
			c.Status.Credential = &siteopsv1.ComputerCredential{Hash: hash, IssuedAt: metav1.NewTime(issued)}
		}
		if notBefore != nil {
			c.Spec.CredentialsNotBefore = &metav1.Time{Time: *notBefore}
		}
		return c
	}
	before, after := issued.Add(-time.Minute), issued.Add(time.Minute)
	_, otherHash := New(key)
	for _, tt := range []struct {
		name string
		comp *siteopsv1.Computer
		want string // "" for valid
	}{
		{"valid", computer(hash, nil), ""},
		{"revoked before issue: still valid", computer(hash, &before), ""},
		{"revoked after issue", computer(hash, &after), "revoked by spec.credentialsNotBefore"},
		{"another credential", computer(otherHash, nil), "does not match"},
		{"never registered", computer("", nil), "no credential"},
		{"no Computer", nil, "no such Computer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := Valid(tt.comp, secret)
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("Valid = %v, want %q", err, tt.want)
			}
		})
	}
}
