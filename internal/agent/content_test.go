//go:build unix

package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// packageServer serves content as a package service does (GET
// ContentPath(digest) with ranges, over HTTPS), and counts what it sends.
type packageServer struct {
	URL  string
	data []byte
	// digest is what the content is served under: data's digest, unless
	// a test tampers with data.
	digest string
	// sent counts the bytes of content sent.
	sent atomic.Int64
	// first, when set, answers the first request instead of the server.
	first func(w http.ResponseWriter, r *http.Request)

	mu     sync.Mutex
	ranges []string // the Range header of each content request
}

func newPackageServer(t *testing.T, ca *agenttest.CA, data []byte) *packageServer {
	t.Helper()
	p := &packageServer{data: data, digest: digestOf(data)}
	p.URL = ca.Serve(t, p).URL
	return p
}

func (p *packageServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || r.URL.Path != protocol.ContentPath(p.digest) {
		http.Error(w, "no content "+r.URL.Path+" at this site", http.StatusNotFound)
		return
	}
	p.mu.Lock()
	p.ranges = append(p.ranges, r.Header.Get("Range"))
	n := len(p.ranges)
	p.mu.Unlock()
	cw := &countingWriter{ResponseWriter: w, n: &p.sent}
	if n == 1 && p.first != nil {
		p.first(cw, r)
		return
	}
	http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(p.data))
}

// Ranges returns the Range header of each content request so far.
func (p *packageServer) Ranges() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ranges)
}

// cutAfter is a first answer that sends the first n bytes of the whole
// content, then breaks the connection.
func (p *packageServer) cutAfter(n int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(p.data)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(p.data[:n])
		_ = http.NewResponseController(w).Flush()
		time.Sleep(50 * time.Millisecond) // the bytes reach the agent
		panic(http.ErrAbortHandler)
	}
}

// countingWriter counts the body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// randomBytes returns n bytes that repeat with seed.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func contentOf(data []byte) protocol.Content {
	return protocol.Content{Package: "imaging/win11", Digest: digestOf(data), Size: int64(len(data))}
}

func deployItem(id string, data []byte) protocol.WorkItem {
	attempt, _ := strconv.Atoi(id[strings.LastIndexByte(id, '.')+1:])
	return protocol.WorkItem{ID: id, Task: "imaging/deploy", Attempt: int32(attempt),
		Action: protocol.Action{DeployImage: &protocol.DeployImage{Content: contentOf(data), TimeoutSeconds: 60}}}
}

func installItem(id string, data []byte) protocol.WorkItem {
	return protocol.WorkItem{ID: id, Task: "apps/install", Attempt: 1,
		Action: protocol.Action{InstallSoftware: &protocol.InstallSoftware{Content: contentOf(data), TimeoutSeconds: 60}}}
}

// newContentEnv is a workEnv whose locate answer gives packageEndpoints,
// and whose agent has a disk: a file holding "untouched".
func newContentEnv(t *testing.T, ca *agenttest.CA, packageEndpoints ...string) *workEnv {
	t.Helper()
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 20 * time.Millisecond })
	locator := agenttest.NewLocator(t, ca, func(int, []string) protocol.LocateResponse {
		return protocol.LocateResponse{Site: "paris", Rule: protocol.RuleSite, TaskEndpoints: []string{task.URL},
			PackageEndpoints: packageEndpoints}
	})
	e := &workEnv{task: task, cfg: baseConfig(t, ca, locator.URL), dir: t.TempDir()}
	e.cfg.Disk = e.path("disk")
	if err := os.WriteFile(e.cfg.Disk, []byte("untouched"), 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// offer hands items to the agent until their results are recorded.
func (e *workEnv) offer(items ...protocol.WorkItem) {
	e.task.Set(func(b *agenttest.Behaviour) { b.Offer = items })
}

// disk returns what the agent's disk holds.
func (e *workEnv) disk(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(e.cfg.Disk)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// staged lists the staging directory.
func (e *workEnv) staged() []string {
	entries, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, contentDir))
	var names []string
	for _, d := range entries {
		names = append(names, d.Name())
	}
	return names
}

