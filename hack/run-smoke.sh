#!/usr/bin/env bash
# Smoke test of the README's first command, `make run`, as a newcomer runs
# it: it must reach "The operator is running" (every sample Site Ready, the
# locator and agent examples working), print no stack trace or failed
# example, answer the curl command it prints, and stop cleanly on Ctrl-C.
# CI runs it (make run-smoke) after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

timeout_s=${RUN_SMOKE_TIMEOUT:-600}
log=$(mktemp -t run-smoke.XXXXXX)
fail() {
	echo "run-smoke: $*" >&2
	echo "--- make run's output ($log):" >&2
	cat "$log" >&2
	exit 1
}

# A process group of its own, so that Ctrl-C (SIGINT) reaches make and the
# cluster tool together, as it would from a terminal.
setsid make run >"$log" 2>&1 &
pid=$!
stop() {
	if kill -0 "$pid" 2>/dev/null; then
		kill -INT -- "-$pid" 2>/dev/null || true
		for _ in $(seq 60); do
			kill -0 "$pid" 2>/dev/null || return 0
			sleep 1
		done
		kill -KILL -- "-$pid" 2>/dev/null || true
	fi
}
trap stop EXIT

start=$SECONDS
until grep -q 'The operator is running' "$log"; do
	kill -0 "$pid" 2>/dev/null || fail "make run exited before the operator was running"
	((SECONDS - start < timeout_s)) || fail "make run was not running after ${timeout_s}s"
	sleep 2
done
echo "run-smoke: make run was running after $((SECONDS - start))s"

for bad in 'SetLogger' 'goroutine [0-9]* \[' 'panic:' 'did not work' 'Not every Site is Ready'; do
	if grep -qE "$bad" "$log"; then
		fail "make run printed /$bad/"
	fi
done

# The locate example, exactly as printed: a curl line and its continuation.
cmd=$(awk '/^    curl --cacert .* -X POST/ { sub(/\\$/, ""); line = $0; getline; print line $0; exit }' "$log")
[ -n "$cmd" ] || fail "make run printed no curl locate example"
answer=$(eval "$cmd") || fail "the printed example failed: $cmd"
grep -q '"taskEndpoints":\["https://' <<<"$answer" || fail "the printed example answered no task endpoint: $answer"
echo "run-smoke: the printed locate example answers: $answer"

kill -INT -- "-$pid"
for _ in $(seq 60); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 1
done
kill -0 "$pid" 2>/dev/null && fail "make run still runs 60s after Ctrl-C"
grep -q 'Stopping the cluster$' "$log" || fail "make run did not stop the cluster"
if grep -q 'Stopping the cluster: ' "$log"; then
	fail "stopping the cluster failed"
fi
echo "run-smoke: stopped cleanly on Ctrl-C"
rm -f "$log"
