package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SiteSpec describes a physical location.
type SiteSpec struct {
	// displayName is the name people use for the site, such as
	// "Paris — Head Office, 3rd floor".
	// +optional
	// +kubebuilder:validation:MaxLength=256
	DisplayName string `json:"displayName,omitempty"`

	// description is free text about the site.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Description string `json:"description,omitempty"`

	// location is free text telling where the site is (address, building,
	// floor).
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Location string `json:"location,omitempty"`
}

// MaxSiteServersListed is the most names status.siteServers holds (its
// MaxItems); status.siteServerCount counts them all.
const MaxSiteServersListed = 256

// MaxEndpointsListed is the cap of a Site's status.taskEndpoints and
// status.packageEndpoints.
const MaxEndpointsListed = 256

// SiteStatus is what the operator observed about a site.
type SiteStatus struct {
	// observedGeneration is the metadata.generation whose spec the operator
	// has fully applied, or has found it cannot apply (Stalled). It is 0
	// until the first reconcile, so that kstatus readers (kubectl wait,
	// Helm, Argo CD, Flux) see a new Site as in progress.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// subnets is the number of Subnets whose addresses are effectively
	// mapped to this site (named or inherited).
	// +optional
	Subnets int32 `json:"subnets"`

	// siteServers are the names of the SiteServers that serve this site, in
	// alphabetical order: the first 256 when more serve it
	// (siteServerCount counts them all).
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	SiteServers []string `json:"siteServers,omitempty"`

	// siteServerCount is the number of SiteServers that serve this site;
	// larger than the length of siteServers when that list is cut.
	// +optional
	SiteServerCount int32 `json:"siteServerCount,omitempty"`

	// taskEndpoints are the URLs agents use to reach the task services
	// of the SiteServers that serve this site: the union of their
	// status.task.advertised, sorted, cut at MaxEndpointsListed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=300
	TaskEndpoints []string `json:"taskEndpoints,omitempty"`

	// packageEndpoints are the URLs agents use to reach the package
	// services of the SiteServers that serve this site: the union of their
	// status.package.advertised, sorted, cut at MaxEndpointsListed.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=300
	PackageEndpoints []string `json:"packageEndpoints,omitempty"`

	// importedBy names the DirectoryImport that manages this site (its
	// label siteops.io/directory-import); empty for a manual site.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	ImportedBy string `json:"importedBy,omitempty"`

	// computers is the number of Computers located in this site.
	// +optional
	Computers int32 `json:"computers,omitempty"`

	// conditions: Ready is True (reason TaskServiceAvailable) when the site
	// has at least one available task service of its own; otherwise the
	// reason is NoSiteServer, ServicesNotReady, or ApplyFailed / NotOwned when
	// the site's Services could not be applied. Reconciling is True while
	// its servers roll out (ServicesNotReady) or a failed apply is retried;
	// Stalled is True when the API server refused the site's Services or an
	// object controlled by something else is in their way. NoSiteServer is
	// converged (its agents go to the unassigned servers by design), which
	// kstatus reads as InProgress because Ready is False.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Site is a physical location (a building, a floor) made of Subnets and
// served by SiteServers.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=site,categories=siteops
// +kubebuilder:printcolumn:name="Display Name",type=string,JSONPath=`.spec.displayName`
// +kubebuilder:printcolumn:name="Subnets",type=integer,JSONPath=`.status.subnets`
// +kubebuilder:printcolumn:name="Servers",type=integer,JSONPath=`.status.siteServerCount`,priority=1
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 50 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name of a Site must be at most 50 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it names the site's Services and pod labels)"
type Site struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the site.
	// +optional
	Spec SiteSpec `json:"spec,omitempty"`

	// status is what the operator observed.
	// +optional
	// +kubebuilder:default={}
	Status SiteStatus `json:"status,omitempty"`
}

// SiteList is a list of Sites.
//
// +kubebuilder:object:root=true
type SiteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Site `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Site{}, &SiteList{})
}
