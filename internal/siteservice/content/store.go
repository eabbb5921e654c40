package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Layout of a store, under its directory.
const (
	contentDir    = "sha256"             // the content, by hexadecimal digest
	metaDir       = "meta/sha256"        // the size verified at ingest, by digest
	tmpDir        = "tmp"                // ingests in progress
	quarantineDir = "quarantine"         // files withdrawn from serving
	hexDigits     = sha256.Size * 2      // length of a digest's hexadecimal part
	metaSuffix    = ".json"              // of the files under metaDir
	tmpSuffix     = ".partial"           // of the files under tmpDir
	algorithm     = "sha256:"            // the only digest algorithm
	scrubChunk    = 1 << 20              // read and paced at once by the scrub
	writeCheckAge = 30 * time.Second     // how long a writability check holds
	defaultScrub  = int64(64 << 20)      // bytes per second
	retryVerified = 30                   // seconds, Retry-After of content being verified
	storeDirMode  = fs.FileMode(0o755)   // of the directories the store creates
	contentMode   = fs.FileMode(0o644)   // of content and its metadata
	openFlags     = syscall.O_NOFOLLOW | // never a link
		syscall.O_NONBLOCK | // never wait on a FIFO
		syscall.O_CLOEXEC
)

// DefaultScrubRate is how fast the scrub re-hashes the store when
// StoreOptions.ScrubRate is 0, in bytes per second.
const DefaultScrubRate = defaultScrub

// ErrMismatch is wrapped by the errors of Ingest when the bytes received
// are not the content the digest and size name: the source is wrong, not
// the store.
var ErrMismatch = errors.New("content does not match its digest")

// Errors of Store.Open.
var (
	errNotFound  = errors.New("no such content")
	errVerifying = errors.New("content being verified")
	errDamaged   = errors.New("content damaged and withdrawn")
)

