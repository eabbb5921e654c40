package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// Content of the state directory.
const (
	// contentDir holds the staging file of a download, <hex>.partial, kept
	// across attempts (and restarts) so that a download resumes where it
	// stopped. It holds one content at a time.
	contentDir    = "content"
	partialSuffix = ".partial"
)

// defaultContentTimeout bounds a content action whose work item gives no
// timeout (the API's default).
const defaultContentTimeout = time.Hour

// copyBufferBytes is what one read of a download or of the disk moves.
const copyBufferBytes = 1 << 20

// errNoDisk is the message of a disk action on an agent without a disk.
const errNoDisk = "no disk configured (--disk)"

// errStalled ends a request that moved no byte for stallTimeout.
var errStalled = errors.New("no byte moved for too long")

// actionTimeout is a content action's timeout, the API's default when the
// item gives none.
func actionTimeout(seconds int64) time.Duration {
	if seconds <= 0 {
		return defaultContentTimeout
	}
	return time.Duration(seconds) * time.Second
}

// digestHex returns the hex digits of a "sha256:<64 lower-case hex>"
// digest.
func digestHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 2*sha256.Size || strings.ToLower(h) != h {
		return "", fmt.Errorf("digest %q is not sha256:<64 lower-case hex digits>", digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("digest %q is not sha256:<64 lower-case hex digits>", digest)
	}
	return h, nil
}

// shortDigest is a digest cut for a message.
func shortDigest(digest string) string {
	if len(digest) > len("sha256:")+12 {
		return digest[:len("sha256:")+12] + "…"
	}
	return digest
}

// deployImage downloads and verifies the image of a deployImage item, then
// writes it to the disk.
func (a *Agent) deployImage(ctx context.Context, item protocol.WorkItem, started time.Time) (protocol.WorkStatus, bool) {
	di := item.Action.DeployImage
	if a.cfg.Disk == "" {
		return failedStatus(item, started, protocol.ReasonDiskFailed, errNoDisk), false
	}
	timeout := actionTimeout(di.TimeoutSeconds)
	deadline := started.Add(timeout)
	// A disk that cannot take the image fails before the download.
	if err := checkDisk(a.cfg.Disk, di.Size); err != nil {
		return failedStatus(item, started, protocol.ReasonDiskFailed, err.Error()), false
	}
	staged, fail, stopped := a.download(ctx, item, started, di.Content, deadline, timeout)
	if stopped || fail != nil {
		return deref(fail), stopped
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	a.log.Info("Writing the image to the disk", "id", item.ID, "package", di.Package, "digest", di.Digest, "disk", a.cfg.Disk)
	n, err := writeDisk(wctx, a.cfg.Disk, staged, di.Size)
	switch {
	case ctx.Err() != nil:
		// The staging file stays: the next attempt need not download it.
		return protocol.WorkStatus{}, true
	case err != nil && wctx.Err() != nil:
		a.removeStaging(staged)
		return failedStatus(item, started, protocol.ReasonTimedOut, fmt.Sprintf(
			"the timeout of %s passed while the image was written to %s (%d of %d bytes): the disk is partly written", timeout, a.cfg.Disk, n, di.Size)), false
	case err != nil:
		a.removeStaging(staged)
		return failedStatus(item, started, protocol.ReasonDiskFailed, err.Error()), false
	}
	a.removeStaging(staged)
	finished := time.Now().UTC()
	return protocol.WorkStatus{Attempt: item.Attempt, State: protocol.WorkSucceeded, Started: &started, Finished: &finished,
		Message: truncateMessage(fmt.Sprintf("wrote %d bytes of %s (%s) to %s", n, di.Digest, di.Package, a.cfg.Disk))}, false
}

// installSoftware downloads and verifies the installer of an
// installSoftware item, then runs it like a script: its exit code decides.
func (a *Agent) installSoftware(ctx context.Context, item protocol.WorkItem, started time.Time) (protocol.WorkStatus, bool) {
	is := item.Action.InstallSoftware
	timeout := actionTimeout(is.TimeoutSeconds)
	deadline := started.Add(timeout)
	staged, fail, stopped := a.download(ctx, item, started, is.Content, deadline, timeout)
	if stopped || fail != nil {
		return deref(fail), stopped
	}
	dir, err := a.scriptDir(item.ID)
	if err != nil {
		a.removeStaging(staged)
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("making the installer's directory: %v", err)), false
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			a.log.Warn("Removing the installer's directory", "id", item.ID, "error", err)
		}
	}()
	installer := filepath.Join(dir, installerFile)
	if err := os.Rename(staged, installer); err != nil {
		a.removeStaging(staged)
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("moving the installer into place: %v", err)), false
	}
	if err := os.Chmod(installer, 0o700); err != nil {
		return failedStatus(item, started, protocol.ReasonStartFailed, fmt.Sprintf("making the installer executable: %v", err)), false
	}
	left := time.Until(deadline)
	if left <= 0 {
		return failedStatus(item, started, protocol.ReasonTimedOut,
			fmt.Sprintf("the timeout of %s passed before the installer could start", timeout)), false
	}
	return a.runProgram(ctx, item, started, program{
		what: "the installer", name: "the installer", path: installer, dir: dir, timeout: left,
		timedOut: fmt.Sprintf("the installer ran past the timeout of %s (download included): it was killed, with the processes it started", timeout),
		logAttrs: []any{"package", is.Package, "digest", is.Digest},
	})
}

