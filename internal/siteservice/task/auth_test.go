package task

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
)

func TestCredentials(t *testing.T) {
	key := types.NamespacedName{Namespace: "branch-a", Name: "pc-01"}
	cred, hash := newCredential(key)
	gotKey, secret, err := parseCredential(cred)
	if err != nil || gotKey != key {
		t.Fatalf("parseCredential(newCredential) = %v, %v", gotKey, err)
	}
	if !secretMatches(secret, hash) || !strings.HasPrefix(hash, "sha256:") || strings.Contains(hash, secret) {
		t.Errorf("hash %q does not match its secret, or holds it", hash)
	}
	other, _ := newCredential(key)
	_, otherSecret, _ := parseCredential(other)
	if secretMatches(otherSecret, hash) {
		t.Error("two credentials drawn for one Computer share a hash")
	}
	for _, bad := range []string{"", "abc", cred + "x", "!!!." + secret, strings.Replace(cred, ".", "", 1),
		"YnJhbmNoLWE." + secret /* "branch-a": no name */} {
		if _, _, err := parseCredential(bad); err == nil {
			t.Errorf("parseCredential(%q) accepted", bad)
		}
	}
	if tok, ok := bearer("Bearer abc"); !ok || tok != "abc" {
		t.Errorf("bearer = %q, %v", tok, ok)
	}
	for _, h := range []string{"", "Basic abc", "Bearer ", "abc"} {
		if _, ok := bearer(h); ok {
			t.Errorf("bearer(%q) accepted", h)
		}
	}
}

func tokenSecret(data map[string]string, annotations map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-abc123", Annotations: annotations},
		Type: siteopsv1.BootstrapTokenSecretType, Data: map[string][]byte{}}
	for k, v := range map[string]string{"token-id": "abc123", "token-secret": "0123456789abcdef", "namespace": "branch-a"} {
		s.Data[k] = []byte(v)
	}
	for k, v := range data {
		if v == "" {
			delete(s.Data, k)
		} else {
			s.Data[k] = []byte(v)
		}
	}
	return s
}

func TestTokens(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	if id, secret, ok := parseToken("abc123.0123456789abcdef"); !ok || id != "abc123" || secret != "0123456789abcdef" {
		t.Errorf("parseToken = %q %q %v", id, secret, ok)
	}
	for _, bad := range []string{"abc123", "ABC123.0123456789abcdef", "abc123.0123456789abcde", "abc12.0123456789abcdef", "abc123.0123456789abcdef.x"} {
		if _, _, ok := parseToken(bad); ok {
			t.Errorf("parseToken(%q) accepted", bad)
		}
	}
	for _, tc := range []struct {
		name        string
		secret      *corev1.Secret
		presented   string
		readErr     string
		checkErr    string
		wantNS      string
		wantLimited bool
	}{
		{name: "valid", secret: tokenSecret(nil, nil), presented: "0123456789abcdef", wantNS: "branch-a"},
		{name: "wrong secret", secret: tokenSecret(nil, nil), presented: "0123456789abcdee", checkErr: "does not match"},
		{name: "expired", secret: tokenSecret(map[string]string{"expiration": "2026-11-26T11:59:59Z"}, nil),
			presented: "0123456789abcdef", checkErr: "expired"},
		{name: "not yet expired", secret: tokenSecret(map[string]string{"expiration": "2026-11-26T12:00:01Z"}, nil),
			presented: "0123456789abcdef", wantNS: "branch-a"},
		{name: "used up", secret: tokenSecret(map[string]string{"usage-limit": "3"}, map[string]string{siteopsv1.BootstrapTokenUsageAnnotation: "3"}),
			presented: "0123456789abcdef", checkErr: "limit"},
		{name: "uses left", secret: tokenSecret(map[string]string{"usage-limit": "3"}, map[string]string{siteopsv1.BootstrapTokenUsageAnnotation: "2"}),
			presented: "0123456789abcdef", wantNS: "branch-a", wantLimited: true},
		{name: "bad expiration", secret: tokenSecret(map[string]string{"expiration": "tomorrow"}, nil), readErr: "data.expiration"},
		{name: "bad usage limit", secret: tokenSecret(map[string]string{"usage-limit": "0"}, nil), readErr: "data.usage-limit"},
		{name: "no namespace", secret: tokenSecret(map[string]string{"namespace": ""}, nil), readErr: "data.namespace"},
		{name: "id and name differ", secret: tokenSecret(map[string]string{"token-id": "zzz999"}, nil), readErr: "data.token-id"},
		{name: "short secret", secret: tokenSecret(map[string]string{"token-secret": "short"}, nil), readErr: "data.token-secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := readToken(tc.secret)
			if tc.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.readErr) {
					t.Fatalf("readToken error = %v, want %q", err, tc.readErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			err = tok.check(tc.presented, now)
			if tc.checkErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.checkErr) {
					t.Fatalf("check error = %v, want %q", err, tc.checkErr)
				}
				return
			}
			if err != nil || tok.namespace != tc.wantNS || (tok.usageLimit > 0) != tc.wantLimited {
				t.Errorf("token %+v, %v", tok, err)
			}
		})
	}
	wrongType := tokenSecret(nil, nil)
	wrongType.Type = corev1.SecretTypeOpaque
	if _, err := readToken(wrongType); err == nil {
		t.Error("readToken accepted an Opaque Secret")
	}
}

