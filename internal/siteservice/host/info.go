package host

import (
	"encoding/json"
	"net/http"
	"runtime/debug"
)

// Info is the answer of GET /v1/info: which service of which SiteServer
// answers, and which build it runs.
type Info struct {
	// Service is "task" or "package".
	Service string `json:"service"`
	// SiteServer is the name of the SiteServer the service belongs to.
	SiteServer string `json:"siteServer"`
	// Sites are the Sites it serves; empty means unassigned.
	Sites []string `json:"sites"`
	// Version is the version of the binary.
	Version string `json:"version"`
}

// InfoHandler answers every request with info as JSON; mount it on
// "GET /v1/info".
func InfoHandler(info Info) http.Handler {
	if info.Sites == nil {
		info.Sites = []string{} // "sites": [] says unassigned more plainly than null
	}
	body, err := json.Marshal(info)
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	body = append(body, '\n')
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

// BuildVersion is the version the Go toolchain stamped into the binary:
// its module version, or "devel" and the VCS revision for a build from a
// working tree.
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	version, dirty := "devel", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			version += "-" + s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty {
		version += "-dirty"
	}
	return version
}
