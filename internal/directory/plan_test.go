package directory

import (
	"slices"
	"strings"
	"testing"
)

const base = "CN=Sites,CN=Configuration,DC=corp,DC=example"

func site(cn, desc string) Site {
	return Site{DN: "CN=" + cn + "," + base, CN: cn, Description: desc}
}

func subnet(cn, siteCN string) Subnet {
	s := Subnet{DN: "CN=" + strings.ReplaceAll(cn, "/", `\/`) + ",CN=Subnets," + base, CN: cn}
	if siteCN != "" {
		s.SiteDN = "CN=" + siteCN + "," + base
	}
	return s
}

func TestPlanFirstImportAndNoChange(t *testing.T) {
	dir := Directory{
		Sites:   []Site{site("Paris HQ", "head office"), site("Lyon", "")},
		Subnets: []Subnet{subnet("10.1.0.0/16", "Paris HQ"), subnet("10.2.0.0/16", "Lyon"), subnet("10.3.0.0/16", "")},
	}
	p := Make("corp", dir, Cluster{}, 25)
	if len(p.CreateSites) != 2 || len(p.CreateSubnets) != 3 || p.Sites != 2 || p.Subnets != 3 || len(p.Skipped) != 0 {
		t.Fatalf("first import: %+v", p)
	}
	got := map[string]DesiredSubnet{}
	for _, s := range p.CreateSubnets {
		got[s.CIDR] = s
	}
	if got["10.1.0.0/16"].Site != "paris-hq" || got["10.3.0.0/16"].Site != "" || got["10.2.0.0/16"].Name != "corp-10-2-0-0-16" {
		t.Errorf("subnets %+v", got)
	}
	// The cluster as the plan left it: a second plan writes nothing.
	c := applied(p, "corp", Cluster{Sites: map[string]ExistingSite{}, Subnets: map[string]ExistingSubnet{}})
	again := Make("corp", dir, c, 25)
	if len(again.CreateSites)+len(again.UpdateSites)+len(again.CreateSubnets)+len(again.UpdateSubnets)+
		len(again.DeleteSites)+len(again.DeleteSubnets)+len(again.ReleaseSites) != 0 {
		t.Errorf("nothing changed, yet the plan writes: %+v", again)
	}
}

// applied is c after p, as the controller would leave it.
func applied(p Plan, importName string, c Cluster) Cluster {
	for _, s := range append(slices.Clone(p.CreateSites), p.UpdateSites...) {
		ex := c.Sites[s.Name]
		c.Sites[s.Name] = ExistingSite{Import: importName, Adopted: s.Adopt || ex.Adopted, DisplayName: s.DisplayName,
			Description: s.Description, Location: s.Location}
	}
	for _, s := range append(slices.Clone(p.CreateSubnets), p.UpdateSubnets...) {
		c.Subnets[s.Name] = ExistingSubnet{CIDR: s.CIDR, Site: s.Site, Description: s.Description, Location: s.Location}
	}
	if !p.DeletionsHeld {
		for _, n := range p.DeleteSites {
			delete(c.Sites, n)
		}
		for _, n := range p.DeleteSubnets {
			delete(c.Subnets, n)
		}
	}
	for _, n := range p.ReleaseSites {
		ex := c.Sites[n]
		ex.Import, ex.Adopted = "", false
		c.Sites[n] = ex
	}
	return c
}

func TestPlanAdoptReleaseKeepDelete(t *testing.T) {
	c := Cluster{
		Sites: map[string]ExistingSite{
			"lyon":      {DisplayName: "Lyon (manual)", Description: "old"},
			"nice":      {Import: "corp", Adopted: true},
			"brest":     {Import: "corp", ListedByServer: true},
			"gone":      {Import: "corp"},
			"elsewhere": {Import: "other"},
		},
		Subnets: map[string]ExistingSubnet{},
	}
	dir := Directory{Sites: []Site{site("Lyon", "from AD"), site("Elsewhere", "")}}
	p := Make("corp", dir, c, 100)
	if len(p.UpdateSites) != 1 || !p.UpdateSites[0].Adopt || p.UpdateSites[0].Description != "from AD" || p.UpdateSites[0].DisplayName != "Lyon (manual)" {
		t.Errorf("adoption: %+v", p.UpdateSites)
	}
	if !slices.Equal(p.ReleaseSites, []string{"nice"}) || !slices.Equal(p.DeleteSites, []string{"gone"}) {
		t.Errorf("release %v, delete %v", p.ReleaseSites, p.DeleteSites)
	}
	var reasons []string
	for _, s := range p.Skipped {
		reasons = append(reasons, s.DN+": "+s.Reason)
	}
	joined := strings.Join(reasons, "\n")
	if !strings.Contains(joined, "Site brest") || !strings.Contains(joined, "managed by DirectoryImport other") {
		t.Errorf("skipped: %s", joined)
	}
}

