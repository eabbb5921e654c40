// Command package-service runs the package service of a SiteServer: the
// site's content store, served to its agents by digest. It reads the
// configuration that the operator mounts in its pod, serves until SIGTERM
// or SIGINT and then shuts down gracefully (see host.Run for the flags;
// --storage-path overrides package.storagePath).
package main

import (
	"os"

	"github.com/siteops/site-operator/internal/siteservice/content"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// version is set at build time with -ldflags "-X main.version=..."; when
// empty, the version stamped by the Go toolchain is used.
var version string

func main() {
	os.Exit(host.Run(content.Command(version), os.Args[1:]))
}
