package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Types of content a Package holds.
// +kubebuilder:validation:Enum=DiskImage;Software;Script
type PackageType string

const (
	// PackageDiskImage is a disk image that deployImage writes to a
	// computer's disk, or that captureImage produced.
	PackageDiskImage PackageType = "DiskImage"
	// PackageSoftware is a software bundle that installSoftware installs.
	PackageSoftware PackageType = "Software"
	// PackageScript is a bundle of scripts and the files they use.
	PackageScript PackageType = "Script"
)

// Replication policies of a Package.
// +kubebuilder:validation:Enum=AllSites;Sites;OnDemand
type ReplicationPolicy string

const (
	// ReplicateAllSites copies the content to the package servers of every
	// Site (and the unassigned servers). The default for disk images.
	ReplicateAllSites ReplicationPolicy = "AllSites"
	// ReplicateSites copies the content to the package servers of the
	// Sites listed in spec.replication.sites.
	ReplicateSites ReplicationPolicy = "Sites"
	// ReplicateOnDemand copies the content to the sites of the computers a
	// DeploymentTask that needs it targets, when the task needs it. The
	// default for software and script packages.
	ReplicateOnDemand ReplicationPolicy = "OnDemand"
)

// States of a Package's copy at a site or a server.
const (
	// ContentPending: the content is wanted there and no transfer has
	// started (waiting for a replication window, a source, a server).
	ContentPending = "Pending"
	// ContentReplicating: a transfer is under way; bytes says how far.
	ContentReplicating = "Replicating"
	// ContentReady: the content is there, its digest verified. A site is
	// Ready when every running package server that serves it is.
	ContentReady = "Ready"
	// ContentFailed: the transfer failed and is retried later; message
	// says why (digest mismatch, disk full, source unreachable).
	ContentFailed = "Failed"
)

// PackageSource says where the content comes from: exactly one member.
// +kubebuilder:validation:XValidation:rule="has(self.url) != has(self.captured)",message="spec.source must set exactly one of url or captured"
type PackageSource struct {
	// url is the HTTP(S) origin of the content. The package services of
	// the wanted sites download it from there, or from another site's
	// package service that holds it already.
	// +optional
	// +kubebuilder:validation:MinLength=8
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.startsWith('https://') || self.startsWith('http://')",message="spec.source.url must be an http:// or https:// URL"
	URL string `json:"url,omitempty"`

	// captured says that a captureImage task produced the content at a
	// site's package service. The package service that received the
	// upload sets it when it creates the Package.
	// +optional
	Captured *CapturedSource `json:"captured,omitempty"`
}

// CapturedSource is where and from what a captured image was taken.
type CapturedSource struct {
	// siteServer is the SiteServer whose package service received the
	// upload: the first holder of the content.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	SiteServer string `json:"siteServer"`

	// site is the Site of the computer captured, empty for a computer in
	// no site.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Site string `json:"site,omitempty"`

	// computer is the Computer whose disk was captured.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Computer string `json:"computer"`

	// task is the DeploymentTask that asked for the capture.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Task string `json:"task,omitempty"`
}

// PackageReplication says where the content goes.
// +kubebuilder:validation:XValidation:rule="has(self.policy) && self.policy == 'Sites' ? (has(self.sites) && self.sites.size() > 0) : !has(self.sites) || self.sites.size() == 0",message="spec.replication.sites is required with policy Sites, and only then"
type PackageReplication struct {
	// policy is AllSites, Sites or OnDemand. Absent: AllSites for a
	// DiskImage, OnDemand for Software and Script (status.policy says
	// which applies).
	// +optional
	Policy ReplicationPolicy `json:"policy,omitempty"`

	// sites are the Sites whose package servers hold the content, with
	// policy Sites. A name with no Site is reported in the Ready condition
	// and picked up when the Site is created.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MaxLength=63
	Sites []string `json:"sites,omitempty"`

	// windows are the times of day content may move to a site (local to
	// each window's time zone): a transfer starts only inside one and
	// pauses outside. Absent: at any time.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	Windows []MaintenanceWindow `json:"windows,omitempty"`
}

