package main

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinary builds kubectl-siteops and runs it as kubectl would: the
// help on stdout with exit code 0, a mistake on the command line on
// stderr with exit code 2, before any cluster is contacted.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "kubectl-siteops")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	out, err := exec.Command(bin, "--help").Output()
	if err != nil || !strings.Contains(string(out), "kubectl siteops locate <address>") {
		t.Errorf("--help: %v\n%s", err, out)
	}

	cmd := exec.Command(bin, "locate", "not-an-address")
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	stderr, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(stderr), `"not-an-address" is not an IPv4 or IPv6 address`) {
		t.Errorf("locate not-an-address: %v\n%s", err, stderr)
	}
}
