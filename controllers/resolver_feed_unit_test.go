package controllers

import (
	"maps"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/siteops/site-operator/internal/topology"
)

// Each replica exports the size of its own table by reason, so replicas
// that disagree show it.
func TestTopologyCollector(t *testing.T) {
	created := time.Unix(0, 0)
	r := topology.Build([]topology.Subnet{
		{Name: "a", Prefix: netip.MustParsePrefix("10.0.0.0/8"), Site: "hq", Created: created},
		{Name: "b", Prefix: netip.MustParsePrefix("10.1.0.0/16"), Created: created},
		{Name: "c", Prefix: netip.MustParsePrefix("10.2.0.0/16"), Site: "gone", Created: created},
		{Name: "d", Prefix: netip.MustParsePrefix("172.16.0.0/12"), Created: created},
	}, []string{"hq"})
	reg := prometheus.NewRegistry()
	if err := reg.Register(TopologyCollector(r)); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "siteops_topology_subnets" {
			continue
		}
		for _, m := range f.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	want := map[string]float64{"Effective": 2, "NoSite": 1, "SiteNotFound": 1}
	if !maps.Equal(got, want) {
		t.Errorf("siteops_topology_subnets = %v, want %v", got, want)
	}
}
