package simcluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Timing of the pod runner.
const (
	// volumeSyncPeriod is how often a pod's volumes are rewritten from
	// their objects (a kubelet takes up to a minute).
	volumeSyncPeriod = 3 * time.Second
	// Restart back-off: doubling from the first to the cap, reset after a
	// container ran for backoffReset.
	backoffFirst = 2 * time.Second
	backoffMax   = time.Minute
	backoffReset = 2 * time.Minute
	// defaultGrace is the termination grace period of a pod that names
	// none.
	defaultGrace = 30 * time.Second
)

// podWorker runs one pod: its volumes, its containers' processes and its
// status.
type podWorker struct {
	r   *podRunner
	uid types.UID
	dir string

	mu       sync.Mutex
	pod      *corev1.Pod // the latest seen
	isGone   bool        // the pod no longer exists
	changed  chan struct{}
	ctrs     []*containerState
	cond     map[corev1.PodConditionType]metav1.Time // last transition of Ready and ContainersReady
	wasReady bool
	dirty    bool // a status patch failed; retry
	volumes  *podVolumes

	statusMu sync.Mutex
}

// containerState is what the status reports of a container.
type containerState struct {
	spec         corev1.Container
	binary       string // empty: not one of the runner's binaries
	running      *metav1.Time
	ready        bool
	restarts     int32
	waiting      string // reason when neither running nor finished
	message      string
	last         *corev1.ContainerStateTerminated
	finished     bool // terminated and not restarting
	process      *Process
	stopGraceful time.Duration
}

func newPodWorker(r *podRunner, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		r: r, uid: pod.UID, pod: pod,
		dir:     filepath.Join(r.dir, podDirName(pod)),
		changed: make(chan struct{}, 1),
		cond:    map[corev1.PodConditionType]metav1.Time{},
	}
	for _, c := range pod.Spec.Containers {
		st := &containerState{spec: c, waiting: "ContainerCreating"}
		if len(c.Command) > 0 {
			st.binary = r.binaries[c.Command[0]]
		}
		if st.binary == "" {
			st.waiting, st.message = "NotRunnable", "the pod runner has no binary for this container's command"
		}
		w.ctrs = append(w.ctrs, st)
	}
	w.volumes = newPodVolumes(w)
	return w
}

func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) removed() {
	w.mu.Lock()
	w.isGone = true
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *podWorker) current() (*corev1.Pod, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pod, w.isGone
}

func (w *podWorker) logf(format string, args ...any) {
	pod, _ := w.current()
	w.r.log.Printf("%s/%s: "+format, append([]any{pod.Namespace, pod.Name}, args...)...)
}

// run is the pod's life: wait for its address, write its volumes, start
// its containers, keep volumes and status up to date, and stop it all when
// the pod is deleted or the runner stops.
func (w *podWorker) run() {
	ctx := w.r.ctx
	// Wait for kwok to give the pod its address.
	for {
		pod, gone := w.current()
		if gone || ctx.Err() != nil {
			return
		}
		if pod.DeletionTimestamp != nil {
			w.finish(ctx)
			return
		}
		if pod.Status.PodIP != "" {
			break
		}
		select {
		case <-ctx.Done():
		case <-w.changed:
		}
	}
	// Volumes first, as a kubelet mounts them before any container starts.
	tick := time.NewTicker(volumeSyncPeriod)
	defer tick.Stop()
	for {
		err := w.volumes.sync(ctx)
		if err == nil {
			break
		}
		w.logf("Writing the volumes: %v", err)
		w.setWaiting("ContainerCreating", err.Error())
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
			if pod, gone := w.current(); gone || pod.DeletionTimestamp != nil {
				w.finish(ctx)
				return
			}
		case <-tick.C:
		}
	}

	ctrCtx, stopCtrs := context.WithCancel(context.Background())
	var ctrs sync.WaitGroup
	for _, st := range w.ctrs {
		if st.binary != "" {
			ctrs.Go(func() { w.runContainer(ctrCtx, st) })
		}
	}
	w.patchStatus(ctx)
	for {
		select {
		case <-ctx.Done(): // the runner stops: the processes go, the pod stays
			w.setGrace(5 * time.Second)
			stopCtrs()
			ctrs.Wait()
			return
		case <-w.changed:
			pod, gone := w.current()
			if gone || pod.DeletionTimestamp != nil {
				w.setGrace(graceOf(pod))
				stopCtrs()
				ctrs.Wait()
				if !gone {
					w.finish(ctx)
				}
				w.cleanup()
				return
			}
		case <-tick.C:
			if err := w.volumes.sync(ctx); err != nil {
				w.logf("Updating the volumes: %v", err)
			}
			w.mu.Lock()
			dirty := w.dirty
			w.mu.Unlock()
			if dirty {
				w.patchStatus(ctx)
			}
		}
	}
}

