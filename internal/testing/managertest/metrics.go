package managertest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics a manager exports that tell where its work went.
const (
	// MetricReconciles is controller-runtime's count of finished
	// reconciles, labelled by controller and result.
	MetricReconciles = "controller_runtime_reconcile_total"
	// MetricRequests is client-go's count of API requests, labelled by
	// method, code and host.
	MetricRequests = "rest_client_requests_total"
)

// ReconcileTotals is MetricReconciles of the managers running in this
// process, by controller, summed over results.
func ReconcileTotals() (map[string]float64, error) {
	families, err := metrics.Registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering the controller-runtime metrics: %w", err)
	}
	return SumCounter(families, MetricReconciles, "controller"), nil
}

// Scrape reads the metrics that a manager serves over HTTP at address
// (host:port, path /metrics).
func Scrape(ctx context.Context, address string) ([]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+address+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading the manager's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("reading the manager's metrics: %s: %s", resp.Status, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the manager's metrics: %w", err)
	}
	families := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		families = append(families, f)
	}
	return families, nil
}

// SumCounter sums the counter name over every label but by: the keys are
// the values of the labels by, joined by spaces.
func SumCounter(families []*dto.MetricFamily, name string, by ...string) map[string]float64 {
	sums := map[string]float64{}
	for _, family := range families {
		if family.GetName() != name {
			continue
		}
		for _, m := range family.GetMetric() {
			values := make([]string, len(by))
			for i, label := range by {
				values[i] = labelValue(m, label)
			}
			sums[strings.Join(values, " ")] += m.GetCounter().GetValue()
		}
	}
	return sums
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
