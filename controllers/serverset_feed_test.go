package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/protocol"
	"github.com/siteops/site-operator/internal/testing/managertest"
)

// locatorReplica is a manager replica that never leads (another holder
// keeps the lease), with the locator fed from its cache as cmd/manager
// feeds it, served over a real TLS socket.
type locatorReplica struct {
	*managertest.Manager
	servers *locator.ServerSet
	synced  func() bool
	http    *httptest.Server
	// requests counts what the replica asks the API server.
	requests *managertest.RequestCounter
}

const heldLease = "locator-feed-test.siteops.io"

func startLocatorReplica(ctx context.Context) *locatorReplica {
	var c cache.Cache
	requests := &managertest.RequestCounter{}
	m, err := managertest.Start(ctx, restCfg, scheme, managertest.Options{
		Controllers: options,
		Requests:    requests,
		Configure: func(o *ctrl.Options) {
			o.LeaderElection = true
			o.LeaderElectionID = heldLease
			o.LeaderElectionNamespace = workloadNamespace
			o.NewCache = func(cfg *rest.Config, opts cache.Options) (cache.Cache, error) {
				var err error
				c, err = cache.New(cfg, opts)
				return c, err
			}
		},
	})
	Expect(err).NotTo(HaveOccurred())
	r := &locatorReplica{Manager: m, servers: locator.NewServerSet(), requests: requests}
	// The cache runs already: the handler first receives every SiteServer
	// it holds, as at start-up.
	r.synced, err = controllers.FeedServerSet(ctx, c, r.servers)
	Expect(err).NotTo(HaveOccurred())
	r.http = httptest.NewTLSServer(locator.New(m.Resolver, r.servers, locator.Options{}).Handler())
	return r
}

func (r *locatorReplica) stop() {
	r.http.Close()
	Expect(r.Stop()).To(Succeed())
}

