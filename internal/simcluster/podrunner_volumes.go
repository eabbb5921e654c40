package simcluster

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serviceAccountTokenTTL is the lifetime of a projected token that names
// none (the API's default).
const serviceAccountTokenTTL = time.Hour

// podVolumes writes a pod's volumes into <pod dir>/volumes/<volume> and
// keeps them up to date.
type podVolumes struct {
	w       *podWorker
	written map[string][32]byte   // volume → digest of what was written last
	tokens  map[string]*tokenLife // volume/path → the token written there
}

// tokenLife is a ServiceAccount token and when to renew it.
type tokenLife struct {
	token string
	renew time.Time
}

func newPodVolumes(w *podWorker) *podVolumes {
	return &podVolumes{w: w, written: map[string][32]byte{}, tokens: map[string]*tokenLife{}}
}

func (v *podVolumes) dir(volume string) string {
	return filepath.Join(v.w.dir, "volumes", volume)
}

// sync writes every volume whose content changed since it was last
// written: ConfigMaps, Secrets, downward API and projected volumes
// atomically; emptyDir and PersistentVolumeClaim directories once.
func (v *podVolumes) sync(ctx context.Context) error {
	pod, _ := v.w.current()
	for _, vol := range pod.Spec.Volumes {
		var (
			files map[string][]byte
			err   error
		)
		switch {
		case vol.ConfigMap != nil:
			files, err = v.configMapFiles(ctx, pod.Namespace, vol.ConfigMap.Name, vol.ConfigMap.Items, vol.ConfigMap.Optional)
		case vol.Secret != nil:
			files, err = v.secretFiles(ctx, pod.Namespace, vol.Secret.SecretName, vol.Secret.Items, vol.Secret.Optional)
		case vol.DownwardAPI != nil:
			files, err = downwardFiles(pod, vol.DownwardAPI.Items)
		case vol.Projected != nil:
			files, err = v.projectedFiles(ctx, pod, vol.Name, vol.Projected.Sources)
		case vol.EmptyDir != nil:
			err = os.MkdirAll(v.dir(vol.Name), 0o777)
			files = nil
		case vol.PersistentVolumeClaim != nil:
			err = v.claimDir(ctx, pod.Namespace, vol.PersistentVolumeClaim.ClaimName)
		default:
			err = fmt.Errorf("volume %s: the pod runner supports configMap, secret, downwardAPI, projected, emptyDir and persistentVolumeClaim volumes", vol.Name)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		if files == nil {
			continue
		}
		digest := digestFiles(files)
		if prev, ok := v.written[vol.Name]; ok && prev == digest {
			continue
		}
		if err := writeAtomic(v.dir(vol.Name), files); err != nil {
			return fmt.Errorf("volume %s: %w", vol.Name, err)
		}
		v.written[vol.Name] = digest
	}
	return nil
}

// claimDir makes the directory of the PersistentVolume that the claim is
// bound to.
func (v *podVolumes) claimDir(ctx context.Context, namespace, claim string) error {
	pvc, err := v.w.r.cs.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading PersistentVolumeClaim %s: %w", claim, err)
	}
	if pvc.Spec.VolumeName == "" {
		return fmt.Errorf("PersistentVolumeClaim %s is not bound", claim)
	}
	return os.MkdirAll(filepath.Join(v.w.r.volumes, pvc.Spec.VolumeName), 0o777)
}

// mounts are the container's volume mounts as pod directories.
func (v *podVolumes) mounts(c *corev1.Container) ([]mount, error) {
	pod, _ := v.w.current()
	var mounts []mount
	for _, vm := range c.VolumeMounts {
		if vm.SubPath != "" || vm.SubPathExpr != "" {
			return nil, fmt.Errorf("mount %s: the pod runner does not support subPath", vm.Name)
		}
		i := slices.IndexFunc(pod.Spec.Volumes, func(vol corev1.Volume) bool { return vol.Name == vm.Name })
		if i < 0 {
			return nil, fmt.Errorf("mount %s: no such volume", vm.Name)
		}
		vol := pod.Spec.Volumes[i]
		source := v.dir(vol.Name)
		readOnly := vm.ReadOnly || vol.ConfigMap != nil || vol.Secret != nil || vol.DownwardAPI != nil || vol.Projected != nil
		if vol.PersistentVolumeClaim != nil {
			pvc, err := v.w.r.cs.CoreV1().PersistentVolumeClaims(pod.Namespace).Get(v.w.r.ctx, vol.PersistentVolumeClaim.ClaimName, metav1.GetOptions{})
			if err != nil {
				return nil, fmt.Errorf("mount %s: %w", vm.Name, err)
			}
			source = filepath.Join(v.w.r.volumes, pvc.Spec.VolumeName)
			readOnly = readOnly || vol.PersistentVolumeClaim.ReadOnly
		}
		mounts = append(mounts, mount{source: source, target: vm.MountPath, readOnly: readOnly})
	}
	return mounts, nil
}

