package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/directory"
	"github.com/siteops/site-operator/internal/testing/managertest"
	"github.com/siteops/site-operator/internal/testing/samba"
)

// importName is the DirectoryImport's name, and so the prefix of the
// Subnets it creates.
const importName = "corp"

// bindSecret is the bind Secret's name.
const bindSecret = "ad-reader"

// baselinePrefix names the baseline's Sites and Subnets.
const baselinePrefix = "base-"

// Classes of the manager's writes (managertest.RequestCounter).
const (
	writeSite         = "Site"
	writeSubnet       = "Subnet"
	writeSiteStatus   = "Site status"
	writeSubnetStatus = "Subnet status"
	writeImportStatus = "DirectoryImport status"
	writeOther        = "other"
)

func newRequestCounter() *managertest.RequestCounter {
	return &managertest.RequestCounter{Classify: func(req *http.Request) string {
		path := req.URL.Path
		status := strings.HasSuffix(path, "/status")
		switch {
		case strings.Contains(path, "/directoryimports/") && status:
			return writeImportStatus
		case strings.Contains(path, "/subnets") && status:
			return writeSubnetStatus
		case strings.Contains(path, "/sites") && status:
			return writeSiteStatus
		case strings.Contains(path, "/subnets"):
			return writeSubnet
		case strings.Contains(path, "/sites"):
			return writeSite
		default:
			return writeOther
		}
	}}
}

// adSiteName is the AD name of site i; it maps to the Site branch-NNNN.
func adSiteName(i int) string { return fmt.Sprintf("Branch %04d", i) }

// siteName is the Site name adSiteName(i) maps to.
func siteName(i int) string { return fmt.Sprintf("branch-%04d", i) }

// subnetCIDR is subnet i's /24 in first.0.0.0/8.
func subnetCIDR(first, i int) string { return fmt.Sprintf("%d.%d.%d.0/24", first, i/256, i%256) }

// subnetSite is the site index subnet i names.
func subnetSite(i, sites int) int { return i % sites }

// importedSubnetName is the Subnet the import makes of subnet i.
func importedSubnetName(i int) string {
	return importName + "-" + strings.NewReplacer(".", "-", "/", "-").Replace(subnetCIDR(10, i))
}

