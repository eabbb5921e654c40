package host

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

// DefaultConfigPath is where the operator mounts the configuration.
const DefaultConfigPath = "/etc/site-operator/" + config.FileName

// Command is a service binary, for Run: the service names itself, its part
// of the configuration and how to build it; Run does the rest.
type Command struct {
	// Name is the binary's name, e.g. "task-service".
	Name string
	// Version is the binary's version; empty means BuildVersion().
	Version string
	// Section returns the fields of cfg that the common flags override
	// (--port, --health-port, --max-connections, --min-transfer-rate).
	Section func(cfg *config.Config) Section
	// Flags adds the service's own flags to fs and returns, by flag name,
	// how each overrides the configuration when it is set.
	Flags func(fs *flag.FlagSet) map[string]func(*config.Config)
	// New builds the service from its configuration.
	New func(cfg config.Config, version string, log *slog.Logger) (Service, error)
	// FilesPerConnection is how many file descriptors one API connection
	// may hold at once: its socket, and for a download the file it sends.
	// Run caps a maxConnections set in the file or by a flag to what the
	// process's file limit allows at that count. 0 means 1.
	FilesPerConnection int
}

// Section points at the fields of one service in a config.Config.
type Section struct {
	Port, HealthPort, MaxConnections *int
	MinTransferRate                  *int64
	// Name is the section's key in the file, e.g. "task".
	Name string
}

