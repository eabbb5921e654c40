package samba

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// TLSMode says which certificate the directory serves.
type TLSMode int

const (
	// TLSGenerated (the default) serves a certificate made for this
	// instance by a CA of its own (CACertPEM), naming ServerName() as a
	// DNS name and the instance's IP address, so that a client verifies
	// it against either the URL's host or ServerName().
	TLSGenerated TLSMode = iota
	// TLSGeneratedDNSOnly is TLSGenerated without the IP address: a
	// client that connects by address must set its server name to
	// ServerName(), as with a real domain controller reached by address.
	TLSGeneratedDNSOnly
	// TLSSamba serves the certificate Samba makes itself at first start
	// (private/tls: RSA 4096, about a second more to start). It names the
	// host only in its subject common name, with no subject alternative
	// name, so Go's crypto/x509 refuses it for any server name ("x509:
	// certificate relies on legacy Common Name field"): a client can only
	// check the chain itself. Use it to test that failure.
	TLSSamba
)

// Options configure Start. The zero value is a domain SITEOPS.TEST (NetBIOS
// SITEOPS) with a domain controller DC1 on a random loopback address.
type Options struct {
	// Realm is the DNS domain in upper case; default SITEOPS.TEST.
	Realm string
	// Domain is the NetBIOS domain name; default SITEOPS.
	Domain string
	// HostName is the domain controller's name; default dc1.
	HostName string
	// AdminPassword is the Administrator's password; default a fixed one
	// that meets Samba's complexity rules (see DefaultAdminPassword).
	AdminPassword string
	// IP is the loopback address to listen on (127.x.y.z with z neither 0
	// nor 255); default a random free one in 127.200.0.0–127.254.255.255.
	IP string
	// TLS says which certificate to serve; default TLSGenerated.
	TLS TLSMode
	// ProcessModel is samba's -M: "prefork" (a master and four LDAP
	// workers, the default, as a real DC runs) or "single" (one process).
	ProcessModel string
	// FreshProvision provisions the domain into the instance's directory
	// (about 4 s) instead of copying a provisioned template kept in the
	// user's cache directory (see the package documentation).
	FreshProvision bool
	// Log, when set, also receives samba's output.
	Log io.Writer
}

// DefaultAdminPassword is the Administrator's password unless
// Options.AdminPassword says otherwise.
const DefaultAdminPassword = "Site-Operator-Test-1"

// Available says whether Samba's AD domain controller can run here: nil, or
// an error telling to install the Debian package samba.
func Available() error {
	var missing []string
	for _, name := range []string{"samba", "samba-tool"} {
		if _, err := lookPath(name); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("samba: not installed (%s not found): install the Debian package samba "+
			"(apt-get install samba; .ci/run does it in CI)", strings.Join(missing, " and "))
	}
	return nil
}

// lookPath finds a command on PATH or in the sbin directories, which are
// not always on a non-root PATH.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// DC is a running Samba Active Directory domain controller.
type DC struct {
	opts      Options
	dir       string
	ip        string
	realmDNS  string // lower-case realm, siteops.test
	domainDN  string // DC=siteops,DC=test
	adminDN   string
	serverNm  string
	caPEM     []byte
	sambaPath string

	mu      sync.Mutex // guards the process fields
	cmd     *exec.Cmd
	pgid    int
	done    chan struct{} // closed when cmd has exited
	stdinW  *os.File
	logFile *os.File
	paused  bool
	stopped bool

	opMu   sync.Mutex // one helper operation at a time on conn
	connMu sync.Mutex // guards conn
	conn   *ldap.Conn // admin connection for the helpers
}

// StartT starts a domain controller for a test, fails the test (with how
// to install Samba when it is missing) if it cannot, and stops it when the
// test ends.
func StartT(t testing.TB, opts Options) *DC {
	t.Helper()
	if err := Available(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("starting Samba: %v", err)
	}
	t.Cleanup(func() {
		if err := dc.Stop(); err != nil {
			t.Errorf("stopping Samba: %v", err)
		}
	})
	return dc
}

