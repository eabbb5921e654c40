package content

// The capture upload (protocol.UploadsPath): an agent running a
// captureImage work item uploads its disk in chunks, resumable as in the
// OCI distribution upload flow, and the service makes it a Package with
// source.captured.
//
// Each upload is a directory uploads/<id>/ of the store: data, the bytes
// received in order, and upload.json, its record: whose it is (the
// Computer, the task, the work item), how many bytes it holds and the
// state of their SHA-256 after them, so that the hash runs as the bytes
// come in, as Ingest's does, and survives a restart of the service. A
// chunk is fsynced before the record that counts it is written; a record
// behind its data (a crash in between) wins, and the data is cut back to
// it. The PUT compares the digest of the bytes received, then the data
// file goes into the store by the install step of Ingest and Resume.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/siteservice/agentauth"
	"github.com/siteops/site-operator/internal/siteservice/host"
)

// Layout of an upload, under the store.
const (
	uploadsDir       = "uploads"     // one directory per upload
	uploadData       = "data"        // the bytes received
	uploadRecordFile = "upload.json" // its uploadRecord
	uploadIDBytes    = 24            // random bytes of an ID
)

// uploadIDLength is the length of an upload ID: base64url, no padding.
var uploadIDLength = base64.RawURLEncoding.EncodedLen(uploadIDBytes)

// Bounds of the sweep that drops idle uploads.
const (
	maxSweepEvery = time.Minute
	minSweepEvery = 10 * time.Millisecond
)

// refusal is an answer other than 2xx, with its protocol.Error.
type refusal struct {
	status     int
	field      string
	msg        string
	retryAfter time.Duration
}

func (e *refusal) Error() string { return e.msg }

// refuse returns a refusal with status, naming the request's field.
func refuse(status int, field, format string, args ...any) *refusal {
	return &refusal{status: status, field: field, msg: fmt.Sprintf(format, args...)}
}

// later is a 503 refusal with Retry-After.
func later(after time.Duration, format string, args ...any) *refusal {
	r := refuse(http.StatusServiceUnavailable, "", format, args...)
	r.retryAfter = after
	return r
}

// uploadRecord is what upload.json holds.
type uploadRecord struct {
	// Namespace and Computer name the Computer whose upload it is.
	Namespace string `json:"namespace"`
	Computer  string `json:"computer"`
	// WorkID is the captureImage work item, Task its DeploymentTask.
	WorkID string `json:"workID"`
	Task   string `json:"task"`
	// Size is the size the agent announced; 0 when it did not.
	Size int64 `json:"size,omitempty"`
	// Offset is how many bytes data holds.
	Offset int64 `json:"offset"`
	// Hash is the state of the SHA-256 of those bytes
	// (encoding.BinaryMarshaler).
	Hash []byte `json:"hash"`
	// Stored: data went into the store under Digest.
	Stored bool   `json:"stored,omitempty"`
	Digest string `json:"digest,omitempty"`
	// Result is the answer of the PUT that succeeded, for its repeats.
	Result *protocol.UploadResult `json:"result,omitempty"`
	// Updated is when the upload last changed.
	Updated time.Time `json:"updated"`
}

// upload is one upload the service knows.
type upload struct {
	id  string
	dir string
	// busy is held by the request that changes the upload (a PATCH, the
	// PUT, a DELETE, the sweep): one at a time.
	busy chan struct{}

	mu       sync.Mutex
	rec      uploadRecord
	lastUsed time.Time
	gone     bool
}