// StoreOptions configure a Store.
type StoreOptions struct {
	// ScrubRate bounds the re-hashing of the store after a scan, in bytes
	// per second; 0 means DefaultScrubRate.
	ScrubRate int64
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Store is a content store on disk; see the package documentation for its
// rules. Its methods are safe for concurrent use.
type Store struct {
	dir       string
	scrubRate int64
	log       *slog.Logger

	// commit serialises the changes of the store's layout: a scan, the
	// last step of an ingest, a quarantine.
	commit sync.Mutex

	mu          sync.Mutex
	entries     map[string]*entry // by hexadecimal digest
	scanned     os.FileInfo       // the directory last scanned, to notice a new one
	ctx         context.Context   // of Start: bounds the scrubs
	stopScrub   context.CancelFunc
	scrubbing   sync.WaitGroup
	writeErr    error            // of the last writability check
	writeTested time.Time        // when
	now         func() time.Time // the clock of the writability checks
	readyMu     sync.Mutex

	started   chan struct{} // closed once Start has cleared the ingests left
	startOnce sync.Once

	// transfers are the Resume calls under way, by digest; each channel
	// closes when its transfer ends.
	transfers map[string]chan struct{}
	// freeSpace measures the bytes the store's file system has free.
	freeSpace func() (int64, error)
}

// entry is what the store knows of one piece of content.
type entry struct {
	size   int64 // verified at ingest, or by the scrub
	sized  bool  // size known from ingest: served while the scrub has not hashed it
	hashed bool  // hashed against its digest since the store was scanned or ingested
}

// servable says whether content may be served: hashed, or at least of the
// size verified when it came in.
func (e *entry) servable() bool { return e.hashed || e.sized }

// NewStore returns the store in dir. It touches nothing: Start scans it.
func NewStore(dir string, opts StoreOptions) *Store {
	rate := opts.ScrubRate
	if rate <= 0 {
		rate = DefaultScrubRate
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{dir: dir, scrubRate: rate, log: log.With("store", dir), entries: map[string]*entry{},
		started: make(chan struct{}), now: time.Now}
	s.freeSpace = func() (int64, error) { return statfsFree(dir) }
	return s
}

// Start scans the store if its directory exists, clearing the ingests that
// a previous process left unfinished, and starts the scrub; both stop with
// ctx. A store whose directory is missing is scanned when Ready first finds
// it.
func (s *Store) Start(ctx context.Context) {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	if err := s.scan(true); err != nil {
		s.log.Warn("Content store not scanned at start", "error", err)
	}
	s.startOnce.Do(func() { close(s.started) })
}

// Wait returns once the scrubs that Start and Ready started have stopped.
func (s *Store) Wait() { s.scrubbing.Wait() }

// Ready reports whether the store can take content: its directory exists
// and is writable. Its answer names no path, since it reaches clients; the
// log has the detail. It tests writability by creating a file at most every
// 30 seconds, and scans the store again when its directory is a new one
// (a volume mounted late, or replaced).
func (s *Store) Ready(context.Context) error {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	info, err := os.Stat(s.dir)
	if err == nil && !info.IsDir() {
		err = errors.New("not a directory")
	}
	if err != nil {
		s.log.Warn("Content store missing", "error", err)
		return errors.New("the content store's volume is missing")
	}
	s.mu.Lock()
	changed := s.scanned == nil || !os.SameFile(s.scanned, info)
	stale := changed || s.now().Sub(s.writeTested) > writeCheckAge
	s.mu.Unlock()
	if changed {
		if err := s.scan(false); err != nil {
			s.log.Warn("Content store cannot be scanned", "error", err)
			return errors.New("the content store cannot be read")
		}
	}
	if stale {
		werr := s.testWrite()
		if werr != nil {
			s.log.Warn("Content store not writable", "error", werr)
		}
		s.mu.Lock()
		s.writeErr, s.writeTested = werr, s.now()
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.writeErr != nil {
		return errors.New("the content store is not writable")
	}
	return nil
}

// testWrite creates and removes a file where ingests write.
func (s *Store) testWrite() error {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), ".readyz-*")
	if err != nil {
		return err
	}
	return errors.Join(f.Close(), os.Remove(f.Name()))
}

// Has reports whether the content of digest is served here.
func (s *Store) Has(digest string) bool {
	h, err := parseDigest(digest)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entries[h]
	return e != nil && e.servable()
}

// Ingest stores the content of digest, read from r (Resume and the capture
// upload's adopt are the other ways in, through the same install). It
// writes a temporary file inside the store, hashes while it writes, checks
// the digest and, when size is not negative, the size, then syncs and
// renames the file into place, so that a crash or a bad source never leaves
// a partial or wrong file under a digest. Content already served here is
// not read again. Errors that come from the source's bytes wrap
// ErrMismatch; ctx cancels the copy. It waits for Start.
func (s *Store) Ingest(ctx context.Context, digest string, size int64, r io.Reader) error {
	h, err := parseDigest(digest)
	if err != nil {
		return err
	}
	select {
	case <-s.started:
	case <-ctx.Done():
		return fmt.Errorf("storing content %s: %w", digest, ctx.Err())
	}
	if s.Has(digest) {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(s.dir, tmpDir), storeDirMode); err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), h+".*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	src := r
	if size >= 0 {
		src = io.LimitReader(r, size+1) // one byte more tells a source that is too long
	}
	hash := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, hash), ctxReader{ctx, src})
	if err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("storing content %s: %w: received %d bytes, want %d", digest, ErrMismatch, n, size)
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != h {
		return fmt.Errorf("storing content %s: %w: the %d bytes received are sha256:%s", digest, ErrMismatch, n, got)
	}
	committed = true // install closes f, and removes it unless it moves into place
	return s.install(h, f, n)
}

// install closes f, the verified content of h (n bytes), syncs it and
// renames it into place, then records its size; f is removed when it
// cannot be put in place.
func (s *Store) install(h string, f *os.File, n int64) error {
	digest := algorithm + h
	if err := errors.Join(f.Chmod(contentMode), f.Sync(), f.Close()); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	s.commit.Lock()
	defer s.commit.Unlock()
	for _, d := range []string{contentDir, metaDir} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), storeDirMode); err != nil {
			_ = os.Remove(f.Name())
			return fmt.Errorf("storing content %s: %w", digest, err)
		}
	}
	// Content first, then its size: a crash in between leaves content
	// that the next scrub hashes before it is served.
	if err := os.Rename(f.Name(), s.contentPath(h)); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	if err := errors.Join(syncDir(filepath.Join(s.dir, contentDir)), s.writeMeta(h, n)); err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	s.mu.Lock()
	s.entries[h] = &entry{size: n, sized: true, hashed: true}
	s.mu.Unlock()
	s.log.Info("Stored content", "digest", digest, "size", n)
	return nil
}

