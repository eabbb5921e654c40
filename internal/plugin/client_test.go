package plugin

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// fakeCluster holds the fixtures in a fake client: reading and printing
// are what these tests check, the API server's own behaviour (the
// field selector on status.site, paging) is the e2e spec's. The fake
// client evaluates status.site through an index, as the API server does
// through the CRD's selectable field.
func fakeCluster(t *testing.T) Client {
	t.Helper()
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	in := parisInput()
	var objs []client.Object
	for i := range in.Topology.Sites {
		objs = append(objs, &in.Topology.Sites[i])
	}
	for i := range in.Topology.Subnets {
		objs = append(objs, &in.Topology.Subnets[i])
	}
	for i := range in.Topology.SiteServers {
		objs = append(objs, &in.Topology.SiteServers[i])
	}
	for i := range in.Computers {
		objs = append(objs, &in.Computers[i])
	}
	for i := range in.Packages {
		objs = append(objs, &in.Packages[i])
	}
	objs = append(objs, rollout(), pc003Elsewhere())
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&siteopsv1.Computer{}, "status.site", func(o client.Object) []string {
			return []string{o.(*siteopsv1.Computer).Status.Site}
		}).Build()
	return Client{Reader: c}
}

// pc003Elsewhere is pc003 in the namespace "lab" (the fixtures' Computers
// are in "branch"), so that the computer command must read the namespace
// it is given.
func pc003Elsewhere() *siteopsv1.Computer {
	c := pc003()
	c.Namespace = "lab"
	return c
}

// Each command reads what its report needs and prints the same report as
// the pure Build functions make from the fixtures.
func TestRunReadsTheCluster(t *testing.T) {
	c := fakeCluster(t)
	cases := []struct {
		command, arg, golden string
		opts                 Options
	}{
		{command: "locate", arg: "10.1.2.3", golden: "locate-site"},
		{command: "locate", arg: "10.1.2.3", golden: "locate-site.json", opts: Options{Format: FormatJSON}},
		{command: "site", arg: "paris", golden: "site-paris", opts: Options{SiteNamespace: "branch"}},
		{command: "site", arg: "paris", golden: "site-paris.yaml", opts: Options{Format: FormatYAML, SiteNamespace: "branch"}},
		{command: "task", arg: "win11-rollout", golden: "task-rollout", opts: Options{Namespace: "branch"}},
		{command: "computer", arg: "pc-003", golden: "computer-pc-003", opts: Options{Namespace: "lab"}},
	}
	for _, tc := range cases {
		t.Run(tc.command+"/"+tc.golden, func(t *testing.T) {
			tc.opts.Now = now
			if tc.opts.Format == "" {
				tc.opts.Format = FormatText
			}
			var out bytes.Buffer
			if err := Run(context.Background(), c, tc.command, []string{tc.arg}, tc.opts, &out); err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", tc.golden+".golden"))
			if err != nil {
				t.Fatal(err)
			}
			got := out.String()
			if tc.command == "computer" {
				// The same computer, read from namespace lab.
				got = strings.Replace(got, "branch/pc-003", "lab/pc-003", 1)
				want = bytes.Replace(want, []byte("branch/pc-003"), []byte("lab/pc-003"), 1)
			}
			if got != string(want) {
				t.Errorf("output differs from %s.golden:\n--- got\n%s\n--- want\n%s", tc.golden, got, want)
			}
		})
	}
}

// The site command counts the Computers and Packages of every namespace,
// or of the one it is limited to.
func TestRunSiteNamespaces(t *testing.T) {
	c := fakeCluster(t)
	for namespace, want := range map[string]struct {
		computers ComputerCounts
		packages  int
	}{
		"":       {computers: ComputerCounts{Total: 4, Online: 2}, packages: 2},
		"branch": {computers: ComputerCounts{Total: 3, Online: 2}, packages: 2},
		"lab":    {computers: ComputerCounts{Total: 1}},
	} {
		in, err := c.Site(context.Background(), "paris", namespace)
		if err != nil {
			t.Fatal(err)
		}
		r := BuildSite(in)
		if r.Computers != want.computers || len(r.Packages) != want.packages {
			t.Errorf("namespace %q: computers %+v, %d packages; want %+v, %d", namespace, r.Computers, len(r.Packages),
				want.computers, want.packages)
		}
	}
}

func TestRunErrors(t *testing.T) {
	c := fakeCluster(t)
	cases := []struct {
		command string
		args    []string
		opts    Options
		want    string
		usage   bool
	}{
		{command: "site", args: []string{"berlin"}, want: `getting Site "berlin": not found`},
		{command: "task", args: []string{"win11-rollout"}, opts: Options{Namespace: "default"},
			want: "getting DeploymentTask default/win11-rollout: not found"},
		{command: "computer", args: []string{"pc-404"}, opts: Options{Namespace: "branch"},
			want: "getting Computer branch/pc-404: not found"},
		{command: "locate", args: []string{"10.1.2"}, want: `"10.1.2" is not an IPv4 or IPv6 address`, usage: true},
		{command: "locate", args: nil, want: "locate takes one argument: kubectl siteops locate <address>", usage: true},
		{command: "sites", args: []string{"paris"}, want: `unknown command "sites"`, usage: true},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			var out bytes.Buffer
			err := Run(context.Background(), c, tc.command, tc.args, tc.opts, &out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if errors.Is(err, errUsage) != tc.usage {
				t.Errorf("usage error: %v, want %v", errors.Is(err, errUsage), tc.usage)
			}
			if out.Len() != 0 {
				t.Errorf("printed %q with an error", out.String())
			}
		})
	}
}

func TestUsageFits(t *testing.T) {
	for _, l := range strings.Split(usage, "\n") {
		if runes(l) > Width {
			t.Errorf("usage line wider than %d: %s", Width, l)
		}
	}
}

// Main checks its command line before it reads a kubeconfig, and exits 2
// for a mistake in it.
func TestMainCommandLine(t *testing.T) {
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none"))
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{args: []string{"--help"}, code: 0, stdout: "kubectl siteops locate <address>"},
		{args: nil, code: 2, stderr: "kubectl siteops locate <address>"},
		{args: []string{"locate", "10.1.2.3", "-o", "xml"}, code: 2, stderr: `output format "xml" is not supported`},
		{args: []string{"locate", "nowhere"}, code: 2, stderr: `"nowhere" is not an IPv4 or IPv6 address`},
		{args: []string{"--bogus", "locate", "10.1.2.3"}, code: 2, stderr: "unknown flag: --bogus"},
		// Flags after the argument, as kubectl users write them.
		{args: []string{"locate", "10.1.2.3", "-o", "json", "-n", "branch"}, code: 1, stderr: "no kubeconfig found"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d; stderr %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stdout %q stderr %q; want %q and %q", stdout.String(), stderr.String(), tc.stdout, tc.stderr)
			}
			for _, l := range strings.Split(stdout.String(), "\n") {
				if runes(l) > Width {
					t.Errorf("line wider than %d: %s", Width, l)
				}
			}
		})
	}
}