// acquire waits for the upload to be free, or for ctx; an upload dropped
// meanwhile is not found.
func (u *upload) acquire(ctx context.Context) error {
	select {
	case u.busy <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	u.mu.Lock()
	gone := u.gone
	u.mu.Unlock()
	if gone {
		u.release()
		return refuse(http.StatusNotFound, "", "no upload %q", u.id)
	}
	return nil
}

func (u *upload) release() { <-u.busy }

// record returns a copy of the upload's record.
func (u *upload) record() uploadRecord {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.rec
}

func (u *upload) touch(now time.Time) {
	u.mu.Lock()
	u.lastUsed = now
	u.mu.Unlock()
}

func (u *upload) status() protocol.UploadStatus {
	return protocol.UploadStatus{ID: u.id, Offset: u.record().Offset}
}

// uploads are the capture uploads of one package service.
type uploads struct {
	store  *Store
	server string // this SiteServer
	kube   *uploadKube
	idle   time.Duration
	now    func() time.Time
	log    *slog.Logger
	wg     sync.WaitGroup

	mu   sync.Mutex
	byID map[string]*upload
}

// newUploads returns the uploads of the service of SiteServer server,
// authorized through the API server at rc; nil rc takes no upload. Idle
// uploads are dropped after idle (0: protocol.UploadIdleTimeoutSeconds).
func newUploads(store *Store, server string, rc *rest.Config, idle time.Duration, log *slog.Logger) (*uploads, error) {
	if idle <= 0 {
		idle = protocol.UploadIdleTimeoutSeconds * time.Second
	}
	u := &uploads{store: store, server: server, idle: idle, now: time.Now, log: log, byID: map[string]*upload{}}
	if rc != nil {
		k, err := newUploadKube(rc, server)
		if err != nil {
			return nil, err
		}
		u.kube = k
	}
	return u, nil
}

// register serves the upload routes on mux, each request body bounded as
// the protocol says.
func (us *uploads) register(mux *http.ServeMux) {
	id := protocol.UploadsPath + "/{id}"
	mux.Handle("POST "+protocol.UploadsPath, host.WithLimits(host.Limits{MaxBodyBytes: protocol.MaxUploadRequestBytes},
		http.HandlerFunc(us.create)))
	mux.Handle("PATCH "+id, host.WithLimits(host.Limits{MaxBodyBytes: protocol.MaxUploadChunkBytes},
		http.HandlerFunc(us.patch)))
	mux.HandleFunc("GET "+id, us.get)
	mux.HandleFunc("PUT "+id, us.put)
	mux.HandleFunc("DELETE "+id, us.remove)
}

// start runs the cache and the sweep of idle uploads until ctx is done;
// wait waits for them.
func (us *uploads) start(ctx context.Context) {
	if us.kube != nil {
		us.wg.Go(func() {
			if err := us.kube.run(ctx); err != nil && ctx.Err() == nil {
				us.log.Error("Capture uploads stopped: their cache failed", "error", err)
			}
		})
	}
	us.wg.Go(func() { us.sweepEvery(ctx) })
}

func (us *uploads) wait() { us.wg.Wait() }

// sweepEvery drops the idle uploads, at a quarter of the idle timeout (at
// most a minute) until ctx is done.
func (us *uploads) sweepEvery(ctx context.Context) {
	every := min(max(us.idle/4, minSweepEvery), maxSweepEvery)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		us.sweep()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweep loads the uploads a previous process left, and drops those that
// went without a request for the idle timeout.
func (us *uploads) sweep() {
	entries, err := os.ReadDir(filepath.Join(us.store.dir, uploadsDir))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		us.log.Warn("Listing the capture uploads", "error", err)
	}
	now := us.now()
	for _, e := range entries {
		if validUploadID(e.Name()) && us.lookup(e.Name()) != nil {
			continue // loaded
		}
		// Not an upload, or one whose start a crash cut short.
		if info, err := e.Info(); err == nil && now.Sub(info.ModTime()) >= us.idle {
			path := filepath.Join(us.store.dir, uploadsDir, e.Name())
			us.log.Warn("Removing what is not a capture upload from the uploads", "path", path)
			if err := os.RemoveAll(path); err != nil {
				us.log.Error("Removing what is not a capture upload", "path", path, "error", err)
			}
		}
	}
	us.mu.Lock()
	all := make([]*upload, 0, len(us.byID))
	for _, u := range us.byID {
		all = append(all, u)
	}
	us.mu.Unlock()
	for _, u := range all {
		u.mu.Lock()
		idle := now.Sub(u.lastUsed) >= us.idle
		u.mu.Unlock()
		if !idle {
			continue
		}
		select {
		case u.busy <- struct{}{}: // a request under way is not idle
		default:
			continue
		}
		us.drop(u, "it went without a request for "+us.idle.String())
		u.release()
	}
}

// validUploadID says whether id has the form of an upload ID, so that it
// can name a directory.
func validUploadID(id string) bool {
	if len(id) != uploadIDLength {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil
}

// lookup returns upload id, loaded from the store when this process has
// not seen it; nil when there is none.
func (us *uploads) lookup(id string) *upload {
	if !validUploadID(id) {
		return nil
	}
	us.mu.Lock()
	defer us.mu.Unlock()
	if u := us.byID[id]; u != nil {
		return u
	}
	u, err := us.load(id)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			us.log.Warn("Dropping a capture upload that cannot be resumed", "upload", id, "error", err)
			_ = os.RemoveAll(filepath.Join(us.store.dir, uploadsDir, id))
		}
		return nil
	}
	us.byID[id] = u
	return u
}

