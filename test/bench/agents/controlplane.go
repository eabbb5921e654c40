package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// The topology every level creates.
const (
	siteName       = "bench"
	siteServerName = "bench-srv"
	// tenantNamespace receives the agents' Computers.
	tenantNamespace = "branch-bench"
	// agentsCIDR covers every agent's claimed address: process p claims
	// from 10.64+p.0.0/16.
	agentsCIDR = "10.64.0.0/10"
	tokenID    = "bench1"
	// token is the bootstrap token "<id>.<secret>".
	token = tokenID + "." + "benchsecret00001"
)

// controlPlane is a running envtest API server and etcd, with an admin
// client.
type controlPlane struct {
	env    *envtest.Environment
	cfg    *rest.Config
	scheme *runtime.Scheme
	client client.Client
	// metrics reads the API server's own /metrics.
	metrics *http.Client
}

func startControlPlane(crds string) (*controlPlane, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{crds}, ErrorIfCRDPathMissing: true, Scheme: scheme}
	cfg, err := env.Start()
	if err != nil {
		// Start leaves etcd and kube-apiserver running when a later step,
		// such as installing the CRDs, fails.
		return nil, errors.Join(fmt.Errorf("starting the control plane (is KUBEBUILDER_ASSETS set?): %w", err), env.Stop())
	}
	cp := &controlPlane{env: env, cfg: cfg, scheme: scheme}
	if cp.client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	if cp.metrics, err = rest.HTTPClientFor(cfg); err != nil {
		return nil, errors.Join(err, env.Stop())
	}
	return cp, nil
}

func (cp *controlPlane) stop() error { return cp.env.Stop() }

// createTopology creates the namespaces, the Site and its Subnet, the
// SiteServer (its status advertising taskURL, the task service ready) and
// the bootstrap token.
func (cp *controlPlane) createTopology(ctx context.Context, taskURL string) error {
	c := cp.client
	for _, ns := range []string{config.DefaultTokenNamespace, tenantNamespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return fmt.Errorf("creating namespace %s: %w", ns, err)
		}
	}
	if err := c.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: siteName}}); err != nil {
		return fmt.Errorf("creating Site %s: %w", siteName, err)
	}
	subnet := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: siteName + "-lan"},
		Spec: siteopsv1.SubnetSpec{CIDR: agentsCIDR, Site: siteName}}
	if err := c.Create(ctx, subnet); err != nil {
		return fmt.Errorf("creating Subnet %s: %w", subnet.Name, err)
	}
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: siteServerName},
		Spec: siteopsv1.SiteServerSpec{Sites: []string{siteName}}}
	if err := c.Create(ctx, ss); err != nil {
		return fmt.Errorf("creating SiteServer %s: %w", siteServerName, err)
	}
	// No manager runs: the harness writes the status the SiteServer
	// controller would once the task service is available.
	ss.Status.Task = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1, Advertised: []string{taskURL}}
	ss.Status.Conditions = []metav1.Condition{{Type: siteopsv1.ConditionTaskServiceReady, Status: metav1.ConditionTrue,
		Reason: siteopsv1.ReasonAvailable, Message: "the benchmark's task service", LastTransitionTime: metav1.Now()}}
	if err := c.Status().Update(ctx, ss); err != nil {
		return fmt.Errorf("writing the status of SiteServer %s: %w", siteServerName, err)
	}
	id, secret, _ := strings.Cut(token, ".")
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: siteopsv1.BootstrapTokenSecretPrefix + id, Namespace: config.DefaultTokenNamespace},
		Type:       siteopsv1.BootstrapTokenSecretType,
		StringData: map[string]string{siteopsv1.BootstrapTokenIDKey: id, siteopsv1.BootstrapTokenSecretKey: secret,
			siteopsv1.BootstrapTokenNamespaceKey: tenantNamespace},
	}
	if err := c.Create(ctx, sec); err != nil {
		return fmt.Errorf("creating the bootstrap token Secret: %w", err)
	}
	return nil
}

