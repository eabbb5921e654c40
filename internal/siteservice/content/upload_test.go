package content

// The capture upload against a real API server (envtest), over HTTPS on
// real sockets: the test plays the controllers (it writes the SiteServers'
// and the tasks' status) and the agent (it holds the Computers'
// credentials).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/agentauth"
	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
	"github.com/siteops/site-operator/internal/tasks"
)

// uploadServer is a package service taking uploads over HTTPS.
type uploadServer struct {
	api    string // https://...
	server *Server
	stop   func()
}

// startUploadServer serves the package service of SiteServer paris-srv
// over HTTPS on the store in storage, with API access at rc, until stop or
// the end of the test.
func startUploadServer(t *testing.T, rc *rest.Config, storage string, idle time.Duration, tlsFiles *certs.FileCertificate) *uploadServer {
	t.Helper()
	cfg := config.Defaults("paris-srv", []string{"paris"})
	cfg.Package.StoragePath = storage
	s, err := New(cfg, Options{Version: "v0.1.0", Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		RestConfig: rc, UploadIdleTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	stop := serveFor(t, host.WithServing(context.Background(), host.Serving{TLS: certs.ServerConfig(tlsFiles.GetCertificate)}),
		s, api, health)
	return &uploadServer{api: "https://" + api.Addr().String(), server: s, stop: stop}
}

// agent is a test's agent: its Computer's credential and an HTTPS client.
type agent struct {
	t          *testing.T
	client     *http.Client
	credential string
	computer   string
}

// call sends method path with body and headers as the agent, and returns
// the status, the headers and the body.
func (a *agent) call(base, method, path string, body []byte, header http.Header) (int, http.Header, []byte) {
	a.t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if a.credential != "" {
		req.Header.Set("Authorization", "Bearer "+a.credential)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, data
}

// start POSTs an UploadRequest; it returns the status, the UploadStatus
// and the raw body.
func (a *agent) start(base, workID string, size int64) (int, protocol.UploadStatus, []byte) {
	a.t.Helper()
	body, _ := json.Marshal(protocol.UploadRequest{WorkID: workID, Size: size})
	code, h, data := a.call(base, http.MethodPost, protocol.UploadsPath, body, http.Header{"Content-Type": {protocol.ContentType}})
	var st protocol.UploadStatus
	if code == http.StatusAccepted {
		if err := json.Unmarshal(data, &st); err != nil {
			a.t.Fatalf("POST answer: %v: %s", err, data)
		}
		if loc := h.Get("Location"); loc != protocol.UploadPath(st.ID) {
			a.t.Errorf("POST Location %q, want %q", loc, protocol.UploadPath(st.ID))
		}
	}
	return code, st, data
}

// chunk PATCHes data[first:first+n] (the Content-Range says so) to upload
// id; it returns the status, the headers and the UploadStatus.
func (a *agent) chunk(base, id string, data []byte, first, n int64) (int, http.Header, protocol.UploadStatus) {
	a.t.Helper()
	code, h, body := a.call(base, http.MethodPatch, protocol.UploadPath(id), data[first:first+n],
		http.Header{"Content-Range": {protocol.ContentRange(first, n)}, "Content-Type": {"application/octet-stream"}})
	var st protocol.UploadStatus
	if code == http.StatusAccepted || code == http.StatusRequestedRangeNotSatisfiable {
		if err := json.Unmarshal(body, &st); err != nil {
			a.t.Fatalf("PATCH answer %d: %v: %s", code, err, body)
		}
	}
	return code, h, st
}

// finish PUTs upload id with digest; it returns the status and the body.
func (a *agent) finish(base, id, digest string) (int, []byte) {
	a.t.Helper()
	code, _, body := a.call(base, http.MethodPut, protocol.UploadPath(id)+"?"+protocol.QueryDigest+"="+digest, nil, nil)
	return code, body
}

// errorOf decodes a protocol.Error body; it fails the test if it is not one.
func errorOf(t *testing.T, body []byte) protocol.Error {
	t.Helper()
	var e protocol.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("not a protocol.Error: %v: %s", err, body)
	}
	return e
}

// uploadWorld is the API objects of the upload tests.
type uploadWorld struct {
	cl    client.Client
	roots *http.Client
}

// computer creates Computer name at address in namespace apps with a
// credential, as the task service leaves it after a registration and a
// check-in, and returns its agent.
func (w *uploadWorld) computer(t *testing.T, name, address, site string) *agent {
	t.Helper()
	ctx := t.Context()
	key := types.NamespacedName{Namespace: "apps", Name: name}
	credential, hash := agentauth.New(key)
	c := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	if err := w.cl.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	c.Status.Addresses, c.Status.Site, c.Status.SiteServer = []string{address}, site, "paris-srv"
	c.Status.Credential = &siteopsv1.ComputerCredential{Hash: hash, IssuedAt: metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))}
	if err := w.cl.Status().Update(ctx, c); err != nil {
		t.Fatal(err)
	}
	return &agent{t: t, client: w.roots, credential: credential, computer: name}
}