// graceOf is how long a deleted pod's processes have between SIGTERM and
// SIGKILL.
func graceOf(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return defaultGrace
}

func (w *podWorker) setGrace(d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, st := range w.ctrs {
		st.stopGraceful = d
	}
}

// finish removes the deleted pod from the API server once its processes
// are gone, as a kubelet does.
func (w *podWorker) finish(ctx context.Context) {
	pod, _ := w.current()
	err := w.r.cs.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		w.logf("Removing the deleted pod: %v", err)
	}
	w.cleanup()
}

// cleanup removes the pod's directory; its logs stay.
func (w *podWorker) cleanup() {
	if err := os.RemoveAll(w.dir); err != nil {
		w.logf("Removing %s: %v", w.dir, err)
	}
}

// restarts tells whether a container that exited with code starts again
// under the pod's restartPolicy (empty means Always, the API default).
func restarts(policy corev1.RestartPolicy, code int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return true
	}
}

// runContainer runs a container until ctx ends: start, probe, restart.
func (w *podWorker) runContainer(ctx context.Context, st *containerState) {
	backoff := backoffFirst
	for {
		pod, _ := w.current()
		p, err := w.startContainer(ctx, pod, st)
		if err != nil {
			w.logf("Starting container %s: %v", st.spec.Name, err)
			w.setContainer(ctx, st, func() { st.waiting, st.message = "CreateContainerError", err.Error() })
		} else {
			started := time.Now()
			exitedOrKilled := w.supervise(ctx, pod, st, p)
			if ctx.Err() != nil {
				return
			}
			code := p.ExitCode()
			w.logf("Container %s exited with %d (%s)", st.spec.Name, code, exitedOrKilled)
			reason := "Error"
			if code == 0 {
				reason = "Completed"
			}
			restart := restarts(pod.Spec.RestartPolicy, code)
			w.setContainer(ctx, st, func() {
				st.last = &corev1.ContainerStateTerminated{
					ExitCode: int32(code), Reason: reason, StartedAt: metav1.NewTime(started),
					FinishedAt: metav1.Now(), ContainerID: containerID(p),
				}
				st.running, st.ready, st.process = nil, false, nil
				st.finished = !restart
				st.waiting = "CrashLoopBackOff"
				st.message = fmt.Sprintf("back-off restarting failed container %s (%s)", st.spec.Name, exitedOrKilled)
			})
			if !restart {
				return
			}
			if time.Since(started) > backoffReset {
				backoff = backoffFirst
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, backoffMax)
		w.setContainer(ctx, st, func() { st.restarts++ })
	}
}

// supervise waits until the process exits, the liveness probe fails (then
// it stops the process) or ctx ends (then it stops the process with the
// pod's grace period); it says what happened.
func (w *podWorker) supervise(ctx context.Context, pod *corev1.Pod, st *containerState, p *Process) string {
	probeCtx, stopProbes := context.WithCancel(ctx)
	defer stopProbes()
	unhealthy := make(chan struct{})
	if pr := st.spec.ReadinessProbe; pr != nil {
		go w.probe(probeCtx, pod, st, pr, false, func(ok bool) {
			w.setContainer(ctx, st, func() { st.ready = ok })
		})
	} else {
		w.setContainer(ctx, st, func() { st.ready = true })
	}
	if pr := st.spec.LivenessProbe; pr != nil {
		var once sync.Once
		go w.probe(probeCtx, pod, st, pr, true, func(ok bool) {
			if !ok {
				once.Do(func() { close(unhealthy) })
			}
		})
	}
	select {
	case <-p.Exited():
		return "exited"
	case <-unhealthy:
		w.logf("Container %s failed its liveness probe; stopping it", st.spec.Name)
		_ = p.Stop(graceOf(pod))
		return "liveness probe failed"
	case <-ctx.Done():
		w.mu.Lock()
		grace := st.stopGraceful
		w.mu.Unlock()
		if err := p.Stop(grace); err != nil {
			w.logf("Stopping container %s: %v", st.spec.Name, err)
		}
		w.logf("Container %s stopped", st.spec.Name)
		return "stopped"
	}
}

func containerID(p *Process) string { return "simcluster://" + strconv.Itoa(p.Pid()) }

// startContainer writes the container's start script and starts it in a
// mount namespace of its own.
func (w *podWorker) startContainer(ctx context.Context, pod *corev1.Pod, st *containerState) (*Process, error) {
	c := st.spec
	env, err := w.containerEnv(ctx, pod, &c)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		vars[k] = v
	}
	argv := []string{st.binary}
	for _, a := range append(append([]string(nil), c.Command[1:]...), c.Args...) {
		argv = append(argv, expandVars(a, vars))
	}
	mounts, err := w.volumes.mounts(&c)
	if err != nil {
		return nil, err
	}
	workDir := c.WorkingDir
	if workDir == "" {
		workDir = "/"
	}
	script := startScript(mounts, workDir, argv)
	scriptPath := filepath.Join(w.dir, "start-"+c.Name+".sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o700); err != nil {
		return nil, fmt.Errorf("writing the start script: %w", err)
	}
	logPath := filepath.Join(w.r.logs, logName(pod, c.Name))
	if f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
		fmt.Fprintf(f, "==> pod runner: starting %s of pod %s/%s (restart %d) at %s: %s\n",
			c.Name, pod.Namespace, pod.Name, st.restarts, time.Now().Format(time.RFC3339), strings.Join(argv, " "))
		_ = f.Close()
	}
	cmd := exec.Command(w.r.unshare, "--mount", "--propagation", "private", "/bin/sh", scriptPath)
	cmd.Env = env
	p, err := startCommand(pod.Name+"/"+c.Name, cmd, logPath)
	if err != nil {
		return nil, err
	}
	w.logf("Started container %s, pid %d", c.Name, p.Pid())
	now := metav1.Now()
	w.setContainer(ctx, st, func() {
		st.running, st.process, st.waiting, st.message, st.ready = &now, p, "", "", false
	})
	return p, nil
}