// writeKubeconfig writes a kubeconfig of a new envtest user for the task
// service into dir and returns its path. The user is in system:masters,
// as the harness is: API Priority and Fairness exempts it (see
// docs/benchmarks.md).
func (cp *controlPlane) writeKubeconfig(dir string) (string, error) {
	user, err := cp.env.AddUser(envtest.User{Name: "task-service", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", fmt.Errorf("adding the task service's API user: %w", err)
	}
	data, err := user.KubeConfig()
	if err != nil {
		return "", fmt.Errorf("writing the task service's kubeconfig: %w", err)
	}
	path := filepath.Join(dir, "task-service.kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}

// writeVerbs are the verbs of apiserver_request_total that write.
var writeVerbs = []string{"POST", "PUT", "PATCH", "APPLY", "DELETE"}

// apiWrites are the API server's write requests to Computers, by verb and
// subresource ("PATCH status", "POST").
type apiWrites map[string]float64

func (w apiWrites) total() float64 {
	var t float64
	for _, v := range w {
		t += v
	}
	return t
}

func (w apiWrites) sub(before apiWrites) apiWrites {
	out := apiWrites{}
	for k, v := range w {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (w apiWrites) String() string {
	if len(w) == 0 {
		return "none"
	}
	var parts []string
	for _, verb := range writeVerbs {
		for _, sub := range []string{"", "status"} {
			if v := w[strings.TrimSpace(verb+" "+sub)]; v != 0 {
				parts = append(parts, fmt.Sprintf("%s %.0f", strings.TrimSpace(verb+" "+sub), v))
			}
		}
	}
	return strings.Join(parts, ", ")
}

// computerWrites reads apiserver_request_total from the API server's
// /metrics and returns its writes to Computers.
func (cp *controlPlane) computerWrites(ctx context.Context) (apiWrites, error) {
	all, err := cp.writes(ctx)
	if err != nil {
		return nil, err
	}
	out := apiWrites{}
	for resource, byVerb := range all {
		name, sub, _ := strings.Cut(resource, "/")
		if name != "computers" {
			continue
		}
		for verb, v := range byVerb {
			out[strings.TrimSpace(verb+" "+sub)] += v
		}
	}
	return out, nil
}

// resourceWrites are the API server's write requests by resource
// ("computers", "computers/status", "events", …; the API group is left
// out: core and events.k8s.io Events both count as "events") and verb.
type resourceWrites map[string]map[string]float64

// writes reads apiserver_request_total from the API server's /metrics and
// returns every write it counted.
func (cp *controlPlane) writes(ctx context.Context) (resourceWrites, error) {
	families, err := cp.scrape(ctx)
	if err != nil {
		return nil, err
	}
	return writesOf(families), nil
}

// writesAndLatency reads the writes as writes does, and the time the API
// server took to answer them (apiserver_request_duration_seconds, summed).
func (cp *controlPlane) writesAndLatency(ctx context.Context) (resourceWrites, writeLatency, error) {
	families, err := cp.scrape(ctx)
	if err != nil {
		return nil, nil, err
	}
	lat := writeLatency{}
	for _, f := range families {
		if f.GetName() != "apiserver_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			verb := labelOf(m, "verb")
			if !slices.Contains(writeVerbs, verb) {
				continue
			}
			resource := labelOf(m, "resource")
			if sub := labelOf(m, "subresource"); sub != "" {
				resource += "/" + sub
			}
			h := m.GetHistogram()
			l := lat[resource]
			l.seconds += h.GetSampleSum()
			l.count += float64(h.GetSampleCount())
			lat[resource] = l
		}
	}
	return writesOf(families), lat, nil
}

// writeLatency is, by resource, how many writes the API server answered
// and the seconds it took, summed.
type writeLatency map[string]struct{ count, seconds float64 }

// sub returns the latency since before.
func (l writeLatency) sub(before writeLatency) writeLatency {
	out := writeLatency{}
	for k, v := range l {
		b := before[k]
		if v.count > b.count {
			out[k] = struct{ count, seconds float64 }{v.count - b.count, v.seconds - b.seconds}
		}
	}
	return out
}

// mean is the mean time the API server took for a write to resource.
func (l writeLatency) mean(resource string) time.Duration {
	v := l[resource]
	if v.count == 0 {
		return 0
	}
	return time.Duration(v.seconds / v.count * float64(time.Second))
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// writesOf sums apiserver_request_total's writes by resource and verb.
func writesOf(families []*dto.MetricFamily) resourceWrites {
	out := resourceWrites{}
	for key, v := range managertest.SumCounter(families, "apiserver_request_total", "resource", "verb", "subresource") {
		fields := strings.SplitN(key, " ", 3)
		if len(fields) != 3 || fields[0] == "" || !slices.Contains(writeVerbs, fields[1]) {
			continue
		}
		resource := fields[0]
		if fields[2] != "" {
			resource += "/" + fields[2]
		}
		if out[resource] == nil {
			out[resource] = map[string]float64{}
		}
		out[resource][fields[1]] += v
	}
	return out
}

// sub returns the writes since before.
func (w resourceWrites) sub(before resourceWrites) resourceWrites {
	out := resourceWrites{}
	for resource, byVerb := range w {
		for verb, v := range byVerb {
			if d := v - before[resource][verb]; d != 0 {
				if out[resource] == nil {
					out[resource] = map[string]float64{}
				}
				out[resource][verb] = d
			}
		}
	}
	return out
}

// scale multiplies every count by f.
func (w resourceWrites) scale(f float64) resourceWrites {
	out := resourceWrites{}
	for resource, byVerb := range w {
		out[resource] = map[string]float64{}
		for verb, v := range byVerb {
			out[resource][verb] = v * f
		}
	}
	return out
}

// of is the writes to resource, every verb.
func (w resourceWrites) of(resource string) float64 {
	var t float64
	for _, v := range w[resource] {
		t += v
	}
	return t
}

func (w resourceWrites) total() float64 {
	var t float64
	for resource := range w {
		t += w.of(resource)
	}
	return t
}

// resources are the resources written, those of first in that order,
// then the others by name.
func (w resourceWrites) resources(first []string) []string {
	out := slices.Clone(first)
	var others []string
	for resource := range w {
		if !slices.Contains(first, resource) {
			others = append(others, resource)
		}
	}
	slices.Sort(others)
	return append(out, others...)
}

// describe is one resource's writes with their verbs: "141 (POST 64,
// PATCH 77)", or "0".
func (w resourceWrites) describe(resource string) string {
	total := w.of(resource)
	if total == 0 {
		return "0"
	}
	var parts []string
	for _, verb := range writeVerbs {
		if v := w[resource][verb]; v != 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", verb, v))
		}
	}
	if len(parts) == 1 {
		return fmt.Sprintf("%.0f (%s)", total, strings.Fields(parts[0])[0])
	}
	return fmt.Sprintf("%.0f (%s)", total, strings.Join(parts, ", "))
}

func (cp *controlPlane) scrape(ctx context.Context) ([]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(cp.cfg.Host, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := cp.metrics.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("reading the API server's metrics: %s: %s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the API server's metrics: %w", err)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		families = append(families, f)
	}
	return families, nil
}
