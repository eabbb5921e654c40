package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SiteServerSpec describes a server role: the nodes that host site services
// and the sites they serve.
type SiteServerSpec struct {
	// sites are the names of the Sites this server serves. Empty means
	// unassigned: the server serves agents whose site has no ready server
	// of its own, or that are in no site.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=50
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="spec.sites entries must be names of Sites: at most 50 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit"
	Sites []string `json:"sites,omitempty"`

	// nodeSelector selects the nodes the server's pods run on, as a pod's
	// nodeSelector does: label keys and values.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, k.size() <= 317 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="spec.nodeSelector keys must be label keys: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
	NodeSelector map[string]LabelValue `json:"nodeSelector,omitempty"`

	// tolerations let the server's pods run on tainted nodes, as a pod's
	// tolerations do.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Tolerations []Toleration `json:"tolerations,omitempty"`

	// services are the site services this server hosts.
	// +optional
	Services SiteServices `json:"services,omitempty"`

	// exposure says how agents outside the cluster reach this server's
	// services, and so which URLs its status advertises.
	// +optional
	Exposure Exposure `json:"exposure,omitempty"`
}

// ExposureType is how a SiteServer's own Services are exposed.
// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
type ExposureType string

// Exposure types.
const (
	// ExposureClusterIP: reachable inside the cluster (and, on routable pod
	// networks, at the pods' addresses).
	ExposureClusterIP ExposureType = "ClusterIP"
	// ExposureNodePort: a port on every node, advertised on the nodes that
	// run the server's ready pods.
	ExposureNodePort ExposureType = "NodePort"
	// ExposureLoadBalancer: a load balancer's address.
	ExposureLoadBalancer ExposureType = "LoadBalancer"
)

// Exposure is how agents reach a SiteServer's services.
// +kubebuilder:validation:XValidation:rule="!has(self.loadBalancerClass) || (has(self.type) && self.type == 'LoadBalancer')",message="spec.exposure.loadBalancerClass is allowed only with type LoadBalancer"
// +kubebuilder:validation:XValidation:rule="!(has(oldSelf.type) && oldSelf.type == 'LoadBalancer' && has(self.type) && self.type == 'LoadBalancer') || (has(self.loadBalancerClass) == has(oldSelf.loadBalancerClass) && (!has(self.loadBalancerClass) || self.loadBalancerClass == oldSelf.loadBalancerClass))",message="spec.exposure.loadBalancerClass cannot change while type stays LoadBalancer (a Service's class is immutable): set type ClusterIP first, then LoadBalancer with the new class"
type Exposure struct {
	// type of the server's own task and package Services: ClusterIP
	// (default), NodePort or LoadBalancer. NodePort and LoadBalancer use
	// externalTrafficPolicy Local, so a branch's traffic stays on the node
	// that serves it.
	// +optional
	// +kubebuilder:default=ClusterIP
	Type ExposureType `json:"type,omitempty"`

	// loadBalancerClass selects the load-balancer implementation, with type
	// LoadBalancer. Like a Service's, it cannot change while the type stays
	// LoadBalancer: go through ClusterIP (the load balancer's address
	// changes).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	LoadBalancerClass *string `json:"loadBalancerClass,omitempty"`

	// annotations are added to the server's own Services (for example a
	// cloud load balancer's settings).
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	Annotations map[string]string `json:"annotations,omitempty"`

	// addresses are how agents reach this server when something the
	// operator does not manage stands in front of it (a branch DNS name, a
	// router's port forward): host or host:port, advertised instead of
	// anything else. Without a port the service's port is used.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=261
	// +kubebuilder:validation:items:XValidation:rule="self.matches('^(\\\\[[0-9a-fA-F:.]+\\\\]|[a-zA-Z0-9]([-a-zA-Z0-9.]*[a-zA-Z0-9])?)(:[0-9]{1,5})?$')",message="spec.exposure.addresses entries must be host or host:port: a DNS name, an IPv4 address or a bracketed IPv6 address, then an optional port"
	Addresses []string `json:"addresses,omitempty"`
}