// Start provisions a domain in a new temporary directory, starts samba on
// it and returns once an LDAPS bind as Administrator succeeds. ctx bounds
// the start only. Stop the DC when done.
func Start(ctx context.Context, opts Options) (*DC, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Realm == "" {
		opts.Realm = "SITEOPS.TEST"
	}
	opts.Realm = strings.ToUpper(opts.Realm)
	if opts.Domain == "" {
		opts.Domain = "SITEOPS"
	}
	if opts.HostName == "" {
		opts.HostName = "dc1"
	}
	if opts.AdminPassword == "" {
		opts.AdminPassword = DefaultAdminPassword
	}
	if opts.ProcessModel == "" {
		opts.ProcessModel = "prefork"
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	sambaPath, err := lookPath("samba")
	if err != nil {
		return nil, err
	}
	ip := opts.IP
	if ip == "" {
		if ip, err = freeLoopback(); err != nil {
			return nil, err
		}
	} else if p := net.ParseIP(ip).To4(); p == nil || p[0] != 127 || p[3] == 0 || p[3] == 255 {
		return nil, fmt.Errorf("samba: IP %q is not 127.x.y.z with z in 1..254", ip)
	}

	realmDNS := strings.ToLower(opts.Realm)
	var dn []string
	for _, label := range strings.Split(realmDNS, ".") {
		dn = append(dn, "DC="+label)
	}
	d := &DC{
		opts:      opts,
		ip:        ip,
		realmDNS:  realmDNS,
		domainDN:  strings.Join(dn, ","),
		sambaPath: sambaPath,
		serverNm:  strings.ToLower(opts.HostName) + "." + realmDNS,
	}
	d.adminDN = "CN=Administrator,CN=Users," + d.domainDN

	removeAbandoned()
	d.dir, err = os.MkdirTemp("", "samba-dc-*")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(d.dir, "owner"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = d.shutdown(syscall.SIGKILL)
			_ = os.RemoveAll(d.dir)
		}
	}()
	if opts.FreshProvision {
		if err := provision(ctx, d.dir, opts); err != nil {
			return nil, err
		}
	} else {
		tmpl, err := template(ctx, opts)
		if err != nil {
			return nil, err
		}
		if out, err := exec.CommandContext(ctx, "cp", "-a", tmpl+"/.", d.dir).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("samba: copying the provisioned template: %w: %s", err, out)
		}
	}
	for _, sub := range []string{"run", "log", "cache", "state", "tls"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o755); err != nil {
			return nil, err
		}
	}
	if opts.TLS != TLSSamba {
		var certIP net.IP
		if opts.TLS == TLSGenerated {
			certIP = net.ParseIP(ip)
		}
		if err := writeCertificates(filepath.Join(d.dir, "tls"), d.serverNm, certIP); err != nil {
			return nil, fmt.Errorf("samba: certificates: %w", err)
		}
	}
	if err := os.WriteFile(d.confPath(), []byte(d.smbConf()), 0o644); err != nil {
		return nil, err
	}
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	if err := d.loadCA(); err != nil {
		return nil, err
	}
	ok = true
	return d, nil
}

func (d *DC) confPath() string { return filepath.Join(d.dir, "etc", "smb.conf") }

// smbConf is the configuration samba runs with: only the LDAP server, on
// one loopback address, every directory inside d.dir.
func (d *DC) smbConf() string {
	var b strings.Builder
	p := func(k, v string) { fmt.Fprintf(&b, "\t%s = %s\n", k, v) }
	b.WriteString("[global]\n")
	p("netbios name", strings.ToUpper(d.opts.HostName))
	p("realm", d.opts.Realm)
	p("workgroup", strings.ToUpper(d.opts.Domain))
	p("server role", "active directory domain controller")
	// Only the LDAP server: no smbd, winbindd, KDC, DNS, RPC, NBT, CLDAP,
	// replication or KCC. A simple bind needs none of them.
	p("server services", "ldap")
	// samba takes an address with a mask as an interface of its own
	// ("User knows best"), even one that no interface has: every
	// 127.0.0.0/8 address is the loopback's on Linux. A bare address or
	// /32 is refused ("no network interfaces found").
	p("interfaces", d.ip+"/24")
	p("bind interfaces only", "yes")
	p("private dir", filepath.Join(d.dir, "private"))
	p("binddns dir", filepath.Join(d.dir, "bind-dns"))
	p("lock directory", d.dir)
	p("state directory", filepath.Join(d.dir, "state"))
	p("cache directory", filepath.Join(d.dir, "cache"))
	p("pid directory", filepath.Join(d.dir, "run"))
	p("ncalrpc dir", filepath.Join(d.dir, "run", "ncalrpc"))
	p("winbindd socket directory", filepath.Join(d.dir, "run", "winbindd"))
	p("ntp signd socket directory", filepath.Join(d.dir, "run", "ntp_signd"))
	p("log file", filepath.Join(d.dir, "log", "log.%m"))
	p("log level", "1")
	p("panic action", "")
	// No fsync on each ldb transaction (Samba's own test suite does the
	// same): a test directory need not survive a power cut.
	p("ldb:nosync", "true")
	p("tls enabled", "yes")
	if d.opts.TLS != TLSSamba {
		p("tls keyfile", filepath.Join(d.dir, "tls", "key.pem"))
		p("tls certfile", filepath.Join(d.dir, "tls", "cert.pem"))
		p("tls cafile", filepath.Join(d.dir, "tls", "ca.pem"))
	}
	return b.String()
}

