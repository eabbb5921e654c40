package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// computerOfflineAfter is the suite manager's Computer offline timeout:
// short, so that an agent that stops checking in goes offline within a
// spec.
const computerOfflineAfter = 3 * time.Second

// The namespaces the Computer specs create their Computers in (envtest runs
// no namespace controller, so they are made once and kept).
const (
	computerNamespace      = "comp-tenant-a"
	otherComputerNamespace = "comp-tenant-b"
)

func ensureNamespace(ctx context.Context, name string) {
	GinkgoHelper()
	err := k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if !apierrors.IsAlreadyExists(err) {
		Expect(err).NotTo(HaveOccurred())
	}
}

// createComputer creates a Computer as an administrator would, ahead of its
// agent, and deletes it after the spec.
func createComputer(ctx context.Context, namespace, name string, macs ...string) *siteopsv1.Computer {
	GinkgoHelper()
	c := &siteopsv1.Computer{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{"room": "lab"}},
		Spec:       siteopsv1.ComputerSpec{MACAddresses: macs},
	}
	Expect(k8sClient.Create(ctx, c)).To(Succeed())
	DeferCleanup(deleteIgnoringNotFound, ctx, c)
	return c
}

// writeComputerStatus changes a Computer's status as the task service does:
// a merge patch of its own fields through the status subresource.
func writeComputerStatus(ctx context.Context, c *siteopsv1.Computer, change func(*siteopsv1.ComputerStatus)) {
	GinkgoHelper()
	Eventually(func() error {
		var now siteopsv1.Computer
		if err := k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &now); err != nil {
			return err
		}
		patch := client.MergeFrom(now.DeepCopy())
		change(&now.Status)
		return k8sClient.Status().Patch(ctx, &now, patch)
	}, timeout, interval).Should(Succeed())
}

// register records what the task service writes when an agent registers
// and checks in: a credential issued at issuedAt and lastSeen now.
func register(issuedAt time.Time) func(*siteopsv1.ComputerStatus) {
	return func(s *siteopsv1.ComputerStatus) {
		s.Credential = &siteopsv1.ComputerCredential{Hash: "sha256:" + strings.Repeat("ab", 32),
			IssuedAt: metav1.NewTime(issuedAt), Token: "bootstrap-token-abc123"}
		s.LastSeen = ptrTime(time.Now())
		s.Addresses = []string{"10.20.2.7"}
		s.AgentVersion = "0.1.0"
	}
}

func ptrTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t)
	return &mt
}

func getComputer(ctx context.Context, c *siteopsv1.Computer) func(Gomega) *siteopsv1.Computer {
	return func(g Gomega) *siteopsv1.Computer {
		var got siteopsv1.Computer
		g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(c), &got)).To(Succeed())
		return &got
	}
}

// computerReady is "Status/Reason" of the Computer's Ready condition once
// the operator has judged its generation.
func computerReady(ctx context.Context, c *siteopsv1.Computer) func(Gomega) string {
	return func(g Gomega) string {
		got := getComputer(ctx, c)(g)
		g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation), "generation not observed yet")
		return condString(got.Status.Conditions, siteopsv1.ConditionReady)
	}
}

func computerReadyCondition(ctx context.Context, c *siteopsv1.Computer) *metav1.Condition {
	GinkgoHelper()
	cond := meta.FindStatusCondition(getComputer(ctx, c)(Default).Status.Conditions, siteopsv1.ConditionReady)
	Expect(cond).NotTo(BeNil())
	return cond
}

// condString is "Status/Reason" of the condition, "" when absent.
func condString(conds []metav1.Condition, condType string) string {
	c := meta.FindStatusCondition(conds, condType)
	if c == nil {
		return ""
	}
	return fmt.Sprintf("%s/%s", c.Status, c.Reason)
}

// statusWrites is how many writes the suite's manager sent to the status
// of the given objects' (Computers' or Sites') so far.
func statusWrites(objs ...client.Object) int64 {
	var n int64
	for class, count := range manager.writes.Snapshot().Writes {
		for _, obj := range objs {
			if strings.HasSuffix(class, "/"+obj.GetName()+"/status") &&
				(obj.GetNamespace() == "" || strings.Contains(class, "/namespaces/"+obj.GetNamespace()+"/")) {
				n += count
			}
		}
	}
	return n
}

func siteComputers(ctx context.Context, name string) func(Gomega) int32 {
	return func(g Gomega) int32 { return siteStatus(ctx, name)(g).Computers }
}

