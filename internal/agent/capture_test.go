//go:build unix

package agent

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/agent/agenttest"
	"github.com/siteops/site-operator/internal/protocol"
)

// uploadServer follows the protocol's capture upload (protocol.UploadsPath)
// over HTTPS: enough of a package service for the agent's side. The real
// service is tested end to end elsewhere.
type uploadServer struct {
	URL string
	// pkg is the Package an upload becomes.
	pkg string

	mu      sync.Mutex
	uploads map[string]*testUpload
	calls   []uploadCall
	// hook, when set, may answer a request instead of the server (and
	// return true), or change the upload first; n counts the requests
	// from 0, u is the request's upload (nil for a POST or an unknown one).
	hook func(n int, w http.ResponseWriter, r *http.Request, u *testUpload) bool
	// refused are credentials answered 401.
	refused map[string]bool
	// finished are the uploads made Packages.
	finished []protocol.UploadResult
}

// testUpload is an upload in progress.
type testUpload struct {
	id     string
	workID string
	data   []byte
}

// uploadCall is a request an uploadServer received.
type uploadCall struct {
	Method, Path, ContentRange, Credential, Digest string
	// Status is the answer's, 0 when the connection was cut.
	Status int
}

func newUploadServer(t *testing.T, ca *agenttest.CA, pkg string) *uploadServer {
	t.Helper()
	s := &uploadServer{pkg: pkg, uploads: map[string]*testUpload{}, refused: map[string]bool{}}
	s.URL = ca.Serve(t, s).URL
	return s
}

// set changes the server under its lock.
func (s *uploadServer) set(f func(s *uploadServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// Calls returns the requests received so far.
func (s *uploadServer) Calls() []uploadCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Finished returns the uploads made Packages.
func (s *uploadServer) Finished() []protocol.UploadResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.finished)
}

func (s *uploadServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, protocol.MaxUploadChunkBytes+1))
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.calls)
	credential, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.calls = append(s.calls, uploadCall{Method: r.Method, Path: r.URL.Path, ContentRange: r.Header.Get("Content-Range"),
		Credential: credential, Digest: r.URL.Query().Get(protocol.QueryDigest)})
	sw := &statusRecorder{ResponseWriter: w}
	defer func() { s.calls[n].Status = sw.code }()
	id, _ := strings.CutPrefix(r.URL.Path, protocol.UploadsPath+"/")
	u := s.uploads[id]
	r.Body = io.NopCloser(bytes.NewReader(body)) // for the hook
	if s.hook != nil && s.hook(n, sw, r, u) {
		return
	}
	if credential == "" || s.refused[credential] {
		agenttest.WriteError(sw, http.StatusUnauthorized, "the credential is not valid")
		return
	}
	status := func(code int, u *testUpload) {
		if rg := protocol.ReceivedRange(int64(len(u.data))); rg != "" {
			sw.Header().Set("Range", rg)
		}
		writeTestJSON(sw, code, protocol.UploadStatus{ID: u.id, Offset: int64(len(u.data))})
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == protocol.UploadsPath:
		var req protocol.UploadRequest
		if json.Unmarshal(body, &req) != nil || req.WorkID == "" {
			agenttest.WriteError(sw, http.StatusBadRequest, "bad upload request")
			return
		}
		u := &testUpload{id: fmt.Sprintf("up-%d", len(s.uploads)+1), workID: req.WorkID}
		s.uploads[u.id] = u
		sw.Header().Set("Location", protocol.UploadPath(u.id))
		status(http.StatusAccepted, u)
	case u == nil:
		agenttest.WriteError(sw, http.StatusNotFound, "no such upload")
	case r.Method == http.MethodPatch:
		first, last, err := protocol.ParseContentRange(r.Header.Get("Content-Range"))
		if err != nil || int64(len(body)) != last-first+1 || len(body) > protocol.MaxUploadChunkBytes {
			agenttest.WriteError(sw, http.StatusBadRequest, "bad chunk")
			return
		}
		if first != int64(len(u.data)) {
			status(http.StatusRequestedRangeNotSatisfiable, u)
			return
		}
		u.data = append(u.data, body...)
		status(http.StatusAccepted, u)
	case r.Method == http.MethodGet:
		status(http.StatusOK, u)
	case r.Method == http.MethodPut:
		sum := sha256.Sum256(u.data)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if r.URL.Query().Get(protocol.QueryDigest) != digest {
			delete(s.uploads, u.id)
			agenttest.WriteError(sw, http.StatusBadRequest, "the digest does not match the bytes received")
			return
		}
		res := protocol.UploadResult{Package: s.pkg, Digest: digest, Size: int64(len(u.data))}
		s.finished = append(s.finished, res)
		writeTestJSON(sw, http.StatusCreated, res)
	default:
		agenttest.WriteError(sw, http.StatusMethodNotAllowed, "no such method")
	}
}

// statusRecorder keeps the status of an answer.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (w *statusRecorder) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func writeTestJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", protocol.ContentType)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// cut ends a request without an answer: the agent sees a broken
// connection.
func cut() { panic(http.ErrAbortHandler) }