// ServiceOptions are what a site service needs besides its configuration.
type ServiceOptions struct {
	// Version is reported by /v1/info.
	Version string
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Service is what a Command runs.
type Service interface {
	// ListenAndServe serves until ctx is done, then shuts down gracefully.
	ListenAndServe(ctx context.Context) error
}

// Run runs a service binary with the command-line arguments args (without
// the program name): it parses the flags, loads the configuration file and
// applies the flags set over it, caps maxConnections under the file limit
// (Command.FilesPerConnection), builds the service and serves until
// SIGTERM or SIGINT, then shuts down gracefully. It logs JSON to standard
// error and returns the exit status: 0, 1 on any failure, 2 for a bad
// command line.
func Run(cmd Command, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return run(ctx, cmd, args, os.Stdout, os.Stderr)
}

func run(ctx context.Context, cmd Command, args []string, stdout, stderr io.Writer) int {
	version := cmd.Version
	if version == "" {
		version = BuildVersion()
	}
	var cfg config.Config
	section := cmd.Section(&cfg)
	fs := flag.NewFlagSet(cmd.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configPath   = fs.String("config", DefaultConfigPath, "Path of the service configuration file.")
		port         = fs.Int("port", 0, "Port of the API; overrides "+section.Name+".port of the configuration file.")
		healthPort   = fs.Int("health-port", 0, "Port of /healthz and /readyz; overrides "+section.Name+".healthPort of the configuration file.")
		maxConns     = fs.Int("max-connections", 0, "Cap on open API connections; overrides "+section.Name+".maxConnections of the configuration file.")
		minRate      = fs.Int64("min-transfer-rate", 0, "Slowest transfer allowed, in bytes per second; overrides "+section.Name+".minTransferRate of the configuration file.")
		listenHost   = fs.String("listen-host", "", "Address to bind the API and the probes to, such as the pod's IP; overrides listenHost of the configuration file. Empty means every interface.")
		insecure     = fs.Bool("insecure-http", false, "Serve the API over plain HTTP, for development only; overrides tls.disabled of the configuration file.")
		tlsCert      = fs.String("tls-cert-file", "", "PEM certificate of the API; overrides tls.certFile of the configuration file (default "+config.DefaultTLSDir+"/tls.crt).")
		tlsKey       = fs.String("tls-key-file", "", "PEM key of the API; overrides tls.keyFile of the configuration file (default "+config.DefaultTLSDir+"/tls.key).")
		printVersion = fs.Bool("version", false, "Print the version and exit.")
	)
	overrides := map[string]func(*config.Config){
		"port":              func(c *config.Config) { *cmd.Section(c).Port = *port },
		"health-port":       func(c *config.Config) { *cmd.Section(c).HealthPort = *healthPort },
		"max-connections":   func(c *config.Config) { *cmd.Section(c).MaxConnections = *maxConns },
		"min-transfer-rate": func(c *config.Config) { *cmd.Section(c).MinTransferRate = *minRate },
		"listen-host":       func(c *config.Config) { c.ListenHost = *listenHost },
		"insecure-http":     func(c *config.Config) { c.TLS.Disabled = *insecure },
		"tls-cert-file":     func(c *config.Config) { c.TLS.CertFile = *tlsCert },
		"tls-key-file":      func(c *config.Config) { c.TLS.KeyFile = *tlsKey },
	}
	if cmd.Flags != nil {
		for name, apply := range cmd.Flags(fs) {
			overrides[name] = apply
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *printVersion {
		fmt.Fprintln(stdout, cmd.Name, version)
		return 0
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	// The libraries log too (controller-runtime's cache, client-go's
	// reflectors): to the same handler. Without a logger set,
	// controller-runtime drops their lines and prints a stack trace.
	ctrllog.SetLogger(logr.FromSlogHandler(log.Handler()))
	klog.SetSlogLogger(log)
	fail := func(msg string, err error) int {
		log.Error(msg, "error", err)
		return 1
	}
	if fs.NArg() > 0 {
		return fail("Parsing the command line", fmt.Errorf("unexpected arguments %q", fs.Args()))
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		return fail("Loading the configuration", err)
	}
	fs.Visit(func(f *flag.Flag) {
		if apply := overrides[f.Name]; apply != nil {
			apply(&cfg)
		}
	})
	if nofile, ok := fileLimit(); ok {
		capMaxConnections(cmd.Section(&cfg), nofile, cmd.FilesPerConnection, log)
	}
	service, err := cmd.New(cfg, version, log)
	if err != nil {
		return fail("Configuring the "+cmd.Name, err)
	}
	serving, err := servingFor(cfg, log)
	if err != nil {
		return fail("Loading the serving certificate", err)
	}
	section = cmd.Section(&cfg)
	log.Info("Starting", "service", cmd.Name, "version", version, "siteServer", cfg.SiteServer, "sites", cfg.Sites,
		"listenHost", cfg.ListenHost, "port", *section.Port, "healthPort", *section.HealthPort, "tls", serving.TLS != nil)
	if err := service.ListenAndServe(WithServing(ctx, serving)); err != nil {
		return fail("Running the "+cmd.Name, err)
	}
	return 0
}

// capMaxConnections lowers an explicit maxConnections of section that the
// file limit nofile cannot hold to what it can (capConnections), with a
// warning; 0, the service's default, is left to the service.
func capMaxConnections(section Section, nofile uint64, filesPerConn int, log *slog.Logger) {
	asked := *section.MaxConnections
	if asked <= 0 {
		return
	}
	if used := capConnections(asked, nofile, filesPerConn); used < asked {
		log.Warn("Capping maxConnections under the file limit", "asked", asked, "used", used,
			"fileLimit", nofile, "filesPerConnection", max(filesPerConn, 1), "setting", section.Name+".maxConnections")
		*section.MaxConnections = used
	}
}

// servingFor is where and how the service serves: HTTPS with the
// configured certificate files, reloaded when they change, unless TLS is
// disabled.
func servingFor(cfg config.Config, log *slog.Logger) (Serving, error) {
	serving := Serving{ListenHost: cfg.ListenHost}
	if cfg.TLS.Disabled {
		log.Warn("Serving plain HTTP: TLS is disabled (--insecure-http or tls.disabled), for development only")
		return serving, nil
	}
	certFile, keyFile := cfg.TLS.Files()
	files, err := certs.LoadFiles(certFile, keyFile)
	if err != nil {
		return Serving{}, fmt.Errorf("%w (serve plain HTTP in development with --insecure-http)", err)
	}
	files.OnReload = func(err error) {
		if err != nil {
			log.Warn("Keeping the serving certificate: the files changed but do not load", "error", err)
			return
		}
		log.Info("Serving a renewed certificate", "certFile", certFile)
	}
	serving.TLS = certs.ServerConfig(files.GetCertificate)
	return serving, nil
}
