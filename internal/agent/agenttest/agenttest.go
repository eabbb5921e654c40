// Package agenttest serves the agent protocol for tests: a test CA, a
// locator and task services that record what agents send and answer as a
// test tells them. Only tests import it.
package agenttest

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/protocol"
)

// CA is a test CA; File is its certificate, for --ca-file.
type CA struct {
	authority *certs.Authority
	PEM       []byte
	File      string
}

// NewCA makes a CA and writes its certificate into a temporary directory.
func NewCA(t testing.TB) *CA {
	t.Helper()
	a, err := certs.NewAuthority("agent test CA", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, a.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	return &CA{authority: a, PEM: a.CertPEM, File: file}
}

// serve starts an HTTPS server on 127.0.0.1 with a certificate from ca.
// connState, when set, is the server's ConnState hook.
func (ca *CA) serve(t testing.TB, h http.Handler, connState func(net.Conn, http.ConnState)) *httptest.Server {
	t.Helper()
	names, err := certs.NamesOf("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.authority.Issue(names, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are what some tests want
	srv.Config.ConnState = connState
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// Serve serves h over HTTPS on 127.0.0.1 with a certificate from ca, until
// the test ends: a package service, or any other server a test writes.
func (ca *CA) Serve(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	return ca.serve(t, h, nil)
}

// DeadURL is an HTTPS URL where nothing listens.
func DeadURL(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "https://" + addr
}

// Locator answers locate requests with Answer.
type Locator struct {
	URL string
	// Answer returns the answer to the n-th request (from 0).
	Answer func(n int, addrs []string) protocol.LocateResponse

	mu       sync.Mutex
	requests [][]string
}

// NewLocator serves a locator with a certificate from ca.
func NewLocator(t testing.TB, ca *CA, answer func(n int, addrs []string) protocol.LocateResponse) *Locator {
	l := &Locator{Answer: answer}
	l.URL = ca.serve(t, http.HandlerFunc(l.serveHTTP), nil).URL
	return l
}

// Endpoints is an Answer that always gives endpoints.
func Endpoints(site string, endpoints ...string) func(int, []string) protocol.LocateResponse {
	return func(int, []string) protocol.LocateResponse {
		return protocol.LocateResponse{Site: site, Rule: protocol.RuleSite, TaskEndpoints: endpoints}
	}
}

func (l *Locator) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != protocol.LocatePath {
		writeError(w, http.StatusNotFound, "no such endpoint")
		return
	}
	var req protocol.LocateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, protocol.MaxLocateBodyBytes)).Decode(&req); err != nil || len(req.Addresses) == 0 {
		writeError(w, http.StatusBadRequest, "bad locate request")
		return
	}
	l.mu.Lock()
	n := len(l.requests)
	l.requests = append(l.requests, req.Addresses)
	l.mu.Unlock()
	writeJSON(w, http.StatusOK, l.Answer(n, req.Addresses))
}

// Requests returns the addresses of every locate request so far.
func (l *Locator) Requests() [][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]string(nil), l.requests...)
}

// Registration is a registration a TaskServer received.
type Registration struct {
	Request       protocol.RegisterRequest
	Authorization string
	At            time.Time
	Status        int
}

// CheckIn is a check-in a TaskServer received.
type CheckIn struct {
	Credential string
	Query      url.Values
	RemoteAddr string
	At         time.Time
	Status     int
}

// Hook may answer a request itself (and return true) instead of the
// server's usual answer; n counts the requests of its kind, from 0.
type Hook func(n int, w http.ResponseWriter, r *http.Request) bool

// TaskServer is a task service: it registers agents that send Token,
// answers their check-ins at once, or holds them up to MaxHold, hands them
// work (Work, Offer) and records their reports on it.
type TaskServer struct {
	Name, Site, URL string

	mu            sync.Mutex
	token         string
	maxHold       time.Duration
	nextCheckIn   time.Duration
	work          []protocol.WorkItem
	offer         []protocol.WorkItem
	onRegister    Hook
	onWork        Hook
	onReport      Hook
	registrations []Registration
	checkIns      []CheckIn
	reports       []Report
	// results are the final reports recorded, by computer and work ID.
	results    map[string]protocol.WorkStatus
	creds      *credentials
	requestIDs map[string]bool

	// Conns counts the connections accepted.
	Conns atomic.Int64
}

// NewTaskServer serves a task service named name, of site, that accepts
// the bootstrap token token.
func NewTaskServer(t testing.TB, ca *CA, name, site, token string) *TaskServer {
	s := &TaskServer{Name: name, Site: site, token: token, creds: &credentials{m: map[string]string{}}, requestIDs: map[string]bool{},
		results: map[string]protocol.WorkStatus{}}
	s.URL = ca.serve(t, http.HandlerFunc(s.serveHTTP), func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.Conns.Add(1)
		}
	}).URL
	return s
}

