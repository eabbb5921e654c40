package simcluster

// The pod runner: what a kubelet does beyond kwok's status stages, for the
// project's own pods.
//
// A pod is the runner's when a container's command is /usr/local/bin/<name>
// and <name> is an executable in Options.PodBinDir (task-service,
// package-service, manager, or a test's own binary). kwok still plays the
// node: it gives such a pod its address (from Options.PodCIDR, a block made
// local to this machine so that the process can bind it, podnet.go)
// through a stage of the runner's own, and its default pod stages are told to leave these pods
// alone (writeKwokStages). The runner then, for each such pod:
//
//   - writes its ConfigMap, Secret, downward API and projected volumes
//     (ServiceAccount tokens from the TokenRequest API, bound to the pod,
//     renewed at 80% of their lifetime) into <Dir>/pods/<pod>/volumes, with
//     the kubelet's layout (files are links into ..data, a link swapped
//     atomically on every change), and rewrites them when the objects
//     change (checked every few seconds);
//   - gives every PersistentVolumeClaim the directory of the volume it is
//     bound to, <Dir>/volumes/<PersistentVolume>: like a local disk its
//     content survives the pod, a new pod of the same claim (a StatefulSet's
//     replacement) finds it again;
//   - starts the container's command as a real process: the binary of that
//     name with the container's args, $(VAR) references expanded from its
//     environment (plain values, the downward API, ConfigMap and Secret keys),
//     KUBERNETES_SERVICE_HOST/PORT naming the simulated API server; output
//     to <Dir>/logs/pods/<namespace>_<pod>_<container>.log;
//   - probes: the pod turns Ready (and its EndpointSlice endpoint ready)
//     only once the readiness probe answers, a failed liveness probe
//     restarts the container; a process that exits is restarted per the
//     pod's restartPolicy after a back-off (2 s doubling to 1 minute,
//     shorter than a kubelet's 10 s to 5 minutes, for a development loop)
//     and counted in restartCount;
//   - on deletion stops the process (SIGTERM, SIGKILL after the grace
//     period), then removes the pod as a kubelet does (kwok's own delete
//     stage would remove it at once, freeing its address and name while
//     the process still runs).
//
// Container paths: every container runs in a mount namespace of its own
// (`unshare --mount --propagation private`, util-linux, present on the
// machine images and run as root here and in CI), where the pod's
// directories are bind-mounted at the container's mountPaths before the
// binary is exec'd. So the binaries, their configuration files and
// client-go's in-cluster configuration (/var/run/secrets/kubernetes.io/
// serviceaccount) work unchanged, with no flag that only tests would use;
// the private propagation keeps the mounts out of the host's namespace.
// The mount points are created on the host as empty directories if
// missing (the namespace shares the file system).
//
// Not done, as the project's pods do not need it: init containers,
// subPath mounts, exec and gRPC probes (taken as passing), startup
// probes, resource limits, running as the pod's user (processes run as
// the runner's user) and a network namespace (a process binds its pod IP
// because its arguments say so).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/yaml"
)

// containerBinDir is where the project's image holds its binaries.
const containerBinDir = "/usr/local/bin/"

// podRunner runs the project's pods of the cluster as processes.
type podRunner struct {
	cs       kubernetes.Interface
	binaries map[string]string // container command → local binary
	dir      string            // <Dir>/pods: one directory per pod
	volumes  string            // <Dir>/volumes: one directory per PersistentVolume
	logs     string            // <Dir>/logs/pods
	apiHost  string
	apiPort  string
	unshare  string
	log      *log.Logger

	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	pods   map[types.UID]*podWorker
	wg     sync.WaitGroup
}

// podBinaries maps the container command of every executable in dir to its
// path.
func podBinaries(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the pod binaries' directory: %w", err)
	}
	binaries := map[string]string{}
	for _, e := range entries {
		info, err := os.Stat(filepath.Join(dir, e.Name())) // follows links
		if err != nil || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
			continue
		}
		abs, err := filepath.Abs(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		binaries[containerBinDir+e.Name()] = abs
	}
	if len(binaries) == 0 {
		return nil, fmt.Errorf("no executable in %s for the pod runner", dir)
	}
	return binaries, nil
}

