//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/simcluster"
	"github.com/siteops/site-operator/internal/tasks"
)

// The reference description's imaging flow, with real processes: an agent
// at site A captures its disk into a Package through its site's package
// service; the package service of site B replicates it; a deployImage task
// for a computer of site B waits while it does, then that computer's agent
// downloads the image from its site's package service, verifies it and
// writes it to its disk, byte for byte. A package server added to site B
// later receives the image before a new agent of site B gets the work.
var _ = Describe("Imaging", Ordered, func() {
	const (
		siteA, siteB      = "img-a", "img-b"
		srvA, srvB, srvB2 = "img-a-srv", "img-b-srv", "img-b-srv2"
		namespace         = "imaging"
		tokenID           = "e2eimg"
		tokenSecret       = "e2eimg0123456789"
		imageSize         = 256 << 20
		golden            = "golden"
	)
	// A package service of site B copies at most this fast, so that the
	// specs see the tasks wait while it does (256 MiB: about 4 s).
	limit := resource.MustParse("64Mi")
	var (
		diskA, diskB, diskB2 string
		imageDigest          string
		caFile               string
		capturer, deployee   *agentProc
	)

	getGolden := func(ctx context.Context, g Gomega) *siteopsv1.Package {
		p := &siteopsv1.Package{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: golden}, p)).To(Succeed())
		return p
	}
	siteState := func(p *siteopsv1.Package, site string) string {
		for _, s := range p.Status.Sites {
			if s.Site == site {
				return s.State
			}
		}
		return ""
	}
	serverCopy := func(p *siteopsv1.Package, server string) *siteopsv1.PackageServerStatus {
		for i := range p.Status.Servers {
			if p.Status.Servers[i].Server == server {
				return &p.Status.Servers[i]
			}
		}
		return nil
	}
	imagingDiagnostics := func(ctx context.Context) string {
		s := diagnostics(ctx)
		var pkgs siteopsv1.PackageList
		_ = k8s.List(ctx, &pkgs, client.InNamespace(namespace))
		for _, p := range pkgs.Items {
			s += fmt.Sprintf("Package %s: sites=%+v servers=%+v\n", p.Name, p.Status.Sites, p.Status.Servers)
		}
		var list siteopsv1.DeploymentTaskList
		_ = k8s.List(ctx, &list, client.InNamespace(namespace))
		for _, t := range list.Items {
			s += fmt.Sprintf("Task %s: phase=%s targets=%+v sites=%+v failures=%+v\n", t.Name, t.Status.Phase,
				t.Status.Targets, t.Status.Sites, t.Status.Failures)
			for _, c := range t.Status.Conditions {
				s += fmt.Sprintf("  %s=%s %s: %s\n", c.Type, c.Status, c.Reason, c.Message)
			}
		}
		return s
	}
	expectPhase := func(ctx context.Context, name, phase string, timeout time.Duration) *siteopsv1.DeploymentTask {
		GinkgoHelper()
		return expectTaskPhase(ctx, namespace, name, phase, timeout, func() string { return imagingDiagnostics(ctx) })
	}
	deployTask := func(ctx context.Context, name, computer string) {
		GinkgoHelper()
		Expect(k8s.Create(ctx, &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
			Spec: siteopsv1.DeploymentTaskSpec{
				Action:  siteopsv1.DeploymentTaskAction{DeployImage: &siteopsv1.PackageAction{Package: golden}},
				Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{computer}},
			}})).To(Succeed())
	}
	// expectSameDisk checks that disk holds the captured image.
	expectSameDisk := func(disk string) {
		GinkgoHelper()
		f, err := os.Open(disk)
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal(int64(imageSize)))
		Expect("sha256:"+hex.EncodeToString(h.Sum(nil))).To(Equal(imageDigest), "%s is not the captured image", disk)
	}
	startImagingAgent := func(name, address, disk string) *agentProc {
		GinkgoHelper()
		return startAgentWith(name, address, caFile, tokenID+"."+tokenSecret, []string{"--disk", disk})
	}
	registered := func(ctx context.Context, name string) {
		GinkgoHelper()
		Eventually(func(g Gomega) {
			c := &siteopsv1.Computer{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, c)).To(Succeed())
			g.Expect(condition(c.Status.Conditions, siteopsv1.ConditionReady).Status).To(Equal(metav1.ConditionTrue))
		}).WithContext(ctx).Should(Succeed(), func() string { return imagingDiagnostics(ctx) })
	}

	BeforeAll(func(ctx SpecContext) {
		if !podRunner() {
			Skip("E2E_POD_RUNNER=false: no site service runs for agents to reach")
		}
		for name, cidr := range map[string]string{siteA: "10.45.0.0/16", siteB: "10.46.0.0/16"} {
			createSite(ctx, name)
			DeferCleanup(func(ctx SpecContext) {
				Expect(client.IgnoreNotFound(k8s.Delete(ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: name}}))).To(Succeed())
			})
			sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: name + "-net"}, Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: name}}
			Expect(k8s.Create(ctx, sn)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, sn))).To(Succeed()) })
		}
		for name, site := range map[string]string{srvA: siteA, srvB: siteB} {
			ss := siteServer(name, []string{site}, siteServerSelector(), storageClass)
			if site == siteB {
				ss.Spec.Services.Package.BandwidthLimit = ptr.To(limit)
			}
			Expect(k8s.Create(ctx, ss)).To(Succeed())
			DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		}
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}})).To(Succeed())
		Expect(simcluster.CreateBootstrapToken(ctx, k8s, tokenID, tokenSecret, namespace)).To(Succeed())
		caFile = operatorCAFile(ctx)
		for _, name := range []string{srvA, srvB} {
			Eventually(func(g Gomega) {
				ss := getSiteServer(ctx, g, name)
				g.Expect(ss.Status.Task.Ready).To(BeTrue(), "%s task ready", name)
				g.Expect(ss.Status.Package.Ready).To(BeTrue(), "%s package ready", name)
			}).WithContext(ctx).Should(Succeed(), func() string { return imagingDiagnostics(ctx) })
		}

		By("writing a disk of generated data for the agent of site A")
		dir := GinkgoT().TempDir()
		diskA, diskB, diskB2 = filepath.Join(dir, "disk-a"), filepath.Join(dir, "disk-b"), filepath.Join(dir, "disk-b2")
		f, err := os.Create(diskA)
		Expect(err).NotTo(HaveOccurred())
		h := sha256.New()
		_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{42}), imageSize)
		Expect(err).NotTo(HaveOccurred())
		Expect(f.Close()).To(Succeed())
		imageDigest = "sha256:" + hex.EncodeToString(h.Sum(nil))
		for _, d := range []string{diskB, diskB2} {
			Expect(os.WriteFile(d, bytes.Repeat([]byte{0xee}, 4096), 0o600)).To(Succeed())
		}

		capturer = startImagingAgent("img-a1", "10.45.0.10", diskA)
		deployee = startImagingAgent("img-b1", "10.46.0.10", diskB)
		registered(ctx, capturer.name)
		registered(ctx, deployee.name)
	})

	It("deploys at site B an image captured at site A, once it is there, byte for byte", func(ctx SpecContext) {
		By("asking for the deployment first: it waits for a Package that does not exist yet")
		deployTask(ctx, "deploy-b1", deployee.name)
		Eventually(func(g Gomega) string {
			t := getTask(ctx, g, namespace, "deploy-b1")
			return t.Status.Phase + "/" + condition(t.Status.Conditions, siteopsv1.ConditionContentReady).Reason
		}).WithContext(ctx).Should(Equal(siteopsv1.TaskWaitingForContent+"/"+siteopsv1.ReasonPackageNotFound),
			func() string { return imagingDiagnostics(ctx) })

		By("capturing the disk of the computer of site A")
		Expect(k8s.Create(ctx, &siteopsv1.DeploymentTask{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "capture-a1"},
			Spec: siteopsv1.DeploymentTaskSpec{
				Action:  siteopsv1.DeploymentTaskAction{CaptureImage: &siteopsv1.CaptureImageAction{PackageName: golden}},
				Targets: siteopsv1.DeploymentTaskTargets{Computers: []string{capturer.name}},
			}})).To(Succeed())
		expectPhase(ctx, "capture-a1", siteopsv1.TaskSucceeded, 3*time.Minute)
		var p *siteopsv1.Package
		Eventually(func(g Gomega) { p = getGolden(ctx, g) }).WithContext(ctx).Should(Succeed())
		Expect(p.Spec.Type).To(Equal(siteopsv1.PackageDiskImage))
		Expect(p.Spec.Digest).To(Equal(imageDigest))
		Expect(p.Spec.Size).To(Equal(int64(imageSize)))
		Expect(p.Spec.Source.Captured).To(Equal(&siteopsv1.CapturedSource{SiteServer: srvA, Site: siteA,
			Computer: capturer.name, Task: "capture-a1"}))

		By("holding the deployment while site B replicates the image")
		// Pending or Replicating: the copy's progress reaches the status
		// in batches, so its first report may already say Ready once the
		// machine is busy; until then the deployment waits.
		Eventually(func(g Gomega) {
			p := getGolden(ctx, g)
			g.Expect(siteState(p, siteB)).To(BeElementOf(siteopsv1.ContentPending, siteopsv1.ContentReplicating))
			t := getTask(ctx, g, namespace, "deploy-b1")
			g.Expect(t.Status.Phase).To(Equal(siteopsv1.TaskWaitingForContent))
			g.Expect(t.Status.Targets.Pending).To(Equal(int32(1)))
		}).WithContext(ctx).WithPolling(100*time.Millisecond).Should(Succeed(), func() string { return imagingDiagnostics(ctx) })

		By("deploying once it is Ready at site B")
		t := expectPhase(ctx, "deploy-b1", siteopsv1.TaskSucceeded, 3*time.Minute)
		Expect(t.Status.Sites).To(ConsistOf(HaveField("ContentReady", true)))
		Expect(condition(t.Status.Conditions, siteopsv1.ConditionContentReady).Status).To(Equal(metav1.ConditionTrue))
		Expect(siteState(getGolden(ctx, Default), siteB)).To(Equal(siteopsv1.ContentReady))
		expectSameDisk(diskB)
	})

	It("gives a package server added to site B the image before a new agent of site B gets the work", func(ctx SpecContext) {
		ss := siteServer(srvB2, []string{siteB}, siteServerSelector(), storageClass)
		ss.Spec.Services.Package.BandwidthLimit = ptr.To(limit)
		Expect(k8s.Create(ctx, ss)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) { Expect(client.IgnoreNotFound(k8s.Delete(ctx, ss))).To(Succeed()) })
		Eventually(func(g Gomega) {
			g.Expect(getSiteServer(ctx, g, srvB2).Status.Package.Ready).To(BeTrue())
		}).WithContext(ctx).Should(Succeed(), func() string { return imagingDiagnostics(ctx) })

		second := startImagingAgent("img-b2", "10.46.0.11", diskB2)
		registered(ctx, second.name)
		deployTask(ctx, "deploy-b2", second.name)
		t := expectPhase(ctx, "deploy-b2", siteopsv1.TaskSucceeded, 3*time.Minute)
		expectSameDisk(diskB2)

		By("the new server held the image before the work was claimed")
		ready := serverCopy(getGolden(ctx, Default), srvB2)
		Expect(ready).NotTo(BeNil(), "server %s reports no copy", srvB2)
		Expect(ready.State).To(Equal(siteopsv1.ContentReady))
		var shard siteopsv1.DispatchShard
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: namespace,
			Name: tasks.ShardName(t.Name, tasks.ShardOf(second.name))}, &shard)).To(Succeed())
		entry, ok := shard.Entries[second.name]
		Expect(ok).To(BeTrue())
		Expect(entry.Claimed.Time).NotTo(BeTemporally("<", ready.Updated.Truncate(time.Second)),
			"the work was claimed at %s, before %s held the image (%s)", entry.Claimed, srvB2, ready.Updated)
	})
})
