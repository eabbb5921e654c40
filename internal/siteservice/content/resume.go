package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"golang.org/x/time/rate"
)

// partialDir holds the transfers of Resume in progress, one file per
// digest. Unlike tmp/, it survives a restart: that is what resumes.
const partialDir = "partial"

// spaceMargin is what a transfer leaves free on the store's file system
// beyond the bytes it still needs: the metadata, the logs, the next check.
const spaceMargin = 16 << 20

// chunkSize is what one read of a transfer moves and the bandwidth limit
// paces at once. Larger reads cost more than they save: a 1 MiB buffer
// leaves the CPU caches between the socket, the file and the hash, and
// replication ran at 60% of the speed it has with 256 KiB (see
// docs/benchmarks.md). hashDepth is how many reads the writes and the
// hash may lag behind.
const (
	chunkSize = 256 << 10
	hashDepth = 8
)

// writebackEvery is how many bytes a transfer writes before it starts
// their writeback to the disk (startWriteback): the final sync then waits
// for the last few only, not for the whole content.
const writebackEvery = 8 << 20

// ErrNoSpace is wrapped by the errors of Resume when the store's file
// system cannot hold the content: nothing partial is left behind.
var ErrNoSpace = errors.New("not enough free space in the content store")

// errNoTimeLeft: the bandwidth limit leaves no time for the next chunk
// before the context's deadline.
var errNoTimeLeft = errors.New("the transfer cannot finish before its deadline")

// Source opens content from offset. It returns the body and the offset
// it starts at: offset when the source could start there, 0 when it sends
// everything from the start (a server without ranges).
type Source func(ctx context.Context, offset int64) (body io.ReadCloser, start int64, err error)

// ResumeOptions tune Resume.
type ResumeOptions struct {
	// Limit paces the bytes read from the source; nil reads as fast as
	// the source sends. One Limiter shared by every transfer of a service
	// bounds their sum, and a change of its limit applies to the
	// transfers under way from their next chunk.
	Limit *rate.Limiter
	// Received, when set, follows the bytes of the content held so far,
	// including those of an earlier attempt.
	Received *atomic.Int64
	// Fetched, when set, counts the bytes read from the source by this
	// call, so that what a resume sends again can be measured.
	Fetched *atomic.Int64
}

// Resume stores the content of digest (size bytes) read from src,
// continuing the transfer that an earlier call or process left in
// partial/: it hashes what is there, asks src for the rest, and verifies
// the digest and the size of the whole before the content enters the
// store (as Ingest does). Content already stored is not read again. It
// checks first that the file system has room for what is missing: a full
// disk is an error wrapping ErrNoSpace, never a partial file. Bytes that do
// not match wrap ErrMismatch, and the partial file is removed: the next
// attempt starts over. Any other error (the source failed, ctx ended)
// leaves the partial file for the next attempt. One transfer per digest
// runs at a time: a second caller waits for the first, then finds the
// content stored or resumes where the first stopped.
func (s *Store) Resume(ctx context.Context, digest string, size int64, src Source, opts ResumeOptions) error {
	if size < 0 {
		return fmt.Errorf("storing content %s: the size must be known to resume, not %d", digest, size)
	}
	h, unlock, err := s.beginTransfer(ctx, digest)
	if err != nil {
		return err
	}
	defer unlock()
	if s.Has(digest) {
		if opts.Received != nil {
			opts.Received.Store(size)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Join(s.dir, partialDir), storeDirMode); err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	path := filepath.Join(s.dir, partialDir, h)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|openFlags, contentMode)
	if err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	t := &transfer{store: s, f: f, digest: digest, size: size, hash: sha256.New(), opts: opts}
	keep := false // the file moved into the store, or stays to resume
	defer func() {
		if !keep {
			_ = f.Close()
			_ = os.Remove(path)
		}
	}()
	err = t.run(ctx, src)
	switch {
	case err == nil:
		keep = true // install took it
		return s.install(h, f, size)
	case errors.Is(err, ErrMismatch), errors.Is(err, ErrNoSpace):
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	keep = true
	_ = f.Close()
	return fmt.Errorf("storing content %s: %w", digest, err)
}

// transfer is one call of Resume.
type transfer struct {
	store  *Store
	f      *os.File
	digest string
	size   int64
	hash   hash.Hash
	held   int64 // bytes in f, hashed
	opts   ResumeOptions
}

// run brings f to the whole content: what it holds is hashed, the rest
// read from src.
func (t *transfer) run(ctx context.Context, src Source) error {
	info, err := t.f.Stat()
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%w: the partial file is not a regular file", ErrMismatch)
	}
	if info.Size() > t.size {
		return fmt.Errorf("%w: the partial file holds %d bytes, more than the %d of the content", ErrMismatch, info.Size(), t.size)
	}
	if err := t.rehash(ctx, info.Size()); err != nil {
		return err
	}
	if err := t.store.checkSpace(t.size - t.held); err != nil {
		return err
	}
	if t.held < t.size {
		body, start, err := src(ctx, t.held)
		if err != nil {
			return err
		}
		defer body.Close()
		if start != t.held {
			if start != 0 {
				return fmt.Errorf("the source sent from byte %d, not %d", start, t.held)
			}
			if err := t.restart(); err != nil {
				return err
			}
		}
		if err := t.copy(ctx, body); err != nil {
			return err
		}
		if t.held < t.size {
			// The next attempt asks for the rest.
			return fmt.Errorf("the source ended at byte %d of %d", t.held, t.size)
		}
	}
	if got := hex.EncodeToString(t.hash.Sum(nil)); algorithm+got != t.digest {
		return fmt.Errorf("%w: the %d bytes received are sha256:%s", ErrMismatch, t.size, got)
	}
	return nil
}

