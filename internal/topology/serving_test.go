package topology

import (
	"slices"
	"testing"
)

// srv builds a Server; ready says whether its task service is ready.
func srv(name string, ready bool, sites ...string) Server {
	return Server{Name: name, Sites: sites, TaskReady: ready}
}

func TestServersFor(t *testing.T) {
	tests := []struct {
		name       string
		agentSite  string
		sitesExist bool
		servers    []Server
		want       []string
	}{
		{
			name:       "own site with a ready server: only the site's servers",
			agentSite:  "paris",
			sitesExist: true,
			servers: []Server{srv("central", true), srv("paris-1", true, "paris"),
				srv("lyon-1", true, "lyon")},
			want: []string{"paris-1"},
		},
		{
			name:       "every server of the site once one is ready, ready or not",
			agentSite:  "paris",
			sitesExist: true,
			servers: []Server{srv("paris-2", false, "paris"), srv("central", true),
				srv("paris-1", true, "paris")},
			want: []string{"paris-1", "paris-2"},
		},
		{
			name:       "a server listing several sites serves each of them",
			agentSite:  "lyon",
			sitesExist: true,
			servers:    []Server{srv("regional", true, "paris", "lyon"), srv("central", true)},
			want:       []string{"regional"},
		},
		{
			name:       "no Site at all: every server serves every agent, ready or not",
			agentSite:  "",
			sitesExist: false,
			servers: []Server{srv("paris-1", false, "paris"), srv("central", true),
				srv("b", false)},
			want: []string{"b", "central", "paris-1"},
		},
		{
			name:       "no Site at all: the agent's site does not matter",
			agentSite:  "paris",
			sitesExist: false,
			servers:    []Server{srv("lyon-1", true, "lyon"), srv("central", false)},
			want:       []string{"central", "lyon-1"},
		},
		{
			name:       "agent in no site: the unassigned servers",
			agentSite:  "",
			sitesExist: true,
			servers: []Server{srv("paris-1", true, "paris"), srv("central-b", true),
				srv("central-a", false)},
			want: []string{"central-a", "central-b"},
		},
		{
			name:       "site with servers none of which is ready: the unassigned servers",
			agentSite:  "paris",
			sitesExist: true,
			servers: []Server{srv("paris-1", false, "paris"), srv("central", true),
				srv("lyon-1", true, "lyon")},
			want: []string{"central"},
		},
		{
			name:       "site without a server: the unassigned servers",
			agentSite:  "paris",
			sitesExist: true,
			servers:    []Server{srv("lyon-1", true, "lyon"), srv("central", true)},
			want:       []string{"central"},
		},
		{
			name:       "fallback to unassigned servers that are not ready either",
			agentSite:  "paris",
			sitesExist: true,
			servers:    []Server{srv("paris-1", false, "paris"), srv("central", false)},
			want:       []string{"central"},
		},
		{
			name:       "fallback needed and no unassigned server: nobody",
			agentSite:  "paris",
			sitesExist: true,
			servers:    []Server{srv("paris-1", false, "paris"), srv("lyon-1", true, "lyon")},
			want:       nil,
		},
		{
			name:       "agent in no site and no unassigned server: nobody",
			agentSite:  "",
			sitesExist: true,
			servers:    []Server{srv("paris-1", true, "paris")},
			want:       nil,
		},
		{
			name:       "no servers at all",
			agentSite:  "paris",
			sitesExist: true,
			servers:    nil,
			want:       nil,
		},
		{
			name:       "no servers and no sites",
			agentSite:  "",
			sitesExist: false,
			servers:    nil,
			want:       nil,
		},
		{
			name:       "a server of a missing site is not a fallback",
			agentSite:  "",
			sitesExist: true,
			servers:    []Server{srv("ghost-1", true, "ghost"), srv("central", true)},
			want:       []string{"central"},
		},
		{
			name:       "a server of a missing site does not serve other sites",
			agentSite:  "paris",
			sitesExist: true,
			servers:    []Server{srv("ghost-1", true, "ghost")},
			want:       nil,
		},
		{
			name:       "a server listing only the empty site name is unassigned",
			agentSite:  "",
			sitesExist: true,
			servers:    []Server{srv("odd", true, ""), srv("paris-1", true, "paris")},
			want:       []string{"odd"},
		},
		{
			name:       "sorted and without duplicates",
			agentSite:  "paris",
			sitesExist: true,
			servers: []Server{srv("p-c", true, "paris"), srv("p-a", false, "paris"),
				srv("p-b", true, "paris", "paris"), srv("p-a", false, "paris")},
			want: []string{"p-a", "p-b", "p-c"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			input := slices.Clone(tt.servers)
			got := ServersFor(tt.agentSite, tt.sitesExist, tt.servers)
			if !slices.Equal(got, tt.want) {
				t.Errorf("ServersFor(%q, %v) = %q, want %q", tt.agentSite, tt.sitesExist, got, tt.want)
			}
			if !slices.EqualFunc(input, tt.servers, func(a, b Server) bool {
				return a.Name == b.Name && a.TaskReady == b.TaskReady && slices.Equal(a.Sites, b.Sites)
			}) {
				t.Errorf("ServersFor changed its input: %v, was %v", tt.servers, input)
			}
		})
	}
}

// TestServersForIgnoresOrder checks that the answer depends on the set of
// servers, not on the order a cache lists them in.
func TestServersForIgnoresOrder(t *testing.T) {
	servers := []Server{srv("paris-2", true, "paris"), srv("central", true),
		srv("paris-1", false, "paris"), srv("central-2", false)}
	for _, site := range []string{"paris", "", "lyon"} {
		want := ServersFor(site, true, servers)
		reversed := slices.Clone(servers)
		slices.Reverse(reversed)
		if got := ServersFor(site, true, reversed); !slices.Equal(got, want) {
			t.Errorf("site %q: reversed input gives %q, want %q", site, got, want)
		}
	}
}

func TestOfSiteAndUnassigned(t *testing.T) {
	servers := []Server{srv("paris-1", false, "paris"), srv("central", true),
		srv("both", true, "lyon", "paris"), srv("lyon-1", true, "lyon")}
	tests := []struct {
		name string
		got  []Server
		want []string
	}{
		{"of paris, in input order", OfSite("paris", servers), []string{"paris-1", "both"}},
		{"of lyon", OfSite("lyon", servers), []string{"both", "lyon-1"}},
		{"of a site nobody serves", OfSite("nice", servers), nil},
		{"of the empty site", OfSite("", servers), nil},
		{"unassigned", Unassigned(servers), []string{"central"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, s := range tt.got {
				got = append(got, s.Name)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHasReadyServer(t *testing.T) {
	servers := []Server{srv("paris-1", false, "paris"), srv("central", true),
		srv("lyon-1", true, "lyon"), srv("odd", true, "")}
	tests := []struct {
		site string
		want bool
	}{
		{"lyon", true},   // its own server is ready
		{"paris", false}, // its own server is not ready; central does not count
		{"nice", false},  // no server of its own
		{"", false},      // the empty site has no servers, even ones listing ""
	}
	for _, tt := range tests {
		if got := HasReadyServer(tt.site, servers); got != tt.want {
			t.Errorf("HasReadyServer(%q) = %v, want %v", tt.site, got, tt.want)
		}
	}
}

func TestServerNames(t *testing.T) {
	if got := ServerNames(nil); got != nil {
		t.Errorf("ServerNames(nil) = %q, want nil", got)
	}
	got := ServerNames([]Server{srv("b", true), srv("a", false), srv("b", false)})
	if want := []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("ServerNames = %q, want %q", got, want)
	}
}
