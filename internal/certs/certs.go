package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Lifetimes of what the operator issues.
const (
	// DefaultCALifetime is the CA's: its successor is made after about 3
	// years and 4 months and signs from 4 years and 2 months (SwitchAt).
	DefaultCALifetime = 5 * 365 * 24 * time.Hour
	// DefaultLifetime is a serving certificate's: renewed after 60 days.
	DefaultLifetime = 90 * 24 * time.Hour
	// backdate is subtracted from NotBefore so that a peer whose clock is a
	// little behind accepts a certificate issued a moment ago.
	backdate = 5 * time.Minute
)

// Keys of the certificates in a Secret, as kubernetes.io/tls Secrets name
// them (and cert-manager writes them).
const (
	CertKey   = "tls.crt"
	KeyKey    = "tls.key"
	CACertKey = "ca.crt"
	// CAKeyKey holds the CA's private key, in the CA Secret only.
	CAKeyKey = "ca.key"
	// PreviousCAKey holds the CA that signed before the current one, in
	// the CA Secret only: it stays in the bundle until it expires.
	PreviousCAKey = "previous-ca.crt"
)

// Authority is a CA that signs serving certificates.
type Authority struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewAuthority makes a self-signed CA named commonName, valid from now for
// lifetime.
func NewAuthority(commonName string, now time.Time, lifetime time.Duration) (*Authority, error) {
	if commonName == "" {
		return nil, errors.New("the CA's common name must not be empty")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the new CA certificate: %w", err)
	}
	return &Authority{Cert: cert, Key: key, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// ParseAuthority reads a CA from PEM; the error says which part is wrong.
func ParseAuthority(certPEM, keyPEM []byte) (*Authority, error) {
	return parseAuthority(certPEM, keyPEM, CACertKey, CAKeyKey)
}

// parseAuthority is ParseAuthority, its errors naming the keys the PEMs
// were read from.
func parseAuthority(certPEM, keyPEM []byte, certKey, keyKey string) (*Authority, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certKey, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: the certificate is not a CA", certKey)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyKey, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: the key cannot sign", keyKey)
	}
	return &Authority{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// Issue signs a serving certificate for names, valid from now for lifetime
// (never past the CA's own expiry), with a new key. It returns both in PEM.
func (a *Authority) Issue(names Names, now time.Time, lifetime time.Duration) (certPEM, keyPEM []byte, err error) {
	if names.Empty() {
		return nil, nil, errors.New("a serving certificate needs at least one DNS name or IP address")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(a.Cert.NotAfter) {
		notAfter = a.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names.first()},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names.DNS,
	}
	for _, ip := range names.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing a certificate for %s: %w", names, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return encodeCert(der), keyPEM, nil
}

// Names are the subject alternative names of a serving certificate, sorted
// and without duplicates.
type Names struct {
	DNS []string
	IPs []netip.Addr
}

// NamesOf sorts hosts (DNS names or IP addresses, without port or scheme)
// into Names. DNS names are compared case-insensitively and kept in lower
// case. An empty or malformed host is an error that names it.
func NamesOf(hosts ...string) (Names, error) {
	var n Names
	for _, h := range hosts {
		if addr, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			n.IPs = append(n.IPs, addr.Unmap().WithZone(""))
			continue
		}
		if err := checkDNSName(h); err != nil {
			return Names{}, err
		}
		n.DNS = append(n.DNS, strings.ToLower(h))
	}
	slices.Sort(n.DNS)
	n.DNS = slices.Compact(n.DNS)
	slices.SortFunc(n.IPs, func(a, b netip.Addr) int { return a.Compare(b) })
	n.IPs = slices.Compact(n.IPs)
	return n, nil
}

// checkDNSName accepts a DNS name as a certificate may carry it: labels of
// letters, digits, '-' and '_', at most 253 characters; a leading "*."
// wildcard is allowed.
func checkDNSName(h string) error {
	name := strings.TrimPrefix(h, "*.")
	if name == "" || len(h) > 253 {
		return fmt.Errorf("host %q is neither an IP address nor a DNS name of 1 to 253 characters", h)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("host %q is not a DNS name: label %q must be 1 to 63 characters, not starting or ending with '-'", h, label)
		}
		for _, c := range label {
			if !isLetterOrDigit(c) && c != '-' && c != '_' {
				return fmt.Errorf("host %q is not a DNS name: %q is not a letter, digit, '-' or '_'", h, c)
			}
		}
	}
	return nil
}

