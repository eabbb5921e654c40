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

// +kubebuilder:rbac:groups=siteops.io,resources=siteservers;sites,verbs=get
