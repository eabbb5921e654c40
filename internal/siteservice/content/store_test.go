package content

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/config"
)

const (
	imageA = "the content of package A, as its digest says"
	imageB = "the content of package B, which A must never serve"
)

// hexOf returns the file name of content in the store.
func hexOf(content string) string { return strings.TrimPrefix(digestOf(content), "sha256:") }

// quarantined lists the store's quarantine.
func quarantined(t *testing.T, storage string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(storage, "quarantine"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// getWithin is get with a client that gives up after 10 seconds.
func getWithin(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body), resp.Header
}

// TestDamagedContentIsNeverServed damages content under a running service.
func TestDamagedContentIsNeverServed(t *testing.T) {
	for _, tt := range []struct {
		name   string
		damage func(t *testing.T, path string)
	}{
		{"truncated", func(t *testing.T, path string) { must(t, os.Truncate(path, 10)) }},
		{"emptied", func(t *testing.T, path string) { must(t, os.Truncate(path, 0)) }},
		{"grown", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteString(" and more")
			must(t, errors.Join(err, f.Close()))
		}},
		{"a relative link to other content", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, os.Symlink(hexOf(imageB), path))
		}},
		{"a FIFO", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, syscall.Mkfifo(path, 0o644))
		}},
		{"a directory", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, os.Mkdir(path, 0o755))
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startService(t)
			digest, other := s.store(t, imageA), s.store(t, imageB)
			url := s.api + "/v1/content/" + digest
			if code, body, _ := getWithin(t, url); code != 200 || body != imageA {
				t.Fatalf("GET before the damage: %d %q", code, body)
			}
			path, _ := ContentPath(s.storage, digest)
			tt.damage(t, path)

			code, body, h := getWithin(t, url)
			if code != http.StatusInternalServerError || !strings.Contains(body, "failed its check") {
				t.Errorf("GET damaged content: %d %q, want 500 saying it failed its check", code, body)
			}
			if strings.Contains(body, imageB) || strings.Contains(body, imageA[:10]) {
				t.Errorf("GET damaged content served bytes: %q", body)
			}
			if h.Get("ETag") != "" || strings.Contains(h.Get("Cache-Control"), "immutable") {
				t.Errorf("GET damaged content: cache headers %v", h)
			}
			if q := quarantined(t, s.storage); len(q) != 1 || !strings.HasPrefix(q[0], hexOf(imageA)+".") {
				t.Errorf("quarantine holds %q, want the damaged file", q)
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the damaged file is still in place: %v", err)
			}
			if code, body, _ := getWithin(t, url); code != 404 {
				t.Errorf("GET after the quarantine: %d %q, want 404", code, body)
			}
			if code, body, _ := getWithin(t, s.api+"/v1/content/"+other); code != 200 || body != imageB {
				t.Errorf("GET of the other content: %d %q", code, body)
			}
			// Stored again, it is served again.
			s.store(t, imageA)
			if code, body, _ := getWithin(t, url); code != 200 || body != imageA {
				t.Errorf("GET once stored again: %d %q", code, body)
			}
		})
	}
}

// TestStartUpScan damages a store while its service is down, then starts a
// service over it.
func TestStartUpScan(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "content")
	must(t, os.Mkdir(storage, 0o755))
	// A first run stores content properly.
	first := map[string]string{
		"intact":     "intact content",
		"truncated":  "content truncated while the service was down",
		"bit rot":    "content rotten in place while the service was down",
		"linked":     "content replaced by a link while the service was down",
		"fifo":       "content replaced by a FIFO while the service was down",
		"outer link": "content replaced by a link out of the store",
	}
	func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		store := NewStore(storage, StoreOptions{})
		store.Start(ctx)
		for _, c := range first {
			must(t, store.Ingest(ctx, digestOf(c), int64(len(c)), strings.NewReader(c)))
		}
		cancel()
		store.Wait()
	}()
	pathOf := func(c string) string { return filepath.Join(storage, "sha256", hexOf(c)) }
	must(t, os.Truncate(pathOf(first["truncated"]), 3))
	rotten := []byte(first["bit rot"])
	rotten[0] ^= 1
	must(t, os.WriteFile(pathOf(first["bit rot"]), rotten, 0o644))
	must(t, os.Remove(pathOf(first["linked"])))
	must(t, os.Symlink(hexOf(first["intact"]), pathOf(first["linked"])))
	must(t, os.Remove(pathOf(first["fifo"])))
	must(t, syscall.Mkfifo(pathOf(first["fifo"]), 0o644))
	outside := filepath.Join(filepath.Dir(storage), "outside")
	must(t, os.WriteFile(outside, []byte(first["outer link"]), 0o644))
	must(t, os.Remove(pathOf(first["outer link"])))
	must(t, os.Symlink(outside, pathOf(first["outer link"])))
	// Files put there by other means.
	const adopted, wrong = "content copied in by hand, correctly", "content copied in by hand under a wrong name"
	must(t, os.WriteFile(pathOf(adopted), []byte(adopted), 0o644))
	must(t, os.WriteFile(filepath.Join(storage, "sha256", hexOf("something else")), []byte(wrong), 0o644))
	must(t, os.WriteFile(filepath.Join(storage, "sha256", "not-a-digest"), []byte("junk"), 0o644))
	must(t, os.WriteFile(filepath.Join(storage, "tmp", hexOf("half")+".1.partial"), []byte("ha"), 0o644))

	s := startServiceOn(t, storage, nil)
	if code, body, _ := getWithin(t, s.health+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	s.server.Store().Wait() // the scrub
	for name, c := range first {
		code, body, _ := getWithin(t, s.api+"/v1/content/"+digestOf(c))
		switch {
		case name == "intact":
			if code != 200 || body != c {
				t.Errorf("%s: %d %q", name, code, body)
			}
		case code == 200 || strings.Contains(body, c[:10]) || strings.Contains(body, first["intact"]):
			t.Errorf("%s: served: %d %q", name, code, body)
		}
	}
	if code, body, _ := getWithin(t, s.api+"/v1/content/"+digestOf(adopted)); code != 200 || body != adopted {
		t.Errorf("content of the right digest put there by hand: %d %q, want it served once hashed", code, body)
	}
	if code, body, _ := getWithin(t, s.api+"/v1/content/"+digestOf("something else")); code != 404 {
		t.Errorf("content under a wrong digest: %d %q, want 404", code, body)
	}
	// Damaged files and junk went to quarantine; the outside file is intact.
	if q := quarantined(t, storage); len(q) != 7 {
		t.Errorf("quarantine holds %q, want the 5 damaged files, the wrong one and the junk", q)
	}
	if data, err := os.ReadFile(outside); err != nil || string(data) != first["outer link"] {
		t.Errorf("the file the link pointed to: %q %v", data, err)
	}
	if left, _ := os.ReadDir(filepath.Join(storage, "tmp")); len(left) != 0 {
		t.Errorf("the unfinished ingest was not cleared: %v", left)
	}
}

