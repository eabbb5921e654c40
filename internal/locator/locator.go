package locator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
)

// Options tune a Locator.
type Options struct {
	// MaxServers is the most servers one answer lists (their endpoints
	// all appear). Default 8.
	MaxServers int
	// RetryNoServer is when an agent that no server serves should ask
	// again. Default 30 s.
	RetryNoServer time.Duration
	// RetryFallback is when an agent served by a fallback (its site has no
	// ready server) should ask again, to go back to its site's own
	// servers. Default 5 minutes.
	RetryFallback time.Duration
	// Metrics, if set, records every locate.
	Metrics *Metrics
}

func (o Options) withDefaults() Options {
	if o.MaxServers <= 0 {
		o.MaxServers = 8
	}
	if o.RetryNoServer <= 0 {
		o.RetryNoServer = 30 * time.Second
	}
	if o.RetryFallback <= 0 {
		o.RetryFallback = 5 * time.Minute
	}
	return o
}

// Locator answers locate requests from a resolver and a ServerSet.
type Locator struct {
	resolver *topology.Resolver
	servers  *ServerSet
	opts     Options
	bufs     sync.Pool
}

// New returns a Locator that answers from resolver and servers, both kept
// current by the manager's informers.
func New(resolver *topology.Resolver, servers *ServerSet, opts Options) *Locator {
	l := &Locator{resolver: resolver, servers: servers, opts: opts.withDefaults()}
	l.bufs.New = func() any { return &buffers{order: make([]scored, 0, l.opts.MaxServers)} }
	return l
}

// buffers are reused across requests, so that a locate allocates little.
type buffers struct {
	order []scored
	out   bytes.Buffer
}

// Locate answers for the given addresses, most preferred first: the first
// one in an effective subnet decides the site; when none is, the first
// one orders the fallback servers.
func (l *Locator) Locate(addrs []netip.Addr) protocol.LocateResponse {
	b := l.bufs.Get().(*buffers)
	defer l.bufs.Put(b)
	resp, _ := l.locate(addrs, b)
	return resp
}

func (l *Locator) locate(addrs []netip.Addr, b *buffers) (protocol.LocateResponse, ruleIndex) {
	match, decider := l.match(addrs)
	rule, candidates := l.servers.Snapshot().serve(match.Site, l.resolver.SiteCount() > 0)
	b.order = order(addrKey(decider), candidates, l.opts.MaxServers, b.order)
	resp := protocol.LocateResponse{
		Site:             match.Site,
		Subnet:           match.Subnet,
		Rule:             rules[rule],
		TaskEndpoints:    []string{},
		PackageEndpoints: []string{},
	}
	if decider.IsValid() {
		resp.Address = decider.String()
	}
	for _, c := range b.order {
		resp.TaskEndpoints = append(resp.TaskEndpoints, c.e.TaskEndpoints...)
		resp.PackageEndpoints = append(resp.PackageEndpoints, c.e.PackageEndpoints...)
	}
	switch {
	case len(resp.TaskEndpoints) == 0:
		resp.RetryAfterSeconds = int(l.opts.RetryNoServer / time.Second)
	case rule == ruleSiteNotReady:
		resp.RetryAfterSeconds = int(l.opts.RetryFallback / time.Second)
	}
	return resp, rule
}

// ServeHTTP serves POST /v1/locate.
func (l *Locator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	b := l.bufs.Get().(*buffers)
	defer l.bufs.Put(b)
	rule, status := l.serve(w, r, b)
	if m := l.opts.Metrics; m != nil {
		m.observe(rule, status, time.Since(start))
	}
}

// Handler returns a mux with the locator at protocol.LocatePath.
func (l *Locator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(protocol.LocatePath, l)
	return mux
}

func (l *Locator) serve(w http.ResponseWriter, r *http.Request, b *buffers) (ruleIndex, int) {
	addrs, status, perr := parseRequest(w, r)
	if perr != nil {
		writeJSON(w, status, perr, &b.out)
		return ruleRejected, status
	}
	resp, rule := l.locate(addrs, b)
	writeJSON(w, http.StatusOK, resp, &b.out)
	return rule, http.StatusOK
}