// task creates a Running DeploymentTask of action for computers and
// returns the ID of its first work item.
func (w *uploadWorld) task(t *testing.T, name string, action siteopsv1.DeploymentTaskAction, computers ...string) string {
	t.Helper()
	ctx := t.Context()
	task := &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: name},
		Spec: siteopsv1.DeploymentTaskSpec{Action: action, Targets: siteopsv1.DeploymentTaskTargets{Computers: computers}}}
	if err := w.cl.Create(ctx, task); err != nil {
		t.Fatal(err)
	}
	task.Status.Phase = siteopsv1.TaskRunning
	if err := w.cl.Status().Update(ctx, task); err != nil {
		t.Fatal(err)
	}
	return tasks.WorkID(string(task.UID), 1)
}

// capture is the action capturing into Package pkg.
func capture(pkg string) siteopsv1.DeploymentTaskAction {
	return siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: pkg}}
}

// setUpUploads starts the API server with the topology of the upload
// tests: Sites paris (10.1.0.0/16, served by paris-srv) and lyon
// (10.2.0.0/16, served by lyon-srv), and namespace apps.
func setUpUploads(t *testing.T) (*rest.Config, *uploadWorld, *certs.FileCertificate) {
	t.Helper()
	env, cl := startAPI(t)
	ctx := t.Context()
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}); err != nil {
		t.Fatal(err)
	}
	for site, cidr := range map[string]string{"paris": "10.1.0.0/16", "lyon": "10.2.0.0/16"} {
		if err := cl.Create(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: site}}); err != nil {
			t.Fatal(err)
		}
		sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: site}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: site}}
		if err := cl.Create(ctx, sn); err != nil {
			t.Fatal(err)
		}
	}
	runningServer(t, cl, "paris-srv", "paris")
	runningServer(t, cl, "lyon-srv", "lyon")
	certFile, keyFile, roots := hosttest.WriteCertificate(t, "127.0.0.1")
	files, err := certs.LoadFiles(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return env.Config, &uploadWorld{cl: cl, roots: hosttest.HTTPSClient(roots)}, files
}

// waitTakingUploads waits until the service's upload cache is synced.
func waitTakingUploads(t *testing.T, s *uploadServer, a *agent) {
	t.Helper()
	waitUntil(t, 30*time.Second, "the package service takes uploads", func() bool {
		code, _, _ := a.call(s.api, http.MethodGet, protocol.UploadPath(strings.Repeat("A", uploadIDLength)), nil, nil)
		return code == http.StatusNotFound
	})
}

func storageDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "content")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestCaptureUpload(t *testing.T) {
	rc, w, tlsFiles := setUpUploads(t)
	ctx := t.Context()
	pc1 := w.computer(t, "pc-01", "10.1.0.5", "paris")
	pc2 := w.computer(t, "pc-02", "10.1.0.6", "paris")
	storage := storageDir(t)
	srv := startUploadServer(t, rc, storage, 0, tlsFiles)
	waitTakingUploads(t, srv, pc1)
	outer := t // the server restarted in a subtest serves the next ones

	t.Run("chunks, a gap, a lost answer, a restart, then the Package", func(t *testing.T) {
		work := w.task(t, "capture-golden", capture("golden"), "pc-01")
		data, digest := randomContent(5<<20 + 123)
		size := int64(len(data))
		code, st, body := pc1.start(srv.api, work, size)
		if code != http.StatusAccepted || st.Offset != 0 || len(st.ID) != uploadIDLength {
			t.Fatalf("POST: %d %+v %s", code, st, body)
		}
		const chunk = 1 << 20
		dataFile := filepath.Join(storage, uploadsDir, st.ID, uploadData)

		if code, h, got := pc1.chunk(srv.api, st.ID, data, 0, chunk); code != http.StatusAccepted || got.Offset != chunk ||
			h.Get("Range") != "0-"+strconv.Itoa(chunk-1) {
			t.Fatalf("first chunk: %d %+v Range %q", code, got, h.Get("Range"))
		}
		// A gap: refused, nothing written, the Range says where to go on.
		code, h, got := pc1.chunk(srv.api, st.ID, data, 2*chunk, chunk)
		if code != http.StatusRequestedRangeNotSatisfiable || got.Offset != chunk || h.Get("Range") != "0-"+strconv.Itoa(chunk-1) {
			t.Fatalf("a chunk after a gap: %d %+v Range %q, want 416 at offset %d", code, got, h.Get("Range"), chunk)
		}
		if info, err := os.Stat(dataFile); err != nil || info.Size() != chunk {
			t.Fatalf("after the refused chunk the upload holds %v bytes (%v), want %d", info.Size(), err, chunk)
		}
		// The answer to the first chunk was lost: the agent sends it again.
		if code, _, got := pc1.chunk(srv.api, st.ID, data, 0, chunk); code != http.StatusRequestedRangeNotSatisfiable || got.Offset != chunk {
			t.Fatalf("the first chunk again: %d %+v, want 416 at offset %d", code, got, chunk)
		}
		if code, _, got := pc1.chunk(srv.api, st.ID, data, chunk, chunk); code != http.StatusAccepted || got.Offset != 2*chunk {
			t.Fatalf("the second chunk: %d %+v", code, got)
		}

		// The package service restarts mid-upload; the agent asks where to
		// go on from.
		srv.stop()
		srv = startUploadServer(outer, rc, storage, 0, tlsFiles)
		waitTakingUploads(t, srv, pc1)
		code, _, body = pc1.call(srv.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil)
		var resumed protocol.UploadStatus
		if err := json.Unmarshal(body, &resumed); code != http.StatusOK || err != nil || resumed != (protocol.UploadStatus{ID: st.ID, Offset: 2 * chunk}) {
			t.Fatalf("GET after the restart: %d %s", code, body)
		}
		for off := resumed.Offset; off < size; off += chunk {
			n := min(chunk, size-off)
			if code, _, got := pc1.chunk(srv.api, st.ID, data, off, n); code != http.StatusAccepted || got.Offset != off+n {
				t.Fatalf("chunk at %d: %d %+v", off, code, got)
			}
		}

		// Another computer's credential does not find the upload.
		if code, _, body := pc2.call(srv.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil); code != http.StatusNotFound {
			t.Errorf("GET of pc-01's upload as pc-02: %d %s, want 404", code, body)
		}
		if code, _ := pc2.finish(srv.api, st.ID, digest); code != http.StatusNotFound {
			t.Errorf("PUT of pc-01's upload as pc-02: %d, want 404", code)
		}

		code, body = pc1.finish(srv.api, st.ID, digest)
		var result protocol.UploadResult
		if err := json.Unmarshal(body, &result); code != http.StatusCreated || err != nil {
			t.Fatalf("PUT: %d %s", code, body)
		}
		if want := (protocol.UploadResult{Package: "apps/golden", Digest: digest, Size: size}); result != want {
			t.Errorf("PUT = %+v, want %+v", result, want)
		}
		var p siteopsv1.Package
		if err := w.cl.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "golden"}, &p); err != nil {
			t.Fatal(err)
		}
		wantSource := siteopsv1.PackageSource{Captured: &siteopsv1.CapturedSource{SiteServer: "paris-srv", Site: "paris", Computer: "pc-01", Task: "capture-golden"}}
		if p.Spec.Type != siteopsv1.PackageDiskImage || !reflect.DeepEqual(p.Spec.Source, wantSource) || p.Spec.Digest != digest ||
			p.Spec.Size != size || p.Spec.Replication.Policy != "" {
			t.Errorf("the Package's spec: %+v", p.Spec)
		}

		// The content is served byte for byte.
		code, _, served := pc1.call(srv.api, http.MethodGet, protocol.ContentPath(digest), nil, nil)
		if code != http.StatusOK || !bytes.Equal(served, data) {
			t.Errorf("GET of the content: %d, %d bytes, equal %v", code, len(served), bytes.Equal(served, data))
		}

		// A PUT sent again after a lost answer gets the same answer.
		code, again := pc1.finish(srv.api, st.ID, digest)
		if code != http.StatusCreated || !bytes.Equal(again, body) {
			t.Errorf("PUT again: %d %s, want 201 %s", code, again, body)
		}
		if code, _, got := pc1.chunk(srv.api, st.ID, data, size-1, 1); code != http.StatusConflict {
			t.Errorf("a chunk after the PUT: %d %+v, want 409", code, got)
		}
	})

	t.Run("a digest that does not match drops the upload and makes no Package", func(t *testing.T) {
		work := w.task(t, "capture-bad", capture("bad"), "pc-01")
		data, _ := randomContent(100_001)
		_, st, _ := pc1.start(srv.api, work, 0)
		if code, _, _ := pc1.chunk(srv.api, st.ID, data, 0, int64(len(data))); code != http.StatusAccepted {
			t.Fatalf("PATCH: %d", code)
		}
		_, other := randomContent(100_002)
		code, body := pc1.finish(srv.api, st.ID, other)
		if e := errorOf(t, body); code != http.StatusBadRequest || e.Field != protocol.QueryDigest || !strings.Contains(e.Error, "dropped") {
			t.Errorf("PUT with another digest: %d %s", code, body)
		}
		if code, _, _ := pc1.call(srv.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil); code != http.StatusNotFound {
			t.Errorf("GET of the dropped upload: %d, want 404", code)
		}
		if _, err := os.Stat(filepath.Join(storage, uploadsDir, st.ID)); !os.IsNotExist(err) {
			t.Errorf("the dropped upload's directory: %v", err)
		}
		var p siteopsv1.Package
		if err := w.cl.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "bad"}, &p); err == nil {
			t.Error("a Package was made of bytes that do not match")
		}
		if srv.server.Store().Has(other) {
			t.Error("the store holds the digest the agent claimed")
		}
	})

	t.Run("a Package with other content is left as it is", func(t *testing.T) {
		_, takenDigest := randomContent(4096)
		taken := &siteopsv1.Package{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "taken"},
			Spec: siteopsv1.PackageSpec{Type: siteopsv1.PackageDiskImage, Source: siteopsv1.PackageSource{URL: "https://images.example/taken.img"},
				Digest: takenDigest, Size: 4096}}
		if err := w.cl.Create(ctx, taken); err != nil {
			t.Fatal(err)
		}
		work := w.task(t, "capture-taken", capture("taken"), "pc-01")
		data, digest := randomContent(4097)
		_, st, _ := pc1.start(srv.api, work, int64(len(data)))
		pc1.chunk(srv.api, st.ID, data, 0, int64(len(data)))
		code, body := pc1.finish(srv.api, st.ID, digest)
		if e := errorOf(t, body); code != http.StatusConflict || !strings.Contains(e.Error, "apps/taken") {
			t.Errorf("PUT into a Package with other content: %d %s", code, body)
		}
		var p siteopsv1.Package
		if err := w.cl.Get(ctx, client.ObjectKeyFromObject(taken), &p); err != nil {
			t.Fatal(err)
		}
		if p.Spec.Digest != takenDigest || p.Spec.Source.URL == "" || p.Generation != 1 {
			t.Errorf("the Package was changed: %+v", p.Spec)
		}
		if srv.server.Store().Has(digest) {
			t.Error("the refused content went into the store")
		}
	})

	t.Run("DELETE drops an upload", func(t *testing.T) {
		work := w.task(t, "capture-deleted", capture("deleted"), "pc-01")
		_, st, _ := pc1.start(srv.api, work, 0)
		if code, _, body := pc1.call(srv.api, http.MethodDelete, protocol.UploadPath(st.ID), nil, nil); code != http.StatusNoContent {
			t.Fatalf("DELETE: %d %s", code, body)
		}
		if code, _, _ := pc1.call(srv.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil); code != http.StatusNotFound {
			t.Errorf("GET after DELETE: %d, want 404", code)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		capturePC1 := w.task(t, "capture-refusals", capture("refusals"), "pc-01")
		capturePC2 := w.task(t, "capture-pc-02", capture("pc-02-image"), "pc-02")
		script := w.task(t, "script", siteopsv1.DeploymentTaskAction{RunScript: &siteopsv1.RunScriptAction{Script: "true", Interpreter: "sh", Timeout: metav1.Duration{Duration: time.Minute}}}, "pc-01")
		finished := w.task(t, "capture-finished", capture("finished"), "pc-01")
		var done siteopsv1.DeploymentTask
		if err := w.cl.Get(ctx, types.NamespacedName{Namespace: "apps", Name: "capture-finished"}, &done); err != nil {
			t.Fatal(err)
		}
		done.Status.Phase = siteopsv1.TaskSucceeded
		if err := w.cl.Status().Update(ctx, &done); err != nil {
			t.Fatal(err)
		}
		lyon := w.computer(t, "pc-lyon", "10.2.0.9", "lyon")
		lyonWork := w.task(t, "capture-lyon", capture("lyon-image"), "pc-lyon")
		forged, _ := agentauth.New(types.NamespacedName{Namespace: "apps", Name: "pc-01"})
		waitUntil(t, 30*time.Second, "the service's cache holds the tasks and pc-lyon", func() bool {
			code, _, _ := lyon.start(srv.api, lyonWork, 0)
			return code == protocol.StatusRelocate
		})

		for _, tt := range []struct {
			name   string
			agent  *agent
			workID string
			want   int
			says   string
		}{
			{"no credential", &agent{t: t, client: w.roots}, capturePC1, http.StatusUnauthorized, "Authorization: Bearer"},
			{"a malformed credential", &agent{t: t, client: w.roots, credential: "not-a-credential"}, capturePC1, http.StatusUnauthorized, "not valid"},
			{"a credential pc-01 was never given", &agent{t: t, client: w.roots, credential: forged}, capturePC1, http.StatusUnauthorized, "not valid"},
			{"a computer of a site this server does not serve", lyon, lyonWork, protocol.StatusRelocate, "locate again"},
			{"a task that is no capture", pc1, script, http.StatusForbidden, "not a captureImage task"},
			{"the capture of another computer", pc1, capturePC2, http.StatusForbidden, "captures Computer pc-02, not pc-01"},
			{"a finished capture", pc1, finished, http.StatusForbidden, "is Succeeded"},
			{"a work item of no task", pc1, tasks.WorkID("0f5d4e4c-0000-4000-8000-000000000000", 1), http.StatusNotFound, "no DeploymentTask"},
			{"a malformed work item", pc1, "not-a-work-id", http.StatusBadRequest, "not <task UID>.<attempt>"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				code, _, body := tt.agent.start(srv.api, tt.workID, 0)
				if e := errorOf(t, body); code != tt.want || !strings.Contains(e.Error, tt.says) {
					t.Errorf("POST: %d %s, want %d saying %q", code, body, tt.want, tt.says)
				}
			})
		}

		t.Run("no room for the size announced", func(t *testing.T) {
			code, _, body := pc1.start(srv.api, capturePC1, 1<<62)
			if e := errorOf(t, body); code != http.StatusInsufficientStorage || e.Field != "size" || !strings.Contains(e.Error, "no room") {
				t.Errorf("POST of an upload larger than the disk: %d %s", code, body)
			}
		})

		t.Run("a chunk too big", func(t *testing.T) {
			_, st, _ := pc1.start(srv.api, capturePC1, 0)
			code, _, body := pc1.call(srv.api, http.MethodPatch, protocol.UploadPath(st.ID), []byte("x"),
				http.Header{"Content-Range": {protocol.ContentRange(0, protocol.MaxUploadChunkBytes+1)}})
			if e := errorOf(t, body); code != http.StatusRequestEntityTooLarge || !strings.Contains(e.Error, strconv.Itoa(protocol.MaxUploadChunkBytes)) {
				t.Errorf("PATCH of a chunk over the bound: %d %s", code, body)
			}
			// A body past the bound, sent without a length: the host's
			// bound of the route cuts it.
			big := make([]byte, protocol.MaxUploadChunkBytes+1)
			req, _ := http.NewRequest(http.MethodPatch, srv.api+protocol.UploadPath(st.ID), struct{ io.Reader }{bytes.NewReader(big)})
			req.Header.Set("Authorization", "Bearer "+pc1.credential)
			req.Header.Set("Content-Range", protocol.ContentRange(0, protocol.MaxUploadChunkBytes))
			resp, err := pc1.client.Do(req)
			if err != nil {
				t.Fatalf("PATCH of a body past the bound: %v", err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("PATCH of a body past the bound: %d %s, want 413", resp.StatusCode, body)
			}
			if code, _, body := pc1.call(srv.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil); code != http.StatusOK ||
				!strings.Contains(string(body), `"offset":0`) {
				t.Errorf("the upload after the refused chunks: %d %s, want offset 0", code, body)
			}
		})
	})

	t.Run("an idle upload is dropped", func(t *testing.T) {
		idleStorage := storageDir(t)
		idle := startUploadServer(t, rc, idleStorage, 300*time.Millisecond, tlsFiles)
		waitTakingUploads(t, idle, pc1)
		work := w.task(t, "capture-idle", capture("idle"), "pc-01")
		code, st, body := pc1.start(idle.api, work, 0)
		if code != http.StatusAccepted {
			t.Fatalf("POST: %d %s", code, body)
		}
		waitUntil(t, 10*time.Second, "the idle upload is gone", func() bool {
			_, err := os.Stat(filepath.Join(idleStorage, uploadsDir, st.ID))
			return os.IsNotExist(err)
		})
		if code, _, _ := pc1.call(idle.api, http.MethodGet, protocol.UploadPath(st.ID), nil, nil); code != http.StatusNotFound {
			t.Errorf("GET of the idle upload: %d, want 404", code)
		}
	})
}