// deref is *st, or the zero status for nil.
func deref(st *protocol.WorkStatus) protocol.WorkStatus {
	if st == nil {
		return protocol.WorkStatus{}
	}
	return *st
}

// download fetches c from the package endpoints of the agent's site into
// the staging file and verifies its size and digest; it returns the
// staging file's path. It resumes from the bytes already staged (by an
// earlier request, endpoint, attempt or run), fails over to the next
// endpoint when one cannot serve (a transport error, an error status, an
// answer that does not fit), and goes round the endpoints with a back-off
// until contentRounds rounds failed or deadline passed: fail is then a
// ContentUnavailable result. stopped is true when ctx ended first.
func (a *Agent) download(ctx context.Context, item protocol.WorkItem, started time.Time, c protocol.Content,
	deadline time.Time, timeout time.Duration) (path string, fail *protocol.WorkStatus, stopped bool) {
	failed := func(reason, msg string) (string, *protocol.WorkStatus, bool) {
		st := failedStatus(item, started, reason, msg)
		return "", &st, false
	}
	hexDigits, err := digestHex(c.Digest)
	if err != nil || c.Size < 0 {
		if err == nil {
			err = fmt.Errorf("size %d is negative", c.Size)
		}
		return failed(protocol.ReasonStartFailed, fmt.Sprintf("the work item's content is invalid: %v", err))
	}
	dir, err := a.stagingDir(hexDigits)
	if err != nil {
		return failed(protocol.ReasonStartFailed, fmt.Sprintf("making the staging directory: %v", err))
	}
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	s, err := openStaging(dctx, filepath.Join(dir, hexDigits+partialSuffix), c.Size)
	if err != nil {
		if ctx.Err() != nil {
			return "", nil, true
		}
		return failed(protocol.ReasonStartFailed, fmt.Sprintf("opening the staging file: %v", err))
	}
	defer s.close()
	if s.have > 0 {
		a.log.Info("Resuming the download from the bytes staged earlier", "id", item.ID, "package", c.Package, "have", s.have, "size", c.Size)
	}
	if s.have == c.Size && s.sum() == hexDigits {
		// Staged whole by an earlier attempt that stopped before using it.
		if err := s.finish(); err != nil {
			return failed(protocol.ReasonStartFailed, fmt.Sprintf("closing the staging file: %v", err))
		}
		return s.path, nil, false
	}
	what := fmt.Sprintf("%s (%s, %d bytes)", c.Package, shortDigest(c.Digest), c.Size)
	tried := newTriedList()
	retry := backoff{base: a.t.contentBase, max: a.t.contentMax}
	first := 0 // the endpoint a round starts with
	for round := 1; ; round++ {
		endpoints := a.packageEndpointList()
		if len(endpoints) == 0 {
			tried.note("", "the locate answer gave no package endpoint")
		}
		var asked time.Duration // the longest Retry-After of the round
		for i := range endpoints {
			ep := endpoints[(first+i)%len(endpoints)]
			err := a.fetchFrom(dctx, item.ID, ep, c, s)
			if ctx.Err() != nil {
				return "", nil, true
			}
			if dctx.Err() != nil {
				tried.note(ep, errorText(err))
				break
			}
			if err != nil {
				tried.note(ep, errorText(err))
				asked = max(asked, retryAfterOf(err))
				a.log.Warn("Downloading content failed: trying the next package endpoint", "id", item.ID, "package", c.Package,
					"endpoint", ep, "have", s.have, "size", c.Size, "error", err)
				continue
			}
			if s.sum() == hexDigits {
				if err := s.finish(); err != nil {
					return failed(protocol.ReasonStartFailed, fmt.Sprintf("closing the staging file: %v", err))
				}
				a.log.Info("Downloaded and verified the content", "id", item.ID, "package", c.Package, "digest", c.Digest,
					"size", c.Size, "endpoint", ep)
				return s.path, nil, false
			}
			// A bad byte somewhere, from this endpoint or an earlier one:
			// start over, with the next endpoint first.
			a.log.Error("The content downloaded does not match its digest: downloading it again", "id", item.ID,
				"package", c.Package, "digest", c.Digest, "endpoint", ep)
			tried.note(ep, "served bytes that do not match the digest")
			if err := s.discard(); err != nil {
				return failed(protocol.ReasonStartFailed, fmt.Sprintf("removing the staging file: %v", err))
			}
			first = (first + i + 1) % len(endpoints)
			break
		}
		if dctx.Err() != nil {
			break
		}
		if round >= a.t.contentRounds {
			// The staging file stays for the next attempt.
			return failed(protocol.ReasonContentUnavailable, fmt.Sprintf("no package endpoint of the site served %s after %d rounds: %s",
				what, round, tried))
		}
		d := max(retry.next(), jitter(asked, a.t.retryJitter, nil))
		a.log.Warn("No package endpoint served the content: trying again", "id", item.ID, "package", c.Package,
			"round", round, "retryIn", d.String())
		if !sleep(dctx, d) {
			break
		}
	}
	if ctx.Err() != nil {
		return "", nil, true
	}
	// The staging file stays for the next attempt.
	return failed(protocol.ReasonContentUnavailable, fmt.Sprintf("%s was not downloaded within the timeout of %s (%d bytes staged): %s",
		what, timeout, s.have, tried))
}

