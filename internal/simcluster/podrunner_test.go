package simcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func TestExpandVars(t *testing.T) {
	vars := map[string]string{"POD_IP": "127.16.0.2", "EMPTY": ""}
	for _, tc := range []struct{ in, want string }{
		{"--listen-host=$(POD_IP)", "--listen-host=127.16.0.2"},
		{"$(POD_IP):$(POD_IP)", "127.16.0.2:127.16.0.2"},
		{"$(UNDEFINED)", "$(UNDEFINED)"},
		{"$$(POD_IP)", "$(POD_IP)"},
		{"$$$(POD_IP)", "$127.16.0.2"},
		{"a$(EMPTY)b", "ab"},
		{"$(POD_IP", "$(POD_IP"},
		{"cost: $5", "cost: $5"},
		{"trailing $", "trailing $"},
		{"", ""},
	} {
		if got := expandVars(tc.in, vars); got != tc.want {
			t.Errorf("expandVars(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWriteAtomic(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	read := func(p string) string {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(data)
	}
	if err := writeAtomic(dir, map[string][]byte{"config.yaml": []byte("one"), "sub/key": []byte("k1"), "gone": []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if got := read("config.yaml") + "," + read("sub/key") + "," + read("gone"); got != "one,k1,x" {
		t.Fatalf("after the first write: %s", got)
	}
	first, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	// A file opened before the update still reads the old content.
	f, err := os.Open(filepath.Join(dir, "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := writeAtomic(dir, map[string][]byte{"config.yaml": []byte("two"), "sub/key": []byte("k2")}); err != nil {
		t.Fatal(err)
	}
	if got := read("config.yaml") + "," + read("sub/key"); got != "two,k2" {
		t.Fatalf("after the update: %s", got)
	}
	if _, err := os.Lstat(filepath.Join(dir, "gone")); !os.IsNotExist(err) {
		t.Errorf("a removed key's file is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, first)); !os.IsNotExist(err) {
		t.Errorf("the old data directory %s is still there: %v", first, err)
	}
	if link, _ := os.Readlink(filepath.Join(dir, "config.yaml")); link != "..data/config.yaml" {
		t.Errorf("config.yaml links to %q, want ..data/config.yaml", link)
	}
	for _, bad := range []string{"../escape", "/abs", "a/../../b"} {
		if err := writeAtomic(dir, map[string][]byte{bad: nil}); err == nil {
			t.Errorf("writeAtomic accepted the path %q", bad)
		}
	}
}

func TestWriteKwokStages(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "in.yaml")
	in := `# comment
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  next: {statusTemplate: "phase: Running"}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: .status.phase, operator: In, values: [Pending]}
  next: {statusTemplate: "phase: Running"}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  next: {delete: true}
`
	if err := os.WriteFile(src, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "out.yaml")
	cmds := []string{"/usr/local/bin/task-service", "/usr/local/bin/testpod"}
	if err := writeKwokStages(src, dst, cmds); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	type expr struct {
		Key, Operator string
		Values        []string
	}
	var stages []struct {
		Metadata struct{ Name string }
		Spec     struct {
			Selector struct{ MatchExpressions []expr }
			Next     map[string]any
		}
	}
	configured := false
	for doc := range strings.SplitSeq(string(data), "---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var s struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct {
				Selector struct{ MatchExpressions []expr }
				Next     map[string]any
			}
			Options map[string]any
		}
		if err := yaml.Unmarshal([]byte(doc), &s); err != nil {
			t.Fatal(err)
		}
		if s.Kind == "KwokConfiguration" {
			// One pod stage at a time, so that no two pods get one address.
			if p, _ := s.Options["podPlayStageParallelism"].(float64); p != 1 {
				t.Errorf("kwok's options %v: want podPlayStageParallelism 1", s.Options)
			}
			configured = true
			continue
		}
		stages = append(stages, struct {
			Metadata struct{ Name string }
			Spec     struct {
				Selector struct{ MatchExpressions []expr }
				Next     map[string]any
			}
		}{s.Metadata, s.Spec})
	}
	names := []string{}
	exclusion := expr{Key: ".spec.containers[].command[0]", Operator: "NotIn", Values: cmds}
	for _, s := range stages {
		names = append(names, s.Metadata.Name)
		exprs := s.Spec.Selector.MatchExpressions
		hasExclusion := false
		for _, e := range exprs {
			if e.Key == exclusion.Key && e.Operator == "NotIn" && strings.Join(e.Values, ",") == strings.Join(cmds, ",") {
				hasExclusion = true
			}
		}
		switch s.Metadata.Name {
		case "node-initialize":
			if hasExclusion {
				t.Errorf("the node stage selects by container command: %+v", exprs)
			}
		case "pod-ready", "pod-delete":
			if !hasExclusion {
				t.Errorf("kwok's stage %s does not leave the runner's pods alone: %+v", s.Metadata.Name, exprs)
			}
		case "pod-runner-assign":
			if len(exprs) != 4 || exprs[3].Operator != "In" || exprs[3].Key != exclusion.Key {
				t.Errorf("the runner's stage selects %+v", exprs)
			}
			if tmpl, _ := s.Spec.Next["statusTemplate"].(string); !strings.Contains(tmpl, "PodIPsWith") || strings.Contains(tmpl, `status: "True"
  type: Ready`) {
				t.Errorf("the runner's stage should give the pod its address and leave it not Ready:\n%s", tmpl)
			}
		}
	}
	if !configured {
		t.Error("no KwokConfiguration in kwok's configuration")
	}
	if strings.Join(names, ",") != "node-initialize,pod-ready,pod-delete,pod-runner-assign" {
		t.Errorf("stages %v", names)
	}
	if !strings.Contains(string(data), "phase: Running") {
		t.Errorf("the stages' templates were lost:\n%s", data)
	}
}

func TestStartScript(t *testing.T) {
	got := startScript([]mount{{source: "/pods/p/volumes/config", target: "/etc/site-operator", readOnly: true}, {source: "/vols/pv-1", target: "/data"}},
		"/", []string{"/bin/task-service", "--config=/etc/site-operator/config.yaml", "it's"})
	want := `set -e
mkdir -p '/etc/site-operator'
mount --bind '/pods/p/volumes/config' '/etc/site-operator'
mount -o remount,bind,ro '/etc/site-operator'
mkdir -p '/data'
mount --bind '/vols/pv-1' '/data'
cd '/'
exec '/bin/task-service' '--config=/etc/site-operator/config.yaml' 'it'\''s'
`
	if got != want {
		t.Errorf("startScript:\n%s\nwant:\n%s", got, want)
	}
}

func TestRestartPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		code   int
		want   bool
	}{
		{corev1.RestartPolicyAlways, 0, true},
		{corev1.RestartPolicyAlways, 1, true},
		{"", 0, true},
		{corev1.RestartPolicyOnFailure, 0, false},
		{corev1.RestartPolicyOnFailure, 2, true},
		{corev1.RestartPolicyOnFailure, -1, true}, // killed by a signal
		{corev1.RestartPolicyNever, 0, false},
		{corev1.RestartPolicyNever, 1, false},
	} {
		if got := restarts(tc.policy, tc.code); got != tc.want {
			t.Errorf("restartPolicy %q, exit code %d: restarts %v, want %v", tc.policy, tc.code, got, tc.want)
		}
	}
}
