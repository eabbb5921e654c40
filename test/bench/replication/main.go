// Command replication measures how the package service's content moves:
// a large package replicated from one package-service process to another
// (the second learns from a local API server that its site wants the
// Package, fetches it with its replication engine, verifies and stores it,
// and reports it: process.go), beside a plain HTTP copy of the same content
// with the Go standard library in the same run (no verification); the
// bytes sent again when a transfer is cut at half way and resumed (the
// engine in this process, through a cutting proxy); and many concurrent
// ranged downloads from one package-service process, with its slow-client
// protections on.
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/replication -size 2Gi -downloads 1000
//
// It prints a Markdown table for docs/benchmarks.md.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/siteops/site-operator/internal/siteservice/content"
)

func main() {
	var (
		sizeFlag  = flag.String("size", "2Gi", "Size of the package (a Kubernetes quantity)")
		rounds    = flag.Int("rounds", 2, "Copies of each kind, alternated, for the throughput comparison")
		downloads = flag.Int("downloads", 1000, "Concurrent ranged downloads")
		rangeFlag = flag.String("range", "2Mi", "Bytes each ranged download asks for")
		workDir   = flag.String("work-dir", "", "Directory for the stores (default: a temporary one, removed at the end)")
		profile   = flag.String("cpuprofile", "", "Write the harness's CPU profile (the plain copy, the resumed replication) to this file")
	)
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	log.SetFlags(log.Ltime)
	size := mustQuantity(*sizeFlag)
	rangeSize := mustQuantity(*rangeFlag)
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "bench-replication-")
		if err != nil {
			log.Fatal(err)
		}
		defer func() { _ = os.RemoveAll(d) }()
		dir = d
	}
	if err := run(dir, size, *rounds, *downloads, rangeSize); err != nil {
		log.Fatal(err)
	}
}

func mustQuantity(s string) int64 {
	q, err := resource.ParseQuantity(s)
	if err != nil || q.Value() <= 0 {
		log.Fatalf("%q is not a positive quantity", s)
	}
	return q.Value()
}

type row struct{ name, value string }

func run(dir string, size int64, rounds, downloads int, rangeSize int64) error {
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	var rows []row
	add := func(name, format string, args ...any) {
		rows = append(rows, row{name, fmt.Sprintf(format, args...)})
		log.Printf("%s: %s", name, rows[len(rows)-1].value)
	}

	log.Printf("Building cmd/package-service")
	bin := filepath.Join(dir, "package-service")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/package-service").CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, out)
	}

	log.Printf("Generating %d bytes of content into the origin's store", size)
	originDir := filepath.Join(dir, "origin")
	digest, warmUp, err := generate(ctx, originDir, size)
	if err != nil {
		return err
	}
	origin, stop, err := startProcess(bin, dir, "origin", originHost, originDir, "origin", "{}", "--no-replication")
	if err != nil {
		return err
	}
	defer stop()
	url := origin + "/v1/content/" + digest

	log.Printf("Starting kube-apiserver and etcd for the replica's package service")
	api, err := startAPI(ctx, dir)
	if err != nil {
		return err
	}
	defer api.stop()
	if err := api.startReplica(ctx, bin, dir, origin+"/v1/content/"+warmUp, warmUp, warmUpSize); err != nil {
		return err
	}

	// Throughput: plain copy and replication between the two processes,
	// alternated.
	var plain, verified, reportedRates []float64
	for r := range rounds {
		d, err := plainCopy(ctx, url, filepath.Join(dir, "plain.bin"), size)
		if err != nil {
			return err
		}
		plain = append(plain, float64(size)/d.Seconds())
		log.Printf("round %d: plain copy %s (%.0f MiB/s)", r+1, d.Round(time.Millisecond), mib(plain[r]))
		d, reported, err := api.replicate(ctx, dir, fmt.Sprintf("image-%d", r+1), url, digest, size)
		if err != nil {
			return err
		}
		verified = append(verified, float64(size)/d.Seconds())
		reportedRates = append(reportedRates, float64(size)/reported.Seconds())
		log.Printf("round %d: replication %s (%.0f MiB/s), reported Ready after %s", r+1, d.Round(time.Millisecond), mib(verified[r]),
			reported.Round(time.Millisecond))
	}
	add("plain HTTP copy, standard library, no verification (MiB/s, each round)", "%s", rates(plain))
	add("replication by a second package-service process: Package created → content verified, synced and in its store (MiB/s, each round)", "%s", rates(verified))
	add("  the same until its status entry says Ready", "%s", rates(reportedRates))
	add("**replication ÷ plain copy** (medians; target ≥ 80%)", "**%.0f%%**", 100*median(verified)/median(plain))

	// Cut at half way, then resumed: what crossed the wire twice.
	proxy, err := newCuttingProxy(strings.TrimPrefix(origin, "http://"), size/2)
	if err != nil {
		return err
	}
	defer proxy.Close()
	cutURL := "http://" + proxy.Addr() + "/v1/content/" + digest
	if _, err := replicate(ctx, cutURL, filepath.Join(dir, "resumed"), digest, size, proxy, quiet); err != nil {
		return err
	}
	body := proxy.bodyBytes.Load()
	add("transfer cut at 50% and resumed: content bytes relayed / the content's size", "%d / %d", body, size)
	add("**bytes sent again after the cut** (target under 1% of the file)", "**%d (%.4f%%)**, in %d connections", body-size,
		100*float64(body-size)/float64(size), proxy.conns.Load())

	// Concurrent ranged downloads.
	res, err := rangedDownloads(url, size, downloads, rangeSize)
	if err != nil {
		return err
	}
	add(fmt.Sprintf("%d concurrent ranged downloads of %d bytes each: completed / failed", downloads, rangeSize), "%d / %d", res.ok, res.failed)
	add("  aggregate throughput", "%.0f MiB/s (%d bytes in %s)", mib(float64(res.bytes)/res.wall.Seconds()), res.bytes, res.wall.Round(time.Millisecond))
	add("  time to first byte p50 / p99 / max", "%s / %s / %s", res.ttfb[0], res.ttfb[1], res.ttfb[2])
	add("  whole download p50 / p99 / max", "%s / %s / %s", res.whole[0], res.whole[1], res.whole[2])

	fmt.Println("| measure | result |")
	fmt.Println("| --- | --- |")
	for _, r := range rows {
		fmt.Printf("| %s | %s |\n", r.name, r.value)
	}
	return nil
}

