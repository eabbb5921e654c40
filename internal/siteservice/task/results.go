package task

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/tasks"
)

// reportWait bounds how long a report waits for its write before the
// agent is told to come back (it retries until acknowledged), well within
// the agent's 30 s request timeout.
const reportWait = 20 * time.Second

// reportComeBack is the Retry-After of a report that waited reportWait:
// its result stays queued, and the report sent again joins it (or, once
// the write has landed, is acknowledged at once), so the agent comes back
// soon at no cost.
const reportComeBack = time.Second

// workStatus serves POST /v1/work/{id}/status: an agent's report on its
// work. The answer to a result is 200 once it is recorded in the task's
// dispatch state; the same report again is acknowledged again. A progress
// report is answered 202 once it is queued (acceptProgress).
func (s *Server) workStatus(w http.ResponseWriter, r *http.Request) {
	if s.kube == nil {
		comeBack(w, time.Minute, "this task service serves no agent API")
		return
	}
	if s.kube.ready(r.Context()) != nil {
		comeBack(w, s.spread(), "the task service is starting")
		return
	}
	comp, err := s.authenticate(r.Context(), r)
	if errors.Is(err, errCannotCheck) {
		comeBack(w, s.spread(), "the credential cannot be checked now")
		return
	}
	if err != nil {
		s.log.Info("Refusing a report", "reason", err)
		fail(w, http.StatusUnauthorized, "", "%v", errCredentialRefused)
		return
	}
	id := r.PathValue("id")
	uid, attempt, err := tasks.ParseWorkID(id)
	if err != nil {
		fail(w, http.StatusBadRequest, "id", "%v", err)
		return
	}
	var st protocol.WorkStatus
	if !decodeJSON(w, r, &st) {
		return
	}
	if field, err := validateWorkStatus(st, attempt); err != nil {
		fail(w, http.StatusBadRequest, field, "%v", err)
		return
	}
	t := s.dispatch.task(uid)
	if t == nil || t.namespace != comp.Namespace {
		fail(w, http.StatusNotFound, "id", "work %s is not known to this service: no DeploymentTask with that UID in namespace %s", id, comp.Namespace)
		return
	}
	key := types.NamespacedName{Namespace: comp.Namespace, Name: comp.Name}
	if st.State == protocol.WorkRunning && s.acceptProgress(w, comp, t, st, id) {
		return
	}
	done := make(chan opResult, 1)
	s.dispatch.report(comp, t, st, func(r opResult) {
		// What follows a recorded result happens here, once per result,
		// whether or not this handler still waits for it.
		if r.err == nil && r.changed && st.Final() {
			s.dispatch.results.Add(1)
			s.lastTasks.add(key, lastTaskOf(t, st, r.entry))
			s.freed(key, id)
		}
		done <- r
	})
	var res opResult
	select {
	case res = <-done:
	case <-time.After(reportWait):
		comeBack(w, reportComeBack, "the report is not recorded yet")
		return
	case <-r.Context().Done():
		return
	}
	switch {
	case errors.Is(res.err, errNoSuchWork):
		fail(w, http.StatusNotFound, "id", "work %s was not handed to Computer %s", id, key)
		return
	case errors.Is(res.err, errStaleAttempt):
		fail(w, http.StatusConflict, "attempt", "work %s: attempt %d is stale; Computer %s holds attempt %d", id, attempt, key, res.entry.Attempt)
		return
	case errors.Is(res.err, errRecorded):
		fail(w, http.StatusConflict, "state", "work %s: the result %s is recorded already; a report cannot change it", id, res.entry.State)
		return
	case res.err != nil:
		s.log.Warn("Recording a report", "computer", key.String(), "work", id, "error", res.err)
		comeBack(w, 5*time.Second, "the report could not be recorded")
		return
	}
	writeJSON(w, http.StatusOK, protocol.WorkStatusResponse{Recorded: res.entry.State})
}

// acceptProgress answers a Running report 202 Accepted as soon as it is
// queued for the shard's next write, when the service's view holds the
// work as claimed with this attempt (the usual case), or 200 when it holds
// it Running already. Progress is best effort: the agent neither waits
// for the write nor retries, and its connection is free at once for its
// result. It reports false, and answers nothing, when the view disagrees:
// then the report goes the way of a result, refused only once the API
// server's copy says so.
func (s *Server) acceptProgress(w http.ResponseWriter, comp *siteopsv1.Computer, t *taskView, st protocol.WorkStatus, id string) bool {
	e, ok := s.dispatch.writer(t.uid, t.namespace, t.name, tasks.ShardOf(comp.Name)).entry(comp.Name)
	if !ok || e.Attempt != st.Attempt {
		return false
	}
	switch e.State {
	case siteopsv1.DispatchRunning:
		writeJSON(w, http.StatusOK, protocol.WorkStatusResponse{Recorded: e.State})
		return true
	case siteopsv1.DispatchClaimed:
	default:
		return false
	}
	s.dispatch.report(comp, t, st, func(r opResult) {
		if r.err != nil {
			s.log.Info("A progress report was not recorded", "computer", comp.Namespace+"/"+comp.Name, "work", id, "error", r.err)
		}
	})
	writeJSON(w, http.StatusAccepted, protocol.WorkStatusResponse{Recorded: e.State})
	return true
}

