// Command kubectl-siteops is the kubectl plugin of site-operator: on the
// PATH, `kubectl siteops locate|site|task|computer ...` runs it. It shows
// which site, subnet, rule and servers an agent address gets (by the
// locator's own rules), a site's tree, a task's progress per site and a
// computer's state; see internal/plugin and docs/plugin.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/siteops/site-operator/internal/plugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := plugin.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
