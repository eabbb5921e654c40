package agent

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/siteops/site-operator/internal/protocol"
)

// productUUIDPath is where Linux exposes the SMBIOS system UUID; only root
// may read it on most distributions.
const productUUIDPath = "/sys/class/dmi/id/product_uuid"

// NewRequestID returns a random registration request ID: 32 characters of
// base64url (192 bits), within the protocol's 16 to 64 of [A-Za-z0-9_-].
func NewRequestID() string {
	var b [24]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// HardwareID returns the computer's SMBIOS system UUID, lower-case, or ""
// when it cannot be read (not root, no DMI, a placeholder UUID).
func HardwareID() string {
	b, err := os.ReadFile(productUUIDPath)
	if err != nil {
		return ""
	}
	id := strings.ToLower(strings.TrimSpace(string(b)))
	switch id {
	case "", "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
		"03000200-0400-0500-0006-000700080009": // a well-known firmware placeholder
		return ""
	}
	return id
}

// MACAddresses returns the globally unique MAC addresses of the computer's
// non-loopback interfaces (locally administered ones are left out),
// lower-case "aa:bb:cc:dd:ee:ff", in interface order, at most
// protocol.MaxMACAddresses.
func MACAddresses() ([]string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var macs []string
	for _, iface := range ifaces {
		// Locally administered addresses (VPN, container and virtual
		// machine adapters) repeat across computers: they would make two
		// computers one.
		if iface.Flags&net.FlagLoopback != 0 || len(iface.HardwareAddr) != 6 || iface.HardwareAddr[0]&0x02 != 0 {
			continue
		}
		mac := strings.ToLower(iface.HardwareAddr.String())
		if mac == "00:00:00:00:00:00" || slices.Contains(macs, mac) {
			continue
		}
		macs = append(macs, mac)
	}
	return macs[:min(len(macs), protocol.MaxMACAddresses)], nil
}

// ParseMACAddresses parses a list of MAC addresses (48 bits) and returns
// them lower-case, colon-separated.
func ParseMACAddresses(list []string) ([]string, error) {
	var macs []string
	for _, s := range list {
		hw, err := net.ParseMAC(strings.TrimSpace(s))
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("%q is not a 48-bit MAC address", s)
		}
		macs = append(macs, strings.ToLower(hw.String()))
	}
	if len(macs) > protocol.MaxMACAddresses {
		return nil, fmt.Errorf("%d MAC addresses, at most %d are allowed", len(macs), protocol.MaxMACAddresses)
	}
	return macs, nil
}

// InterfaceAddresses returns the global-unicast addresses of the computer's
// interfaces that are up, IPv4 first, at most protocol.MaxAgentAddresses:
// what the agent tells the locator by default.
func InterfaceAddresses() ([]string, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("listing network interfaces: %w", err)
	}
	var v4, v6 []string
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return nil, fmt.Errorf("listing the addresses of %s: %w", iface.Name, err)
		}
		for _, a := range addrs {
			ipnet, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipnet.IP)
			if !ok || !ip.IsGlobalUnicast() {
				continue
			}
			ip = ip.Unmap()
			if ip.Is4() {
				v4 = append(v4, ip.String())
			} else {
				v6 = append(v6, ip.String())
			}
		}
	}
	all := append(v4, v6...)
	return all[:min(len(all), protocol.MaxAgentAddresses)], nil
}
