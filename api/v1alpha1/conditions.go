package v1alpha1

// Condition types shared by every kind. Ready has positive polarity so that
// kstatus, Argo CD and Flux health checks read it unchanged.
const (
	// ConditionReady is True when the object does what its spec asks.
	ConditionReady = "Ready"
	// ConditionPrerequisitesMet is True when a SiteServer's services can
	// run: its sites exist, a node matches its selector and its storage
	// class exists. While False, the services it blocks are not created.
	ConditionPrerequisitesMet = "PrerequisitesMet"
	// ConditionTaskServiceReady is True when a SiteServer's task service is
	// available (or disabled).
	ConditionTaskServiceReady = "TaskServiceReady"
	// ConditionPackageServiceReady is True when a SiteServer's package
	// service is available (or disabled).
	ConditionPackageServiceReady = "PackageServiceReady"
)

// Reasons of a Subnet's Ready condition.
const (
	// ReasonEffective: the subnet takes part in address resolution and maps
	// its addresses to status.effectiveSite (named or inherited).
	ReasonEffective = "Effective"
	// ReasonOverriddenByImport: an ActiveDirectory subnet with the same CIDR
	// wins over this Manual one; the message names it.
	ReasonOverriddenByImport = "OverriddenByImport"
	// ReasonDuplicate: an older subnet with the same CIDR and source but
	// another site wins; the message names it.
	ReasonDuplicate = "Duplicate"
	// ReasonSiteNotFound: spec.site names a Site that does not exist. The
	// subnet becomes effective by itself when the Site is created.
	ReasonSiteNotFound = "SiteNotFound"
	// ReasonNoSite: the subnet names no site and no enclosing effective
	// subnet has one, so its addresses belong to no site.
	ReasonNoSite = "NoSite"
	// ReasonInvalidCIDR: spec.cidr cannot be used. Admission rejects such
	// values, so this shows only for objects stored before the rules existed.
	ReasonInvalidCIDR = "InvalidCIDR"
)

// Reasons of a Site's Ready condition.
const (
	// ReasonNoSiteServer: no SiteServer serves the site yet, so agents there
	// are served by the unassigned SiteServers.
	ReasonNoSiteServer = "NoSiteServer"
	// ReasonServicesNotReady: SiteServers serve the site but none of their
	// task services is ready.
	ReasonServicesNotReady = "ServicesNotReady"
	// ReasonSiteReady: at least one task service of the site's own is ready.
	ReasonSiteReady = "TaskServiceReady"
)

// Reasons of a SiteServer's conditions.
const (
	// ReasonNoMatchingNode: no node matches spec.nodeSelector.
	ReasonNoMatchingNode = "NoMatchingNode"
	// ReasonStorageClassNotFound: the package service's StorageClass (or a
	// default one, when none is named) does not exist.
	ReasonStorageClassNotFound = "StorageClassNotFound"
	// ReasonPrerequisitesMet: every prerequisite holds.
	ReasonPrerequisitesMet = "PrerequisitesMet"
	// ReasonAvailable: the service's pods are available.
	ReasonAvailable = "Available"
	// ReasonProgressing: the service's workload exists but not every pod is
	// available yet.
	ReasonProgressing = "Progressing"
	// ReasonDisabled: the service is disabled in the spec.
	ReasonDisabled = "Disabled"
	// ReasonPrerequisitesNotMet: the service is not created because a
	// prerequisite is missing; PrerequisitesMet says which.
	ReasonPrerequisitesNotMet = "PrerequisitesNotMet"
	// ReasonStorageChangePending: spec.services.package.storage differs from
	// the running StatefulSet's volume claims, which Kubernetes does not let
	// change; the message says how to apply it.
	ReasonStorageChangePending = "StorageChangePending"
	// ReasonServicesReady: every enabled service is ready.
	ReasonServicesReady = "ServicesReady"
)
