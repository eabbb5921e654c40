// Package plugin is the kubectl plugin kubectl-siteops (cmd/kubectl-siteops):
// it shows what site-operator decides, and why.
//
//   - locate <address>: the answer the locator gives an agent with that
//     address — its site, the winning subnet and the subnets it overrode or
//     that did not compete, the serving rule, the servers and their
//     endpoints in the agent's order ([BuildLocate], [LocateReport]).
//   - site <name>: a tree of the site's subnets, servers (ready or not),
//     computers (how many, how many online) and the packages ready there
//     ([BuildSite], [SiteReport]).
//   - task <name>: a DeploymentTask's phase, progress, per-site counts with
//     contentReady, and its failures ([BuildTask], [TaskReport]).
//   - computer <name>: a Computer's site, server, last check-in and last
//     task ([BuildComputer], [ComputerReport]).
//
// The package has two layers. The Build functions are pure: they take API
// objects and return a report struct, applying the rules through the same
// code as the operator — the topology package's resolver (topology.Build,
// Resolver.Explain) and serving rules, and the locator's own Locate over a
// locator.ServerSet fed by topologyfeed, exactly as the manager feeds it —
// so that the plugin cannot disagree with the locator. [Client] only lists
// and gets objects. [Print] writes a report as text that fits [Width]
// columns, or as JSON or YAML of the report struct: those structs, their
// field names and their meaning are the stable output for scripts
// (docs/plugin.md).
//
// The plugin only reads: get and list on the siteops.io kinds.
package plugin