func TestChunkOf(t *testing.T) {
	for _, tt := range []struct {
		contentRange string
		length       int64
		first, n     int64
		status       int
		field        string
	}{
		{"0-99", 100, 0, 100, 0, ""},
		{"bytes 100-199/*", -1, 100, 100, 0, ""},
		{"", 100, 0, 0, http.StatusBadRequest, "Content-Range"},
		{"10-5", 100, 0, 0, http.StatusBadRequest, "Content-Range"},
		{"0-99", 99, 0, 0, http.StatusBadRequest, "Content-Length"},
		{"0-" + strconv.Itoa(protocol.MaxUploadChunkBytes-1), -1, 0, protocol.MaxUploadChunkBytes, 0, ""},
		{"0-" + strconv.Itoa(protocol.MaxUploadChunkBytes), -1, 0, 0, http.StatusRequestEntityTooLarge, "Content-Range"},
	} {
		t.Run(tt.contentRange, func(t *testing.T) {
			first, n, err := chunkOf(tt.contentRange, tt.length)
			if tt.status == 0 {
				if err != nil || first != tt.first || n != tt.n {
					t.Errorf("chunkOf = %d, %d, %v; want %d, %d", first, n, err, tt.first, tt.n)
				}
				return
			}
			var ref *refusal
			if !errors.As(err, &ref) || ref.status != tt.status || ref.field != tt.field {
				t.Errorf("chunkOf = %v, want %d on %s", err, tt.status, tt.field)
			}
		})
	}
}