// parseRequest reads and checks a locate request; on failure it returns
// the status and the error body to send.
func parseRequest(w http.ResponseWriter, r *http.Request) ([]netip.Addr, int, *protocol.Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, http.StatusMethodNotAllowed, &protocol.Error{Error: "method " + r.Method + " is not allowed: use POST"}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != protocol.ContentType {
		return nil, http.StatusUnsupportedMediaType, &protocol.Error{
			Error: fmt.Sprintf("Content-Type %q is not supported: send %s", r.Header.Get("Content-Type"), protocol.ContentType)}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, protocol.MaxLocateBodyBytes))
	dec.DisallowUnknownFields()
	var req protocol.LocateRequest
	if err := dec.Decode(&req); err != nil {
		return nil, http.StatusBadRequest, decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusBadRequest, decodeError(err)
		}
		return nil, http.StatusBadRequest, &protocol.Error{Error: "the body must hold one JSON object and nothing after it"}
	}
	switch n := len(req.Addresses); {
	case n == 0:
		return nil, http.StatusBadRequest, &protocol.Error{Error: "at least one address is required", Field: "addresses"}
	case n > protocol.MaxLocateAddresses:
		return nil, http.StatusBadRequest, &protocol.Error{
			Error: fmt.Sprintf("%d addresses given, at most %d are allowed", n, protocol.MaxLocateAddresses), Field: "addresses"}
	}
	addrs := make([]netip.Addr, len(req.Addresses))
	for i, s := range req.Addresses {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, http.StatusBadRequest, &protocol.Error{
				Error: fmt.Sprintf("%q is not an IPv4 or IPv6 address", truncate(s)), Field: "addresses[" + strconv.Itoa(i) + "]"}
		}
		addrs[i] = a.WithZone("").Unmap()
	}
	return addrs, 0, nil
}

// decodeError describes why the body did not decode, naming the field when
// the decoder knows it.
func decodeError(err error) *protocol.Error {
	var (
		tooLarge *http.MaxBytesError
		typeErr  *json.UnmarshalTypeError
		syntax   *json.SyntaxError
	)
	switch {
	case errors.As(err, &tooLarge):
		return &protocol.Error{Error: fmt.Sprintf("the body is larger than %d bytes", protocol.MaxLocateBodyBytes)}
	case errors.As(err, &typeErr):
		return &protocol.Error{Error: fmt.Sprintf("%s must be %s, not a JSON %s", fieldOr(typeErr.Field, "the body"), wantType(typeErr.Field), typeErr.Value),
			Field: typeErr.Field}
	case errors.As(err, &syntax):
		return &protocol.Error{Error: fmt.Sprintf("malformed JSON at byte %d: %v", syntax.Offset, err)}
	case errors.Is(err, io.EOF):
		return &protocol.Error{Error: "the body is empty: send a JSON object with addresses"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &protocol.Error{Error: "malformed JSON: the body ends early"}
	}
	// encoding/json reports an unknown field only as text.
	const unknown = `json: unknown field "`
	if msg := err.Error(); len(msg) > len(unknown) && msg[:len(unknown)] == unknown {
		field := msg[len(unknown) : len(msg)-1]
		return &protocol.Error{Error: fmt.Sprintf("unknown field %q: a locate request has only addresses", truncate(field)), Field: truncate(field)}
	}
	return &protocol.Error{Error: "malformed request: " + err.Error()}
}

func fieldOr(field, otherwise string) string {
	if field == "" {
		return otherwise
	}
	return field
}

func wantType(field string) string {
	if field == "addresses" {
		return "an array of strings"
	}
	if len(field) > len("addresses") && field[:len("addresses")] == "addresses" {
		return "a string"
	}
	return "an object"
}

// truncate bounds what an error echoes of the request.
func truncate(s string) string {
	const limit = 64
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any, buf *bytes.Buffer) {
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		http.Error(w, `{"error":"encoding the answer failed"}`, http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", protocol.ContentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// Serves applies the serving rules to an agent with the given addresses,
// as Locate does, and reports the agent's site and whether the named
// server is one of those that serve it (whatever the cap on servers one
// answer lists). The task service asks it before it answers an agent.
func (l *Locator) Serves(addrs []netip.Addr, server string) (site string, ok bool) {
	match, _ := l.match(addrs)
	_, candidates := l.servers.Snapshot().serve(match.Site, l.resolver.SiteCount() > 0)
	for _, c := range candidates {
		if c.Name == server {
			return match.Site, true
		}
	}
	return match.Site, false
}

// match finds the first of addrs in an effective subnet: its match, and the
// address that decided; with none, the zero match and the first address.
func (l *Locator) match(addrs []netip.Addr) (topology.Match, netip.Addr) {
	for _, a := range addrs {
		if m, found := l.resolver.Lookup(a); found {
			return m, a
		}
	}
	if len(addrs) > 0 {
		return topology.Match{}, addrs[0]
	}
	return topology.Match{}, netip.Addr{}
}
