// Command task-service runs the task service of a SiteServer: agents of
// its sites check in there and receive work. It reads the configuration
// that the operator mounts in its pod, serves until SIGTERM or SIGINT and
// then shuts down gracefully (see host.Run for the flags).
package main

import (
	"os"
	"runtime/debug"

	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/task"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	// Most of the service's memory lives long (held check-ins, the cache of
	// Computers): a garbage-collection target of 25% instead of Go's 100%
	// trades a little CPU for much less headroom per agent
	// (docs/benchmarks.md). GOGC set in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	os.Exit(host.Run(task.Command(version), os.Args[1:]))
}
