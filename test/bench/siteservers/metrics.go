package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/siteops/site-operator/internal/testing/managertest"
)

// counters are the manager's counters that tell where its work went,
// summed by one label each: API requests by method and status code,
// reconciles by controller.
type counters map[string]float64

// scrapeCounters reads the manager's /metrics and sums
// rest_client_requests_total by method and code, and
// controller_runtime_reconcile_total by controller.
func scrapeCounters(ctx context.Context, address string) (counters, error) {
	families, err := managertest.Scrape(ctx, address)
	if err != nil {
		return nil, err
	}
	out := counters{}
	for key, v := range managertest.SumCounter(families, managertest.MetricRequests, "method", "code") {
		out["requests "+key] = v
	}
	for controller, v := range managertest.SumCounter(families, managertest.MetricReconciles, "controller") {
		out["reconciles "+controller] = v
	}
	return out, nil
}

// sub is c minus before, leaving out zeros.
func (c counters) sub(before counters) counters {
	out := counters{}
	for k, v := range c {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

func (c counters) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.0f; ", k, c[k])
	}
	return strings.TrimSuffix(b.String(), "; ")
}
