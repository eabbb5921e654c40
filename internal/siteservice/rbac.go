package siteservice

// The site services' RBAC, in one place. The task-service and
// package-service pods run as the ServiceAccount site-operator-site-service
// of the workload namespace, whose token is projected into them only
// (controllers/siteserver_builders.go). controller-gen turns these markers
// into config/rbac/site-service/role.yaml, a ClusterRole of its own
// (`make manifests`); the Helm chart carries a copy that
// hack/check-chart-rbac.sh keeps equal. The manager never creates RBAC.
//
// Least privilege: the services start by reading the SiteServer they belong
// to and the Sites it serves; each feature that needs more adds its marker
// here, and test/integration/rbac proves it.

//
// The task service reads the topology (to answer only the agents the
// serving rules give it) and keeps the Computers: it creates them when
// agents register, updates their identity, and writes the status of their
// check-ins. The bootstrap token Secrets are granted apart, in the token
// namespace only (config/rbac/site-service/tokens): never the Secrets of
// the workload namespace, which hold the CA's key.
//
// +kubebuilder:rbac:groups=siteops.io,resources=siteservers;sites;subnets,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=computers,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=siteops.io,resources=computers/status,verbs=get;patch
//
// The task service hands out DeploymentTask work: it reads the tasks, and
// keeps their dispatch state in DispatchShards (claims and results),
// created on first use and owned by the task. It never writes a task.
//
// +kubebuilder:rbac:groups=siteops.io,resources=deploymenttasks,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=dispatchshards,verbs=get;list;watch;create;patch
//
// The package service replicates Packages: it reads them (the Package
// controller's placement in status.sites, the other servers' copies in
// status.servers) and applies its own entry of status.servers. It never
// writes a Package's spec.
//
// +kubebuilder:rbac:groups=siteops.io,resources=packages,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=packages/status,verbs=get;patch
//
// The package service takes capture uploads: it authenticates the agent
// by its Computer, checks the captureImage DeploymentTask (both read
// above, with the topology for the serving rules) and creates the Package
// the upload becomes. It never updates nor deletes a Package: one that
// exists with other content is left as it is.
//
// +kubebuilder:rbac:groups=siteops.io,resources=packages,verbs=create
