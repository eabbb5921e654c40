// Command directory is the load harness of the DirectoryImport. It starts a
// real Samba AD domain controller (internal/testing/samba) and fills it
// with sites and subnets, starts a real kube-apiserver and etcd
// (controller-runtime's envtest) and the site-operator manager in process
// (internal/testing/managertest, default controller options, the real
// directory.Read), and measures:
//
//  1. the baseline: the same number of Sites and Subnets created directly
//     by one client with as many workers as the import writes with
//     (importWorkers in controllers/directoryimport_controller.go), until
//     every one of those Subnets has Ready set (True or False) for its
//     generation: what the API server and the Subnet controller take for
//     these objects without LDAP. They use other names and CIDRs (Sites
//     base-NNNN, Subnets base-11-…, in 11.0.0.0/8) on the same API server,
//     before the import;
//  2. the import: from the DirectoryImport's create until every Subnet it
//     labels has Ready set for its generation and its own Ready is True;
//     the ratio import / baseline is the figure the target bounds (1.5);
//  3. a second sync with nothing changed (spec.pageSize bumped so that it
//     syncs again): the manager's writes to Sites and Subnets during it,
//     which must be 0.
//
// From the repository root:
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/directory [flags]
//
// It prints a Markdown table (see docs/benchmarks.md) and exits non-zero
// only when the run is invalid: an error, a count that does not match, or
// a write during the second sync. The timing target is reported, not
// asserted.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
)

// options are the command-line flags.
type options struct {
	sites, subnets, workers int
	quick                   bool
	crds                    string
	timeout, settle         time.Duration
}

func parseFlags() options {
	var opts options
	flag.IntVar(&opts.sites, "sites", 500, "AD sites to import (besides Samba's Default-First-Site-Name).")
	flag.IntVar(&opts.subnets, "subnets", 5000, "AD subnets to import, distinct /24s spread round-robin over the sites.")
	flag.IntVar(&opts.workers, "workers", 16,
		"Concurrent writers of the baseline: the import's own (importWorkers in controllers/directoryimport_controller.go).")
	flag.BoolVar(&opts.quick, "quick", false, "A smoke run: 20 sites and 200 subnets, unless -sites or -subnets say otherwise.")
	flag.StringVar(&opts.crds, "crds", "config/crd/bases", "Directory of the CRDs to install.")
	flag.DurationVar(&opts.timeout, "timeout", 10*time.Minute, "How long each wait may take.")
	flag.DurationVar(&opts.settle, "settle", 3*time.Second,
		"How long to keep counting the manager's writes after the second sync finished.")
	flag.Parse()
	if opts.quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["sites"] {
			opts.sites = 20
		}
		if !set["subnets"] {
			opts.subnets = 200
		}
	}
	return opts
}

func (o options) validate() error {
	switch {
	case o.sites < 1, o.subnets < 1, o.workers < 1:
		return fmt.Errorf("-sites, -subnets and -workers must be at least 1")
	case o.subnets > 65536:
		return fmt.Errorf("-subnets must be at most 65,536 (distinct /24s of one /8)")
	case o.sites > 9999:
		return fmt.Errorf("-sites must be at most 9,999")
	}
	return nil
}

func main() {
	log.SetFlags(log.Ltime | log.Lmicroseconds)
	opts := parseFlags()
	if err := opts.validate(); err != nil {
		log.Fatal(err)
	}
	// Errors only: the manager's informational lines would drown the
	// progress lines.
	logger := funcr.New(func(prefix, args string) { log.Println(prefix, args) }, funcr.Options{Verbosity: -1})
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	res, err := run(ctx, opts)
	stop()
	if res != nil && res.baseline.tReady > 0 {
		res.print(os.Stdout)
	}
	if err != nil {
		log.Printf("FAIL: %v", err)
		os.Exit(1)
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
