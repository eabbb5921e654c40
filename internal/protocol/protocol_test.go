package protocol

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestStandardLibraryOnly keeps the agent's side of the contract free of
// the operator's dependencies: the package imports nothing outside the
// standard library.
func TestStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/siteops/site-operator/internal/protocol" {
			t.Errorf("protocol depends on %s, outside the standard library", dep)
		}
	}
}

// TestLocateWireNames pins the JSON names that ARCHITECTURE.md §3 makes the
// contract.
func TestLocateWireNames(t *testing.T) {
	b, err := json.Marshal(LocateResponse{Site: "s", Subnet: "n", Address: "10.0.0.1", Rule: RuleSite,
		TaskEndpoints: []string{"https://t"}, PackageEndpoints: []string{"https://p"}, RetryAfterSeconds: 30})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"site":"s","subnet":"n","address":"10.0.0.1","rule":"Site","taskEndpoints":["https://t"],"packageEndpoints":["https://p"],"retryAfterSeconds":30}`
	if string(b) != want {
		t.Errorf("LocateResponse encodes as\n%s\nwant\n%s", b, want)
	}
	var req LocateRequest
	if err := json.Unmarshal([]byte(`{"addresses":["10.0.0.1","fd00::1"]}`), &req); err != nil || len(req.Addresses) != 2 {
		t.Errorf("LocateRequest decodes as %+v, %v", req, err)
	}
}
