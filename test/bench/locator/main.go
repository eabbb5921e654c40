// Command locator is the load harness of the agent locator: locates per
// second and latency at many concurrent keep-alive HTTPS clients, beside a
// trivial HTTPS handler served by the same server in the same run (the
// transport's limit). See docs/benchmarks.md.
//
// Everything runs in this process on loopback: the locator (the real
// internal/locator handler and HTTPServer, from a synthetic resolver of
// -subnets Subnets and a snapshot of -servers SiteServers) and the
// clients, each with its own connection from its own 127.1.x.y source
// address. Per client level it measures, on the same connections:
//
//  1. trivial: POST a locate body to a handler that reads it and answers a
//     fixed JSON object, as fast as each client can (closed loop);
//  2. locate: the same for POST /v1/locate; the two alternate in five
//     rounds of -duration/5 each, so that both see the shared machine at
//     the same moments;
//  3. locate paced: each client sends at an even share of -paced (a
//     fraction of the trivial phase's throughput), so the latency is the
//     one at that offered load, not the queue that a closed loop builds.
//
// The run fails (exit 1) when a request fails or an answer differs from
// the locator's own answer for the address; targets are reported, not
// asserted.
package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/protocol"
)

func main() {
	var (
		subnets  = flag.Int("subnets", 100_000, "Subnets in the resolver.")
		sites    = flag.Int("sites", 2_000, "Sites.")
		servers  = flag.Int("servers", 1_000, "SiteServers in the snapshot.")
		levels   = flag.String("clients", "100,1000,5000", "Concurrent clients per level, comma-separated (at most 8,000: each holds two open files here).")
		warmup   = flag.Duration("warmup", time.Second, "Time per phase before measuring.")
		duration = flag.Duration("duration", 5*time.Second, "Measured time per phase.")
		paced    = flag.Float64("paced", 0.5, "Offered load of the paced phase, as a fraction of the trivial phase's throughput; 0 skips it.")
		seed     = flag.Uint64("seed", 1, "Seed of the synthetic topology and addresses.")
	)
	flag.Parse()
	if err := run(*subnets, *sites, *servers, *levels, *warmup, *duration, *paced, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
}

func run(nSubnets, nSites, nServers int, levels string, warmup, duration time.Duration, paced float64, seed uint64) error {
	var clientLevels []int
	for _, f := range strings.Split(levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 8000 {
			return fmt.Errorf("-clients: %q is not a count from 1 to 8,000", f)
		}
		clientLevels = append(clientLevels, n)
	}
	start := time.Now()
	topo := newTopology(nSubnets, nSites, nServers, seed)
	fmt.Printf("topology: %d subnets, %d sites, %d SiteServers, %d addresses; built in %s\n",
		nSubnets, nSites, nServers, len(topo.addrs), time.Since(start).Round(time.Millisecond))
	metrics, err := locator.NewMetrics(nil)
	if err != nil {
		return err
	}
	loc := locator.New(topo.resolver, topo.servers, locator.Options{Metrics: metrics})
	mux := http.NewServeMux()
	mux.Handle(protocol.LocatePath, loc)
	mux.HandleFunc("/trivial", trivial)

	certPEM, cert, err := selfSigned()
	if err != nil {
		return err
	}
	hs, err := locator.NewHTTPServer(mux, locator.HTTPOptions{Addr: "127.0.0.1:0", TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- hs.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			fmt.Fprintln(os.Stderr, "stopping the locator:", err)
		}
	}()
	for hs.Addr() == nil {
		select {
		case err := <-served:
			return fmt.Errorf("the locator did not start: %w", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	target := "https://" + hs.Addr().String()
	fmt.Printf("machine: %d CPUs, GOMAXPROCS %d, %s; %s\n", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), loadavg())
	fmt.Printf("%-8s %-14s %12s %10s %10s %10s %8s\n", "clients", "phase", "requests/s", "p50", "p99", "max", "errors")
	var failures []string
	for _, n := range clientLevels {
		before := readCPU()
		res, err := runLevel(target, roots, topo, loc, n, warmup, duration, paced)
		cpu := readCPU().since(before)
		if err != nil {
			return fmt.Errorf("%d clients: %w", n, err)
		}
		for _, r := range res {
			fmt.Printf("%-8d %-14s %12.0f %10s %10s %10s %8d\n", n, r.phase, r.rate, fmtDur(r.p50), fmtDur(r.p99), fmtDur(r.max), r.errors)
			if r.errors > 0 {
				failures = append(failures, fmt.Sprintf("%d clients, %s: %d failed requests (first: %s)", n, r.phase, r.errors, r.firstErr))
			}
		}
		triv, loc := res[0], res[1]
		fmt.Printf("%-8d %-14s %11.0f%% of the trivial handler's throughput; %s\n", n, "ratio", 100*loc.rate/triv.rate, loadavg())
		fmt.Printf("%-8d %-14s machine busy %.1f s of %.1f s (%d CPUs × %.1f s); this process %.1f s, others about %.1f s\n", n, "cpu",
			cpu.busy.Seconds(), cpu.wall.Seconds()*float64(runtime.NumCPU()), runtime.NumCPU(), cpu.wall.Seconds(),
			cpu.own.Seconds(), cpu.others.Seconds())
	}
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "; "))
	}
	return nil
}

