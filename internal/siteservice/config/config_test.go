package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeConfig writes content as a configuration file and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMarshalLoadRoundTrip(t *testing.T) {
	for _, c := range []Config{
		Defaults("central", nil),
		func() Config {
			c := Defaults("paris-1", []string{"paris", "lyon"})
			c.Task.Port, c.Task.HealthPort = 9000, 9001
			c.Package.Port, c.Package.HealthPort = 9100, 9101
			c.Package.StoragePath = "/data/content"
			c.Package.BandwidthLimit = 10 << 20
			c.Task.MaxConnections, c.Task.MinTransferRate = 20000, 512
			c.Package.MaxConnections, c.Package.MinTransferRate, c.Package.ScrubRate = 300, 4096, 1<<20
			return c
		}(),
	} {
		t.Run(c.SiteServer, func(t *testing.T) {
			data, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Load(writeConfig(t, data))
			if err != nil {
				t.Fatalf("Load of the marshalled configuration:\n%s\nfailed: %v", data, err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Errorf("round trip gave %+v, want %+v\nfile:\n%s", got, c, data)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := Defaults("central", nil)
	if c.Task.Port != 8080 || c.Task.HealthPort != 8081 || c.Package.Port != 8080 ||
		c.Package.HealthPort != 8081 || c.Package.StoragePath != "/var/lib/site-operator/content" {
		t.Errorf("Defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Defaults do not validate: %v", err)
	}
	// The SiteServer controller's golden ConfigMaps hold this rendering:
	// fields added since have zero-means-default and are left out.
	data, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	const want = `package:
  healthPort: 8081
  port: 8080
  storagePath: /var/lib/site-operator/content
siteServer: central
task:
  healthPort: 8081
  port: 8080
`
	if data != want {
		t.Errorf("Defaults render\n%s\nwant\n%s", data, want)
	}
}

func TestLoadRejects(t *testing.T) {
	const valid = `siteServer: central
task: {port: 8080, healthPort: 8081}
package: {port: 8080, healthPort: 8081, storagePath: /data}
`
	if _, err := Load(writeConfig(t, valid)); err != nil {
		t.Fatalf("the valid base configuration does not load: %v", err)
	}
	tests := []struct {
		name    string
		content string
		want    []string // substrings of the error
	}{
		{"unknown top-level field", valid + "sitess: [paris]\n", []string{`unknown field "sitess"`}},
		{"unknown nested field", strings.Replace(valid, "port: 8080, healthPort", "prot: 8080, port: 8080, healthPort", 1),
			[]string{`unknown field "prot"`}},
		{"not YAML of the right shape", "siteServer: [a, b]\n", []string{"parsing the service configuration"}},
		{"missing siteServer", strings.Replace(valid, "siteServer: central", "sites: [paris]", 1),
			[]string{"siteServer must be set"}},
		{"missing ports", "siteServer: central\n",
			[]string{"task.port", "task.healthPort", "package.port", "package.healthPort"}},
		{"port out of range", strings.Replace(valid, "healthPort: 8081}\npackage", "healthPort: 70000}\npackage", 1),
			[]string{"task.healthPort must be a port between 1 and 65535, not 70000"}},
		{"negative bandwidth", strings.Replace(valid, "storagePath: /data", "storagePath: /data, bandwidthLimit: -1", 1),
			[]string{"package.bandwidthLimit"}},
		{"negative limits", strings.NewReplacer("healthPort: 8081}\npackage", "healthPort: 8081, maxConnections: -1, minTransferRate: -2}\npackage",
			"storagePath: /data", "storagePath: /data, maxConnections: -3, minTransferRate: -4, scrubRate: -5").Replace(valid),
			[]string{"task.maxConnections must be 0 (the default) or positive, not -1", "task.minTransferRate", "package.maxConnections",
				"package.minTransferRate", "package.scrubRate must be 0 (the default) or positive, not -5"}},
		{"listen host not an address", valid + "listenHost: 'http://10.0.0.1'\n", []string{`listenHost must be an IP address or a host name, not "http://10.0.0.1"`}},
		{"TLS files with TLS disabled", valid + "tls: {disabled: true, certFile: /x/tls.crt}\n",
			[]string{"tls.certFile and tls.keyFile must not be set with tls.disabled: true"}},
		{"unknown TLS field", valid + "tls: {insecure: true}\n", []string{`unknown field "insecure"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load accepted:\n%s", tt.content)
			}
			for _, want := range append(tt.want, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestTLSAndListenHost(t *testing.T) {
	base := "siteServer: central\ntask: {port: 8080, healthPort: 8081}\npackage: {port: 8080, healthPort: 8081, storagePath: /data}\n"
	tests := []struct {
		name              string
		extra             string
		wantDisabled      bool
		wantCert, wantKey string
		wantListenHost    string
	}{
		{"HTTPS with the mounted Secret by default", "", false, DefaultTLSDir + "/tls.crt", DefaultTLSDir + "/tls.key", ""},
		{"files of its own", "tls: {certFile: /certs/c.pem, keyFile: /certs/k.pem}\n", false, "/certs/c.pem", "/certs/k.pem", ""},
		{"plain HTTP only when asked", "tls: {disabled: true}\n", true, DefaultTLSDir + "/tls.crt", DefaultTLSDir + "/tls.key", ""},
		{"a pod IP", "listenHost: 10.244.1.7\n", false, DefaultTLSDir + "/tls.crt", DefaultTLSDir + "/tls.key", "10.244.1.7"},
		{"an IPv6 pod IP", "listenHost: 'fd00::7'\n", false, DefaultTLSDir + "/tls.crt", DefaultTLSDir + "/tls.key", "fd00::7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(writeConfig(t, base+tt.extra))
			if err != nil {
				t.Fatal(err)
			}
			cert, key := c.TLS.Files()
			if c.TLS.Disabled != tt.wantDisabled || cert != tt.wantCert || key != tt.wantKey || c.ListenHost != tt.wantListenHost {
				t.Errorf("got disabled %v, files %s %s, listenHost %q", c.TLS.Disabled, cert, key, c.ListenHost)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if err == nil || !strings.Contains(err.Error(), "absent.yaml") {
		t.Errorf("Load of a missing file: %v, want an error naming the file", err)
	}
}