// run fills Samba, starts the control plane and the manager, and runs the
// three measurements. It returns what it measured so far even when it
// fails.
func run(ctx context.Context, opts options) (*results, error) {
	res := &results{opts: opts}
	res.load.start = loadAverage()
	defer func() { res.load.end = loadAverage() }()

	// The directory.
	log.Printf("Starting Samba")
	start := time.Now()
	dc, err := samba.Start(ctx, samba.Options{})
	if err != nil {
		return res, fmt.Errorf("starting Samba: %w", err)
	}
	defer func() {
		if err := dc.Stop(); err != nil {
			log.Printf("Stopping Samba: %v", err)
		}
	}()
	res.tSambaStart = time.Since(start)
	adSites := make([]samba.Site, opts.sites)
	for i := range adSites {
		adSites[i] = samba.Site{Name: adSiteName(i), Description: fmt.Sprintf("Branch office %d", i),
			Location: fmt.Sprintf("Building %d", i)}
	}
	adSubnets := make([]samba.Subnet, opts.subnets)
	for i := range adSubnets {
		adSubnets[i] = samba.Subnet{CIDR: subnetCIDR(10, i), Site: adSiteName(subnetSite(i, opts.sites))}
	}
	log.Printf("Adding %d sites and %d subnets to Samba", opts.sites, opts.subnets)
	start = time.Now()
	if err := dc.AddSites(adSites); err != nil {
		return res, fmt.Errorf("adding the sites: %w", err)
	}
	res.tFillSites = time.Since(start)
	start = time.Now()
	if err := dc.AddSubnets(adSubnets); err != nil {
		return res, fmt.Errorf("adding the subnets: %w", err)
	}
	res.tFillSubnets = time.Since(start)
	log.Printf("Samba filled: sites in %s, subnets in %s", res.tFillSites.Round(time.Millisecond), res.tFillSubnets.Round(time.Millisecond))

	// The control plane and the manager.
	scheme, err := controllers.NewScheme()
	if err != nil {
		return res, fmt.Errorf("building the scheme: %w", err)
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{opts.crds}, ErrorIfCRDPathMissing: true, Scheme: scheme,
		// envtest's 20 s is short on a loaded 2-core machine.
		ControlPlaneStartTimeout: 2 * time.Minute}
	log.Printf("Starting kube-apiserver and etcd")
	cfg, err := env.Start()
	if err != nil {
		return res, errors.Join(fmt.Errorf("starting the control plane (is KUBEBUILDER_ASSETS set?): %w", err), env.Stop())
	}
	defer func() {
		if err := env.Stop(); err != nil {
			log.Printf("Stopping the control plane: %v", err)
		}
	}()
	// The observer's watches and the manager stop before the control plane.
	ctx, stopHarness := context.WithCancel(ctx)
	defer stopHarness()

	ctrlOpts := controllers.DefaultOptions()
	h := &harness{opts: opts, res: res, dc: dc, scheme: scheme, writes: newRequestCounter()}
	cfgClient := rest.CopyConfig(cfg)
	cfgClient.QPS = -1 // as the manager's: no client-side rate limit
	if h.client, err = client.New(cfgClient, client.Options{Scheme: scheme}); err != nil {
		return res, fmt.Errorf("creating the client: %w", err)
	}
	ns := ctrlOpts.Workloads.Namespace
	if err := h.client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		return res, fmt.Errorf("creating the namespace %s: %w", ns, err)
	}
	if h.obs, err = newObserver(ctx, cfg, scheme); err != nil {
		return res, err
	}
	mgr, err := managertest.Start(ctx, cfg, scheme, managertest.Options{
		Controllers: ctrlOpts, Requests: h.writes,
		Informers: []client.Object{&siteopsv1.Subnet{}, &siteopsv1.Site{}, &siteopsv1.DirectoryImport{}},
	})
	if err != nil {
		return res, fmt.Errorf("starting the manager: %w", err)
	}
	defer func() {
		if err := mgr.Stop(); err != nil {
			log.Printf("Stopping the manager: %v", err)
		}
	}()

	if err := h.warmUp(ctx); err != nil {
		return res, err
	}
	cpuStart := sampleCPU()
	if err := h.baseline(ctx); err != nil {
		return res, err
	}
	if err := h.importAll(ctx, ns); err != nil {
		return res, err
	}
	if err := h.secondSync(ctx); err != nil {
		return res, err
	}
	res.cpuRun = sampleCPU().sub(cpuStart)
	h.readAlone(ctx)
	return res, h.verify(ctx)
}