// locate asks the replica's locator over HTTPS.
func (r *locatorReplica) locate(ctx context.Context, addr string) (protocol.LocateResponse, error) {
	body, err := json.Marshal(protocol.LocateRequest{Addresses: []string{addr}})
	if err != nil {
		return protocol.LocateResponse{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.http.URL+protocol.LocatePath, bytes.NewReader(body))
	if err != nil {
		return protocol.LocateResponse{}, err
	}
	req.Header.Set("Content-Type", protocol.ContentType)
	resp, err := r.http.Client().Do(req)
	if err != nil {
		return protocol.LocateResponse{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	var lr protocol.LocateResponse
	if resp.StatusCode != http.StatusOK {
		return lr, &httpStatusError{resp.StatusCode}
	}
	return lr, json.NewDecoder(resp.Body).Decode(&lr)
}

type httpStatusError struct{ code int }

func (e *httpStatusError) Error() string { return http.StatusText(e.code) }

// setTaskStatus writes what the SiteServer controller would once its task
// service is available (ready) or not, and the URLs it advertises.
func setTaskStatus(ctx context.Context, name string, ready bool, task, pkg []string) {
	ss := &siteopsv1.SiteServer{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Name: name}, ss)).To(Succeed())
	cond := metav1.Condition{Type: siteopsv1.ConditionTaskServiceReady, Status: metav1.ConditionFalse,
		Reason: "Progressing", Message: "waiting", ObservedGeneration: ss.Generation}
	if ready {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, siteopsv1.ReasonAvailable, "available"
	}
	meta.SetStatusCondition(&ss.Status.Conditions, cond)
	ss.Status.Task.Advertised = task
	ss.Status.Package.Advertised = pkg
	ExpectWithOffset(1, k8sClient.Status().Update(ctx, ss)).To(Succeed())
}

var _ = Describe("Locator feed", func() {
	ctx := context.Background()

	It("follows SiteServer status on every replica, and two replicas that do not lead answer the same", func() {
		// No controller may write SiteServer status but this spec: stop the
		// suite's manager, and let another holder keep the replicas' lease.
		manager.stop()
		DeferCleanup(func() { manager = startManager() })
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: heldLease, Namespace: workloadNamespace},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("someone-else"), LeaseDurationSeconds: ptr.To(int32(3600)),
				AcquireTime: &metav1.MicroTime{Time: time.Now()}, RenewTime: &metav1.MicroTime{Time: time.Now()}},
		}
		Expect(k8sClient.Create(ctx, lease)).To(Succeed())
		DeferCleanup(deleteIgnoringNotFound, ctx, lease)

		createSite(ctx, "lf-branch")
		createSubnet(ctx, "lf-branch-net", "172.31.0.0/16", "lf-branch", "")
		for _, ss := range []*siteopsv1.SiteServer{
			{ObjectMeta: metav1.ObjectMeta{Name: "lf-branch-1"}, Spec: siteopsv1.SiteServerSpec{Sites: []string{"lf-branch"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "lf-central"}},
		} {
			Expect(k8sClient.Create(ctx, ss)).To(Succeed())
			DeferCleanup(deleteIgnoringNotFound, ctx, ss)
		}
		setTaskStatus(ctx, "lf-central", true, []string{"https://central.example:8443"}, []string{"https://central.example:8444"})
		setTaskStatus(ctx, "lf-branch-1", false, nil, nil)

		replicas := []*locatorReplica{startLocatorReplica(ctx), startLocatorReplica(ctx)}
		for _, r := range replicas {
			DeferCleanup(r.stop)
			Eventually(r.synced, timeout, interval).Should(BeTrue())
			Consistently(r.Elected(), 500*time.Millisecond).ShouldNot(BeClosed(), "the lease is held by another")
		}
		answer := func(r *locatorReplica) func(Gomega) protocol.LocateResponse {
			return func(g Gomega) protocol.LocateResponse {
				resp, err := r.locate(ctx, "172.31.4.5")
				g.Expect(err).NotTo(HaveOccurred())
				return resp
			}
		}

		By("a site whose only server is not ready: the unassigned servers serve its agents")
		for _, r := range replicas {
			Eventually(answer(r), timeout, interval).Should(And(
				HaveField("Site", "lf-branch"), HaveField("Subnet", "lf-branch-net"),
				HaveField("Rule", protocol.RuleSiteNotReady),
				HaveField("TaskEndpoints", ContainElement("https://central.example:8443")),
				HaveField("PackageEndpoints", ContainElement("https://central.example:8444")),
				HaveField("RetryAfterSeconds", BeNumerically(">", 0))))
		}

		By("the site's server turning ready with advertised URLs: its agents go to it")
		setTaskStatus(ctx, "lf-branch-1", true, []string{"https://10.9.0.1:8443"}, []string{"https://10.9.0.1:8444"})
		want := protocol.LocateResponse{Site: "lf-branch", Subnet: "lf-branch-net", Address: "172.31.4.5", Rule: protocol.RuleSite,
			TaskEndpoints: []string{"https://10.9.0.1:8443"}, PackageEndpoints: []string{"https://10.9.0.1:8444"}}
		for _, r := range replicas {
			Eventually(answer(r), timeout, interval).Should(Equal(want))
		}

		By("the advertised URL changing: both replicas follow")
		setTaskStatus(ctx, "lf-branch-1", true, []string{"https://branch.example:8443"}, []string{"https://branch.example:8444"})
		want.TaskEndpoints, want.PackageEndpoints = []string{"https://branch.example:8443"}, []string{"https://branch.example:8444"}
		for _, r := range replicas {
			Eventually(answer(r), timeout, interval).Should(Equal(want))
		}

		By("no API request per locate: the answers come from the replica's informers and resolver")
		for _, r := range replicas {
			before := r.requests.Snapshot()
			for range 200 {
				Expect(answer(r)(Default)).To(Equal(want))
			}
			since := r.requests.Snapshot().Sub(before)
			Expect(since.Writes).To(BeEmpty(), "writes during 200 locates")
			for path := range since.Reads {
				// A replica that does not lead reads the lease now and then.
				if strings.HasPrefix(path, "/apis/coordination.k8s.io/") {
					delete(since.Reads, path)
				}
			}
			Expect(since.Reads).To(BeEmpty(), "reads during 200 locates")
		}

		By("the server going away: back to the unassigned servers, on both replicas alike")
		Expect(k8sClient.Delete(ctx, &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "lf-branch-1"}})).To(Succeed())
		for _, r := range replicas {
			Eventually(func(g Gomega) protocol.Rule { return answer(r)(g).Rule }, timeout, interval).Should(Equal(protocol.RuleSiteNotReady))
		}
		Eventually(func(g Gomega) {
			g.Expect(answer(replicas[0])(g)).To(Equal(answer(replicas[1])(g)))
		}, timeout, interval).Should(Succeed())
		Expect(replicas[0].servers.Snapshot().Len()).To(Equal(replicas[1].servers.Snapshot().Len()))
	})
})
