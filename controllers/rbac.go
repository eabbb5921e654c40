package controllers

// The manager's RBAC, in one place. controller-gen turns these markers into
// config/rbac/role.yaml (`make manifests`): a ClusterRole for what is
// cluster-scoped and a Role for the workload namespace. The Helm chart
// carries a copy that hack/check-chart-rbac.sh keeps equal.
//
// Least privilege: cluster-wide, the manager only reconciles the siteops.io
// kinds (of Computers, only the status: never their spec, never creating or
// deleting one) and reads nodes and storage classes (SiteServer prerequisites). What
// it writes, the site services' workloads, it writes only in its workload
// namespace (--workload-namespace, by default its own), the one namespace its
// cache watches (CacheOptions). `namespace=system` is a placeholder that
// kustomize (config/default) and the chart (templates/role.yaml) replace
// with that namespace. It reads and writes Secrets only there: the CA and
// the serving certificates it keeps (controllers/siteserver_certificates.go).

// Cluster-wide: the ClusterRole.
// +kubebuilder:rbac:groups=siteops.io,resources=sites;siteservers;subnets,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=sites/status;siteservers/status;subnets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=sites/finalizers;siteservers/finalizers,verbs=update
// Computers in every namespace: their Ready condition, and the Sites' counts.
// The task services create them and write the rest of their status.
// +kubebuilder:rbac:groups=siteops.io,resources=computers,verbs=get;list;watch
// The directory import writes the Sites and Subnets of Active Directory
// (only those it created or adopted, labelled siteops.io/directory-import).
// +kubebuilder:rbac:groups=siteops.io,resources=sites;subnets,verbs=create;update;patch;delete
// +kubebuilder:rbac:groups=siteops.io,resources=directoryimports,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=directoryimports/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=computers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=get;list;watch
// The metrics endpoint (--metrics-secure, internal/managermetrics) checks each
// scrape's token and its right to get /metrics with the API server.
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// The workload namespace: the Role.
// +kubebuilder:rbac:groups="",namespace=system,resources=services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,namespace=system,resources=deployments;statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,namespace=system,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=system,resources=pods,verbs=get;list;watch
// +kubebuilder:rbac:groups="",namespace=system,resources=secrets,verbs=get;list;watch;create;update;patch;delete

// cert-manager mode only (--certificates=cert-manager,
// siteserver_certificates_certmanager.go): the Certificates of the site
// services and the locator, in the workload namespace. They sit in the same
// Role as the rest, granted in operator mode too: controller-gen writes one
// Role per namespace and roleName per run, so a Role of their own (granted
// only when the chart enables cert-manager) would take a package of its own
// outside ./controllers/..., another run in `make manifests` and its copy
// checked by hack/check-chart-rbac.sh.
// +kubebuilder:rbac:groups=cert-manager.io,namespace=system,resources=certificates,verbs=get;list;watch;create;update;patch;delete
