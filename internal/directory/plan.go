package directory

import (
	"fmt"
	"net/netip"
	"strings"
)

// Site is an AD site object.
type Site struct {
	// DN is its distinguished name, CN its name.
	DN, CN string
	// Key is DNKey(DN); empty means the lower-cased DN.
	Key                   string
	Description, Location string
}

// Subnet is an AD subnet object: its CN is the prefix.
type Subnet struct {
	DN, CN string
	// SiteDN is its siteObject, the DN of its site; empty when it has none.
	SiteDN string
	// SiteKey is DNKey(SiteDN); empty means the lower-cased SiteDN.
	SiteKey               string
	Description, Location string
}

// Directory is what one complete read of the directory found.
type Directory struct {
	Sites   []Site
	Subnets []Subnet
}

// ExistingSite is what the cluster holds for a Site name.
type ExistingSite struct {
	// Import is the DirectoryImport that manages it (its label), "" for
	// a manual Site.
	Import string
	// Adopted says that it existed before the import managed it.
	Adopted bool
	// DisplayName, Description and Location are its spec.
	DisplayName, Description, Location string
	// ListedByServer says that a SiteServer lists it.
	ListedByServer bool
}

// ExistingSubnet is a Subnet the import created.
type ExistingSubnet struct {
	CIDR, Site, Description, Location string
}

// Cluster is what the cluster holds that a plan depends on.
type Cluster struct {
	// Sites are every Site, by name.
	Sites map[string]ExistingSite
	// Subnets are the Subnets labelled with this import, by name.
	Subnets map[string]ExistingSubnet
}

// DesiredSite is a Site as the directory says it should be.
type DesiredSite struct {
	Name, DisplayName, Description, Location string
	// Adopt says that it exists as a manual Site: the import takes it
	// over (label and annotation) and its description and location.
	Adopt bool
}

// DesiredSubnet is a Subnet as the directory says it should be.
type DesiredSubnet struct {
	Name, CIDR, Site, Description, Location string
}

// Skipped is a directory entry left out, or a Site kept, and why.
type Skipped struct {
	DN, Reason string
}

// Plan is what to write for one import.
type Plan struct {
	CreateSites, UpdateSites     []DesiredSite
	CreateSubnets, UpdateSubnets []DesiredSubnet
	// ReleaseSites were adopted and are no longer in the directory: they
	// go back to being manual.
	ReleaseSites []string
	// DeleteSites and DeleteSubnets were created by the import and are no
	// longer in the directory.
	DeleteSites, DeleteSubnets []string
	// Skipped are entries left out and Sites kept, with why.
	Skipped []Skipped
	// DeletionsHeld says that the deletions above exceed the bound and
	// must not be applied.
	DeletionsHeld bool
	// Sites and Subnets count what the import manages once the plan is
	// applied.
	Sites, Subnets int
}

// Bounds of the Site and Subnet fields a plan fills.
const (
	maxDisplayName = 256
	maxDescription = 4096
	maxLocation    = 1024
)