// TestStartUpIsBoundedInTime starts over a store whose scrub takes seconds:
// the service is ready at once and serves what was size-checked.
func TestStartUpIsBoundedInTime(t *testing.T) {
	storage := filepath.Join(t.TempDir(), "content")
	must(t, os.Mkdir(storage, 0o755))
	big := strings.Repeat("disk image ", 200<<10) // 2.2 MB
	unrecorded := strings.Repeat("copied by hand ", 140<<10)
	func() {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		store := NewStore(storage, StoreOptions{})
		store.Start(ctx)
		must(t, store.Ingest(ctx, digestOf(big), int64(len(big)), strings.NewReader(big)))
		cancel()
		store.Wait()
	}()
	must(t, os.WriteFile(filepath.Join(storage, "sha256", hexOf(unrecorded)), []byte(unrecorded), 0o644))

	began := time.Now()
	s := startServiceOn(t, storage, func(c *config.Config) { c.Package.ScrubRate = 256 << 10 }) // 4.2 MB: 16s
	if code, body, _ := getWithin(t, s.health+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	if code, body, _ := getWithin(t, s.api+"/v1/content/"+digestOf(big)); code != 200 || body != big {
		t.Errorf("size-checked content: %d (%d bytes), want it served before the scrub", code, len(body))
	}
	code, body, h := getWithin(t, s.api+"/v1/content/"+digestOf(unrecorded))
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" || !strings.Contains(body, "being verified") {
		t.Errorf("content never verified, before its hash: %d %q, Retry-After %q", code, body, h.Get("Retry-After"))
	}
	if elapsed := time.Since(began); elapsed > 8*time.Second {
		t.Errorf("serving took %v, more than the paced scrub would leave", elapsed)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		code, body, _ := getWithin(t, s.api+"/v1/content/"+digestOf(unrecorded))
		if code == 200 && body == unrecorded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("content copied by hand still not served after its scrub: %d", code)
		}
	}
}

func TestIngest(t *testing.T) {
	storage := t.TempDir()
	store := NewStore(storage, StoreOptions{})
	store.Start(t.Context())
	t.Cleanup(store.Wait)
	digest := digestOf(imageA)

	for _, tt := range []struct {
		name    string
		digest  string
		size    int64
		content string
		want    string
	}{
		{"bytes of other content", digest, int64(len(imageB)), imageB, "the 50 bytes received are sha256:" + hexOf(imageB)},
		{"short", digest, int64(len(imageA)) + 1, imageA, "received 44 bytes, want 45"},
		{"long", digest, int64(len(imageA)) - 1, imageA, "received 44 bytes, want 43"},
		{"unknown size, wrong bytes", digest, -1, imageB, "are sha256:"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := store.Ingest(t.Context(), tt.digest, tt.size, strings.NewReader(tt.content))
			if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), digest) {
				t.Errorf("Ingest = %v, want ErrMismatch naming %s and %q", err, digest, tt.want)
			}
			if store.Has(digest) {
				t.Error("the store has the content after a failed ingest")
			}
			for _, dir := range []string{"sha256", "tmp"} {
				if left, _ := os.ReadDir(filepath.Join(storage, dir)); len(left) != 0 {
					t.Errorf("%s/ holds %v after a failed ingest", dir, left)
				}
			}
		})
	}
	t.Run("invalid digest", func(t *testing.T) {
		if err := store.Ingest(t.Context(), "sha256:ABC", 3, strings.NewReader("abc")); err == nil ||
			!strings.Contains(err.Error(), "64 lower-case hexadecimal digits") {
			t.Errorf("Ingest = %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := store.Ingest(ctx, digest, int64(len(imageA)), strings.NewReader(imageA)); !errors.Is(err, context.Canceled) {
			t.Errorf("Ingest = %v, want context.Canceled", err)
		}
	})
	t.Run("stored", func(t *testing.T) {
		must(t, store.Ingest(t.Context(), digest, -1, strings.NewReader(imageA)))
		if data, err := os.ReadFile(filepath.Join(storage, "sha256", hexOf(imageA))); err != nil || string(data) != imageA {
			t.Errorf("sha256/<hex> holds %q, %v", data, err)
		}
		f, err := store.Open(digest)
		must(t, err)
		f.Close()
		// Already here: the source is not read again.
		must(t, store.Ingest(t.Context(), digest, int64(len(imageA)), failingReader{}))
	})
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("read when it should not be") }

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
