package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bigFile returns a sparse file of size bytes: reading it costs no disk.
func bigFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// fileServer serves path at GET /file and counts the handlers running.
func fileServer(path string, running *atomic.Int32) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		running.Add(1)
		defer running.Add(-1)
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		info, _ := f.Stat()
		http.ServeContent(w, r, "", info.ModTime(), f)
	})
	return mux
}

// openFiles counts the process's descriptors open on path.
func openFiles(t *testing.T, path string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open files: %v", err)
	}
	n := 0
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds or within is over.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
	}
}

// TestSlowReadersAreCut starts downloads that read one byte a second: the
// server must cut them and close its files instead of holding them.
func TestSlowReadersAreCut(t *testing.T) {
	const size = 32 << 20 // more than the kernel buffers of a connection hold
	path := bigFile(t, size)
	var running atomic.Int32
	r := start(t, &Host{Handler: fileServer(path, &running),
		Limits: Limits{MinRate: 64 << 10, RateWindow: time.Second}})

	const clients = 20
	bodies := make([]io.ReadCloser, clients)
	for i := range bodies {
		tr := &http.Transport{DisableKeepAlives: true}
		t.Cleanup(tr.CloseIdleConnections)
		resp, err := (&http.Client{Transport: tr}).Get(r.api + "/file")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("GET /file: %d", resp.StatusCode)
		}
		bodies[i] = resp.Body
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, body := range bodies {
		wg.Go(func() { // one byte a second
			buf := make([]byte, 1)
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				if _, err := body.Read(buf); err != nil {
					return
				}
			}
		})
	}
	waitFor(t, 20*time.Second, "the slow downloads are cut", func() bool { return running.Load() == 0 })
	close(stop)
	wg.Wait()
	if n := openFiles(t, path); n != 0 {
		t.Errorf("%d descriptors still open on the served file", n)
	}
	for i, body := range bodies {
		n, err := io.Copy(io.Discard, body)
		if err == nil || n >= size {
			t.Errorf("client %d: read %d bytes, %v; want a download cut short", i, n, err)
		}
	}
}

// TestDownloadsAtADecentRateAreNotCut reads at several times the minimum
// rate, over more than the kernel buffers hold, and at full speed.
func TestDownloadsAtADecentRateAreNotCut(t *testing.T) {
	const size = 16 << 20
	path := bigFile(t, size)
	var running atomic.Int32
	r := start(t, &Host{Handler: fileServer(path, &running),
		Limits: Limits{MinRate: 512 << 10, RateWindow: time.Second}})

	t.Run("full speed", func(t *testing.T) {
		resp, err := http.Get(r.api + "/file")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if n, err := io.Copy(io.Discard, resp.Body); err != nil || n != size {
			t.Errorf("read %d of %d bytes: %v", n, size, err)
		}
	})
	t.Run("four times the minimum rate", func(t *testing.T) {
		resp, err := http.Get(r.api + "/file")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var n int64
		for tick := time.NewTicker(50 * time.Millisecond); ; <-tick.C { // 100 KiB every 50 ms: 2 MiB/s
			m, err := io.CopyN(io.Discard, resp.Body, 100<<10)
			n += m
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("cut after %d of %d bytes: %v", n, size, err)
			}
		}
		if n != size {
			t.Errorf("read %d of %d bytes", n, size)
		}
	})
}

// TestSlowBodiesAreCut sends a request body at one byte a second.
func TestSlowBodiesAreCut(t *testing.T) {
	readErr := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
		}
	})
	r := start(t, &Host{Handler: mux, Limits: Limits{MinRate: 64, RateWindow: time.Second}})

	conn, err := net.Dial("tcp", strings.TrimPrefix(r.api, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 1000 {
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the handler read the whole slow body")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the handler still reads a body sent at 1 byte/s after 15s")
	}
	// The client hears about it: an answer, or the connection closed.
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Error("the connection of the slow body is still open 10s after the handler gave up")
	}
}

