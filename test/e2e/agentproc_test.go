//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// agentProc is one agent process and its state directory.
type agentProc struct {
	name, stateDir, addressesFile, caFile, token string
	// locator is the locator's host:port; logDir holds the agent's log.
	locator, logDir string
	// hostsFile, when set, is the agent's /etc/hosts: it runs in a mount
	// namespace of its own where the file is bind-mounted there, as a
	// cluster's DNS would resolve Service names (a file rewritten in place
	// changes what the agent resolves).
	hostsFile string
	env       []string
	// args are added to the command line (startAgentWith).
	args []string
	cmd  *exec.Cmd
	log  *os.File
}

// startAgent starts a real agent process named name at address, trusting
// caFile and registering with token ("<id>.<secret>"); env is added to its
// environment (and so to the scripts it runs). It is stopped when the
// spec's container ends.
func startAgent(name, address, caFile, token string, env ...string) *agentProc {
	GinkgoHelper()
	return startAgentWith(name, address, caFile, token, nil, env...)
}

// startAgentWith is startAgent with args added to the agent's command line.
func startAgentWith(name, address, caFile, token string, args []string, env ...string) *agentProc {
	GinkgoHelper()
	return startAgentOf(locatorAddress, filepath.Join(kc.Dir, "logs"), "", name, address, caFile, token, args, env...)
}

// startAgentOf is startAgentWith for the locator at locator (host:port),
// logging into logDir, resolving names with hostsFile when set: for a
// cluster other than the suite's.
func startAgentOf(locator, logDir, hostsFile, name, address, caFile, token string, args []string, env ...string) *agentProc {
	GinkgoHelper()
	dir := GinkgoT().TempDir()
	a := &agentProc{name: name, stateDir: filepath.Join(dir, "state"), addressesFile: filepath.Join(dir, "addresses"),
		caFile: caFile, token: token, env: env, args: args, locator: locator, logDir: logDir, hostsFile: hostsFile}
	Expect(os.WriteFile(a.addressesFile, []byte(address+"\n"), 0o644)).To(Succeed())
	a.start()
	DeferCleanup(a.stop)
	return a
}

// start starts the process (again, on the same state directory).
func (a *agentProc) start() {
	GinkgoHelper()
	log, err := os.OpenFile(a.logPath(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	Expect(err).NotTo(HaveOccurred())
	a.log = log
	args := append([]string{"run",
		"--locator", "https://" + a.locator, "--ca-file", a.caFile, "--token", a.token,
		"--state-dir", a.stateDir, "--addresses-file", a.addressesFile, "--hostname", a.name,
		"--hardware-id", "e2e-" + a.name, "--mac-addresses", macFor(a.name), "--wait", "5s", "--log-level", "debug"}, a.args...)
	a.cmd = exec.Command(agentBin, args...)
	if a.hostsFile != "" {
		// unshare and sh exec the agent: the process is the agent's.
		a.cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "/bin/sh", "-c",
			`mount --bind "$0" /etc/hosts && exec "$@"`, a.hostsFile, agentBin}, args...)...)
	}
	a.cmd.Env = append(os.Environ(), a.env...)
	a.cmd.Stdout, a.cmd.Stderr = log, log
	Expect(a.cmd.Start()).To(Succeed())
}

// stop stops the process with SIGTERM, or SIGKILL after 10 s.
func (a *agentProc) stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	a.wait(10 * time.Second)
}

// kill kills the process at once, as a crash or a power cut would.
func (a *agentProc) kill() {
	_ = a.cmd.Process.Kill()
	a.wait(10 * time.Second)
}

func (a *agentProc) wait(d time.Duration) {
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(d):
		_ = a.cmd.Process.Kill()
		<-done
	}
	_ = a.log.Close()
	a.cmd = nil
}

// logPath is the agent's log file.
func (a *agentProc) logPath() string {
	return filepath.Join(a.logDir, "agent-"+a.name+".log")
}

// logFrom is the agent's log from byte offset on.
func (a *agentProc) logFrom(offset int64) string {
	data, err := os.ReadFile(a.logPath())
	if err != nil || int64(len(data)) < offset {
		return ""
	}
	return string(data[offset:])
}

// execAgentStatus is what `agent status --json` prints for a.
func execAgentStatus(a *agentProc) (map[string]any, error) {
	out, err := exec.Command(agentBin, "status", "--json", "--state-dir", a.stateDir).Output()
	if err != nil {
		return nil, err
	}
	var st map[string]any
	return st, json.Unmarshal(out, &st)
}

// macFor is a locally administered MAC address derived from name.
func macFor(name string) string {
	var h uint32 = 2166136261
	for _, c := range []byte(name) {
		h = (h ^ uint32(c)) * 16777619
	}
	return strings.ToLower(fmt.Sprintf("02:00:%02x:%02x:%02x:%02x", byte(h>>24), byte(h>>16), byte(h>>8), byte(h)))
}