// mount is a pod directory bind-mounted at a container path.
type mount struct {
	source, target string
	readOnly       bool
}

// startScript is the shell script that, in the container's mount
// namespace, mounts its volumes and execs its command.
func startScript(mounts []mount, workDir string, argv []string) string {
	var b strings.Builder
	b.WriteString("set -e\n")
	for _, m := range mounts {
		fmt.Fprintf(&b, "mkdir -p %s\nmount --bind %s %s\n", shellQuote(m.target), shellQuote(m.source), shellQuote(m.target))
		if m.readOnly {
			fmt.Fprintf(&b, "mount -o remount,bind,ro %s\n", shellQuote(m.target))
		}
	}
	fmt.Fprintf(&b, "cd %s\nexec", shellQuote(workDir))
	for _, a := range argv {
		b.WriteString(" " + shellQuote(a))
	}
	b.WriteString("\n")
	return b.String()
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// probe runs an HTTP GET or TCP probe of the container on the pod's
// address every period and reports each change of its outcome from
// initial: to passing after SuccessThreshold successes in a row, to failing
// after FailureThreshold failures in a row.
func (w *podWorker) probe(ctx context.Context, pod *corev1.Pod, st *containerState, pr *corev1.Probe, initial bool, report func(ok bool)) {
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	success, failure := max(pr.SuccessThreshold, 1), max(pr.FailureThreshold, 1)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	state, last, run := initial, initial, int32(0)
	for {
		ok := probeOnce(ctx, pod.Status.PodIP, &st.spec, pr, timeout)
		if ok != last {
			run = 0
		}
		run++
		last = ok
		if ok != state && ((ok && run >= success) || (!ok && run >= failure)) {
			state = ok
			report(ok)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// probeOnce runs one probe; handlers other than HTTP GET and TCP pass.
func probeOnce(ctx context.Context, podIP string, c *corev1.Container, pr *corev1.Probe, timeout time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	switch {
	case pr.HTTPGet != nil:
		g := pr.HTTPGet
		port, ok := resolvePort(g.Port, c)
		if !ok {
			return false
		}
		host := g.Host
		if host == "" {
			host = podIP
		}
		scheme := strings.ToLower(string(g.Scheme))
		if scheme == "" {
			scheme = "http"
		}
		path := g.Path
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+path, nil)
		if err != nil {
			return false
		}
		for _, h := range g.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/simcluster")
		resp, err := probeClient.Do(req)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		// A kubelet counts 2xx and 3xx as success.
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		port, ok := resolvePort(pr.TCPSocket.Port, c)
		if !ok {
			return false
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(podIP, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		_ = conn.Close()
		return true
	}
	return true
}

// probeClient follows no redirect and, like a kubelet, does not verify
// HTTPS certificates.
var probeClient = &http.Client{
	Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // as a kubelet's prober
		DisableKeepAlives: true,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// resolvePort is a probe's port: a number, or the name of a container
// port.
func resolvePort(port intstr.IntOrString, c *corev1.Container) (int, bool) {
	if port.Type == intstr.Int {
		return port.IntValue(), port.IntValue() > 0
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return int(p.ContainerPort), true
		}
	}
	if n, err := strconv.Atoi(port.StrVal); err == nil {
		return n, n > 0
	}
	return 0, false
}

// setWaiting reports every container waiting for reason.
func (w *podWorker) setWaiting(reason, message string) {
	w.mu.Lock()
	for _, st := range w.ctrs {
		if st.binary != "" {
			st.waiting, st.message = reason, message
		}
	}
	w.mu.Unlock()
	w.patchStatus(w.r.ctx)
}

// setContainer changes a container's state and patches the pod's status.
func (w *podWorker) setContainer(ctx context.Context, st *containerState, change func()) {
	w.mu.Lock()
	change()
	w.mu.Unlock()
	w.patchStatus(ctx)
}

// patchStatus writes the containers' states, Ready and ContainersReady and
// the phase to the pod's status.
func (w *podWorker) patchStatus(ctx context.Context) {
	w.statusMu.Lock()
	defer w.statusMu.Unlock()
	if ctx.Err() != nil {
		ctx = w.r.ctx
	}
	w.mu.Lock()
	pod := w.pod
	ready := len(w.ctrs) > 0
	allFinished, anyFailed, anyStarted := true, false, false
	var statuses []corev1.ContainerStatus
	for _, st := range w.ctrs {
		cs := corev1.ContainerStatus{
			Name: st.spec.Name, Image: st.spec.Image, ImageID: st.spec.Image,
			Ready: st.ready, RestartCount: st.restarts, LastTerminationState: corev1.ContainerState{Terminated: st.last},
			Started: new(st.running != nil),
		}
		switch {
		case st.running != nil:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: *st.running}
			cs.ContainerID = containerID(st.process)
			anyStarted = true
		case st.finished:
			cs.State.Terminated = st.last
			cs.LastTerminationState = corev1.ContainerState{}
			anyFailed = anyFailed || st.last.ExitCode != 0
			anyStarted = true
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: st.waiting, Message: st.message}
		}
		allFinished = allFinished && st.finished
		ready = ready && st.ready && st.running != nil
		statuses = append(statuses, cs)
	}
	now := metav1.Now()
	if t := w.cond[corev1.PodReady]; ready != w.wasReady || t.IsZero() {
		w.cond[corev1.PodReady] = now
		w.wasReady = ready
	}
	since := w.cond[corev1.PodReady]
	w.mu.Unlock()

	phase := corev1.PodPending
	switch {
	case allFinished && anyFailed:
		phase = corev1.PodFailed
	case allFinished:
		phase = corev1.PodSucceeded
	case anyStarted:
		phase = corev1.PodRunning
	}
	status, reason := corev1.ConditionFalse, "ContainersNotReady"
	if ready {
		status, reason = corev1.ConditionTrue, ""
	}
	conds := []corev1.PodCondition{
		{Type: corev1.PodReady, Status: status, Reason: reason, LastTransitionTime: since},
		{Type: corev1.ContainersReady, Status: status, Reason: reason, LastTransitionTime: since},
	}
	patch := map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status":   map[string]any{"phase": phase, "conditions": conds, "containerStatuses": statuses},
	}
	data, err := json.Marshal(patch)
	if err == nil {
		_, err = w.r.cs.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
	}
	w.mu.Lock()
	w.dirty = err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && !errors.Is(err, context.Canceled)
	w.mu.Unlock()
	if err != nil && !apierrors.IsNotFound(err) {
		w.logf("Patching the status: %v", err)
	}
}
