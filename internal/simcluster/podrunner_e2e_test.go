//go:build e2e

package simcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestPodRunner runs a StatefulSet of the test container (testpod) on a
// cluster with a pod runner and checks what a kubelet would do: the
// process starts with the pod's args, environment and volumes on its pod
// address; the pod turns Ready (and its endpoint ready) only once the
// readiness probe answers; a ConfigMap update reaches the mounted file;
// the ServiceAccount token authenticates; a crash and a failed liveness
// probe restart the process and count; deleting the pod stops the process
// and the replacement finds the claim's data; Stop leaves no process.
func TestPodRunner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := BinDir(root)
	if err != nil {
		t.Fatal(err)
	}
	podBin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(podBin, "testpod"), "./internal/simcluster/testpod")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building testpod: %v\n%s", err, out)
	}
	c, err := Start(ctx, Options{BinDir: bin, PodBinDir: podBin})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if t.Failed() {
			c.KeepDir = true
			t.Log(c.LogTails(40))
		}
		if !stopped {
			_ = c.Stop()
		}
	}()
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool := NodePool{Names: []string{"node-1"}, StorageClass: "local", Volumes: 2}
	if err := pool.Create(ctx, cl); err != nil {
		t.Fatal(err)
	}

	const ns, name, readyAfter = "pr", "testpod", 6 * time.Second
	labels := map[string]string{"app": name}
	for _, obj := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}},
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: ns}, Data: map[string]string{"value": "one"}},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
		},
		&appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: appsv1.StatefulSetSpec{
				Replicas:    ptr.To[int32](1),
				ServiceName: name,
				Selector:    &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						ServiceAccountName:            name,
						TerminationGracePeriodSeconds: ptr.To[int64](5),
						Containers: []corev1.Container{{
							Name:    "main",
							Image:   "site-operator:test",
							Command: []string{"/usr/local/bin/testpod"},
							Args:    []string{"--listen-host=$(POD_IP)", "--ready-after=" + readyAfter.String()},
							Env: []corev1.EnvVar{
								{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
								{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
								{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
								{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
								{Name: "GREETING", Value: "hello $(POD_NAME)"},
							},
							Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "health", ContainerPort: 8081}},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromString("health")}},
								PeriodSeconds: 1, FailureThreshold: 1,
							},
							LivenessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8081)}},
								PeriodSeconds: 1, FailureThreshold: 2,
							},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "config", MountPath: "/etc/testpod"},
								{Name: "data", MountPath: "/var/lib/testpod"},
							},
						}},
						Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{
							ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}},
						}}},
					},
				},
				VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
					ObjectMeta: metav1.ObjectMeta{Name: "data"},
					Spec: corev1.PersistentVolumeClaimSpec{
						AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
						StorageClassName: ptr.To("local"),
						Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
					},
				}},
			},
		},
	} {
		if err := cl.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	podKey := client.ObjectKey{Namespace: ns, Name: name + "-0"}
	httpClient := &http.Client{Timeout: 10 * time.Second}
	call := func(pod *corev1.Pod, method, path, body string) (string, error) {
		req, err := http.NewRequestWithContext(ctx, method, "http://"+net.JoinHostPort(pod.Status.PodIP, "8080")+path, strings.NewReader(body))
		if err != nil {
			return "", err
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
		}
		return string(data), nil
	}
	// poll polls cond every 250 ms for up to timeout; it fails the test with
	// what cond last said.
	poll := func(what string, timeout time.Duration, cond func(pod *corev1.Pod) error) *corev1.Pod {
		t.Helper()
		var (
			pod  corev1.Pod
			last error
		)
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
			if last = cl.Get(ctx, podKey, &pod); last != nil {
				return false, nil
			}
			last = cond(&pod)
			return last == nil, nil
		})
		if err != nil {
			t.Fatalf("%s: %v (last: %v)", what, err, last)
		}
		return &pod
	}

	// The process starts and answers on the pod's address while its
	// readiness probe still fails: the pod is Running, not Ready.
	pod := poll("the container runs and answers", 2*time.Minute, func(pod *corev1.Pod) error {
		if len(pod.Status.ContainerStatuses) != 1 || pod.Status.ContainerStatuses[0].State.Running == nil {
			return fmt.Errorf("container statuses %+v", pod.Status.ContainerStatuses)
		}
		_, err := call(pod, http.MethodGet, "/env", "")
		return err
	})
	if pod.Status.Phase != corev1.PodRunning || isReady(pod) {
		t.Errorf("with its readiness probe failing the pod is %s, Ready %v; want Running, not Ready", pod.Status.Phase, isReady(pod))
	}
	if ip, err := netip.ParseAddr(pod.Status.PodIP); err != nil || !ip.IsLoopback() {
		t.Errorf("pod IP %s is not a loopback address", pod.Status.PodIP)
	}
	pod = poll("the pod turns Ready", time.Minute, func(pod *corev1.Pod) error {
		if !isReady(pod) {
			return errors.New("not Ready")
		}
		return nil
	})
	started := pod.Status.ContainerStatuses[0].State.Running.StartedAt.Time
	if readyAt := readyTransition(pod); readyAt.Sub(started) < readyAfter-time.Second {
		t.Errorf("the pod turned Ready %v after its container started; its readiness probe fails for %v", readyAt.Sub(started), readyAfter)
	}

	// Args and environment, as a kubelet makes them.
	out, err := call(pod, http.MethodGet, "/env", "")
	if err != nil {
		t.Fatal(err)
	}
	var env struct{ Args, Env []string }
	if err := json.Unmarshal([]byte(out), &env); err != nil {
		t.Fatal(err)
	}
	if want := "--listen-host=" + pod.Status.PodIP; !slices.Contains(env.Args, want) {
		t.Errorf("args %v, want %s", env.Args, want)
	}
	for _, want := range []string{
		"POD_NAME=" + pod.Name, "POD_NAMESPACE=" + ns, "NODE_NAME=node-1", "GREETING=hello " + pod.Name,
		"KUBERNETES_SERVICE_HOST=" + c.Host, "KUBERNETES_SERVICE_PORT=" + strconv.Itoa(portAPIServer),
	} {
		if !slices.Contains(env.Env, want) {
			t.Errorf("environment %v lacks %s", env.Env, want)
		}
	}

	// The ServiceAccount token (injected by the API server's ServiceAccount
	// admission as a projected volume) authenticates the process.
	if who, err := call(pod, http.MethodGet, "/whoami", ""); err != nil || who != "system:serviceaccount:pr:testpod" {
		t.Errorf("the process authenticates as %q (%v), want system:serviceaccount:pr:testpod", who, err)
	}

	// A ConfigMap update reaches the mounted file.
	if got, err := call(pod, http.MethodGet, "/file?path=/etc/testpod/value", ""); err != nil || got != "one" {
		t.Fatalf("/etc/testpod/value: %q, %v", got, err)
	}
	var cm corev1.ConfigMap
	if err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: "cfg"}, &cm); err != nil {
		t.Fatal(err)
	}
	cm.Data["value"] = "two"
	if err := cl.Update(ctx, &cm); err != nil {
		t.Fatal(err)
	}
	poll("the ConfigMap update reaches the file", time.Minute, func(pod *corev1.Pod) error {
		got, err := call(pod, http.MethodGet, "/file?path=/etc/testpod/value", "")
		if err == nil && got != "two" {
			err = fmt.Errorf("the file holds %q", got)
		}
		return err
	})

	// The claim's directory is writable; a crash restarts the process and
	// counts.
	if _, err := call(pod, http.MethodPut, "/file?path=/var/lib/testpod/kept", "kept"); err != nil {
		t.Fatal(err)
	}
	firstPid := pidOf(t, pod)
	_, _ = call(pod, http.MethodPost, "/exit?code=3", "")
	pod = poll("the crashed container restarts", 2*time.Minute, func(pod *corev1.Pod) error {
		st := pod.Status.ContainerStatuses[0]
		if st.RestartCount != 1 || st.State.Running == nil || !isReady(pod) {
			return fmt.Errorf("restarts %d, state %+v, Ready %v", st.RestartCount, st.State, isReady(pod))
		}
		return nil
	})
	if last := pod.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil || last.ExitCode != 3 {
		t.Errorf("last termination %+v, want exit code 3", last)
	}
	if pidOf(t, pod) == firstPid || processAlive(firstPid) {
		t.Errorf("the crashed process %d is still the container's or alive", firstPid)
	}

	// A failed liveness probe restarts it too.
	if _, err := call(pod, http.MethodPost, "/sick", ""); err != nil {
		t.Fatal(err)
	}
	pod = poll("the unhealthy container restarts", 2*time.Minute, func(pod *corev1.Pod) error {
		st := pod.Status.ContainerStatuses[0]
		if st.RestartCount != 2 || st.State.Running == nil {
			return fmt.Errorf("restarts %d, state %+v", st.RestartCount, st.State)
		}
		return nil
	})

	// Deleting the pod stops its process; the StatefulSet's replacement
	// finds the claim's data.
	oldUID, oldPid := pod.UID, pidOf(t, pod)
	if err := cl.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod = poll("the replacement pod runs", 2*time.Minute, func(pod *corev1.Pod) error {
		if pod.UID == oldUID || len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].State.Running == nil {
			return errors.New("not yet")
		}
		return nil
	})
	if processAlive(oldPid) {
		t.Errorf("the deleted pod's process %d is alive", oldPid)
	}
	poll("the replacement reads the claim's data", time.Minute, func(pod *corev1.Pod) error {
		got, err := call(pod, http.MethodGet, "/file?path=/var/lib/testpod/kept", "")
		if err == nil && got != "kept" {
			err = fmt.Errorf("the file holds %q", got)
		}
		return err
	})

	lastPid := pidOf(t, pod)
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if processAlive(lastPid) {
		t.Errorf("the pod's process %d is alive after Stop", lastPid)
	}
}

func isReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func readyTransition(pod *corev1.Pod) time.Time {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// pidOf is the process id of the pod's running container.
func pidOf(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	id := pod.Status.ContainerStatuses[0].ContainerID
	pid, err := strconv.Atoi(strings.TrimPrefix(id, "simcluster://"))
	if err != nil {
		t.Fatalf("container ID %q: %v", id, err)
	}
	return pid
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}
