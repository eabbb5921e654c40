package controllers

import (
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func TestAdvertisedURLs(t *testing.T) {
	pod := func(name, node, ip string, ready bool) corev1.Pod {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}}}
	}
	deleting := pod("gone", "n1", "10.244.0.9", true)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	pods := []corev1.Pod{pod("a", "n1", "10.244.0.5", true), pod("b", "n2", "10.244.1.7", false),
		pod("c", "n3", "fd00::7", true), deleting}
	nodes := map[string]*corev1.Node{
		"n1": {Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"},
			{Type: corev1.NodeExternalIP, Address: "198.51.100.11"}}}},
		"n2": {Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.12"}}}},
		"n3": {Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "2001:db8::13"}}}},
	}
	nodePortSvc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 8080, NodePort: 30080}}}}
	lbSvc := &corev1.Service{Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{
		{IP: "203.0.113.5"}, {Hostname: "lb.example.net"}}}}}

	for _, tc := range []struct {
		name string
		e    serviceExposure
		want []string
	}{
		{"explicit addresses win over everything, port defaulted",
			serviceExposure{exposure: siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer,
				Addresses: []string{"task.lyon.example.net", "10.20.0.5:443", "[2001:db8::1]", "[2001:db8::2]:9000"}},
				service: lbSvc, pods: pods, nodes: nodes},
			[]string{"https://10.20.0.5:443", "https://[2001:db8::1]:8080", "https://[2001:db8::2]:9000", "https://task.lyon.example.net:8080"}},
		{"load balancer ingress", serviceExposure{exposure: siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer}, service: lbSvc, pods: pods},
			[]string{"https://203.0.113.5:8080", "https://lb.example.net:8080"}},
		{"load balancer not provisioned yet: the ready pods", serviceExposure{exposure: siteopsv1.Exposure{Type: siteopsv1.ExposureLoadBalancer},
			service: &corev1.Service{}, pods: pods},
			[]string{"https://10.244.0.5:8443", "https://[fd00::7]:8443"}},
		{"node port on the nodes of ready pods only, ExternalIP first",
			serviceExposure{exposure: siteopsv1.Exposure{Type: siteopsv1.ExposureNodePort}, service: nodePortSvc, pods: pods, nodes: nodes},
			[]string{"https://198.51.100.11:30080", "https://[2001:db8::13]:30080"}},
		{"cluster IP: the ready pods' addresses", serviceExposure{pods: pods},
			[]string{"https://10.244.0.5:8443", "https://[fd00::7]:8443"}},
		{"plain HTTP for development", serviceExposure{scheme: "http", pods: pods[:1]}, []string{"http://10.244.0.5:8443"}},
		{"no ready pod, nothing explicit", serviceExposure{pods: pods[1:2]}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			if e.scheme == "" {
				e.scheme = "https"
			}
			e.port, e.targetPort = 8080, 8443
			if got := advertisedURLs(e); !slices.Equal(got, tc.want) {
				t.Errorf("advertisedURLs = %q, want %q", got, tc.want)
			}
		})
	}
}
