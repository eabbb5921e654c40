// Command package-service runs the package service of a SiteServer: the
// site's content store, served to its agents by digest. It reads the
// configuration that the operator mounts in its pod, serves until SIGTERM
// or SIGINT and then shuts down gracefully.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/content"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	var (
		configPath   = flag.String("config", "/etc/site-operator/"+config.FileName, "Path of the service configuration file.")
		port         = flag.Int("port", 0, "Port of the content API; overrides package.port of the configuration file.")
		healthPort   = flag.Int("health-port", 0, "Port of /healthz and /readyz; overrides package.healthPort of the configuration file.")
		storagePath  = flag.String("storage-path", "", "Directory of the content store; overrides package.storagePath of the configuration file.")
		printVersion = flag.Bool("version", false, "Print the version and exit.")
	)
	flag.Parse()
	if version == "" {
		version = host.BuildVersion()
	}
	if *printVersion {
		fmt.Println("package-service", version)
		return
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if flag.NArg() > 0 {
		exit(log, "Parsing the command line", fmt.Errorf("unexpected arguments %q", flag.Args()))
	}

	cfg, err := config.Load(*configPath)
	if err != nil {
		exit(log, "Loading the configuration", err)
	}
	flag.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "port":
			cfg.Package.Port = *port
		case "health-port":
			cfg.Package.HealthPort = *healthPort
		case "storage-path":
			cfg.Package.StoragePath = *storagePath
		}
	})
	server, err := content.New(cfg, content.Options{Version: version, Logger: log})
	if err != nil {
		exit(log, "Configuring the package service", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	log.Info("Starting the package service", "version", version, "siteServer", cfg.SiteServer, "sites", cfg.Sites,
		"port", cfg.Package.Port, "healthPort", cfg.Package.HealthPort, "storagePath", cfg.Package.StoragePath)
	err = server.ListenAndServe(ctx)
	stop()
	if err != nil {
		exit(log, "Running the package service", err)
	}
}

// exit logs err and exits with status 1.
func exit(log *slog.Logger, msg string, err error) {
	log.Error(msg, "error", err)
	os.Exit(1)
}
