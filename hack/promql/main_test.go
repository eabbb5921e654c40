// Package promql checks the PromQL that the chart ships: every expression
// of the PrometheusRule and of the Grafana dashboard parses with the
// Prometheus parser, the rule groups pass Prometheus' own rule-file checks
// (what promtool check rules runs), and every metric they read is one that
// the project's binaries export. It is a module of its own so that the
// Prometheus module stays out of the operator's go.mod.
//
// Run it with `make test`, or `cd hack/promql && go test ./...`.
package promql

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	promparser "github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// root is the repository's top directory.
const root = "../.."

// promql is the parser that Prometheus' rule loading uses by default.
var promql = promparser.NewParser(promparser.Options{})

// allOn renders every monitoring part of the chart.
var allOn = []string{
	"monitoring.serviceMonitor.enabled=true",
	"monitoring.podMonitor.enabled=true",
	"monitoring.prometheusRule.enabled=true",
	"monitoring.dashboards.enabled=true",
}

// render runs the pinned helm (hack/tools) on the chart with sets and
// returns the rendered documents.
func render(t *testing.T, sets ...string) []map[string]any {
	t.Helper()
	args := []string{"tool", "-modfile=hack/tools/go.mod", "helm", "template", "site-operator", "charts/site-operator",
		"--namespace", "site-operator-system"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("decoding the rendered chart: %v", err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	return docs
}

func ofKind(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

// grafanaVars are what Grafana puts in place of its variables before a
// query reaches Prometheus.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m",
	"$__interval", "1m",
	"$__range", "6h",
	"${namespace}", ".*",
	"$namespace", ".*",
)

// labelValues is the form of a Grafana variable query: label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// query is one PromQL expression and where it comes from.
type query struct {
	where, expr string
}

func TestRulesAndDashboards(t *testing.T) {
	inventory := metricInventory(t)
	docs := render(t, allOn...)

	var queries []query
	rules := ofKind(docs, "PrometheusRule")
	if len(rules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(rules))
	}
	alerts := checkRules(t, rules[0])
	for _, a := range alerts {
		queries = append(queries, query{"alert " + a.Alert, a.Expr})
	}
	for _, want := range []string{"SiteopsSiteServersNotReady", "SiteopsReplicationFailing", "SiteopsReplicationLagging",
		"SiteopsDeploymentTaskStopped", "SiteopsAgentsOffline", "SiteopsTaskServiceNoCheckIns", "SiteopsManagerAbsent"} {
		if !slices.ContainsFunc(alerts, func(r rulefmt.Rule) bool { return r.Alert == want }) {
			t.Errorf("no alert %s", want)
		}
	}

	var dashboards int
	for _, cm := range ofKind(docs, "ConfigMap") {
		labels, _ := cm["metadata"].(map[string]any)["labels"].(map[string]any)
		if labels["grafana_dashboard"] != "1" {
			continue
		}
		data, _ := cm["data"].(map[string]any)
		for key, v := range data {
			dashboards++
			queries = append(queries, dashboardQueries(t, key, v.(string))...)
		}
	}
	if dashboards == 0 {
		t.Fatal("no dashboard ConfigMap with the label grafana_dashboard: \"1\" rendered")
	}

	used := map[string]bool{}
	for _, q := range queries {
		expr, err := promql.ParseExpr(grafanaVars.Replace(q.expr))
		if err != nil {
			t.Errorf("%s: %q does not parse: %v", q.where, q.expr, err)
			continue
		}
		for _, name := range metricNames(expr) {
			used[name] = true
			if !known(inventory, name) {
				t.Errorf("%s reads %s, which no binary of the project exports (nor is it listed in testdata/external-metrics.txt)", q.where, name)
			}
		}
	}
	t.Logf("%d expressions parsed, reading %d metrics of the %d exported", len(queries), len(used), len(inventory))

	// The domain metrics of issue 11 are all drawn on the dashboard or alerted on.
	for _, name := range []string{"siteops_task_agents_active", "siteops_task_work_dispatched_total", "siteops_task_work_results_total",
		"siteops_package_replicated_bytes_total", "siteops_package_replication_lag_seconds", "siteops_locator_locates_total",
		"siteops_package_served_bytes_total", "siteops_siteservers", "siteops_deploymenttasks", "siteops_computers"} {
		if !used[name] {
			t.Errorf("%s is neither on the dashboard nor in an alert", name)
		}
	}
}

// Without the manager's ServiceMonitor, nothing scrapes the metric whose
// absence SiteopsManagerAbsent watches: the alert is left out. And nothing
// of monitoring is rendered by default.
func TestManagerAbsentNeedsTheServiceMonitor(t *testing.T) {
	docs := render(t, "monitoring.prometheusRule.enabled=true")
	for _, a := range checkRules(t, ofKind(docs, "PrometheusRule")[0]) {
		if a.Alert == "SiteopsManagerAbsent" {
			t.Error("SiteopsManagerAbsent is rendered without monitoring.serviceMonitor.enabled")
		}
	}
	defaults := render(t)
	for _, kind := range []string{"PrometheusRule", "ServiceMonitor", "PodMonitor"} {
		if n := len(ofKind(defaults, kind)); n != 0 {
			t.Errorf("%d %s rendered by default", n, kind)
		}
	}
	for _, cm := range ofKind(defaults, "ConfigMap") {
		if strings.HasSuffix(cm["metadata"].(map[string]any)["name"].(string), "-dashboards") {
			t.Error("the dashboard ConfigMap is rendered by default")
		}
	}
}

// checkRules runs Prometheus' rule-file checks on the PrometheusRule's
// groups (expressions, durations, label names, annotation templates) and
// asks each alert for a for, a severity, a summary and a description.
func checkRules(t *testing.T, pr map[string]any) []rulefmt.Rule {
	t.Helper()
	spec, err := yaml.Marshal(pr["spec"])
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rule groups: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	var alerts []rulefmt.Rule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r)
			if r.For <= 0 {
				t.Errorf("alert %s has no for", r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s has no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("alert %s has no %s annotation", r.Alert, a)
				}
			}
		}
	}
	return alerts
}

