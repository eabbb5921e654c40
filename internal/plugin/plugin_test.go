package plugin

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// expectGolden prints r in format and compares it with testdata/name;
// -update rewrites the file. Text output must fit Width columns, and JSON
// and YAML must read back into the report.
func expectGolden(t *testing.T, name string, format Format, r Report) {
	t.Helper()
	var out bytes.Buffer
	if err := Print(&out, format, r, now); err != nil {
		t.Fatal(err)
	}
	got := out.Bytes()
	switch format {
	case FormatText:
		for i, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
			if runes(l) > Width {
				t.Errorf("line %d is %d columns wide, more than %d:\n%s", i+1, runes(l), Width, l)
			}
		}
	case FormatJSON:
		if !json.Valid(got) {
			t.Errorf("not valid JSON:\n%s", got)
		}
	case FormatYAML:
		var back map[string]any
		if err := yaml.Unmarshal(got, &back); err != nil {
			t.Errorf("not valid YAML: %v\n%s", err, got)
		}
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/plugin/ -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (-update rewrites it):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// locateCase is one address to locate and what the answer must say,
// beside the golden file that shows it.
type locateCase struct {
	golden     string
	topology   Topology
	addr       string
	site       string
	subnet     string
	rule       protocol.Rule
	servers    []string
	overridden []string
	ignored    []string
}

func locateCases() []locateCase {
	noSites := org()
	noSites.Sites = nil
	return []locateCase{
		{golden: "locate-site", topology: org(), addr: "10.1.2.3", site: "paris", subnet: "paris-lan", rule: protocol.RuleSite,
			servers: []string{"paris-1", "paris-2"}, overridden: []string{"paris-old", "corp"}},
		{golden: "locate-inherited", topology: org(), addr: "10.1.130.7", site: "paris", subnet: "paris-wifi",
			rule: protocol.RuleSite, servers: []string{"paris-1", "paris-2"}, overridden: []string{"paris-lan", "paris-old", "corp"}},
		{golden: "locate-ignored", topology: org(), addr: "10.1.7.9", site: "paris", subnet: "paris-lan", rule: protocol.RuleSite,
			servers: []string{"paris-1", "paris-2"}, overridden: []string{"paris-old", "corp"}, ignored: []string{"paris-lab"}},
		{golden: "locate-imported-not-ready", topology: org(), addr: "10.2.3.4", site: "lyon", subnet: "lyon-ad",
			rule: protocol.RuleSiteNotReady, servers: []string{"central"}, overridden: []string{"lyon-manual", "corp"}},
		{golden: "locate-no-site", topology: org(), addr: "192.0.2.10", rule: protocol.RuleNoSite,
			servers: []string{"central"}, ignored: []string{"orphan"}},
		{golden: "locate-no-sites", topology: noSites, addr: "10.1.2.3", rule: protocol.RuleNoSites,
			servers: []string{"central", "hq-1", "lyon-1", "paris-1", "paris-2"},
			ignored: []string{"paris-lan", "paris-old", "corp"}},
		{golden: "locate-ipv6-unmapped", topology: org(), addr: "::ffff:10.9.0.1", site: "hq", subnet: "corp",
			rule: protocol.RuleSite, servers: []string{"hq-1"}},
	}
}

func names(vs []SubnetVerdict) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Name)
	}
	return out
}

