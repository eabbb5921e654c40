package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ComputerSpec identifies a managed computer. The task service fills it
// when an agent registers; an administrator may create a Computer ahead of
// time with its MAC addresses or hardware ID, and the agent that registers
// with one of them takes it over.
type ComputerSpec struct {
	// hostname is the computer's host name, as its agent reports it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Hostname string `json:"hostname,omitempty"`

	// macAddresses are the computer's network cards' MAC addresses, six
	// lower-case hexadecimal pairs separated by colons
	// ("00:1a:2b:3c:4d:5e"). A registering agent with one of them is this
	// computer.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Pattern=`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`
	MACAddresses []string `json:"macAddresses,omitempty"`

	// hardwareID is the firmware's identity of the computer (the SMBIOS
	// system UUID), which survives re-imaging: a registering agent with
	// this ID is this computer, whatever its MAC addresses.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][-A-Za-z0-9._:]*$`
	HardwareID string `json:"hardwareID,omitempty"`

	// credentialsNotBefore revokes the agent's credential: a credential
	// issued before this time is refused (401), and the agent must register
	// again with a bootstrap token. Set it to the current time to revoke the
	// credential the agent holds.
	// +optional
	CredentialsNotBefore *metav1.Time `json:"credentialsNotBefore,omitempty"`
}

// ComputerCredential is the agent's current credential, as a hash.
type ComputerCredential struct {
	// hash is "sha256:" and the hexadecimal SHA-256 of the credential's
	// secret part. The secret itself is known only to the agent.
	// +required
	// +kubebuilder:validation:MaxLength=71
	Hash string `json:"hash"`

	// issuedAt is when the task service issued the credential.
	// +required
	IssuedAt metav1.Time `json:"issuedAt"`

	// registration is the request ID of the registration that issued it; a
	// registration replayed with the same ID is refused.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Registration string `json:"registration,omitempty"`

	// token is the name of the bootstrap token Secret it was issued with.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Token string `json:"token,omitempty"`
}

// MaxTaskOutputBytes bounds ComputerTask.output: the agent keeps the end
// of a longer output.
const MaxTaskOutputBytes = 4096

// ComputerTask is a computer's last DeploymentTask work and its result.
type ComputerTask struct {
	// name is the DeploymentTask's name (same namespace).
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
	// uid is the DeploymentTask's UID.
	// +kubebuilder:validation:MaxLength=64
	UID string `json:"uid"`
	// attempt is the attempt the result is for.
	Attempt int32 `json:"attempt"`
	// state is Claimed, Running, Succeeded or Failed.
	// +kubebuilder:validation:Enum=Claimed;Running;Succeeded;Failed
	State string `json:"state"`
	// reason of a failure: ExitCode, TimedOut, Interrupted,
	// InterpreterNotFound, StartFailed or Lost.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason,omitempty"`
	// exitCode of a script that ran to an end.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`
	// output is the end of the script's standard output and error, at most
	// 4 KiB.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Output string `json:"output,omitempty"`
	// outputTruncated is true when output lost its beginning.
	// +optional
	OutputTruncated bool `json:"outputTruncated,omitempty"`
	// started is when the agent started the work.
	// +optional
	Started *metav1.Time `json:"started,omitempty"`
	// finished is when the agent finished it.
	// +optional
	Finished *metav1.Time `json:"finished,omitempty"`
}

// MaxComputerAddresses is the most addresses a Computer's status lists.
const MaxComputerAddresses = 16

// ComputerStatus is what the site services and the operator observed about
// a computer.
type ComputerStatus struct {
	// observedGeneration is the metadata.generation the operator last
	// judged.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// addresses are the IP addresses the agent last reported, most
	// preferred first.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=45
	Addresses []string `json:"addresses,omitempty"`

	// site is the Site the agent's addresses map to; empty when none does.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Site string `json:"site,omitempty"`

	// siteServer is the SiteServer whose task service the agent last
	// checked in with.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	SiteServer string `json:"siteServer,omitempty"`

	// lastSeen is when the agent last checked in, to within the interval at
	// which check-ins are written (at most one status write per computer
	// per 5 minutes).
	// +optional
	LastSeen *metav1.Time `json:"lastSeen,omitempty"`

	// agentVersion is the version of the agent that last checked in.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	AgentVersion string `json:"agentVersion,omitempty"`

	// lastTask is the last DeploymentTask work the agent was handed, and
	// its result.
	// +optional
	LastTask *ComputerTask `json:"lastTask,omitempty"`

	// credential is the agent's current credential; absent until an agent
	// registers.
	// +optional
	Credential *ComputerCredential `json:"credential,omitempty"`

	// conditions: Ready is True (reason AgentOnline) while the agent checks
	// in; False with AgentOffline once it has missed check-ins for the
	// operator's offline timeout, NotRegistered before any agent
	// registered, or CredentialRevoked after spec.credentialsNotBefore
	// revoked its credential.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Computer is a managed computer running the agent. The task service
// creates it when an agent registers, or takes over one an administrator
// created with the computer's MAC addresses or hardware ID. Its labels are
// for targeting DeploymentTasks.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=comp,categories=siteops
// +kubebuilder:selectablefield:JSONPath=`.status.site`
// +kubebuilder:selectablefield:JSONPath=`.spec.hostname`
// +kubebuilder:printcolumn:name="Hostname",type=string,JSONPath=`.spec.hostname`,priority=1
// +kubebuilder:printcolumn:name="Site",type=string,JSONPath=`.status.site`
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.status.addresses`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.status.siteServer`,priority=1
// +kubebuilder:printcolumn:name="Last Seen",type=date,JSONPath=`.status.lastSeen`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name of a Computer must be at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
type Computer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec identifies the computer.
	// +optional
	Spec ComputerSpec `json:"spec,omitempty"`

	// status is what the site services and the operator observed.
	// +optional
	// +kubebuilder:default={}
	Status ComputerStatus `json:"status,omitempty"`
}

// ComputerList is a list of Computers.
//
// +kubebuilder:object:root=true
type ComputerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Computer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Computer{}, &ComputerList{})
}

// Bootstrap tokens, with which agents register. A token is a Secret of
// type BootstrapTokenSecretType in the operator's token namespace, named
// "bootstrap-token-<id>", whose data holds:
//   - token-id: the <id>, 6 characters [a-z0-9];
//   - token-secret: 16 characters [a-z0-9];
//   - namespace: the namespace where the Computers it registers are made;
//   - expiration (optional): an RFC 3339 time after which it is refused;
//   - usage-limit (optional): how many registrations it accepts in all.
//
// The agent presents "<id>.<secret>". Deleting the Secret revokes the
// token. The task service counts registrations in the Secret's annotation
// BootstrapTokenUsageAnnotation.
const (
	// BootstrapTokenSecretType is the type of a bootstrap token Secret.
	BootstrapTokenSecretType = "siteops.io/bootstrap-token"
	// BootstrapTokenSecretPrefix starts the name of every bootstrap token
	// Secret; the token's ID follows.
	BootstrapTokenSecretPrefix = "bootstrap-token-"
	// BootstrapTokenUsageAnnotation counts the registrations a token has
	// accepted.
	BootstrapTokenUsageAnnotation = "siteops.io/usage-count"
	// Keys of a bootstrap token Secret's data.
	BootstrapTokenIDKey         = "token-id"
	BootstrapTokenSecretKey     = "token-secret"
	BootstrapTokenNamespaceKey  = "namespace"
	BootstrapTokenExpirationKey = "expiration"
	BootstrapTokenUsageLimitKey = "usage-limit"
)
