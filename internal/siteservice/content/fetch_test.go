package content

// Replication into a store over real sockets: resume after a cut or a
// restart, a tampered byte, failing over to the next source, the shared
// bandwidth limit and its change mid-transfer, and a disk too small.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// origin serves one piece of content with ranges and counts what it sends.
type origin struct {
	*httptest.Server
	data []byte
	sent atomic.Int64
	// cutAt, when positive, cuts the next answer after that many bytes of
	// the content (the connection is dropped), once.
	cutAt atomic.Int64
	gets  atomic.Int32

	mu       sync.Mutex
	requests []*request // in the order they came
}

// request is one GET the origin answered: its Range header and the bytes
// of content it sent.
type request struct {
	rangeHeader string
	sent        atomic.Int64
}

func newOrigin(t *testing.T, data []byte) *origin {
	o := &origin{data: data}
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.gets.Add(1)
		req := &request{rangeHeader: r.Header.Get("Range")}
		o.mu.Lock()
		o.requests = append(o.requests, req)
		o.mu.Unlock()
		cw := &countingWriter{ResponseWriter: w, o: o, req: req, left: o.cutAt.Swap(0)}
		http.ServeContent(cw, r, "content", time.Time{}, bytes.NewReader(o.data))
	}))
	t.Cleanup(o.Close)
	return o
}

type countingWriter struct {
	http.ResponseWriter
	o    *origin
	req  *request
	left int64 // bytes before the cut; 0 for none
}

func (w *countingWriter) count(n int) {
	w.o.sent.Add(int64(n))
	w.req.sent.Add(int64(n))
}

// last is the last request the origin answered.
func (o *origin) last() *request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests[len(o.requests)-1]
}

func (w *countingWriter) Write(p []byte) (int, error) {
	if w.left > 0 && int64(len(p)) >= w.left {
		n, _ := w.ResponseWriter.Write(p[:w.left])
		w.count(n)
		w.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // drops the connection mid-answer
	}
	if w.left > 0 {
		w.left -= int64(len(p))
	}
	n, err := w.ResponseWriter.Write(p)
	w.count(n)
	return n, err
}

func randomContent(n int) ([]byte, string) {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return data, digestOf(string(data))
}

func startedStore(t *testing.T, dir string) *Store {
	t.Helper()
	s := NewStore(dir, StoreOptions{Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); s.Wait() })
	s.Start(ctx)
	return s
}

func testFetcher(t *testing.T, s *Store, limit int64) *Fetcher {
	f := NewFetcher(s, http.DefaultClient, limit, slog.New(slog.NewTextHandler(t.Output(), nil)))
	f.retryBase = 10 * time.Millisecond
	return f
}