// ctxReader stops reading once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// meta is what the store records of a piece of content beside it.
type meta struct {
	// Size is the size verified when the content came in.
	Size int64 `json:"size"`
}

func (s *Store) metaPath(h string) string {
	return filepath.Join(s.dir, metaDir, h+metaSuffix)
}

func (s *Store) contentPath(h string) string {
	return filepath.Join(s.dir, contentDir, h)
}

// writeMeta records the verified size of h, atomically.
func (s *Store) writeMeta(h string, size int64) error {
	data, err := json.Marshal(meta{Size: size})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, metaDir), h+".*"+tmpSuffix)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return err
	}
	if err := errors.Join(f.Chmod(contentMode), f.Sync(), f.Close()); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), s.metaPath(h)); err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	return syncDir(filepath.Join(s.dir, metaDir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}

// Open opens the content of digest for serving, checked: a regular file
// (never a link, a FIFO or a device) of the size verified. A file that
// fails is quarantined and errDamaged returned; content the scrub has yet
// to hash and whose size was never verified gives errVerifying.
func (s *Store) Open(digest string) (*os.File, error) {
	h, err := parseDigest(digest)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	e := s.entries[h]
	s.mu.Unlock()
	switch {
	case e == nil:
		return nil, errNotFound
	case !e.servable():
		return nil, errVerifying
	}
	path := s.contentPath(h)
	// Lstat first, so that opening never touches a device or a FIFO; the
	// open's flags and the fstat after it close the gap in between.
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.forget(h, e, "the file disappeared")
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("opening content %s: %w", digest, err)
	}
	if reason := s.check(info, e.size); reason != "" {
		s.quarantine(h, e, reason)
		return nil, errDamaged
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if errors.Is(err, syscall.ELOOP) {
		s.quarantine(h, e, "a symbolic link")
		return nil, errDamaged
	}
	if errors.Is(err, fs.ErrNotExist) {
		s.forget(h, e, "the file disappeared")
		return nil, errNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("opening content %s: %w", digest, err)
	}
	if info, err = f.Stat(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("opening content %s: %w", digest, err)
	}
	if reason := s.check(info, e.size); reason != "" {
		_ = f.Close()
		s.quarantine(h, e, reason)
		return nil, errDamaged
	}
	return f, nil
}

// check returns why info cannot be content of the given size, or "".
func (s *Store) check(info fs.FileInfo, size int64) string {
	switch {
	case info.Mode()&fs.ModeSymlink != 0:
		return "a symbolic link"
	case !info.Mode().IsRegular():
		return "not a regular file (" + info.Mode().Type().String() + ")"
	case info.Size() != size:
		return "size " + strconv.FormatInt(info.Size(), 10) + ", verified " + strconv.FormatInt(size, 10)
	}
	return ""
}

// forget drops e from the index, if it is still the entry of h.
func (s *Store) forget(h string, e *entry, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.entries[h] == e {
		delete(s.entries, h)
		s.log.Warn("Content gone from the store", "digest", algorithm+h, "reason", reason)
	}
}

// quarantine withdraws e, if it is still the entry of h: its file moves to
// the quarantine directory, for an administrator to look at, and its
// metadata is removed, so that the content can be stored again.
func (s *Store) quarantine(h string, e *entry, reason string) {
	s.commit.Lock()
	defer s.commit.Unlock()
	s.mu.Lock()
	current := s.entries[h] == e
	if current {
		delete(s.entries, h)
	}
	s.mu.Unlock()
	if current {
		s.moveAside(filepath.Join(contentDir, h), reason)
		_ = os.Remove(s.metaPath(h))
	}
}

// moveAside moves the file rel (relative to the store) to the quarantine
// directory; the caller holds s.commit.
func (s *Store) moveAside(rel, reason string) {
	from := filepath.Join(s.dir, rel)
	to := filepath.Join(s.dir, quarantineDir, filepath.Base(rel)+"."+strconv.FormatInt(time.Now().UnixNano(), 10))
	err := os.MkdirAll(filepath.Join(s.dir, quarantineDir), storeDirMode)
	if err == nil {
		err = os.Rename(from, to)
	}
	if err != nil {
		s.log.Error("Withdrawing damaged content, which cannot be moved aside", "file", from, "reason", reason, "error", err)
		if rerr := os.Remove(from); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			s.log.Error("Removing damaged content", "file", from, "error", rerr)
		}
		return
	}
	s.log.Error("Withdrew damaged content", "file", from, "quarantinedAs", to, "reason", reason)
}