// fetchFrom fetches the rest of c from endpoint into s: nil once s holds
// c.Size bytes. A connection that breaks after it brought bytes is resumed
// at once from the same endpoint; a request that moves nothing for
// stallTimeout is given up.
func (a *Agent) fetchFrom(ctx context.Context, id, endpoint string, c protocol.Content, s *staging) error {
	for {
		if s.have == c.Size {
			return nil
		}
		before := s.have
		err := a.fetchOnce(ctx, endpoint, c, s)
		if err == nil {
			return nil
		}
		if s.have == before || ctx.Err() != nil || statusOf(err) != 0 {
			return err
		}
		a.log.Info("The download broke off after it brought bytes: resuming from the same endpoint", "id", id,
			"endpoint", endpoint, "have", s.have, "size", c.Size, "error", err)
	}
}

// fetchOnce sends one GET for the rest of c and appends what it brings to
// s.
func (a *Agent) fetchOnce(ctx context.Context, endpoint string, c protocol.Content, s *staging) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(a.t.stallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	u := joinURL(endpoint, protocol.ContentPath(c.Digest))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", a.client.userAgent)
	if s.have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(s.have, 10)+"-")
	}
	resp, err := a.client.http.Do(req)
	if err != nil {
		return causeOf(ctx, err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != c.Size {
			return fmt.Errorf("the answer holds %d bytes, the content %d", resp.ContentLength, c.Size)
		}
		if s.have > 0 {
			// The whole content, not the rest: start over.
			if err := s.discard(); err != nil {
				return err
			}
		}
	case http.StatusPartialContent:
		first, total, err := parseContentRangeHeader(resp.Header.Get("Content-Range"))
		if err != nil {
			return err
		}
		if first != s.have || total >= 0 && total != c.Size {
			return fmt.Errorf("asked for the bytes from %d of %d, the answer has Content-Range %q", s.have, c.Size,
				resp.Header.Get("Content-Range"))
		}
	default:
		return readStatusError(fmt.Sprintf("GET %s", protocol.ContentPath(shortDigest(c.Digest))), resp, a.client.secondUnit)
	}
	buf := make([]byte, min(copyBufferBytes, max(c.Size-s.have, 1)))
	for s.have < c.Size {
		n, err := resp.Body.Read(buf[:min(int64(len(buf)), c.Size-s.have)])
		if n > 0 {
			watchdog.Reset(a.t.stallTimeout)
			if werr := s.write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			if s.have < c.Size {
				return fmt.Errorf("the answer ended at byte %d of %d", s.have, c.Size)
			}
			break
		}
		if err != nil {
			return causeOf(ctx, err)
		}
	}
	return nil
}

