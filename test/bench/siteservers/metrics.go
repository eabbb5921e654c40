package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// counters are the manager's counters that tell where its work went,
// summed by one label each: API requests by method and status code,
// reconciles by controller.
type counters map[string]float64

// scrapeCounters reads the manager's /metrics and sums
// rest_client_requests_total by method and code, and
// controller_runtime_reconcile_total by controller.
func scrapeCounters(ctx context.Context, address string) (counters, error) {
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
	out := counters{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		switch name {
		case "rest_client_requests_total":
			out["requests "+label(labels, "method")+" "+label(labels, "code")] += v
		case "controller_runtime_reconcile_total":
			out["reconciles "+label(labels, "controller")] += v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the manager's metrics: %w", err)
	}
	return out, nil
}

// label is the value of a label in a Prometheus label list.
func label(labels, name string) string {
	for _, kv := range strings.Split(labels, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
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
