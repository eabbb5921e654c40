package controllers

import (
	"net"
	"net/netip"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// serviceExposure is what decides the URLs one of a SiteServer's services
// advertises: its exposure, its own Service, its pods and their nodes.
type serviceExposure struct {
	exposure siteopsv1.Exposure
	// scheme is https, or http when the site services run without TLS.
	scheme string
	// port is the Service's port, used for explicit addresses without one
	// and for load balancers.
	port int32
	// targetPort is the container port, used for the pods' own addresses.
	targetPort int32
	// service is the SiteServer's own Service for it; nil when absent.
	service *corev1.Service
	// pods are the service's pods, ready or not.
	pods []corev1.Pod
	// nodes are the nodes by name.
	nodes map[string]*corev1.Node
}

// advertisedURLs are the URLs agents use to reach a service, by the first
// rule that yields any (ARCHITECTURE.md §2, SiteServer status):
//
//  1. spec.exposure.addresses, as written (the service's port when an
//     address has none);
//  2. with type LoadBalancer, the load balancer's ingress addresses;
//  3. with type NodePort, the node port on the address of each node that
//     runs a ready pod of the service (its ExternalIP, else InternalIP);
//  4. the ready pods' own addresses and the container port (routable pod
//     networks, and the simulated cluster).
//
// The result is sorted and free of duplicates, so that it does not churn;
// nil when no rule yields anything (no ready pod yet).
func advertisedURLs(e serviceExposure) []string {
	var hostPorts []string
	if len(e.exposure.Addresses) > 0 {
		for _, a := range e.exposure.Addresses {
			hostPorts = append(hostPorts, withDefaultPort(a, e.port))
		}
		return urls(e.scheme, hostPorts)
	}
	ready := readyPods(e.pods)
	switch e.exposure.Type {
	case siteopsv1.ExposureLoadBalancer:
		if e.service != nil {
			for _, in := range e.service.Status.LoadBalancer.Ingress {
				host := in.IP
				if host == "" {
					host = in.Hostname
				}
				if host != "" {
					hostPorts = append(hostPorts, joinHostPort(host, e.port))
				}
			}
		}
	case siteopsv1.ExposureNodePort:
		if nodePort := nodePortOf(e.service); nodePort != 0 {
			for _, pod := range ready {
				if addr := nodeAddress(e.nodes[pod.Spec.NodeName]); addr != "" {
					hostPorts = append(hostPorts, joinHostPort(addr, nodePort))
				}
			}
		}
	}
	if len(hostPorts) == 0 {
		for _, pod := range ready {
			hostPorts = append(hostPorts, joinHostPort(pod.Status.PodIP, e.targetPort))
		}
	}
	return urls(e.scheme, hostPorts)
}

// readyPods are the pods with an address whose Ready condition is True and
// that are not being deleted.
func readyPods(pods []corev1.Pod) []corev1.Pod {
	var ready []corev1.Pod
	for _, pod := range pods {
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" {
			continue
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				ready = append(ready, pod)
				break
			}
		}
	}
	return ready
}

// nodePortOf is the node port of the Service's first port, 0 when none.
func nodePortOf(svc *corev1.Service) int32 {
	if svc == nil || len(svc.Spec.Ports) == 0 {
		return 0
	}
	return svc.Spec.Ports[0].NodePort
}

// nodeAddress is the address agents reach a node at: its ExternalIP, else
// its InternalIP, "" when it has neither (or is unknown).
func nodeAddress(node *corev1.Node) string {
	if node == nil {
		return ""
	}
	for _, want := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
		for _, a := range node.Status.Addresses {
			if a.Type == want && a.Address != "" {
				return a.Address
			}
		}
	}
	return ""
}

// withDefaultPort adds port to an address written as host (or [v6]) alone.
func withDefaultPort(address string, port int32) string {
	if _, _, err := net.SplitHostPort(address); err == nil {
		return address
	}
	host := address
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return joinHostPort(host, port)
}

// joinHostPort is net.JoinHostPort with an int32 port; an IPv6 address is
// bracketed.
func joinHostPort(host string, port int32) string {
	if addr, err := netip.ParseAddr(host); err == nil {
		host = addr.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

// urls are scheme://hostPort for each, sorted and distinct; nil for none.
func urls(scheme string, hostPorts []string) []string {
	if len(hostPorts) == 0 {
		return nil
	}
	out := make([]string, 0, len(hostPorts))
	for _, hp := range hostPorts {
		out = append(out, scheme+"://"+hp)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