func (d *DC) start(ctx context.Context) error {
	logFile, err := os.OpenFile(filepath.Join(d.dir, "samba.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return err
	}
	var out io.Writer = logFile
	if d.opts.Log != nil {
		out = io.MultiWriter(logFile, d.opts.Log)
	}
	cmd := exec.Command(d.sambaPath, "-i", "-M", d.opts.ProcessModel, "--debug-stdout", "-s", d.confPath())
	cmd.Dir = d.dir
	// samba -i ends when its standard input closes: if this process dies
	// without stopping it, the pipe closes and samba goes too.
	cmd.Stdin = stdinR
	cmd.Stdout = out
	cmd.Stderr = out
	// A process group of its own, so that Pause, Kill and Stop reach the
	// prefork workers as well.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		stdinR.Close()
		stdinW.Close()
		logFile.Close()
		return fmt.Errorf("samba: %w", err)
	}
	stdinR.Close()
	done := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.pgid, d.done, d.stdinW, d.logFile = cmd, cmd.Process.Pid, done, stdinW, logFile
	d.paused, d.stopped = false, false
	d.mu.Unlock()
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return d.waitReady(ctx, done)
}

// waitReady polls an LDAPS bind until it succeeds, samba exits or ctx ends.
func (d *DC) waitReady(ctx context.Context, done chan struct{}) error {
	last := errors.New("no attempt finished")
	for {
		select {
		case <-done:
			return fmt.Errorf("samba exited during start: %s\n%s", d.cmd.ProcessState, d.logTail())
		case <-ctx.Done():
			return fmt.Errorf("samba did not answer an LDAPS bind on %s in time (last: %w)\n%s", d.URL(), last, d.logTail())
		default:
		}
		conn, err := ldap.DialURL(d.URL(),
			ldap.DialWithDialer(&net.Dialer{Timeout: time.Second}),
			// A readiness probe: with TLSSamba there is no name Go accepts.
			ldap.DialWithTLSConfig(&tls.Config{InsecureSkipVerify: true})) //nolint:gosec // readiness probe only
		if err == nil {
			conn.SetTimeout(5 * time.Second)
			err = conn.Bind(d.adminDN, d.opts.AdminPassword)
			_ = conn.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-time.After(100 * time.Millisecond):
		case <-done:
		case <-ctx.Done():
		}
	}
}

func (d *DC) loadCA() error {
	caFile := filepath.Join(d.dir, "tls", "ca.pem")
	if d.opts.TLS == TLSSamba {
		caFile = filepath.Join(d.dir, "private", "tls", "ca.pem")
		cn, _, err := certificateNames(filepath.Join(d.dir, "private", "tls", "cert.pem"))
		if err != nil {
			return fmt.Errorf("samba: reading its certificate: %w", err)
		}
		d.serverNm = cn
	}
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	d.caPEM = ca
	return nil
}

func (d *DC) logTail() string {
	data, _ := os.ReadFile(filepath.Join(d.dir, "samba.out"))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return "samba output:\n" + string(data)
}

// Log returns what samba has printed so far.
func (d *DC) Log() string {
	data, _ := os.ReadFile(filepath.Join(d.dir, "samba.out"))
	return string(data)
}

