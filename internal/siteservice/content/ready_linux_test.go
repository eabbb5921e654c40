package content

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// TestReadinessCreatesNoFilePerProbe probes /readyz over and over within
// the 30 seconds a writability check holds, on a clock the test moves: the
// probes create no file in the store, and the first one after the 30
// seconds creates one. The creations are counted by inotify on every
// directory of the store, so a file created anywhere in it counts, whatever
// its name and however briefly it lives.
func TestReadinessCreatesNoFilePerProbe(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "content")
	must(t, os.Mkdir(storage, 0o755))
	cfg := config.Defaults("paris-1", []string{"paris"})
	cfg.Package.StoragePath = storage
	s, err := New(cfg, Options{Version: "v0.1.0", Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64 // unix nanoseconds
	clock.Store(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC).UnixNano())
	s.store.now = func() time.Time { return time.Unix(0, clock.Load()) }
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	serveFor(t, context.Background(), s, api, health)
	readyz := "http://" + health.Addr().String() + "/readyz"
	probe := func(what string) {
		t.Helper()
		if code, body, _ := getWithin(t, readyz); code != 200 {
			t.Fatalf("/readyz %s: %d %q", what, code, body)
		}
	}
	hosttest.WaitReady(t, readyz, nil) // the store is scanned and checked once
	created := watchCreations(t, storage)

	for range 20 {
		probe("within 30 seconds of the last check")
	}
	if n := created(); n != 0 {
		t.Errorf("20 probes within 30 seconds of the last check created %d files in the store, want none", n)
	}
	clock.Add(int64(writeCheckAge + time.Second))
	probe("after 30 seconds")
	if n := created(); n != 1 {
		t.Errorf("the first probe after 30 seconds created %d files in the store, want 1 (the writability check)", n)
	}
	for range 20 {
		probe("within 30 seconds of the new check")
	}
	if n := created(); n != 0 {
		t.Errorf("20 probes within 30 seconds of the new check created %d files in the store, want none", n)
	}
	if left, err := os.ReadDir(filepath.Join(storage, tmpDir)); err != nil || len(left) != 0 {
		t.Errorf("the readiness checks left files in the store: %v %v", left, err)
	}
}

// watchCreations watches every directory under dir with inotify and
// returns a function counting the files and directories created there
// since its last call. An event is queued by the system call that creates
// the file, so the count includes every creation that returned before the
// call.
func watchCreations(t *testing.T, dir string) (created func() int) {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		_, err = syscall.InotifyAddWatch(fd, path, syscall.IN_CREATE|syscall.IN_MOVED_TO)
		return err
	})
	if err != nil {
		t.Fatalf("watching %s: %v", dir, err)
	}
	buf := make([]byte, 64<<10)
	return func() int {
		t.Helper()
		count := 0
		for {
			n, err := syscall.Read(fd, buf)
			if errors.Is(err, syscall.EAGAIN) {
				return count
			}
			if err != nil || n <= 0 {
				t.Fatalf("reading inotify events: %d %v", n, err)
			}
			// Each event is a struct inotify_event (wd, mask, cookie, len)
			// followed by len bytes of name.
			for off := 0; off+syscall.SizeofInotifyEvent <= n; {
				mask := binary.NativeEndian.Uint32(buf[off+4:])
				if mask&syscall.IN_Q_OVERFLOW != 0 {
					t.Fatal("inotify's queue overflowed: creations were lost")
				}
				if mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0 {
					count++
				}
				off += syscall.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(buf[off+12:]))
			}
		}
	}
}
