package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/simcluster"
)

// The demo agent's identity, and where its Computer goes.
const (
	agentHostname  = "demo-pc"
	agentNamespace = "default"
)

// startAgent creates a bootstrap token for the namespace default, runs one
// agent process (the agent binary, as on a managed computer) with the
// sample address, waits until its Computer is Ready, and says how to look
// at it and start more.
func startAgent(ctx context.Context, c client.Client, agentPath, stateDir, logDir, locator, caPath string) (*simcluster.Process, error) {
	id, secret := randomLower(6), randomLower(16)
	if err := simcluster.CreateBootstrapToken(ctx, c, id, secret, agentNamespace); err != nil {
		return nil, err
	}
	token := id + "." + secret
	agentDir, err := filepath.Abs(filepath.Join(stateDir, "agent"))
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, "agent.log")
	p, err := simcluster.StartProcess("agent", agentPath, []string{"run",
		"--locator", "https://" + locator, "--ca-file", caPath, "--token", token, "--state-dir", agentDir,
		"--addresses", exampleAddress, "--hostname", agentHostname, "--hardware-id", "demo-pc-0001",
		"--mac-addresses", "02:00:00:00:00:01", "--wait", "30s"}, logPath)
	if err != nil {
		return nil, fmt.Errorf("starting the agent: %w", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var comp siteopsv1.Computer
		err := c.Get(ctx, client.ObjectKey{Namespace: agentNamespace, Name: agentHostname}, &comp)
		if err == nil && meta.IsStatusConditionTrue(comp.Status.Conditions, siteopsv1.ConditionReady) {
			log("An agent runs (log: %s), registered as Computer %s/%s of site %q, checking in with %s. From another shell:\n\n"+
				"    %s status --state-dir %s\n    kubectl get computers -o wide\n\n"+
				"More agents register with the bootstrap token %s (Secret %s/%s%s), for example:\n\n"+
				"    %s run --locator https://%s --ca-file %s --token %s \\\n        --state-dir /tmp/agent-2 --addresses 10.20.2.11 --hostname pc-2 --hardware-id pc-2\n\n"+
				"Run a script on %s (it runs on this machine, as you) and watch the task:\n\n"+
				"    echo '{\"apiVersion\": \"siteops.io/v1alpha1\", \"kind\": \"DeploymentTask\", \"metadata\": {\"name\": \"hello\", \"namespace\": \"%s\"},\n"+
				"      \"spec\": {\"action\": {\"runScript\": {\"script\": \"echo hello from $(hostname)\"}}, \"targets\": {\"computers\": [\"%s\"]}}}' |\n"+
				"      kubectl create -f -\n"+
				"    kubectl get dt hello -w\n"+
				"    kubectl get computer %s -o jsonpath='{.status.lastTask.output}'",
				logPath, agentNamespace, agentHostname, comp.Status.Site, comp.Status.SiteServer,
				agentPath, agentDir,
				token, simcluster.TokenNamespace, siteopsv1.BootstrapTokenSecretPrefix, id,
				agentPath, locator, caPath, token,
				agentHostname, agentNamespace, agentHostname, agentHostname)
			return p, nil
		}
		if time.Now().After(deadline) {
			_ = p.Stop(5 * time.Second)
			return nil, fmt.Errorf("computer %s/%s is not Ready a minute after the agent started:\n%s", agentNamespace, agentHostname, p.LogTail(20))
		}
		select {
		case <-ctx.Done():
			_ = p.Stop(5 * time.Second)
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// randomLower draws n characters of [a-z0-9].
func randomLower(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
