// Command task-service runs the task service of a SiteServer: agents of
// its sites check in there and receive work. It reads the configuration
// that the operator mounts in its pod, serves until SIGTERM or SIGINT and
// then shuts down gracefully (see host.Run for the flags).
package main

import (
	"os"

	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/task"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	os.Exit(host.Run(task.Command(version), os.Args[1:]))
}