// warmUp creates one Site and one Subnet outside both measurements, and a
// suspended DirectoryImport, and waits until each has its status, so that
// neither measurement pays for the just-installed CRDs' first requests
// (watch caches initialising, first informer lists). They stay; they
// collide with nothing.
func (h *harness) warmUp(ctx context.Context) error {
	log.Printf("Warming up: a Site, a Subnet and a suspended DirectoryImport")
	objs := []client.Object{
		&siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "warmup"}},
		&siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: "warmup-12-0-0-0-24"},
			Spec: siteopsv1.SubnetSpec{CIDR: "12.0.0.0/24", Site: "warmup", Source: siteopsv1.SourceManual}},
		&siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: "warmup"},
			Spec: siteopsv1.DirectoryImportSpec{URL: h.dc.URL(), BaseDN: h.dc.BaseDN(),
				BindSecretRef: siteopsv1.SecretReference{Name: "none"}, Suspend: true,
				Interval: metav1.Duration{Duration: time.Hour}, PageSize: 500, MaxDeletePercent: 25}},
	}
	for _, obj := range objs {
		if err := h.client.Create(ctx, obj); err != nil {
			return fmt.Errorf("warming up: creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.timeout)
	defer cancel()
	for _, obj := range objs {
		for {
			if err := h.client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
				return fmt.Errorf("warming up: reading %T %s: %w", obj, obj.GetName(), err)
			}
			var conds []metav1.Condition
			switch o := obj.(type) {
			case *siteopsv1.Site:
				conds = o.Status.Conditions
			case *siteopsv1.Subnet:
				conds = o.Status.Conditions
			case *siteopsv1.DirectoryImport:
				conds = o.Status.Conditions
			}
			if meta.FindStatusCondition(conds, siteopsv1.ConditionReady) != nil {
				break
			}
			if err := sleep(ctx, 50*time.Millisecond); err != nil {
				return fmt.Errorf("warming up: waiting for the status of %T %s: %w", obj, obj.GetName(), err)
			}
		}
	}
	return sleep(ctx, 2*time.Second)
}

// harness is one run against a started Samba, control plane and manager.
type harness struct {
	opts   options
	res    *results
	dc     *samba.DC
	scheme *runtime.Scheme
	client client.Client
	obs    *observer
	writes *managertest.RequestCounter // the manager's requests
}

// baseline creates the Sites and Subnets directly, opts.workers at a time
// through one client as the import does through the manager's, and waits
// until every Subnet has Ready set.
func (h *harness) baseline(ctx context.Context) error {
	n, sites := h.opts.subnets, h.opts.sites
	var objs []client.Object
	for i := range sites {
		objs = append(objs, &siteopsv1.Site{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s%04d", baselinePrefix, i)},
			Spec: siteopsv1.SiteSpec{DisplayName: fmt.Sprintf("Base %04d", i), Description: fmt.Sprintf("Branch office %d", i),
				Location: fmt.Sprintf("Building %d", i)},
		})
	}
	for i := range n {
		cidr := subnetCIDR(11, i)
		objs = append(objs, &siteopsv1.Subnet{
			ObjectMeta: metav1.ObjectMeta{Name: baselinePrefix + strings.NewReplacer(".", "-", "/", "-").Replace(cidr)},
			Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: fmt.Sprintf("%s%04d", baselinePrefix, subnetSite(i, sites)),
				Source: siteopsv1.SourceManual},
		})
	}
	h.obs.expect(groupBaseline, n)
	log.Printf("Baseline: creating %d Sites and %d Subnets, %d at a time", sites, n, h.opts.workers)
	before := h.writes.Snapshot()
	cpuBefore := sampleCPU()
	start := time.Now()
	lastCreate, err := createAll(ctx, h.client, objs, h.opts.workers)
	if err != nil {
		return err
	}
	h.res.baseline.tCreate = lastCreate.Sub(start)
	if err := h.obs.waitFor(ctx, h.opts.timeout, "every baseline Subnet Ready", func(s snapshot) bool {
		return s.groups[groupBaseline].ready == n
	}); err != nil {
		return err
	}
	s := h.obs.snapshot()
	g := s.groups[groupBaseline]
	h.res.baseline.tReady = g.readyAt.Sub(start)
	h.res.baseline.readyTrue = g.readyTrue
	if g.readyTrue == n {
		h.res.baseline.tTrue = g.trueAt.Sub(start)
	}
	h.res.baseline.cpu = sampleCPU().sub(cpuBefore)
	h.res.baseline.writes = h.writes.Snapshot().Sub(before)
	log.Printf("Baseline: created in %s, every Subnet Ready in %s", h.res.baseline.tCreate.Round(time.Millisecond),
		h.res.baseline.tReady.Round(time.Millisecond))
	return nil
}

// createAll creates objs in order with workers goroutines sharing c, as
// the controller's apply does, and returns when the last create was
// accepted.
func createAll(ctx context.Context, c client.Client, objs []client.Object, workers int) (time.Time, error) {
	work := make(chan client.Object)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range min(workers, len(objs)) {
		wg.Go(func() {
			for obj := range work {
				if err := c.Create(ctx, obj); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err))
					mu.Unlock()
				}
			}
		})
	}
	for _, obj := range objs {
		work <- obj
	}
	close(work)
	wg.Wait()
	if len(errs) > 5 {
		errs = append(errs[:5], fmt.Errorf("and %d more", len(errs)-5))
	}
	return time.Now(), errors.Join(errs...)
}

