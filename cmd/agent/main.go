// Command agent runs on a managed computer: it locates its site's servers,
// registers, checks in for work and carries it out (see package agent).
// Subcommands:
//
//	agent run       run the agent until SIGTERM or SIGINT
//	agent status    show the Computer, site and task server the agent is connected to
//	agent simulate  run many agents in one process, for load tests
//	agent version   print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/siteops/site-operator/internal/agent"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = `Usage: agent <command> [flags]

Commands:
  run       run the agent until SIGTERM or SIGINT
  status    show the Computer, site and task server the agent is connected to
  simulate  run many agents in one process, for load tests
  version   print the version

Run "agent <command> -h" for a command's flags.
`

// run runs the subcommand of args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if version == "" {
		version = agent.BuildVersion()
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runAgent(ctx, args[1:], stderr)
	case "status":
		err = status(args[1:], stdout, stderr)
	case "simulate":
		err = simulate(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "agent", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "agent: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
}

// errUsage is a flag error: the flag package has printed it.
var errUsage = errors.New("usage")

// list is a flag that may be repeated and may hold comma-separated values.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }

func (l *list) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		return errUsage
	}
	return nil
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func runAgent(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var locators, addresses, macs list
	fs.Var(&locators, "locator", "locator base URL (https://…); repeat for each manager replica, tried in turn")
	caFile := fs.String("ca-file", "", "PEM bundle of the CAs to trust (the only ones trusted; required); reread when it changes, without a restart")
	token := fs.String("token", "", "bootstrap token \"id.secret\"")
	tokenFile := fs.String("token-file", "", "file holding the bootstrap token, read at each registration")
	stateDir := fs.String("state-dir", agent.DefaultStateDir, "directory of the agent's credential and state")
	fs.Var(&addresses, "addresses", "the agent's IP addresses, most preferred first (default: its interfaces' global-unicast addresses)")
	addressesFile := fs.String("addresses-file", "", "file of the agent's IP addresses, one a line, read before every check-in")
	hostname := fs.String("hostname", "", "host name to register (default: the system's)")
	hardwareID := fs.String("hardware-id", "", "hardware ID to register (default: the SMBIOS system UUID when readable)")
	fs.Var(&macs, "mac-addresses", "MAC addresses to register (default: those of the non-loopback interfaces)")
	wait := fs.Duration("wait", agent.DefaultWait, "long poll asked of the task service (whole seconds)")
	sourceAddress := fs.String("source-address", "", "local IP address to bind outgoing connections to")
	relocate := fs.Duration("relocate-interval", agent.DefaultRelocateInterval, "how often to locate again while all is well (jittered)")
	rebootCommand := fs.String("reboot-command", agent.DefaultRebootCommand,
		"command that restarts the computer once a reboot work item's success is recorded, split at spaces (empty: restart nothing)")
	disk := fs.String("disk", "", "the disk that deployImage writes and captureImage reads (a block device such as /dev/sda; "+
		"empty: those actions fail with reason DiskFailed)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	cfg := agent.Config{
		Locators: locators, StateDir: *stateDir, Hostname: *hostname, HardwareID: *hardwareID,
		Wait: *wait, RelocateInterval: *relocate, Version: version, Logger: log, RebootCommand: *rebootCommand,
		Disk: *disk,
	}
	if *caFile == "" {
		return errors.New("--ca-file is required: the agent trusts only the CAs it is given")
	}
	cfg.CAFile = *caFile
	switch {
	case *token != "" && *tokenFile != "":
		return errors.New("give --token or --token-file, not both")
	case *token != "":
		cfg.Token = agent.StaticToken(*token)
	case *tokenFile != "":
		cfg.Token = agent.TokenFile(*tokenFile)
	}
	switch {
	case len(addresses) > 0 && *addressesFile != "":
		return errors.New("give --addresses or --addresses-file, not both")
	case len(addresses) > 0:
		a, err := agent.ParseAddresses(addresses)
		if err != nil {
			return fmt.Errorf("--addresses: %w", err)
		}
		cfg.Addresses = agent.StaticAddresses(a)
	case *addressesFile != "":
		cfg.Addresses = agent.AddressesFile(*addressesFile)
	}
	if len(macs) > 0 {
		if cfg.MACAddresses, err = agent.ParseMACAddresses(macs); err != nil {
			return fmt.Errorf("--mac-addresses: %w", err)
		}
	}
	if *sourceAddress != "" {
		if cfg.SourceAddress, err = netip.ParseAddr(*sourceAddress); err != nil {
			return fmt.Errorf("--source-address: %w", err)
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return fmt.Errorf("starting the agent: %w", err)
	}
	log.Info("Starting the agent", "version", version, "locators", []string(locators), "stateDir", *stateDir, "disk", *disk)
	err = a.Run(ctx)
	log.Info("Stopped the agent")
	return err
}

func status(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stateDir := fs.String("state-dir", agent.DefaultStateDir, "directory of the agent's credential and state")
	asJSON := fs.Bool("json", false, "print the state as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	s, err := agent.ReadState(*stateDir)
	if err != nil {
		return err
	}
	return agent.PrintStatus(stdout, s, *asJSON, time.Now())
}

func simulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var locators list
	opts := agent.SimulateOptions{Version: version, Stats: stdout}
	fs.IntVar(&opts.Count, "count", 1, "how many agents to run")
	fs.IntVar(&opts.FirstIndex, "first-index", 0, "number of the first agent (give each process a disjoint range)")
	fs.StringVar(&opts.Addresses, "addresses", "", "CIDR of the agents' claimed addresses, one each, consecutive (required)")
	fs.StringVar(&opts.SourceAddresses, "source-addresses", "", "CIDR of local addresses, one each, to bind the agents' connections to (e.g. 127.1.0.0/16)")
	fs.StringVar(&opts.HostnamePrefix, "hostname-prefix", "sim-agent-", "start of the agents' host names")
	fs.Var(&locators, "locator", "locator base URL (https://…); repeat for each manager replica")
	caFile := fs.String("ca-file", "", "PEM bundle of the CAs to trust (required); reread when it changes")
	fs.StringVar(&opts.Token, "token", "", "bootstrap token \"id.secret\"")
	tokenFile := fs.String("token-file", "", "file holding the bootstrap token")
	fs.Float64Var(&opts.RegisterRate, "register-rate", 200, "registrations per second at most, all agents together (0: no limit)")
	fs.DurationVar(&opts.Wait, "wait", agent.DefaultWait, "long poll asked of the task service (whole seconds)")
	fs.DurationVar(&opts.StatsInterval, "stats-interval", 10*time.Second, "how often to print a line of statistics")
	fs.DurationVar(&opts.Duration, "duration", 0, "how long to run (0: until SIGTERM or SIGINT)")
	fs.DurationVar(&opts.RelocateInterval, "relocate-interval", agent.DefaultRelocateInterval, "how often each agent locates again (jittered)")
	fs.DurationVar(&opts.WorkDuration, "work-duration", agent.DefaultWorkDuration, "how long a simulated agent takes to carry out a work item (it runs nothing)")
	fs.Float64Var(&opts.WorkFailPercent, "work-fail-percent", 0,
		"share of agents, 0 to 100, whose work fails with exit code 1 (the same agents in every run)")
	logLevel := fs.String("log-level", "warn", "the agents' log level: debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	opts.Logger, opts.Locators = log, locators
	if *caFile == "" {
		return errors.New("--ca-file is required")
	}
	opts.CAFile = *caFile
	if *tokenFile != "" {
		if opts.Token != "" {
			return errors.New("give --token or --token-file, not both")
		}
		if opts.Token, err = agent.TokenFile(*tokenFile)(); err != nil {
			return err
		}
	}
	if opts.Token == "" {
		return errors.New("--token or --token-file is required")
	}
	if opts.Addresses == "" {
		return errors.New("--addresses is required")
	}
	_, err = agent.Simulate(ctx, opts)
	return err
}
