package directory

import (
	"regexp"
	"strings"
	"testing"
)

var siteName = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

func TestSiteNames(t *testing.T) {
	long := "Headquarters of the Northern Region Sales and Engineering Departments, Building 7"
	got := SiteNames([]string{"Paris", "Branch Office A", "branch-office-a", "42nd Street", long, "Lyon — Part-Dieu", "Default-First-Site-Name", "***"})
	want := map[string]string{
		"Paris":                   "paris",
		"42nd Street":             "site-42nd-street",
		"Lyon — Part-Dieu":        "lyon-part-dieu",
		"Default-First-Site-Name": "default-first-site-name",
		"***":                     "site",
	}
	for ad, name := range want {
		if got[ad] != name {
			t.Errorf("%q maps to %q, want %q", ad, got[ad], name)
		}
	}
	// Two AD names that map alike both get their hash: neither wins by
	// the order the directory lists them in.
	a, b := got["Branch Office A"], got["branch-office-a"]
	if a == b || !strings.HasPrefix(a, "branch-office-a-") || !strings.HasPrefix(b, "branch-office-a-") || len(a) != len("branch-office-a-")+8 {
		t.Errorf("colliding names map to %q and %q", a, b)
	}
	if l := got[long]; len(l) > MaxSiteName || !strings.HasPrefix(l, "headquarters-of-the-northern-region-sal") {
		t.Errorf("a long name maps to %q (%d characters)", l, len(l))
	}
	for ad, name := range got {
		if len(name) > MaxSiteName || !siteName.MatchString(name) {
			t.Errorf("%q maps to %q, not a valid Site name", ad, name)
		}
	}
	// Deterministic whatever the order.
	again := SiteNames([]string{"***", "Default-First-Site-Name", "Lyon — Part-Dieu", long, "42nd Street", "branch-office-a", "Branch Office A", "Paris"})
	for ad, name := range got {
		if again[ad] != name {
			t.Errorf("%q maps to %q in one order, %q in another", ad, name, again[ad])
		}
	}
}