func (v *podVolumes) configMapFiles(ctx context.Context, namespace, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	cm, err := v.w.r.cs.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if optionalMissing(err, optional) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading ConfigMap %s: %w", name, err)
	}
	data := map[string][]byte{}
	for k, s := range cm.Data {
		data[k] = []byte(s)
	}
	maps.Copy(data, cm.BinaryData)
	return keyFiles(data, items, "ConfigMap "+name)
}

func (v *podVolumes) secretFiles(ctx context.Context, namespace, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	s, err := v.w.r.cs.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if optionalMissing(err, optional) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	return keyFiles(s.Data, items, "Secret "+name)
}

// keyFiles are the files of data's keys, or of the items' keys at their
// paths.
func keyFiles(data map[string][]byte, items []corev1.KeyToPath, what string) (map[string][]byte, error) {
	if len(items) == 0 {
		return data, nil
	}
	files := map[string][]byte{}
	for _, it := range items {
		d, ok := data[it.Key]
		if !ok {
			return nil, fmt.Errorf("%s has no key %s", what, it.Key)
		}
		files[it.Path] = d
	}
	return files, nil
}

func downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downward API file %s: the pod runner supports fieldRef only", it.Path)
		}
		value, err := podField(pod, it.FieldRef.FieldPath)
		if err != nil {
			return nil, err
		}
		files[it.Path] = []byte(value)
	}
	return files, nil
}

func (v *podVolumes) projectedFiles(ctx context.Context, pod *corev1.Pod, volume string, sources []corev1.VolumeProjection) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, src := range sources {
		var (
			part map[string][]byte
			err  error
		)
		switch {
		case src.ConfigMap != nil:
			part, err = v.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
		case src.Secret != nil:
			part, err = v.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, src.Secret.Optional)
		case src.DownwardAPI != nil:
			part, err = downwardFiles(pod, src.DownwardAPI.Items)
		case src.ServiceAccountToken != nil:
			var token string
			token, err = v.token(ctx, pod, volume, src.ServiceAccountToken)
			part = map[string][]byte{src.ServiceAccountToken.Path: []byte(token)}
		default:
			err = fmt.Errorf("the pod runner supports configMap, secret, downwardAPI and serviceAccountToken projections")
		}
		if err != nil {
			return nil, err
		}
		maps.Copy(files, part)
	}
	return files, nil
}

// token is a token of the pod's ServiceAccount bound to the pod, from the
// TokenRequest API, renewed once 80% of its lifetime has passed (as a
// kubelet does).
func (v *podVolumes) token(ctx context.Context, pod *corev1.Pod, volume string, p *corev1.ServiceAccountTokenProjection) (string, error) {
	key := volume + "/" + p.Path
	if t := v.tokens[key]; t != nil && time.Now().Before(t.renew) {
		return t.token, nil
	}
	ttl := serviceAccountTokenTTL
	if p.ExpirationSeconds != nil {
		ttl = time.Duration(*p.ExpirationSeconds) * time.Second
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: new(int64(ttl / time.Second)),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := v.w.r.cs.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of ServiceAccount %s: %w", sa, err)
	}
	issued := time.Now()
	lifetime := tr.Status.ExpirationTimestamp.Sub(issued)
	v.tokens[key] = &tokenLife{token: tr.Status.Token, renew: issued.Add(lifetime * 8 / 10)}
	return tr.Status.Token, nil
}

