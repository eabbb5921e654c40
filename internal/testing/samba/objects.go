package samba

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Site is an AD site to add.
type Site struct {
	Name, Description, Location string
}

// Subnet is an AD subnet to add. CIDR becomes the cn as it is (Samba
// checks it: see the package documentation); Site, when not empty, names
// the site whose DN goes into siteObject.
type Subnet struct {
	CIDR, Site, Description, Location string
}

// Dial opens a connection over LDAPS that verifies the certificate with
// CACertPEM and ServerName, bound as Administrator. The caller closes it.
func (d *DC) Dial() (*ldap.Conn, error) {
	conn, err := ldap.DialURL(d.URL(),
		ldap.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}),
		ldap.DialWithTLSConfig(d.tlsForDial()))
	if err != nil {
		return nil, err
	}
	conn.SetTimeout(30 * time.Second)
	if err := conn.Bind(d.adminDN, d.opts.AdminPassword); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// tlsForDial is TLSConfig, except with TLSSamba, whose certificate Go
// refuses for any name: there the helpers check the chain only.
func (d *DC) tlsForDial() *tls.Config {
	cfg := d.TLSConfig()
	if d.opts.TLS == TLSSamba {
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true //nolint:gosec // the chain is verified below
		cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyChain(raw, roots)
		}
	}
	return cfg
}

