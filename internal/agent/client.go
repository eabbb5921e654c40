package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// maxResponseBytes bounds what the agent reads of an answer.
const maxResponseBytes = 1 << 20

// LoadCAFile reads a PEM bundle of CA certificates once, for a fixed pool
// (Config.RootCAs). An agent given the file instead (Config.CAFile,
// SimulateOptions.CAFile) rereads it when it changes.
func LoadCAFile(path string) (*x509.CertPool, error) {
	f, err := openCAFile(path)
	if err != nil {
		return nil, err
	}
	return f.pool.Load(), nil
}

// transportOptions say how an agent connects.
type transportOptions struct {
	// roots are the CAs to trust, unless caFile is set: then those its
	// file holds at each new connection.
	roots  *x509.CertPool
	caFile *caFile
	// source, when valid, is the local address of every connection.
	source netip.Addr
	// sessions, when set, is shared by agents for TLS session resumption.
	sessions tls.ClientSessionCache
	// dialTimeout bounds a connection's TCP and TLS handshakes.
	dialTimeout time.Duration
}

// newTransport returns an HTTP/1.1 transport that trusts only roots (as
// their file holds them at each new connection) and keeps at most one idle
// connection per host: an agent sends one request at a time.
func newTransport(o transportOptions) *http.Transport {
	dialer := &net.Dialer{Timeout: o.dialTimeout, KeepAlive: 30 * time.Second}
	if o.source.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: o.source.AsSlice()}
	}
	d := &tlsDialer{
		dialer: dialer,
		config: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			ClientSessionCache: o.sessions,
		},
		roots:            func() *x509.CertPool { return o.roots },
		handshakeTimeout: o.dialTimeout,
	}
	if o.caFile != nil {
		d.roots, d.file = o.caFile.roots, o.caFile
	}
	return &http.Transport{
		DialContext:           dialer.DialContext,
		DialTLSContext:        d.dial,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       5 * time.Minute,
		ResponseHeaderTimeout: 0, // a check-in is held: the request's context bounds it
		ReadBufferSize:        4 << 10,
		WriteBufferSize:       4 << 10,
		DisableCompression:    true,
	}
}

// tlsDialer makes the transport's TLS connections, each verified against
// the roots of the moment (the CA file reloaded when it changed).
type tlsDialer struct {
	dialer *net.Dialer
	// config is cloned for each connection, with its server name and
	// roots.
	config           *tls.Config
	roots            func() *x509.CertPool
	file             *caFile
	handshakeTimeout time.Duration
}

func (d *tlsDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	raw, err := d.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	config := d.config.Clone()
	config.ServerName = host
	config.RootCAs = d.roots() // never the system roots
	if d.handshakeTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.handshakeTimeout)
		defer cancel()
	}
	conn := tls.Client(raw, config)
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		if d.file != nil {
			if loadErr := d.file.loadError(); loadErr != nil {
				return nil, fmt.Errorf("%w (the changed CA bundle was not loaded: %w)", err, loadErr)
			}
		}
		return nil, err
	}
	return conn, nil
}

// statusError is an answer other than 200: its status, the protocol.Error
// body when there is one, and the Retry-After delay when set.
type statusError struct {
	op         string
	code       int
	body       protocol.Error
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s: %d %s", e.op, e.code, http.StatusText(e.code))
	if e.body.Error != "" {
		msg += ": " + e.body.Error
		if e.body.Field != "" {
			msg += " (" + e.body.Field + ")"
		}
	}
	return msg
}

// errorKind names an error for the simulation's statistics: the status
// code, or "transport".
func errorKind(err error) string {
	var se *statusError
	if errors.As(err, &se) {
		return strconv.Itoa(se.code)
	}
	return "transport"
}

// statusOf returns the status of an answer other than 200, or 0 for a
// transport error.
func statusOf(err error) int {
	var se *statusError
	if errors.As(err, &se) {
		return se.code
	}
	return 0
}

// unreachable says whether err means the endpoint cannot serve at all: a
// transport error or a 5xx other than 503 (a 503 with Retry-After asks the
// agent to come back later).
func unreachable(err error) bool {
	code := statusOf(err)
	return code == 0 || (code >= 500 && (code != http.StatusServiceUnavailable || retryAfterOf(err) <= 0))
}

func retryAfterOf(err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) {
		return se.retryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After header, in seconds or as an HTTP
// date; 0 when absent or unreadable. unit is a second (shorter in tests).
func parseRetryAfter(v string, now time.Time, unit time.Duration) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(min(s, 24*3600)) * unit
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), 24*time.Hour)
	}
	return 0
}

// client sends the protocol's requests.
type client struct {
	http *http.Client
	// requestTimeout bounds a locate or a registration.
	requestTimeout time.Duration
	// secondUnit is the length of a Retry-After second (shorter in tests).
	secondUnit time.Duration
	userAgent  string
}

// do sends a request and decodes a 200 (or 202) answer's JSON into out.
func (c *client) do(ctx context.Context, op, method, u, bearer string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("%s: encoding the request: %w", op, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", protocol.ContentType)
	}
	req.Header.Set("Accept", protocol.ContentType)
	req.Header.Set("User-Agent", c.userAgent)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s: reading the answer: %w", op, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
		se := &statusError{op: op, code: resp.StatusCode,
			retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now(), c.secondUnit)}
		_ = json.Unmarshal(data, &se.body) // a body that is not a protocol.Error leaves it empty
		return se
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decoding the answer: %w", op, err)
	}
	return nil
}

func (c *client) locate(ctx context.Context, locator string, addrs []string) (protocol.LocateResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	var resp protocol.LocateResponse
	err := c.do(ctx, "locating at "+locator, http.MethodPost, joinURL(locator, protocol.LocatePath), "",
		protocol.LocateRequest{Addresses: addrs}, &resp)
	return resp, err
}

func (c *client) register(ctx context.Context, endpoint, token string, req protocol.RegisterRequest) (protocol.RegisterResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	var resp protocol.RegisterResponse
	err := c.do(ctx, "registering at "+endpoint, http.MethodPost, joinURL(endpoint, protocol.RegisterPath), token, req, &resp)
	return resp, err
}

// checkIn holds the request for up to wait plus margin: the service holds
// it up to wait (the long poll).
// busy is the ID of the work item the agent carries out, if any.
func (c *client) checkIn(ctx context.Context, endpoint, credential string, wait, margin time.Duration, addrs []string, version, busy string) (protocol.WorkResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, wait+margin)
	defer cancel()
	q := url.Values{}
	q.Set(protocol.QueryWait, strconv.Itoa(int(wait/time.Second)))
	for _, a := range addrs {
		q.Add(protocol.QueryAddress, a)
	}
	if version != "" {
		q.Set(protocol.QueryVersion, version)
	}
	if busy != "" {
		q.Set(protocol.QueryBusy, busy)
	}
	var resp protocol.WorkResponse
	err := c.do(ctx, "checking in at "+endpoint, http.MethodGet, joinURL(endpoint, protocol.WorkPath)+"?"+q.Encode(), credential, nil, &resp)
	return resp, err
}

// report sends a report on work item id.
func (c *client) report(ctx context.Context, endpoint, credential, id string, st protocol.WorkStatus) (protocol.WorkStatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, c.requestTimeout)
	defer cancel()
	var resp protocol.WorkStatusResponse
	err := c.do(ctx, "reporting on work "+id+" at "+endpoint, http.MethodPost,
		joinURL(endpoint, protocol.WorkStatusPath(url.PathEscape(id))), credential, st, &resp)
	return resp, err
}

func joinURL(base, path string) string {
	return strings.TrimRight(base, "/") + path
}
