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

	// ConditionReconciling (kstatus, abnormal-true polarity) is True while
	// the controller is still converging on the current spec: workloads
	// rolling out, a status not yet computed for this generation. It is
	// removed once the object has converged. kubectl wait, Helm 4's --wait,
	// Argo CD and Flux read it with status.observedGeneration.
	ConditionReconciling = "Reconciling"
	// ConditionStalled (kstatus, abnormal-true polarity) is True when the
	// controller cannot make progress until something changes: a missing
	// prerequisite, a spec the API server refuses to apply, an object in the
	// way. The reason and message say what. It is removed once progress is
	// possible again.
	ConditionStalled = "Stalled"
)

// Reasons of the kstatus conditions shared by every kind.
const (
	// ReasonApplyFailed: the API server refused an object the operator
	// applies or deletes; the message names the object and the API
	// server's answer. On a Site: Ready=False and Stalled=True when the API
	// server refused the request (invalid, forbidden), Reconciling=True while
	// a transient failure (conflict, timeout, unavailable) is retried.
	ReasonApplyFailed = "ApplyFailed"
	// ReasonReadFailed: reading what a status is made of failed (on a
	// SiteServer: its Sites, nodes, StorageClass, workloads, Services or
	// pods); the message names what and the error. Ready=False and
	// Reconciling=True while the read is retried; the other conditions and
	// observedGeneration keep their last values.
	ReasonReadFailed = "ReadFailed"
	// ReasonNotOwned: an object the operator would create exists already
	// and is controlled by something else; the operator leaves it alone. On
	// a Site: Ready=False and Stalled=True until the object is removed.
	ReasonNotOwned = "NotOwned"
)

// Reasons of a Subnet's Ready condition.
const (
	// ReasonEffective: the subnet takes part in address resolution and maps
	// its addresses to status.effectiveSite (named or inherited).
	ReasonEffective = "Effective"
	// ReasonOverriddenByImport: an ActiveDirectory subnet with the same CIDR
	// wins over this Manual one; the message names it. Converged (neither
	// Reconciling nor Stalled): the import owns the CIDR by design, and the
	// Manual subnet takes over by itself if the imported one goes. kstatus
	// reads a converged Ready=False as InProgress.
	ReasonOverriddenByImport = "OverriddenByImport"
	// ReasonDuplicate: an older subnet with the same CIDR and source but
	// another site wins; the message names it. Also Stalled with this
	// reason: two specs disagree about the CIDR's site and this one's is not
	// what happens until a user removes or changes one of them.
	ReasonDuplicate = "Duplicate"
	// ReasonSiteNotFound: spec.site names a Site that does not exist. The
	// subnet becomes effective by itself when the Site is created. Also
	// Stalled with this reason: a user must create the Site or fix spec.site.
	ReasonSiteNotFound = "SiteNotFound"
	// ReasonNoSite: the subnet names no site and no enclosing effective
	// subnet has one, so its addresses belong to no site. Converged: that is
	// what the spec and rule 5 ask for, and the subnet inherits by itself
	// once an enclosing subnet with a site appears (kstatus: InProgress).
	ReasonNoSite = "NoSite"
	// ReasonInvalidCIDR: spec.cidr cannot be used. Admission rejects such
	// values, so this shows only for objects stored before the rules existed.
	// Also Stalled with this reason: a user must fix spec.cidr.
	ReasonInvalidCIDR = "InvalidCIDR"
)

// Reasons of a Site's Ready condition. A Site whose Services could not be
// applied reports ApplyFailed or NotOwned instead (see above).
const (
	// ReasonNoSiteServer: no SiteServer serves the site yet, so agents there
	// are served by the unassigned SiteServers. Converged (neither
	// Reconciling nor Stalled): that is the designed fallback, not a fault.
	// kstatus reads a converged Ready=False as InProgress.
	ReasonNoSiteServer = "NoSiteServer"
	// ReasonServicesNotReady: SiteServers serve the site but none of their
	// task services is ready. Also Reconciling with this reason: the servers
	// are rolling out (a SiteServer that cannot roll out says why in its own
	// Stalled condition).
	ReasonServicesNotReady = "ServicesNotReady"
	// ReasonSiteReady: at least one task service of the site's own is
	// available (SiteServer.ServesTasks). Converged.
	ReasonSiteReady = "TaskServiceAvailable"
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
	// ReasonDegraded: the SiteServer's services run and are available, but
	// a prerequisite went missing after they were created (a Site in
	// spec.sites, a matching node, the storage class). Running services are
	// never torn down for that; PrerequisitesMet says what is missing.
	ReasonDegraded = "Degraded"
)