// commands are the container commands the runner runs, sorted.
func commands(binaries map[string]string) []string {
	cmds := make([]string, 0, len(binaries))
	for c := range binaries {
		cmds = append(cmds, c)
	}
	sort.Strings(cmds)
	return cmds
}

// writeKwokStages writes kwok's stages for a cluster with a pod runner to
// dst: those of src, where every pod stage leaves the runner's pods alone,
// and a stage of the runner's own that gives such a pod its addresses
// (kwok's pool, as for any pod) and no more: the runner reports the
// containers, Ready and the end of the pod.
func writeKwokStages(src, dst string, cmds []string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("reading kwok's stages: %w", err)
	}
	const commandKey = ".spec.containers[].command[0]"
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out bytes.Buffer
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading kwok's stages: %w", err)
		}
		var stage map[string]any
		if err := yaml.Unmarshal(doc, &stage); err != nil {
			return fmt.Errorf("decoding a kwok stage: %w", err)
		}
		if stage == nil {
			continue
		}
		spec, _ := stage["spec"].(map[string]any)
		ref, _ := spec["resourceRef"].(map[string]any)
		if ref["kind"] == "Pod" {
			selector, _ := spec["selector"].(map[string]any)
			if selector == nil {
				selector = map[string]any{}
				spec["selector"] = selector
			}
			exprs, _ := selector["matchExpressions"].([]any)
			selector["matchExpressions"] = append(exprs, map[string]any{
				"key": commandKey, "operator": "NotIn", "values": cmds,
			})
		}
		if err := writeYAMLDoc(&out, stage); err != nil {
			return err
		}
	}
	assign := map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Stage",
		"metadata":   map[string]any{"name": "pod-runner-assign"},
		"spec": map[string]any{
			"resourceRef": map[string]any{"apiGroup": "v1", "kind": "Pod"},
			"selector": map[string]any{"matchExpressions": []any{
				map[string]any{"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
				map[string]any{"key": ".status.podIP", "operator": "DoesNotExist"},
				map[string]any{"key": ".status.phase", "operator": "In", "values": []string{"Pending"}},
				map[string]any{"key": commandKey, "operator": "In", "values": cmds},
			}},
			"next": map[string]any{"statusTemplate": assignTemplate},
		},
	}
	if err := writeYAMLDoc(&out, assign); err != nil {
		return err
	}
	// kwok plays one pod stage at a time: with several at once, the first
	// pods of a new cluster can be given the same address (kwok creates
	// its address pool on first use without a lock, so two plays may each
	// create one), and the runner's second process then fails to bind it.
	// Seen in `make run`: two task-service pods on one address. kwok
	// does not default the options of a configuration it is given, so the
	// others are its defaults, written out.
	kwokConfig := map[string]any{
		"apiVersion": "config.kwok.x-k8s.io/v1alpha1",
		"kind":       "KwokConfiguration",
		"options": map[string]any{
			"podPlayStageParallelism":         1,
			"nodePlayStageParallelism":        4,
			"nodeLeaseParallelism":            4,
			"podsOnNodeSyncParallelism":       1,
			"enablePodsOnNodeSyncListPager":   true,
			"enablePodsOnNodeSyncStreamWatch": false,
			"enableDebuggingHandlers":         true,
			"enableProfilingHandler":          true,
			"enableContentionProfiling":       false,
		},
	}
	if err := writeYAMLDoc(&out, kwokConfig); err != nil {
		return err
	}
	if err := os.WriteFile(dst, out.Bytes(), 0o600); err != nil {
		return fmt.Errorf("writing kwok's stages: %w", err)
	}
	return nil
}