// importAll creates the bind Secret and the DirectoryImport and waits
// until every imported Subnet has Ready set and the import is Ready.
func (h *harness) importAll(ctx context.Context, ns string) error {
	n := h.opts.subnets
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bindSecret, Namespace: ns},
		StringData: map[string]string{"username": h.dc.AdminUPN(), "password": h.dc.AdminPassword()},
	}
	if err := h.client.Create(ctx, secret); err != nil {
		return fmt.Errorf("creating the bind Secret: %w", err)
	}
	di := &siteopsv1.DirectoryImport{
		ObjectMeta: metav1.ObjectMeta{Name: importName},
		Spec: siteopsv1.DirectoryImportSpec{
			URL: h.dc.URL(), BaseDN: h.dc.BaseDN(),
			BindSecretRef: siteopsv1.SecretReference{Name: bindSecret},
			TLS:           siteopsv1.DirectoryTLS{CABundle: string(h.dc.CACertPEM()), ServerName: h.dc.ServerName()},
			Interval:      metav1.Duration{Duration: time.Hour},
			PageSize:      500,
		},
	}
	h.obs.expect(groupImport, n)
	if err := sleep(ctx, 2*time.Second); err != nil { // let the baseline's last Site recounts pass
		return err
	}
	log.Printf("Import: creating DirectoryImport %s of %s", importName, h.dc.URL())
	before := h.writes.Snapshot()
	cpuBefore := sampleCPU()
	start := time.Now()
	if err := h.client.Create(ctx, di); err != nil {
		return fmt.Errorf("creating the DirectoryImport: %w", err)
	}
	if err := h.obs.waitFor(ctx, h.opts.timeout, "every imported Subnet Ready and the import Ready", func(s snapshot) bool {
		return s.groups[groupImport].ready == n && s.importReadyGen == 1
	}); err != nil {
		return err
	}
	s := h.obs.snapshot()
	g := s.groups[groupImport]
	r := &h.res.imp
	r.tReady = g.readyAt.Sub(start)
	r.tImportReady = s.importReadyAt.Sub(start)
	r.tFirstSubnet = g.firstAt.Sub(start)
	r.tCreate = g.createdAt.Sub(start)
	r.readyTrue = g.readyTrue
	if g.readyTrue == n {
		r.tTrue = g.trueAt.Sub(start)
	}
	r.cpu = sampleCPU().sub(cpuBefore)
	r.writes = h.writes.Snapshot().Sub(before)
	log.Printf("Import: every Subnet Ready in %s, the import Ready in %s", r.tReady.Round(time.Millisecond),
		r.tImportReady.Round(time.Millisecond))
	return nil
}