func mib(bps float64) float64 { return bps / (1 << 20) }

func rates(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f", mib(x))
	}
	return strings.Join(s, ", ")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// generate writes size random bytes into a new store at dir through
// Store.Ingest and returns their digest.
// warmUpSize is the size of the small content generate also stores, which
// the replica replicates before the measured rounds.
const warmUpSize = 64 << 10

// generate stores size random bytes, and warmUpSize more, in a store at
// dir and returns their digests.
func generate(ctx context.Context, dir string, size int64) (digest, warmUp string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	st := content.NewStore(dir, content.StoreOptions{Logger: slog.New(slog.DiscardHandler)})
	sctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); st.Wait() }()
	st.Start(sctx)
	if digest, err = ingestRandom(ctx, st, filepath.Join(filepath.Dir(dir), "generated.bin"), size, 7); err != nil {
		return "", "", err
	}
	warmUp, err = ingestRandom(ctx, st, filepath.Join(filepath.Dir(dir), "warm-up.bin"), warmUpSize, 8)
	return digest, warmUp, err
}

// ingestRandom writes size random bytes (from seed) to the file tmp, then
// ingests them into st, and returns their digest.
func ingestRandom(ctx context.Context, st *content.Store, tmp string, size int64, seed byte) (string, error) {
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	defer func() { _ = os.Remove(tmp) }()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8([32]byte{seed}), size); err != nil {
		f.Close()
		return "", err
	}
	if err := errors.Join(w.Flush(), f.Close()); err != nil {
		return "", err
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	in, err := os.Open(tmp)
	if err != nil {
		return "", err
	}
	defer in.Close()
	return digest, st.Ingest(ctx, digest, size, in)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.5:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// plainCopy GETs url into path with the standard library, syncs it, and
// removes it: the baseline.
func plainCopy(ctx context.Context, url, path string, size int64) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer func() { _ = os.Remove(path) }()
	n, err := io.Copy(f, resp.Body)
	if err := errors.Join(err, f.Sync(), f.Close()); err != nil {
		return 0, err
	}
	if n != size {
		return 0, fmt.Errorf("plain copy: %d bytes, want %d", n, size)
	}
	return time.Since(start), nil
}

