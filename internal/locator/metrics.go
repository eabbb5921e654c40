package locator

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/siteops/site-operator/internal/protocol"
)

// ruleIndex numbers the rules so that metrics need no map lookup.
type ruleIndex int

const (
	ruleSite ruleIndex = iota
	ruleNoSites
	ruleSiteNotReady
	ruleNoSite
	ruleRejected
	ruleCount
)

var rules = [ruleCount]protocol.Rule{
	ruleSite:         protocol.RuleSite,
	ruleNoSites:      protocol.RuleNoSites,
	ruleSiteNotReady: protocol.RuleSiteNotReady,
	ruleNoSite:       protocol.RuleNoSite,
	ruleRejected:     "Rejected",
}

// Metrics are the locator's Prometheus metrics: no label names an object.
type Metrics struct {
	locates  [ruleCount]prometheus.Counter
	rejected *prometheus.CounterVec
	latency  prometheus.Histogram
}

// NewMetrics makes the locator's metrics and registers them with reg
// (metrics.Registry in the manager; nil registers nothing):
//
//   - siteops_locator_locates_total{rule}: answers by serving rule
//     (Site, NoSites, SiteNotReady, NoSite) and refused requests
//     (Rejected);
//   - siteops_locator_rejected_total{code}: refused requests by HTTP status;
//   - siteops_locator_duration_seconds: time from request to answer.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	locates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "siteops_locator_locates_total",
		Help: "Locate requests answered by this replica, by the serving rule that chose the servers (Rejected: refused as bad input).",
	}, []string{"rule"})
	m := &Metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "siteops_locator_rejected_total",
			Help: "Locate requests refused by this replica, by HTTP status.",
		}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "siteops_locator_duration_seconds",
			Help:    "Time to answer a locate request, from its headers read to its answer written.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3},
		}),
	}
	for i, rule := range rules {
		m.locates[i] = locates.WithLabelValues(string(rule))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{locates, m.rejected, m.latency} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func (m *Metrics) observe(rule ruleIndex, status int, d time.Duration) {
	m.locates[rule].Inc()
	if rule == ruleRejected {
		m.rejected.WithLabelValues(strconv.Itoa(status)).Inc()
	}
	m.latency.Observe(d.Seconds())
}
