package content

import (
	"os"
	"syscall"
)

// openDirect opens path for writes around the page cache (O_DIRECT), nil
// when the file system does not allow it (tmpfs before Linux 6.6, some
// network file systems): the transfer then writes through the page cache.
func openDirect(path string) *directWriter {
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_DIRECT|openFlags, 0)
	if err != nil {
		return nil
	}
	return &directWriter{f: f}
}
