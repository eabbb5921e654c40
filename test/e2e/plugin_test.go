//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/plugin"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/topology"
)

// The kubectl plugin, the binary the suite built from cmd/kubectl-siteops,
// run with the cluster's kubeconfig: `kubectl siteops locate` explains the
// answer the manager's locator gives, and is that very answer.
var _ = Describe("Plugin", Ordered, func() {
	const (
		siteName   = "plg-a"
		serverName = "plg-a-srv"
		// wide holds narrow; an address in narrow is narrow's, and wide is what it
		// overrode (the longest prefix wins).
		wide, wideCIDR     = "plg-wide", "10.47.0.0/16"
		narrow, narrowCIDR = "plg-net", "10.47.5.0/24"
		// Addresses of agents: only located, never connected to.
		inNarrow, nowhere = "10.47.5.9", "198.51.100.147"
	)
	var bin string

	BeforeAll(func(ctx SpecContext) {
		// BuildCommands built every command of cmd/ next to the manager.
		bin = filepath.Join(filepath.Dir(managerBin), "kubectl-siteops")
		createSite(ctx, siteName)
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: siteName}}))).To(Succeed())
		})
		for name, cidr := range map[string]string{wide: wideCIDR, narrow: narrowCIDR} {
			sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: siteName}}
			Expect(k8s.Create(ctx, sn)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, sn))).To(Succeed()) })
		}
		// A task service only: the package services' volumes are the
		// other specs'.
		ss := siteServer(serverName, []string{siteName}, siteServerSelector(), storageClass)
		ss.Spec.Services.Package.Enabled = new(bool)
		Expect(k8s.Create(ctx, ss)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })

		By("waiting until the server's task service is ready and advertised")
		Eventually(func(g Gomega) {
			ss := getSiteServer(ctx, g, serverName)
			g.Expect(ss.ServesTasks()).To(BeTrue(), "task service available")
			g.Expect(ss.Status.Task.Advertised).NotTo(BeEmpty(), "status.task.advertised")
		}).WithContext(ctx).Should(Succeed())
	})

	// siteops runs the plugin with the cluster's kubeconfig and returns
	// its standard output; it fails the attempt on a non-zero exit.
	siteops := func(ctx context.Context, g Gomega, args ...string) []byte {
		cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", kc.KubeconfigPath}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		g.Expect(cmd.Run()).To(Succeed(), "kubectl-siteops %v: %s", args, stderr.String())
		return stdout.Bytes()
	}
	locateJSON := func(ctx context.Context, g Gomega, address string) plugin.LocateReport {
		var r plugin.LocateReport
		out := siteops(ctx, g, "locate", address, "-o", "json")
		g.Expect(json.Unmarshal(out, &r)).To(Succeed(), "%s", out)
		return r
	}

	It("names the site, the winning subnet, the subnet it overrode and the rule, as the locator answers", func(ctx SpecContext) {
		locator := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: operatorCAPool(ctx), MinVersion: tls.VersionTLS12}}}
		DeferCleanup(locator.CloseIdleConnections)
		Eventually(func(g Gomega) {
			r := locateJSON(ctx, g, inNarrow)
			g.Expect(r.Site).To(Equal(siteName), "site")
			g.Expect(r.Rule).To(Equal(protocol.RuleSite), "rule")
			g.Expect(r.Subnet).NotTo(BeNil(), "winning subnet")
			g.Expect(r.Subnet.Name).To(Equal(narrow), "winning subnet")
			g.Expect(r.Subnet.CIDR).To(Equal(narrowCIDR), "winning subnet's CIDR")
			g.Expect(r.Overridden).To(ContainElement(And(
				HaveField("Name", wide), HaveField("Role", topology.RoleLessSpecific))), "overridden subnets")
			g.Expect(r.Servers).To(ConsistOf(HaveField("Name", serverName)), "servers")

			// The manager's locator gives the same answer, endpoints in
			// the same order.
			answer := locate(ctx, g, locator, locatorAddress, inNarrow)
			g.Expect(answer.Site).To(Equal(r.Site), "the locator's site")
			g.Expect(answer.Subnet).To(Equal(r.Subnet.Name), "the locator's subnet")
			g.Expect(answer.Rule).To(Equal(r.Rule), "the locator's rule")
			g.Expect(answer.TaskEndpoints).To(Equal(r.TaskEndpoints), "the locator's task endpoints")
			g.Expect(answer.TaskEndpoints).To(Equal(getSiteServer(ctx, g, serverName).Status.Task.Advertised))
		}).WithContext(ctx).Should(Succeed())

		By("explaining it as text that fits a terminal")
		out := siteops(ctx, Default, "locate", inNarrow)
		Expect(string(out)).To(MatchRegexp(`(?m)^Site: +` + siteName + `$`))
		Expect(string(out)).To(MatchRegexp(`(?m)^Subnet: +` + narrow + ` ` + narrowCIDR))
		Expect(string(out)).To(MatchRegexp(`(?m)^Overrode: +- ` + wide + ` ` + wideCIDR + `.*less specific`))
		for _, line := range bytes.Split(out, []byte("\n")) {
			Expect(len([]rune(string(line)))).To(BeNumerically("<=", plugin.Width), "%s", line)
		}
	})

	It("says when an address is in no site", func(ctx SpecContext) {
		r := locateJSON(ctx, Default, nowhere)
		Expect(r.Site).To(BeEmpty())
		Expect(r.Subnet).To(BeNil())
		Expect(r.Rule).To(Equal(protocol.RuleNoSite))
	})

	It("shows the site's tree", func(ctx SpecContext) {
		Eventually(func(g Gomega) {
			var r plugin.SiteReport
			out := siteops(ctx, g, "site", siteName, "-o", "yaml")
			g.Expect(yaml.Unmarshal(out, &r)).To(Succeed(), "%s", out)
			g.Expect(r.Subnets).To(ConsistOf(HaveField("Name", wide), HaveField("Name", narrow)))
			g.Expect(r.Servers).To(ConsistOf(And(HaveField("Name", serverName), HaveField("TaskReady", true))))
			g.Expect(r.ServedBy).To(Equal([]string{serverName}))
		}).WithContext(ctx).Should(Succeed())
	})
})
