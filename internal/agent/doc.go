// Package agent is the agent that runs on a managed computer: it locates
// its site's servers, registers with a bootstrap token, and checks in with
// the task service of its site for work (ARCHITECTURE.md §3, "Agent
// protocol"). A simulation mode (Simulate) runs thousands of agents in one
// process for load tests.
//
// An agent talks HTTPS only and trusts only the CA bundle it is given,
// never the system roots. Its loop, one goroutine per agent:
//
//   - Locate: POST the agent's addresses to a locator (several may be
//     given, tried in turn) and receive its site's task endpoints, in the
//     order to try them. None: wait RetryAfterSeconds and locate again.
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