// rehash hashes the n bytes an earlier attempt left, paced like the scrub.
func (t *transfer) rehash(ctx context.Context, n int64) error {
	if n == 0 {
		return nil
	}
	if _, err := io.Copy(t.hash, ctxReader{ctx, io.NewSectionReader(t.f, 0, n)}); err != nil {
		return fmt.Errorf("reading the partial file: %w", err)
	}
	t.held = n
	if t.opts.Received != nil {
		t.opts.Received.Store(n)
	}
	_, err := t.f.Seek(n, io.SeekStart)
	return err
}

// restart empties f: the source sends from the start.
func (t *transfer) restart() error {
	if err := t.f.Truncate(0); err != nil {
		return err
	}
	if _, err := t.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	t.hash.Reset()
	t.held = 0
	if t.opts.Received != nil {
		t.opts.Received.Store(0)
	}
	return nil
}

// copy appends body to f, paced by the limit, up to the size. The reads
// from the source run here; the writes to f and the hash run on a
// goroutine of their own, a few chunks behind, so that the socket, the
// disk and the hash share the machine's cores rather than take turns.
// t.held counts the bytes written and hashed.
func (t *transfer) copy(ctx context.Context, body io.Reader) error {
	// Where it can, the writer writes around the page cache (directWriter):
	// the bytes go from the buffer the socket filled to the disk, and the
	// CPU copies them once instead of twice.
	direct := openDirect(t.f.Name())
	if direct != nil {
		// What it wrote is synced (and its errors reported) through t.f
		// when the content is installed.
		defer func() { _ = direct.Close() }()
	}
	free := make(chan []byte, hashDepth)
	for range hashDepth {
		free <- alignedBuffer(chunkSize)
	}
	work := make(chan []byte, hashDepth)
	written := make(chan struct{})
	var failed atomic.Bool // the writer stopped on an error: read no more
	var werr error         // the writer's error, read once written is closed
	go func() {
		defer close(written)
		flushed := t.held // the bytes written through the page cache whose writeback has started
		for b := range work {
			if werr == nil {
				if err := t.write(direct, b); err != nil {
					werr = err
					failed.Store(true)
				} else {
					t.hash.Write(b)
					t.held += int64(len(b))
					if t.opts.Received != nil {
						t.opts.Received.Store(t.held)
					}
					if direct == nil && t.held-flushed >= writebackEvery {
						startWriteback(t.f, flushed, t.held-flushed)
						flushed = t.held
					}
				}
			}
			free <- b[:cap(b)]
		}
	}()
	read := t.held
	finish := func(err error) error {
		close(work)
		<-written
		if werr != nil {
			if errors.Is(werr, syscall.ENOSPC) {
				return fmt.Errorf("%w: the disk filled up at byte %d of %d", ErrNoSpace, t.held, t.size)
			}
			return werr
		}
		return err
	}
	for read < t.size && !failed.Load() {
		want := min(int64(chunkSize), t.size-read)
		if rest := read % directAlign; rest != 0 {
			// A resumed transfer first reaches a block boundary, so that
			// the chunks after it can be written around the page cache.
			want = min(want, directAlign-rest)
		}
		if t.opts.Limit != nil {
			if err := t.opts.Limit.WaitN(ctx, int(want)); err != nil {
				if ctx.Err() == nil {
					// The limit leaves no time for the chunk before ctx's
					// deadline: the transfer ends as if it had come.
					return finish(fmt.Errorf("%w: %w", errNoTimeLeft, err))
				}
				return finish(err)
			}
		}
		buf := <-free
		n, err := io.ReadFull(body, buf[:want])
		if n > 0 {
			if t.opts.Fetched != nil {
				t.opts.Fetched.Add(int64(n))
			}
			work <- buf[:n]
			read += int64(n)
		} else {
			free <- buf
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return finish(nil) // short: the caller asks again from t.held
		case err != nil:
			return finish(err)
		}
	}
	if err := finish(nil); err != nil || t.held < t.size {
		return err
	}
	// A source that sends more than the content is wrong.
	var one [1]byte
	if n, _ := body.Read(one[:]); n > 0 {
		return fmt.Errorf("%w: the source sent more than %d bytes", ErrMismatch, t.size)
	}
	return nil
}

