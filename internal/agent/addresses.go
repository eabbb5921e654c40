package agent

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"strings"

	"github.com/siteops/site-operator/internal/protocol"
)

// AddressSource returns the agent's addresses, most preferred first. The
// agent calls it before every check-in and locates again when the answer
// changes.
type AddressSource func() ([]string, error)

// StaticAddresses is an AddressSource that always returns addrs.
func StaticAddresses(addrs []string) AddressSource {
	return func() ([]string, error) { return addrs, nil }
}

// AddressesFile is an AddressSource that reads path at every call: one
// address per line; blank lines and lines starting with # are skipped.
func AddressesFile(path string) AddressSource {
	return func() ([]string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading the addresses file: %w", err)
		}
		var lines []string
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line != "" && !strings.HasPrefix(line, "#") {
				lines = append(lines, line)
			}
		}
		addrs, err := ParseAddresses(lines)
		if err != nil {
			return nil, fmt.Errorf("reading the addresses file %s: %w", path, err)
		}
		return addrs, nil
	}
}

// ParseAddresses checks a list of IP addresses and returns them in their
// canonical form. It refuses an empty list and more than
// protocol.MaxAgentAddresses.
func ParseAddresses(list []string) ([]string, error) {
	var addrs []string
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", s)
		}
		addrs = append(addrs, a.WithZone("").Unmap().String())
	}
	if len(addrs) == 0 {
		return nil, errors.New("no address")
	}
	if len(addrs) > protocol.MaxAgentAddresses {
		return nil, fmt.Errorf("%d addresses, at most %d are allowed", len(addrs), protocol.MaxAgentAddresses)
	}
	return addrs, nil
}

// EnumerateAddresses returns n consecutive addresses of cidr. When cidr's
// address is its network address ("10.1.0.0/16") the enumeration starts at
// the first host address after it, otherwise at the address given
// ("10.1.0.50/16"). It fails when the prefix holds fewer than n addresses
// from there (the IPv4 broadcast address excluded).
func EnumerateAddresses(cidr string, n int) ([]netip.Addr, error) {
	p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
	if err != nil {
		return nil, fmt.Errorf("parsing %q as a CIDR: %w", cidr, err)
	}
	if n < 0 {
		return nil, fmt.Errorf("a negative count of addresses: %d", n)
	}
	start, bits := p.Addr(), p.Addr().BitLen()
	hostBits := bits - p.Bits()
	if start == p.Masked().Addr() && hostBits >= 2 {
		start = start.Next()
	}
	// The last usable address: the end of the prefix, less the IPv4
	// broadcast address.
	last := new(big.Int).Add(toInt(p.Masked().Addr()), new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), uint(hostBits)), big.NewInt(1)))
	if p.Addr().Is4() && hostBits >= 2 {
		last.Sub(last, big.NewInt(1))
	}
	avail := new(big.Int).Sub(last, toInt(start))
	avail.Add(avail, big.NewInt(1))
	if avail.Cmp(big.NewInt(int64(n))) < 0 {
		return nil, fmt.Errorf("%s holds %s addresses from %s, fewer than %d", p, avail, start, n)
	}
	out := make([]netip.Addr, 0, n)
	for a := start; len(out) < n; a = a.Next() {
		out = append(out, a)
	}
	return out, nil
}

func toInt(a netip.Addr) *big.Int {
	return new(big.Int).SetBytes(a.AsSlice())
}