// assignTemplate is the status the runner's kwok stage gives a pod: its
// addresses, containers being created, not Ready.
const assignTemplate = `{{ $now := Now }}
conditions:
- lastTransitionTime: {{ $now | Quote }}
  status: "True"
  type: Initialized
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: Ready
- lastTransitionTime: {{ $now | Quote }}
  status: "False"
  reason: ContainersNotReady
  type: ContainersReady
containerStatuses:
{{ range .spec.containers }}
- image: {{ .image | Quote }}
  name: {{ .name | Quote }}
  ready: false
  restartCount: 0
  state:
    waiting:
      reason: ContainerCreating
{{ end }}
{{ $hostIPs := NodeIPsWith .spec.nodeName }}
{{ with $hostIPs }}
hostIP: {{ index . 0 | Quote }}
hostIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
{{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
{{ with $podIPs }}
podIP: {{ index . 0 | Quote }}
podIPs:
{{ range . }}
- ip: {{ . | Quote }}
{{ end }}
{{ end }}
startTime: {{ $now | Quote }}
`

func writeYAMLDoc(w *bytes.Buffer, doc any) error {
	data, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("encoding a kwok stage: %w", err)
	}
	w.WriteString("---\n")
	w.Write(data)
	return nil
}

// newPodRunner prepares a runner of the binaries' pods for a cluster at
// dir whose API server is apiHost:apiPort.
func newPodRunner(cfg *rest.Config, binaries map[string]string, dir, apiHost, apiPort string) (*podRunner, error) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return nil, fmt.Errorf("the pod runner needs unshare (util-linux): %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the pod runner's clientset: %w", err)
	}
	r := &podRunner{
		cs: cs, binaries: binaries,
		dir: filepath.Join(dir, "pods"), volumes: filepath.Join(dir, "volumes"), logs: filepath.Join(dir, "logs", "pods"),
		apiHost: apiHost, apiPort: apiPort, unshare: unshare,
		pods: map[types.UID]*podWorker{},
	}
	for _, d := range []string{r.dir, r.volumes, r.logs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("making %s: %w", d, err)
		}
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "logs", "pod-runner.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the pod runner's log: %w", err)
	}
	r.log = log.New(logFile, "", log.LstdFlags|log.Lmicroseconds)
	return r, nil
}

// start watches the pods bound to nodes until stop.
func (r *podRunner) start(ctx context.Context) error {
	r.ctx, r.cancel = context.WithCancel(context.Background())
	factory := informers.NewSharedInformerFactoryWithOptions(r.cs, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName!=" }))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { r.sync(obj) },
		UpdateFunc: func(_, obj any) { r.sync(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				r.gone(pod.UID)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(r.ctx.Done())
	for _, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			r.stop()
			return errors.New("the pod runner's pod cache did not sync")
		}
	}
	return nil
}

// owns tells whether a container of pod runs one of the runner's binaries.
func (r *podRunner) owns(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if len(c.Command) > 0 && r.binaries[c.Command[0]] != "" {
			return true
		}
	}
	return false
}

func (r *podRunner) sync(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || !r.owns(pod) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		return
	}
	w := r.pods[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			if pod.DeletionTimestamp == nil {
				return
			}
		}
		w = newPodWorker(r, pod)
		r.pods[pod.UID] = w
		r.wg.Go(func() {
			w.run()
			r.mu.Lock()
			delete(r.pods, pod.UID)
			r.mu.Unlock()
		})
	}
	w.update(pod)
}

// gone stops the worker of a pod that no longer exists.
func (r *podRunner) gone(uid types.UID) {
	r.mu.Lock()
	w := r.pods[uid]
	r.mu.Unlock()
	if w != nil {
		w.removed()
	}
}

// stop stops watching and stops every pod's processes.
func (r *podRunner) stop() {
	if r.cancel == nil {
		return
	}
	r.mu.Lock()
	r.cancel()
	r.mu.Unlock()
	r.wg.Wait()
}

// logPaths are the logs of the pods' containers.
func (r *podRunner) logPaths() []string {
	paths, _ := filepath.Glob(filepath.Join(r.logs, "*.log"))
	return paths
}

// podDirName names a pod's directories and logs.
func podDirName(pod *corev1.Pod) string {
	return pod.Namespace + "_" + pod.Name + "_" + string(pod.UID)
}

// logName is the log file of a container.
func logName(pod *corev1.Pod, container string) string {
	return strings.Join([]string{pod.Namespace, pod.Name, container}, "_") + ".log"
}
