package protocol

import (
	"fmt"
	"strconv"
	"strings"
)

// ContentPathPrefix is the package service's content endpoint: GET
// ContentPath(digest) with Range, as often as needed, from any package
// endpoint of the agent's site. The agent verifies the digest before it
// uses the content.
const ContentPathPrefix = "/v1/content/"

// ContentPath is the path of the content of digest ("sha256:<hex>").
func ContentPath(digest string) string { return ContentPathPrefix + digest }

// The package service's capture upload, resumable as in the OCI
// distribution upload flow, with the agent's credential
// ("Authorization: Bearer <credential>") on every request. The service
// accepts it only from an agent of a site it serves, for a captureImage
// work item handed to that agent.
//
//  1. POST UploadsPath with an UploadRequest: 202 Accepted, Location the
//     upload's path (UploadPath(id)) and an UploadStatus body.
//  2. PATCH UploadPath(id) with a chunk: "Content-Range: <first>-<last>"
//     (byte offsets of the chunk, inclusive, no unit, as OCI has it) and
//     the chunk as the body, at most MaxUploadChunkBytes. The chunk must
//     start where the received bytes end: 202 Accepted and the new
//     UploadStatus. A chunk that starts elsewhere (a gap, or bytes already
//     received) is refused with 416 and the UploadStatus, which says where
//     to go on from; nothing is written.
//  3. GET UploadPath(id): 200 and the UploadStatus, so that an agent that
//     lost an answer or restarted knows what the service holds.
//  4. PUT UploadPath(id)?digest=sha256:<hex>: the service checks the
//     digest of every byte received, stores the content and creates the
//     Package: 201 Created and an UploadResult. A digest that does not
//     match fails with 400 and drops the upload. A PUT sent again after a
//     lost answer gets the same UploadResult.
//  5. DELETE UploadPath(id) drops an upload. The service drops an upload
//     by itself after UploadIdleTimeoutSeconds without a request.
//
// Every answer but 2xx carries an Error body. The Range header of a 202
// or 416 answer is "0-<last received offset>" (OCI's form), absent when
// nothing was received.
const (
	// UploadsPath starts an upload.
	UploadsPath = "/v1/uploads"
	// MaxUploadChunkBytes bounds one PATCH body.
	MaxUploadChunkBytes = 64 << 20
	// MaxUploadRequestBytes bounds the body of the POST.
	MaxUploadRequestBytes = 4 << 10
	// UploadIdleTimeoutSeconds is how long an upload lives without a
	// request.
	UploadIdleTimeoutSeconds = 24 * 60 * 60
	// QueryDigest is the PUT's query parameter.
	QueryDigest = "digest"
)

// UploadPath is the path of upload id.
func UploadPath(id string) string { return UploadsPath + "/" + id }

// UploadRequest starts the upload of a capture.
type UploadRequest struct {
	// WorkID is the captureImage work item the upload is for: its task
	// names the Package the upload becomes.
	WorkID string `json:"workID"`
	// Size is the size of the image in bytes, when the agent knows it: the
	// service refuses at once an upload it has no room for.
	Size int64 `json:"size,omitempty"`
}

// UploadStatus is what the service holds of an upload.
type UploadStatus struct {
	// ID names the upload (UploadPath(ID)).
	ID string `json:"id"`
	// Offset is how many bytes the service holds: the next chunk starts
	// there.
	Offset int64 `json:"offset"`
}

// UploadResult is the Package an upload became.
type UploadResult struct {
	// Package is the Package, "<namespace>/<name>".
	Package string `json:"package"`
	// Digest and Size are the content's.
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// ContentRange is the value of a PATCH's Content-Range header for the
// chunk of n bytes at offset (n > 0).
func ContentRange(offset, n int64) string {
	return strconv.FormatInt(offset, 10) + "-" + strconv.FormatInt(offset+n-1, 10)
}

// ParseContentRange reads a PATCH's Content-Range header: the chunk's first
// and last offsets, inclusive. "bytes " before the offsets and "/<total>"
// or "/*" after them are accepted too.
func ParseContentRange(v string) (first, last int64, err error) {
	s := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), "bytes "))
	s, _, _ = strings.Cut(s, "/")
	a, b, ok := strings.Cut(s, "-")
	if ok {
		first, err = strconv.ParseInt(a, 10, 64)
	}
	if ok && err == nil {
		last, err = strconv.ParseInt(b, 10, 64)
	}
	if !ok || err != nil || first < 0 || last < first {
		return 0, 0, fmt.Errorf("Content-Range %q must be <first>-<last>, byte offsets with first <= last", v)
	}
	return first, last, nil
}

// ReceivedRange is the value of the Range header of an upload answer for
// offset bytes received; "" when none were.
func ReceivedRange(offset int64) string {
	if offset <= 0 {
		return ""
	}
	return "0-" + strconv.FormatInt(offset-1, 10)
}
