package controllers_test

import (
	"context"
	"os"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/testing/managertest"
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
	// Stop is registered before the start is checked: a start that fails
	// half-way (a CRD the API server refuses) must not leave etcd and
	// kube-apiserver running.
	DeferCleanup(testEnv.Stop)
	var err error
	restCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())

	scheme, err = controllers.NewScheme()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(restCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	Expect(k8sClient.Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: workloadNamespace}})).To(Succeed())

	// Short, so that the Computer specs see an agent go offline.
	options.ComputerOfflineAfter = computerOfflineAfter
	options.DirectoryReader = directories.read
	manager = startManager()
	DeferCleanup(func() { manager.stop() })
})

// runningManager is a manager started by the suite (in process, as
// cmd/manager builds it), with a count of the write requests it sent to the
// API server.
type runningManager struct {
	*managertest.Manager
	// writes counts the writes by method and path.
	writes *managertest.RequestCounter
}

func startManager() *runningManager {
	writes := &managertest.RequestCounter{}
	m, err := managertest.Start(context.Background(), restCfg, scheme, managertest.Options{
		Controllers: options, Requests: writes})
	Expect(err).NotTo(HaveOccurred())
	return &runningManager{Manager: m, writes: writes}
}

// writeList names the writes sent so far.
func (m *runningManager) writeList() []string {
	return m.writes.Classes()
}

func (m *runningManager) stop() {
	Expect(m.Stop()).To(Succeed())
}

// reconcileTotal is how many reconciles the named controller has finished,
// from controller-runtime's own metric.
func reconcileTotal(controllerName string) float64 {
	totals, err := managertest.ReconcileTotals()
	Expect(err).NotTo(HaveOccurred())
	return totals[controllerName]
}