// URL is ldaps://<ip>:636.
func (d *DC) URL() string { return "ldaps://" + net.JoinHostPort(d.ip, "636") }

// LDAPURL is ldap://<ip>:389, for StartTLS (a bind before it is refused:
// "Transport encryption required").
func (d *DC) LDAPURL() string { return "ldap://" + net.JoinHostPort(d.ip, "389") }

// IP is the loopback address the DC listens on.
func (d *DC) IP() string { return d.ip }

// Dir is the DC's temporary directory (removed by Stop).
func (d *DC) Dir() string { return d.dir }

// DomainDN is DC=siteops,DC=test for SITEOPS.TEST.
func (d *DC) DomainDN() string { return d.domainDN }

// ConfigurationDN is CN=Configuration,<DomainDN>.
func (d *DC) ConfigurationDN() string { return "CN=Configuration," + d.domainDN }

// BaseDN is the sites container, CN=Sites,CN=Configuration,DC=...: what a
// DirectoryImport's spec.baseDN names.
func (d *DC) BaseDN() string { return "CN=Sites," + d.ConfigurationDN() }

// SubnetsDN is CN=Subnets,<BaseDN>.
func (d *DC) SubnetsDN() string { return "CN=Subnets," + d.BaseDN() }

// AdminDN is the Administrator's DN, for a simple bind.
func (d *DC) AdminDN() string { return d.adminDN }

// AdminUPN is Administrator@<realm in lower case>, which binds too.
func (d *DC) AdminUPN() string { return "Administrator@" + d.realmDNS }

// AdminPassword is the Administrator's password.
func (d *DC) AdminPassword() string { return d.opts.AdminPassword }

// CACertPEM is the PEM certificate that signed the server's certificate:
// trust it (a DirectoryImport's spec.tls.caBundle) instead of skipping
// verification.
func (d *DC) CACertPEM() []byte { return bytes.Clone(d.caPEM) }

// ServerName is the DNS name the server's certificate gives: dc1.siteops.test
// (with TLSSamba, the subject common name DC1.siteops.test, which Go does
// not accept).
func (d *DC) ServerName() string { return d.serverNm }

// TLSConfig verifies the server's certificate with CACertPEM and
// ServerName.
func (d *DC) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(d.caPEM)
	return &tls.Config{RootCAs: pool, ServerName: d.serverNm, MinVersion: tls.VersionTLS12}
}

// PID is the samba root process's id (and its process group's).
func (d *DC) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pgid
}

// Pause stops every samba process (SIGSTOP to its process group): the
// ports still accept connections (the kernel completes the handshake up
// to the listen backlog) but nothing answers, so a search or bind hangs
// until the client's timeout. Resume undoes it.
func (d *DC) Pause() error { return d.signalGroup(syscall.SIGSTOP, true) }

// Resume continues samba after Pause.
func (d *DC) Resume() error { return d.signalGroup(syscall.SIGCONT, false) }

func (d *DC) signalGroup(sig syscall.Signal, paused bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.cmd == nil {
		return errors.New("samba is not running")
	}
	if err := syscall.Kill(-d.pgid, sig); err != nil {
		return fmt.Errorf("samba: signal %v: %w", sig, err)
	}
	d.paused = paused
	return nil
}

// Kill ends samba at once (SIGKILL to its process group): connections are
// reset and new ones refused, until Restart. The directory stays.
func (d *DC) Kill() error {
	d.dropConn()
	return d.shutdown(syscall.SIGKILL)
}

// Restart starts samba again on the same directory and address (after
// Kill, or to restart a running one), and waits for an LDAPS bind. What
// was added before stays. About a second.
func (d *DC) Restart(ctx context.Context) error {
	d.dropConn()
	if err := d.shutdown(syscall.SIGTERM); err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	return d.start(ctx)
}

// Stop ends samba (SIGTERM, then SIGKILL after 10 s), waits until no
// process of it is left and removes its directory. It may be called more
// than once.
func (d *DC) Stop() error {
	d.dropConn()
	err := d.shutdown(syscall.SIGTERM)
	if rmErr := os.RemoveAll(d.dir); err == nil {
		err = rmErr
	}
	return err
}