func TestCheckCapture(t *testing.T) {
	task := func(mutate func(*siteopsv1.DeploymentTask)) *siteopsv1.DeploymentTask {
		dt := &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "cap"},
			Spec: siteopsv1.DeploymentTaskSpec{Action: capture("img"), Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{"pc-01"}}}}
		dt.Status.Phase = siteopsv1.TaskRunning
		if mutate != nil {
			mutate(dt)
		}
		return dt
	}
	now := metav1.Now()
	for _, tt := range []struct {
		name string
		task *siteopsv1.DeploymentTask
		want string // "" when accepted
	}{
		{"a running capture of the computer", task(nil), ""},
		{"before it runs", task(func(d *siteopsv1.DeploymentTask) { d.Status.Phase = "" }), ""},
		{"no capture", task(func(d *siteopsv1.DeploymentTask) {
			d.Spec.Action = siteopsv1.DeploymentTaskAction{Reboot: &siteopsv1.RebootAction{}}
		}), "not a captureImage task (its action is reboot)"},
		{"another computer", task(func(d *siteopsv1.DeploymentTask) { d.Spec.Targets.Computers = []string{"pc-02"} }), "captures Computer pc-02"},
		{"more computers", task(func(d *siteopsv1.DeploymentTask) { d.Spec.Targets.Computers = []string{"pc-01", "pc-02"} }), "captures Computer pc-01, pc-02"},
		{"a site besides", task(func(d *siteopsv1.DeploymentTask) { d.Spec.Targets.Sites = []string{"paris"} }), "captures"},
		{"failed", task(func(d *siteopsv1.DeploymentTask) { d.Status.Phase = siteopsv1.TaskFailed }), "is Failed"},
		{"stopped", task(func(d *siteopsv1.DeploymentTask) { d.Status.Phase = siteopsv1.TaskStopped }), "is Stopped"},
		{"being deleted", task(func(d *siteopsv1.DeploymentTask) { d.DeletionTimestamp = &now }), "being deleted"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCapture(tt.task, "pc-01")
			if tt.want == "" {
				if err != nil {
					t.Errorf("checkCapture = %v, want nil", err)
				}
				return
			}
			var ref *refusal
			if !errors.As(err, &ref) || ref.status != http.StatusForbidden || !strings.Contains(ref.msg, tt.want) {
				t.Errorf("checkCapture = %v, want 403 saying %q", err, tt.want)
			}
		})
	}
}