// trivial is the transport's limit: it reads the request body and answers
// a fixed JSON object with the locator's headers.
func trivial(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	h := w.Header()
	h.Set("Content-Type", protocol.ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", "12")
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
}

type result struct {
	phase         string
	rate          float64
	p50, p99, max time.Duration
	errors        int64
	firstErr      string
}

// runLevel opens n connections, runs the phases on them and closes them.
func runLevel(target string, roots *x509.CertPool, topo *synthetic, loc *locator.Locator, n int, warmup, duration time.Duration, paced float64) ([]result, error) {
	clients := make([]*client, n)
	// Open the connections at a bounded pace: the listen backlog is 4,096.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := range clients {
		c := newClient(i, target, roots, topo, loc)
		clients[i] = c
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.check(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	// The trivial handler and the locator alternate in rounds, so that
	// both see the machine as it is at the same moments (it is shared).
	triv, locate := &accumulated{name: "trivial"}, &accumulated{name: "locate"}
	runPhase(clients, "/trivial", warmup, 0, 0, nil)
	for round := range rounds {
		first, second := triv, locate
		if round%2 == 1 {
			first, second = locate, triv
		}
		for _, a := range []*accumulated{first, second} {
			path := "/trivial"
			if a == locate {
				path = protocol.LocatePath
			}
			runPhase(clients, path, settle, duration/rounds, 0, a)
		}
	}
	out := []result{triv.result(), locate.result()}
	if paced > 0 {
		rate := paced * out[0].rate
		p := &accumulated{name: fmt.Sprintf("locate@%.0f/s", rate)}
		runPhase(clients, protocol.LocatePath, warmup, duration, rate, p)
		out = append(out, p.result())
	}
	return out, nil
}

// rounds is how many times the trivial and the locate phases alternate;
// settle is the unmeasured time after each switch.
const (
	rounds = 5
	settle = 200 * time.Millisecond
)

// accumulated sums the measured segments of one phase.
type accumulated struct {
	name     string
	hist     histogram
	done     int64
	elapsed  time.Duration
	errors   int64
	firstErr string
}

func (a *accumulated) result() result {
	r := result{phase: a.name, errors: a.errors, firstErr: a.firstErr}
	if a.elapsed > 0 {
		r.rate = float64(a.done) / a.elapsed.Seconds()
	}
	r.p50, r.p99, r.max = a.hist.quantile(0.5), a.hist.quantile(0.99), a.hist.maxSeen
	return r
}

// runPhase runs every client against path: as fast as each can when rate
// is 0, otherwise each at rate/len(clients) requests per second from a
// random phase. It measures after warmup, for duration, into acc (nil
// measures nothing).
func runPhase(clients []*client, path string, warmup, duration time.Duration, rate float64, acc *accumulated) {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	for _, c := range clients {
		c.reset()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var interval time.Duration
			next := time.Now()
			if rate > 0 {
				interval = time.Duration(float64(len(clients)) / rate * float64(time.Second))
				next = next.Add(time.Duration(mrand.Int64N(int64(interval))))
			}
			for !stop.Load() {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					next = next.Add(interval)
				}
				c.do(path, measuring.Load())
			}
		}()
	}
	time.Sleep(warmup)
	measuring.Store(true)
	began := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	elapsed := time.Since(began)
	stop.Store(true)
	wg.Wait()

	if acc == nil {
		return
	}
	acc.elapsed += elapsed
	for _, c := range clients {
		acc.hist.merge(&c.hist)
		acc.done += c.done
		acc.errors += c.errors
		if acc.firstErr == "" {
			acc.firstErr = c.firstErr
		}
	}
}

// client is one agent: its own connection, from its own source address,
// and the locate body for its own address.
type client struct {
	http     *http.Client
	target   string
	body     []byte
	want     protocol.LocateResponse
	hist     histogram
	done     int64
	errors   int64
	firstErr string
}

