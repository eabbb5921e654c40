package task

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/siteops/site-operator/internal/protocol"
)

// writeJSON answers status with body.
func writeJSON(w http.ResponseWriter, status int, body any) {
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, "encoding the answer failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", protocol.ContentType)
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// fail answers status with a protocol.Error naming field.
func fail(w http.ResponseWriter, status int, field, format string, args ...any) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="siteops"`)
	}
	writeJSON(w, status, protocol.Error{Error: fmt.Sprintf(format, args...), Field: field})
}

// comeBack answers 503 with Retry-After: the service cannot take the
// request now.
func comeBack(w http.ResponseWriter, after time.Duration, why string) {
	w.Header().Set("Retry-After", protocol.RetryAfter(after))
	fail(w, http.StatusServiceUnavailable, "", "%s; retry in %s", why, protocol.RetryAfter(after)+"s")
}

// decodeJSON reads a JSON body into v: the content type must be JSON, the
// body one JSON value. A body over the route's limit is answered 413 by
// the Host's guard before it gets here whole.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != protocol.ContentType {
			fail(w, http.StatusUnsupportedMediaType, "", "the body must be %s, not %q", protocol.ContentType, ct)
			return false
		}
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(w, http.StatusRequestEntityTooLarge, "", "the body is larger than %d bytes", tooBig.Limit)
			return false
		}
		fail(w, http.StatusBadRequest, "", "the body is not valid JSON: %v", err)
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		fail(w, http.StatusBadRequest, "", "the body must hold one JSON object and nothing after it")
		return false
	}
	return true
}

// parseAddresses checks the agent's addresses: at least one, at most
// protocol.MaxAgentAddresses, each an IP address.
func parseAddresses(field string, in []string) ([]netip.Addr, []string, error) {
	if len(in) == 0 {
		return nil, nil, fmt.Errorf("%s: at least one address is required", field)
	}
	if len(in) > protocol.MaxAgentAddresses {
		return nil, nil, fmt.Errorf("%s: at most %d addresses, not %d", field, protocol.MaxAgentAddresses, len(in))
	}
	addrs := make([]netip.Addr, len(in))
	canon := make([]string, len(in))
	for i, s := range in {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, nil, fmt.Errorf("%s[%d]: %q is not an IP address", field, i, s)
		}
		addrs[i], canon[i] = a.Unmap(), a.Unmap().String()
	}
	return addrs, canon, nil
}

// waitParam parses the wait query parameter: whole seconds from 0 to
// protocol.MaxWaitSeconds; absent is 0.
func waitParam(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > protocol.MaxWaitSeconds {
		return 0, fmt.Errorf("wait must be whole seconds from 0 to %d, not %q", protocol.MaxWaitSeconds, v)
	}
	return time.Duration(n) * time.Second, nil
}
