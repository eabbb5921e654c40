package certs

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func mustCA(t *testing.T, now time.Time, lifetime time.Duration) *Authority {
	t.Helper()
	ca, err := NewAuthority("site-operator CA", now, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func mustNames(t *testing.T, hosts ...string) Names {
	t.Helper()
	n, err := NamesOf(hosts...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNamesOf(t *testing.T) {
	tests := []struct {
		hosts   []string
		wantDNS []string
		wantIPs []string
		wantErr string
	}{
		{hosts: []string{"b.example", "A.example", "a.example", "10.0.0.2", "[fd00::1]", "10.0.0.2"},
			wantDNS: []string{"a.example", "b.example"}, wantIPs: []string{"10.0.0.2", "fd00::1"}},
		{hosts: []string{"::ffff:10.0.0.1"}, wantIPs: []string{"10.0.0.1"}},
		{hosts: []string{"*.branch.example"}, wantDNS: []string{"*.branch.example"}},
		{hosts: []string{""}, wantErr: `host ""`},
		{hosts: []string{"ok.example", "bad_host-.example"}, wantErr: `label "bad_host-"`},
		{hosts: []string{"host:8443"}, wantErr: `host "host:8443" is not a DNS name`},
		{hosts: []string{strings.Repeat("a", 64) + ".example"}, wantErr: "1 to 63 characters"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.hosts, ","), func(t *testing.T) {
			n, err := NamesOf(tt.hosts...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ips []string
			for _, ip := range n.IPs {
				ips = append(ips, ip.String())
			}
			if strings.Join(n.DNS, " ") != strings.Join(tt.wantDNS, " ") || strings.Join(ips, " ") != strings.Join(tt.wantIPs, " ") {
				t.Errorf("NamesOf = %v %v, want %v %v", n.DNS, ips, tt.wantDNS, tt.wantIPs)
			}
		})
	}
}

// TestIssueVerifies: an issued certificate verifies against the CA for each
// of its names, for server authentication, and for nothing else.
func TestIssueVerifies(t *testing.T) {
	ca := mustCA(t, t0, DefaultCALifetime)
	names := mustNames(t, "paris-1-task.ns.svc", "tasks.paris.example", "10.1.2.3")
	certPEM, keyPEM, err := ca.Issue(names, t0, DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(Bundle(t0, ca.CertPEM))
	for _, host := range []string{"paris-1-task.ns.svc", "tasks.paris.example", "10.1.2.3"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, CurrentTime: t0.Add(time.Hour)}); err != nil {
			t.Errorf("does not verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots, CurrentTime: t0}); err == nil {
		t.Error("verifies for a name it does not carry")
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "tasks.paris.example", Roots: roots, CurrentTime: t0,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("verifies for client authentication")
	}
	if d := Decide(ca, certPEM, keyPEM, names, t0); d.Issue {
		t.Errorf("a fresh certificate is re-issued: %s", d.Reason)
	}
	if got, want := cert.NotAfter.Sub(cert.NotBefore), DefaultLifetime+backdate; got != want {
		t.Errorf("lifetime %v, want %v", got, want)
	}

	short := mustCA(t, t0, 24*time.Hour)
	certPEM, _, err = short.Issue(names, t0, DefaultLifetime)
	if err != nil {
		t.Fatal(err)
	}
	if cert, _ := ParseCertificate(certPEM); !cert.NotAfter.Equal(short.Cert.NotAfter) {
		t.Errorf("a certificate outlives its CA: %v > %v", cert.NotAfter, short.Cert.NotAfter)
	}
	if _, _, err := ca.Issue(Names{}, t0, DefaultLifetime); err == nil {
		t.Error("issued a certificate without names")
	}
}

func TestDecide(t *testing.T) {
	ca := mustCA(t, t0, DefaultCALifetime)
	other := mustCA(t, t0, DefaultCALifetime)
	names := mustNames(t, "paris-1-task.ns.svc", "10.1.2.3")
	certPEM, keyPEM, err := ca.Issue(names, t0, 90*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ca.Issue(names, t0, 90*time.Hour)
	foreignCert, foreignKey, _ := other.Issue(names, t0, 90*time.Hour)
	renew := t0.Add(-backdate).Add((90*time.Hour + backdate) * 2 / 3)

	tests := []struct {
		name       string
		cert, key  []byte
		want       Names
		now        time.Time
		wantIssue  bool
		wantReason string
	}{
		{"nothing yet", nil, nil, names, t0, true, "no certificate"},
		{"garbage", []byte("junk"), keyPEM, names, t0, true, "does not parse"},
		{"key of another certificate", certPEM, otherKey, names, t0, true, "key does not match"},
		{"signed by another CA", foreignCert, foreignKey, names, t0, true, "not signed by the current CA"},
		{"a name added", certPEM, keyPEM, mustNames(t, "paris-1-task.ns.svc", "10.1.2.3", "tasks.paris.example"), t0, true, "names changed"},
		{"a name gone", certPEM, keyPEM, mustNames(t, "paris-1-task.ns.svc"), t0, true, "names changed"},
		{"same names in another order", certPEM, keyPEM, mustNames(t, "10.1.2.3", "PARIS-1-task.ns.svc"), t0, false, ""},
		{"just before 2/3 of its lifetime", certPEM, keyPEM, names, renew.Add(-time.Second), false, ""},
		{"at 2/3 of its lifetime", certPEM, keyPEM, names, renew, true, "due for renewal"},
		{"expired", certPEM, keyPEM, names, t0.Add(100 * time.Hour), true, "due for renewal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(ca, tt.cert, tt.key, tt.want, tt.now)
			if d.Issue != tt.wantIssue || !strings.Contains(d.Reason, tt.wantReason) {
				t.Errorf("Decide = %+v, want issue %v with a reason containing %q", d, tt.wantIssue, tt.wantReason)
			}
			if !d.Issue && !d.RenewAt.Equal(renew) {
				t.Errorf("RenewAt = %v, want %v", d.RenewAt, renew)
			}
		})
	}
}

func TestBundle(t *testing.T) {
	old := mustCA(t, t0, 10*time.Hour)
	current := mustCA(t, t0, DefaultCALifetime)
	leaf, _, _ := current.Issue(mustNames(t, "a.example"), t0, time.Hour)
	count := func(b []byte) int { return bytes.Count(b, []byte("BEGIN CERTIFICATE")) }

	both := Bundle(t0, current.CertPEM, old.CertPEM, current.CertPEM, leaf, []byte("junk"))
	if count(both) != 2 {
		t.Errorf("bundle holds %d certificates, want the 2 CAs:\n%s", count(both), both)
	}
	block, _ := pem.Decode(both)
	if first, _ := x509.ParseCertificate(block.Bytes); !first.Equal(current.Cert) {
		t.Error("the current CA is not first")
	}
	if later := Bundle(t0.Add(11*time.Hour), current.CertPEM, old.CertPEM); count(later) != 1 {
		t.Errorf("an expired CA stays in the bundle: %d certificates", count(later))
	}
}

func TestNamesOfCertificate(t *testing.T) {
	ca := mustCA(t, t0, DefaultCALifetime)
	want := Names{DNS: []string{"a.example"}, IPs: []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")}}
	certPEM, _, err := ca.Issue(want, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := ParseCertificate(certPEM)
	if got := NamesOfCertificate(cert); !got.Equal(want) {
		t.Errorf("NamesOfCertificate = %v, want %v", got, want)
	}
}