func TestPlanBadSubnets(t *testing.T) {
	dir := Directory{
		Sites: []Site{site("Paris", "")},
		Subnets: []Subnet{
			subnet("10.1.2.3/16", "Paris"), subnet("not-a-prefix", "Paris"), subnet("::ffff:10.0.0.0/104", "Paris"),
			subnet("10.9.0.0/16", "Atlantis"), subnet("10.1.0.0/16", "Paris"),
		},
	}
	p := Make("corp", dir, Cluster{}, 25)
	if len(p.Skipped) != 3 || len(p.CreateSubnets) != 2 {
		t.Fatalf("skipped %+v, created %+v", p.Skipped, p.CreateSubnets)
	}
	for _, s := range p.CreateSubnets {
		if s.CIDR == "10.9.0.0/16" && s.Site != "atlantis" {
			t.Errorf("a subnet of a site not in the directory names %q, want atlantis (SiteNotFound)", s.Site)
		}
	}
	for _, want := range []string{"host bits", "not a prefix", "IPv4-mapped"} {
		found := false
		for _, s := range p.Skipped {
			found = found || strings.Contains(s.Reason, want)
		}
		if !found {
			t.Errorf("no entry skipped for %q: %+v", want, p.Skipped)
		}
	}
}

// A directory that suddenly lists far fewer entries deletes nothing.
func TestPlanHoldsMassDeletion(t *testing.T) {
	c := Cluster{Sites: map[string]ExistingSite{}, Subnets: map[string]ExistingSubnet{}}
	full := Directory{}
	for i := range 20 {
		full.Sites = append(full.Sites, site("Site "+string(rune('A'+i)), ""))
	}
	c = applied(Make("corp", full, c, 25), "corp", c)
	few := Directory{Sites: full.Sites[:5]}
	p := Make("corp", few, c, 25)
	if !p.DeletionsHeld || len(p.DeleteSites) != 15 || p.Sites != 20 {
		t.Errorf("15 of 20 gone at 25%%: held %v, deletes %d, sites %d", p.DeletionsHeld, len(p.DeleteSites), p.Sites)
	}
	some := Directory{Sites: full.Sites[:16]}
	if p := Make("corp", some, c, 25); p.DeletionsHeld || len(p.DeleteSites) != 4 {
		t.Errorf("4 of 20 gone at 25%%: held %v, deletes %d", p.DeletionsHeld, len(p.DeleteSites))
	}
	if p := Make("corp", few, c, 100); p.DeletionsHeld {
		t.Error("maxDeletePercent 100 held deletions")
	}
}

// A site and a subnet's siteObject that name it with different escapes or
// case are the same site.
func TestPlanComparesDNsParsed(t *testing.T) {
	dir := Directory{
		Sites:   []Site{{DN: `CN=Lab\3B North,` + base, Key: DNKey(`CN=Lab\3B North,` + base), CN: "Lab; North"}},
		Subnets: []Subnet{{DN: "CN=10.5.0.0/16,CN=Subnets," + base, CN: "10.5.0.0/16", SiteDN: `cn=Lab\; North,` + base, SiteKey: DNKey(`cn=Lab\; North,` + base)}},
	}
	p := Make("corp", dir, Cluster{}, 25)
	if len(p.CreateSubnets) != 1 || p.CreateSubnets[0].Site != "lab-north" {
		t.Errorf("subnet %+v, want site lab-north", p.CreateSubnets)
	}
}