// replicate fetches url into a new store at dir and removes it.
func replicate(ctx context.Context, url, dir, digest string, size int64, proxy *cuttingProxy, log *slog.Logger) (time.Duration, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	st := content.NewStore(dir, content.StoreOptions{Logger: log})
	sctx, cancel := context.WithCancel(ctx)
	defer func() { cancel(); st.Wait() }()
	st.Start(sctx)
	client := &http.Client{Transport: &http.Transport{}}
	f := content.NewFetcher(st, client, 0, log)
	start := time.Now()
	if err := f.Fetch(ctx, digest, size, []string{url}); err != nil {
		return 0, err
	}
	d := time.Since(start)
	if !st.Has(digest) {
		return 0, fmt.Errorf("%s not in the store after the fetch", digest)
	}
	return d, nil
}

// cuttingProxy relays TCP to an HTTP server and drops the first
// connection once cutAt bytes of the answer's body went through. It counts
// the body bytes it relays (what follows each answer's head).
type cuttingProxy struct {
	net.Listener
	upstream  string
	cutAt     int64
	cut       atomic.Bool
	bodyBytes atomic.Int64
	conns     atomic.Int32
}

func newCuttingProxy(upstream string, cutAt int64) (*cuttingProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &cuttingProxy{Listener: l, upstream: upstream, cutAt: cutAt}
	go p.serve()
	return p, nil
}

func (p *cuttingProxy) Addr() string { return p.Listener.Addr().String() }

func (p *cuttingProxy) serve() {
	for {
		c, err := p.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		go p.relay(c)
	}
}

func (p *cuttingProxy) relay(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c) }()
	// The answer: its head, then the body, counted; the first connection
	// is dropped at cutAt body bytes.
	r := bufio.NewReaderSize(up, 64<<10)
	var head strings.Builder
	for {
		line, err := r.ReadString('\n')
		head.WriteString(line)
		if err != nil {
			return
		}
		if line == "\r\n" {
			break
		}
	}
	if _, err := io.WriteString(c, head.String()); err != nil {
		return
	}
	limit := int64(-1)
	if p.cut.CompareAndSwap(false, true) {
		limit = p.cutAt
	}
	buf := make([]byte, 64<<10)
	var relayed int64
	for {
		want := len(buf)
		if limit >= 0 {
			if relayed >= limit {
				return // dropped mid-answer
			}
			want = int(min(int64(want), limit-relayed))
		}
		n, err := r.Read(buf[:want])
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			relayed += int64(n)
			p.bodyBytes.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

type downloadResult struct {
	ok, failed  int
	bytes       int64
	wall        time.Duration
	ttfb, whole [3]time.Duration
}

// rangedDownloads runs n GETs at once, each for rangeSize bytes at a
// random offset, each on a connection of its own.
func rangedDownloads(url string, size int64, n int, rangeSize int64) (downloadResult, error) {
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		ttfb, whole []time.Duration
		res         downloadResult
		ready       = make(chan struct{})
	)
	for i := range n {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			from := r.Int64N(max(size-rangeSize, 1))
			tr := &http.Transport{DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-"+strconv.FormatInt(from+rangeSize-1, 10))
			<-ready
			t0 := time.Now()
			resp, err := client.Do(req)
			var first time.Duration
			var got int64
			if err == nil {
				var one [1]byte
				k, rerr := io.ReadFull(resp.Body, one[:])
				first = time.Since(t0)
				rest, cerr := io.Copy(io.Discard, resp.Body)
				got = int64(k) + rest
				resp.Body.Close()
				if rerr != nil || cerr != nil || resp.StatusCode != http.StatusPartialContent || got != rangeSize {
					err = fmt.Errorf("status %d, %d bytes: %w", resp.StatusCode, got, errors.Join(rerr, cerr))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.failed++
				if res.failed <= 3 {
					log.Printf("a ranged download failed: %v", err)
				}
				return
			}
			res.ok++
			res.bytes += got
			ttfb = append(ttfb, first)
			whole = append(whole, time.Since(t0))
		})
	}
	start := time.Now()
	close(ready)
	wg.Wait()
	res.wall = time.Since(start)
	res.ttfb, res.whole = percentiles(ttfb), percentiles(whole)
	if res.ok == 0 {
		return res, errors.New("every ranged download failed")
	}
	return res, nil
}

func percentiles(v []time.Duration) [3]time.Duration {
	if len(v) == 0 {
		return [3]time.Duration{}
	}
	slices.Sort(v)
	at := func(q float64) time.Duration {
		return v[min(len(v)-1, int(q*float64(len(v))))].Round(time.Millisecond)
	}
	return [3]time.Duration{at(0.5), at(0.99), v[len(v)-1].Round(time.Millisecond)}
}
