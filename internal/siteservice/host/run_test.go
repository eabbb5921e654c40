package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

// fakeService records how Run told it to serve.
type fakeService struct {
	err     error
	serving *Serving
}

func (f fakeService) ListenAndServe(ctx context.Context) error {
	*f.serving = servingOf(ctx)
	<-ctx.Done()
	return f.err
}

func testCommand(got *config.Config, serving *Serving, serveErr error) Command {
	return Command{
		Name:    "test-service",
		Version: "v1.2.3",
		Section: func(c *config.Config) Section {
			return Section{Name: "task", Port: &c.Task.Port, HealthPort: &c.Task.HealthPort,
				MaxConnections: &c.Task.MaxConnections, MinTransferRate: &c.Task.MinTransferRate}
		},
		Flags: func(fs *flag.FlagSet) map[string]func(*config.Config) {
			bw := fs.Int64("bandwidth", 0, "")
			return map[string]func(*config.Config){"bandwidth": func(c *config.Config) { c.Package.BandwidthLimit = *bw }}
		},
		New: func(cfg config.Config, _ string, _ *slog.Logger) (Service, error) {
			if err := cfg.Validate(); err != nil {
				return nil, err
			}
			*got = cfg
			return fakeService{serveErr, serving}, nil
		},
	}
}

func TestRun(t *testing.T) {
	path := hosttest.WriteConfig(t, "siteServer: paris-1\ntask: {port: 9000, healthPort: 9001, maxConnections: 50}\n"+
		"package: {port: 9100, healthPort: 9101, storagePath: /data}\n")
	certFile, keyFile, _ := hosttest.WriteCertificate(t, "localhost", "127.0.0.1")
	cancelled, cancel := context.WithCancel(context.Background())
	cancel() // the service stops at once, as after SIGTERM
	nofile, ok := fileLimit()
	if !ok {
		t.Fatal("no file limit")
	}
	const overFileLimit = 1 << 40 // more than any RLIMIT_NOFILE

	for _, tt := range []struct {
		name     string
		args     []string
		serveErr error
		wantCode int
		wantOut  string // in standard output or error
		want     func(c *config.Config)
		// How the service is told to serve, when want is set.
		wantTLS        bool
		wantListenHost string
	}{
		{name: "version", args: []string{"--version"}, wantOut: "test-service v1.2.3\n"},
		{name: "the file alone: HTTPS with the default files", args: []string{"--config", path}, wantCode: 1,
			wantOut: "Loading the serving certificate"},
		{name: "the file alone, plain HTTP", args: []string{"--config", path, "--insecure-http"},
			want: func(c *config.Config) { c.TLS.Disabled = true }, wantTLS: false},
		{name: "HTTPS with certificate files", args: []string{"--config", path, "--tls-cert-file", certFile, "--tls-key-file", keyFile},
			want: func(c *config.Config) { c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile }, wantTLS: true},
		{name: "a broken key", args: []string{"--config", path, "--tls-cert-file", certFile, "--tls-key-file", certFile},
			wantCode: 1, wantOut: "Loading the serving certificate"},
		{name: "flags over the file", args: []string{"--config", path, "--port", "7000", "--health-port", "7001",
			"--max-connections", "20", "--min-transfer-rate", "4096", "--bandwidth", "99", "--listen-host", "127.0.0.9", "--insecure-http"},
			want: func(c *config.Config) {
				c.Task.Port, c.Task.HealthPort, c.Task.MaxConnections, c.Task.MinTransferRate = 7000, 7001, 20, 4096
				c.Package.BandwidthLimit = 99
				c.ListenHost, c.TLS.Disabled = "127.0.0.9", true
			}, wantListenHost: "127.0.0.9"},
		{name: "a cap over the file limit", args: []string{"--config", path, "--max-connections", strconv.Itoa(overFileLimit), "--insecure-http"},
			wantOut: fmt.Sprintf(`"msg":"Capping maxConnections under the file limit","asked":%d,"used":%d`,
				overFileLimit, connectionsAllowed(nofile, 1)),
			want: func(c *config.Config) {
				c.Task.MaxConnections = connectionsAllowed(nofile, 1)
				c.TLS.Disabled = true
			}},
		{name: "unknown flag", args: []string{"--config", path, "--prot", "1"}, wantCode: 2,
			wantOut: "flag provided but not defined: -prot"},
		{name: "arguments", args: []string{"--config", path, "extra"}, wantCode: 1, wantOut: `unexpected arguments [\"extra\"]`},
		{name: "missing file", args: []string{"--config", path + ".absent"}, wantCode: 1, wantOut: "Loading the configuration"},
		{name: "invalid after the flags", args: []string{"--config", path, "--health-port", "9000"}, wantCode: 1,
			wantOut: "task.port and task.healthPort must differ"},
		{name: "serving fails", args: []string{"--config", path, "--insecure-http"}, serveErr: errors.New("port busy"), wantCode: 1,
			wantOut: "Running the test-service"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got config.Config
			var serving Serving
			var out bytes.Buffer
			code := run(cancelled, testCommand(&got, &serving, tt.serveErr), tt.args, &out, &out)
			if code != tt.wantCode || !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("run = %d, output %q; want %d and %q", code, out.String(), tt.wantCode, tt.wantOut)
			}
			if tt.want != nil {
				want, err := config.Load(path)
				if err != nil {
					t.Fatal(err)
				}
				tt.want(&want)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("service built with %+v, want %+v", got, want)
				}
				if (serving.TLS != nil) != tt.wantTLS || serving.ListenHost != tt.wantListenHost {
					t.Errorf("told to serve with TLS %v on %q, want TLS %v on %q", serving.TLS != nil, serving.ListenHost, tt.wantTLS, tt.wantListenHost)
				}
			}
		})
	}
}

// The libraries' logs (controller-runtime, client-go through klog) go to
// the service's JSON log: without a logger set, controller-runtime drops
// them and prints a stack trace instead. Run sets the process's loggers
// once, as a binary does, so the test runs it in a process of its own.
func TestRunLogsTheLibrariesAsJSON(t *testing.T) {
	if os.Getenv("HOST_TEST_RUN_LOGS") == "1" {
		path := hosttest.WriteConfig(t, "siteServer: paris-1\ntask: {port: 9000, healthPort: 9001}\n"+
			"package: {port: 9100, healthPort: 9101, storagePath: /data}\n")
		cmd := testCommand(new(config.Config), new(Serving), nil)
		cmd.New = func(config.Config, string, *slog.Logger) (Service, error) {
			ctrllog.Log.WithName("cache").Info("from controller-runtime", "n", 1)
			klog.InfoS("from client-go", "n", 2)
			return nil, errors.New("stop here")
		}
		os.Exit(run(context.Background(), cmd, []string{"--config", path, "--insecure-http"}, os.Stdout, os.Stderr))
	}
	child := exec.Command(os.Args[0], "-test.run=^TestRunLogsTheLibrariesAsJSON$")
	child.Env = append(os.Environ(), "HOST_TEST_RUN_LOGS=1")
	var stderr bytes.Buffer
	child.Stderr = &stderr
	err := child.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("run: %v, want exit status 1; output %s", err, stderr.String())
	}
	want := map[string]bool{"from controller-runtime": false, "from client-go": false}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line of the log is not JSON: %q (%v)", line, err)
		}
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "from ") {
			want[msg] = true
		}
	}
	for msg, seen := range want {
		if !seen {
			t.Errorf("%q is not in the log:\n%s", msg, stderr.String())
		}
	}
}