// TestUploadRecordWins checks that an upload whose data went past its
// record (a crash between the write of a chunk and the record that
// counts it) is cut back to the record when it is loaded, that one whose
// data went into the store is stored, and that one whose record cannot be
// read is dropped.
func TestUploadRecordWins(t *testing.T) {
	storage := storageDir(t)
	store := startedStore(t, storage)
	us, err := newUploads(store, "paris-srv", nil, time.Hour, slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatal(err)
	}
	comp := &siteopsv1.Computer{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "pc-01"}}
	task := &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: "apps", Name: "cap"}}
	u, err := us.open(comp, task, protocol.UploadRequest{WorkID: "uid.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := us.append(t.Context(), u, u.record(), strings.NewReader("0123456789"), 10); err != nil {
		t.Fatal(err)
	}
	u.release()
	// The crash: bytes written after the last record.
	f, err := os.OpenFile(filepath.Join(u.dir, uploadData), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(f, "lost")
	f.Close()

	restarted, _ := newUploads(store, "paris-srv", nil, time.Hour, us.log)
	got := restarted.lookup(u.id)
	if got == nil || got.record().Offset != 10 {
		t.Fatalf("the upload after the restart: %+v", got)
	}
	if data, _ := os.ReadFile(filepath.Join(u.dir, uploadData)); string(data) != "0123456789" {
		t.Errorf("its data: %q, want the bytes its record counts", data)
	}
	h, _ := restoreHash(got.record().Hash)
	if want := digestOf("0123456789"); "sha256:"+fmt.Sprintf("%x", h.Sum(nil)) != want {
		t.Errorf("its hash is not the hash of its bytes")
	}

	// A crash between the move of the data into the store and the record
	// that says so: the upload is stored.
	if err := store.adopt(t.Context(), digestOf("0123456789"), 10, filepath.Join(u.dir, uploadData)); err != nil {
		t.Fatal(err)
	}
	stored, _ := newUploads(store, "paris-srv", nil, time.Hour, us.log)
	if got := stored.lookup(u.id); got == nil || !got.record().Stored || got.record().Digest != digestOf("0123456789") {
		t.Errorf("the upload whose data went into the store: %+v", got)
	}

	// A record that cannot be read: the upload is dropped.
	if err := os.WriteFile(filepath.Join(u.dir, uploadRecordFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, _ := newUploads(store, "paris-srv", nil, time.Hour, us.log)
	if again.lookup(u.id) != nil {
		t.Error("an upload with a broken record was loaded")
	}
	if _, err := os.Stat(u.dir); !os.IsNotExist(err) {
		t.Errorf("the broken upload is still there: %v", err)
	}
	if validUploadID("../../etc") || validUploadID(strings.Repeat("A", uploadIDLength-1)) || !validUploadID(u.id) {
		t.Error("validUploadID")
	}
}
