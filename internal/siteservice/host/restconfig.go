package host

import (
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// RestConfig is a site service's API configuration: the kubeconfig file
// when one is given (or $KUBECONFIG), else the pod's own (its
// ServiceAccount token). without names the flag that runs the service
// with no API access, for the error outside a pod.
func RestConfig(kubeconfig, without string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading the kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the in-cluster API configuration (outside a pod, pass --kubeconfig, or %s): %w", without, err)
	}
	return rc, nil
}
