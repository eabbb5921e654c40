package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// TestBinary builds task-service and runs it as a real process.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := filepath.Join(t.TempDir(), "task-service")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("version", func(t *testing.T) {
		out, err := exec.Command(bin, "--version").Output()
		if err != nil || strings.TrimSpace(string(out)) != "task-service v9.9.9-test" {
			t.Errorf("--version: %q %v", out, err)
		}
	})

	t.Run("serves HTTPS on its listen host until SIGTERM", func(t *testing.T) {
		// The file's ports are free but unused: the flags override them.
		config := hosttest.WriteConfig(t, fmt.Sprintf("siteServer: paris-1\nsites: [paris]\n"+
			"task: {port: %d, healthPort: %d}\npackage: {port: 8080, healthPort: 8081, storagePath: /nowhere}\n",
			hosttest.FreePort(t), hosttest.FreePort(t)))
		port, healthPort := hosttest.FreePort(t), hosttest.FreePort(t)
		certFile, keyFile, roots := hosttest.WriteCertificate(t, "127.0.0.3")
		var stderr bytes.Buffer
		cmd := exec.Command(bin, "--config", config, "--listen-host", "127.0.0.3", "--no-agent-api",
			"--tls-cert-file", certFile, "--tls-key-file", keyFile,
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
				t.Logf("task-service's log:\n%s", stderr.String())
			}
		}()

		hosttest.WaitReady(t, fmt.Sprintf("http://127.0.0.3:%d/readyz", healthPort), exited)
		var info struct {
			SiteServer string   `json:"siteServer"`
			Sites      []string `json:"sites"`
			Version    string   `json:"version"`
		}
		hosttest.GetJSONWith(t, hosttest.HTTPSClient(roots), fmt.Sprintf("https://127.0.0.3:%d/v1/info", port), &info)
		if info.SiteServer != "paris-1" || len(info.Sites) != 1 || info.Sites[0] != "paris" || info.Version != "v9.9.9-test" {
			t.Errorf("/v1/info = %+v", info)
		}

		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("task-service exited with %v after SIGTERM, want status 0", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("task-service still runs 15s after SIGTERM")
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
			{"unknown field", strings.Replace(valid, "healthPort: 9001}\npackage", "healthPrt: 9001}\npackage", 1), nil,
				`unknown field \"healthPrt\"`},
			{"port out of range", strings.Replace(valid, "port: 9000, healthPort: 9001}\npackage", "port: 0, healthPort: 9001}\npackage", 1), nil,
				"task.port must be a port"},
			{"port flag out of range", valid, []string{"--port", "70000"}, "task.port must be a port between 1 and 65535, not 70000"},
			{"missing file", "", nil, "no such file"},
			{"negative transfer rate flag", valid, []string{"--min-transfer-rate", "-5"},
				"task.minTransferRate must be 0 (the default) or positive, not -5"},
			{"no serving certificate", valid, []string{"--tls-cert-file", "/nowhere/tls.crt"},
				"/nowhere/tls.crt"},
			{"no API configuration outside a pod", valid, []string{"--kubeconfig="},
				"pass --kubeconfig, or --no-agent-api"},
			{"unreadable kubeconfig", valid, []string{"--kubeconfig", "/nowhere/kubeconfig"},
				"loading the kubeconfig /nowhere/kubeconfig"},
		} {
			t.Run(tt.name, func(t *testing.T) {
				config := filepath.Join(t.TempDir(), "absent.yaml")
				if tt.config != "" {
					config = hosttest.WriteConfig(t, tt.config)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
				defer cancel()
				flags := tt.flags
				if !strings.Contains(tt.name, "API") && !strings.Contains(tt.name, "kubeconfig") {
					flags = append([]string{"--no-agent-api"}, flags...)
				}
				cmd := exec.CommandContext(ctx, bin, append([]string{"--config", config}, flags...)...)
				cmd.Env = append(os.Environ(), "KUBECONFIG=")
				out, err := cmd.CombinedOutput()
				var exitErr *exec.ExitError
				if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
					t.Fatalf("task-service exited with %v, want status 1; output:\n%s", err, out)
				}
				if !strings.Contains(string(out), tt.want) {
					t.Errorf("output does not contain %q:\n%s", tt.want, out)
				}
			})
		}
	})
}
