// Command manager runs the site-operator controllers.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/managermetrics"
	"github.com/siteops/site-operator/internal/siteservice/config"
)

func main() {
	var (
		metricsAddr, probeAddr string
		metricsSecure          bool
		metricsCertDir         string
		leaderElect            bool
		opts                   = controllers.DefaultOptions()
		locatorOpts            = locator.HTTPOptions{Addr: ":9443"}
		locatorOperatorCA      bool
		locatorService         string
		locatorHosts           string
		listenHost             string
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "Address the metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve /metrics over HTTPS, each scrape authenticated (TokenReview) and authorized (SubjectAccessReview: get on /metrics) by the API server; false serves plain HTTP to anyone.")
	flag.StringVar(&metricsCertDir, "metrics-cert-dir", "",
		"Directory holding the metrics endpoint's tls.crt and tls.key (reloaded when they change); empty: a self-signed certificate made at start.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.StringVar(&listenHost, "listen-host", "",
		"Host (an address of this machine) that the metrics, health-probe and locator servers listen on, replacing the host of their bind addresses; empty keeps them (every address for :port).")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader so that only one replica runs the controllers.")
	flag.IntVar(&opts.SubnetConcurrency, "subnet-concurrency", opts.SubnetConcurrency, "Subnets reconciled at once.")
	flag.IntVar(&opts.SiteConcurrency, "site-concurrency", opts.SiteConcurrency, "Sites reconciled at once.")
	flag.IntVar(&opts.SiteServerConcurrency, "siteserver-concurrency", opts.SiteServerConcurrency, "SiteServers reconciled at once.")
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		opts.Workloads.Namespace = ns
	}
	flag.StringVar(&opts.Workloads.Namespace, "workload-namespace", opts.Workloads.Namespace,
		"Namespace of the site services' Deployments, StatefulSets, Services and ConfigMaps (default: the manager's own namespace, from POD_NAMESPACE).")
	flag.StringVar(&opts.Workloads.Image, "service-image", opts.Workloads.Image,
		"Image holding the task-service and package-service binaries (the operator's own image).")
	flag.StringVar((*string)(&opts.Workloads.ImagePullPolicy), "service-image-pull-policy", string(opts.Workloads.ImagePullPolicy),
		"Pull policy of the site services' containers: Always, IfNotPresent or Never.")
	flag.BoolVar(&opts.Workloads.PlainHTTP, "site-services-insecure-http", false,
		"Run the site services (task and package) over plain HTTP and advertise http:// URLs: for development only.")
	flag.StringVar(&opts.Workloads.Agents.TokenNamespace, "bootstrap-token-namespace", config.DefaultTokenNamespace,
		"Namespace of the bootstrap token Secrets with which agents register; the site services read Secrets there only.")
	flag.Float64Var(&opts.Workloads.Agents.MaxCheckInRate, "agent-check-in-rate", config.DefaultMaxCheckInRate,
		"Check-ins per second that each task-service process allows all its agents together.")
	flag.IntVar(&opts.Workloads.Agents.MinIntervalSeconds, "agent-check-in-interval", config.DefaultMinIntervalSeconds,
		"Least seconds between two check-ins of one agent, however few agents a task service has (more agents lengthen it to keep --agent-check-in-rate).")
	flag.IntVar(&opts.Workloads.Agents.StatusIntervalSeconds, "computer-status-interval", config.DefaultStatusIntervalSeconds,
		"Least seconds between two status writes of one Computer by the task services (check-ins are not API writes).")
	flag.DurationVar(&opts.ComputerOfflineAfter, "computer-offline-after", opts.ComputerOfflineAfter,
		"How long a Computer may go without a recorded check-in before it turns Ready=False (AgentOffline).")
	flag.StringVar((*string)(&opts.Certificates.Mode), "certificates", string(opts.Certificates.Mode),
		"Who issues the site services' and the locator's serving certificates: operator (the operator's own CA) or cert-manager (a cert-manager Certificate per SiteServer; docs/tls.md).")
	flag.StringVar(&opts.Certificates.Issuer.Kind, "cert-manager-issuer-kind", opts.Certificates.Issuer.Kind,
		"With --certificates=cert-manager: the kind of the issuer, Issuer (in the workload namespace) or ClusterIssuer.")
	flag.StringVar(&opts.Certificates.Issuer.Name, "cert-manager-issuer-name", "",
		"With --certificates=cert-manager: the name of the issuer (required).")
	flag.StringVar(&opts.Certificates.Issuer.Group, "cert-manager-issuer-group", opts.Certificates.Issuer.Group,
		"With --certificates=cert-manager: the API group of the issuer (another for an external issuer).")
	flag.StringVar(&locatorOpts.Addr, "locator-bind-address", locatorOpts.Addr, "Address the agent locator (POST /v1/locate, HTTPS) binds to, on every replica; 0 disables it.")
	flag.StringVar(&locatorOpts.CertDir, "locator-cert-dir", "",
		"Directory holding the locator's serving certificate as tls.crt and tls.key (a mounted kubernetes.io/tls Secret), reloaded when they change.")
	flag.BoolVar(&locatorOpts.InsecureHTTP, "locator-insecure-http", false, "Serve the locator over plain HTTP: for development only.")
	flag.BoolVar(&locatorOperatorCA, "locator-operator-ca", false,
		"Serve the locator with the certificate the operator keeps, signed by its CA, in Secret "+controllers.DefaultLocatorSecret+" of the workload namespace (used when --locator-cert-dir is not set).")
	flag.StringVar(&locatorService, "locator-service-name", "site-operator-locator",
		"Name of the locator's Service in the workload namespace: its DNS names go into the operator-issued certificate.")
	flag.StringVar(&locatorHosts, "locator-hosts", "",
		"More names or addresses agents reach the locator by (comma-separated), for the operator-issued certificate.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	setupLog := ctrl.Log.WithName("setup")

	if err := opts.Certificates.Validate(); err != nil {
		setupLog.Error(err, "Checking the flags")
		os.Exit(1)
	}
	for _, addr := range []*string{&metricsAddr, &probeAddr, &locatorOpts.Addr} {
		var err error
		if *addr, err = onHost(listenHost, *addr); err != nil {
			setupLog.Error(err, "Checking the flags: --listen-host")
			os.Exit(1)
		}
	}

	scheme, err := controllers.NewScheme()
	if err != nil {
		setupLog.Error(err, "Building the scheme")
		os.Exit(1)
	}

	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   controllers.CacheOptionsFor(opts),
		Metrics:                 managermetrics.ServerOptions(managermetrics.Config{BindAddress: metricsAddr, Secure: metricsSecure, CertDir: metricsCertDir}),
		HealthProbeBindAddress:  probeAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "site-operator.siteops.io",
		LeaderElectionNamespace: os.Getenv("POD_NAMESPACE"),
	})
	if err != nil {
		if opts.Certificates.Mode == controllers.CertificatesCertManager {
			err = fmt.Errorf("%w (is cert-manager installed? --certificates=cert-manager needs its Certificate kind, %s)",
				err, controllers.CertificateGVK.GroupVersion())
		}
		setupLog.Error(err, "Creating the manager")
		os.Exit(1)
	}
	// Every replica feeds its resolver, leader or not; the locator serves
	// from it. Its size is exported per replica, so replicas that disagree
	// show it.
	resolver, err := controllers.Setup(mgr, opts)
	if err != nil {
		setupLog.Error(err, "Setting up the controllers")
		os.Exit(1)
	}
	if err := metrics.Registry.Register(controllers.TopologyCollector(resolver)); err != nil {
		setupLog.Error(err, "Registering the topology metrics")
		os.Exit(1)
	}
	// The status rollups (docs/monitoring.md) come from the leader only.
	if err := metrics.Registry.Register(controllers.StatusCollector(mgr.GetCache(), mgr.Elected())); err != nil {
		setupLog.Error(err, "Registering the status metrics")
		os.Exit(1)
	}
	// The locator answers agents from every replica, from the resolver and
	// the SiteServers its informers hold: no API request per locate.
	servers := locator.NewServerSet()
	if err := controllers.SetupServerSet(mgr, servers); err != nil {
		setupLog.Error(err, "Feeding the locator")
		os.Exit(1)
	}
	locatorMetrics, err := locator.NewMetrics(metrics.Registry)
	if err != nil {
		setupLog.Error(err, "Registering the locator metrics")
		os.Exit(1)
	}
	switch {
	case locatorOpts.Addr == "0":
		setupLog.Info("The locator is disabled (--locator-bind-address=0)")
	case locatorOpts.CertDir == "" && !locatorOpts.InsecureHTTP && !locatorOperatorCA:
		// Agents get HTTPS or nothing: without a certificate the locator
		// stays off rather than falling back to plain HTTP.
		setupLog.Info("The locator is off: give it a certificate with --locator-operator-ca or --locator-cert-dir (or --locator-insecure-http for development)")
	default:
		if locatorOpts.CertDir == "" && !locatorOpts.InsecureHTTP {
			// The locator's Service lives beside the manager (the chart's
			// release namespace), which may differ from the workload one.
			serviceNamespace := opts.Workloads.Namespace
			if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
				serviceNamespace = ns
			}
			hosts := controllers.ServiceDNSNames(locatorService, serviceNamespace)
			for _, h := range strings.Split(locatorHosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hosts = append(hosts, h)
				}
			}
			cert, err := controllers.AddLocatorCertificate(mgr, controllers.LocatorCertificateOptions{Namespace: opts.Workloads.Namespace, Hosts: hosts,
				Certificates: opts.Certificates})
			if err != nil {
				setupLog.Error(err, "Setting up the locator's certificate")
				os.Exit(1)
			}
			locatorOpts.TLSConfig = certs.ServerConfig(cert.GetCertificate)
		}
		locatorServer, err := locator.NewHTTPServer(locator.New(resolver, servers, locator.Options{Metrics: locatorMetrics}).Handler(), locatorOpts)
		if err == nil {
			err = mgr.Add(locatorServer)
		}
		if err == nil {
			err = mgr.AddReadyzCheck("locator", locatorServer.ReadyCheck)
		}
		if err != nil {
			setupLog.Error(err, "Setting up the locator")
			os.Exit(1)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Adding the health check")
		os.Exit(1)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		setupLog.Error(err, "Adding the readiness check")
		os.Exit(1)
	}
	setupLog.Info("Starting the manager")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "Running the manager")
		os.Exit(1)
	}
}