// SiteServices are the services a SiteServer hosts.
type SiteServices struct {
	// task is the task service: agents check in there and receive work.
	// +optional
	Task TaskService `json:"task,omitempty"`

	// package is the package service: content replicated to the site and
	// served to its agents.
	// +optional
	Package PackageService `json:"package,omitempty"`
}

// TaskService configures a SiteServer's task service.
type TaskService struct {
	// enabled runs the task service (default true).
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// replicas is the number of task-service pods (default 1).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=32
	Replicas *int32 `json:"replicas,omitempty"`

	// resources are the task-service container's resource requests and
	// limits; see Resources for the defaults.
	// +optional
	Resources Resources `json:"resources,omitempty"`
}

// PackageService configures a SiteServer's package service.
type PackageService struct {
	// enabled runs the package service (default true).
	// +optional
	// +kubebuilder:default=true
	Enabled *bool `json:"enabled,omitempty"`

	// storage is the content store's volume.
	// +optional
	Storage PackageStorage `json:"storage,omitempty"`

	// bandwidthLimit caps the bytes per second the package service spends
	// replicating content into the site, such as 50Mi; absent means no cap.
	// It must be at least 1Ki.
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1Ki')) >= 0",message="spec.services.package.bandwidthLimit must be at least 1Ki (bytes per second), such as 50Mi; leave it out for no cap"
	BandwidthLimit *resource.Quantity `json:"bandwidthLimit,omitempty"`

	// resources are the package-service container's resource requests and
	// limits; see Resources for the defaults.
	// +optional
	Resources Resources `json:"resources,omitempty"`
}

// PackageStorage is the persistent volume of a package service.
type PackageStorage struct {
	// size of the content store (default 10Gi, at least 1Gi).
	// +optional
	// +kubebuilder:default="10Gi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).compareTo(quantity('1Gi')) >= 0",message="spec.services.package.storage.size must be at least 1Gi, such as 100Gi"
	Size *resource.Quantity `json:"size,omitempty"`

	// storageClassName is the StorageClass of the volume; absent means the
	// cluster's default StorageClass.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	StorageClassName string `json:"storageClassName,omitempty"`

	// retainOnDelete keeps the content store's PersistentVolumeClaim when
	// the SiteServer is deleted (a captured image not replicated yet lives
	// only there); absent or false deletes it with the SiteServer, so that
	// no orphaned claim is left behind. Scaling never deletes it.
	// +optional
	RetainOnDelete bool `json:"retainOnDelete,omitempty"`
}

// Resources are a site-service container's compute resources, as a
// container's requests and limits of cpu, memory and ephemeral-storage. A
// resource with neither a request nor a limit gets the default request (cpu
// 50m, memory 64Mi); a resource with only a limit gets the smaller of the
// default and the limit as its request, so a pod is never refused for a
// request above its limit.
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !has(self.requests.cpu) || !has(self.limits.cpu) || quantity(string(self.requests.cpu)).compareTo(quantity(string(self.limits.cpu))) <= 0",message="resources.requests.cpu must not exceed resources.limits.cpu"
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !has(self.requests.memory) || !has(self.limits.memory) || quantity(string(self.requests.memory)).compareTo(quantity(string(self.limits.memory))) <= 0",message="resources.requests.memory must not exceed resources.limits.memory"
// +kubebuilder:validation:XValidation:rule="!has(self.requests) || !has(self.limits) || !has(self.requests.ephemeral__dash__storage) || !has(self.limits.ephemeral__dash__storage) || quantity(string(self.requests.ephemeral__dash__storage)).compareTo(quantity(string(self.limits.ephemeral__dash__storage))) <= 0",message="resources.requests.ephemeral-storage must not exceed resources.limits.ephemeral-storage"
type Resources struct {
	// requests are the resources the container is scheduled with.
	// +optional
	Requests ResourceAmounts `json:"requests,omitempty"`

	// limits cap what the container may use.
	// +optional
	Limits ResourceAmounts `json:"limits,omitempty"`
}

