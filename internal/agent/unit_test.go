package agent

import (
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name      string
		base, max time.Duration
		floor     float64
		random    float64
		want      []time.Duration // successive delays
	}{
		{"the top of each window doubles up to the cap", time.Second, 10 * time.Second, 0, 0.999999999,
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"full jitter reaches down to zero", time.Second, 10 * time.Second, 0, 0, []time.Duration{0, 0, 0}},
		{"a floor keeps the lower half of the window out", time.Second, 10 * time.Second, 0.5, 0,
			[]time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}},
		{"half of each window", 100 * time.Millisecond, time.Second, 0, 0.5,
			[]time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 500 * time.Millisecond}},
		{"a cap below the base caps the first delay", time.Second, 500 * time.Millisecond, 0, 0.999999999,
			[]time.Duration{500 * time.Millisecond, 500 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := backoff{base: tc.base, max: tc.max, floor: tc.floor, random: func() float64 { return tc.random }}
			for i, want := range tc.want {
				if got := b.next(); got.Round(time.Millisecond) != want {
					t.Errorf("delay %d = %s, want %s", i, got, want)
				}
			}
			b.reset()
			if got := b.next(); got.Round(time.Millisecond) != tc.want[0] {
				t.Errorf("after reset: %s, want %s", got, tc.want[0])
			}
		})
	}

	t.Run("random delays stay within their window and spread over it", func(t *testing.T) {
		b := backoff{base: 100 * time.Millisecond, max: 800 * time.Millisecond}
		for attempt := range 6 {
			ceiling := b.ceiling()
			want := min(100*time.Millisecond<<attempt, 800*time.Millisecond)
			if ceiling != want {
				t.Fatalf("window %d = %s, want %s", attempt, ceiling, want)
			}
			var lo, hi time.Duration = ceiling, 0
			for range 1000 {
				b.attempt = attempt
				d := b.next()
				if d < 0 || d >= ceiling {
					t.Fatalf("window %d: %s is outside [0, %s)", attempt, d, ceiling)
				}
				lo, hi = min(lo, d), max(hi, d)
			}
			if lo > ceiling/10 || hi < ceiling*9/10 {
				t.Errorf("window %d: 1000 delays span only [%s, %s] of [0, %s)", attempt, lo, hi, ceiling)
			}
			b.attempt = attempt + 1
		}
	})
}

func TestJitter(t *testing.T) {
	for _, tc := range []struct {
		d      time.Duration
		frac   float64
		random float64
		want   time.Duration
	}{
		{10 * time.Second, 0.5, 0, 10 * time.Second},
		{10 * time.Second, 0.5, 0.5, 12500 * time.Millisecond},
		{10 * time.Second, 0.2, 0.999999999, 12 * time.Second},
		{0, 0.5, 0.7, 0},
		{-time.Second, 0.5, 0.7, 0},
	} {
		if got := jitter(tc.d, tc.frac, func() float64 { return tc.random }); got.Round(time.Millisecond) != tc.want {
			t.Errorf("jitter(%s, %g) with %g = %s, want %s", tc.d, tc.frac, tc.random, got, tc.want)
		}
	}
	for range 1000 {
		if d := jitter(time.Second, 0.5, nil); d < time.Second || d >= 1500*time.Millisecond {
			t.Fatalf("jitter(1s, 0.5) = %s, outside [1s, 1.5s): a delay the server asked for must not be shortened", d)
		}
		if d := randomUpTo(time.Second, nil); d < 0 || d >= time.Second {
			t.Fatalf("randomUpTo(1s) = %s, outside [0, 1s)", d)
		}
	}
}