// Set changes how the server answers, under its lock.
func (s *TaskServer) Set(f func(c *Behaviour)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := Behaviour{Token: s.token, MaxHold: s.maxHold, NextCheckIn: s.nextCheckIn, Work: s.work, Offer: s.offer,
		OnRegister: s.onRegister, OnWork: s.onWork, OnReport: s.onReport}
	f(&b)
	s.token, s.maxHold, s.nextCheckIn, s.work, s.offer = b.Token, b.MaxHold, b.NextCheckIn, b.Work, b.Offer
	s.onRegister, s.onWork, s.onReport = b.OnRegister, b.OnWork, b.OnReport
}

// Behaviour is what a test may change of a TaskServer.
type Behaviour struct {
	// Token is the accepted bootstrap token.
	Token string
	// MaxHold caps how long a check-in is held (the smaller of it and the
	// agent's wait); 0 answers at once.
	MaxHold time.Duration
	// NextCheckIn is the answers' NextCheckInMillis.
	NextCheckIn time.Duration
	// Work is given once, at the next check-in, whatever the check-in's
	// busy parameter says.
	Work []protocol.WorkItem
	// Offer is handed to every agent, as the task service hands claimed
	// work: at each check-in that is not busy, until the agent's result of
	// the item is recorded.
	Offer []protocol.WorkItem
	// OnRegister, OnWork and OnReport may answer instead of the server.
	OnRegister, OnWork, OnReport Hook
}

// Report is a report on work that a TaskServer received: Status is 0
// until it was answered.
type Report struct {
	// Computer is the reporting agent's Computer, "" for an unknown
	// credential.
	Computer   string
	Credential string
	ID         string
	Work       protocol.WorkStatus
	At         time.Time
	Status     int
}

// credentials are the credentials issued, as the API server keeps them:
// valid at every task service of the cluster.
type credentials struct {
	mu sync.Mutex
	m  map[string]string // credential → namespace/computer
}

func (c *credentials) get(credential string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	computer, ok := c.m[credential]
	return computer, ok
}

func (c *credentials) put(credential, computer string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[credential] = computer
}

// ShareCredentials makes the servers accept each other's credentials, as
// the task services of one cluster do. Call it before agents register.
func ShareCredentials(servers ...*TaskServer) {
	for _, s := range servers[1:] {
		s.mu.Lock()
		s.creds = servers[0].creds
		s.mu.Unlock()
	}
}

// RevokeAll refuses every credential issued so far.
func (s *TaskServer) RevokeAll() {
	s.mu.Lock()
	c := s.creds
	s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.m)
}

// Registrations returns the registrations received so far.
func (s *TaskServer) Registrations() []Registration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Registration(nil), s.registrations...)
}

// CheckIns returns the check-ins received so far.
func (s *TaskServer) CheckIns() []CheckIn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CheckIn(nil), s.checkIns...)
}

// Reports returns the reports received so far.
func (s *TaskServer) Reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Report(nil), s.reports...)
}

// Results returns the final reports recorded, by "<computer> <work ID>".
func (s *TaskServer) Results() map[string]protocol.WorkStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]protocol.WorkStatus, len(s.results))
	for k, v := range s.results {
		m[k] = v
	}
	return m
}

// SuccessfulCheckIns counts the check-ins answered with 200.
func (s *TaskServer) SuccessfulCheckIns() int {
	n := 0
	for _, c := range s.CheckIns() {
		if c.Status == http.StatusOK {
			n++
		}
	}
	return n
}

func (s *TaskServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == protocol.RegisterPath:
		s.register(w, r)
	case r.Method == http.MethodGet && r.URL.Path == protocol.WorkPath:
		s.checkIn(w, r)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, protocol.WorkPath+"/") &&
		strings.HasSuffix(r.URL.Path, "/status") && r.URL.Path == protocol.WorkStatusPath(workID(r.URL.Path)):
		s.report(w, r, workID(r.URL.Path))
	default:
		writeError(w, http.StatusNotFound, "no such endpoint")
	}
}

func bearer(r *http.Request) string {
	v, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return v
}

func (s *TaskServer) register(w http.ResponseWriter, r *http.Request) {
	var req protocol.RegisterRequest
	body, _ := io.ReadAll(io.LimitReader(r.Body, protocol.MaxRegisterBodyBytes))
	decodeErr := json.Unmarshal(body, &req)
	s.mu.Lock()
	rec := Registration{Request: req, Authorization: r.Header.Get("Authorization"), At: time.Now()}
	n := len(s.registrations)
	s.registrations = append(s.registrations, rec)
	hook, token := s.onRegister, s.token
	s.mu.Unlock()
	status := func(code int) {
		s.mu.Lock()
		s.registrations[n].Status = code
		s.mu.Unlock()
	}
	if hook != nil {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		if hook(n, sw, r) {
			status(sw.code)
			return
		}
	}
	switch {
	case bearer(r) != token:
		status(http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, "the bootstrap token is not valid")
		return
	case decodeErr != nil || req.Hostname == "" || len(req.Addresses) == 0:
		status(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "bad registration")
		return
	}
	s.mu.Lock()
	replay := s.requestIDs[req.RequestID]
	s.requestIDs[req.RequestID] = true
	s.mu.Unlock()
	if replay {
		status(http.StatusConflict)
		writeError(w, http.StatusConflict, "replayed request ID")
		return
	}
	credential := randomHex()
	s.mu.Lock()
	creds := s.creds
	s.mu.Unlock()
	creds.put(credential, "sites/"+req.Hostname)
	status(http.StatusOK)
	writeJSON(w, http.StatusOK, protocol.RegisterResponse{Namespace: "sites", Computer: req.Hostname,
		Credential: credential, Site: s.Site, SiteServer: s.Name})
}