// PackageSpec is the content a Package stands for, and where it goes.
type PackageSpec struct {
	// type is DiskImage, Software or Script.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.type cannot change: create another Package"
	Type PackageType `json:"type"`

	// source is where the content comes from.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.source cannot change: create another Package"
	Source PackageSource `json:"source"`

	// digest is the content's SHA-256, "sha256:" and 64 lower-case hex
	// digits. Content that does not match is never stored nor served.
	// +required
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.digest cannot change: create another Package"
	Digest string `json:"digest"`

	// size is the content's length in bytes: a transfer that does not
	// match fails, and a server without that much free space does not
	// start one.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.size cannot change: create another Package"
	Size int64 `json:"size"`

	// replication says where the content goes.
	// +optional
	Replication PackageReplication `json:"replication,omitempty"`
}

// PackageSiteStatus is the state of the content at one site, rolled up
// from the copies of the package servers that serve it.
type PackageSiteStatus struct {
	// site is the Site's name; empty for the unassigned servers.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Site string `json:"site"`

	// state is Pending, Replicating, Ready or Failed: Ready when every
	// running package server that serves the site holds the content,
	// Failed when one of them failed, Replicating while one transfers.
	// +required
	// +kubebuilder:validation:Enum=Pending;Replicating;Ready;Failed
	State string `json:"state"`

	// bytes is the least any of the site's servers holds.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`

	// message says what a server waits for or why it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`
}

// PackageServerStatus is the state of one package server's copy, written
// by that server's package service.
type PackageServerStatus struct {
	// server is the SiteServer's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Server string `json:"server"`

	// state is Pending, Replicating, Ready or Failed.
	// +required
	// +kubebuilder:validation:Enum=Pending;Replicating;Ready;Failed
	State string `json:"state"`

	// bytes are the bytes the server holds.
	// +optional
	Bytes int64 `json:"bytes,omitempty"`

	// message says what the server waits for or why it failed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// updated is when the server last wrote this entry.
	// +optional
	Updated *metav1.Time `json:"updated,omitempty"`
}

// PackageStatus is where the content is.
type PackageStatus struct {
	// observedGeneration is the generation the status was computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// policy is the replication policy that applies (spec's, or the
	// default for the type).
	// +optional
	Policy ReplicationPolicy `json:"policy,omitempty"`

	// sites is the state of the content at each wanted site, by name.
	// +optional
	// +listType=map
	// +listMapKey=site
	// +kubebuilder:validation:MaxItems=1000
	Sites []PackageSiteStatus `json:"sites,omitempty"`

	// servers is the state of each package server's copy, by server.
	// +optional
	// +listType=map
	// +listMapKey=server
	// +kubebuilder:validation:MaxItems=1000
	Servers []PackageServerStatus `json:"servers,omitempty"`

	// sitesReady is "ready/wanted" sites, for kubectl get.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	SitesReady string `json:"sitesReady,omitempty"`

	// conditions: Ready (every wanted site holds the content), and the
	// kstatus Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Package is content that tasks use: a disk image, a software bundle or a
// script bundle, with its digest, and where it is replicated.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=pkg,categories=siteops
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
// +kubebuilder:printcolumn:name="Size",type=integer,JSONPath=`.spec.size`
// +kubebuilder:printcolumn:name="Sites",type=string,JSONPath=`.status.sitesReady`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Package struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the content and where it goes.
	// +required
	Spec PackageSpec `json:"spec"`

	// status is where it is.
	// +optional
	Status PackageStatus `json:"status,omitempty"`
}

// EffectivePolicy is the replication policy that applies to p: its
// spec's, or AllSites for a DiskImage and OnDemand otherwise.
func (p *Package) EffectivePolicy() ReplicationPolicy {
	if p.Spec.Replication.Policy != "" {
		return p.Spec.Replication.Policy
	}
	if p.Spec.Type == PackageDiskImage {
		return ReplicateAllSites
	}
	return ReplicateOnDemand
}

// PackageList is a list of Packages.
//
// +kubebuilder:object:root=true
type PackageList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Package `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Package{}, &PackageList{})
}