// validateWorkStatus checks a report, and says which field is at fault.
func validateWorkStatus(st protocol.WorkStatus, attempt int32) (string, error) {
	if st.Attempt != attempt {
		return "attempt", errors.New("attempt must be the work ID's attempt")
	}
	switch st.State {
	case protocol.WorkRunning, protocol.WorkSucceeded:
		if st.Reason != "" {
			return "reason", errors.New("reason is only for a Failed report")
		}
	case protocol.WorkFailed:
		switch st.Reason {
		case protocol.ReasonExitCode, protocol.ReasonTimedOut, protocol.ReasonInterrupted,
			protocol.ReasonInterpreterNotFound, protocol.ReasonStartFailed:
		default:
			return "reason", errors.New("reason of a Failed report must be ExitCode, TimedOut, Interrupted, InterpreterNotFound or StartFailed")
		}
	default:
		return "state", errors.New("state must be Running, Succeeded or Failed")
	}
	if len(st.Output) > protocol.MaxOutputBytes {
		return "output", errors.New("output must be at most 4096 bytes: send its end")
	}
	if len(st.Message) > protocol.MaxMessageLength {
		return "message", errors.New("message must be at most 256 bytes")
	}
	return "", nil
}

func lastTaskOf(t *taskView, st protocol.WorkStatus, e siteopsv1.DispatchEntry) siteopsv1.ComputerTask {
	ct := siteopsv1.ComputerTask{Name: t.name, UID: t.uid, Attempt: e.Attempt, State: e.State, Reason: e.Reason,
		ExitCode: e.ExitCode, Output: st.Output, OutputTruncated: st.OutputTruncated}
	if st.Started != nil {
		v := metav1.NewTime(*st.Started).Rfc3339Copy()
		ct.Started = &v
	}
	if st.Finished != nil {
		v := metav1.NewTime(*st.Finished).Rfc3339Copy()
		ct.Finished = &v
	}
	return ct
}

// lastTaskWriter writes results to their Computers' status.lastTask,
// once they are recorded in the dispatch state (which the task's counts
// come from). A few results a second are written at once, each its own
// write, so that the output of a small task shows at once; beyond that
// budget a result waits for the Computer's next status write, which the
// agent's check-ins owe at most once per status interval anyway: a wave of
// thousands of results then costs no writes of its own (docs/tasks.md).
type lastTaskWriter struct {
	s         *Server
	immediate *rate.Limiter
	mu        sync.Mutex
	m         map[types.NamespacedName]siteopsv1.ComputerTask
	// kick wakes the loop.
	kick            chan struct{}
	written, failed atomic.Int64
	deferred        atomic.Int64
}

// lastTaskWriteTimeout bounds one write, so that a stalled API server
// cannot hold the service's shutdown.
const lastTaskWriteTimeout = 10 * time.Second

// Budget of the results written at once.
const (
	immediateLastTaskRate  = 20
	immediateLastTaskBurst = 100
)

func newLastTaskWriter(s *Server) *lastTaskWriter {
	return &lastTaskWriter{s: s, m: map[types.NamespacedName]siteopsv1.ComputerTask{}, kick: make(chan struct{}, 1),
		immediate: rate.NewLimiter(immediateLastTaskRate, immediateLastTaskBurst)}
}

// add writes ct into the Computer's status: at once within the budget,
// else with its next status write.
func (l *lastTaskWriter) add(key types.NamespacedName, ct siteopsv1.ComputerTask) {
	if !l.immediate.Allow() {
		l.deferred.Add(1)
		l.s.agents.owe(key, ct)
		return
	}
	l.addNow(key, ct)
}

// addNow writes ct at once, whatever the budget. An older result the
// Computer's next status write still owes is dropped: it must not land
// after this one.
func (l *lastTaskWriter) addNow(key types.NamespacedName, ct siteopsv1.ComputerTask) {
	l.s.agents.dropLastTask(key)
	l.mu.Lock()
	l.m[key] = ct
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// run writes until ctx is done, then what is left for a few seconds.
func (l *lastTaskWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			flush, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.flush(flush)
			cancel()
			return
		case <-l.kick:
		}
		l.flush(context.WithoutCancel(ctx))
	}
}

func (l *lastTaskWriter) flush(ctx context.Context) {
	for {
		l.mu.Lock()
		if len(l.m) == 0 {
			l.mu.Unlock()
			return
		}
		batch := l.m
		l.m = map[types.NamespacedName]siteopsv1.ComputerTask{}
		l.mu.Unlock()
		var wg sync.WaitGroup
		work := make(chan types.NamespacedName)
		for range min(flushWorkers, len(batch)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for key := range work {
					wctx, cancel := context.WithTimeout(ctx, lastTaskWriteTimeout)
					err := patchStatus(wctx, l.s.kube.writer, key, map[string]any{"lastTask": batch[key]})
					cancel()
					if err != nil {
						l.failed.Add(1)
						l.s.log.Warn("Writing a Computer's last task", "computer", key.String(), "error", err)
						continue
					}
					l.written.Add(1)
				}
			}()
		}
		for key := range batch {
			if ctx.Err() != nil {
				break
			}
			work <- key
		}
		close(work)
		wg.Wait()
		if ctx.Err() != nil {
			return
		}
	}
}
