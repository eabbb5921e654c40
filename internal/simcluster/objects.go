package simcluster

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Labels and annotations of the objects made here.
const (
	// AnnotationKwokNode marks the Nodes that this cluster's kwok manages.
	AnnotationKwokNode = "kwok.x-k8s.io/node"
	// LabelHostname is the well-known node label that local volumes'
	// node affinity names.
	LabelHostname = "kubernetes.io/hostname"
	// LabelVolumeNode is the node of a PersistentVolume made by
	// CreateLocalVolumes.
	LabelVolumeNode = "e2e.siteops.io/node"
	// LabelVolumeClass is the StorageClass of a PersistentVolume made by
	// CreateLocalVolumes.
	LabelVolumeClass = "e2e.siteops.io/storage-class"
)

// FakeNode is a Node that kwok plays the kubelet of.
type FakeNode struct {
	// Name of the Node; also its kubernetes.io/hostname label.
	Name string
	// Labels added to the well-known ones.
	Labels map[string]string
	// Taints of the Node.
	Taints []corev1.Taint
	// CPU and Memory are the capacity (and allocatable); default 8 and
	// 32Gi.
	CPU, Memory string
	// Pods is the pod capacity; default 110.
	Pods int
}

// CreateFakeNode creates n; kwok marks it Ready within a second or so.
func CreateFakeNode(ctx context.Context, c client.Client, n FakeNode) (*corev1.Node, error) {
	cpu, memory, pods := n.CPU, n.Memory, n.Pods
	if cpu == "" {
		cpu = "8"
	}
	if memory == "" {
		memory = "32Gi"
	}
	if pods == 0 {
		pods = 110
	}
	resources := corev1.ResourceList{}
	for name, value := range map[corev1.ResourceName]string{
		corev1.ResourceCPU: cpu, corev1.ResourceMemory: memory, corev1.ResourcePods: strconv.Itoa(pods),
	} {
		q, err := resource.ParseQuantity(value)
		if err != nil {
			return nil, fmt.Errorf("node %s: %s %q: %w", n.Name, name, value, err)
		}
		resources[name] = q
	}
	labels := map[string]string{
		LabelHostname:           n.Name,
		"kubernetes.io/os":      "linux",
		"kubernetes.io/arch":    "amd64",
		"node.kubernetes.io/os": "linux",
		"type":                  "kwok",
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.Name,
			Labels:      labels,
			Annotations: map[string]string{AnnotationKwokNode: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec: corev1.NodeSpec{Taints: n.Taints},
		Status: corev1.NodeStatus{
			Capacity:    resources,
			Allocatable: resources.DeepCopy(),
			NodeInfo: corev1.NodeSystemInfo{
				Architecture:    "amd64",
				OperatingSystem: "linux",
				KubeletVersion:  "fake",
			},
		},
	}
	if err := c.Create(ctx, node); err != nil {
		return nil, fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	return node, nil
}

// CreateLocalStorageClass creates a StorageClass with no provisioner whose
// claims bind when their pod is scheduled, to a PersistentVolume made by
// CreateLocalVolumes on the pod's node.
func CreateLocalStorageClass(ctx context.Context, c client.Client, name string) error {
	sc := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: name},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimRetain),
	}
	if err := c.Create(ctx, sc); err != nil {
		return fmt.Errorf("creating StorageClass %s: %w", name, err)
	}
	return nil
}

// LocalVolumes are PersistentVolumes of a node, as a local disk's would be.
type LocalVolumes struct {
	// StorageClass of the volumes.
	StorageClass string
	// Node the volumes are on: their node affinity requires it.
	Node string
	// Count of volumes.
	Count int
	// Size of each volume; default 10Gi.
	Size string
}

// CreateLocalVolumes creates v.Count local PersistentVolumes on v.Node,
// labelled LabelVolumeNode and LabelVolumeClass. No provisioner runs in
// the cluster: a claim of the class binds only to such a volume.
func CreateLocalVolumes(ctx context.Context, c client.Client, v LocalVolumes) error {
	size := v.Size
	if size == "" {
		size = "10Gi"
	}
	capacity, err := resource.ParseQuantity(size)
	if err != nil {
		return fmt.Errorf("volume size %q: %w", size, err)
	}
	for i := range v.Count {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{
				GenerateName: fmt.Sprintf("%s-%s-", v.StorageClass, v.Node),
				Labels:       map[string]string{LabelVolumeNode: v.Node, LabelVolumeClass: v.StorageClass},
			},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: capacity},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              v.StorageClass,
				VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
				PersistentVolumeSource: corev1.PersistentVolumeSource{
					Local: &corev1.LocalVolumeSource{Path: fmt.Sprintf("/mnt/disks/vol%d", i)},
				},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
					NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
						Key: LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{v.Node},
					}}}},
				}},
			},
		}
		if err := c.Create(ctx, pv); err != nil {
			return fmt.Errorf("creating a PersistentVolume of class %s on node %s: %w", v.StorageClass, v.Node, err)
		}
	}
	return nil
}
