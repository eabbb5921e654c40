package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files of the state directory.
const (
	// StateFile holds State, readable by anyone: what `agent status` shows.
	StateFile = "state.json"
	// CredentialFile holds the credential alone, mode 0600.
	CredentialFile = "credential"
)

// DefaultStateDir is where the agent keeps its state unless told otherwise.
const DefaultStateDir = "/var/lib/site-agent"

// State is what the agent knows of itself and its connection, kept in the
// state directory so that `agent status` can show it and a restarted agent
// keeps its identity. The credential is kept apart (CredentialFile).
type State struct {
	// Namespace and Computer name the Computer the agent is, empty before
	// it registered.
	Namespace string `json:"namespace,omitempty"`
	Computer  string `json:"computer,omitempty"`
	// Site is the agent's site, as the last answer said; empty when its
	// addresses map to none.
	Site string `json:"site,omitempty"`
	// SiteServer is the SiteServer whose task service answered last.
	SiteServer string `json:"siteServer,omitempty"`
	// TaskEndpoint is the URL of the task service the agent checks in with.
	TaskEndpoint string `json:"taskEndpoint,omitempty"`
	// Locator is the locator that answered last.
	Locator string `json:"locator,omitempty"`
	// Addresses are the addresses the agent located with.
	Addresses []string `json:"addresses,omitempty"`
	// RegisteredAt is when the agent received its credential.
	RegisteredAt time.Time `json:"registeredAt,omitzero"`
	// LastCheckIn is when a check-in was last answered (written at most
	// about once a minute while nothing else changes).
	LastCheckIn time.Time `json:"lastCheckIn,omitzero"`
	// AgentVersion is the version of the agent that wrote the file.
	AgentVersion string `json:"agentVersion,omitempty"`
}

// ComputerName is "namespace/name", or "" before registration.
func (s State) ComputerName() string {
	if s.Computer == "" {
		return ""
	}
	return s.Namespace + "/" + s.Computer
}

// sameButCheckIn says whether s and o differ at most in LastCheckIn.
func (s State) sameButCheckIn(o State) bool {
	s.LastCheckIn, o.LastCheckIn = time.Time{}, time.Time{}
	a, _ := json.Marshal(s)
	b, _ := json.Marshal(o)
	return string(a) == string(b)
}

// ReadState reads the state file of dir; a missing file is an empty State
// and no error.
func ReadState(dir string) (State, error) {
	var s State
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("reading the agent's state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("reading the agent's state %s: %w", filepath.Join(dir, StateFile), err)
	}
	return s, nil
}

// WriteState writes the state file of dir atomically.
func WriteState(dir string, s State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the agent's state: %w", err)
	}
	if err := writeFileAtomic(dir, StateFile, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing the agent's state: %w", err)
	}
	return nil
}

// ReadCredential reads the credential of dir; "" and no error when there
// is none.
func ReadCredential(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, CredentialFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the agent's credential: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteCredential writes the credential of dir atomically, mode 0600.
func WriteCredential(dir, credential string) error {
	if err := writeFileAtomic(dir, CredentialFile, []byte(credential+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the agent's credential: %w", err)
	}
	return nil
}

// DeleteCredential removes the credential of dir; none is no error.
func DeleteCredential(dir string) error {
	if err := os.Remove(filepath.Join(dir, CredentialFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the agent's credential: %w", err)
	}
	return nil
}

// writeFileAtomic writes name in dir through a temporary file that is
// synced and renamed over it, so that a reader or a crash never sees half
// a file. The temporary file has mode perm before it holds anything.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	// The directory is readable, so that `agent status` works for any
	// user; the credential file itself is 0600.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() { _ = os.Remove(tmp) }() // after a successful rename, nothing to remove
	if err := f.Chmod(perm); err != nil {
		_ = f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// PrintStatus writes s for a person, or as JSON with asJSON; now is used
// to say how long ago the last check-in was.
func PrintStatus(w io.Writer, s State, asJSON bool, now time.Time) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return fmt.Errorf("printing the agent's state: %w", err)
		}
		return nil
	}
	orNone := func(v string) string {
		if v == "" {
			return "(none)"
		}
		return v
	}
	computer := s.ComputerName()
	if computer == "" {
		computer = "(not registered)"
	}
	server := orNone(s.SiteServer)
	if s.TaskEndpoint != "" {
		server += " at " + s.TaskEndpoint
	}
	checkIn := "never"
	if !s.LastCheckIn.IsZero() {
		checkIn = fmt.Sprintf("%s (%s ago)", s.LastCheckIn.UTC().Format(time.RFC3339), now.Sub(s.LastCheckIn).Round(time.Second))
	}
	_, err := fmt.Fprintf(w, "Computer:       %s\nSite:           %s\nTask server:    %s\nLast check-in:  %s\nAddresses:      %s\nAgent version:  %s\n",
		computer, orNone(s.Site), server, checkIn, orNone(strings.Join(s.Addresses, ", ")), orNone(s.AgentVersion))
	if err != nil {
		return fmt.Errorf("printing the agent's state: %w", err)
	}
	return nil
}