func TestValidateRegistration(t *testing.T) {
	valid := protocol.RegisterRequest{RequestID: "0123456789abcdefXYZ", Hostname: "PC-01.corp.example",
		MACAddresses: []string{"00:1A:2B:3C:4D:5E", "00:1a:2b:3c:4d:5e"}, Addresses: []string{"10.1.0.5", "::ffff:10.1.0.6"}}
	reg, field, err := validateRegistration(valid)
	if err != nil {
		t.Fatalf("valid registration refused: %s: %v", field, err)
	}
	if len(reg.MACAddresses) != 1 || reg.MACAddresses[0] != "00:1a:2b:3c:4d:5e" || reg.addrs[1] != "10.1.0.6" {
		t.Errorf("normalised to %v, %v", reg.MACAddresses, reg.addrs)
	}
	for _, tc := range []struct {
		field  string
		change func(*protocol.RegisterRequest)
	}{
		{"requestID", func(r *protocol.RegisterRequest) { r.RequestID = "short" }},
		{"hostname", func(r *protocol.RegisterRequest) { r.Hostname = "" }},
		{"hostname", func(r *protocol.RegisterRequest) { r.Hostname = "a b" }},
		{"hostname", func(r *protocol.RegisterRequest) { r.Hostname = strings.Repeat("a", 254) }},
		{"macAddresses[0]", func(r *protocol.RegisterRequest) { r.MACAddresses = []string{"00:1a:2b:3c:4d"} }},
		{"hardwareID", func(r *protocol.RegisterRequest) { r.MACAddresses = nil }},
		{"hardwareID", func(r *protocol.RegisterRequest) { r.HardwareID = "-bad" }},
		{"addresses", func(r *protocol.RegisterRequest) { r.Addresses = nil }},
		{"addresses", func(r *protocol.RegisterRequest) { r.Addresses = []string{"10.1.0.300"} }},
		{"addresses", func(r *protocol.RegisterRequest) { r.Addresses = make([]string, 17) }},
		{"agentVersion", func(r *protocol.RegisterRequest) { r.AgentVersion = "v1 beta" }},
	} {
		req := valid
		req.MACAddresses = append([]string(nil), valid.MACAddresses...)
		tc.change(&req)
		if _, field, err := validateRegistration(req); err == nil || field != tc.field {
			t.Errorf("%+v: field %q, error %v; want field %q", req, field, err, tc.field)
		}
	}
}

func TestComputerNames(t *testing.T) {
	for in, want := range map[string]string{
		"PC-01.corp.example":    "pc-01",
		"Lab_PC_7":              "lab-pc-7",
		"---":                   "computer",
		strings.Repeat("a", 70): strings.Repeat("a", 63),
	} {
		if got := computerName(in); got != want {
			t.Errorf("computerName(%q) = %q, want %q", in, got, want)
		}
	}
	a, b := withSuffix("pc-01", "hw:1"), withSuffix("pc-01", "hw:2")
	if a == b || !strings.HasPrefix(a, "pc-01-") || len(a) != len("pc-01-")+10 {
		t.Errorf("withSuffix = %q, %q", a, b)
	}
	if long := withSuffix(strings.Repeat("a", 63), "hw:1"); len(long) > 63 {
		t.Errorf("withSuffix of a long name is %d characters", len(long))
	}
}

func TestReplays(t *testing.T) {
	var p replays
	now := time.Now()
	if !p.first("id-1", now) || p.first("id-1", now) || !p.first("id-2", now) {
		t.Error("replays does not tell a first request from a repeated one")
	}
}
