// Package agent is the agent that runs on a managed computer: it locates
// its site's servers, registers with a bootstrap token, and checks in with
// the task service of its site for work (ARCHITECTURE.md §3, "Agent
// protocol"). A simulation mode (Simulate) runs thousands of agents in one
// process for load tests.
//
// An agent talks HTTPS only and trusts only the CA bundle it is given,
// never the system roots. Its bundle file (--ca-file, Config.CAFile) is
// reread when it changes, at a new connection and at most once a second,
// so a bundle rewritten with the operator's next CA is trusted without a
// restart (docs/tls.md, the CA's rotation). Its loop, one goroutine per
// agent:
//
//   - Locate: POST the agent's addresses to a locator (several may be
//     given, tried in turn) and receive its site's task endpoints and
//     package endpoints, in the order to try them. None: wait
//     RetryAfterSeconds and locate again. The package endpoints (HTTPS
//     ones only) are kept for the content actions: they are the package
//     services of the servers that serve the agent, never another site's.
//   - Register (when it has no credential): POST to the current task
//     endpoint with the bootstrap token, a fresh random request ID per
//     attempt, and the computer's identity (host name, hardware ID, MAC
//     addresses, addresses). The credential and identity are kept in the
//     state directory (the credential with mode 0600).
//   - Check in: GET the work with the credential, a long poll of Wait; then
//     wait what the answer says (NextCheckInMillis) and check in again.
//   - Work: the agent carries out one work item at a time, in the
//     background while it keeps checking in with busy=<ID> (the service
//     then hands nothing else). It takes the first item of an answer that
//     it has not carried out (the last 64 IDs are kept in DoneFile) and
//     is not carrying out; an ID is never run twice. It writes the item
//     to WorkFile (0600, synced, renamed into place) before it starts,
//     sends a Running report (at best), carries it out, keeps the result
//     in WorkFile and sends it until the service answers: 200 records it
//     (the ID goes to DoneFile, WorkFile is removed); 409, 404 and other
//     4xx refuse it for good (logged, dropped); 401 is a refused
//     credential, as for a check-in; a transport error, 5xx, 421 or 429
//     is retried with the back-off. At start-up, an item WorkFile holds
//     as running is reported Failed (Interrupted), never run again, and a
//     result not acknowledged is sent.
//   - runScript writes the script to a directory of its own under the
//     state directory and runs its interpreter on it (sh, bash, python3,
//     pwsh, powershell, cmd), in a process group of its own that a
//     timeout kills whole; stdout and stderr together, of which the last
//     protocol.MaxOutputBytes are kept. reboot succeeds, and once the
//     service recorded it the agent runs Config.RebootCommand.
//   - deployImage, installSoftware and captureImage are bounded, each as
//     a whole, by the item's TimeoutSeconds (an hour when it gives none).
//     deployImage writes and captureImage reads Config.Disk (--disk), a
//     block device or a file; without one they fail with reason
//     DiskFailed ("no disk configured (--disk)"), as they do when the
//     disk cannot be opened, read or written, or a device is smaller
//     than the image (a file is written and cut to the image's length).
//
// Downloads (deployImage, installSoftware): the agent GETs
// protocol.ContentPath(digest) from its package endpoints in order, into a
// staging file of the state directory (content/<hex>.partial; one content
// at a time: the files of other content are removed), over its HTTPS
// client and its CA pool. A staging file that holds bytes already (an
// earlier request, endpoint, attempt or run) is hashed and the download
// resumes after them with a Range request; the 206 answer's Content-Range
// must start there and give the content's size (a 200 starts over). A
// connection that breaks after bringing bytes is resumed at once from the
// same endpoint; a transport error, an error status (404, 5xx, …) or a
// request that moves nothing for a minute moves to the next endpoint. A
// round over the endpoints that fails is followed by a back-off (at least
// the Retry-After asked); after ten failed rounds, or at the timeout, the
// item fails with reason ContentUnavailable and a message naming each
// endpoint tried and its last error (the staging file stays for the next
// attempt). The size and the sha256 digest are verified before the
// content is used: a mismatch removes the staging file and fails the
// round, and the next round starts with the next endpoint. deployImage
// checks the disk before the download, then writes the verified image
// from its first byte, syncs it, removes the staging file and succeeds
// with the bytes written and the digest. installSoftware moves the
// verified file into a directory of its own under scripts/, makes it
// executable and runs it as runScript runs a script (process group,
// timeout, output, exit code: reason ExitCode when it is not 0), then
// removes it.
//
// Capture (captureImage): the agent reads the disk once for its size and
// sha256 digest, then uploads it to its first package endpoint with the
// protocol's resumable upload (protocol.UploadsPath), with its credential:
// POST an UploadRequest, PATCH chunks of 8 MiB with Content-Range from the
// offset the service holds (a 416 answer's UploadStatus says where to go
// on from), then PUT ?digest=. After a transport error or a 5xx it asks
// the upload's status (GET) and goes on from there; an upload the service
// lost (404) is started again; an endpoint that stays down is left for
// the next package endpoint of the site, with a new upload, and after
// every endpoint failed the round starts again after a back-off with the
// endpoints as the agent knows them then. A 401 is a refused credential,
// handled as for a check-in (the upload goes on with the next
// credential); a 421 makes the agent locate again. The result names the
// Package the service made: "captured into Package <ns/name> (<digest>,
// <size> bytes)". Past the timeout, or when the service refuses the
// upload for good (another 4xx, a digest that does not match), the item
// fails with reason UploadFailed.
//
// A simulated agent (Simulate) downloads, writes, runs and uploads
// nothing: it carries out the content actions as it does runScript,
// succeeding (or failing with exit code 1) after the simulated work's
// duration.
//
// How it reacts to the answers:
//
//   - 401 on register: the token was refused; back off and try again (the
//     token file is read again at each attempt). 401 on a check-in: the
//     credential was revoked; forget it and register again when there is a
//     bootstrap token, otherwise back off and keep trying.
//   - 409 on register: a replayed request ID; draw a new one and retry.
//   - 421 (protocol.StatusRelocate): locate again.
//   - 429 or 503 with Retry-After: come back after that long, jittered.
//   - A transport error or another 5xx: the endpoint is unreachable; fail
//     over to the next endpoint after a short random delay and, when every
//     endpoint has failed, locate again with an exponential back-off with
//     full jitter, so that agents whose server restarts do not all come
//     back at once.
//
// The agent also locates again when its addresses change (read before each
// check-in), periodically (RelocateInterval, jittered), and after the
// locate answer's RetryAfterSeconds when a fallback serves it, so that it
// returns to its preferred server.
//
// The agent links only the standard library and internal/protocol: it
// must stay small and must not bring in the operator's dependencies (a
// test in cmd/agent checks the import graph).
package agent