func TestDeployImageResumesAfterACut(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := randomBytes(3<<20+17, 1)
	pkg := newPackageServer(t, ca, image)
	const cut = 1<<20 + 123
	pkg.first = pkg.cutAfter(cut)
	e := newContentEnv(t, ca, pkg.URL)
	const id = "uid-d.1"
	e.offer(deployItem(id, image))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)

	if st.State != protocol.WorkSucceeded || st.Reason != "" || st.ExitCode != nil {
		t.Fatalf("result %+v, want Succeeded", st)
	}
	if want := "wrote " + strconv.Itoa(len(image)) + " bytes of " + digestOf(image); !strings.Contains(st.Message, want) ||
		!strings.Contains(st.Message, e.cfg.Disk) {
		t.Errorf("message %q, want it to say %q and name the disk", st.Message, want)
	}
	if !bytes.Equal(e.disk(t), image) {
		t.Error("the disk does not hold the image byte for byte")
	}
	// The bytes before the cut were not fetched again.
	if ranges := pkg.Ranges(); !slices.Equal(ranges, []string{"", "bytes=" + strconv.Itoa(cut) + "-"}) {
		t.Errorf("requests with Range %q, want the whole, then from byte %d", ranges, cut)
	}
	if sent := pkg.sent.Load(); sent != int64(len(image)) {
		t.Errorf("the package service sent %d bytes, want the image's %d: none twice", sent, len(image))
	}
	if progress := e.reports(id, false); len(progress) != 1 || progress[0].Work.State != protocol.WorkRunning {
		t.Errorf("progress reports %+v, want one Running", progress)
	}
	e.idle(t)
	if staged := e.staged(); len(staged) != 0 {
		t.Errorf("the staging directory holds %v after the image was written", staged)
	}
}

func TestDownloadResumesOnTheNextAttempt(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := randomBytes(2<<20, 2)
	pkg := newPackageServer(t, ca, image)
	const held = 700 << 10
	// The first answer sends some bytes, then holds the rest until the
	// agent goes away.
	pkg.first = func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(image)))
		_, _ = w.Write(image[:held])
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}
	e := newContentEnv(t, ca, pkg.URL)
	first, second := deployItem("uid-n.1", image), deployItem("uid-n.2", image)
	e.offer(first)
	_, stop := start(t, e.cfg, testTimings())
	partial := filepath.Join(e.cfg.StateDir, contentDir, strings.TrimPrefix(digestOf(image), "sha256:")+partialSuffix)
	agenttest.Eventually(t, 10*time.Second, func() bool {
		fi, err := os.Stat(partial)
		return err == nil && fi.Size() == held
	}, "the staging file never held the bytes sent")
	stop()

	// Restarted, the agent reports the first attempt interrupted; the
	// second resumes from the staged bytes.
	e.offer(second)
	start(t, e.cfg, testTimings())
	if st := e.result(t, first.ID, 10*time.Second); st.Reason != protocol.ReasonInterrupted {
		t.Errorf("the first attempt's result %+v, want Interrupted", st)
	}
	if st := e.result(t, second.ID, 20*time.Second); st.State != protocol.WorkSucceeded {
		t.Fatalf("the second attempt's result %+v, want Succeeded", st)
	}
	if !bytes.Equal(e.disk(t), image) {
		t.Error("the disk does not hold the image")
	}
	if ranges := pkg.Ranges(); !slices.Equal(ranges, []string{"", "bytes=" + strconv.Itoa(held) + "-"}) {
		t.Errorf("requests with Range %q, want the whole, then from byte %d", ranges, held)
	}
	if sent := pkg.sent.Load(); sent != int64(len(image)) {
		t.Errorf("the package service sent %d bytes, want %d", sent, len(image))
	}
}

func TestDownloadFailsOverToTheNextEndpoint(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := randomBytes(1<<20+5, 3)
	empty := newPackageServer(t, ca, []byte("another content")) // answers 404 for the image
	pkg := newPackageServer(t, ca, image)
	e := newContentEnv(t, ca, agenttest.DeadURL(t), empty.URL, pkg.URL)
	const id = "uid-f.1"
	e.offer(deployItem(id, image))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	if st.State != protocol.WorkSucceeded {
		t.Fatalf("result %+v, want Succeeded", st)
	}
	if !bytes.Equal(e.disk(t), image) {
		t.Error("the disk does not hold the image")
	}
	if ranges := pkg.Ranges(); len(ranges) != 1 || pkg.sent.Load() != int64(len(image)) {
		t.Errorf("the third endpoint had %d requests and sent %d bytes, want 1 and %d", len(ranges), pkg.sent.Load(), len(image))
	}
}

