// Package managertest runs the site-operator manager for tests and
// benchmarks and observes what it does.
//
// Start runs the manager in process, built as cmd/manager builds it
// (controllers.Setup on a manager with controllers.CacheOptions), with
// every request it sends counted by a RequestCounter: the envtest suite in
// controllers/ and the topology benchmark prove with it that a steady state
// writes nothing. ReconcileTotals reads controller_runtime_reconcile_total
// from the managers of this process; Scrape and SumCounter read the same
// counters from a manager that runs as a process (the simulated cluster's).
//
// It is a package of its own, not part of internal/simcluster, because it
// links the controllers: the simulated cluster runs the manager binary and
// stays free of them.
package managertest
