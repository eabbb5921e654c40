//go:build unix

package agent

import (
	"os"
	"syscall"
)

// inode tells a bundle replaced by a rename (as config management writes
// files) from the one loaded, whatever their modification times.
func inode(info os.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino) //nolint:unconvert // int64 on some platforms
	}
	return 0
}