// shutdown signals samba's process group, waits for the root process, and
// then for every process of the group to be gone.
func (d *DC) shutdown(sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.stopped {
		return nil
	}
	d.stopped = true
	pgid, done := d.pgid, d.done
	if d.paused {
		_ = syscall.Kill(-pgid, syscall.SIGCONT)
		d.paused = false
	}
	_ = syscall.Kill(-pgid, sig)
	if d.stdinW != nil {
		d.stdinW.Close()
		d.stdinW = nil
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
	// The workers may outlive the root process for a moment.
	deadline := time.Now().Add(10 * time.Second)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			if time.Now().After(deadline.Add(5 * time.Second)) {
				return fmt.Errorf("samba: processes of group %d are still running", pgid)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if d.logFile != nil {
		d.logFile.Close()
		d.logFile = nil
	}
	return nil
}

// Running reports whether some process of samba's group is alive (not a
// zombie): false after Stop or Kill.
func (d *DC) Running() bool {
	d.mu.Lock()
	pgid := d.pgid
	d.mu.Unlock()
	return pgid != 0 && groupAlive(pgid)
}

// groupAlive reports whether a process of group pgid is alive (a zombie
// waiting for a reaper does not count).
func groupAlive(pgid int) bool {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 3 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			return true
		}
	}
	return false
}

// removeAbandoned removes the directories of DCs whose test process died
// without stopping them (samba itself ends when that process's end closes
// its standard input).
func removeAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "samba-dc-*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// freeLoopback picks a random 127.x.y.z (x 200–254, z 1–254) whose LDAP
// ports are free.
func freeLoopback() (string, error) {
	var b [4]byte
	for range 50 {
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		n := binary.BigEndian.Uint32(b[:])
		ip := fmt.Sprintf("127.%d.%d.%d", 200+n%55, (n>>8)%256, 1+(n>>16)%254)
		free := true
		for _, port := range []string{"389", "636", "3268", "3269"} {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return ip, nil
		}
	}
	return "", errors.New("samba: no free loopback address found")
}

// provision runs samba-tool domain provision into dir.
func provision(ctx context.Context, dir string, opts Options) error {
	tool, err := lookPath("samba-tool")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, tool, "domain", "provision",
		"--server-role=dc",
		"--dns-backend=NONE",
		"--targetdir="+dir,
		"--realm="+opts.Realm,
		"--domain="+strings.ToUpper(opts.Domain),
		"--host-name="+opts.HostName,
		"--adminpass="+opts.AdminPassword,
		"--option=interfaces=127.0.0.1/8",
		"--option=bind interfaces only=yes",
		"--option=ldb:nosync=true",
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if len(out) > 4000 {
			out = out[len(out)-4000:]
		}
		return fmt.Errorf("samba-tool domain provision: %w\n%s", err, out)
	}
	return nil
}

var templateMu sync.Mutex

// template returns a directory holding a domain provisioned with opts,
// kept in the user's cache directory under a name made of Samba's version
// and the options, so that it is provisioned once per machine: about 4 s
// saved on each start. It is written elsewhere and renamed into place, so
// that concurrent test processes never see half of one.
func template(ctx context.Context, opts Options) (string, error) {
	templateMu.Lock()
	defer templateMu.Unlock()
	version, err := exec.CommandContext(ctx, "samba", "--version").Output()
	if err != nil {
		if p, lerr := lookPath("samba"); lerr == nil {
			version, err = exec.CommandContext(ctx, p, "--version").Output()
		}
		if err != nil {
			return "", fmt.Errorf("samba --version: %w", err)
		}
	}
	h := sha256.New()
	for _, s := range []string{"v1", string(version), opts.Realm, strings.ToUpper(opts.Domain), opts.HostName, opts.AdminPassword} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	root := filepath.Join(cache, "site-operator-samba")
	dir := filepath.Join(root, hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "private", "sam.ldb")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(root, "provisioning-*")
	if err != nil {
		return "", err
	}
	if err := provision(ctx, tmp, opts); err != nil {
		_ = os.RemoveAll(tmp)
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process got there first: use its.
		_ = os.RemoveAll(tmp)
		if _, serr := os.Stat(filepath.Join(dir, "private", "sam.ldb")); serr != nil {
			return "", fmt.Errorf("samba: keeping the provisioned template: %w", err)
		}
	}
	return dir, nil
}