func captureItem(id string) protocol.WorkItem {
	return protocol.WorkItem{ID: id, Task: "imaging/capture", Attempt: 1,
		Action: protocol.Action{CaptureImage: &protocol.CaptureImage{PackageName: "golden", TimeoutSeconds: 60}}}
}

// newCaptureEnv is a content environment whose disk holds disk.
func newCaptureEnv(t *testing.T, ca *agenttest.CA, disk []byte, packageEndpoints ...string) *workEnv {
	t.Helper()
	e := newContentEnv(t, ca, packageEndpoints...)
	if err := os.WriteFile(e.cfg.Disk, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	return e
}

// patches returns the PATCH requests among calls.
func patches(calls []uploadCall) []uploadCall {
	var out []uploadCall
	for _, c := range calls {
		if c.Method == http.MethodPatch {
			out = append(out, c)
		}
	}
	return out
}

// wantCaptured checks a capture's result and the Package the server made.
func wantCaptured(t *testing.T, st protocol.WorkStatus, srv *uploadServer, disk []byte) {
	t.Helper()
	digest := digestOf(disk)
	want := fmt.Sprintf("captured into Package %s (%s, %d bytes)", srv.pkg, digest, len(disk))
	if st.State != protocol.WorkSucceeded || st.Message != want {
		t.Errorf("result %+v, want Succeeded with the message %q", st, want)
	}
	if f := srv.Finished(); len(f) != 1 || f[0].Digest != digest || f[0].Size != int64(len(disk)) {
		t.Errorf("the service made %+v, want one Package of %s", f, digest)
	}
}

func TestCaptureUploadsInChunksAndResumes(t *testing.T) {
	ca := agenttest.NewCA(t)
	disk := randomBytes(1<<20+1000, 5) // 17 chunks of 64 KiB
	srv := newUploadServer(t, ca, "imaging/golden")
	var sent416, lostAnswer bool
	srv.set(func(s *uploadServer) {
		s.hook = func(n int, w http.ResponseWriter, r *http.Request, u *testUpload) bool {
			if r.Method != http.MethodPatch || u == nil {
				return false
			}
			switch got := len(u.data); {
			case got >= 3<<16 && !sent416:
				// The service lost the end of what it held (a crash before
				// a sync): the chunk does not start where its bytes end.
				sent416 = true
				u.data = u.data[:got-1000]
			case got >= 8<<16 && !lostAnswer:
				// The chunk is stored, but the answer never arrives.
				lostAnswer = true
				first, _, _ := protocol.ParseContentRange(r.Header.Get("Content-Range"))
				body, _ := io.ReadAll(r.Body)
				if first == int64(got) {
					u.data = append(u.data, body...)
				}
				cut()
			}
			return false
		}
	})
	e := newCaptureEnv(t, ca, disk, srv.URL)
	const id = "uid-cap.1"
	e.offer(captureItem(id))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	wantCaptured(t, st, srv, disk)

	calls := srv.Calls()
	credential, _ := ReadCredential(e.cfg.StateDir)
	for i, c := range calls {
		if c.Credential != credential || credential == "" {
			t.Errorf("request %d (%s %s) had credential %q, want the agent's %q", i, c.Method, c.Path, c.Credential, credential)
		}
	}
	if calls[0].Method != http.MethodPost || calls[len(calls)-1].Method != http.MethodPut || calls[len(calls)-1].Digest != digestOf(disk) {
		t.Errorf("requests %+v, want a POST first and a PUT with the digest last", calls)
	}
	// Every byte the service holds was sent in order, in chunks of at most
	// 64 KiB; after the 416 the agent went on from the service's offset,
	// and after the lost answer it asked the status and sent nothing twice.
	var refusedAt, gets int
	var next int64
	for i, c := range calls {
		switch c.Method {
		case http.MethodGet:
			gets++
		case http.MethodPatch:
			first, last, err := protocol.ParseContentRange(c.ContentRange)
			if err != nil || last-first+1 > 64<<10 {
				t.Errorf("PATCH %d: Content-Range %q, want at most 64 KiB", i, c.ContentRange)
			}
			if c.Status == http.StatusRequestedRangeNotSatisfiable {
				refusedAt = i
				next = 3<<16 - 1000
				continue
			}
			if first != next {
				t.Errorf("PATCH %d starts at %d, want %d (where the service's bytes end)", i, first, next)
			}
			next = last + 1
		}
	}
	if refusedAt == 0 || gets != 1 {
		t.Errorf("%d status requests and a 416 at request %d: want one of each", gets, refusedAt)
	}
	if next != int64(len(disk)) {
		t.Errorf("the chunks end at %d, want %d", next, len(disk))
	}
}

func TestCaptureMovesToTheNextEndpoint(t *testing.T) {
	ca := agenttest.NewCA(t)
	disk := randomBytes(500<<10, 6)
	down := newUploadServer(t, ca, "imaging/on-a")
	// After two chunks, the first server goes down for good.
	down.set(func(s *uploadServer) {
		s.hook = func(n int, w http.ResponseWriter, r *http.Request, u *testUpload) bool {
			if n >= 3 {
				cut()
			}
			return false
		}
	})
	up := newUploadServer(t, ca, "imaging/on-b")
	e := newCaptureEnv(t, ca, disk, agenttest.DeadURL(t), down.URL, up.URL)
	const id = "uid-cap.1"
	e.offer(captureItem(id))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	wantCaptured(t, st, up, disk)

	calls := down.Calls()
	var gets int
	for _, c := range calls {
		if c.Method == http.MethodGet {
			gets++
		}
	}
	if len(patches(calls)) != 3 || gets != 3 || len(down.Finished()) != 0 {
		t.Errorf("the failing server had %d PATCHes and %d status requests, want 3 (one cut) and 3 (the tries)", len(patches(calls)), gets)
	}
	// A new upload on the next endpoint, from the first byte.
	if p := patches(up.Calls()); len(p) == 0 || !strings.HasPrefix(p[0].ContentRange, "0-") {
		t.Errorf("the next server's PATCHes %+v, want a new upload from byte 0", p)
	}
}

func TestCaptureLocatesAgainOn421(t *testing.T) {
	ca := agenttest.NewCA(t)
	disk := randomBytes(100<<10, 7)
	other := newUploadServer(t, ca, "imaging/elsewhere")
	other.set(func(s *uploadServer) {
		s.hook = func(_ int, w http.ResponseWriter, _ *http.Request, _ *testUpload) bool {
			agenttest.WriteError(w, protocol.StatusRelocate, "this server does not serve the agent's site")
			return true
		}
	})
	own := newUploadServer(t, ca, "imaging/golden")
	task := agenttest.NewTaskServer(t, ca, "paris-1", "paris", testToken)
	task.Set(func(b *agenttest.Behaviour) { b.NextCheckIn = 20 * time.Millisecond })
	// The first answer gives the wrong package service; later ones the
	// site's own.
	locator := agenttest.NewLocator(t, ca, func(n int, _ []string) protocol.LocateResponse {
		pkg := own.URL
		if n == 0 {
			pkg = other.URL
		}
		return protocol.LocateResponse{Site: "paris", Rule: protocol.RuleSite, TaskEndpoints: []string{task.URL}, PackageEndpoints: []string{pkg}}
	})
	e := &workEnv{task: task, cfg: baseConfig(t, ca, locator.URL), dir: t.TempDir()}
	e.cfg.Disk = e.path("disk")
	if err := os.WriteFile(e.cfg.Disk, disk, 0o600); err != nil {
		t.Fatal(err)
	}
	const id = "uid-cap.1"
	e.offer(captureItem(id))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	wantCaptured(t, st, own, disk)
	if n := len(locator.Requests()); n < 2 {
		t.Errorf("%d locate requests, want the agent to locate again after the 421", n)
	}
	if c := other.Calls(); len(c) == 0 || c[0].Status != protocol.StatusRelocate {
		t.Errorf("the other site's server had %+v", c)
	}
}

func TestCaptureGoesOnWithANewCredentialAfter401(t *testing.T) {
	ca := agenttest.NewCA(t)
	disk := randomBytes(300<<10, 8)
	srv := newUploadServer(t, ca, "imaging/golden")
	// After two chunks, the service refuses the credential the agent has.
	srv.set(func(s *uploadServer) {
		s.hook = func(n int, w http.ResponseWriter, r *http.Request, u *testUpload) bool {
			if r.Method == http.MethodPatch && u != nil && len(u.data) >= 2<<16 && len(s.refused) == 0 {
				credential, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
				s.refused[credential] = true
			}
			return false
		}
	})
	e := newCaptureEnv(t, ca, disk, srv.URL)
	const id = "uid-cap.1"
	e.offer(captureItem(id))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 20*time.Second)
	wantCaptured(t, st, srv, disk)
	if n := len(e.task.Registrations()); n != 2 {
		t.Errorf("%d registrations, want the agent to register again after the 401", n)
	}
	calls := srv.Calls()
	last := calls[len(calls)-1]
	var refused int
	for _, c := range calls {
		if c.Status == http.StatusUnauthorized {
			refused++
			if c.Credential == last.Credential {
				t.Error("the upload finished with the refused credential")
			}
		}
	}
	if refused != 1 {
		t.Errorf("%d requests refused with 401, want 1", refused)
	}
}

// A capture whose disk cannot be opened fails with DiskFailed, naming it,
// and uploads nothing.
func TestCaptureOfAMissingDisk(t *testing.T) {
	ca := agenttest.NewCA(t)
	srv := newUploadServer(t, ca, "imaging/golden")
	e := newContentEnv(t, ca, srv.URL)
	e.cfg.Disk = e.path("no-such-disk")
	const id = "uid-cap.1"
	e.offer(captureItem(id))
	start(t, e.cfg, testTimings())
	st := e.result(t, id, 10*time.Second)
	if st.State != protocol.WorkFailed || st.Reason != protocol.ReasonDiskFailed || !strings.Contains(st.Message, "no-such-disk") {
		t.Errorf("result %+v, want DiskFailed naming the disk", st)
	}
	if c := srv.Calls(); len(c) != 0 {
		t.Errorf("the agent sent %d upload requests without a disk", len(c))
	}
}
