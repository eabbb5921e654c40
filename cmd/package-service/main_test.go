package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// TestBinary builds package-service and runs it as a real process.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "package-service")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil || strings.TrimSpace(string(out)) != "package-service v9.9.9-test" {
			t.Errorf("--version: %q %v", out, err)
		}
	})

	t.Run("serves content until SIGTERM", func(t *testing.T) {
		// The file's ports and store are not used: the flags override them.
		config := hosttest.WriteConfig(t, fmt.Sprintf("siteServer: paris-1\nsites: [paris]\n"+
			"task: {port: 8080, healthPort: 8081}\npackage: {port: %d, healthPort: %d, storagePath: /nowhere}\n",
			hosttest.FreePort(t), hosttest.FreePort(t)))
		storage := filepath.Join(t.TempDir(), "content")
		port, healthPort := hosttest.FreePort(t), hosttest.FreePort(t)
		var stderr bytes.Buffer
		// Plain HTTP, as in development: the task service's test covers HTTPS.
		// On an address of its own: a port free on 127.0.0.1 may be taken on
		// another loopback address (every interface, without --listen-host).
		cmd := exec.Command(bin, "--config", config, "--storage-path", storage, "--insecure-http", "--no-replication", "--listen-host", "127.0.0.4",
			"--port", fmt.Sprint(port), "--health-port", fmt.Sprint(healthPort))
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		defer func() {
			_ = cmd.Process.Kill()
			if t.Failed() {
				t.Logf("package-service's log:\n%s", stderr.String())
			}
		}()

		// Alive but not ready while its store is missing.
		health := fmt.Sprintf("http://127.0.0.4:%d", healthPort)
		hosttest.WaitReady(t, health+"/healthz", exited)
		resp, err := http.Get(health + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), storage) {
			t.Errorf("/readyz without the store: %d %q, want 503 without the path %s", resp.StatusCode, body, storage)
		}

		// A store that appears with content in it (a volume mounted late) is
		// scanned, and its content served once hashed.
		const content = "a disk image, in a manner of speaking"
		sum := sha256.Sum256([]byte(content))
		digest := "sha256:" + hex.EncodeToString(sum[:])
		if err := os.MkdirAll(filepath.Join(storage, "sha256"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(storage, "sha256", hex.EncodeToString(sum[:])), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		hosttest.WaitReady(t, health+"/readyz", exited)

		var info struct {
			SiteServer string `json:"siteServer"`
			Version    string `json:"version"`
		}
		hosttest.GetJSON(t, fmt.Sprintf("http://127.0.0.4:%d/v1/info", port), &info)
		if info.SiteServer != "paris-1" || info.Version != "v9.9.9-test" {
			t.Errorf("/v1/info = %+v", info)
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.4:%d/v1/content/%s", port, digest), nil)
			req.Header.Set("Range", "bytes=2-5")
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusPartialContent && string(body) == content[2:6] {
				break
			}
			if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
				t.Fatalf("GET %s bytes=2-5: %d %q, want 206 %q", digest, resp.StatusCode, body, content[2:6])
			}
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("package-service exited with %v after SIGTERM, want status 0", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("package-service still runs 15s after SIGTERM")
		}
	})

	t.Run("refuses a bad configuration", func(t *testing.T) {
		valid := "siteServer: central\ntask: {port: 9000, healthPort: 9001}\n" +
			"package: {port: 9000, healthPort: 9001, storagePath: /data}\n"
		for _, tt := range []struct {
			name   string
			config string
			flags  []string
			want   string
		}{
			{"missing siteServer", strings.Replace(valid, "siteServer: central", "sites: [paris]", 1), nil,
				"siteServer must be set"},
			{"unknown field", strings.Replace(valid, "storagePath: /data", "storagePth: /data", 1), nil,
				`unknown field \"storagePth\"`},
			{"negative bandwidth", strings.Replace(valid, "storagePath: /data", "storagePath: /data, bandwidthLimit: -5", 1), nil,
				"package.bandwidthLimit"},
			{"empty storage path flag", valid, []string{"--storage-path", ""}, "package.storagePath must be set"},
			{"same port for API and probes", valid, []string{"--health-port", "9000"},
				"package.port and package.healthPort must differ"},
			{"missing file", "", nil, "no such file"},
			{"negative connection cap flag", valid, []string{"--max-connections", "-1"},
				"package.maxConnections must be 0 (the default) or positive, not -1"},
			{"unreadable kubeconfig for replication", valid, []string{"--kubeconfig", "/nonexistent/kubeconfig"},
				"loading the kubeconfig /nonexistent/kubeconfig"},
			{"negative transfer count", strings.Replace(valid, "storagePath: /data", "storagePath: /data, replication: {maxTransfers: -1}", 1), nil,
				"package.replication.maxTransfers must be 0 (the default) or positive, not -1"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				config := filepath.Join(t.TempDir(), "absent.yaml")
				if tt.config != "" {
					config = hosttest.WriteConfig(t, tt.config)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				out, err := exec.CommandContext(ctx, bin, append([]string{"--config", config}, tt.flags...)...).CombinedOutput()
				var exitErr *exec.ExitError
				if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
					t.Fatalf("package-service exited with %v, want status 1; output:\n%s", err, out)
				}
				if !strings.Contains(string(out), tt.want) {
					t.Errorf("output does not contain %q:\n%s", tt.want, out)
				}
			})
		}
	})
}