func TestNewRequestID(t *testing.T) {
	format := regexp.MustCompile(`^[A-Za-z0-9_-]{32}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewRequestID()
		if !format.MatchString(id) {
			t.Fatalf("request ID %q is not 32 characters of [A-Za-z0-9_-]", id)
		}
		if seen[id] {
			t.Fatalf("request ID %q drawn twice", id)
		}
		seen[id] = true
	}
}

func TestParseAddresses(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{in: []string{"10.0.0.1", " fd00::1 "}, want: []string{"10.0.0.1", "fd00::1"}},
		{in: []string{"::ffff:10.0.0.1", "FD00:0::1"}, want: []string{"10.0.0.1", "fd00::1"}},
		{in: []string{"10.0.0.1", ""}, want: []string{"10.0.0.1"}},
		{in: []string{"10.0.0.300"}, wantErr: `"10.0.0.300" is not an IP address`},
		{in: []string{"10.0.0.0/8"}, wantErr: "is not an IP address"},
		{in: nil, wantErr: "no address"},
		{in: strings.Split(strings.Repeat("10.0.0.1,", 17), ",")[:17], wantErr: "17 addresses, at most 16"},
	} {
		got, err := ParseAddresses(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseAddresses(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseAddresses(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestAddressesFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "addresses")
	src := AddressesFile(file)
	if _, err := src(); err == nil {
		t.Error("a missing file gives no error")
	}
	if err := os.WriteFile(file, []byte("# the office\n10.1.2.3\n\n  fd00::7  \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := src(); err != nil || !slices.Equal(got, []string{"10.1.2.3", "fd00::7"}) {
		t.Errorf("read %v, %v", got, err)
	}
	if err := os.WriteFile(file, []byte("10.9.9.9\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := src(); err != nil || !slices.Equal(got, []string{"10.9.9.9"}) {
		t.Errorf("after a change, read %v, %v: the file must be read at each call", got, err)
	}
	if err := os.WriteFile(file, []byte("not-an-address\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := src(); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("a bad line gives %v, want an error naming the file", err)
	}
}

func TestEnumerateAddresses(t *testing.T) {
	for _, tc := range []struct {
		cidr        string
		n           int
		first, last string
		wantErr     string
	}{
		{cidr: "10.1.0.0/16", n: 3, first: "10.1.0.1", last: "10.1.0.3"},
		{cidr: "10.1.0.0/16", n: 65534, first: "10.1.0.1", last: "10.1.255.254"},
		{cidr: "10.1.0.0/16", n: 65535, wantErr: "fewer than 65535"},
		{cidr: "10.1.0.250/16", n: 10, first: "10.1.0.250", last: "10.1.1.3"},
		{cidr: "127.1.0.0/16", n: 300, first: "127.1.0.1", last: "127.1.1.44"},
		{cidr: "192.168.1.0/30", n: 2, first: "192.168.1.1", last: "192.168.1.2"},
		{cidr: "192.168.1.0/30", n: 3, wantErr: "fewer than 3"},
		{cidr: "192.168.1.7/32", n: 1, first: "192.168.1.7", last: "192.168.1.7"},
		{cidr: "fd00:1::/64", n: 3, first: "fd00:1::1", last: "fd00:1::3"},
		{cidr: "fd00:1::ffff/112", n: 2, first: "fd00:1::ffff", last: "fd00:1::1:0", wantErr: "fewer than 2"},
		{cidr: "fd00:1::fffe/112", n: 2, first: "fd00:1::fffe", last: "fd00:1::ffff"},
		{cidr: "10.1.0.0", n: 1, wantErr: "parsing"},
	} {
		got, err := EnumerateAddresses(tc.cidr, tc.n)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("EnumerateAddresses(%s, %d): %v, want an error with %q", tc.cidr, tc.n, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("EnumerateAddresses(%s, %d): %v", tc.cidr, tc.n, err)
			continue
		}
		if len(got) != tc.n || got[0].String() != tc.first || got[len(got)-1].String() != tc.last {
			t.Errorf("EnumerateAddresses(%s, %d) = %d addresses %s … %s, want %s … %s", tc.cidr, tc.n, len(got), got[0], got[len(got)-1], tc.first, tc.last)
		}
		seen := map[netip.Addr]bool{}
		for _, a := range got {
			if seen[a] {
				t.Errorf("EnumerateAddresses(%s, %d) repeats %s", tc.cidr, tc.n, a)
			}
			seen[a] = true
		}
	}
}

func TestSimulatedIdentity(t *testing.T) {
	hosts, macs, ids := map[string]bool{}, map[string]bool{}, map[string]bool{}
	macFormat := regexp.MustCompile(`^([0-9a-f]{2}:){5}[0-9a-f]{2}$`)
	uuidFormat := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$`)
	for i := range 20000 {
		h, mac, id := SimulatedIdentity("", i)
		if hosts[h] || macs[mac] || ids[id] {
			t.Fatalf("agent %d repeats an identity: %s %s %s", i, h, mac, id)
		}
		if !macFormat.MatchString(mac) || !uuidFormat.MatchString(id) {
			t.Fatalf("agent %d: MAC %q or hardware ID %q is malformed", i, mac, id)
		}
		if _, err := ParseMACAddresses([]string{mac}); err != nil {
			t.Fatal(err)
		}
		hosts[h], macs[mac], ids[id] = true, true, true
	}
	if h, _, _ := SimulatedIdentity("", 42); h != "sim-agent-000042" {
		t.Errorf("agent 42 is %q", h)
	}
}