func storedBytes(t *testing.T, s *Store, digest string) []byte {
	t.Helper()
	f, err := s.Open(digest)
	if err != nil {
		t.Fatalf("opening %s: %v", digest, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A transfer cut mid-way resumes from where it stopped: at half of 8 MiB,
// and with a cut and an end off the 4 KiB blocks that direct writes need
// (the resumed transfer first reaches a block boundary through the page
// cache, writes whole blocks around it, and the last piece through it
// again).
func TestFetchResumesAfterTheSourceIsCut(t *testing.T) {
	for _, tc := range []struct {
		name        string
		size, cutAt int
	}{
		{"at half way", 8 << 20, 4 << 20},
		{"off block boundaries", 3<<20 + 1234, 1<<20 + 777},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, digest := randomContent(tc.size)
			o := newOrigin(t, data)
			o.cutAt.Store(int64(tc.cutAt))
			s := startedStore(t, t.TempDir())
			f := testFetcher(t, s, 0)
			if err := f.Fetch(context.Background(), digest, int64(len(data)), []string{o.URL}); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(storedBytes(t, s, digest), data) {
				t.Fatal("the stored content differs from the origin's")
			}
			// The second GET asked for the rest only: what went twice is
			// at most what was in flight when the connection dropped.
			resent := o.sent.Load() - int64(len(data))
			t.Logf("origin sent %d bytes for %d (%d again) in %d GETs", o.sent.Load(), len(data), resent, o.gets.Load())
			if o.gets.Load() != 2 {
				t.Errorf("%d GETs, want 2 (the cut one and the resume)", o.gets.Load())
			}
			if resent > int64(len(data))/100 {
				t.Errorf("%d bytes sent again after the cut, over 1%% of %d", resent, len(data))
			}
			if s.Partial(digest) != 0 {
				t.Error("a partial file is left after the content was stored")
			}
		})
	}
}

func TestFetchResumesAfterARestart(t *testing.T) {
	data, digest := randomContent(4 << 20)
	o := newOrigin(t, data)
	dir := t.TempDir()
	s := startedStore(t, dir)
	f := testFetcher(t, s, 1<<20) // 1 MiB/s: stopped after about a second
	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	err := f.Fetch(ctx, digest, int64(len(data)), []string{o.URL})
	cancel()
	if err == nil {
		t.Fatal("the transfer finished within its deadline: nothing to resume")
	}
	held := s.Partial(digest)
	if held <= 0 || held >= int64(len(data)) {
		t.Fatalf("the stopped transfer left %d bytes to resume from", held)
	}

	// Another process on the same volume: it resumes from what is held.
	s2 := startedStore(t, dir)
	if got := s2.Partial(digest); got != held {
		t.Fatalf("the restarted store holds %d partial bytes, want %d", got, held)
	}
	f2 := testFetcher(t, s2, 0)
	if err := f2.Fetch(context.Background(), digest, int64(len(data)), []string{o.URL}); err != nil {
		t.Fatal(err)
	}
	last := o.last()
	if want := fmt.Sprintf("bytes=%d-", held); last.rangeHeader != want {
		t.Errorf("the resume asked for %q, want %q", last.rangeHeader, want)
	}
	if got, want := last.sent.Load(), int64(len(data))-held; got != want {
		t.Errorf("the resume fetched %d bytes, want the %d missing", got, want)
	}
	if !bytes.Equal(storedBytes(t, s2, digest), data) {
		t.Fatal("the stored content differs from the origin's")
	}
}

func TestFetchRefusesATamperedByte(t *testing.T) {
	data, digest := randomContent(1 << 20)
	bad := bytes.Clone(data)
	bad[len(bad)/3] ^= 0x01
	o := newOrigin(t, bad)
	s := startedStore(t, t.TempDir())
	err := testFetcher(t, s, 0).Fetch(context.Background(), digest, int64(len(data)), []string{o.URL})
	if !errors.Is(err, ErrMismatch) {
		t.Fatalf("fetching from a tampered origin: %v, want ErrMismatch", err)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), o.URL) || !strings.Contains(err.Error(), "sha256:") {
		t.Errorf("the error names neither the source nor what was received: %v", err)
	}
	if s.Has(digest) || s.Partial(digest) != 0 {
		t.Errorf("tampered content left behind: stored %v, partial %d bytes", s.Has(digest), s.Partial(digest))
	}
	if o.gets.Load() != 1 {
		t.Errorf("%d GETs of a source that sent wrong bytes, want 1", o.gets.Load())
	}
}

