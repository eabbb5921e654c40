package content

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing n bytes of f at off to
// the disk, without waiting: a transfer's bytes go to the disk while the
// rest arrives, rather than all at the final sync, and the dirty pages a
// large transfer leaves in memory stay few. Best effort: the final sync
// reports any error.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