// podField is the value of a downward API field of the pod.
func podField(pod *corev1.Pod, field string) (string, error) {
	switch field {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return pod.Status.HostIP, nil
	case "status.podIPs":
		var ips []string
		for _, ip := range pod.Status.PodIPs {
			ips = append(ips, ip.IP)
		}
		return strings.Join(ips, ","), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if field == prefix {
			var lines []string
			for _, k := range slices.Sorted(maps.Keys(m)) {
				lines = append(lines, fmt.Sprintf("%s=%q", k, m[k]))
			}
			return strings.Join(lines, "\n"), nil
		}
		if key, ok := strings.CutPrefix(field, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", fmt.Errorf("the pod runner does not support the downward API field %s", field)
}

// containerEnv is the container's environment, as a kubelet makes it: the
// API server's address, then envFrom, then env (values expanding
// $(VAR) references to variables defined before them).
func (w *podWorker) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	vars := map[string]string{
		"PATH":                          "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME":                      pod.Name,
		"KUBERNETES_SERVICE_HOST":       w.r.apiHost,
		"KUBERNETES_SERVICE_PORT":       w.r.apiPort,
		"KUBERNETES_SERVICE_PORT_HTTPS": w.r.apiPort,
	}
	order := slices.Sorted(maps.Keys(vars))
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	cms := w.r.cs.CoreV1().ConfigMaps(pod.Namespace)
	secrets := w.r.cs.CoreV1().Secrets(pod.Namespace)
	for _, from := range c.EnvFrom {
		var data map[string]string
		switch {
		case from.ConfigMapRef != nil:
			cm, err := cms.Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
			if optionalMissing(err, from.ConfigMapRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom ConfigMap %s: %w", from.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case from.SecretRef != nil:
			s, err := secrets.Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
			if optionalMissing(err, from.SecretRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom Secret %s: %w", from.SecretRef.Name, err)
			}
			data = map[string]string{}
			for k, v := range s.Data {
				data[k] = string(v)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			set(from.Prefix+k, data[k])
		}
	}
	for _, e := range c.Env {
		value := expandVars(e.Value, vars)
		if src := e.ValueFrom; src != nil {
			var err error
			switch {
			case src.FieldRef != nil:
				value, err = podField(pod, src.FieldRef.FieldPath)
			case src.ConfigMapKeyRef != nil:
				ref := src.ConfigMapKeyRef
				cm, getErr := cms.Get(ctx, ref.Name, metav1.GetOptions{})
				switch {
				case getErr != nil && !optionalMissing(getErr, ref.Optional):
					err = fmt.Errorf("env %s: ConfigMap %s: %w", e.Name, ref.Name, getErr)
				case getErr == nil:
					value = cm.Data[ref.Key]
				}
			case src.SecretKeyRef != nil:
				ref := src.SecretKeyRef
				s, getErr := secrets.Get(ctx, ref.Name, metav1.GetOptions{})
				switch {
				case getErr != nil && !optionalMissing(getErr, ref.Optional):
					err = fmt.Errorf("env %s: Secret %s: %w", e.Name, ref.Name, getErr)
				case getErr == nil:
					value = string(s.Data[ref.Key])
				}
			default:
				err = fmt.Errorf("env %s: the pod runner supports fieldRef, configMapKeyRef and secretKeyRef", e.Name)
			}
			if err != nil {
				return nil, err
			}
		}
		set(e.Name, value)
	}
	env := make([]string, 0, len(order))
	for _, k := range order {
		env = append(env, k+"="+vars[k])
	}
	return env, nil
}

// optionalMissing tells whether err says that an object marked optional
// does not exist.
func optionalMissing(err error, optional *bool) bool {
	return apierrors.IsNotFound(err) && optional != nil && *optional
}

// expandVars replaces $(VAR) by the value of VAR when vars defines it, and
// $$ by $, as a kubelet expands a container's command, args and env.
func expandVars(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			ref := s[i : i+3+end]
			if v, ok := vars[ref[2:len(ref)-1]]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(ref)
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// digestFiles identifies a volume's content.
func digestFiles(files map[string][]byte) [32]byte {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(files[k]))
		h.Write(files[k])
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d
}

// writeAtomic makes dir hold exactly files, as a kubelet's atomic writer
// does: the files go to a new hidden directory, the ..data link is swapped
// to it in one rename, and each top-level name is a link through ..data, so
// a reader sees either the old or the new content, never a mix.
func writeAtomic(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for p := range files {
		if clean := path.Clean(p); clean != p || strings.HasPrefix(p, "..") || path.IsAbs(p) {
			return fmt.Errorf("file path %q: must be relative, clean and not start with '..'", p)
		}
	}
	ts, err := os.MkdirTemp(dir, ".."+time.Now().UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	for p, data := range files {
		target := filepath.Join(ts, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	dataLink := filepath.Join(dir, "..data")
	old, _ := os.Readlink(dataLink)
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(ts), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, dataLink); err != nil {
		return err
	}
	top := map[string]bool{}
	for p := range files {
		top[strings.SplitN(p, "/", 2)[0]] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if name := e.Name(); !strings.HasPrefix(name, "..") && !top[name] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return err
			}
		}
	}
	for name := range top {
		link := filepath.Join(dir, name)
		if target, err := os.Readlink(link); err == nil && target == "..data/"+name {
			continue
		}
		if err := os.Symlink("..data/"+name, link); err != nil {
			return err
		}
	}
	if old != "" && old != filepath.Base(ts) {
		return os.RemoveAll(filepath.Join(dir, old))
	}
	return nil
}