// load reads upload id from the store, its data cut back to its record.
func (us *uploads) load(id string) (*upload, error) {
	dir := filepath.Join(us.store.dir, uploadsDir, id)
	data, err := os.ReadFile(filepath.Join(dir, uploadRecordFile))
	if err != nil {
		return nil, err
	}
	var rec uploadRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("reading the record of upload %s: %w", id, err)
	}
	h, err := restoreHash(rec.Hash)
	if err != nil {
		return nil, fmt.Errorf("reading the record of upload %s: %w", id, err)
	}
	if !rec.Stored {
		path := filepath.Join(dir, uploadData)
		info, err := os.Lstat(path)
		sum := algorithm + hex.EncodeToString(h.Sum(nil))
		switch {
		case errors.Is(err, fs.ErrNotExist) && rec.Offset > 0 && us.store.Has(sum):
			// A crash between the move of the data into the store and
			// the record that says so.
			rec.Stored, rec.Digest = true, sum
		case err != nil:
			return nil, fmt.Errorf("reading the data of upload %s: %w", id, err)
		case !info.Mode().IsRegular() || info.Size() < rec.Offset:
			return nil, fmt.Errorf("upload %s: its data holds %d bytes, its record counts %d", id, info.Size(), rec.Offset)
		case info.Size() > rec.Offset:
			if err := os.Truncate(path, rec.Offset); err != nil {
				return nil, fmt.Errorf("cutting upload %s back to its record: %w", id, err)
			}
		}
	}
	us.log.Info("Resuming a capture upload", "upload", id, "computer", rec.Namespace+"/"+rec.Computer, "offset", rec.Offset)
	return &upload{id: id, dir: dir, busy: make(chan struct{}, 1), rec: rec, lastUsed: rec.Updated}, nil
}

// drop removes u from the store and forgets it; the caller holds u.busy.
func (us *uploads) drop(u *upload, why string) {
	u.mu.Lock()
	u.gone = true
	rec := u.rec
	u.mu.Unlock()
	us.mu.Lock()
	if us.byID[u.id] == u {
		delete(us.byID, u.id)
	}
	us.mu.Unlock()
	if err := os.RemoveAll(u.dir); err != nil {
		us.log.Error("Removing a capture upload", "upload", u.id, "error", err)
	}
	us.log.Info("Dropped a capture upload", "upload", u.id, "computer", rec.Namespace+"/"+rec.Computer,
		"workID", rec.WorkID, "reason", why)
}

// save writes rec as u's record, atomically, and makes it u's.
func (us *uploads) save(u *upload, rec uploadRecord) error {
	rec.Updated = us.now()
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(u.dir, uploadRecordFile+".*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("saving upload %s: %w", u.id, err)
	}
	_, err = f.Write(data)
	if err = errors.Join(err, f.Sync(), f.Close()); err == nil {
		err = os.Rename(f.Name(), filepath.Join(u.dir, uploadRecordFile))
	}
	if err == nil {
		err = syncDir(u.dir)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("saving upload %s: %w", u.id, err)
	}
	u.mu.Lock()
	u.rec, u.lastUsed = rec, rec.Updated
	u.mu.Unlock()
	return nil
}

