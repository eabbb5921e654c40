// Package directory reads the sites and subnets of an Active Directory
// forest and plans what the DirectoryImport controller writes: which Sites
// and Subnets to create, update, adopt, release or delete. Reading is
// LDAP (ldap.go); the plan (plan.go) and the mapping of AD site names to
// Site names (this file) are pure.
package directory

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"
)

// MaxSiteName is the longest Site name (the Site kind's own bound).
const MaxSiteName = 50

// suffixLen is the length of the hash suffix: '-' and 8 hexadecimal digits.
const suffixLen = 9

// SiteNames maps AD site names (spaces, capitals, any length) to valid
// Site names, deterministically for a given set of names: lower-case
// letters, digits and '-', starting with a letter, ending with a letter or
// a digit, at most 50 characters. A name that had to be cut, or that maps
// to the same name as another of the set, ends with '-' and 8 hexadecimal
// digits of the SHA-256 of the AD name. The result maps each AD name to
// its Site name; names that still collide (two AD names equal but for
// case, which AD itself forbids, or a hash collision) map to "" and are
// skipped by the caller.
func SiteNames(adNames []string) map[string]string {
	base := make(map[string]string, len(adNames))
	count := map[string]int{}
	for _, n := range adNames {
		if _, ok := base[n]; ok {
			continue
		}
		b, cut := plainName(n)
		base[n] = b
		if !cut {
			count[b]++
		}
	}
	out := make(map[string]string, len(base))
	used := map[string]int{}
	for n, b := range base {
		name := b
		if _, cut := plainName(n); cut || count[b] > 1 {
			name = suffixed(b, n)
		}
		out[n] = name
		used[name]++
	}
	for n, name := range out {
		if used[name] > 1 {
			out[n] = ""
		}
	}
	return out
}

// plainName is n lower-cased, with every run of other characters turned
// into one '-', trimmed of '-', starting with a letter ("site-" is put
// before a name that does not), and whether it had to be cut to fit.
func plainName(n string) (string, bool) {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(n) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
			dash = false
		default:
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			dash = true
		}
	}
	s := strings.TrimRight(b.String(), "-")
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		s = "site-" + s
		s = strings.TrimRight(s, "-")
	}
	if len(s) > MaxSiteName {
		return strings.TrimRight(s[:MaxSiteName], "-"), true
	}
	return s, false
}

// suffixed is b cut to leave room for the hash of n, and the hash.
func suffixed(b, n string) string {
	sum := sha256.Sum256([]byte(n))
	if len(b) > MaxSiteName-suffixLen {
		b = strings.TrimRight(b[:MaxSiteName-suffixLen], "-")
	}
	return b + "-" + hex.EncodeToString(sum[:])[:8]
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