var _ = Describe("Computer", func() {
	ctx := context.Background()

	BeforeEach(func() {
		ensureNamespace(ctx, computerNamespace)
		ensureNamespace(ctx, otherComputerNamespace)
	})

	It("is NotRegistered when created ahead of its agent, and AgentOnline once an agent registered and checks in", func() {
		c := createComputer(ctx, computerNamespace, "cm1-ws", "00:1a:2b:3c:4d:01")
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNotRegistered))
		got := getComputer(ctx, c)(Default)
		Expect(condString(got.Status.Conditions, siteopsv1.ConditionReconciling)).To(BeEmpty())
		Expect(condString(got.Status.Conditions, siteopsv1.ConditionStalled)).To(BeEmpty())
		// Converged, not ready: kstatus reads Ready=False as InProgress.
		Expect(kstatusOf(ctx, c)(Default)).To(Equal(kstatus.InProgressStatus), kstatusMessage(ctx, c))

		writeComputerStatus(ctx, c, register(time.Now()))
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))
		Expect(kstatusOf(ctx, c)(Default)).To(Equal(kstatus.CurrentStatus), kstatusMessage(ctx, c))
		got = getComputer(ctx, c)(Default)
		Expect(got.Status.AgentVersion).To(Equal("0.1.0"), "the operator's write kept the task service's fields")
		Expect(got.Status.Addresses).To(Equal([]string{"10.20.2.7"}))
	})

	It("stays AgentOnline while its agent checks in, writing nothing, and turns AgentOffline on time when it stops", func() {
		c := createComputer(ctx, computerNamespace, "cm2-ws")
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNotRegistered))
		writeComputerStatus(ctx, c, register(time.Now()))
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))

		By("checking in every second for twice the offline timeout")
		writes := statusWrites(c)
		var lastSeen time.Time
		for end := time.Now().Add(2 * computerOfflineAfter); time.Now().Before(end); {
			writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) { s.LastSeen = ptrTime(time.Now()) })
			lastSeen = getComputer(ctx, c)(Default).Status.LastSeen.Time
			Consistently(computerReady(ctx, c), time.Second, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))
		}
		Expect(statusWrites(c)).To(Equal(writes), "the operator wrote while the agent checked in: %v", manager.writeList())

		By("stopping the check-ins")
		Eventually(computerReady(ctx, c), timeout, 50*time.Millisecond).Should(Equal("False/" + siteopsv1.ReasonAgentOffline))
		seenOffline := time.Now()
		offlineAt := lastSeen.Add(computerOfflineAfter)
		ready := computerReadyCondition(ctx, c)
		Expect(ready.LastTransitionTime.Time).NotTo(BeTemporally("<", offlineAt), "offline before the timeout")
		Expect(seenOffline).To(BeTemporally("<", offlineAt.Add(2*time.Second)), "offline late: last check-in %s", lastSeen)
		Expect(ready.Message).To(ContainSubstring("since " + lastSeen.UTC().Format(time.RFC3339)))
		Expect(statusWrites(c)).To(Equal(writes+1), "one write for going offline")
		Consistently(func() int64 { return statusWrites(c) }, 2*time.Second, interval).Should(Equal(writes + 1))

		By("checking in again")
		writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) { s.LastSeen = ptrTime(time.Now()) })
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))
	})

	It("is AgentOffline when its agent registered but never checked in, since the credential's issue", func() {
		c := createComputer(ctx, computerNamespace, "cm3-ws")
		issued := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
		writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) {
			register(issued)(s)
			s.LastSeen = nil
		})
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonAgentOffline))
		Expect(computerReadyCondition(ctx, c).Message).To(ContainSubstring(issued.Format(time.RFC3339)))
	})

	It("is CredentialRevoked when spec.credentialsNotBefore is after the credential's issue, until the agent registers again", func() {
		c := createComputer(ctx, computerNamespace, "cm4-ws")
		writeComputerStatus(ctx, c, register(time.Now().Add(-time.Hour)))
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))

		revokedAt := time.Now().Truncate(time.Second)
		updateObject(ctx, c, func(c *siteopsv1.Computer) { c.Spec.CredentialsNotBefore = ptrTime(revokedAt) })
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonCredentialRevoked))
		ready := computerReadyCondition(ctx, c)
		Expect(ready.ObservedGeneration).To(Equal(getComputer(ctx, c)(Default).Generation))
		Expect(ready.Message).To(ContainSubstring("spec.credentialsNotBefore"))
		Expect(kstatusOf(ctx, c)(Default)).To(Equal(kstatus.InProgressStatus), kstatusMessage(ctx, c))

		By("the agent registering again: a credential issued after credentialsNotBefore")
		writeComputerStatus(ctx, c, register(revokedAt.Add(time.Second)))
		Eventually(computerReady(ctx, c), timeout, interval).Should(Equal("True/" + siteopsv1.ReasonAgentOnline))
	})

	It("is counted by the Site it is located in, in every namespace, and follows a move to another Site", func() {
		createSite(ctx, "cm5-a")
		createSite(ctx, "cm5-b")
		inSite := func(site string) func(*siteopsv1.ComputerStatus) {
			return func(s *siteopsv1.ComputerStatus) { s.Site = site }
		}
		c1 := createComputer(ctx, computerNamespace, "cm5-ws1")
		c2 := createComputer(ctx, computerNamespace, "cm5-ws2")
		c3 := createComputer(ctx, otherComputerNamespace, "cm5-ws3")
		c4 := createComputer(ctx, computerNamespace, "cm5-ws4")
		createComputer(ctx, computerNamespace, "cm5-nowhere")
		writeComputerStatus(ctx, c1, inSite("cm5-a"))
		writeComputerStatus(ctx, c2, inSite("cm5-a"))
		writeComputerStatus(ctx, c3, inSite("cm5-a"))
		writeComputerStatus(ctx, c4, inSite("cm5-b"))
		Eventually(siteComputers(ctx, "cm5-a"), timeout, interval).Should(Equal(int32(3)))
		Eventually(siteComputers(ctx, "cm5-b"), timeout, interval).Should(Equal(int32(1)))

		By("moving a Computer to the other Site")
		writeComputerStatus(ctx, c1, inSite("cm5-b"))
		Eventually(siteComputers(ctx, "cm5-a"), timeout, interval).Should(Equal(int32(2)))
		Eventually(siteComputers(ctx, "cm5-b"), timeout, interval).Should(Equal(int32(2)))

		By("deleting one and locating another in no site")
		Expect(k8sClient.Delete(ctx, c2)).To(Succeed())
		writeComputerStatus(ctx, c4, inSite(""))
		Eventually(siteComputers(ctx, "cm5-a"), timeout, interval).Should(Equal(int32(1)))
		Eventually(siteComputers(ctx, "cm5-b"), timeout, interval).Should(Equal(int32(1)))

		By("check-ins and other status changes that keep the site: no Site write")
		sites := []client.Object{&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "cm5-a"}},
			&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "cm5-b"}}}
		writes := statusWrites(sites...)
		writeComputerStatus(ctx, c3, func(s *siteopsv1.ComputerStatus) { s.AgentVersion, s.Addresses = "0.2.0", []string{"10.20.2.8"} })
		writeComputerStatus(ctx, c1, func(s *siteopsv1.ComputerStatus) { s.LastSeen = ptrTime(time.Now()) })
		Consistently(func() int64 { return statusWrites(sites...) }, 2*time.Second, interval).Should(Equal(writes),
			func() string { return fmt.Sprintf("writes: %v", manager.writeList()) })
	})

	It("moves many Computers to a Site with a few Site writes, not one per Computer", func() {
		createSite(ctx, "cm6-site")
		site := &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "cm6-site"}}
		Eventually(siteReady(ctx, "cm6-site"), timeout, interval).Should(Equal("False/NoSiteServer"))
		var computers []*siteopsv1.Computer
		for i := range 20 {
			computers = append(computers, createComputer(ctx, computerNamespace, fmt.Sprintf("cm6-ws%02d", i)))
		}
		writes := statusWrites(site)
		for _, c := range computers {
			writeComputerStatus(ctx, c, func(s *siteopsv1.ComputerStatus) { s.Site = "cm6-site" })
		}
		Eventually(siteComputers(ctx, "cm6-site"), timeout, interval).Should(Equal(int32(len(computers))))
		// The Site recounts once per burst (the queue holds a delayed Site
		// once); a recount per Computer would write it about 20 times.
		Consistently(func() int64 { return statusWrites(site) }, time.Second, interval).
			Should(BeNumerically("<=", writes+int64(len(computers))/4))
	})

	It("writes nothing in a steady state, also after a restart of the manager", func() {
		notRegistered := createComputer(ctx, computerNamespace, "cm7-new")
		offline := createComputer(ctx, computerNamespace, "cm7-offline")
		revoked := createComputer(ctx, otherComputerNamespace, "cm7-revoked")
		writeComputerStatus(ctx, offline, func(s *siteopsv1.ComputerStatus) {
			register(time.Now().Add(-time.Hour))(s)
			s.LastSeen = ptrTime(time.Now().Add(-time.Minute))
			s.Site = "cm7-site"
		})
		writeComputerStatus(ctx, revoked, register(time.Now().Add(-time.Hour)))
		updateObject(ctx, revoked, func(c *siteopsv1.Computer) { c.Spec.CredentialsNotBefore = ptrTime(time.Now()) })
		createSite(ctx, "cm7-site")
		Eventually(computerReady(ctx, notRegistered), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonNotRegistered))
		Eventually(computerReady(ctx, offline), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonAgentOffline))
		Eventually(computerReady(ctx, revoked), timeout, interval).Should(Equal("False/" + siteopsv1.ReasonCredentialRevoked))
		Eventually(siteComputers(ctx, "cm7-site"), timeout, interval).Should(Equal(int32(1)))
		objs := []client.Object{notRegistered, offline, revoked, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "cm7-site"}}}
		writes := statusWrites(objs...)
		Consistently(func() int64 { return statusWrites(objs...) }, 2*time.Second, interval).Should(Equal(writes))

		By("restarting the manager: every Computer is judged again, from a cache without managedFields, and nothing is written")
		manager.stop()
		reconciled := reconcileTotal("computer")
		manager = startManager()
		Eventually(func() float64 { return reconcileTotal("computer") - reconciled }, timeout, interval).
			Should(BeNumerically(">=", len(objs)-1))
		Consistently(func() int64 { return statusWrites(objs...) }, 2*time.Second, interval).Should(BeZero(),
			func() string { return fmt.Sprintf("writes: %v", manager.writeList()) })
	})

	DescribeTable("admission rejects a bad Computer with a message naming the field",
		func(name string, spec siteopsv1.ComputerSpec, wantMessages ...string) {
			err := k8sClient.Create(ctx, &siteopsv1.Computer{
				ObjectMeta: metav1.ObjectMeta{Namespace: computerNamespace, Name: name}, Spec: spec})
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want an Invalid error, got %v", err)
			for _, want := range wantMessages {
				Expect(err.Error()).To(ContainSubstring(want))
			}
		},
		Entry("an upper-case MAC address", "adm-mac-upper",
			siteopsv1.ComputerSpec{MACAddresses: []string{"00:1A:2B:3C:4D:5E"}}, "spec.macAddresses[0]", `"00:1A:2B:3C:4D:5E"`),
		Entry("a MAC address with dashes", "adm-mac-dash",
			siteopsv1.ComputerSpec{MACAddresses: []string{"00:1a:2b:3c:4d:5e", "00-1a-2b-3c-4d-5f"}}, "spec.macAddresses[1]"),
		Entry("a short MAC address", "adm-mac-short",
			siteopsv1.ComputerSpec{MACAddresses: []string{"00:1a:2b:3c:4d"}}, "spec.macAddresses[0]"),
		Entry("the same MAC address twice", "adm-mac-dup",
			siteopsv1.ComputerSpec{MACAddresses: []string{"00:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e"}}, "spec.macAddresses[1]", "Duplicate"),
		Entry("more than 16 MAC addresses", "adm-mac-many",
			siteopsv1.ComputerSpec{MACAddresses: func() []string {
				var macs []string
				for i := range 17 {
					macs = append(macs, fmt.Sprintf("00:1a:2b:3c:4d:%02x", i))
				}
				return macs
			}()}, "spec.macAddresses", "16"),
		Entry("a hardware ID with a space", "adm-hwid",
			siteopsv1.ComputerSpec{HardwareID: "4C4C4544 0042"}, "spec.hardwareID"),
		Entry("an upper-case name", "Adm-Upper", siteopsv1.ComputerSpec{}, "metadata.name of a Computer must be at most 63 lower-case letters"),
		Entry("a name with a dot", "adm.dot", siteopsv1.ComputerSpec{}, "metadata.name of a Computer must be at most 63 lower-case letters"),
		Entry("a name longer than 63", strings.Repeat("a", 64), siteopsv1.ComputerSpec{}, "metadata.name of a Computer must be at most 63"),
	)
})
