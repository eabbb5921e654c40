package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// usage is the help text: the commands, then the flags.
const usage = `kubectl siteops shows what site-operator decides, and why.

Usage:
  kubectl siteops locate <address>   the site, subnet, serving rule and
                                     servers the locator gives an agent
  kubectl siteops site <name>        a site's subnets, servers, computers
                                     and the packages ready there
  kubectl siteops task <name>        a DeploymentTask's progress per site
                                     and its failures
  kubectl siteops computer <name>    a Computer's site, server, last
                                     check-in and last task

Flags:
  -o, --output text|json|yaml        text (default) fits 80 columns; json
                                     and yaml print the report struct
                                     documented in docs/plugin.md
  -n, --namespace <ns>               the namespace of task and computer
                                     (default: the context's); for site,
                                     counts only that namespace's
                                     Computers and Packages
  --kubeconfig, --context, --cluster, --user, --server, --token, --as,
  --request-timeout ...              as for kubectl
`

// Options are what the commands need besides their argument.
type Options struct {
	// Format is the output format.
	Format Format
	// Namespace is the namespace of a task or computer.
	Namespace string
	// SiteNamespace limits the site command's Computers and Packages to
	// one namespace; "" reads every namespace.
	SiteNamespace string
	// Now is the time ages are counted from.
	Now time.Time
}

// errNoKubeconfig says that no cluster was configured at all.
var errNoKubeconfig = errors.New("no kubeconfig found: use --kubeconfig, set KUBECONFIG or write ~/.kube/config")

// errUsage marks an error in the command line (exit code 2).
var errUsage = errors.New("usage")

// usageError is a command-line mistake, reported with the usage hint.
func usageError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errUsage}, args...)...)
}

// Main runs the plugin with args (without the program name), writing the
// report to stdout and errors to stderr, and returns the exit code: 0, 1
// when a command failed, 2 for a mistake in the command line.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	// controller-runtime would warn that no logger is set; the plugin has
	// nothing to log beyond its errors.
	ctrllog.SetLogger(logr.Discard())

	flags := pflag.NewFlagSet("kubectl-siteops", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	var output string
	var help bool
	flags.StringVarP(&output, "output", "o", "", "output format: text, json or yaml")
	flags.BoolVarP(&help, "help", "h", false, "show this help")
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	flags.StringVar(&loading.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file")
	overrides := &clientcmd.ConfigOverrides{}
	clientcmd.BindOverrideFlags(overrides, flags, clientcmd.RecommendedConfigOverrideFlags(""))

	if err := flags.Parse(args); err != nil {
		fmt.Fprintf(stderr, "Error: %v\nSee 'kubectl siteops --help'.\n", err)
		return 2
	}
	if help {
		fmt.Fprint(stdout, usage)
		return 0
	}
	if flags.NArg() == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	format, err := ParseFormat(output)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return 2
	}
	command, cmdArgs := flags.Arg(0), flags.Args()[1:]
	if err := checkArgs(command, cmdArgs); err != nil {
		return report(stderr, err)
	}

	config := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, overrides)
	namespace, _, err := config.Namespace()
	if clientcmd.IsEmptyConfig(err) {
		return report(stderr, errNoKubeconfig)
	}
	if err != nil {
		return report(stderr, fmt.Errorf("reading the namespace from the kubeconfig: %w", err))
	}
	restConfig, err := config.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		return report(stderr, errNoKubeconfig)
	}
	if err != nil {
		return report(stderr, fmt.Errorf("loading the kubeconfig: %w", err))
	}
	restConfig = rest.CopyConfig(restConfig)
	restConfig.UserAgent = "kubectl-siteops"
	scheme, err := NewScheme()
	if err != nil {
		return report(stderr, err)
	}
	c, err := client.New(restConfig, client.Options{Scheme: scheme})
	if err != nil {
		return report(stderr, fmt.Errorf("connecting to the cluster: %w", err))
	}
	opts := Options{Format: format, Namespace: namespace, SiteNamespace: overrides.Context.Namespace, Now: time.Now()}
	return report(stderr, Run(ctx, Client{Reader: c}, command, cmdArgs, opts, stdout))
}

// report prints err, if any, and returns the exit code for it.
func report(stderr io.Writer, err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "Error: %s\nSee 'kubectl siteops --help'.\n", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	return 1
}

// commands are the subcommands and what each one takes.
var commands = map[string]string{
	"locate":   "<address>",
	"site":     "<name>",
	"task":     "<name>",
	"computer": "<name>",
}

// checkArgs checks the command line before anything is read from the
// cluster: a known command with exactly one argument, and for locate an
// IP address.
func checkArgs(command string, args []string) error {
	arg, ok := commands[command]
	if !ok {
		return usageError("unknown command %q: use locate, site, task or computer", command)
	}
	if len(args) != 1 {
		return usageError("%s takes one argument: kubectl siteops %s %s", command, command, arg)
	}
	if command == "locate" {
		if _, err := netip.ParseAddr(args[0]); err != nil {
			return usageError("%q is not an IPv4 or IPv6 address", args[0])
		}
	}
	return nil
}

// Run runs command with its arguments against c and prints its report to
// stdout.
func Run(ctx context.Context, c Client, command string, args []string, opts Options, stdout io.Writer) error {
	if err := checkArgs(command, args); err != nil {
		return err
	}
	var r Report
	switch command {
	case "locate":
		addr, _ := netip.ParseAddr(args[0])
		t, err := c.Topology(ctx)
		if err != nil {
			return err
		}
		r = BuildLocate(t, addr)
	case "site":
		in, err := c.Site(ctx, args[0], opts.SiteNamespace)
		if err != nil {
			return err
		}
		r = BuildSite(in)
	case "task":
		task, err := c.Task(ctx, opts.Namespace, args[0])
		if err != nil {
			return err
		}
		r = BuildTask(task)
	case "computer":
		comp, err := c.Computer(ctx, opts.Namespace, args[0])
		if err != nil {
			return err
		}
		r = BuildComputer(comp)
	}
	return Print(stdout, opts.Format, r, opts.Now)
}