// ResourceAmounts are amounts of the resources a site service may ask
// for; no other resource (devices, resource claims) applies to it.
// +kubebuilder:validation:XValidation:rule="!has(self.cpu) || quantity(string(self.cpu)).isGreaterThan(quantity('0'))",message="cpu must be a positive quantity, such as 100m"
// +kubebuilder:validation:XValidation:rule="!has(self.memory) || quantity(string(self.memory)).isGreaterThan(quantity('0'))",message="memory must be a positive quantity, such as 128Mi"
// +kubebuilder:validation:XValidation:rule="!has(self.ephemeral__dash__storage) || quantity(string(self.ephemeral__dash__storage)).isGreaterThan(quantity('0'))",message="ephemeral-storage must be a positive quantity, such as 1Gi"
type ResourceAmounts struct {
	// cpu in cores, such as 100m or 2.
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`

	// memory in bytes, such as 128Mi.
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`

	// ephemeral-storage in bytes, such as 1Gi.
	// +optional
	EphemeralStorage *resource.Quantity `json:"ephemeral-storage,omitempty"`
}

// List is the amounts as a Kubernetes ResourceList.
func (a ResourceAmounts) List() corev1.ResourceList {
	list := corev1.ResourceList{}
	for name, q := range map[corev1.ResourceName]*resource.Quantity{
		corev1.ResourceCPU: a.CPU, corev1.ResourceMemory: a.Memory, corev1.ResourceEphemeralStorage: a.EphemeralStorage} {
		if q != nil {
			list[name] = *q
		}
	}
	return list
}

// NodeLabels is spec.nodeSelector as a label map.
func (s *SiteServerSpec) NodeLabels() map[string]string {
	if s.NodeSelector == nil {
		return nil
	}
	labels := make(map[string]string, len(s.NodeSelector))
	for k, v := range s.NodeSelector {
		labels[k] = string(v)
	}
	return labels
}

// LabelValue is a Kubernetes label value: at most 63 letters, digits, '-',
// '_' or '.', starting and ending with a letter or digit, or empty.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
type LabelValue string

// Toleration lets a SiteServer's pods run on nodes with a matching taint,
// as a pod's toleration does.
// +kubebuilder:validation:XValidation:rule="!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value.size() == 0",message="a toleration with operator Exists must not have a value"
// +kubebuilder:validation:XValidation:rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",message="tolerationSeconds is allowed only with effect NoExecute"
// +kubebuilder:validation:XValidation:rule="has(self.key) && self.key.size() > 0 || (has(self.operator) && self.operator == 'Exists')",message="a toleration without a key must have operator Exists (it then tolerates every taint)"
type Toleration struct {
	// key is the taint key the toleration applies to; empty with operator
	// Exists matches every taint.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	// +kubebuilder:validation:Pattern=`^(([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
	Key string `json:"key,omitempty"`

	// operator is Equal (default: the taint's value must equal value) or
	// Exists (any value).
	// +optional
	// +kubebuilder:validation:Enum=Equal;Exists
	Operator corev1.TolerationOperator `json:"operator,omitempty"`

	// value is the taint value to match with operator Equal: a label value.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`
	Value string `json:"value,omitempty"`

	// effect is the taint effect to match: NoSchedule, PreferNoSchedule or
	// NoExecute; empty matches every effect.
	// +optional
	// +kubebuilder:validation:Enum=NoSchedule;PreferNoSchedule;NoExecute
	Effect corev1.TaintEffect `json:"effect,omitempty"`

	// tolerationSeconds is how long a pod stays on a node after a NoExecute
	// taint appears; absent means forever.
	// +optional
	// +kubebuilder:validation:Minimum=0
	TolerationSeconds *int64 `json:"tolerationSeconds,omitempty"`
}

// ServiceStatus is the state of one of a SiteServer's services.
type ServiceStatus struct {
	// ready is true when every desired replica of the service is available.
	// +optional
	Ready bool `json:"ready"`

	// replicas is the number of pods desired.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// readyReplicas is the number of pods ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// endpoint is the in-cluster URL of this SiteServer's own Service for
	// the service.
	// +optional
	Endpoint string `json:"endpoint,omitempty"`

	// advertised are the URLs agents use to reach the service, in this
	// order of precedence: spec.exposure.addresses; else the load
	// balancer's ingress; else the node port on the addresses of the nodes
	// running the service's ready pods; else the ready pods' own addresses
	// (routable pod networks, and the simulated cluster). Empty while no
	// pod is ready and nothing explicit is set.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=300
	Advertised []string `json:"advertised,omitempty"`
}

