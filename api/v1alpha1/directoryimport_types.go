package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DirectoryImportSpec says which directory to import Sites and Subnets from,
// and how often.
type DirectoryImportSpec struct {
	// url is the directory's address: ldaps://host[:port] (TLS from the
	// start, port 636 by default) or ldap://host[:port] (StartTLS before
	// the bind, port 389 by default). The bind never goes in clear text.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^ldaps?://[^/?#@ ]+$')",message="spec.url must be ldaps://host[:port] or ldap://host[:port] (StartTLS), with no path, user or query"
	URL string `json:"url"`

	// baseDN is where the forest keeps its sites:
	// CN=Sites,CN=Configuration,DC=example,DC=com. Sites are read from its
	// children, subnets from CN=Subnets under it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.lowerAscii().startsWith('cn=sites,')",message="spec.baseDN must be the forest's sites container, CN=Sites,CN=Configuration,DC=..."
	BaseDN string `json:"baseDN"`

	// bindSecretRef names a Secret in the operator's namespace (the manager
	// reads Secrets nowhere else) holding the bind DN or user principal
	// name under "username" and the password under "password".
	// +required
	BindSecretRef SecretReference `json:"bindSecretRef"`

	// tls tells how to trust the directory's certificate.
	// +optional
	TLS DirectoryTLS `json:"tls,omitzero"`

	// interval is the time between two imports. Default 1h, at least 1m.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m')",message="spec.interval must be at least 1m"
	Interval metav1.Duration `json:"interval,omitempty"`

	// pageSize is how many entries one page of a search returns. Default 500.
	// +optional
	// +kubebuilder:default=500
	// +kubebuilder:validation:Minimum=10
	// +kubebuilder:validation:Maximum=5000
	PageSize int32 `json:"pageSize,omitempty"`

	// maxDeletePercent bounds the share of the Sites and Subnets this import
	// created that one sync may delete because the directory no longer
	// lists them. A sync that would delete more, such as one that read a
	// directory emptied by mistake, deletes nothing and reports
	// DeletionsHeld until the directory is back or this is raised (100
	// allows any). Default 25.
	// +optional
	// +kubebuilder:default=25
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxDeletePercent int32 `json:"maxDeletePercent,omitempty"`

	// suspend stops the imports; what was imported stays.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// SecretReference names a Secret in the operator's namespace.
type SecretReference struct {
	// name is the Secret's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// DirectoryTLS tells how to trust the directory's certificate.
type DirectoryTLS struct {
	// caBundle is the PEM certificates to trust; absent means the system's
	// roots.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CABundle string `json:"caBundle,omitempty"`

	// serverName is the name to check the certificate against; absent means
	// the host of spec.url.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServerName string `json:"serverName,omitempty"`
}

// MaxSkippedListed is the most entries status.skipped lists.
const MaxSkippedListed = 50

// SkippedEntry is a directory entry the import left out, and why.
type SkippedEntry struct {
	// dn is the entry's distinguished name.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	DN string `json:"dn"`
	// reason says why it was left out.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Reason string `json:"reason"`
}

// DirectoryImportStatus is what the last imports did.
type DirectoryImportStatus struct {
	// observedGeneration is the metadata.generation of the last complete
	// import.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// lastSyncTime is when the last complete import ended.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`

	// sites is the number of Sites the import manages (created or adopted).
	// +optional
	Sites int32 `json:"sites"`

	// subnets is the number of Subnets the import created.
	// +optional
	Subnets int32 `json:"subnets"`

	// skippedCount is the number of directory entries left out by the last
	// import; skipped lists the first 50.
	// +optional
	SkippedCount int32 `json:"skippedCount,omitempty"`

	// skipped are directory entries the last import left out, and why.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	Skipped []SkippedEntry `json:"skipped,omitempty"`

	// conditions: Ready is True (reason Synced) after a complete import;
	// False with DirectoryUnreachable, BindFailed, SearchFailed (nothing
	// imported was changed), DeletionsHeld (spec.maxDeletePercent held
	// deletions back) or Suspended. Reconciling is True while an import
	// runs or is retried; Stalled when only a change can help (the bind
	// Secret is missing or refused, deletions are held).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// DirectoryImport imports Sites and Subnets from Active Directory (the
// reference product's Connector for Active Directory). Imported Subnets
// have source ActiveDirectory and win over manual ones with the same CIDR;
// a manual Site whose name the import maps to is adopted. Everything it
// manages carries the label siteops.io/directory-import=<name>.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=dirimport,categories=siteops
// +kubebuilder:printcolumn:name="URL",type=string,JSONPath=`.spec.url`
// +kubebuilder:printcolumn:name="Sites",type=integer,JSONPath=`.status.sites`
// +kubebuilder:printcolumn:name="Subnets",type=integer,JSONPath=`.status.subnets`
// +kubebuilder:printcolumn:name="Skipped",type=integer,JSONPath=`.status.skippedCount`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Last Sync",type=date,JSONPath=`.status.lastSyncTime`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 63",message="metadata.name of a DirectoryImport must be at most 63 characters (it is a label value)"
type DirectoryImport struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says what to import from.
	// +required
	Spec DirectoryImportSpec `json:"spec"`

	// status is what the last imports did.
	// +optional
	// +kubebuilder:default={}
	Status DirectoryImportStatus `json:"status,omitempty"`
}

// DirectoryImportList is a list of DirectoryImports.
//
// +kubebuilder:object:root=true
type DirectoryImportList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DirectoryImport `json:"items"`
}

func init() {
	SchemeBuilder.Register(&DirectoryImport{}, &DirectoryImportList{})
}

// LabelDirectoryImport names the DirectoryImport that manages a Site or
// Subnet.
const LabelDirectoryImport = "siteops.io/directory-import"

// AnnotationAdopted marks a Site that existed before the import managed it:
// when the directory no longer lists it, it goes back to being manual
// instead of being deleted.
const AnnotationAdopted = "siteops.io/adopted-by-import"
