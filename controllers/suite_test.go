package controllers_test

import (
	"context"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/siteops/site-operator/controllers"
)

// The suite runs the real manager (every controller, as cmd/manager wires
// them) against a real kube-apiserver and etcd built by hack/controlplane.sh.
var (
	testEnv   *envtest.Environment
	options   = controllers.DefaultOptions()
	restCfg   *rest.Config
	scheme    *runtime.Scheme
	k8sClient client.Client
	manager   *runningManager
)

// workloadNamespace holds the site services the suite's manager runs.
var workloadNamespace = controllers.DefaultOptions().Workloads.Namespace

func TestControllers(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Controllers Suite")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	Expect(os.Getenv("KUBEBUILDER_ASSETS")).NotTo(BeEmpty(),
		"KUBEBUILDER_ASSETS must name the control-plane binaries: run the tests with `make test`")

	testEnv = &envtest.Environment{
		CRDDirectoryPaths:     []string{"../config/crd/bases"},
		ErrorIfCRDPathMissing: true,
	}
	var err error
	restCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(testEnv.Stop)

	scheme, err = controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(restCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: workloadNamespace}})).To(Succeed())

	manager = startManager()
	DeferCleanup(func() { manager.stop() })
})

// runningManager is a manager started by the suite, with a count of the write
// requests it sent to the API server.
type runningManager struct {
	writes atomic.Int64
	// written lists the writes' methods and paths, for failure messages.
	written sync.Map
	cancel  context.CancelFunc
	done    chan struct{}
}

func startManager() *runningManager {
	m := &runningManager{done: make(chan struct{})}
	cfg := rest.CopyConfig(restCfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			if req.Method != http.MethodGet {
				m.writes.Add(1)
				m.written.Store(req.Method+" "+req.URL.Path, true)
			}
			return rt.RoundTrip(req)
		})
	})
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  scheme,
		Cache:   controllers.CacheOptions(workloadNamespace),
		Metrics: metricsserver.Options{BindAddress: "0"},
		// Each restart registers the same controller names again.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	Expect(err).NotTo(HaveOccurred())
	_, err = controllers.Setup(mgr, options)
	Expect(err).NotTo(HaveOccurred())

	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() {
		defer GinkgoRecover()
		defer close(m.done)
		Expect(mgr.Start(ctx)).To(Succeed())
	}()
	return m
}

// writeList names the writes sent so far.
func (m *runningManager) writeList() []string {
	var list []string
	m.written.Range(func(k, _ any) bool { list = append(list, k.(string)); return true })
	return list
}

func (m *runningManager) stop() {
	m.cancel()
	Eventually(m.done, 30*time.Second).Should(BeClosed())
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// reconcileTotal is how many reconciles the named controller has finished,
// from controller-runtime's own metric.
func reconcileTotal(controllerName string) float64 {
	families, err := metrics.Registry.Gather()
	Expect(err).NotTo(HaveOccurred())
	total := 0.0
	for _, family := range families {
		if family.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range family.GetMetric() {
			if labelValue(m, "controller") == controllerName {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