// NamesOfCertificate are the SANs that cert carries.
func NamesOfCertificate(cert *x509.Certificate) Names {
	hosts := slices.Clone(cert.DNSNames)
	for _, ip := range cert.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	n, err := NamesOf(hosts...)
	if err != nil { // a name we did not issue: never equal to a wanted set
		return Names{DNS: cert.DNSNames}
	}
	return n
}

// Empty reports whether n holds no name.
func (n Names) Empty() bool { return len(n.DNS) == 0 && len(n.IPs) == 0 }

// Equal reports whether n and o hold the same names.
func (n Names) Equal(o Names) bool {
	return slices.Equal(n.DNS, o.DNS) && slices.Equal(n.IPs, o.IPs)
}

func (n Names) String() string {
	all := slices.Clone(n.DNS)
	for _, ip := range n.IPs {
		all = append(all, ip.String())
	}
	return strings.Join(all, ", ")
}

func (n Names) first() string {
	if len(n.DNS) > 0 && len(n.DNS[0]) <= 64 {
		return n.DNS[0]
	}
	if len(n.IPs) > 0 {
		return n.IPs[0].String()
	}
	return ""
}

// RenewAt is when cert is due for renewal: at 2/3 of its lifetime.
func RenewAt(cert *x509.Certificate) time.Time {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(lifetime * 2 / 3)
}

// Decision is whether to issue a serving certificate, and why.
type Decision struct {
	// Issue is true when a new certificate must be issued.
	Issue bool
	// Reason says why in a few words, for logs and events.
	Reason string
	// RenewAt is when the kept certificate is due; zero when Issue is true.
	RenewAt time.Time
}

// Decide says whether the serving certificate certPEM with key keyPEM must
// be re-issued by ca for the names want at now. See the package doc for the
// rules.
func Decide(ca *Authority, certPEM, keyPEM []byte, want Names, now time.Time) Decision {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return Decision{Issue: true, Reason: "no certificate yet"}
	}
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return Decision{Issue: true, Reason: "the certificate does not parse: " + err.Error()}
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		return Decision{Issue: true, Reason: "the key does not match the certificate: " + err.Error()}
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil || !bytes.Equal(cert.RawIssuer, ca.Cert.RawSubject) {
		return Decision{Issue: true, Reason: "not signed by the current CA"}
	}
	if have := NamesOfCertificate(cert); !have.Equal(want) {
		return Decision{Issue: true, Reason: fmt.Sprintf("names changed from [%s] to [%s]", have, want)}
	}
	renew := RenewAt(cert)
	if !now.Before(renew) {
		return Decision{Issue: true, Reason: fmt.Sprintf("due for renewal since %s (2/3 of its lifetime; it expires %s)",
			renew.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))}
	}
	return Decision{RenewAt: renew}
}

// Bundle is the PEM of the CA certificates agents should trust at now: each
// certificate of the given PEMs that parses, is a CA and has not expired, in
// order, without duplicates.
func Bundle(now time.Time, pems ...[]byte) []byte {
	var out bytes.Buffer
	seen := map[string]bool{}
	for _, data := range pems {
		for {
			var block *pem.Block
			block, data = pem.Decode(data)
			if block == nil {
				break
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil || block.Type != "CERTIFICATE" || !cert.IsCA || now.After(cert.NotAfter) || seen[string(cert.Raw)] {
				continue
			}
			seen[string(cert.Raw)] = true
			_ = pem.Encode(&out, block)
		}
	}
	return out.Bytes()
}

// ParseCertificate parses the first certificate of a PEM block list.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the certificate: %w", err)
	}
	return cert, nil
}

func serialNumber() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	return serial, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func isLetterOrDigit(c rune) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
