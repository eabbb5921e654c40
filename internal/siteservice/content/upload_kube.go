package content

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/locator"
	"github.com/siteops/site-operator/internal/siteservice/agentauth"
	"github.com/siteops/site-operator/internal/tasks"
	"github.com/siteops/site-operator/internal/topologyfeed"

	"golang.org/x/time/rate"
)

// indexUID indexes the cached DeploymentTasks by metadata.uid: a work
// item names its task by UID.
const indexUID = "metadata.uid"

// Live reads of Computers whose credential does not match in the cache (a
// registration the cache has not seen yet): a bounded rate, so that bad
// credentials cannot turn into a flood of API requests.
const (
	liveReadsPerSecond = 5
	liveReadsBurst     = 10
)

// errCannotCheck wraps what keeps the service from judging a credential
// now (the API is unreachable, the live reads are used up): the agent is
// asked to come back, never told its credential is bad.
var errCannotCheck = errors.New("the credential cannot be checked now")

// uploadKube is the package service's view of the API for capture
// uploads, apart from the replicator's: a cache of the Computers (trimmed
// to what authorization reads), of the DeploymentTasks (indexed by UID)
// and of the topology, which feeds the serving rules as in the task
// service; and a client that creates the Packages captures become.
type uploadKube struct {
	server    string // this SiteServer
	cache     cache.Cache
	client    client.Client // reads from the cache, writes to the API server
	live      client.Reader // uncached
	locator   *locator.Locator
	synced    []func() bool
	liveReads *rate.Limiter
}

// newUploadKube connects to the API server with rc for the uploads of
// SiteServer server. The cache starts with run.
func newUploadKube(rc *rest.Config, server string) (*uploadKube, error) {
	scheme := runtime.NewScheme()
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	c, err := cache.New(rc, cache.Options{
		Scheme:           scheme,
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&siteopsv1.Computer{}:       {Transform: trimUploadComputer},
			&siteopsv1.DeploymentTask{}: {Transform: trimUploadTask},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating the upload cache: %w", err)
	}
	ctx := context.Background()
	if err := c.IndexField(ctx, &siteopsv1.DeploymentTask{}, indexUID, func(o client.Object) []string {
		return []string{string(o.GetUID())}
	}); err != nil {
		return nil, fmt.Errorf("indexing DeploymentTasks by %s: %w", indexUID, err)
	}
	cl, err := client.New(rc, client.Options{Scheme: scheme, Cache: &client.CacheOptions{Reader: c}})
	if err != nil {
		return nil, fmt.Errorf("creating the upload client: %w", err)
	}
	live, err := client.New(rc, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("creating the upload client: %w", err)
	}
	k := &uploadKube{server: server, cache: c, client: cl, live: live,
		liveReads: rate.NewLimiter(liveReadsPerSecond, liveReadsBurst)}
	loc, topologySynced, err := topologyfeed.FeedLocator(ctx, c)
	if err != nil {
		return nil, err
	}
	k.locator = loc
	for _, obj := range []client.Object{&siteopsv1.Computer{}, &siteopsv1.DeploymentTask{}} {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return nil, fmt.Errorf("getting the %T informer: %w", obj, err)
		}
		k.synced = append(k.synced, inf.HasSynced)
	}
	k.synced = append(k.synced, topologySynced)
	return k, nil
}

// trimUploadComputer drops from a cached Computer what uploads never read
// (its labels, annotations, conditions and last task), so that a cache of
// tens of thousands of Computers stays small.
func trimUploadComputer(obj any) (any, error) {
	if c, ok := obj.(*siteopsv1.Computer); ok {
		c.ManagedFields = nil
		c.Annotations = nil
		c.Labels = nil
		c.Status.Conditions = nil
		c.Status.LastTask = nil
	}
	return obj, nil
}

// trimUploadTask drops from a cached DeploymentTask what uploads never
// read: all of its status but its phase.
func trimUploadTask(obj any) (any, error) {
	if t, ok := obj.(*siteopsv1.DeploymentTask); ok {
		t.ManagedFields = nil
		t.Annotations = nil
		t.Status = siteopsv1.DeploymentTaskStatus{Phase: t.Status.Phase}
	}
	return obj, nil
}

// run runs the cache until ctx is done.
func (k *uploadKube) run(ctx context.Context) error {
	if err := k.cache.Start(ctx); err != nil {
		return fmt.Errorf("running the upload cache: %w", err)
	}
	return nil
}

// ready reports whether the cache holds every Computer, task and topology
// object.
func (k *uploadKube) ready() bool {
	for _, synced := range k.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// authenticate returns the Computer whose credential raw is, or why it is
// refused; errors wrapping errCannotCheck mean "ask again later".
func (k *uploadKube) authenticate(ctx context.Context, raw string) (*siteopsv1.Computer, error) {
	key, secret, err := agentauth.Parse(raw)
	if err != nil {
		return nil, err
	}
	comp := &siteopsv1.Computer{}
	if err := k.client.Get(ctx, key, comp); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: reading Computer %s: %w", errCannotCheck, key, err)
		}
		comp = nil
	}
	if agentauth.Valid(comp, secret) == nil {
		return comp, nil
	}
	// The cache may lag a registration: read live, at a bounded rate.
	if !k.liveReads.Allow() {
		return nil, fmt.Errorf("%w: Computer %s does not match in the cache, and live reads are used up", errCannotCheck, key)
	}
	live := &siteopsv1.Computer{}
	if err := k.live.Get(ctx, key, live); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("no Computer %s", key)
		}
		return nil, fmt.Errorf("%w: reading Computer %s: %w", errCannotCheck, key, err)
	}
	if err := agentauth.Valid(live, secret); err != nil {
		return nil, fmt.Errorf("computer %s: %w", key, err)
	}
	return live, nil
}

