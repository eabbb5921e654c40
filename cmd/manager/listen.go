package main

import (
	"fmt"
	"net"
)

// onHost is addr (host:port, or "0" for a server switched off) with its
// host replaced by host, when host is set: --listen-host puts every server
// of the manager on one address (its pod's own, when several pods share a
// network, as with hostNetwork or on the simulated cluster).
func onHost(host, addr string) (string, error) {
	if host == "" || addr == "0" || addr == "" {
		return addr, nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w (want host:port or :port)", addr, err)
	}
	return net.JoinHostPort(host, port), nil
}
