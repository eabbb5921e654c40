//go:build !unix

package simcluster

import "os"

// lockFile opens path: without flock, clusters of one machine are not kept
// apart (the pod runner needs Linux anyway).
func lockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
}