// Make plans the import named importName of dir into the cluster c, with
// at most maxDeletePercent of what the import manages deleted at once.
func Make(importName string, dir Directory, c Cluster, maxDeletePercent int) Plan {
	var p Plan
	cns := make([]string, 0, len(dir.Sites))
	for _, s := range dir.Sites {
		cns = append(cns, s.CN)
	}
	names := SiteNames(cns)
	siteOfDN := map[string]string{} // lower-cased DN → Site name
	wanted := map[string]bool{}
	for _, s := range dir.Sites {
		name := names[s.CN]
		if name == "" {
			p.Skipped = append(p.Skipped, Skipped{s.DN, "its name maps to the same Site name as another site's"})
			continue
		}
		if wanted[name] {
			p.Skipped = append(p.Skipped, Skipped{s.DN, fmt.Sprintf("another site of the directory maps to Site %s", name)})
			continue
		}
		siteOfDN[keyOr(s.Key, s.DN)] = name
		d := DesiredSite{Name: name, DisplayName: cut(s.CN, maxDisplayName),
			Description: cut(s.Description, maxDescription), Location: cut(s.Location, maxLocation)}
		ex, exists := c.Sites[name]
		switch {
		case !exists:
			p.CreateSites = append(p.CreateSites, d)
		case ex.Import != "" && ex.Import != importName:
			p.Skipped = append(p.Skipped, Skipped{s.DN, fmt.Sprintf("Site %s is managed by DirectoryImport %s", name, ex.Import)})
			continue
		case ex.Import == "":
			d.Adopt = true
			if d.DisplayName == "" || ex.DisplayName != "" {
				d.DisplayName = ex.DisplayName
			}
			p.UpdateSites = append(p.UpdateSites, d)
		default:
			if ex.Adopted {
				// An adopted Site keeps the display name its owner gave it.
				d.DisplayName = ex.DisplayName
			}
			if ex.DisplayName != d.DisplayName || ex.Description != d.Description || ex.Location != d.Location {
				p.UpdateSites = append(p.UpdateSites, d)
			}
		}
		wanted[name] = true
	}

	wantedSubnets := map[string]bool{}
	for _, sn := range dir.Subnets {
		prefix, err := netip.ParsePrefix(strings.TrimSpace(sn.CN))
		switch {
		case err != nil:
			p.Skipped = append(p.Skipped, Skipped{sn.DN, fmt.Sprintf("its name %q is not a prefix in CIDR notation", sn.CN)})
			continue
		case prefix.Addr().Is4In6():
			p.Skipped = append(p.Skipped, Skipped{sn.DN, fmt.Sprintf("%s is an IPv4-mapped IPv6 prefix: the directory should hold the IPv4 prefix", sn.CN)})
			continue
		case prefix.Masked() != prefix:
			p.Skipped = append(p.Skipped, Skipped{sn.DN, fmt.Sprintf("%s has host bits set (the prefix is %s)", sn.CN, prefix.Masked())})
			continue
		}
		name := SubnetName(importName, prefix)
		if wantedSubnets[name] {
			p.Skipped = append(p.Skipped, Skipped{sn.DN, fmt.Sprintf("another subnet of the directory is the prefix %s", prefix)})
			continue
		}
		wantedSubnets[name] = true
		site := ""
		if sn.SiteDN != "" {
			if s, ok := siteOfDN[keyOr(sn.SiteKey, sn.SiteDN)]; ok {
				site = s
			} else {
				// Not a site of the directory: imported anyway, naming the
				// Site its name maps to, which reports SiteNotFound.
				site = SiteNames([]string{cnOf(sn.SiteDN)})[cnOf(sn.SiteDN)]
			}
		}
		d := DesiredSubnet{Name: name, CIDR: prefix.String(), Site: site,
			Description: cut(sn.Description, maxDescription), Location: cut(sn.Location, maxLocation)}
		ex, exists := c.Subnets[name]
		switch {
		case !exists:
			p.CreateSubnets = append(p.CreateSubnets, d)
		case ex != (ExistingSubnet{CIDR: d.CIDR, Site: d.Site, Description: d.Description, Location: d.Location}):
			p.UpdateSubnets = append(p.UpdateSubnets, d)
		}
	}

	managed := 0
	for _, name := range sortedKeys(c.Sites) {
		ex := c.Sites[name]
		if ex.Import != importName {
			continue
		}
		managed++
		if wanted[name] {
			continue
		}
		switch {
		case ex.Adopted:
			p.ReleaseSites = append(p.ReleaseSites, name)
		case ex.ListedByServer:
			p.Skipped = append(p.Skipped, Skipped{"Site " + name, "no longer in the directory, but a SiteServer lists it: kept"})
		default:
			p.DeleteSites = append(p.DeleteSites, name)
		}
	}
	for _, name := range sortedKeys(c.Subnets) {
		managed++
		if !wantedSubnets[name] {
			p.DeleteSubnets = append(p.DeleteSubnets, name)
		}
	}
	deletions := len(p.DeleteSites) + len(p.DeleteSubnets)
	if deletions > 0 && deletions*100 > maxDeletePercent*managed {
		p.DeletionsHeld = true
	}
	p.Sites = len(wanted)
	p.Subnets = len(wantedSubnets)
	if p.DeletionsHeld {
		p.Subnets += len(p.DeleteSubnets)
		p.Sites += len(p.DeleteSites)
	}
	for _, s := range p.Skipped {
		if strings.HasPrefix(s.DN, "Site ") {
			p.Sites++ // kept: still managed
		}
	}
	return p
}

// keyOr is key, or dn lower-cased when key is empty.
func keyOr(key, dn string) string {
	if key != "" {
		return key
	}
	return strings.ToLower(dn)
}

// SubnetName is the name of the Subnet an import creates for prefix: the
// import's name and the prefix with '.', ':' and '/' turned into '-'.
func SubnetName(importName string, prefix netip.Prefix) string {
	return importName + "-" + strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(prefix.String())
}

// cnOf is the value of the first RDN of dn.
func cnOf(dn string) string {
	first, _, _ := strings.Cut(dn, ",")
	_, v, ok := strings.Cut(first, "=")
	if !ok {
		return first
	}
	return strings.ReplaceAll(v, `\`, "")
}

// cut bounds s to n bytes, at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