func verifyChain(raw [][]byte, roots *x509.CertPool) error {
	if len(raw) == 0 {
		return errors.New("no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
	return err
}

// adminConn runs f on the shared Administrator connection, dialling it
// when needed and once more if it broke.
func (d *DC) adminConn(f func(*ldap.Conn) error) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	for attempt := 0; ; attempt++ {
		d.connMu.Lock()
		conn := d.conn
		d.connMu.Unlock()
		if conn == nil || conn.IsClosing() {
			var err error
			if conn, err = d.Dial(); err != nil {
				return err
			}
			d.connMu.Lock()
			d.conn = conn
			d.connMu.Unlock()
		}
		err := f(conn)
		if err != nil && attempt == 0 && ldap.IsErrorWithCode(err, ldap.ErrorNetwork) {
			_ = conn.Close()
			continue
		}
		return err
	}
}

// dropConn closes the shared connection, also under a helper waiting on
// it.
func (d *DC) dropConn() {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.conn != nil {
		_ = d.conn.Close()
		d.conn = nil
	}
}

// SiteDN is CN=<name>,<BaseDN>, escaped.
func (d *DC) SiteDN(name string) string { return "CN=" + ldap.EscapeDN(name) + "," + d.BaseDN() }

// SubnetDN is CN=<cidr>,CN=Subnets,<BaseDN>. A '/' needs no escaping in
// an LDAP DN (RFC 4514; only ADSI paths escape it).
func (d *DC) SubnetDN(cidr string) string { return "CN=" + ldap.EscapeDN(cidr) + "," + d.SubnetsDN() }

func siteRequests(dn string, s Site) []*ldap.AddRequest {
	site := ldap.NewAddRequest(dn, nil)
	site.Attribute("objectClass", []string{"site"})
	if s.Description != "" {
		site.Attribute("description", []string{s.Description})
	}
	if s.Location != "" {
		site.Attribute("location", []string{s.Location})
	}
	// What samba-tool sites create adds, as Windows does.
	settings := ldap.NewAddRequest("CN=NTDS Site Settings,"+dn, nil)
	settings.Attribute("objectClass", []string{"nTDSSiteSettings"})
	servers := ldap.NewAddRequest("CN=Servers,"+dn, nil)
	servers.Attribute("objectClass", []string{"serversContainer"})
	return []*ldap.AddRequest{site, settings, servers}
}

func (d *DC) subnetRequest(s Subnet) *ldap.AddRequest {
	req := ldap.NewAddRequest(d.SubnetDN(s.CIDR), nil)
	req.Attribute("objectClass", []string{"subnet"})
	if s.Site != "" {
		req.Attribute("siteObject", []string{d.SiteDN(s.Site)})
	}
	if s.Description != "" {
		req.Attribute("description", []string{s.Description})
	}
	if s.Location != "" {
		req.Attribute("location", []string{s.Location})
	}
	return req
}

// AddSite adds a site with its NTDS Site Settings and Servers children,
// as samba-tool sites create does. Empty description and location are
// left out.
func (d *DC) AddSite(name, description, location string) (string, error) {
	dn := d.SiteDN(name)
	return dn, d.adminConn(func(c *ldap.Conn) error {
		for _, req := range siteRequests(dn, Site{name, description, location}) {
			if err := c.Add(req); err != nil {
				return fmt.Errorf("adding %s: %w", req.DN, err)
			}
		}
		return nil
	})
}

// RemoveSite deletes a site and everything under it (tree delete). Samba
// then removes the siteObject of the subnets that named it (a linked
// attribute never points at a deleted object).
func (d *DC) RemoveSite(name string) error {
	return d.Delete(d.SiteDN(name), true)
}

// AddSubnet adds CN=<cidr>,CN=Subnets,... with siteObject naming siteName's
// DN when siteName is not empty. cidr goes to Samba unchecked.
func (d *DC) AddSubnet(cidr, siteName, description, location string) (string, error) {
	req := d.subnetRequest(Subnet{cidr, siteName, description, location})
	return req.DN, d.adminConn(func(c *ldap.Conn) error { return c.Add(req) })
}

// MoveSubnet points a subnet's siteObject at newSite's DN, or removes it
// when newSite is empty.
func (d *DC) MoveSubnet(cidr, newSite string) error {
	req := ldap.NewModifyRequest(d.SubnetDN(cidr), nil)
	if newSite == "" {
		req.Delete("siteObject", nil)
	} else {
		req.Replace("siteObject", []string{d.SiteDN(newSite)})
	}
	return d.adminConn(func(c *ldap.Conn) error { return c.Modify(req) })
}

// RemoveSubnet deletes a subnet.
func (d *DC) RemoveSubnet(cidr string) error {
	return d.Delete(d.SubnetDN(cidr), false)
}

// Delete deletes an entry, with everything under it when tree is true.
func (d *DC) Delete(dn string, tree bool) error {
	var controls []ldap.Control
	if tree {
		controls = append(controls, ldap.NewControlSubtreeDelete())
	}
	return d.adminConn(func(c *ldap.Conn) error { return c.Del(ldap.NewDelRequest(dn, controls)) })
}

// AddEntry adds any entry, for data the other helpers do not make.
func (d *DC) AddEntry(dn string, attrs map[string][]string) error {
	req := ldap.NewAddRequest(dn, nil)
	for k, v := range attrs {
		req.Attribute(k, v)
	}
	return d.adminConn(func(c *ldap.Conn) error { return c.Add(req) })
}

// Modify replaces attributes of an entry (an empty value list removes the
// attribute).
func (d *DC) Modify(dn string, replace map[string][]string) error {
	req := ldap.NewModifyRequest(dn, nil)
	for k, v := range replace {
		req.Replace(k, v)
	}
	return d.adminConn(func(c *ldap.Conn) error { return c.Modify(req) })
}

// BulkConnections is how many connections AddSites and AddSubnets use.
// Samba writes one transaction at a time, so more do not help much; see
// the package documentation for timings.
var BulkConnections = 4

// AddSites adds sites (each with its two children) over BulkConnections
// connections. It stops at the first error.
func (d *DC) AddSites(sites []Site) error {
	reqs := make([][]*ldap.AddRequest, len(sites))
	for i, s := range sites {
		reqs[i] = siteRequests(d.SiteDN(s.Name), s)
	}
	return d.bulk(len(reqs), func(c *ldap.Conn, i int) error {
		for _, req := range reqs[i] {
			if err := c.Add(req); err != nil {
				return fmt.Errorf("adding %s: %w", req.DN, err)
			}
		}
		return nil
	})
}

// AddSubnets adds subnets over BulkConnections connections. It stops at
// the first error.
func (d *DC) AddSubnets(subnets []Subnet) error {
	return d.bulk(len(subnets), func(c *ldap.Conn, i int) error {
		req := d.subnetRequest(subnets[i])
		if err := c.Add(req); err != nil {
			return fmt.Errorf("adding %s: %w", req.DN, err)
		}
		return nil
	})
}

func (d *DC) bulk(n int, f func(*ldap.Conn, int) error) error {
	workers := min(max(BulkConnections, 1), n)
	var (
		mu       sync.Mutex
		next     int
		firstErr error
		wg       sync.WaitGroup
	)
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr != nil || next >= n {
			return 0, false
		}
		next++
		return next - 1, true
	}
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := d.Dial()
			if err != nil {
				fail(err)
				return
			}
			defer func() { _ = conn.Close() }()
			for {
				i, ok := take()
				if !ok {
					return
				}
				if err := f(conn, i); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}
