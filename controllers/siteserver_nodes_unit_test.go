package controllers

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// Node events reach the SiteServers when a node comes or goes, or when its
// labels or addresses change; the kubelet's heartbeats do not.
func TestNodeChanged(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ResourceVersion: "1", Labels: map[string]string{"role": "site"}},
		Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.21"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
				LastHeartbeatTime: metav1.NewTime(time.Unix(1000, 0))}},
		},
	}
	for _, tc := range []struct {
		name   string
		change func(*corev1.Node)
		want   bool
	}{
		{"a heartbeat", func(n *corev1.Node) {
			n.ResourceVersion = "2"
			n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(time.Unix(1040, 0))
		}, false},
		{"an annotation", func(n *corev1.Node) { n.Annotations = map[string]string{"a": "b"} }, false},
		{"a label changed", func(n *corev1.Node) { n.Labels["role"] = "other" }, true},
		{"a label removed", func(n *corev1.Node) { n.Labels = nil }, true},
		{"the InternalIP changed", func(n *corev1.Node) { n.Status.Addresses[0].Address = "192.0.2.22" }, true},
		{"an ExternalIP added", func(n *corev1.Node) {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "198.51.100.7"})
		}, true},
		{"the addresses gone", func(n *corev1.Node) { n.Status.Addresses = nil }, true},
	} {
		after := node.DeepCopy()
		tc.change(after)
		if got := nodeChanged.Update(event.UpdateEvent{ObjectOld: node, ObjectNew: after}); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if !nodeChanged.Create(event.CreateEvent{Object: node}) || !nodeChanged.Delete(event.DeleteEvent{Object: node}) {
		t.Errorf("a node created or deleted is not passed")
	}
}
