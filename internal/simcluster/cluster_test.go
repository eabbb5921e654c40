//go:build e2e

package simcluster

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestStart checks the cluster on its own: a Deployment whose pods select
// a fake node rolls out, and Stop leaves no process behind.
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BinDir(root)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Options{BinDir: bin})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if t.Failed() {
			c.KeepDir = true
			t.Log(c.LogTails(30))
		}
		if !stopped {
			_ = c.Stop()
		}
	}()
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateFakeNode(ctx, cl, FakeNode{Name: "node-1", Labels: map[string]string{"pool": "a"}}); err != nil {
		t.Fatal(err)
	}
	// kwok renews the node's Lease, so that the node lifecycle controller
	// keeps the node Ready past its grace period.
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var lease coordinationv1.Lease
		if err := cl.Get(ctx, client.ObjectKey{Namespace: corev1.NamespaceNodeLease, Name: "node-1"}, &lease); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return lease.Spec.RenewTime != nil, nil
	})
	if err != nil {
		t.Fatalf("kwok does not renew the Lease of node-1: %v", err)
	}

	labels := map[string]string{"app": "smoke"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: metav1.NamespaceDefault},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{"pool": "a"},
					Containers:   []corev1.Container{{Name: "c", Image: "smoke"}},
				},
			},
		},
	}
	if err := cl.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := cl.Get(ctx, client.ObjectKeyFromObject(dep), dep); err != nil {
			return false, err
		}
		return dep.Status.AvailableReplicas == 2, nil
	})
	if err != nil {
		t.Fatalf("the Deployment did not roll out: %v (status %+v)", err, dep.Status)
	}

	pids := []string{}
	for _, p := range c.Processes() {
		pids = append(pids, "-p", strconv.Itoa(p.Pid()))
	}
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ps", append([]string{"-o", "pid=,comm="}, pids...)...).Output(); err == nil {
		t.Fatalf("processes left after Stop:\n%s", strings.TrimSpace(string(out)))
	}
}
