package directory

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// Config is how to reach and read a directory.
type Config struct {
	// URL is ldaps://host[:port], or ldap://host[:port] with StartTLS.
	URL string
	// BaseDN is the sites container, CN=Sites,CN=Configuration,DC=...
	BaseDN string
	// Username and Password bind; Username is a DN or a user principal
	// name.
	Username, Password string
	// CABundle is the PEM certificates to trust; empty means the system's.
	CABundle []byte
	// ServerName is checked against the certificate; empty means the
	// URL's host.
	ServerName string
	// PageSize is the size of a search page.
	PageSize uint32
	// Timeout bounds the connection and each request; 0 means 30 s.
	Timeout time.Duration
}

// Kinds of failure of Read, for the DirectoryImport's conditions; the
// error wraps one of them.
var (
	ErrUnreachable = errors.New("the directory cannot be reached")
	ErrBind        = errors.New("the directory refused the bind")
	ErrSearch      = errors.New("a search of the directory failed")
)

// Read reads every site and subnet under cfg.BaseDN, with paged searches.
// It returns all of it or an error: never a part, so that a failure
// part-way is not taken for entries that disappeared.
func Read(ctx context.Context, cfg Config) (Directory, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldaps" && u.Scheme != "ldap") || u.Host == "" {
		return Directory{}, fmt.Errorf("%w: %q is not ldaps://host[:port] or ldap://host[:port]", ErrUnreachable, cfg.URL)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if tlsConfig.ServerName == "" {
		tlsConfig.ServerName = u.Hostname()
	}
	if len(cfg.CABundle) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(cfg.CABundle) {
			return Directory{}, fmt.Errorf("%w: spec.tls.caBundle holds no PEM certificate", ErrUnreachable)
		}
		tlsConfig.RootCAs = pool
	}
	conn, err := ldap.DialURL(cfg.URL, ldap.DialWithTLSConfig(tlsConfig),
		ldap.DialWithDialer(&net.Dialer{Timeout: timeout}))
	if err != nil {
		return Directory{}, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer func() { _ = conn.Close() }()
	// A directory that stops answering must not hold the import: the
	// connection closes when ctx ends, and every request has a timeout.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()
	conn.SetTimeout(timeout)
	if u.Scheme == "ldap" {
		if err := conn.StartTLS(tlsConfig); err != nil {
			return Directory{}, fmt.Errorf("%w: StartTLS: %w", ErrUnreachable, err)
		}
	}
	if err := conn.Bind(cfg.Username, cfg.Password); err != nil {
		if ldap.IsErrorAnyOf(err, ldap.LDAPResultInvalidCredentials, ldap.LDAPResultInappropriateAuthentication,
			ldap.LDAPResultConfidentialityRequired, ldap.LDAPResultInsufficientAccessRights) {
			return Directory{}, fmt.Errorf("%w: %w", ErrBind, err)
		}
		return Directory{}, fmt.Errorf("%w: binding: %w", ErrUnreachable, err)
	}
	pageSize := cfg.PageSize
	if pageSize == 0 {
		pageSize = 500
	}
	var dir Directory
	sites, err := search(conn, cfg.BaseDN, "(objectClass=site)", []string{"cn", "description", "location"}, pageSize)
	if err != nil {
		return Directory{}, fmt.Errorf("%w: sites under %s: %w", ErrSearch, cfg.BaseDN, err)
	}
	for _, e := range sites {
		dir.Sites = append(dir.Sites, Site{DN: e.DN, Key: DNKey(e.DN), CN: e.GetAttributeValue("cn"),
			Description: e.GetAttributeValue("description"), Location: e.GetAttributeValue("location")})
	}
	subnetsDN := "CN=Subnets," + cfg.BaseDN
	subnets, err := search(conn, subnetsDN, "(objectClass=subnet)", []string{"cn", "siteObject", "description", "location"}, pageSize)
	if err != nil {
		return Directory{}, fmt.Errorf("%w: subnets under %s: %w", ErrSearch, subnetsDN, err)
	}
	for _, e := range subnets {
		siteDN := e.GetAttributeValue("siteObject")
		dir.Subnets = append(dir.Subnets, Subnet{DN: e.DN, CN: e.GetAttributeValue("cn"), SiteDN: siteDN, SiteKey: DNKey(siteDN),
			Description: e.GetAttributeValue("description"), Location: e.GetAttributeValue("location")})
	}
	if ctx.Err() != nil {
		return Directory{}, fmt.Errorf("%w: %w", ErrSearch, ctx.Err())
	}
	return dir, nil
}

// DNKey is the form of a DN to compare by: directories escape the same DN
// in more than one way (Samba returns ';' as \3B), and attribute types and
// values compare without regard to case. A DN that does not parse is its
// own key, lower-cased.
func DNKey(dn string) string {
	if dn == "" {
		return ""
	}
	parsed, err := ldap.ParseDN(dn)
	if err != nil {
		return strings.ToLower(dn)
	}
	var b strings.Builder
	for i, rdn := range parsed.RDNs {
		if i > 0 {
			b.WriteByte(',')
		}
		for j, a := range rdn.Attributes {
			if j > 0 {
				b.WriteByte('+')
			}
			b.WriteString(strings.ToLower(a.Type))
			b.WriteByte('=')
			b.WriteString(strings.ToLower(a.Value))
		}
	}
	return b.String()
}

// search returns every entry of filter one level under base, page by page.
func search(conn *ldap.Conn, base, filter string, attrs []string, pageSize uint32) ([]*ldap.Entry, error) {
	req := ldap.NewSearchRequest(base, ldap.ScopeSingleLevel, ldap.NeverDerefAliases, 0, 0, false, filter, attrs, nil)
	res, err := conn.SearchWithPaging(req, pageSize)
	if err != nil {
		return nil, err
	}
	return res.Entries, nil
}