func TestLocate(t *testing.T) {
	for _, c := range locateCases() {
		t.Run(c.golden, func(t *testing.T) {
			r := BuildLocate(c.topology, netip.MustParseAddr(c.addr))
			if r.Site != c.site || r.Rule != c.rule {
				t.Errorf("site %q rule %s, want %q %s", r.Site, r.Rule, c.site, c.rule)
			}
			subnet := ""
			if r.Subnet != nil {
				subnet = r.Subnet.Name
				if r.Subnet.Role != topology.RoleWinner || r.Subnet.EffectiveSite != r.Site {
					t.Errorf("winning subnet %+v: want role Winner and site %q", *r.Subnet, r.Site)
				}
			}
			if subnet != c.subnet {
				t.Errorf("subnet %q, want %q", subnet, c.subnet)
			}
			var servers []string
			for _, s := range r.Servers {
				servers = append(servers, s.Name)
			}
			if !slices.Equal(servers, c.servers) {
				t.Errorf("servers %v, want %v", servers, c.servers)
			}
			if got := names(r.Overridden); !slices.Equal(got, c.overridden) {
				t.Errorf("overridden %v, want %v", got, c.overridden)
			}
			if got := names(r.Ignored); !slices.Equal(got, c.ignored) {
				t.Errorf("ignored %v, want %v", got, c.ignored)
			}
			// The endpoints are the locator's answer: the serving servers'
			// advertised URLs, the ready ones first.
			var want []string
			for _, s := range c.topology.SiteServers {
				if slices.Contains(c.servers, s.Name) {
					want = append(want, s.Status.Task.Advertised...)
				}
			}
			if got := slices.Sorted(slices.Values(r.TaskEndpoints)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
				t.Errorf("task endpoints %v, want %v", r.TaskEndpoints, want)
			}
			expectGolden(t, c.golden, FormatText, r)
		})
	}
}

// An address that no server serves says so: in no site, with no
// unassigned server to fall back on.
func TestLocateNoServer(t *testing.T) {
	topo := org()
	topo.SiteServers = slices.DeleteFunc(topo.SiteServers, func(s siteopsv1.SiteServer) bool { return s.Name == "central" })
	r := BuildLocate(topo, netip.MustParseAddr("198.51.100.1"))
	if r.Rule != protocol.RuleNoSite || len(r.Servers) != 0 || len(r.TaskEndpoints) != 0 {
		t.Fatalf("got rule %s, servers %v, endpoints %v; want NoSite and nothing", r.Rule, r.Servers, r.TaskEndpoints)
	}
	if !strings.Contains(r.Explanation, "no server serves this address") {
		t.Errorf("explanation %q does not say that no server serves the address", r.Explanation)
	}
	expectGolden(t, "locate-no-server", FormatText, r)
}

func TestLocateFormats(t *testing.T) {
	r := BuildLocate(org(), netip.MustParseAddr("10.1.2.3"))
	expectGolden(t, "locate-site.json", FormatJSON, r)
	expectGolden(t, "locate-site.yaml", FormatYAML, r)
	// Lists are [] rather than null, so that scripts need no null checks.
	empty := BuildLocate(Topology{}, netip.MustParseAddr("10.1.2.3"))
	out, err := json.Marshal(empty)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{`"overridden":[]`, `"ignored":[]`, `"servers":[]`, `"taskEndpoints":[]`, `"packageEndpoints":[]`, `"site":""`} {
		if !bytes.Contains(out, []byte(field)) {
			t.Errorf("%s lacks %s", out, field)
		}
	}
}

func TestSite(t *testing.T) {
	r := BuildSite(parisInput())
	if r.Computers != (ComputerCounts{Total: 3, Online: 2}) {
		t.Errorf("computers %+v, want 3 of which 2 online (pc-100 is in hq)", r.Computers)
	}
	var pkgs []string
	for _, p := range r.Packages {
		pkgs = append(pkgs, p.Name)
	}
	if want := []string{"office", "win11-23h2"}; !slices.Equal(pkgs, want) {
		t.Errorf("packages %v, want %v (drivers is ready at hq only)", pkgs, want)
	}
	var subnets []string
	for _, s := range r.Subnets {
		subnets = append(subnets, s.Name+":"+s.Reason)
	}
	// paris-old maps 10.1/16 to hq but loses it to paris-lan: it is
	// not paris's. paris-wifi inherits paris.
	if want := []string{"paris-lan:Effective", "paris-wifi:Effective"}; !slices.Equal(subnets, want) {
		t.Errorf("subnets %v, want %v", subnets, want)
	}
	if r.Rule != protocol.RuleSite || !slices.Equal(r.ServedBy, []string{"paris-1", "paris-2"}) {
		t.Errorf("rule %s served by %v, want Site by paris-1, paris-2", r.Rule, r.ServedBy)
	}
	expectGolden(t, "site-paris", FormatText, r)
	expectGolden(t, "site-paris.json", FormatJSON, r)
	expectGolden(t, "site-paris.yaml", FormatYAML, r)
}

