package task

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/siteops/site-operator/internal/siteservice/config"
	"github.com/siteops/site-operator/internal/siteservice/host"
	"github.com/siteops/site-operator/internal/siteservice/host/hosttest"
)

func TestNewRejects(t *testing.T) {
	for _, tt := range []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{"invalid configuration", func(c *config.Config) { c.SiteServer = "" }, "siteServer"},
		{"one port for API and probes", func(c *config.Config) { c.Task.HealthPort = c.Task.Port },
			"task.port and task.healthPort must differ"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Defaults("central", nil)
			tt.mutate(&cfg)
			if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestServe(t *testing.T) {
	cfg := config.Defaults("paris-1", []string{"paris", "lyon"})
	s, err := New(cfg, Options{ServiceOptions: host.ServiceOptions{Version: "v0.1.0", Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}})
	if err != nil {
		t.Fatal(err)
	}
	api, health := hosttest.Listen(t), hosttest.Listen(t)
	stop := hosttest.Serve(t, context.Background(), func(ctx context.Context) error { return s.Serve(ctx, api, health) })
	apiURL, healthURL := "http://"+api.Addr().String(), "http://"+health.Addr().String()

	if code, body := get(t, healthURL+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, healthURL+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}

	code, body := get(t, apiURL+"/v1/info")
	if code != 200 {
		t.Fatalf("/v1/info: %d %q", code, body)
	}
	var info host.Info
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatalf("/v1/info is not JSON: %v: %s", err, body)
	}
	want := host.Info{Service: "task", SiteServer: "paris-1", Sites: []string{"paris", "lyon"}, Version: "v0.1.0"}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("/v1/info = %+v, want %+v", info, want)
	}

	stop() // fails the test unless Serve returns nil within 10 s
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}
