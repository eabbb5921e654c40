package agent

import "runtime/debug"

// BuildVersion is the version the Go toolchain stamped into the binary: its
// module version, or "devel" and the VCS revision for a build from a
// working tree.
func BuildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	version, dirty := "devel", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if len(s.Value) > 12 {
				s.Value = s.Value[:12]
			}
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