func TestTamperedContentIsNotUsed(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := randomBytes(1<<20, 4)
	tampered := slices.Clone(image)
	tampered[len(tampered)/2] ^= 0x01
	pkg := newPackageServer(t, ca, tampered)
	pkg.digest = digestOf(image) // served under the image's digest
	e := newContentEnv(t, ca, pkg.URL)
	const id = "uid-t.1"
	e.offer(deployItem(id, image))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonContentUnavailable ||
		!strings.Contains(st.Message, "do not match") || !strings.Contains(st.Message, pkg.URL) || !strings.Contains(st.Message, "3 rounds") {
		t.Errorf("result %+v, want ContentUnavailable after 3 rounds, naming the endpoint and the mismatch", st)
	}
	if got := e.disk(t); string(got) != "untouched" {
		t.Errorf("the disk holds %d bytes, want it untouched", len(got))
	}
	// Every round started over: nothing of the bad bytes was kept.
	if ranges := pkg.Ranges(); !slices.Equal(ranges, []string{"", "", ""}) {
		t.Errorf("requests with Range %q, want three whole downloads", ranges)
	}
	for _, name := range e.staged() {
		if fi, err := os.Stat(filepath.Join(e.cfg.StateDir, contentDir, name)); err == nil && fi.Size() > 0 {
			t.Errorf("the staging file %s keeps %d bad bytes", name, fi.Size())
		}
	}
}

func TestDownloadGivesUpAtTheTimeout(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := []byte("an image")
	e := newContentEnv(t, ca, agenttest.DeadURL(t))
	item := deployItem("uid-g.1", image)
	item.Action.DeployImage.TimeoutSeconds = 1
	e.offer(item)
	tm := testTimings()
	tm.contentRounds = 1000
	start(t, e.cfg, tm)
	st := e.result(t, item.ID, 10*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonContentUnavailable || !strings.Contains(st.Message, "within the timeout of 1s") ||
		!strings.Contains(st.Message, "connection refused") {
		t.Errorf("result %+v, want ContentUnavailable at the timeout, with what was tried", st)
	}
	if d := st.Finished.Sub(*st.Started); d < time.Second || d > 3*time.Second {
		t.Errorf("the download took %s, want about its timeout of 1s", d)
	}
}

func TestInstallSoftwareRunsTheInstaller(t *testing.T) {
	ca := agenttest.NewCA(t)
	failing := []byte("#!/bin/sh\necho \"installing $SITEOPS_WORK_ID\"\necho oops >&2\nexit 3\n")
	working := []byte("#!/bin/sh\necho installed > \"$MARK\"\n")
	p1, p2 := newPackageServer(t, ca, failing), newPackageServer(t, ca, working)
	e := newContentEnv(t, ca, p1.URL, p2.URL)
	t.Setenv("MARK", e.path("mark"))
	// Each server holds one of the two: each download fails over once.
	e.offer(installItem("uid-i.1", failing), installItem("uid-j.1", working))
	start(t, e.cfg, testTimings())

	st := e.result(t, "uid-i.1", 20*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonExitCode || st.ExitCode == nil || *st.ExitCode != 3 ||
		st.Output != "installing uid-i.1\noops\n" || !strings.Contains(st.Message, "the installer exited with code 3") {
		t.Errorf("result %+v, want Failed with exit code 3 and the installer's output", st)
	}
	st = e.result(t, "uid-j.1", 20*time.Second)
	if st.State != protocol.WorkSucceeded || st.ExitCode == nil || *st.ExitCode != 0 {
		t.Errorf("result %+v, want Succeeded with exit code 0", st)
	}
	if b, _ := os.ReadFile(e.path("mark")); string(b) != "installed\n" {
		t.Errorf("the installer left %q", b)
	}
	if got := e.disk(t); string(got) != "untouched" {
		t.Error("installSoftware wrote the disk")
	}
	e.idle(t)
	if entries, _ := os.ReadDir(filepath.Join(e.cfg.StateDir, scriptsDir)); len(entries) != 0 {
		t.Errorf("the installer's directory is left: %v", entries)
	}
	if staged := e.staged(); len(staged) != 0 {
		t.Errorf("the staging directory holds %v", staged)
	}
}

func TestDiskActionsWithoutADisk(t *testing.T) {
	ca := agenttest.NewCA(t)
	image := []byte("an image")
	pkg := newPackageServer(t, ca, image)
	e := newContentEnv(t, ca, pkg.URL)
	e.cfg.Disk = ""
	capture := protocol.WorkItem{ID: "uid-c.1", Task: "imaging/capture", Attempt: 1,
		Action: protocol.Action{CaptureImage: &protocol.CaptureImage{PackageName: "golden", TimeoutSeconds: 60}}}
	e.offer(deployItem("uid-w.1", image), capture)
	start(t, e.cfg, testTimings())
	for _, id := range []string{"uid-w.1", "uid-c.1"} {
		st := e.result(t, id, 10*time.Second)
		if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonDiskFailed || st.Message != "no disk configured (--disk)" {
			t.Errorf("%s: result %+v, want DiskFailed: no disk configured (--disk)", id, st)
		}
	}
	if n := len(pkg.Ranges()); n != 0 {
		t.Errorf("the agent downloaded the image %d times without a disk to write it to", n)
	}
}