// causeOf is err, or why ctx was cancelled when it was stalled.
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
		return cause
	}
	return err
}

// parseContentRangeHeader reads a 206 answer's "bytes first-last/total";
// total is -1 for "*".
func parseContentRangeHeader(v string) (first, total int64, err error) {
	bad := fmt.Errorf("a partial answer with Content-Range %q", v)
	r, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, bad
	}
	span, size, ok := strings.Cut(r, "/")
	a, b, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return 0, 0, bad
	}
	if first, err = strconv.ParseInt(a, 10, 64); err != nil {
		return 0, 0, bad
	}
	if last, err := strconv.ParseInt(b, 10, 64); err != nil || last < first {
		return 0, 0, bad
	}
	if size == "*" {
		return first, -1, nil
	}
	if total, err = strconv.ParseInt(size, 10, 64); err != nil {
		return 0, 0, bad
	}
	return first, total, nil
}

// readStatusError is the error of an answer that is not the one wanted:
// its status, its message (a protocol.Error or plain text), and its
// Retry-After.
func readStatusError(op string, resp *http.Response, unit time.Duration) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	se := &statusError{op: op, code: resp.StatusCode,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), unit)}
	if json.Unmarshal(data, &se.body) != nil || se.body.Error == "" {
		se.body.Error = strings.TrimSpace(string(data))
		if len(se.body.Error) > 120 {
			se.body.Error = se.body.Error[:120]
		}
	}
	return se
}

// errorText is err for a message: a transport error without the URL.
func errorText(err error) string {
	if err == nil {
		return "the timeout passed"
	}
	if ue := (*url.Error)(nil); errors.As(err, &ue) {
		err = ue.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "the timeout passed"
	}
	return err.Error()
}

// triedList is what was tried, for a failure's message: the last error of
// each endpoint, in the order they were first tried.
type triedList struct {
	order []string
	last  map[string]string
}

func newTriedList() *triedList { return &triedList{last: map[string]string{}} }

// note records err for endpoint ("" for none).
func (t *triedList) note(endpoint, err string) {
	if _, ok := t.last[endpoint]; !ok {
		t.order = append(t.order, endpoint)
	}
	t.last[endpoint] = err
}

func (t *triedList) String() string {
	if len(t.order) == 0 {
		return "nothing was tried"
	}
	parts := make([]string, 0, len(t.order))
	for _, e := range t.order {
		if e == "" {
			parts = append(parts, t.last[e])
			continue
		}
		parts = append(parts, e+": "+t.last[e])
	}
	return strings.Join(parts, "; ")
}

// sleep waits d; false when ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}