// scan rebuilds the index from the disk: every file under sha256/ is
// checked against the size recorded at ingest (a stat each), files that
// cannot be content are quarantined, and a scrub is started to hash them
// all. first clears ingests left unfinished by a previous process.
func (s *Store) scan(first bool) error {
	s.commit.Lock()
	defer s.commit.Unlock()
	info, err := os.Stat(s.dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return fmt.Errorf("%s is not a directory", s.dir)
	}
	for _, d := range []string{contentDir, metaDir, tmpDir} {
		path := filepath.Join(s.dir, d)
		if dinfo, err := os.Lstat(path); err == nil && !dinfo.IsDir() {
			return fmt.Errorf("%s is not a directory", path)
		}
		if err := os.MkdirAll(path, storeDirMode); err != nil {
			return err
		}
	}
	if first {
		s.clearTmp()
	}

	sizes := map[string]int64{} // recorded at ingest
	metas, err := os.ReadDir(filepath.Join(s.dir, metaDir))
	if err != nil {
		return err
	}
	for _, m := range metas {
		h, ok := strings.CutSuffix(m.Name(), metaSuffix)
		if !ok || !isHex(h) {
			continue
		}
		var md meta
		data, err := os.ReadFile(filepath.Join(s.dir, metaDir, m.Name()))
		if err == nil {
			err = json.Unmarshal(data, &md)
		}
		if err != nil || md.Size < 0 {
			s.log.Warn("Ignoring unreadable content metadata: the scrub hashes the content", "digest", algorithm+h, "error", err)
			continue
		}
		sizes[h] = md.Size
	}

	files, err := os.ReadDir(filepath.Join(s.dir, contentDir))
	if err != nil {
		return err
	}
	entries := make(map[string]*entry, len(files))
	for _, f := range files {
		h := f.Name()
		if !isHex(h) {
			s.moveAside(filepath.Join(contentDir, h), "not named by a digest")
			continue
		}
		finfo, err := f.Info() // lstat
		if err != nil {
			continue // gone since ReadDir
		}
		size, sized := sizes[h]
		if !sized {
			size = finfo.Size()
		}
		if reason := s.check(finfo, size); reason != "" {
			s.moveAside(filepath.Join(contentDir, h), reason)
			_ = os.Remove(s.metaPath(h))
			continue
		}
		entries[h] = &entry{size: size, sized: sized}
		delete(sizes, h)
	}
	for h := range sizes { // metadata of content that is gone
		_ = os.Remove(s.metaPath(h))
	}

	s.mu.Lock()
	s.entries = entries
	s.scanned = info
	ctx := s.ctx
	if s.stopScrub != nil {
		s.stopScrub()
	}
	var scrubCtx context.Context
	if ctx != nil {
		scrubCtx, s.stopScrub = context.WithCancel(ctx)
	}
	s.mu.Unlock()
	s.log.Info("Scanned the content store", "content", len(entries))
	if scrubCtx != nil {
		s.scrubbing.Go(func() { s.scrub(scrubCtx) })
	}
	return nil
}

// clearTmp removes what ingests left in tmp/; the caller holds s.commit.
func (s *Store) clearTmp() {
	dir := filepath.Join(s.dir, tmpDir)
	left, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range left {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			s.log.Warn("Removing an unfinished ingest", "file", filepath.Join(dir, e.Name()), "error", err)
		}
	}
	if len(left) > 0 {
		s.log.Info("Removed unfinished ingests", "count", len(left))
	}
}

