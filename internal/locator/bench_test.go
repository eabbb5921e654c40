package locator

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/siteops/site-operator/internal/protocol"
)

// BenchmarkServeHTTP is one locate through the handler, without the
// network: decoding, lookup, ordering and encoding.
func BenchmarkServeHTTP(b *testing.B) {
	r, set := fixture(b)
	l := New(r, set, Options{})
	body := `{"addresses":["10.1.2.3"]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, protocol.LocatePath, strings.NewReader(body))
		req.Header.Set("Content-Type", protocol.ContentType)
		w := httptest.NewRecorder()
		l.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatal(w.Code, w.Body.String())
		}
	}
}
