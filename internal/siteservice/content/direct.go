package content

import (
	"os"
	"unsafe"
)

// directAlign is the alignment of the buffers, file offsets and lengths of
// writes around the page cache (O_DIRECT): 4 KiB, the logical block size
// of the disks it is meant for (a multiple of the 512 bytes of older
// ones).
const directAlign = 4096

// directWriter writes aligned blocks of a file around the page cache, on
// a descriptor of its own opened with O_DIRECT. A nil one writes nothing:
// its methods are safe on nil.
type directWriter struct {
	f   *os.File
	off bool // a write was refused (EINVAL): the file system cannot
}

// fits tells whether n bytes at off can be written around the page cache.
func (d *directWriter) fits(off int64, n int) bool {
	return d != nil && !d.off && off%directAlign == 0 && n%directAlign == 0 && n > 0
}

// writeAt writes b at off, which fits says it can.
func (d *directWriter) writeAt(b []byte, off int64) error {
	_, err := d.f.WriteAt(b, off)
	return err
}

// disable sends every later write through the page cache.
func (d *directWriter) disable() { d.off = true }

// Close closes the descriptor.
func (d *directWriter) Close() error { return d.f.Close() }

// alignedBuffer is a buffer of n bytes whose first byte is aligned to
// directAlign, as O_DIRECT wants its buffers.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	shift := 0
	if rest := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); rest != 0 {
		shift = directAlign - rest
	}
	return b[shift : shift+n : shift+n]
}