// stagingDir makes the staging directory (in the state directory, or a
// temporary one without it) and removes the staging files of other
// content from it: the agent stages one content at a time, and a staging
// file left by an earlier download is worth keeping only for its own
// content.
func (a *Agent) stagingDir(keepHex string) (string, error) {
	var dir string
	if a.cfg.StateDir == "" {
		dir = filepath.Join(os.TempDir(), "site-agent-content")
	} else {
		dir = filepath.Join(a.cfg.StateDir, contentDir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if e.Name() == keepHex+partialSuffix {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			a.log.Warn("Removing an earlier staging file", "file", e.Name(), "error", err)
		}
	}
	return dir, nil
}

// removeStaging removes a staging file.
func (a *Agent) removeStaging(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Warn("Removing the staging file", "file", path, "error", err)
	}
}

// staging is a download's staging file: the bytes fetched so far, and
// their running hash.
type staging struct {
	path string
	size int64
	f    *os.File
	h    hash.Hash
	have int64
}

// openStaging opens (or creates) the staging file at path for content of
// size bytes and hashes the bytes it holds already; a file longer than
// size is started over.
func openStaging(ctx context.Context, path string, size int64) (*staging, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	s := &staging{path: path, size: size, f: f, h: sha256.New()}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if fi.Size() > size {
		if err := f.Truncate(0); err != nil {
			_ = f.Close()
			return nil, err
		}
		return s, nil
	}
	n, err := copyContext(ctx, s.h, f)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	s.have = n
	return s, nil
}

// write appends p.
func (s *staging) write(p []byte) error {
	if _, err := s.f.Write(p); err != nil {
		return fmt.Errorf("writing the staging file: %w", err)
	}
	s.h.Write(p)
	s.have += int64(len(p))
	return nil
}

// sum is the hex digest of the bytes staged.
func (s *staging) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

// discard removes the staging file and starts an empty one.
func (s *staging) discard() error {
	_ = s.f.Close()
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	s.f, s.h, s.have = f, sha256.New(), 0
	return nil
}

// finish closes the file of verified content.
func (s *staging) finish() error {
	f := s.f
	s.f = nil
	return f.Close()
}

// close closes the file, if still open.
func (s *staging) close() {
	if s.f != nil {
		_ = s.f.Close()
	}
}

// copyContext copies src to dst until EOF or ctx ends.
func copyContext(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, copyBufferBytes)
	var total int64
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// openDisk opens the disk and returns its size: a file's length, or how
// far a device can be read.
func openDisk(path string, flag int) (*os.File, int64, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("opening the disk: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("reading the disk %s: %w", path, err)
	}
	if fi.Mode().IsRegular() {
		return f, fi.Size(), nil
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		_ = f.Close()
		return nil, 0, fmt.Errorf("reading the size of the disk %s: %w", path, err)
	}
	return f, size, nil
}

// checkDisk says whether the disk at path can take an image of size
// bytes: it opens for writing, and a device is large enough (a file
// grows).
func checkDisk(path string, size int64) error {
	f, have, err := openDisk(path, os.O_WRONLY)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading the disk %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() && have < size {
		return fmt.Errorf("the disk %s holds %d bytes, the image %d", path, have, size)
	}
	return nil
}

// writeDisk writes the image in the file src, of size bytes, to the disk
// at path from its first byte, and syncs it. A disk that is a file is cut
// to the image's length. It returns how many bytes it wrote.
func writeDisk(ctx context.Context, path, src string, size int64) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("opening the verified image: %w", err)
	}
	defer func() { _ = in.Close() }()
	out, _, err := openDisk(path, os.O_WRONLY)
	if err != nil {
		return 0, err
	}
	n, err := copyContext(ctx, out, io.LimitReader(in, size))
	if err != nil {
		_ = out.Close()
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		return n, fmt.Errorf("writing the disk %s at byte %d: %w", path, n, err)
	}
	if n != size {
		_ = out.Close()
		return n, fmt.Errorf("the verified image ended at byte %d of %d", n, size)
	}
	if fi, err := out.Stat(); err == nil && fi.Mode().IsRegular() {
		if err := out.Truncate(size); err != nil {
			_ = out.Close()
			return n, fmt.Errorf("cutting the disk file %s to the image's length: %w", path, err)
		}
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return n, fmt.Errorf("syncing the disk %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		return n, fmt.Errorf("closing the disk %s: %w", path, err)
	}
	return n, nil
}
