package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SubnetSource tells who maintains a Subnet.
// +kubebuilder:validation:Enum=Manual;ActiveDirectory
type SubnetSource string

const (
	// SourceManual: written by a person or a pipeline.
	SourceManual SubnetSource = "Manual"
	// SourceActiveDirectory: written by the directory import; wins over a
	// Manual subnet with the same CIDR.
	SourceActiveDirectory SubnetSource = "ActiveDirectory"
)

// SubnetSpec describes a range of addresses and the site it belongs to.
type SubnetSpec struct {
	// cidr is the IPv4 or IPv6 prefix of the subnet in canonical form, with
	// the host bits zero: 10.1.0.0/16, fd00:10::/32.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=49
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="spec.cidr must be an IPv4 or IPv6 prefix in CIDR notation, such as 10.1.0.0/16 or fd00:10::/32"
	// +kubebuilder:validation:XValidation:rule="!isCIDR(self) || cidr(self).masked() == cidr(self)",message="spec.cidr must be in canonical form with the host bits zero: 10.1.0.0/16, not 10.1.2.3/16"
	// +kubebuilder:validation:XValidation:rule="!(self.contains(':') && self.contains('.'))",message="spec.cidr must not be an IPv4-mapped IPv6 prefix such as ::ffff:10.0.0.0/104: write the IPv4 prefix (10.0.0.0/8)"
	CIDR string `json:"cidr"`

	// site is the name of the Site this subnet belongs to. When absent the
	// subnet inherits the site of the nearest enclosing subnet that has one.
	// +optional
	// +kubebuilder:validation:MaxLength=50
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="spec.site must be the name of a Site: at most 50 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
	Site string `json:"site,omitempty"`

	// source tells who maintains the subnet: Manual (the default) or
	// ActiveDirectory (the directory import). For the same CIDR an
	// ActiveDirectory subnet overrides a Manual one.
	// +optional
	// +kubebuilder:default=Manual
	Source SubnetSource `json:"source,omitempty"`

	// description is free text about the subnet (the directory's, for an
	// imported one).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Description string `json:"description,omitempty"`

	// location is free text telling where the subnet's computers are.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Location string `json:"location,omitempty"`
}

// SubnetStatus is the subnet's place in address resolution.
type SubnetStatus struct {
	// observedGeneration is the metadata.generation this status was computed
	// from. It is 0 until the first reconcile, so that kstatus readers
	// (kubectl wait, Helm, Argo CD, Flux) see a new Subnet as in progress.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// effectiveSite is the site the subnet's addresses resolve to: spec.site,
	// or the inherited site. Empty when the subnet is not effective.
	// +optional
	EffectiveSite string `json:"effectiveSite,omitempty"`

	// inheritedFrom names the enclosing Subnet whose spec.site this subnet
	// inherited, when it names no site itself.
	// +optional
	InheritedFrom string `json:"inheritedFrom,omitempty"`

	// conditions: Ready is True (reason Effective) when the subnet takes part
	// in address resolution; otherwise the reason is OverriddenByImport,
	// Duplicate, SiteNotFound or NoSite and the message says why, naming the
	// winning subnet where there is one. Stalled is True, with the same
	// reason, when a user must act: Duplicate, SiteNotFound, InvalidCIDR.
	// OverriddenByImport and NoSite are converged states (the rules ask for
	// them), which kstatus reads as InProgress because Ready is False. A
	// Subnet is never Reconciling: its status is computed at once.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Subnet is a range of addresses that belongs to a Site. An address belongs
// to the most specific effective Subnet containing it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=sn,categories=siteops
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Site",type=string,JSONPath=`.spec.site`
// +kubebuilder:printcolumn:name="Effective Site",type=string,JSONPath=`.status.effectiveSite`
// +kubebuilder:printcolumn:name="Source",type=string,JSONPath=`.spec.source`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Subnet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the address range and its site.
	// +required
	Spec SubnetSpec `json:"spec"`

	// status is the subnet's place in address resolution.
	// +optional
	// +kubebuilder:default={}
	Status SubnetStatus `json:"status,omitempty"`
}

// SubnetList is a list of Subnets.
//
// +kubebuilder:object:root=true
type SubnetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Subnet `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Subnet{}, &SubnetList{})
}
