package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// captureImage reads the disk, hashes it in one pass, and uploads it to a
// package endpoint of the agent's site, which makes it the Package the item
// names.
func (a *Agent) captureImage(ctx context.Context, item protocol.WorkItem, started time.Time) (protocol.WorkStatus, bool) {
	ci := item.Action.CaptureImage
	if a.cfg.Disk == "" {
		return failedStatus(item, started, protocol.ReasonDiskFailed, errNoDisk), false
	}
	timeout := actionTimeout(ci.TimeoutSeconds)
	cctx, cancel := context.WithDeadline(ctx, started.Add(timeout))
	defer cancel()
	disk, size, err := openDisk(a.cfg.Disk, os.O_RDONLY)
	if err != nil {
		return failedStatus(item, started, protocol.ReasonDiskFailed, err.Error()), false
	}
	defer func() { _ = disk.Close() }()
	a.log.Info("Reading the disk for its digest", "id", item.ID, "disk", a.cfg.Disk, "size", size, "packageName", ci.PackageName)
	h := sha256.New()
	n, err := copyContext(cctx, h, io.NewSectionReader(disk, 0, size))
	switch {
	case ctx.Err() != nil:
		return protocol.WorkStatus{}, true
	case cctx.Err() != nil:
		return failedStatus(item, started, protocol.ReasonTimedOut, fmt.Sprintf(
			"the timeout of %s passed while the disk %s was read for its digest (%d of %d bytes)", timeout, a.cfg.Disk, n, size)), false
	case err != nil:
		return failedStatus(item, started, protocol.ReasonDiskFailed, fmt.Sprintf("reading the disk %s at byte %d: %v", a.cfg.Disk, n, err)), false
	case n != size:
		return failedStatus(item, started, protocol.ReasonDiskFailed, fmt.Sprintf("the disk %s ended at byte %d of %d", a.cfg.Disk, n, size)), false
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	a.log.Info("Uploading the capture", "id", item.ID, "digest", digest, "size", size, "packageName", ci.PackageName)
	chunk := min(max(a.t.uploadChunk, 1), protocol.MaxUploadChunkBytes, max(size, 1))
	u := &uploader{a: a, item: item, disk: disk, size: size, digest: digest, buf: make([]byte, chunk), tried: newTriedList()}
	res, err := u.run(cctx)
	var de *diskError
	switch {
	case ctx.Err() != nil:
		return protocol.WorkStatus{}, true
	case errors.As(err, &de):
		return failedStatus(item, started, protocol.ReasonDiskFailed, de.Error()), false
	case cctx.Err() != nil:
		return failedStatus(item, started, protocol.ReasonUploadFailed, fmt.Sprintf(
			"the capture (%s, %d bytes) was not uploaded within the timeout of %s: %s", shortDigest(digest), size, timeout, u.tried)), false
	case err != nil:
		return failedStatus(item, started, protocol.ReasonUploadFailed, err.Error()), false
	}
	finished := time.Now().UTC()
	return protocol.WorkStatus{Attempt: item.Attempt, State: protocol.WorkSucceeded, Started: &started, Finished: &finished,
		Message: truncateMessage(fmt.Sprintf("captured into Package %s (%s, %d bytes)", res.Package, res.Digest, res.Size))}, false
}

// diskError is a failure to read the disk during an upload.
type diskError struct{ err error }

func (e *diskError) Error() string { return e.err.Error() }

// refusedError is an upload the package service refused for good: trying
// again, or elsewhere, would not help.
type refusedError struct{ err error }

func (e *refusedError) Error() string { return e.err.Error() }
func (e *refusedError) Unwrap() error { return e.err }

// maxUploadRestarts is how many times an upload that its package service
// lost (404) is started again on the same endpoint before the endpoint
// counts as failed.
const maxUploadRestarts = 3

// uploader uploads a capture: the protocol's resumable upload (see
// protocol.UploadsPath), over the package endpoints of the agent's site.
type uploader struct {
	a      *Agent
	item   protocol.WorkItem
	disk   *os.File
	size   int64
	digest string
	// buf holds a chunk.
	buf []byte
	// credential is the one the current upload uses.
	credential string
	// tried is what failed, for the message of a failed capture.
	tried *triedList
}

// run uploads the capture until a package service made it a Package, the
// upload was refused for good, or ctx ended. An endpoint that fails (a
// transport error, a 5xx that asking the upload's status does not get
// past) is left for the next one, with a new upload; once every endpoint
// failed, the round starts again after a back-off, with the package
// endpoints as the agent knows them then. A 401 hands the credential to
// the loop (as a refused check-in) and goes on with the next one; a 421
// asks the loop to locate again.
func (u *uploader) run(ctx context.Context) (protocol.UploadResult, error) {
	a := u.a
	retry := backoff{base: a.t.uploadBase, max: a.t.uploadMax}
	var asked time.Duration
	for round := 0; ; round++ {
		if round > 0 && !sleep(ctx, max(retry.next(), jitter(asked, a.t.retryJitter, nil))) {
			return protocol.UploadResult{}, ctx.Err()
		}
		asked = 0
		endpoints := a.packageEndpointList()
		if len(endpoints) == 0 {
			u.tried.note("", "the locate answer gave no package endpoint")
			a.log.Warn("No package endpoint to upload the capture to: waiting for one", "id", u.item.ID)
			continue
		}
	endpoints:
		for _, ep := range endpoints {
			for {
				res, err := u.uploadTo(ctx, ep)
				if err == nil {
					return res, nil
				}
				if ctx.Err() != nil {
					return protocol.UploadResult{}, ctx.Err()
				}
				var de *diskError
				var re *refusedError
				if errors.As(err, &de) || errors.As(err, &re) {
					return protocol.UploadResult{}, err
				}
				u.tried.note(ep, errorText(err))
				switch code := statusOf(err); {
				case code == http.StatusUnauthorized:
					refused := u.credential
					a.reportRefused(refused)
					a.log.Warn("The credential was refused for an upload: going on with the agent's next one", "id", u.item.ID, "endpoint", ep)
					if _, ok := a.awaitOtherCredential(ctx, refused); !ok {
						return protocol.UploadResult{}, ctx.Err()
					}
					continue // the same endpoint, with the new credential
				case code == protocol.StatusRelocate:
					a.askRelocate()
					a.log.Info("The package service does not serve this agent: locating again before the next round", "id", u.item.ID, "endpoint", ep)
					break endpoints
				case isRefusal(code):
					return protocol.UploadResult{}, fmt.Errorf("the package service %s refused the capture: %w", ep, err)
				}
				asked = max(asked, retryAfterOf(err))
				a.log.Warn("Uploading the capture failed: trying the next package endpoint", "id", u.item.ID, "endpoint", ep, "error", err)
				continue endpoints
			}
		}
	}
}

// isRefusal says whether an upload's answer refuses it for good: a 4xx
// other than those that ask to retry, to go elsewhere (404 or 405: a
// service without uploads; 413: no room there), or to authenticate or
// locate again.
func isRefusal(code int) bool {
	switch code {
	case http.StatusUnauthorized, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusRequestTimeout,
		http.StatusRequestEntityTooLarge, http.StatusTooManyRequests, protocol.StatusRelocate:
		return false
	}
	return code >= 400 && code < 500
}

// retryable says whether a failed request is worth asking the upload's
// status and going on at the same endpoint: a transport error, a 5xx, 408
// or 429.
func retryable(err error) bool {
	code := statusOf(err)
	return code == 0 || code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// uploadTo uploads the capture to one endpoint: a new upload, its chunks
// from where the service's offset says, then the digest. A chunk refused
// with 416 goes on from the service's offset; after a failed request the
// upload's status is asked (uploadTries times, with a back-off) and the
// upload goes on from there, or the endpoint has failed; an upload the
// service lost (404) is started again.
func (u *uploader) uploadTo(ctx context.Context, ep string) (protocol.UploadResult, error) {
	a := u.a
	_, credential, ok := a.awaitLink(ctx)
	if !ok {
		return protocol.UploadResult{}, ctx.Err()
	}
	u.credential = credential
	st, err := u.start(ctx, ep)
	if err != nil {
		return protocol.UploadResult{}, err
	}
	restarts := 0
	restart := func(why error) error {
		restarts++
		if restarts > maxUploadRestarts {
			return fmt.Errorf("the upload was lost %d times: %w", restarts, why)
		}
		a.log.Warn("The package service lost the upload: starting it again", "id", u.item.ID, "endpoint", ep, "upload", st.ID, "error", why)
		again, err := u.start(ctx, ep)
		if err != nil {
			return err
		}
		st = again
		return nil
	}
	for {
		if st.Offset < 0 || st.Offset > u.size {
			return protocol.UploadResult{}, fmt.Errorf("the package service holds %d bytes of an upload of %d", st.Offset, u.size)
		}
		if st.Offset == u.size {
			res, err := u.finish(ctx, ep, st.ID)
			if statusOf(err) == http.StatusNotFound {
				if err := restart(err); err != nil {
					return protocol.UploadResult{}, err
				}
				continue
			}
			return res, err
		}
		offset := st.Offset
		n := min(int64(len(u.buf)), u.size-offset)
		if _, err := u.disk.ReadAt(u.buf[:n], offset); err != nil {
			return protocol.UploadResult{}, &diskError{fmt.Errorf("reading the disk %s at byte %d: %w", a.cfg.Disk, offset, err)}
		}
		next, err := u.patch(ctx, ep, st.ID, offset, u.buf[:n])
		switch code := statusOf(err); {
		case err == nil:
			st = next
		case code == http.StatusRequestedRangeNotSatisfiable:
			a.log.Info("The package service holds other bytes than the chunk's start: going on from its offset", "id", u.item.ID,
				"endpoint", ep, "upload", st.ID, "sent", offset, "offset", next.Offset)
			st = next
		case code == http.StatusNotFound:
			if err := restart(err); err != nil {
				return protocol.UploadResult{}, err
			}
		case retryable(err) && ctx.Err() == nil:
			a.log.Warn("Sending a chunk failed: asking the package service what it holds", "id", u.item.ID, "endpoint", ep,
				"upload", st.ID, "offset", offset, "error", err)
			got, err := u.status(ctx, ep, st.ID, err)
			if statusOf(err) == http.StatusNotFound {
				if err := restart(err); err != nil {
					return protocol.UploadResult{}, err
				}
				continue
			}
			if err != nil {
				return protocol.UploadResult{}, err
			}
			st = got
		default:
			return protocol.UploadResult{}, err
		}
	}
}

// start starts an upload at ep.
func (u *uploader) start(ctx context.Context, ep string) (protocol.UploadStatus, error) {
	var st protocol.UploadStatus
	err := u.call(ctx, ep, http.MethodPost, protocol.UploadsPath, callBody{json: protocol.UploadRequest{WorkID: u.item.ID, Size: u.size}},
		http.StatusAccepted, &st)
	if err == nil && st.ID == "" {
		err = errors.New("the package service started an upload without an ID")
	}
	if err == nil {
		u.a.log.Info("Started an upload", "id", u.item.ID, "endpoint", ep, "upload", st.ID, "offset", st.Offset)
	}
	return st, err
}

// patch sends chunk, the bytes from offset. A 416 answer's UploadStatus is
// returned with its error.
func (u *uploader) patch(ctx context.Context, ep, id string, offset int64, chunk []byte) (protocol.UploadStatus, error) {
	var st protocol.UploadStatus
	err := u.call(ctx, ep, http.MethodPatch, protocol.UploadPath(url.PathEscape(id)),
		callBody{chunk: chunk, contentRange: protocol.ContentRange(offset, int64(len(chunk)))}, http.StatusAccepted, &st)
	return st, err
}

// status asks what the service holds of upload id after a request failed
// with failed, retrying with a back-off; past uploadTries failures, the
// endpoint has failed.
func (u *uploader) status(ctx context.Context, ep, id string, failed error) (protocol.UploadStatus, error) {
	a := u.a
	retry := backoff{base: a.t.uploadBase, max: a.t.uploadMax}
	err := failed
	for try := 1; ; try++ {
		if !sleep(ctx, max(retry.next(), jitter(retryAfterOf(err), a.t.retryJitter, nil))) {
			return protocol.UploadStatus{}, ctx.Err()
		}
		var st protocol.UploadStatus
		err = u.call(ctx, ep, http.MethodGet, protocol.UploadPath(url.PathEscape(id)), callBody{}, http.StatusOK, &st)
		if err == nil {
			return st, nil
		}
		if !retryable(err) || try >= a.t.uploadTries {
			return protocol.UploadStatus{}, err
		}
	}
}

// finish ends upload id with the capture's digest: the service makes it a
// Package. A failed request is sent again (the service answers a repeated
// PUT with the same result), uploadTries times.
func (u *uploader) finish(ctx context.Context, ep, id string) (protocol.UploadResult, error) {
	a := u.a
	retry := backoff{base: a.t.uploadBase, max: a.t.uploadMax}
	path := protocol.UploadPath(url.PathEscape(id)) + "?" + url.Values{protocol.QueryDigest: {u.digest}}.Encode()
	for try := 1; ; try++ {
		var res protocol.UploadResult
		err := u.call(ctx, ep, http.MethodPut, path, callBody{}, http.StatusCreated, &res)
		if err == nil {
			if res.Digest != u.digest || res.Size != u.size {
				return res, &refusedError{fmt.Errorf("the package service %s made a Package of %s, %d bytes, from a capture of %s, %d bytes",
					ep, res.Digest, res.Size, u.digest, u.size)}
			}
			return res, nil
		}
		if code := statusOf(err); code == http.StatusBadRequest {
			return res, &refusedError{fmt.Errorf("the package service %s refused the capture's digest %s (did the disk change while it was read?): %w",
				ep, shortDigest(u.digest), err)}
		}
		if !retryable(err) || try >= a.t.uploadTries {
			return res, err
		}
		a.log.Warn("Finishing the upload failed: sending it again", "id", u.item.ID, "endpoint", ep, "upload", id, "error", err)
		if !sleep(ctx, max(retry.next(), jitter(retryAfterOf(err), a.t.retryJitter, nil))) {
			return res, ctx.Err()
		}
	}
}

// callBody is what an upload request sends: a JSON body, or a chunk with
// its Content-Range, or nothing.
type callBody struct {
	json         any
	chunk        []byte
	contentRange string
}

// call sends an upload request with the credential and decodes the JSON
// of an answer with status want (or 416, whose UploadStatus comes with its
// error) into out. A request that moves no byte for stallTimeout is given
// up; the PUT, for which the service reads every byte received again, may
// take longer (a second per 64 MiB beyond that).
func (u *uploader) call(ctx context.Context, ep, method, path string, b callBody, want int, out any) error {
	a := u.a
	op := method + " " + path
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stall := a.t.stallTimeout
	if method == http.MethodPut {
		stall += time.Duration(u.size/(64<<20)) * time.Second
	}
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	var body io.Reader
	var length int64
	switch {
	case b.json != nil:
		data, err := json.Marshal(b.json)
		if err != nil {
			return fmt.Errorf("%s: encoding the request: %w", op, err)
		}
		body, length = bytes.NewReader(data), int64(len(data))
	case b.chunk != nil:
		// Each read of the chunk shows that bytes move.
		body, length = &progressReader{r: bytes.NewReader(b.chunk), watchdog: watchdog, d: stall}, int64(len(b.chunk))
	}
	req, err := http.NewRequestWithContext(ctx, method, joinURL(ep, path), body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.ContentLength = length
	if b.chunk != nil {
		chunk := b.chunk
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(chunk)), nil }
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", b.contentRange)
	} else if b.json != nil {
		req.Header.Set("Content-Type", protocol.ContentType)
	}
	req.Header.Set("Accept", protocol.ContentType)
	req.Header.Set("User-Agent", a.client.userAgent)
	req.Header.Set("Authorization", "Bearer "+u.credential)
	resp, err := a.client.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, causeOf(ctx, err))
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != want && resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		return readStatusError(op, resp, a.client.secondUnit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", op, causeOf(ctx, err))
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	if resp.StatusCode != want {
		return &statusError{op: op, code: resp.StatusCode}
	}
	return nil
}

// progressReader resets a watchdog at each read.
type progressReader struct {
	r        io.Reader
	watchdog *time.Timer
	d        time.Duration
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.watchdog.Reset(p.d)
	}
	return n, err
}