// SiteServerStatus is what the operator observed about a SiteServer.
type SiteServerStatus struct {
	// observedGeneration is the metadata.generation this status was computed
	// from. It is 0 until the first reconcile, so that kstatus readers
	// (kubectl wait, Helm, Argo CD, Flux) see a new SiteServer as in
	// progress.
	// +optional
	// +kubebuilder:default=0
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// task is the state of the task service.
	// +optional
	Task ServiceStatus `json:"task,omitempty"`

	// package is the state of the package service.
	// +optional
	Package ServiceStatus `json:"package,omitempty"`

	// conditions: Ready (every enabled service is ready), PrerequisitesMet
	// (reasons NoMatchingNode, StorageClassNotFound, SiteNotFound),
	// TaskServiceReady, PackageServiceReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SiteServer is a server role: nodes that run a task service and a package
// service for the Sites it serves. Its name (at most 40 characters, not
// starting with "site-") names its Deployment, StatefulSet and Services
// <name>-task and <name>-package, which therefore never collide with a
// Site's Services site-<site>-task and site-<site>-package.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=ss,categories=siteops
// +kubebuilder:printcolumn:name="Sites",type=string,JSONPath=`.spec.sites`
// +kubebuilder:printcolumn:name="Task",type=boolean,JSONPath=`.status.task.ready`
// +kubebuilder:printcolumn:name="Package",type=boolean,JSONPath=`.status.package.ready`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",message="metadata.name of a SiteServer must be at most 40 lower-case letters, digits and '-', starting with a letter and ending with a letter or digit (it names the server's Deployment, StatefulSet and Services)"
// +kubebuilder:validation:XValidation:rule="!self.metadata.name.startsWith('site-')",message="metadata.name of a SiteServer must not start with 'site-' (which covers the operator's own site-operator-* objects): the Services of Sites are named site-<site>-task and site-<site>-package, and a SiteServer's own Services <name>-task and <name>-package must never share their names"
type SiteServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec describes the server role.
	// +optional
	Spec SiteServerSpec `json:"spec,omitempty"`

	// status is what the operator observed.
	// +optional
	// +kubebuilder:default={}
	Status SiteServerStatus `json:"status,omitempty"`
}

// SiteServerList is a list of SiteServers.
//
// +kubebuilder:object:root=true
type SiteServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SiteServer `json:"items"`
}

func init() {
	SchemeBuilder.Register(&SiteServer{}, &SiteServerList{})
}

// ServesTasks reports whether the SiteServer's task service answers
// agents, as its status last said: at least one of its pods is available.
// That is its TaskServiceReady condition True with reason Available, or
// False with reason Progressing while status.task.readyReplicas is above 0
// (a pod being replaced, a rolling update: the others still serve). A
// disabled service (True, reason Disabled) serves nothing. The Site
// controller, the locator and the task services use it to judge whether a
// site has a server of its own.
func (ss *SiteServer) ServesTasks() bool {
	return ss.serviceRuns(ConditionTaskServiceReady, ss.Status.Task.ReadyReplicas)
}

// ServesPackages reports whether the SiteServer's package service runs, by
// the same reading of its PackageServiceReady condition and
// status.package.readyReplicas: it can hold and serve content. The
// Package controller uses it to decide which servers a site's content
// must be on.
func (ss *SiteServer) ServesPackages() bool {
	return ss.serviceRuns(ConditionPackageServiceReady, ss.Status.Package.ReadyReplicas)
}

// serviceRuns reads a service's condition condType: True with reason
// Available, or False with reason Progressing while readyReplicas is above
// 0.
func (ss *SiteServer) serviceRuns(condType string, readyReplicas int32) bool {
	for _, c := range ss.Status.Conditions {
		if c.Type == condType {
			if c.Status == metav1.ConditionTrue {
				return c.Reason == ReasonAvailable
			}
			return c.Reason == ReasonProgressing && readyReplicas > 0
		}
	}
	return false
}