// serves applies the serving rules to comp's agent, by the addresses its
// status holds: its site, and whether this SiteServer serves it.
func (k *uploadKube) serves(comp *siteopsv1.Computer) (string, bool) {
	return k.locator.Serves(addressesOf(comp), k.server)
}

// addressesOf parses the addresses of comp's status, skipping those that
// are not IP addresses.
func addressesOf(comp *siteopsv1.Computer) []netip.Addr {
	addrs := make([]netip.Addr, 0, len(comp.Status.Addresses))
	for _, s := range comp.Status.Addresses {
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs
}

// captureTask returns the DeploymentTask of work item workID if it is a
// captureImage of comp that still runs; a *refusal otherwise.
func (k *uploadKube) captureTask(ctx context.Context, comp *siteopsv1.Computer, workID string) (*siteopsv1.DeploymentTask, error) {
	uid, _, err := tasks.ParseWorkID(workID)
	if err != nil {
		return nil, refuse(http.StatusBadRequest, "workID", "%v", err)
	}
	var list siteopsv1.DeploymentTaskList
	if err := k.cache.List(ctx, &list, client.InNamespace(comp.Namespace), client.MatchingFields{indexUID: uid}); err != nil {
		return nil, fmt.Errorf("listing the DeploymentTasks of %s: %w", comp.Namespace, err)
	}
	if len(list.Items) == 0 {
		return nil, refuse(http.StatusNotFound, "workID", "no DeploymentTask of work item %s in namespace %s", workID, comp.Namespace)
	}
	task := &list.Items[0]
	if err := checkCapture(task, comp.Name); err != nil {
		return nil, err
	}
	return task, nil
}

// checkCapture returns a 403 *refusal unless task is a captureImage of
// exactly the Computer computer (the only form admission lets a capture
// have) that has not finished.
func checkCapture(task *siteopsv1.DeploymentTask, computer string) error {
	key := task.Namespace + "/" + task.Name
	targets := task.Spec.Targets
	switch {
	case task.Spec.Action.CaptureImage == nil:
		action := tasks.ActionName(task.Spec.Action)
		if action == "" {
			action = "none"
		}
		return refuse(http.StatusForbidden, "workID", "DeploymentTask %s is not a captureImage task (its action is %s): it takes no upload", key, action)
	case !slices.Equal(targets.Computers, []string{computer}) || targets.Selector != nil || len(targets.Sites) > 0:
		return refuse(http.StatusForbidden, "workID", "DeploymentTask %s captures Computer %s, not %s",
			key, strings.Join(targets.Computers, ", "), computer)
	case !task.DeletionTimestamp.IsZero():
		return refuse(http.StatusForbidden, "workID", "DeploymentTask %s is being deleted: it takes no upload", key)
	}
	switch task.Status.Phase {
	case siteopsv1.TaskSucceeded, siteopsv1.TaskFailed, siteopsv1.TaskStopped:
		return refuse(http.StatusForbidden, "workID", "DeploymentTask %s is %s: it takes no more uploads", key, task.Status.Phase)
	}
	return nil
}

// capturedPackage is the Package that the capture of comp for task
// becomes on this SiteServer: a DiskImage of the given content, whose
// replication follows the default policy.
func capturedPackage(server string, comp *siteopsv1.Computer, task *siteopsv1.DeploymentTask, packageName, digest string, size int64) *siteopsv1.Package {
	p := &siteopsv1.Package{Spec: siteopsv1.PackageSpec{
		Type: siteopsv1.PackageDiskImage,
		Source: siteopsv1.PackageSource{Captured: &siteopsv1.CapturedSource{
			SiteServer: server, Site: comp.Status.Site, Computer: comp.Name, Task: task.Name,
		}},
		Digest: digest,
		Size:   size,
	}}
	p.Namespace, p.Name = comp.Namespace, packageName
	return p
}

// holds reports whether p's content is digest and size.
func holds(p *siteopsv1.Package, digest string, size int64) bool {
	return p.Spec.Digest == digest && p.Spec.Size == size
}

// conflict is the 409 refusal of an upload whose Package exists with
// other content.
func conflict(p *siteopsv1.Package) error {
	return refuse(http.StatusConflict, "", "Package %s/%s exists already with other content (%s, %d bytes): it is left as it is, and the upload is dropped",
		p.Namespace, p.Name, p.Spec.Digest, p.Spec.Size)
}

// existingPackage reads the Package key from the API server; nil when
// there is none.
func (k *uploadKube) existingPackage(ctx context.Context, key types.NamespacedName) (*siteopsv1.Package, error) {
	p := &siteopsv1.Package{}
	if err := k.live.Get(ctx, key, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("reading Package %s: %w", key, err)
	}
	return p, nil
}

// createPackage creates p, or accepts the Package of its name that holds
// the same content; one with other content is a 409 refusal.
func (k *uploadKube) createPackage(ctx context.Context, p *siteopsv1.Package) error {
	err := k.client.Create(ctx, p)
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("creating Package %s/%s: %w", p.Namespace, p.Name, err)
		}
		return nil
	}
	existing, err := k.existingPackage(ctx, client.ObjectKeyFromObject(p))
	switch {
	case err != nil:
		return err
	case existing == nil: // deleted since: the next PUT creates it
		return later(retryCheck, "Package %s/%s was deleted while it was created: send the PUT again", p.Namespace, p.Name)
	case !holds(existing, p.Spec.Digest, p.Spec.Size):
		return conflict(existing)
	}
	return nil
}

// retryCheck is how long an agent waits before it asks again when the
// service cannot judge its request yet.
const retryCheck = 5 * time.Second