// write writes b at t.held: around the page cache through direct when it
// is open and b is whole aligned blocks at an aligned offset, through t.f
// otherwise (the last piece of the content, the first of a resume). A file
// system that refuses a direct write gets this and every later one
// through t.f.
func (t *transfer) write(direct *directWriter, b []byte) error {
	if direct.fits(t.held, len(b)) {
		err := direct.writeAt(b, t.held)
		if !errors.Is(err, syscall.EINVAL) {
			return err
		}
		direct.disable()
	}
	_, err := t.f.WriteAt(b, t.held)
	return err
}

// checkSpace reports ErrNoSpace unless the store's file system has need
// bytes free beside spaceMargin.
func (s *Store) checkSpace(need int64) error {
	free, err := s.freeSpace()
	if err != nil {
		return fmt.Errorf("measuring the free space of the content store: %w", err)
	}
	if free < need+spaceMargin {
		return fmt.Errorf("%w: %d bytes are still needed (with a margin of %d) and %d are free", ErrNoSpace, need, int64(spaceMargin), free)
	}
	return nil
}

// statfsFree is the bytes an unprivileged writer may still use in dir's
// file system.
func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:gosec,unconvert // block counts fit an int64 on every file system in use
}

// beginTransfer waits for the store to start and makes the caller the one
// transfer of digest (lockTransfer); it returns digest's hex digits and
// the function that ends the transfer.
func (s *Store) beginTransfer(ctx context.Context, digest string) (h string, unlock func(), err error) {
	if h, err = parseDigest(digest); err != nil {
		return "", nil, err
	}
	select {
	case <-s.started:
	case <-ctx.Done():
		return "", nil, fmt.Errorf("storing content %s: %w", digest, ctx.Err())
	}
	if unlock, err = s.lockTransfer(ctx, h); err != nil {
		return "", nil, fmt.Errorf("storing content %s: %w", digest, err)
	}
	return h, unlock, nil
}

// lockTransfer makes the caller the one transfer of h, waiting for the one
// under way; the returned function ends it.
func (s *Store) lockTransfer(ctx context.Context, h string) (func(), error) {
	for {
		s.mu.Lock()
		if s.transfers == nil {
			s.transfers = map[string]chan struct{}{}
		}
		busy, ok := s.transfers[h]
		if !ok {
			done := make(chan struct{})
			s.transfers[h] = done
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				delete(s.transfers, h)
				s.mu.Unlock()
				close(done)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Partial reports how many bytes of digest a transfer left to resume from.
func (s *Store) Partial(digest string) int64 {
	h, err := parseDigest(digest)
	if err != nil {
		return 0
	}
	info, err := os.Lstat(filepath.Join(s.dir, partialDir, h))
	if err != nil || !info.Mode().IsRegular() {
		return 0
	}
	return info.Size()
}

// Digests lists the content the store serves, and the transfers it holds
// to resume, as "sha256:<hex>".
func (s *Store) Digests() (stored, partial []string) {
	s.mu.Lock()
	for h := range s.entries {
		stored = append(stored, algorithm+h)
	}
	s.mu.Unlock()
	files, err := os.ReadDir(filepath.Join(s.dir, partialDir))
	if err != nil {
		return stored, nil
	}
	for _, f := range files {
		if isHex(f.Name()) {
			partial = append(partial, algorithm+f.Name())
		}
	}
	return stored, partial
}

// Remove removes digest's content and what a transfer of it left: it is
// no longer served. A transfer of it under way finishes first.
func (s *Store) Remove(ctx context.Context, digest string) error {
	h, err := parseDigest(digest)
	if err != nil {
		return err
	}
	unlock, err := s.lockTransfer(ctx, h)
	if err != nil {
		return err
	}
	defer unlock()
	s.commit.Lock()
	defer s.commit.Unlock()
	s.mu.Lock()
	delete(s.entries, h)
	s.mu.Unlock()
	var errs []error
	for _, path := range []string{s.contentPath(h), s.metaPath(h), filepath.Join(s.dir, partialDir, h)} {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("removing content %s: %w", digest, err)
	}
	s.log.Info("Removed content", "digest", digest)
	return nil
}