func TestFetchFailsOverToTheNextSource(t *testing.T) {
	data, digest := randomContent(1 << 20)
	bad := bytes.Clone(data)
	bad[0] ^= 0xff
	tampered := newOrigin(t, bad)
	missing := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(missing.Close)
	good := newOrigin(t, data)
	s := startedStore(t, t.TempDir())
	if err := testFetcher(t, s, 0).Fetch(context.Background(), digest, int64(len(data)),
		[]string{tampered.URL, missing.URL, good.URL}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(storedBytes(t, s, digest), data) {
		t.Fatal("the stored content differs from the good source's")
	}
}

// measure samples the bytes received by the transfers under way.
func receivedBy(f *Fetcher, digests ...string) int64 {
	var n int64
	for _, d := range digests {
		if p := f.Progress(d); p != nil {
			n += p.Received.Load()
		}
	}
	return n
}

// The limit bounds every transfer of a Fetcher together. Only the bound
// is asserted (a loaded machine is slower, never faster); how close the
// transfers come to it is measured by the benchmark.
func TestFetchBandwidthLimitIsShared(t *testing.T) {
	const limit = 4 << 20
	a, da := randomContent(4 << 20)
	b, db := randomContent(4<<20 + 1)
	oa, ob := newOrigin(t, a), newOrigin(t, b)
	s := startedStore(t, t.TempDir())
	f := testFetcher(t, s, limit)
	start := time.Now()
	var wg sync.WaitGroup
	for _, job := range []struct {
		digest string
		size   int
		url    string
	}{{da, len(a), oa.URL}, {db, len(b), ob.URL}} {
		wg.Go(func() {
			if err := f.Fetch(context.Background(), job.digest, int64(job.size), []string{job.url}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := float64(len(a) + len(b))
	rate := total / elapsed.Seconds()
	t.Logf("%.0f bytes in %s: %.2f MiB/s against a limit of %.2f MiB/s", total, elapsed, rate/(1<<20), float64(limit)/(1<<20))
	// The bucket starts full with one chunk per transfer.
	if max := 1.1 * (float64(limit) + 2*chunkSize/elapsed.Seconds()); rate > max {
		t.Errorf("two transfers moved %.0f bytes/s together, over the limit of %d by more than 10%%", rate, limit)
	}
}

func TestFetchLimitChangesMidTransfer(t *testing.T) {
	data, digest := randomContent(6 << 20)
	o := newOrigin(t, data)
	s := startedStore(t, t.TempDir())
	f := testFetcher(t, s, 16<<20)
	done := make(chan error, 1)
	go func() { done <- f.Fetch(context.Background(), digest, int64(len(data)), []string{o.URL}) }()
	for f.Progress(digest) == nil || receivedBy(f, digest) < 1<<20 {
		time.Sleep(5 * time.Millisecond)
	}
	const lower = 2 << 20
	f.SetLimit(lower)
	if f.Limit() != lower {
		t.Errorf("Limit() = %d after SetLimit(%d)", f.Limit(), lower)
	}
	time.Sleep(100 * time.Millisecond) // a chunk reserved at the old rate
	from, start := receivedBy(f, digest), time.Now()
	time.Sleep(time.Second)
	moved, window := receivedBy(f, digest)-from, time.Since(start)
	rate := float64(moved) / window.Seconds()
	t.Logf("after the change: %d bytes in %s (%.2f MiB/s, limit %.2f MiB/s)", moved, window, rate/(1<<20), float64(lower)/(1<<20))
	if rate > 1.1*lower+float64(chunkSize)/window.Seconds() {
		t.Errorf("the lower limit was not applied to the transfer under way: %.0f bytes/s", rate)
	}
	f.SetLimit(0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if o.gets.Load() != 1 || o.sent.Load() != int64(len(data)) {
		t.Errorf("the change restarted the transfer: %d GETs, %d bytes sent for %d", o.gets.Load(), o.sent.Load(), len(data))
	}
}

func TestFetchIntoAFullDisk(t *testing.T) {
	data, digest := randomContent(1 << 20)
	o := newOrigin(t, data)
	s := startedStore(t, t.TempDir())
	s.freeSpace = func() (int64, error) { return 8 << 20, nil } // under the content and the margin
	err := testFetcher(t, s, 0).Fetch(context.Background(), digest, int64(len(data)), []string{o.URL})
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("fetching into a full store: %v, want ErrNoSpace", err)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "8388608 are free") {
		t.Errorf("the error does not say what is free: %v", err)
	}
	if s.Has(digest) || s.Partial(digest) != 0 || o.gets.Load() != 0 {
		t.Errorf("a transfer began: stored %v, partial %d bytes, %d GETs", s.Has(digest), s.Partial(digest), o.gets.Load())
	}
}

func TestDirectWriterFits(t *testing.T) {
	d := &directWriter{}
	for _, tc := range []struct {
		off  int64
		n    int
		want bool
	}{
		{0, chunkSize, true},
		{directAlign, directAlign, true},
		{0, 1234, false},          // the last piece of a content
		{777, directAlign, false}, // a resume off a boundary
		{0, 0, false},
	} {
		if got := d.fits(tc.off, tc.n); got != tc.want {
			t.Errorf("fits(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
	d.disable()
	if d.fits(0, chunkSize) {
		t.Error("a disabled direct writer still takes writes")
	}
	var none *directWriter
	if none.fits(0, chunkSize) {
		t.Error("no direct writer takes writes")
	}
	if b := alignedBuffer(chunkSize); len(b) != chunkSize || cap(b) != chunkSize || uintptr(unsafe.Pointer(&b[0]))%directAlign != 0 {
		t.Errorf("alignedBuffer: len %d cap %d at %p, want %d bytes aligned to %d", len(b), cap(b), &b[0], chunkSize, directAlign)
	}
}
