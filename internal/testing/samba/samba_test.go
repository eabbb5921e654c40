// Samba draws its own certificate's serial number at random and, about
// half the time, writes it as a negative number, which Go refuses to parse
// unless told to: TestSambaCertificate starts Samba with that certificate.
//go:debug x509negativeserial=1

package samba

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// verifyingTLS trusts only the DC's CA, as a DirectoryImport with
// spec.tls.caBundle = CACertPEM does.
func verifyingTLS(t *testing.T, dc *DC, serverName string) *tls.Config {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(dc.CACertPEM()) {
		t.Fatal("CACertPEM holds no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

func dialLDAPS(t *testing.T, dc *DC, cfg *tls.Config) *ldap.Conn {
	t.Helper()
	conn, err := ldap.DialURL(dc.URL(), ldap.DialWithTLSConfig(cfg), ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
	if err != nil {
		t.Fatalf("dialling %s: %v", dc.URL(), err)
	}
	conn.SetTimeout(10 * time.Second)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readDirectory reads the sites and subnets as the import does: paged
// searches of the sites container and of CN=Subnets.
func readDirectory(t *testing.T, conn *ldap.Conn, dc *DC) (sites map[string]*ldap.Entry, subnets map[string]*ldap.Entry) {
	t.Helper()
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest(dc.BaseDN(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=site)", []string{"cn", "description", "location"}, nil), 10)
	if err != nil {
		t.Fatalf("searching sites: %v", err)
	}
	sites = map[string]*ldap.Entry{}
	for _, e := range res.Entries {
		sites[e.GetAttributeValue("cn")] = e
	}
	res, err = conn.SearchWithPaging(ldap.NewSearchRequest(dc.SubnetsDN(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=subnet)", []string{"cn", "siteObject", "description", "location"}, nil), 10)
	if err != nil {
		t.Fatalf("searching subnets: %v", err)
	}
	subnets = map[string]*ldap.Entry{}
	for _, e := range res.Entries {
		subnets[e.GetAttributeValue("cn")] = e
	}
	return sites, subnets
}

func sameDN(t *testing.T, a, b string) bool {
	t.Helper()
	da, err := ldap.ParseDN(a)
	if err != nil {
		t.Fatalf("parsing %q: %v", a, err)
	}
	db, err := ldap.ParseDN(b)
	if err != nil {
		t.Fatalf("parsing %q: %v", b, err)
	}
	return da.EqualFold(db)
}

func TestDomainController(t *testing.T) {
	start := time.Now()
	dc := StartT(t, Options{})
	t.Logf("started in %v on %s (server name %s)", time.Since(start), dc.URL(), dc.ServerName())

	if got, want := dc.BaseDN(), "CN=Sites,CN=Configuration,DC=siteops,DC=test"; got != want {
		t.Errorf("BaseDN() = %q, want %q", got, want)
	}

	// Sites and subnets, over the helpers.
	if _, err := dc.AddSite("Branch Office A", "first branch", "Berlin"); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.AddSite("Branch, B", "", ""); err != nil { // a comma needs escaping
		t.Fatal(err)
	}
	var subnets []Subnet
	for i := range 25 {
		subnets = append(subnets, Subnet{CIDR: fmt.Sprintf("10.1.%d.0/24", i), Site: "Branch Office A", Description: fmt.Sprint("subnet ", i)})
	}
	subnets = append(subnets, Subnet{CIDR: "2001:db8:1::/48", Site: "Branch, B", Location: "Lab"}, Subnet{CIDR: "10.2.0.0/16"})
	if err := dc.AddSubnets(subnets); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.AddSubnet("10.3.0.0/16", "Branch, B", "", ""); err != nil {
		t.Fatal(err)
	}

	// Read back over LDAPS, verifying the certificate by its DNS name and
	// by the address in the URL.
	conn := dialLDAPS(t, dc, verifyingTLS(t, dc, dc.ServerName()))
	if err := conn.Bind(dc.AdminDN(), dc.AdminPassword()); err != nil {
		t.Fatalf("bind as %s: %v", dc.AdminDN(), err)
	}
	sites, subs := readDirectory(t, conn, dc)
	for _, name := range []string{"Default-First-Site-Name", "Branch Office A", "Branch, B"} {
		if sites[name] == nil {
			t.Errorf("site %q not found; have %v", name, keys(sites))
		}
	}
	if e := sites["Branch Office A"]; e != nil && (e.GetAttributeValue("description") != "first branch" || e.GetAttributeValue("location") != "Berlin") {
		t.Errorf("site attributes: %q %q", e.GetAttributeValue("description"), e.GetAttributeValue("location"))
	}
	if len(subs) != 28 {
		t.Errorf("read %d subnets, want 28: %v", len(subs), keys(subs))
	}
	if e := subs["10.1.7.0/24"]; e == nil || !sameDN(t, e.GetAttributeValue("siteObject"), dc.SiteDN("Branch Office A")) || e.GetAttributeValue("description") != "subnet 7" {
		t.Errorf("10.1.7.0/24: %+v", e)
	}
	if e := subs["2001:db8:1::/48"]; e == nil || !sameDN(t, e.GetAttributeValue("siteObject"), dc.SiteDN("Branch, B")) || e.GetAttributeValue("location") != "Lab" {
		t.Errorf("2001:db8:1::/48: %+v", e)
	}
	if e := subs["10.2.0.0/16"]; e == nil || len(e.GetAttributeValues("siteObject")) != 0 {
		t.Errorf("10.2.0.0/16 should have no siteObject: %+v", e)
	}
	byIP := dialLDAPS(t, dc, verifyingTLS(t, dc, ""))
	if err := byIP.Bind(dc.AdminUPN(), dc.AdminPassword()); err != nil {
		t.Errorf("bind as %s over LDAPS verified by IP: %v", dc.AdminUPN(), err)
	}

	t.Run("StartTLS", func(t *testing.T) {
		conn, err := ldap.DialURL(dc.LDAPURL(), ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetTimeout(10 * time.Second)
		if err := conn.Bind(dc.AdminDN(), dc.AdminPassword()); !ldap.IsErrorWithCode(err, ldap.LDAPResultStrongAuthRequired) {
			t.Errorf("a bind in clear text: got %v, want strong auth required", err)
		}
		if err := conn.StartTLS(verifyingTLS(t, dc, dc.ServerName())); err != nil {
			t.Fatalf("StartTLS: %v", err)
		}
		if err := conn.Bind(dc.AdminUPN(), dc.AdminPassword()); err != nil {
			t.Fatalf("bind after StartTLS: %v", err)
		}
		if _, subs := readDirectory(t, conn, dc); len(subs) != 28 {
			t.Errorf("read %d subnets over StartTLS, want 28", len(subs))
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		conn := dialLDAPS(t, dc, verifyingTLS(t, dc, dc.ServerName()))
		err := conn.Bind(dc.AdminDN(), "not-the-password")
		if !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			t.Errorf("bind with a wrong password: got %v, want invalid credentials", err)
		}
	})

	t.Run("MoveAndRemove", func(t *testing.T) {
		if err := dc.MoveSubnet("10.1.0.0/24", "Branch, B"); err != nil {
			t.Fatal(err)
		}
		if err := dc.MoveSubnet("10.1.1.0/24", ""); err != nil {
			t.Fatal(err)
		}
		if err := dc.RemoveSubnet("10.1.2.0/24"); err != nil {
			t.Fatal(err)
		}
		// Removing a site takes its children and the siteObject of its
		// subnets with it.
		if err := dc.RemoveSite("Branch, B"); err != nil {
			t.Fatal(err)
		}
		sites, subs := readDirectory(t, conn, dc)
		if sites["Branch, B"] != nil {
			t.Error("site Branch, B is still there")
		}
		if subs["10.1.2.0/24"] != nil {
			t.Error("10.1.2.0/24 is still there")
		}
		for _, cidr := range []string{"10.1.0.0/24", "10.1.1.0/24", "10.3.0.0/16", "2001:db8:1::/48"} {
			if e := subs[cidr]; e == nil || len(e.GetAttributeValues("siteObject")) != 0 {
				t.Errorf("%s: want it without siteObject, got %+v", cidr, e)
			}
		}
	})

	t.Run("BadData", func(t *testing.T) {
		// What Samba 4.17 accepts and refuses; the import must skip what
		// it accepts but is not a canonical prefix of a site.
		for _, c := range []struct {
			cidr   string
			accept bool
		}{
			{"10.9.2.3/16", false},         // host bits set
			{"10.4.0.0/8", false},          // host bits set
			{"not-a-prefix", false},        // not a prefix
			{"10.9.0.0", false},            // no length
			{"10.9.0.0/33", false},         // length out of range
			{"0.0.0.0/0", false},           // zero length
			{"010.9.0.0/16", false},        // leading zero in an octet
			{"::ffff:10.9.0.0/112", false}, // IPv4-mapped IPv6
			{"::10.9.0.0/112", false},      // IPv4-compatible IPv6
			{"2001:db8:0::/48", false},     // IPv6 not in its shortest form
			{"2001:db8::/129", false},      // length out of range
			{" 10.9.0.0/16", false},        // leading space
			{"10.9.0.0/016", true},         // leading zero in the length: a second name for 10.9.0.0/16
			{"10.9.0.0/ 16", true},         // space in the length
			{"2001:DB8:9::/48", true},      // upper-case IPv6
			{"10.9.0.0/16", true},          // (canonical, and a duplicate of the two above)
			{"1.2.3.4/32", true},           // a single address
			{"2001:db8::1/128", true},      // a single address
			{"224.0.0.0/4", true},          // multicast
			{"fe80::/64", true},            // link-local
			{"127.0.0.0/8", true},          // loopback
		} {
			_, err := dc.AddSubnet(c.cidr, "Branch Office A", "", "")
			switch {
			case c.accept && err != nil:
				t.Errorf("subnet %q refused: %v", c.cidr, err)
			case !c.accept && !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax):
				t.Errorf("subnet %q: got %v, want invalid DN syntax (samldb: subnet value is invalid)", c.cidr, err)
			}
		}
		// A siteObject must name an existing entry, but any entry.
		if _, err := dc.AddSubnet("10.10.0.0/16", "No Such Site", "", ""); !ldap.IsErrorWithCode(err, ldap.LDAPResultConstraintViolation) {
			t.Errorf("a siteObject naming no entry: got %v, want constraint violation", err)
		}
		for i, target := range []string{"CN=Users," + dc.DomainDN(), "CN=Servers," + dc.SiteDN("Branch Office A"), dc.SubnetsDN()} {
			cidr := fmt.Sprintf("10.11.%d.0/24", i)
			if err := dc.AddEntry(dc.SubnetDN(cidr), map[string][]string{"objectClass": {"subnet"}, "siteObject": {target}}); err != nil {
				t.Errorf("a siteObject naming %s, not a site: %v", target, err)
			}
		}
		// A site without its two children is accepted too.
		if err := dc.AddEntry(dc.SiteDN("Bare"), map[string][]string{"objectClass": {"site"}}); err != nil {
			t.Errorf("a bare site: %v", err)
		}
		// Renaming to a bad cn is refused like an add.
		if err := dc.adminConn(func(c *ldap.Conn) error {
			return c.ModifyDN(ldap.NewModifyDNRequest(dc.SubnetDN("10.1.3.0/24"), "CN=10.1.3.1/24", true, ""))
		}); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidDNSyntax) {
			t.Errorf("renaming a subnet to a cn with host bits: got %v", err)
		}
	})

	t.Run("Paging", func(t *testing.T) {
		// Samba, unlike Windows (MaxPageSize 1000), returns pages of any
		// size and unpaged searches of any size.
		res, err := conn.Search(ldap.NewSearchRequest(dc.SubnetsDN(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
			"(objectClass=subnet)", []string{"cn"}, []ldap.Control{ldap.NewControlPaging(5)}))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 5 {
			t.Errorf("first page of 5: %d entries", len(res.Entries))
		}
	})

	t.Run("PauseAndKill", func(t *testing.T) {
		c := dialLDAPS(t, dc, verifyingTLS(t, dc, dc.ServerName()))
		if err := c.Bind(dc.AdminDN(), dc.AdminPassword()); err != nil {
			t.Fatal(err)
		}
		if err := dc.Pause(); err != nil {
			t.Fatal(err)
		}
		c.SetTimeout(500 * time.Millisecond)
		begin := time.Now()
		_, err := c.Search(ldap.NewSearchRequest(dc.BaseDN(), ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=site)", nil, nil))
		if err == nil {
			t.Error("a search of a paused directory answered")
		} else {
			t.Logf("search of a paused directory: %v after %v", err, time.Since(begin).Round(time.Millisecond))
		}
		if err := dc.Resume(); err != nil {
			t.Fatal(err)
		}
		if err := dc.Kill(); err != nil {
			t.Fatal(err)
		}
		if _, err := ldap.DialURL(dc.URL(), ldap.DialWithTLSConfig(dc.TLSConfig())); err == nil {
			t.Error("a killed directory answered")
		}
		begin = time.Now()
		if err := dc.Restart(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Logf("restarted in %v", time.Since(begin).Round(time.Millisecond))
		c = dialLDAPS(t, dc, verifyingTLS(t, dc, dc.ServerName()))
		if err := c.Bind(dc.AdminDN(), dc.AdminPassword()); err != nil {
			t.Fatal(err)
		}
		if _, subs := readDirectory(t, c, dc); subs["10.1.7.0/24"] == nil {
			t.Error("10.1.7.0/24 lost across the restart")
		}
	})

	t.Run("Stop", func(t *testing.T) {
		pid, dir := dc.PID(), dc.Dir()
		if err := dc.Stop(); err != nil {
			t.Fatal(err)
		}
		if dc.Running() || groupAlive(pid) {
			t.Errorf("samba processes of group %d are left", pid)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left: %v", dir, err)
		}
		if err := dc.Stop(); err != nil {
			t.Errorf("a second Stop: %v", err)
		}
	})
}

// TestSambaCertificate shows why the package makes a certificate of its
// own: Samba's names its host only in the subject CN, which Go ignores.
func TestSambaCertificate(t *testing.T) {
	dc := StartT(t, Options{TLS: TLSSamba})
	if dc.ServerName() != "DC1.siteops.test" {
		t.Errorf("ServerName() = %q", dc.ServerName())
	}
	_, err := ldap.DialURL(dc.URL(), ldap.DialWithTLSConfig(verifyingTLS(t, dc, dc.ServerName())))
	if err == nil || !strings.Contains(err.Error(), "legacy Common Name") {
		t.Errorf("verifying Samba's own certificate by name: got %v, want the legacy Common Name error", err)
	}
	conn, err := dc.Dial() // checks the chain only
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// TestBulk adds sites and subnets in bulk: 50 and 500 by default, 500 and
// 5,000 with SAMBA_BULK=full (about 15 s more).
func TestBulk(t *testing.T) {
	nSites, nSubnets := 50, 500
	if os.Getenv("SAMBA_BULK") == "full" {
		nSites, nSubnets = 500, 5000
	}
	dc := StartT(t, Options{})
	sites := make([]Site, nSites)
	for i := range sites {
		sites[i] = Site{Name: fmt.Sprintf("Site %04d", i), Description: "bulk"}
	}
	begin := time.Now()
	if err := dc.AddSites(sites); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d sites in %v", nSites, time.Since(begin).Round(time.Millisecond))
	subnets := make([]Subnet, nSubnets)
	for i := range subnets {
		subnets[i] = Subnet{CIDR: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256), Site: sites[i%nSites].Name}
	}
	begin = time.Now()
	if err := dc.AddSubnets(subnets); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d subnets in %v", nSubnets, time.Since(begin).Round(time.Millisecond))
	conn := dialLDAPS(t, dc, verifyingTLS(t, dc, dc.ServerName()))
	if err := conn.Bind(dc.AdminDN(), dc.AdminPassword()); err != nil {
		t.Fatal(err)
	}
	begin = time.Now()
	res, err := conn.SearchWithPaging(ldap.NewSearchRequest(dc.SubnetsDN(), ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false,
		"(objectClass=subnet)", []string{"cn", "siteObject"}, nil), 500)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read %d subnets in pages of 500 in %v", len(res.Entries), time.Since(begin).Round(time.Millisecond))
	if len(res.Entries) != nSubnets {
		t.Errorf("read %d subnets, want %d", len(res.Entries), nSubnets)
	}
}

func keys(m map[string]*ldap.Entry) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}