// A site whose servers are not ready is served by the unassigned servers,
// and lists the subnets naming it that lost their CIDR.
func TestSiteNotReady(t *testing.T) {
	topo := org()
	r := BuildSite(SiteInput{Site: topo.Sites[2], Topology: topo})
	if r.Rule != protocol.RuleSiteNotReady || !slices.Equal(r.ServedBy, []string{"central"}) {
		t.Errorf("rule %s served by %v, want SiteNotReady by central", r.Rule, r.ServedBy)
	}
	var subnets []string
	for _, s := range r.Subnets {
		subnets = append(subnets, s.Name+":"+s.Reason)
	}
	if want := []string{"lyon-ad:Effective", "lyon-manual:OverriddenByImport"}; !slices.Equal(subnets, want) {
		t.Errorf("subnets %v, want %v", subnets, want)
	}
	expectGolden(t, "site-lyon", FormatText, r)
}

func TestTask(t *testing.T) {
	r := BuildTask(rollout())
	if r.Package != "win11-23h2" || len(r.Sites) != 3 || len(r.Failures) != 2 {
		t.Errorf("package %q, %d sites, %d failures; want win11-23h2, 3, 2", r.Package, len(r.Sites), len(r.Failures))
	}
	expectGolden(t, "task-rollout", FormatText, r)
	expectGolden(t, "task-rollout.json", FormatJSON, r)
	expectGolden(t, "task-rollout.yaml", FormatYAML, r)

	// A task the manager has not looked at yet: no status at all.
	fresh := &siteopsv1.DeploymentTask{ObjectMeta: objMeta("reboot-all", 0)}
	fresh.Namespace = "branch"
	fresh.Spec.Action.Reboot = &siteopsv1.RebootAction{}
	expectGolden(t, "task-new", FormatText, BuildTask(fresh))
}

func TestComputer(t *testing.T) {
	r := BuildComputer(pc003())
	if r.Site != "paris" || r.SiteServer != "paris-1" || r.LastTask == nil || r.LastTask.Name != "inventory" {
		t.Errorf("site %q server %q last task %+v", r.Site, r.SiteServer, r.LastTask)
	}
	expectGolden(t, "computer-pc-003", FormatText, r)
	expectGolden(t, "computer-pc-003.json", FormatJSON, r)
	expectGolden(t, "computer-pc-003.yaml", FormatYAML, r)

	// Registered ahead of time, no agent yet.
	blank := &siteopsv1.Computer{ObjectMeta: objMeta("pc-new", 0)}
	blank.Namespace = "branch"
	expectGolden(t, "computer-new", FormatText, BuildComputer(blank))
}

// Text from the objects cannot break a line or send the terminal an
// escape sequence.
func TestTextControlCharacters(t *testing.T) {
	task := rollout()
	task.Status.Failures[1].Message = "line one\nline two\x1b[2J\tend"
	var out bytes.Buffer
	if err := Print(&out, FormatText, BuildTask(task), now); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "\x1b") || !strings.Contains(out.String(), "line one line two [2J end") {
		t.Errorf("control characters not shown as spaces:\n%s", out.String())
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"": FormatText, "text": FormatText, "json": FormatJSON, "YAML": FormatYAML} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseFormat("wide"); err == nil || !strings.Contains(err.Error(), "text, json or yaml") {
		t.Errorf("ParseFormat(wide) = %v, want an error naming the formats", err)
	}
}

func TestFitAndWrap(t *testing.T) {
	if got := fit("abcdef", 4); got != "abc…" {
		t.Errorf("fit = %q", got)
	}
	if got := fit("abc", 4); got != "abc" {
		t.Errorf("fit = %q", got)
	}
	got := wrap("the quick brown fox jumps over a lazy dog", 10)
	want := []string{"the quick", "brown fox", "jumps over", "a lazy dog"}
	if !slices.Equal(got, want) {
		t.Errorf("wrap = %q, want %q", got, want)
	}
	if got := wrap("https://a-very-long-host.example/path", 10); !slices.Equal(got, []string{"https://a…"}) {
		t.Errorf("wrap of a long word = %q", got)
	}
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 6<<30 + 300<<20: "6.3 GiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}
