package managertest

import (
	"maps"
	"net/http"
	"slices"
	"sync"
)

// RequestCounter counts the requests that go through the RoundTripper it
// wraps (see Wrap): the writes (every request but a GET) by class, and the
// responses that show contention: 409 Conflict, and 429 Too Many Requests
// to writes and to reads. A 429 to a read is usually a list or watch sent
// while the API server's watch cache for a just-installed CRD was still
// initialising. The zero value is ready to use.
type RequestCounter struct {
	// Classify names the class of a write, such as "Subnet status"; when
	// nil, a write's class is its method and path ("PATCH /apis/...").
	Classify func(*http.Request) string

	mu     sync.Mutex
	counts Counts
}

// Counts are what a RequestCounter counted.
type Counts struct {
	// Writes are the write requests by class.
	Writes map[string]int64
	// Reads are the GET requests (gets, lists and the start of each
	// watch) by path, without the query.
	Reads map[string]int64
	// Conflicts are the responses 409 Conflict.
	Conflicts int64
	// ThrottledWrites and ThrottledReads are the responses 429 Too Many
	// Requests to writes and to reads.
	ThrottledWrites, ThrottledReads int64
}

// Total is the number of writes.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c.Writes {
		n += v
	}
	return n
}

// Sub is what was counted since before.
func (c Counts) Sub(before Counts) Counts {
	d := Counts{
		Writes:          map[string]int64{},
		Reads:           map[string]int64{},
		Conflicts:       c.Conflicts - before.Conflicts,
		ThrottledWrites: c.ThrottledWrites - before.ThrottledWrites,
		ThrottledReads:  c.ThrottledReads - before.ThrottledReads,
	}
	for class, n := range c.Writes {
		if n -= before.Writes[class]; n != 0 {
			d.Writes[class] = n
		}
	}
	for path, n := range c.Reads {
		if n -= before.Reads[path]; n != 0 {
			d.Reads[path] = n
		}
	}
	return d
}

// Snapshot is a copy of the counts so far.
func (c *RequestCounter) Snapshot() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.counts
	s.Writes = maps.Clone(c.counts.Writes)
	s.Reads = maps.Clone(c.counts.Reads)
	return s
}

// Load is the number of writes so far; it has atomic.Int64's name so that
// Eventually and Consistently can poll it (counter.Load).
func (c *RequestCounter) Load() int64 {
	return c.Snapshot().Total()
}

// Classes are the classes of the writes so far, sorted: with no Classify,
// every method and path written, for a failure message.
func (c *RequestCounter) Classes() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.counts.Writes))
}

// Wrap is a rest.Config WrapTransport function: cfg.Wrap(counter.Wrap).
func (c *RequestCounter) Wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		write := req.Method != http.MethodGet
		if write {
			class := req.Method + " " + req.URL.Path
			if c.Classify != nil {
				class = c.Classify(req)
			}
			c.mu.Lock()
			if c.counts.Writes == nil {
				c.counts.Writes = map[string]int64{}
			}
			c.counts.Writes[class]++
			c.mu.Unlock()
		} else {
			c.mu.Lock()
			if c.counts.Reads == nil {
				c.counts.Reads = map[string]int64{}
			}
			c.counts.Reads[req.URL.Path]++
			c.mu.Unlock()
		}
		resp, err := next.RoundTrip(req)
		if err != nil {
			return resp, err
		}
		c.mu.Lock()
		switch {
		case resp.StatusCode == http.StatusConflict:
			c.counts.Conflicts++
		case resp.StatusCode == http.StatusTooManyRequests && write:
			c.counts.ThrottledWrites++
		case resp.StatusCode == http.StatusTooManyRequests:
			c.counts.ThrottledReads++
		}
		c.mu.Unlock()
		return resp, nil
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