// scrub hashes every entry not hashed yet, those whose size was never
// verified first (they are not served until then), at most s.scrubRate
// bytes per second overall. Content that does not match is quarantined.
func (s *Store) scrub(ctx context.Context) {
	type job struct {
		h     string
		sized bool
	}
	s.mu.Lock()
	var jobs []job
	for h, e := range s.entries {
		if !e.hashed {
			jobs = append(jobs, job{h, e.sized})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(jobs, func(a, b job) int { // unverified sizes first
		switch {
		case a.sized == b.sized:
			return strings.Compare(a.h, b.h)
		case !a.sized:
			return -1
		default:
			return 1
		}
	})
	todo := make([]string, len(jobs))
	for i, j := range jobs {
		todo[i] = j.h
	}
	if len(todo) == 0 {
		return
	}
	began := time.Now()
	pace := &pacer{rate: s.scrubRate, began: began}
	var bytes int64
	damaged := 0
	for _, h := range todo {
		s.mu.Lock()
		e := s.entries[h]
		s.mu.Unlock()
		if e == nil || e.hashed {
			continue // quarantined, or ingested again, meanwhile
		}
		n, reason, err := s.hashFile(ctx, h, e.size, pace)
		bytes += n
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.log.Error("Scrubbing content", "digest", algorithm+h, "error", err)
			continue
		}
		if reason != "" {
			damaged++
			s.quarantine(h, e, reason)
			continue
		}
		if !e.sized {
			s.commit.Lock()
			err := s.writeMeta(h, e.size)
			s.commit.Unlock()
			if err != nil {
				s.log.Error("Recording the size of scrubbed content", "digest", algorithm+h, "error", err)
			}
		}
		s.mu.Lock()
		if s.entries[h] == e {
			s.entries[h] = &entry{size: e.size, sized: true, hashed: true}
		}
		s.mu.Unlock()
	}
	s.log.Info("Scrubbed the content store", "content", len(todo), "bytes", bytes, "damaged", damaged,
		"duration", time.Since(began).Round(time.Millisecond).String())
}

// hashFile hashes the content h, which should be size bytes long, and
// returns why it does not match ("" when it does).
func (s *Store) hashFile(ctx context.Context, h string, size int64, pace *pacer) (int64, string, error) {
	f, err := os.OpenFile(s.contentPath(h), os.O_RDONLY|openFlags, 0)
	if errors.Is(err, syscall.ELOOP) {
		return 0, "a symbolic link", nil
	}
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return 0, "", err
	}
	if reason := s.check(info, size); reason != "" {
		return 0, reason, nil
	}
	hash := sha256.New()
	buf := make([]byte, scrubChunk)
	var n int64
	for {
		m, err := f.Read(buf)
		hash.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, "", err
		}
		if err := pace.wait(ctx, int64(m)); err != nil {
			return n, "", err
		}
	}
	if n != size {
		return n, "read " + strconv.FormatInt(n, 10) + " bytes, verified " + strconv.FormatInt(size, 10), nil
	}
	if got := hex.EncodeToString(hash.Sum(nil)); got != h {
		return n, "its bytes are sha256:" + got, nil
	}
	return n, "", nil
}

// pacer keeps a reader under rate bytes per second on average.
type pacer struct {
	rate  int64
	began time.Time
	done  int64
}

// wait accounts for n bytes read and sleeps while the average is above the
// rate.
func (p *pacer) wait(ctx context.Context, n int64) error {
	p.done += n
	due := p.began.Add(time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second)))
	if d := time.Until(due); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return ctx.Err()
}

// parseDigest returns the hexadecimal part of digest, or an error when it
// is not sha256:<64 lower-case hex digits>.
func parseDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, algorithm)
	if !ok || !isHex(h) {
		return "", fmt.Errorf("invalid digest %q: want sha256: and 64 lower-case hexadecimal digits", digest)
	}
	return h, nil
}

// isHex says whether h is 64 lower-case hexadecimal digits.
func isHex(h string) bool {
	if len(h) != hexDigits {
		return false
	}
	for _, c := range []byte(h) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
