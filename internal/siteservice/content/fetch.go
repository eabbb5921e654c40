package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Fetcher replicates content into a Store from HTTP(S) sources: a
// package's origin URL or the package service of a site that holds it. Each
// transfer resumes where the last one stopped (Store.Resume), is verified
// before it is served, and every transfer of the Fetcher shares one
// bandwidth limit, which SetLimit changes for the transfers under way.
type Fetcher struct {
	store  *Store
	client *http.Client
	limit  *rate.Limiter
	log    *slog.Logger
	// attempts is how many times one source is tried in a row when it
	// fails without sending wrong bytes; retryBase the first pause.
	attempts  int
	retryBase time.Duration

	mu     sync.Mutex
	active map[string]*Progress // by digest
	// fetched is the bytes read from sources by the Fetches that returned
	// (metrics.go adds those under way).
	fetched int64
}

// Progress is what a transfer under way has done.
type Progress struct {
	// Size is the content's size; Received the bytes held so far,
	// including those of earlier attempts.
	Size     int64
	Received atomic.Int64
	// Fetched counts the bytes read from sources by this Fetch.
	Fetched atomic.Int64
}

// NewFetcher returns a Fetcher into store over client (which trusts the
// certificate authorities of the sources), within bytesPerSecond for all
// its transfers together; 0 means no limit.
func NewFetcher(store *Store, client *http.Client, bytesPerSecond int64, log *slog.Logger) *Fetcher {
	if log == nil {
		log = slog.Default()
	}
	f := &Fetcher{store: store, client: client, log: log, attempts: 3, retryBase: time.Second,
		limit: rate.NewLimiter(rate.Inf, chunkSize), active: map[string]*Progress{}}
	f.SetLimit(bytesPerSecond)
	return f
}

// SetLimit changes the bandwidth limit of every transfer, those under way
// included (from their next chunk); 0 means no limit.
func (f *Fetcher) SetLimit(bytesPerSecond int64) {
	if bytesPerSecond <= 0 {
		f.limit.SetLimit(rate.Inf)
		return
	}
	f.limit.SetLimit(rate.Limit(bytesPerSecond))
}

// Limit is the bandwidth limit in bytes per second; 0 means none.
func (f *Fetcher) Limit() int64 {
	l := f.limit.Limit()
	if l == rate.Inf {
		return 0
	}
	return int64(math.Round(float64(l)))
}

// Progress returns the transfer of digest under way, or nil.
func (f *Fetcher) Progress(digest string) *Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active[digest]
}

// Fetch stores the content of digest (size bytes), taken from the first
// source that has it right. A source that fails is tried again from where
// the transfer stopped, a few times with a growing pause, before the next
// one; a source whose bytes do not match the digest is left at once. It
// returns nil once the content is in the store, an error wrapping
// ErrNoSpace when the store cannot hold it, and otherwise the last
// source's error (wrapping ErrMismatch when its bytes were wrong).
func (f *Fetcher) Fetch(ctx context.Context, digest string, size int64, sources []string) error {
	if len(sources) == 0 {
		return fmt.Errorf("fetching %s: no source", digest)
	}
	p := &Progress{Size: size}
	f.mu.Lock()
	_, busy := f.active[digest]
	if !busy {
		f.active[digest] = p
	}
	defer func() {
		f.mu.Lock()
		if !busy {
			delete(f.active, digest)
		}
		f.fetched += p.Fetched.Load()
		f.mu.Unlock()
	}()
	f.mu.Unlock()
	opts := ResumeOptions{Limit: f.limit, Received: &p.Received, Fetched: &p.Fetched}
	var last error
	for _, url := range sources {
		src := HTTPSource(f.client, url)
		failures := 0
		for {
			before := p.Received.Load()
			err := f.store.Resume(ctx, digest, size, src, opts)
			if err == nil {
				return nil
			}
			last = fmt.Errorf("fetching %s from %s: %w", digest, url, err)
			if errors.Is(err, ErrNoSpace) || errors.Is(err, errNoTimeLeft) || ctx.Err() != nil {
				return last
			}
			if errors.Is(err, ErrMismatch) {
				f.log.Warn("A source sent content that does not match its digest: trying the next one",
					"digest", digest, "source", url, "error", err)
				break
			}
			if p.Received.Load() > before {
				failures = 0 // it moved: keep going from there
			}
			if failures++; failures >= f.attempts {
				break
			}
			pause := f.retryBase << (failures - 1)
			f.log.Info("A transfer stopped: resuming", "digest", digest, "source", url, "received", p.Received.Load(),
				"size", size, "error", err, "retryIn", pause.String())
			select {
			case <-time.After(pause):
			case <-ctx.Done():
				return fmt.Errorf("fetching %s: %w", digest, ctx.Err())
			}
		}
	}
	return last
}

// maxErrorBody bounds what is read of a source's error answer.
const maxErrorBody = 512

// HTTPSource is a Source that GETs url, asking for a range to resume. A
// server that ignores the range answers 200 with the whole content, which
// the transfer takes from the start.
func HTTPSource(client *http.Client, url string) Source {
	return func(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, 0, err
		}
		if offset > 0 {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, 0, err
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return resp.Body, 0, nil
		case http.StatusPartialContent:
			start, err := contentRangeStart(resp.Header.Get("Content-Range"))
			if err != nil {
				resp.Body.Close()
				return nil, 0, err
			}
			return resp.Body, start, nil
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		resp.Body.Close()
		return nil, 0, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
}

// contentRangeStart is the first byte of a Content-Range "bytes a-b/n".
func contentRangeStart(v string) (int64, error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	first, _, dash := strings.Cut(spec, "-")
	if !ok || !dash {
		return 0, fmt.Errorf("a partial answer with Content-Range %q", v)
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, fmt.Errorf("a partial answer with Content-Range %q", v)
	}
	return start, nil
}