// Reasons of a Computer's Ready condition.
const (
	// ReasonAgentOnline: the agent checks in.
	ReasonAgentOnline = "AgentOnline"
	// ReasonAgentOffline: the agent has not checked in for longer than the
	// operator's offline timeout (--computer-offline-after).
	ReasonAgentOffline = "AgentOffline"
	// ReasonNotRegistered: no agent has registered as this computer yet
	// (an administrator created it ahead of time).
	ReasonNotRegistered = "NotRegistered"
	// ReasonCredentialRevoked: spec.credentialsNotBefore revoked the
	// agent's credential; the agent must register again.
	ReasonCredentialRevoked = "CredentialRevoked"
)

// Reasons of a DirectoryImport's Ready condition.
const (
	// ReasonSynced: the last import read the whole directory and applied it.
	ReasonSynced = "Synced"
	// ReasonDirectoryUnreachable: the directory could not be reached or the
	// TLS handshake failed; nothing imported was changed.
	ReasonDirectoryUnreachable = "DirectoryUnreachable"
	// ReasonBindFailed: the bind Secret is missing or malformed, or the
	// directory refused its credentials.
	ReasonBindFailed = "BindFailed"
	// ReasonSearchFailed: a search failed part-way; nothing imported was
	// changed.
	ReasonSearchFailed = "SearchFailed"
	// ReasonDeletionsHeld: the directory no longer lists more of the
	// imported objects than spec.maxDeletePercent allows deleting at once;
	// the rest of the import was applied, the deletions were not.
	ReasonDeletionsHeld = "DeletionsHeld"
	// ReasonSuspended: spec.suspend is true.
	ReasonSuspended = "Suspended"
)

// Reasons of a Package's conditions.
const (
	// ReasonReplicated: every wanted site holds the content (every running
	// package server that serves it). Converged.
	ReasonReplicated = "Replicated"
	// ReasonNotNeeded: an OnDemand package that no task needs yet, so no
	// site wants it. Ready and converged.
	ReasonNotNeeded = "NotNeeded"
	// ReasonReplicating: a wanted site does not hold the content yet (a
	// transfer under way, or waiting for a window or a server). Also
	// Reconciling with this reason.
	ReasonReplicating = "Replicating"
	// ReasonNoPackageServer: no running package server serves a wanted
	// site; the content goes there once one runs. Also Reconciling.
	ReasonNoPackageServer = "NoPackageServer"
	// ReasonReplicationFailed: a server's transfer failed (a digest that
	// does not match, a full disk, an unreachable source); the message
	// names the server and why. The package service tries again later.
	// Also Stalled with this reason: it may need a user.
	ReasonReplicationFailed = "ReplicationFailed"
)

// The SiteServer condition that reports its serving certificate in
// cert-manager mode, and its reasons. (In operator mode the certificate is
// issued within the reconcile; a failure shows in Ready as ApplyFailed.)
const (
	// ConditionCertificateReady is True when the SiteServer's Certificate
	// is Ready: its Secret holds a certificate for the current names.
	ConditionCertificateReady = "CertificateReady"
	// ReasonCertManagerIssuing: cert-manager has not (yet) issued the
	// Certificate for its current spec: new, or its names changed.
	ReasonCertManagerIssuing = "CertManagerIssuing"
	// ReasonCertManagerReady: the Certificate is Ready.
	ReasonCertManagerReady = "CertManagerReady"
	// ReasonCertManagerFailed: cert-manager's last issuance failed (an
	// issuer missing or not ready, a request refused); cert-manager retries
	// with back-off. The message is cert-manager's.
	ReasonCertManagerFailed = "CertManagerFailed"
)