func (s *TaskServer) checkIn(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	s.mu.Lock()
	n := len(s.checkIns)
	s.checkIns = append(s.checkIns, CheckIn{Credential: bearer(r), Query: r.URL.Query(), RemoteAddr: r.RemoteAddr, At: start})
	hook, maxHold, next := s.onWork, s.maxHold, s.nextCheckIn
	creds := s.creds
	s.mu.Unlock()
	computer, known := creds.get(bearer(r))
	status := func(code int) {
		s.mu.Lock()
		s.checkIns[n].Status = code
		s.mu.Unlock()
	}
	if hook != nil {
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		if hook(n, sw, r) {
			status(sw.code)
			return
		}
	}
	if !known {
		status(http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, "the credential is not valid")
		return
	}
	wait, err := strconv.Atoi(r.URL.Query().Get(protocol.QueryWait))
	if err != nil || wait < 0 || wait > protocol.MaxWaitSeconds {
		status(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "bad wait")
		return
	}
	s.mu.Lock()
	work := s.work
	s.work = nil
	if r.URL.Query().Get(protocol.QueryBusy) == "" {
		for _, item := range s.offer {
			if _, done := s.results[computer+" "+item.ID]; !done && !slices.ContainsFunc(work, func(w protocol.WorkItem) bool { return w.ID == item.ID }) {
				work = append(work, item)
			}
		}
	}
	s.mu.Unlock()
	if len(work) == 0 {
		if hold := min(time.Duration(wait)*time.Second, maxHold); hold > 0 {
			select {
			case <-time.After(hold):
			case <-r.Context().Done():
				return
			}
		}
	}
	status(http.StatusOK)
	writeJSON(w, http.StatusOK, protocol.WorkResponse{Work: work, NextCheckInMillis: next.Milliseconds(),
		Computer: computer, Site: s.Site, SiteServer: s.Name, HeldMillis: time.Since(start).Milliseconds()})
}

func workID(path string) string {
	return strings.TrimSuffix(strings.TrimPrefix(path, protocol.WorkPath+"/"), "/status")
}

// report records a report as the task service does: a result once, the
// same result again acknowledged again, another one refused with 409.
// A report beyond the protocol's limits is refused with 400.
func (s *TaskServer) report(w http.ResponseWriter, r *http.Request, id string) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, protocol.MaxWorkStatusBodyBytes+1))
	var st protocol.WorkStatus
	decodeErr := json.Unmarshal(body, &st)
	s.mu.Lock()
	creds := s.creds
	s.mu.Unlock()
	computer, known := creds.get(bearer(r))
	s.mu.Lock()
	n := len(s.reports)
	s.reports = append(s.reports, Report{Computer: computer, Credential: bearer(r), ID: id, Work: st, At: time.Now()})
	hook := s.onReport
	s.mu.Unlock()
	status := func(code int) {
		s.mu.Lock()
		s.reports[n].Status = code
		s.mu.Unlock()
	}
	if hook != nil {
		// The hook may read the body; the server has it already.
		r.Body = io.NopCloser(bytes.NewReader(body))
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		if hook(n, sw, r) {
			status(sw.code)
			return
		}
	}
	attempt := id[strings.LastIndexByte(id, '.')+1:]
	switch {
	case !known:
		status(http.StatusUnauthorized)
		writeError(w, http.StatusUnauthorized, "the credential is not valid")
		return
	case decodeErr != nil || len(body) > protocol.MaxWorkStatusBodyBytes || strconv.Itoa(int(st.Attempt)) != attempt ||
		len(st.Output) > protocol.MaxOutputBytes || len(st.Message) > protocol.MaxMessageLength ||
		(st.State != protocol.WorkRunning && !st.Final()) || (st.State == protocol.WorkFailed) != (st.Reason != ""):
		status(http.StatusBadRequest)
		writeError(w, http.StatusBadRequest, "bad report")
		return
	}
	key := computer + " " + id
	s.mu.Lock()
	recorded, done := s.results[key]
	if !done && st.Final() {
		s.results[key] = st
	}
	s.mu.Unlock()
	if done && (recorded.State != st.State || recorded.Reason != st.Reason) {
		status(http.StatusConflict)
		writeError(w, http.StatusConflict, "another result is recorded")
		return
	}
	if done {
		st = recorded
	}
	status(http.StatusOK)
	writeJSON(w, http.StatusOK, protocol.WorkStatusResponse{Recorded: st.State})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func randomHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// WriteError answers with a protocol.Error.
func WriteError(w http.ResponseWriter, code int, msg string) { writeError(w, code, msg) }

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, protocol.Error{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", protocol.ContentType)
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Eventually polls cond every few milliseconds until it holds or timeout
// passes, then fails the test with msg.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+msg, append([]any{timeout}, args...)...)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
