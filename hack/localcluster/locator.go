package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/certs"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/simcluster"
)

// locatorPort is the port the chart and config/manager give the locator.
const locatorPort = "9443"

// exampleAddress is an agent address in a sample subnet
// (config/samples: 10.20.2.0/24 has no site of its own and inherits lyon).
const exampleAddress = "10.20.2.10"

// locatorAddress is where the manager's locator listens: port 9443 of the
// cluster's loopback address, or another free port there if 9443 is taken.
func locatorAddress(host string) (string, error) {
	addr := net.JoinHostPort(host, locatorPort)
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		return addr, nil
	}
	return simcluster.FreeAddress(host)
}

// locatorArgs turn the locator on in the manager, with the certificate the
// operator issues from its CA for the locator's Service names and addr's
// host.
func locatorArgs(addr string) []string {
	host, _, _ := net.SplitHostPort(addr)
	return []string{
		"--locator-bind-address=" + addr,
		"--locator-operator-ca",
		"--locator-hosts=" + host,
	}
}

// showLocator writes the CA bundle the operator publishes to caPath, locates
// exampleAddress and reads /v1/info of the first task endpoint of the
// answer, both trusting only that bundle as an agent does, and prints the
// curl commands that do the same from another shell with their answers.
func showLocator(ctx context.Context, c client.Client, namespace, addr, caPath string) error {
	bundle, err := waitForCABundle(ctx, c, namespace)
	if err != nil {
		return err
	}
	if err := os.WriteFile(caPath, bundle, 0o644); err != nil {
		return fmt.Errorf("writing the CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return fmt.Errorf("ConfigMap %s/%s key %s holds no PEM certificate", namespace, controllers.CAName, certs.CACertKey)
	}
	hc := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	defer hc.CloseIdleConnections()

	locateURL := "https://" + addr + protocol.LocatePath
	reqBody := `{"addresses":["` + exampleAddress + `"]}`
	// The sample Site is Ready once its task service is; the locator's
	// informers may see that a moment later.
	var answer protocol.LocateResponse
	var answerBody []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		answerBody, err = post(ctx, hc, locateURL, reqBody)
		if err == nil {
			answer = protocol.LocateResponse{}
			err = json.Unmarshal(answerBody, &answer)
		}
		if err == nil && answer.Rule == protocol.RuleSite && len(answer.TaskEndpoints) > 0 {
			break
		}
		if err == nil {
			err = fmt.Errorf("rule %s with %d task endpoints", answer.Rule, len(answer.TaskEndpoints))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("locating %s at %s: %w", exampleAddress, locateURL, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	infoURL := strings.TrimSuffix(answer.TaskEndpoints[0], "/") + "/v1/info"
	infoBody, err := get(ctx, hc, infoURL)
	if err != nil {
		return fmt.Errorf("reading %s: %w", infoURL, err)
	}
	log("The locator answers on https://%s, with a certificate of the operator's CA (bundle: ConfigMap %s/%s, written to %s). From another shell:\n\n"+
		"    curl --cacert %s -X POST -H 'Content-Type: application/json' \\\n        -d '%s' %s\n    %s\n"+
		"    curl --cacert %s %s\n    %s",
		addr, namespace, controllers.CAName, caPath,
		caPath, reqBody, locateURL, bytes.TrimSpace(answerBody),
		caPath, infoURL, bytes.TrimSpace(infoBody))
	return nil
}

// waitForCABundle returns the bundle agents trust, once the operator has
// published it.
func waitForCABundle(ctx context.Context, c client.Client, namespace string) ([]byte, error) {
	deadline := time.Now().Add(time.Minute)
	for {
		var cm corev1.ConfigMap
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: controllers.CAName}, &cm)
		if err == nil && cm.Data[certs.CACertKey] != "" {
			return []byte(cm.Data[certs.CACertKey]), nil
		}
		if err == nil {
			err = errors.New("no " + certs.CACertKey + " key yet")
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", namespace, controllers.CAName, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func post(ctx context.Context, hc *http.Client, url, body string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", protocol.ContentType)
	return do(hc, req)
}

func get(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return do(hc, req)
}

func do(hc *http.Client, req *http.Request) ([]byte, error) {
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}