// secondSync bumps spec.pageSize so that the import syncs again with
// nothing changed in the directory, waits until status.observedGeneration
// follows, and counts the manager's writes meanwhile and for the settle
// time after.
func (h *harness) secondSync(ctx context.Context) error {
	if err := sleep(ctx, h.opts.settle); err != nil { // the first sync's Site recounts
		return err
	}
	di := &siteopsv1.DirectoryImport{}
	if err := h.client.Get(ctx, client.ObjectKey{Name: importName}, di); err != nil {
		return fmt.Errorf("reading the DirectoryImport: %w", err)
	}
	lastSync := di.Status.LastSyncTime
	patch := client.MergeFrom(di.DeepCopy())
	di.Spec.PageSize = 501
	log.Printf("Second sync: spec.pageSize 500 → 501")
	before := h.writes.Snapshot()
	start := time.Now()
	if err := h.client.Patch(ctx, di, patch); err != nil {
		return fmt.Errorf("patching the DirectoryImport: %w", err)
	}
	gen := di.Generation
	if gen < 2 {
		return fmt.Errorf("the DirectoryImport's generation is %d after a change of spec", gen)
	}
	if err := h.obs.waitFor(ctx, h.opts.timeout, "the second sync", func(s snapshot) bool {
		return s.importObservedGen == gen
	}); err != nil {
		return err
	}
	h.res.second.tSync = h.obs.snapshot().importObservedAt.Sub(start)
	if err := sleep(ctx, h.opts.settle); err != nil {
		return err
	}
	h.res.second.writes = h.writes.Snapshot().Sub(before)
	if err := h.client.Get(ctx, client.ObjectKey{Name: importName}, di); err != nil {
		return fmt.Errorf("reading the DirectoryImport: %w", err)
	}
	ready := meta.FindStatusCondition(di.Status.Conditions, siteopsv1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != gen {
		return fmt.Errorf("after the second sync the import's Ready is %v, want True for generation %d", ready, gen)
	}
	if di.Status.LastSyncTime == nil || (lastSync != nil && !di.Status.LastSyncTime.After(lastSync.Time) && di.Status.LastSyncTime.Equal(lastSync)) {
		log.Printf("Second sync: status.lastSyncTime unchanged (%v): the two syncs ended within the same second", lastSync)
	}
	log.Printf("Second sync: done in %s; manager writes %s", h.res.second.tSync.Round(time.Millisecond), formatWrites(h.res.second.writes))
	return nil
}

// readAlone times directory.Read of the same directory, outside of any
// measurement, to tell the LDAP share of the import.
func (h *harness) readAlone(ctx context.Context) {
	cfg := directory.Config{URL: h.dc.URL(), BaseDN: h.dc.BaseDN(), Username: h.dc.AdminUPN(), Password: h.dc.AdminPassword(),
		CABundle: h.dc.CACertPEM(), ServerName: h.dc.ServerName(), PageSize: 500}
	start := time.Now()
	dir, err := directory.Read(ctx, cfg)
	if err != nil {
		log.Printf("directory.Read alone: %v", err)
		return
	}
	h.res.tRead = time.Since(start)
	h.res.readSites, h.res.readSubnets = len(dir.Sites), len(dir.Subnets)
}

// verify checks the counts: the import's status, the labelled Sites and
// Subnets, and each imported Subnet's CIDR and Site.
func (h *harness) verify(ctx context.Context) error {
	var problems []string
	di := &siteopsv1.DirectoryImport{}
	if err := h.client.Get(ctx, client.ObjectKey{Name: importName}, di); err != nil {
		return fmt.Errorf("reading the DirectoryImport: %w", err)
	}
	// Samba's provisioned Default-First-Site-Name is imported too.
	wantSites := h.opts.sites + 1
	h.res.status = di.Status
	if int(di.Status.Sites) != wantSites || int(di.Status.Subnets) != h.opts.subnets || di.Status.SkippedCount != 0 {
		problems = append(problems, fmt.Sprintf("import status: %d sites, %d subnets, %d skipped; want %d, %d, 0",
			di.Status.Sites, di.Status.Subnets, di.Status.SkippedCount, wantSites, h.opts.subnets))
	}
	labelled := client.MatchingLabels{siteopsv1.LabelDirectoryImport: importName}
	var sites siteopsv1.SiteList
	if err := h.client.List(ctx, &sites, labelled); err != nil {
		return fmt.Errorf("listing the imported Sites: %w", err)
	}
	if len(sites.Items) != wantSites {
		problems = append(problems, fmt.Sprintf("%d Sites carry the import's label, want %d", len(sites.Items), wantSites))
	}
	var subnets siteopsv1.SubnetList
	if err := h.client.List(ctx, &subnets, labelled); err != nil {
		return fmt.Errorf("listing the imported Subnets: %w", err)
	}
	if len(subnets.Items) != h.opts.subnets {
		problems = append(problems, fmt.Sprintf("%d Subnets carry the import's label, want %d", len(subnets.Items), h.opts.subnets))
	}
	byName := map[string]*siteopsv1.Subnet{}
	for i := range subnets.Items {
		byName[subnets.Items[i].Name] = &subnets.Items[i]
	}
	for i := range h.opts.subnets {
		sn := byName[importedSubnetName(i)]
		switch {
		case sn == nil:
			problems = append(problems, fmt.Sprintf("no Subnet %s", importedSubnetName(i)))
		case sn.Spec.CIDR != subnetCIDR(10, i) || sn.Spec.Site != siteName(subnetSite(i, h.opts.sites)) ||
			sn.Spec.Source != siteopsv1.SourceActiveDirectory:
			problems = append(problems, fmt.Sprintf("Subnet %s: cidr %s site %s source %s, want %s %s ActiveDirectory",
				sn.Name, sn.Spec.CIDR, sn.Spec.Site, sn.Spec.Source, subnetCIDR(10, i), siteName(subnetSite(i, h.opts.sites))))
		}
	}
	if h.res.second.writes.Writes[writeSite]+h.res.second.writes.Writes[writeSubnet] != 0 {
		problems = append(problems, fmt.Sprintf("the second sync wrote %d Sites and %d Subnets, want none",
			h.res.second.writes.Writes[writeSite], h.res.second.writes.Writes[writeSubnet]))
	}
	if len(problems) == 0 {
		log.Printf("Verified: %d imported Sites and %d imported Subnets as in the directory", wantSites, h.opts.subnets)
		return nil
	}
	for i, p := range problems {
		if i == 20 {
			log.Printf("... and %d more", len(problems)-20)
			break
		}
		log.Print(p)
	}
	return fmt.Errorf("verification failed: %d problems", len(problems))
}