func newClient(i int, target string, roots *x509.CertPool, topo *synthetic, loc *locator.Locator) *client {
	dialer := &net.Dialer{
		// 127.1.0.1, 127.1.0.2, …: each client its own source address, so
		// no level runs out of ephemeral ports whatever lingers in
		// TIME_WAIT.
		LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 1, byte(i/250), byte(i%250+1))},
		Timeout:   30 * time.Second,
	}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		TLSClientConfig:     &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	addr := topo.addrs[i%len(topo.addrs)]
	body, _ := json.Marshal(protocol.LocateRequest{Addresses: []string{addr.String()}})
	return &client{
		http:   &http.Client{Transport: tr, Timeout: 30 * time.Second},
		target: target,
		body:   body,
		want:   loc.Locate([]netip.Addr{addr}),
	}
}

// check opens the client's connection with a locate and compares the
// answer with the locator's own.
func (c *client) check() error {
	resp, err := c.post(protocol.LocatePath)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var got protocol.LocateResponse
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		return fmt.Errorf("decoding a locate answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !equalResponse(got, c.want) {
		return fmt.Errorf("locate %s: status %d, answer %+v; want %+v", c.body, resp.StatusCode, got, c.want)
	}
	return nil
}

func equalResponse(a, b protocol.LocateResponse) bool {
	return a.Site == b.Site && a.Subnet == b.Subnet && a.Rule == b.Rule && a.Address == b.Address &&
		slices.Equal(a.TaskEndpoints, b.TaskEndpoints) && slices.Equal(a.PackageEndpoints, b.PackageEndpoints) &&
		a.RetryAfterSeconds == b.RetryAfterSeconds
}

func (c *client) post(path string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, c.target+path, bytes.NewReader(c.body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", protocol.ContentType)
	return c.http.Do(req)
}

func (c *client) do(path string, measure bool) {
	start := time.Now()
	resp, err := c.post(path)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	if !measure {
		return
	}
	if err != nil {
		c.errors++
		if c.firstErr == "" {
			c.firstErr = err.Error()
		}
		return
	}
	c.done++
	c.hist.add(time.Since(start))
}

func (c *client) reset() {
	c.hist = histogram{}
	c.done, c.errors, c.firstErr = 0, 0, ""
}

func (c *client) close() { c.http.CloseIdleConnections() }

// histogram counts latencies in buckets of 1/16 of a power of two
// (relative error under 7%).
type histogram struct {
	counts  [64 * 16]uint32
	maxSeen time.Duration
}

func bucket(d time.Duration) int {
	ns := uint64(max(d, 1))
	exp := 63 - leadingZeros(ns)
	if exp < 4 {
		return int(ns)
	}
	mant := (ns >> (exp - 4)) & 15
	return exp*16 + int(mant)
}

func leadingZeros(x uint64) int {
	n := 0
	for x&(1<<63) == 0 {
		x <<= 1
		n++
	}
	return n
}

// lower returns the smallest duration in bucket b.
func lower(b int) time.Duration {
	if b < 64 {
		return time.Duration(b)
	}
	exp, mant := b/16, b%16
	return time.Duration((16 + uint64(mant)) << (exp - 4))
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucket(d)]++
	h.maxSeen = max(h.maxSeen, d)
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.maxSeen = max(h.maxSeen, o.maxSeen)
}

func (h *histogram) quantile(q float64) time.Duration {
	var total uint64
	for _, n := range h.counts {
		total += uint64(n)
	}
	if total == 0 {
		return 0
	}
	rank := uint64(q * float64(total))
	var seen uint64
	for i, n := range h.counts {
		seen += uint64(n)
		if seen > rank {
			return lower(i)
		}
	}
	return h.maxSeen
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "load average unknown"
	}
	return "load average " + strings.Join(strings.Fields(string(b))[:3], " ")
}

// selfSigned makes the server's certificate for 127.0.0.1.
func selfSigned() ([]byte, tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "locator bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	return pemCert(der), tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// cpuSample is the machine's busy CPU time and this process's own.
type cpuSample struct {
	at        time.Time
	busy, own time.Duration
}

type cpuUse struct{ busy, own, others, wall time.Duration }

// readCPU reads /proc/stat (user, nice, system, irq, softirq, steal of all
// CPUs, in clock ticks of 10 ms) and this process's rusage.
func readCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			if i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				s.busy += time.Duration(v) * 10 * time.Millisecond
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.own = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

func (s cpuSample) since(b cpuSample) cpuUse {
	own := s.own - b.own
	busy := s.busy - b.busy
	return cpuUse{busy: busy, own: own, others: max(0, busy-own), wall: s.at.Sub(b.at)}
}