// dashboardQueries are the expressions of a dashboard's panels (rows
// included) and the selectors of its variables.
func dashboardQueries(t *testing.T, name, data string) []query {
	t.Helper()
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			Panels []json.RawMessage `json:"panels"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		t.Fatalf("dashboard %s: %v", name, err)
	}
	if d.UID == "" {
		t.Errorf("dashboard %s has no uid: Grafana would duplicate it on every load", name)
	}
	var out []query
	for _, p := range d.Panels {
		if len(p.Panels) != 0 {
			t.Errorf("dashboard %s: row %q is collapsed; keep rows open so that every panel is checked here", name, p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("dashboard %s: panel %q has no query", name, p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("dashboard %s: panel %q has a target without expr", name, p.Title)
			}
			out = append(out, query{fmt.Sprintf("dashboard %s panel %q", name, p.Title), tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		var s string
		if json.Unmarshal(v.Query, &s) == nil {
			q.Query = s
		} else if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("dashboard %s: variable %s: %v", name, v.Name, err)
			continue
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q.Query))
		if m == nil {
			t.Errorf("dashboard %s: variable %s: %q is not label_values(selector, label)", name, v.Name, q.Query)
			continue
		}
		out = append(out, query{fmt.Sprintf("dashboard %s variable %s", name, v.Name), m[1]})
	}
	return out
}

// metricNames are the metric names that expr's selectors read.
func metricNames(expr promparser.Expr) []string {
	var names []string
	promparser.Inspect(expr, func(n promparser.Node, _ []promparser.Node) error {
		vs, ok := n.(*promparser.VectorSelector)
		if !ok {
			return nil
		}
		if vs.Name != "" {
			names = append(names, vs.Name)
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" && m.Type.String() == "=" {
				names = append(names, m.Value)
			}
		}
		return nil
	})
	return names
}

// known says whether name is exported: itself, or a histogram's series.
func known(inventory map[string]bool, name string) bool {
	if inventory[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && inventory[base] {
			return true
		}
	}
	return false
}

// siteopsName is a metric name of the project's own.
var siteopsName = regexp.MustCompile(`^siteops_[a-z0-9_]+[a-z0-9]$`)

// metricInventory is every metric the project's binaries may export: the
// string constants named siteops_* in the Go sources that build them
// (cmd/, controllers/, internal/; not tests, test/ or hack/), and the
// metrics of the libraries they use that testdata/external-metrics.txt
// lists.
func metricInventory(t *testing.T) map[string]bool {
	t.Helper()
	inventory := map[string]bool{}
	fset := token.NewFileSet()
	for _, dir := range []string{"cmd", "controllers", "internal"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				if s, err := strconv.Unquote(lit.Value); err == nil && siteopsName.MatchString(s) {
					inventory[s] = true
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The names asked of the binaries must be found, or the scan is broken.
	for _, name := range []string{"siteops_task_agents_active", "siteops_locator_locates_total",
		"siteops_package_replicated_bytes_total", "siteops_siteservers", "siteops_topology_subnets"} {
		if !inventory[name] {
			t.Fatalf("the scan of the Go sources did not find %s: it finds %v", name, slices.Sorted(func(yield func(string) bool) {
				for k := range inventory {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}
	external, err := os.ReadFile("testdata/external-metrics.txt")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(external)) {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			inventory[line] = true
		}
	}
	return inventory
}
