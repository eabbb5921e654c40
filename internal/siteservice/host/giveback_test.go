package host

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// TestGiveBack: a handler takes the connection (a held long poll),
// answers on it itself later and gives it back; the client's next
// requests go over the same TLS connection (no new handshake), served by
// the API server as usual, taken again, and so on. A connection given back
// after the Host stopped is refused.
func TestGiveBack(t *testing.T) {
	files, roots := loopbackServing(t)
	var handshakes, refused atomic.Int32
	var lastGiveBack atomic.Value
	mux := http.NewServeMux()
	mux.HandleFunc("GET /held", func(w http.ResponseWriter, r *http.Request) {
		give := GiveBackOf(r.Context())
		if give == nil {
			http.Error(w, "no give-back in the request's context", http.StatusInternalServerError)
			return
		}
		lastGiveBack.Store(give)
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil || rw.Reader.Buffered() > 0 {
			t.Errorf("hijack: %v", err)
			return
		}
		go func() {
			time.Sleep(20 * time.Millisecond) // held
			body := "held\n"
			if _, err := fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body); err != nil {
				t.Errorf("answering: %v", err)
			}
			if !give(conn) {
				refused.Add(1)
				_ = conn.Close()
			}
		}()
	})
	mux.Handle("GET /plain", okHandler())
	r := startTLS(t, &Host{Name: "test", Handler: mux}, files)
	client := hosttest.HTTPSClient(roots)

	var reused []bool
	for _, path := range []string{"/held", "/held", "/plain", "/held", "/plain"} {
		trace := &httptrace.ClientTrace{
			GotConn:           func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) },
			TLSHandshakeStart: func() { handshakes.Add(1) },
		}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), http.MethodGet, r.api+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains("held\nhello\n", string(body)) {
			t.Fatalf("GET %s = %d %q", path, resp.StatusCode, body)
		}
	}
	if got := handshakes.Load(); got != 1 {
		t.Errorf("%d TLS handshakes for 5 requests, want 1 (the connection given back serves the next request); reused %v", got, reused)
	}
	if want := []bool{false, true, true, true, true}; fmt.Sprint(reused) != fmt.Sprint(want) {
		t.Errorf("connection reused per request = %v, want %v", reused, want)
	}

	// Held when the Host stops: the connection cannot be given back.
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := client.Get(r.api + "/held")
		if err == nil {
			_ = resp.Body.Close()
		}
	}()
	time.Sleep(5 * time.Millisecond)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	<-done
	give := lastGiveBack.Load().(GiveBackFunc)
	c1, c2 := net.Pipe()
	defer c2.Close()
	if give(c1) {
		t.Error("a connection was given back to a stopped Host")
	}
	if refused.Load() == 0 {
		t.Log("the held request was answered before the Host stopped; the give-back after the stop was checked directly")
	}
}