// restoreHash returns a SHA-256 in the state saved, or a new one.
func restoreHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if len(state) == 0 {
		return h, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restoring the hash of the bytes received: %w", err)
	}
	return h, nil
}

func saveHash(h hash.Hash) ([]byte, error) {
	return h.(encoding.BinaryMarshaler).MarshalBinary()
}

// answer writes status and body as JSON.
func answer(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, "encoding the answer failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", protocol.ContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// fail answers err: a refusal as it says, anything else 500 (logged, not
// told).
func (us *uploads) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ref *refusal
	if !errors.As(err, &ref) {
		us.log.Error("Serving a capture upload", "method", r.Method, "path", r.URL.Path, "error", err)
		ref = refuse(http.StatusInternalServerError, "", "the package service failed to handle the upload; see its log")
	}
	switch ref.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="siteops"`)
	case http.StatusServiceUnavailable:
		if ref.retryAfter > 0 {
			w.Header().Set("Retry-After", protocol.RetryAfter(ref.retryAfter))
		}
	}
	answer(w, ref.status, protocol.Error{Error: ref.msg, Field: ref.field})
}

// statusAnswer writes u's status with status: the Location and Range
// headers as OCI has them. A 416 body is the status and an Error at once,
// so that it reads as either.
func statusAnswer(w http.ResponseWriter, status int, st protocol.UploadStatus, why string) {
	h := w.Header()
	h.Set("Location", protocol.UploadPath(st.ID))
	if rg := protocol.ReceivedRange(st.Offset); rg != "" {
		h.Set("Range", rg)
	}
	if why == "" {
		answer(w, status, st)
		return
	}
	answer(w, status, struct {
		protocol.Error
		protocol.UploadStatus
	}{protocol.Error{Error: why, Field: "Content-Range"}, st})
}

// authorize returns the Computer of the request's credential, if this
// service serves its site.
func (us *uploads) authorize(r *http.Request) (*siteopsv1.Computer, error) {
	if us.kube == nil {
		return nil, refuse(http.StatusServiceUnavailable, "", "this package service takes no capture uploads: it reaches no API server")
	}
	if !us.kube.ready() {
		return nil, later(retryCheck, "the package service is starting: retry in %ss", protocol.RetryAfter(retryCheck))
	}
	raw, ok := agentauth.Bearer(r.Header.Get("Authorization"))
	if !ok {
		return nil, refuse(http.StatusUnauthorized, "", "an upload needs the agent's credential: Authorization: Bearer <credential>")
	}
	comp, err := us.kube.authenticate(r.Context(), raw)
	if errors.Is(err, errCannotCheck) {
		us.log.Warn("Postponing a capture upload", "reason", err)
		return nil, later(retryCheck, "the credential cannot be checked now: retry in %ss", protocol.RetryAfter(retryCheck))
	}
	if err != nil {
		us.log.Info("Refusing a capture upload", "reason", err)
		return nil, refuse(http.StatusUnauthorized, "", "the credential is not valid: register again")
	}
	if site, ok := us.kube.serves(comp); !ok {
		return nil, refuse(protocol.StatusRelocate, "", "this package service (SiteServer %s) does not serve the site of Computer %s/%s (%q, from its addresses %q): locate again",
			us.server, comp.Namespace, comp.Name, site, comp.Status.Addresses)
	}
	return comp, nil
}

// owned returns the upload of the request's path if it is comp's; the
// uploads of other computers are not found.
func (us *uploads) owned(r *http.Request, comp *siteopsv1.Computer) (*upload, error) {
	id := r.PathValue("id")
	u := us.lookup(id)
	if u != nil {
		rec := u.record()
		if rec.Namespace == comp.Namespace && rec.Computer == comp.Name {
			u.touch(us.now())
			return u, nil
		}
	}
	return nil, refuse(http.StatusNotFound, "", "no upload %q", id)
}

// create serves POST /v1/uploads.
func (us *uploads) create(w http.ResponseWriter, r *http.Request) {
	comp, err := us.authorize(r)
	if err != nil {
		us.fail(w, r, err)
		return
	}
	var req protocol.UploadRequest
	if err := decodeUploadRequest(r, &req); err != nil {
		us.fail(w, r, err)
		return
	}
	task, err := us.kube.captureTask(r.Context(), comp, req.WorkID)
	if err != nil {
		us.fail(w, r, err)
		return
	}
	if err := us.haveVolume(); err != nil {
		us.fail(w, r, err)
		return
	}
	if req.Size > 0 {
		if err := us.store.checkSpace(req.Size); err != nil {
			us.fail(w, r, noSpace(err))
			return
		}
	}
	us.dropEarlier(comp, req.WorkID)
	u, err := us.open(comp, task, req)
	if err != nil {
		us.fail(w, r, err)
		return
	}
	us.log.Info("Started a capture upload", "upload", u.id, "computer", comp.Namespace+"/"+comp.Name,
		"task", task.Name, "workID", req.WorkID, "size", req.Size)
	statusAnswer(w, http.StatusAccepted, u.status(), "")
}

// decodeUploadRequest reads and checks the POST's body.
func decodeUploadRequest(r *http.Request, req *protocol.UploadRequest) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != protocol.ContentType {
			return refuse(http.StatusUnsupportedMediaType, "", "the body must be %s, not %q", protocol.ContentType, ct)
		}
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return refuse(http.StatusRequestEntityTooLarge, "", "the body is larger than %d bytes", tooBig.Limit)
		}
		return refuse(http.StatusBadRequest, "", "the body is not a JSON UploadRequest: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return refuse(http.StatusBadRequest, "", "the body must hold one JSON object and nothing after it")
	}
	if req.WorkID == "" {
		return refuse(http.StatusBadRequest, "workID", "workID is required: the captureImage work item the upload is for")
	}
	if req.Size < 0 {
		return refuse(http.StatusBadRequest, "size", "size must be the image's size in bytes, or 0 when unknown, not %d", req.Size)
	}
	return nil
}

// haveVolume refuses uploads while the store's directory is missing: they
// must not go to the container's own file system.
func (us *uploads) haveVolume() error {
	if info, err := os.Stat(us.store.dir); err != nil || !info.IsDir() {
		us.log.Warn("Refusing a capture upload: the content store is missing", "error", err)
		return later(time.Minute, "the content store's volume is missing")
	}
	return nil
}

// noSpace is the 507 refusal of an upload the store has no room for.
func noSpace(err error) error {
	if !errors.Is(err, ErrNoSpace) {
		return err
	}
	return refuse(http.StatusInsufficientStorage, "size", "the package service has no room for this upload: %v", err)
}

// dropEarlier drops the unfinished uploads of comp for workID: an agent
// that starts over does not come back to them.
func (us *uploads) dropEarlier(comp *siteopsv1.Computer, workID string) {
	us.mu.Lock()
	var earlier []*upload
	for _, u := range us.byID {
		rec := u.record()
		if rec.Namespace == comp.Namespace && rec.Computer == comp.Name && rec.WorkID == workID && rec.Result == nil {
			earlier = append(earlier, u)
		}
	}
	us.mu.Unlock()
	for _, u := range earlier {
		select {
		case u.busy <- struct{}{}:
			us.drop(u, "the agent started the upload of its work item again")
			u.release()
		default: // a request still writes it: the sweep gets it
		}
	}
}

// open makes a new upload of comp for task.
func (us *uploads) open(comp *siteopsv1.Computer, task *siteopsv1.DeploymentTask, req protocol.UploadRequest) (*upload, error) {
	raw := make([]byte, uploadIDBytes)
	_, _ = rand.Read(raw) // never fails (crypto/rand)
	id := base64.RawURLEncoding.EncodeToString(raw)
	dir := filepath.Join(us.store.dir, uploadsDir, id)
	if err := os.MkdirAll(dir, storeDirMode); err != nil {
		return nil, fmt.Errorf("starting an upload: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, uploadData), os.O_WRONLY|os.O_CREATE|os.O_EXCL|openFlags, contentMode)
	if err == nil {
		err = f.Close()
	}
	state, herr := saveHash(sha256.New())
	u := &upload{id: id, dir: dir, busy: make(chan struct{}, 1)}
	if err = errors.Join(err, herr); err == nil {
		err = us.save(u, uploadRecord{Namespace: comp.Namespace, Computer: comp.Name, WorkID: req.WorkID,
			Task: task.Name, Size: req.Size, Hash: state})
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("starting an upload: %w", err)
	}
	us.mu.Lock()
	us.byID[id] = u
	us.mu.Unlock()
	return u, nil
}

// get serves GET /v1/uploads/{id}: what the service holds.
func (us *uploads) get(w http.ResponseWriter, r *http.Request) {
	comp, err := us.authorize(r)
	if err == nil {
		var u *upload
		if u, err = us.owned(r, comp); err == nil {
			statusAnswer(w, http.StatusOK, u.status(), "")
			return
		}
	}
	us.fail(w, r, err)
}

// take authorizes r, finds the caller's upload it names, runs check (the
// request's own checks, nil for none) and acquires the upload: the caller
// releases it.
func (us *uploads) take(r *http.Request, check func() error) (*upload, *siteopsv1.Computer, error) {
	comp, err := us.authorize(r)
	var u *upload
	if err == nil {
		u, err = us.owned(r, comp)
	}
	if err == nil && check != nil {
		err = check()
	}
	if err == nil {
		err = u.acquire(r.Context())
	}
	return u, comp, err
}

// remove serves DELETE /v1/uploads/{id}.
func (us *uploads) remove(w http.ResponseWriter, r *http.Request) {
	u, _, err := us.take(r, nil)
	if err != nil {
		us.fail(w, r, err)
		return
	}
	defer u.release()
	us.drop(u, "the agent deleted it")
	w.WriteHeader(http.StatusNoContent)
}

// chunkOf checks a PATCH's Content-Range and Content-Length: the offset
// of the chunk and its length.
func chunkOf(contentRange string, contentLength int64) (first, n int64, err error) {
	if contentRange == "" {
		return 0, 0, refuse(http.StatusBadRequest, "Content-Range", "a chunk needs Content-Range: <first>-<last>, the byte offsets it covers")
	}
	first, last, err := protocol.ParseContentRange(contentRange)
	if err != nil {
		return 0, 0, refuse(http.StatusBadRequest, "Content-Range", "%v", err)
	}
	n = last - first + 1
	if n > protocol.MaxUploadChunkBytes {
		return 0, 0, refuse(http.StatusRequestEntityTooLarge, "Content-Range", "a chunk holds at most %d bytes, not %d", protocol.MaxUploadChunkBytes, n)
	}
	if contentLength >= 0 && contentLength != n {
		return 0, 0, refuse(http.StatusBadRequest, "Content-Length", "Content-Length %d does not match Content-Range %s (%d bytes)", contentLength, contentRange, n)
	}
	return first, n, nil
}

// patch serves PATCH /v1/uploads/{id}: a chunk that starts where the bytes
// received end.
func (us *uploads) patch(w http.ResponseWriter, r *http.Request) {
	var first, n int64
	u, _, err := us.take(r, func() (err error) {
		first, n, err = chunkOf(r.Header.Get("Content-Range"), r.ContentLength)
		return err
	})
	if err != nil {
		us.fail(w, r, err)
		return
	}
	defer u.release()
	rec := u.record()
	switch {
	case rec.Stored || rec.Result != nil:
		us.fail(w, r, refuse(http.StatusConflict, "", "upload %s is complete: it takes no more chunks", u.id))
		return
	case first != rec.Offset:
		statusAnswer(w, http.StatusRequestedRangeNotSatisfiable, u.status(),
			fmt.Sprintf("the chunk starts at byte %d, the upload holds %d: send from byte %d", first, rec.Offset, rec.Offset))
		return
	case rec.Size > 0 && first+n > rec.Size:
		us.fail(w, r, refuse(http.StatusBadRequest, "Content-Range", "the chunk ends at byte %d, past the %d bytes the upload announced", first+n-1, rec.Size))
		return
	}
	if err := us.append(r.Context(), u, rec, r.Body, n); err != nil {
		us.fail(w, r, err)
		return
	}
	statusAnswer(w, http.StatusAccepted, u.status(), "")
}

// append writes the chunk of n bytes from body after rec's bytes, hashing
// it, and saves the record that counts it; on any failure nothing of the
// chunk is kept. The caller holds u.busy.
func (us *uploads) append(ctx context.Context, u *upload, rec uploadRecord, body io.Reader, n int64) error {
	h, err := restoreHash(rec.Hash)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(u.dir, uploadData), os.O_WRONLY|openFlags, 0)
	if err != nil {
		return fmt.Errorf("opening upload %s: %w", u.id, err)
	}
	defer f.Close()
	keep := false
	defer func() {
		if !keep {
			if err := f.Truncate(rec.Offset); err != nil {
				us.log.Error("Cutting a refused chunk from a capture upload", "upload", u.id, "error", err)
			}
		}
	}()
	// A chunk that failed in this process was cut already; this makes sure.
	if err := f.Truncate(rec.Offset); err != nil {
		return fmt.Errorf("writing upload %s: %w", u.id, err)
	}
	if _, err := f.Seek(rec.Offset, io.SeekStart); err != nil {
		return fmt.Errorf("writing upload %s: %w", u.id, err)
	}
	got, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, io.LimitReader(body, n+1)})
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return refuse(http.StatusRequestEntityTooLarge, "", "a chunk holds at most %d bytes", tooBig.Limit)
	case errors.Is(err, syscall.ENOSPC):
		return refuse(http.StatusInsufficientStorage, "", "the package service's store filled up: the chunk is not kept")
	case err != nil:
		return refuse(http.StatusBadRequest, "", "the chunk was cut after %d of its %d bytes (%v): nothing of it is kept; send it again", got, n, err)
	case got != n:
		return refuse(http.StatusBadRequest, "Content-Range", "the body holds %s bytes, Content-Range announced %d: nothing of it is kept", sizeText(got, n), n)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing upload %s: %w", u.id, err)
	}
	state, err := saveHash(h)
	if err != nil {
		return err
	}
	rec.Offset, rec.Hash = rec.Offset+n, state
	if err := us.save(u, rec); err != nil {
		return err
	}
	keep = true
	return nil
}

// sizeText is got, or "more than n" when the body was longer.
func sizeText(got, n int64) string {
	if got > n {
		return "more than " + strconv.FormatInt(n, 10)
	}
	return strconv.FormatInt(got, 10)
}

// put serves PUT /v1/uploads/{id}?digest=: the end of the upload.
func (us *uploads) put(w http.ResponseWriter, r *http.Request) {
	digest := r.URL.Query().Get(protocol.QueryDigest)
	u, comp, err := us.take(r, func() error {
		if _, err := parseDigest(digest); err != nil {
			return refuse(http.StatusBadRequest, protocol.QueryDigest, "%v", err)
		}
		return nil
	})
	if err != nil {
		us.fail(w, r, err)
		return
	}
	defer u.release()
	result, err := us.finish(r.Context(), u, comp, digest)
	if err != nil {
		us.fail(w, r, err)
		return
	}
	w.Header().Set("Location", protocol.ContentPath(result.Digest))
	answer(w, http.StatusCreated, result)
}

// finish checks the digest of the bytes received, stores them and creates
// the Package; a repeat after success returns the same result. The caller
// holds u.busy.
func (us *uploads) finish(ctx context.Context, u *upload, comp *siteopsv1.Computer, digest string) (*protocol.UploadResult, error) {
	rec := u.record()
	if rec.Result != nil {
		if rec.Result.Digest != digest {
			return nil, refuse(http.StatusBadRequest, protocol.QueryDigest, "upload %s was completed as %s, not %s", u.id, rec.Result.Digest, digest)
		}
		return rec.Result, nil
	}
	switch {
	case rec.Offset == 0:
		return nil, refuse(http.StatusBadRequest, "", "upload %s holds no byte: send the image with PATCH first", u.id)
	case rec.Size > 0 && rec.Offset != rec.Size:
		return nil, refuse(http.StatusBadRequest, "", "upload %s holds %d bytes of the %d announced: send the rest from byte %d", u.id, rec.Offset, rec.Size, rec.Offset)
	}
	if !rec.Stored {
		h, err := restoreHash(rec.Hash)
		if err != nil {
			return nil, err
		}
		if got := algorithm + hex.EncodeToString(h.Sum(nil)); got != digest {
			us.drop(u, "its bytes do not match the digest the agent sent")
			return nil, refuse(http.StatusBadRequest, protocol.QueryDigest, "the %d bytes received are %s, not %s: the upload is dropped", rec.Offset, got, digest)
		}
	} else if rec.Digest != digest {
		return nil, refuse(http.StatusBadRequest, protocol.QueryDigest, "the %d bytes received are %s, not %s", rec.Offset, rec.Digest, digest)
	}
	task, err := us.kube.captureTask(ctx, comp, rec.WorkID)
	if err != nil {
		return nil, err
	}
	want := capturedPackage(us.server, comp, task, task.Spec.Action.CaptureImage.PackageName, digest, rec.Offset)
	key := types.NamespacedName{Namespace: want.Namespace, Name: want.Name}
	existing, err := us.kube.existingPackage(ctx, key)
	if err != nil {
		return nil, later(retryCheck, "the Package cannot be checked now (%v): retry in %ss", err, protocol.RetryAfter(retryCheck))
	}
	if existing != nil && !holds(existing, digest, rec.Offset) {
		us.drop(u, "its Package exists with other content")
		return nil, conflict(existing)
	}
	if !rec.Stored {
		data := filepath.Join(u.dir, uploadData)
		if err := us.store.adopt(ctx, digest, rec.Offset, data); err != nil {
			if _, serr := os.Lstat(data); serr != nil {
				us.drop(u, "its content could not be stored")
			}
			return nil, err
		}
		rec.Stored, rec.Digest = true, digest
		if err := us.save(u, rec); err != nil {
			return nil, err
		}
	} else if !us.store.Has(digest) {
		us.drop(u, "its content left the store before its Package was made")
		return nil, refuse(http.StatusGone, "", "the content of upload %s left the store before its Package was made: upload it again", u.id)
	}
	if existing == nil {
		if err := us.kube.createPackage(ctx, want); err != nil {
			var ref *refusal
			if errors.As(err, &ref) && ref.status == http.StatusConflict {
				us.drop(u, "its Package exists with other content")
				return nil, err
			}
			if ref != nil {
				return nil, err
			}
			us.log.Warn("Creating the Package of a capture", "package", key.String(), "error", err)
			return nil, later(retryCheck, "the Package cannot be created now: retry in %ss", protocol.RetryAfter(retryCheck))
		}
		us.log.Info("Created the Package of a capture", "package", key.String(), "digest", digest, "size", rec.Offset,
			"computer", comp.Namespace+"/"+comp.Name, "task", task.Name)
	}
	rec.Result = &protocol.UploadResult{Package: key.String(), Digest: digest, Size: rec.Offset}
	if err := us.save(u, rec); err != nil {
		return nil, err
	}
	return rec.Result, nil
}

// adopt moves the data file of an upload, size bytes whose SHA-256 the
// upload computed to be digest as they came in, into the store by the
// install step of Ingest and Resume: one transfer per digest at a time,
// content already stored not stored again, the size checked on the file,
// synced and renamed into place. path is removed either way.
func (s *Store) adopt(ctx context.Context, digest string, size int64, path string) error {
	h, unlock, err := s.beginTransfer(ctx, digest)
	if err != nil {
		return err
	}
	defer unlock()
	if s.Has(digest) {
		_ = os.Remove(path)
		return nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|openFlags, 0)
	if err != nil {
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	info, err := f.Stat()
	if err == nil && (!info.Mode().IsRegular() || info.Size() != size) {
		err = fmt.Errorf("%w: the upload's file holds %d bytes, not %d", ErrMismatch, info.Size(), size)
	}
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("storing content %s: %w", digest, err)
	}
	return s.install(h, f, size)
}