func TestParseMACAddresses(t *testing.T) {
	got, err := ParseMACAddresses([]string{"AA:BB:CC:DD:EE:FF", "00-1a-2b-3c-4d-5e"})
	if err != nil || !slices.Equal(got, []string{"aa:bb:cc:dd:ee:ff", "00:1a:2b:3c:4d:5e"}) {
		t.Errorf("got %v, %v", got, err)
	}
	if _, err := ParseMACAddresses([]string{"00:00:5e:00:53:01:02:03"}); err == nil {
		t.Error("a 64-bit address is accepted")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 1 ", time.Second},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"99999999", 24 * time.Hour},
	} {
		if got := parseRetryAfter(tc.v, now, time.Second); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestStateFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // created on first write
	if s, err := ReadState(dir); err != nil || s.ComputerName() != "" {
		t.Fatalf("no state yet: %+v, %v", s, err)
	}
	if c, err := ReadCredential(dir); err != nil || c != "" {
		t.Fatalf("no credential yet: %q, %v", c, err)
	}
	want := State{Namespace: "sites", Computer: "pc-1", Site: "paris", SiteServer: "paris-1",
		TaskEndpoint: "https://10.0.0.5:8443", Addresses: []string{"10.0.0.9"},
		LastCheckIn: time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC), AgentVersion: "v1"}
	if err := WriteState(dir, want); err != nil {
		t.Fatal(err)
	}
	if err := WriteCredential(dir, "s3cret"); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil || !got.sameButCheckIn(want) || !got.LastCheckIn.Equal(want.LastCheckIn) {
		t.Errorf("read %+v, %v; want %+v", got, err, want)
	}
	if c, err := ReadCredential(dir); err != nil || c != "s3cret" {
		t.Errorf("credential %q, %v", c, err)
	}
	for name, mode := range map[string]os.FileMode{CredentialFile: 0o600, StateFile: 0o644, ".": 0o755} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %o, want %o", name, fi.Mode().Perm(), mode)
		}
	}
	// Overwriting keeps the mode and leaves no temporary file.
	if err := WriteCredential(dir, "other"); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, CredentialFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("a rewritten credential has mode %o", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("the state directory holds %d files, want 2 (no temporary file left)", len(entries))
	}
	if err := DeleteCredential(dir); err != nil {
		t.Fatal(err)
	}
	if c, err := ReadCredential(dir); err != nil || c != "" {
		t.Errorf("after deleting: %q, %v", c, err)
	}
	if err := DeleteCredential(dir); err != nil {
		t.Errorf("deleting twice: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Errorf("a corrupt state file gives %v, want an error naming it", err)
	}
}

func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 5, 6, 7, 10, 0, 0, time.UTC)
	var b strings.Builder
	s := State{Namespace: "sites", Computer: "pc-1", Site: "paris", SiteServer: "paris-1",
		TaskEndpoint: "https://10.0.0.5:8443", LastCheckIn: now.Add(-90 * time.Second)}
	if err := PrintStatus(&b, s, false, now); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sites/pc-1", "paris", "paris-1 at https://10.0.0.5:8443", "2026-05-06T07:08:30Z (1m30s ago)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := PrintStatus(&b, State{}, false, now); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "(not registered)") || !strings.Contains(b.String(), "never") {
		t.Errorf("an empty state prints\n%s", b.String())
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if p50, p99 := h.drain(0.5, 0.99); p50 != 0 || p99 != 0 {
		t.Errorf("empty: %g %g", p50, p99)
	}
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.drain(0.5, 0.99)
	if p50 < 470 || p50 > 530 || p99 < 940 || p99 > 1050 {
		t.Errorf("1..1000 ms: p50 %g, p99 %g", p50, p99)
	}
	if p50, _ := h.drain(0.5, 0.99); p50 != 0 {
		t.Errorf("drain does not empty the histogram: %g", p50)
	}
	h.record(-time.Second)
	h.record(3 * time.Microsecond)
	if p50, p99 := h.drain(0.5, 0.99); p50 != 0 || p99 != 0.003 {
		t.Errorf("tiny latencies: %g %g", p50, p99)
	}
	for us := range uint64(1 << 20) {
		if b := bucketOf(us); b < 0 || b >= len(h.buckets) {
			t.Fatalf("%dus falls in bucket %d", us, b)
		}
	}
	if b := bucketOf(1 << 62); b >= len(h.buckets) {
		t.Fatalf("2^62us falls in bucket %d", b)
	}
}