func TestBodyLimit(t *testing.T) {
	upload := func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if mbe := new(http.MaxBytesError); errors.As(err, &mbe) {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		fmt.Fprint(w, n)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /small", upload)
	mux.Handle("POST /large", WithLimits(Limits{MaxBodyBytes: 8 << 20}, http.HandlerFunc(upload)))
	mux.Handle("POST /unbounded", WithLimits(Limits{MaxBodyBytes: -1}, http.HandlerFunc(upload)))
	r := start(t, &Host{Handler: mux})

	body := strings.Repeat("x", 2<<20) // twice DefaultMaxBodyBytes
	for _, tt := range []struct {
		path string
		want int
	}{{"/small", 413}, {"/large", 200}, {"/unbounded", 200}} {
		resp, err := http.Post(r.api+tt.path, "application/octet-stream", strings.NewReader(body))
		if err != nil {
			t.Fatalf("POST %s: %v", tt.path, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("POST %s with 2 MiB: %d %q, want %d", tt.path, resp.StatusCode, got, tt.want)
		}
	}
}

// TestIdleRequests checks that a handler that moves no byte is cancelled
// after the idle timeout, unless its route opts into a longer wait.
func TestIdleRequests(t *testing.T) {
	cause := make(chan error, 1)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stuck", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cause <- context.Cause(r.Context())
		case <-time.After(30 * time.Second):
			cause <- nil
		}
	})
	mux.Handle("GET /poll", WithLimits(Limits{IdleTimeout: time.Minute}, http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(3 * time.Second): // three idle timeouts of the Host
			}
			_, _ = io.WriteString(w, "work")
		})))
	r := start(t, &Host{Handler: mux, Limits: Limits{RateWindow: time.Second, IdleTimeout: time.Second}})

	go func() {
		if resp, err := http.Get(r.api + "/stuck"); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case err := <-cause:
		if !errors.Is(err, errIdle) {
			t.Errorf("the stuck handler ended with %v, want its idle timeout", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("a handler moving no byte was not cancelled")
	}

	if code, body := get(t, r.api+"/poll"); code != 200 || body != "work" {
		t.Errorf("long poll: %d %q, want 200 work", code, body)
	}
}

// TestConnectionCap holds the API's connections to the cap, then floods it.
func TestConnectionCap(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	const maxConns = 4
	r := start(t, &Host{Handler: mux, MaxConnections: maxConns})
	addr := strings.TrimPrefix(r.api, "http://")

	held := make([]net.Conn, maxConns)
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held[i] = c
	}
	// Over the cap: 503 with Retry-After, quickly, for every client.
	const flood = 40
	var wg sync.WaitGroup
	var refused atomic.Int32
	began := time.Now()
	for range flood {
		wg.Go(func() {
			tr := &http.Transport{DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 15 * time.Second}).Get(r.api + "/hello")
			if err != nil {
				return // more than maxRejecting at once are closed without an answer
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
				refused.Add(1)
			} else {
				t.Errorf("over the cap: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		})
	}
	wg.Wait()
	if refused.Load() == 0 {
		t.Error("no client over the cap was told to come back later")
	}
	if elapsed := time.Since(began); elapsed > 10*time.Second {
		t.Errorf("refusing %d clients took %v", flood, elapsed)
	}

	// The admitted connections are served.
	for i, c := range held {
		if _, err := io.WriteString(c, "GET /hello HTTP/1.1\r\nHost: test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("held connection %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("held connection %d: %d", i, resp.StatusCode)
		}
	}
	// Once they leave (or idle), new clients are served again.
	for _, c := range held {
		c.Close()
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	waitFor(t, 10*time.Second, "a new client is served after the held connections closed", func() bool {
		resp, err := client.Get(r.api + "/hello")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// TestConnectionCapClosesIdleKeepAlives checks that an idle keep-alive
// connection does not keep a new client out.
func TestConnectionCapClosesIdleKeepAlives(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	r := start(t, &Host{Handler: mux, MaxConnections: 1})
	var clients [2]*http.Client
	for i := range clients {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		clients[i] = &http.Client{Transport: tr}
	}
	// The server learns that a connection went idle just after the client
	// has its answer, so a new connection may come a moment too early and
	// be told to come back: it is retried for a few seconds, far less than
	// the idle timeout that would otherwise free the slot.
	for round := range 3 {
		for i, c := range clients {
			status := 0
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				resp, err := c.Get(r.api + "/hello")
				if err != nil {
					t.Fatalf("round %d, client %d: %v", round, i, err)
				}
				resp.Body.Close()
				if status = resp.StatusCode; status == http.StatusOK {
					break
				}
			}
			if status != http.StatusOK {
				t.Errorf("round %d, client %d: %d, want 200 (the other client's connection is idle)", round, i, status)
			}
		}
	}
}

func TestDefaultMaxConnections(t *testing.T) {
	for _, tt := range []struct {
		nofile uint64
		want   int
	}{{1024, 480}, {4096, 2016}, {1 << 20, maxConnectionsCeiling}, {^uint64(0), maxConnectionsCeiling}, {10, 1}} {
		if got := connectionsFor(tt.nofile); got != tt.want {
			t.Errorf("connectionsFor(%d) = %d, want %d", tt.nofile, got, tt.want)
		}
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	if got := DefaultMaxConnections(); uint64(2*got) > rl.Cur {
		t.Errorf("DefaultMaxConnections() = %d with a file limit of %d", got, rl.Cur)
	}
}

func TestCapConnections(t *testing.T) {
	for _, tt := range []struct {
		asked        int
		nofile       uint64
		filesPerConn int
		want         int
	}{
		{asked: 100, nofile: 1024, filesPerConn: 2, want: 100},       // under the limit: as asked
		{asked: 480, nofile: 1024, filesPerConn: 2, want: 480},       // the default's own value
		{asked: 5000, nofile: 1024, filesPerConn: 2, want: 480},      // a download holds a connection and a file
		{asked: 5000, nofile: 1024, filesPerConn: 1, want: 960},      // a check-in holds its connection only
		{asked: 5000, nofile: 1024, filesPerConn: 0, want: 960},      // 0 counts as 1
		{asked: 100000, nofile: 65536, filesPerConn: 2, want: 32736}, // above the default's ceiling, under the limit
		{asked: 5, nofile: 10, filesPerConn: 2, want: 1},             // a limit under the reserve still serves
		{asked: 1 << 40, nofile: ^uint64(0), filesPerConn: 2, want: math.MaxInt32},
	} {
		if got := capConnections(tt.asked, tt.nofile, tt.filesPerConn); got != tt.want {
			t.Errorf("capConnections(%d, nofile %d, %d per connection) = %d, want %d", tt.asked, tt.nofile, tt.filesPerConn, got, tt.want)
		}
	}
}

// TestCapMaxConnections: an explicit maxConnections over what the file
// limit holds is lowered with a warning naming both values; one under it,
// and 0 (the service's default), are left as they are, without a warning.
func TestCapMaxConnections(t *testing.T) {
	for _, tt := range []struct {
		asked, want int
		warned      bool
	}{{5000, 480, true}, {400, 400, false}, {0, 0, false}} {
		var logs bytes.Buffer
		maxConns := tt.asked
		capMaxConnections(Section{Name: "package", MaxConnections: &maxConns}, 1024, 2, slog.New(slog.NewTextHandler(&logs, nil)))
		if maxConns != tt.want {
			t.Errorf("asked %d under a file limit of 1024: used %d, want %d", tt.asked, maxConns, tt.want)
		}
		want := fmt.Sprintf("level=WARN msg=\"Capping maxConnections under the file limit\" asked=%d used=%d fileLimit=1024 "+
			"filesPerConnection=2 setting=package.maxConnections", tt.asked, tt.want)
		if warned := strings.Contains(logs.String(), want); warned != tt.warned {
			t.Errorf("asked %d: log %q, want the warning %q: %v", tt.asked, logs.String(), want, tt.warned)
		}
	}
}

// A client that announces a body and never sends it, to a handler that
// does not read it, is cut once the handler is done: the server's drain of
// the unread body has a deadline too.
func TestUnreadBodyDoesNotHoldTheConnection(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hello") })
	r := start(t, &Host{Handler: mux, Limits: Limits{RateWindow: 500 * time.Millisecond, IdleTimeout: time.Second}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.api, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	began := time.Now()
	_, err = io.ReadAll(conn) // the answer (if any), then EOF when the server cuts the connection
	if err != nil {
		t.Fatalf("the connection was still open after %v: %v", time.Since(began).Round(time.Millisecond), err)
	}
}

// TestConnectionsCountsBusyNotIdle: a request in progress counts, an idle
// keep-alive connection does not (the cap closes one to make room).
func TestConnectionsCountsBusyNotIdle(t *testing.T) {
	release := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
		<-release
		_, _ = io.WriteString(w, "done")
	})
	h := &Host{Handler: mux, MaxConnections: 10}
	if busy, limit := h.Connections(); busy != 0 || limit != 0 {
		t.Errorf("before serving: %d busy of %d, want 0 of 0", busy, limit)
	}
	r := start(t, h)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	done := make(chan error, 1)
	go func() {
		resp, err := client.Get(r.api + "/slow")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, 5*time.Second, "the request in progress counts", func() bool {
		busy, limit := h.Connections()
		return busy == 1 && limit == 10
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the idle keep-alive connection does not count", func() bool {
		busy, _ := h.Connections()
		return busy == 0
	})
}
