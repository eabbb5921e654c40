// Command testpod is the pod runner's test container: it binds its pod's
// address as the site services do (--listen-host=$(POD_IP)) and lets a test
// look inside its container: files at container paths, its arguments and
// environment, a call to the API server as its ServiceAccount; and steer
// it: exit, fail its liveness probe, turn ready late.
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// serviceAccountDir is where a pod finds its ServiceAccount's credentials.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

func main() {
	host := flag.String("listen-host", "", "Address to listen on (the pod's).")
	port := flag.Int("port", 8080, "Port of the API.")
	healthPort := flag.Int("health-port", 8081, "Port of /readyz and /healthz.")
	readyAfter := flag.Duration("ready-after", 0, "How long /readyz answers 503 after the start.")
	flag.Parse()

	started := time.Now()
	var sick atomic.Bool
	api := http.NewServeMux()
	api.HandleFunc("GET /file", func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		_, _ = w.Write(data)
	})
	api.HandleFunc("PUT /file", func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		if err := os.WriteFile(r.URL.Query().Get("path"), data, 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	api.HandleFunc("GET /env", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"args": os.Args, "env": os.Environ()})
	})
	api.HandleFunc("POST /exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		fmt.Printf("Exiting with %d as asked\n", code)
		os.Exit(code)
	})
	api.HandleFunc("POST /sick", func(w http.ResponseWriter, _ *http.Request) { sick.Store(true) })
	api.HandleFunc("GET /whoami", whoami)

	health := http.NewServeMux()
	health.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if time.Since(started) < *readyAfter {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	})
	health.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if sick.Load() {
			http.Error(w, "sick", http.StatusInternalServerError)
		}
	})
	for _, s := range []struct {
		port int
		mux  *http.ServeMux
	}{{*port, api}, {*healthPort, health}} {
		ln, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(s.port)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("Listening on", ln.Addr())
		go func() { _ = http.Serve(ln, s.mux) }() //nolint:gosec // a test server
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	fmt.Println("Stopping on", <-sig)
}

// whoami asks the API server who the pod's ServiceAccount token
// authenticates, with client-go's in-cluster configuration: the
// environment's address, the mounted token and CA.
func whoami(w http.ResponseWriter, r *http.Request) {
	token, err := os.ReadFile(serviceAccountDir + "token")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ca, err := os.ReadFile(serviceAccountDir + "ca.crt")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := "https://" + net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")) +
		"/apis/authentication.k8s.io/v1/selfsubjectreviews"
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &review) != nil {
		http.Error(w, fmt.Sprintf("the API server answered %s: %s", resp.Status, data), http.StatusBadGateway)
		return
	}
	_, _ = w.Write([]byte(review.Status.UserInfo.Username))
}
