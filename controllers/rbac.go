package controllers

// The manager's RBAC, in one place. controller-gen turns these markers into
// config/rbac/role.yaml (`make manifests`); the Helm chart carries a copy
// that hack/check-chart-rbac.sh keeps equal.

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=deployments;statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=siteops.io,resources=sites,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=sites/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=siteservers,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=siteservers/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=siteops.io,resources=subnets,verbs=get;list;watch
// +kubebuilder:rbac:groups=siteops.io,resources=subnets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=storageclasses,verbs=get;list;watch
