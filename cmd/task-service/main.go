// Command task-service runs the task service of a SiteServer: agents of
// its sites check in there and receive work. It reads the configuration
// that the operator mounts in its pod, serves until SIGTERM or SIGINT and
// then shuts down gracefully.
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
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/task"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	var (
		configPath   = flag.String("config", "/etc/site-operator/"+config.FileName, "Path of the service configuration file.")
		port         = flag.Int("port", 0, "Port of the agent API; overrides task.port of the configuration file.")
		healthPort   = flag.Int("health-port", 0, "Port of /healthz and /readyz; overrides task.healthPort of the configuration file.")
		printVersion = flag.Bool("version", false, "Print the version and exit.")
	)
	flag.Parse()
	if version == "" {
		version = host.BuildVersion()
	}
	if *printVersion {
		fmt.Println("task-service", version)
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
			cfg.Task.Port = *port
		case "health-port":
			cfg.Task.HealthPort = *healthPort
		}
	})
	server, err := task.New(cfg, task.Options{Version: version, Logger: log})
	if err != nil {
		exit(log, "Configuring the task service", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	log.Info("Starting the task service", "version", version, "siteServer", cfg.SiteServer, "sites", cfg.Sites,
		"port", cfg.Task.Port, "healthPort", cfg.Task.HealthPort)
	err = server.ListenAndServe(ctx)
	stop()
	if err != nil {
		exit(log, "Running the task service", err)
	}
}

// exit logs err and exits with status 1.
func exit(log *slog.Logger, msg string, err error) {
	log.Error(msg, "error", err)
	os.Exit(1)
}
