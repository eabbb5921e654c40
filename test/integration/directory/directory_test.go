// Package directory tests the DirectoryImport end to end against a real
// Active Directory domain controller (Samba, internal/testing/samba) on
// loopback and a real API server (envtest), with the manager running in
// process: LDAPS with a verified certificate, paged searches, what the
// directory changes, bad entries, a directory that stops answering, and a
// refused bind.
package directory

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
	"github.com/siteops/site-operator/internal/testing/managertest"
	"github.com/siteops/site-operator/internal/testing/samba"
)

const timeout = 60 * time.Second

type env struct {
	cl  client.Client
	dc  *samba.DC
	ns  string
	ctx context.Context
}

func start(t *testing.T) *env {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS must name the control-plane binaries: run the tests with `make test`")
	}
	logf.SetLogger(logr.Discard())
	dc := samba.StartT(t, samba.Options{})
	te := &envtest.Environment{CRDDirectoryPaths: []string{"../../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	t.Cleanup(func() { _ = te.Stop() })
	cfg, err := te.Start()
	if err != nil {
		t.Fatal(err)
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	opts := controllers.DefaultOptions()
	// A directory that stops answering fails a sync within seconds.
	opts.DirectoryReadTimeout = 3 * time.Second
	if err := cl.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.Workloads.Namespace}}); err != nil {
		t.Fatal(err)
	}
	m, err := managertest.Start(context.Background(), cfg, scheme, managertest.Options{Controllers: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Stop() })
	for name, password := range map[string]string{"ad-admin": dc.AdminPassword(), "ad-wrong": "not-the-password"} {
		if err := cl.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: opts.Workloads.Namespace},
			StringData: map[string]string{"username": dc.AdminUPN(), "password": password}}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{cl: cl, dc: dc, ns: opts.Workloads.Namespace, ctx: ctx}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s (last: %s)", what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) createImport(t *testing.T, name, url, secret string, pageSize int32) {
	t.Helper()
	di := &siteopsv1.DirectoryImport{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: siteopsv1.DirectoryImportSpec{
		URL: url, BaseDN: e.dc.BaseDN(), BindSecretRef: siteopsv1.SecretReference{Name: secret},
		TLS:      siteopsv1.DirectoryTLS{CABundle: string(e.dc.CACertPEM()), ServerName: e.dc.ServerName()},
		Interval: metav1.Duration{Duration: time.Hour}, PageSize: pageSize, MaxDeletePercent: 50}}
	must(t, e.cl.Create(e.ctx, di))
}

// sync makes the import run again now, and waits for it to end with the
// Ready verdict wanted ("True/Synced", …).
func (e *env) sync(t *testing.T, name, want string) *siteopsv1.DirectoryImport {
	t.Helper()
	di := &siteopsv1.DirectoryImport{}
	var generation int64
	eventually(t, "updating DirectoryImport "+name, func() (bool, string) {
		if err := e.cl.Get(e.ctx, client.ObjectKey{Name: name}, di); err != nil {
			return false, err.Error()
		}
		di.Spec.PageSize++
		if err := e.cl.Update(e.ctx, di); err != nil {
			return false, err.Error() // a conflict with the controller's status write
		}
		generation = di.Generation
		return true, ""
	})
	return e.waitReady(t, name, want, generation)
}

func (e *env) waitReady(t *testing.T, name, want string, generation int64) *siteopsv1.DirectoryImport {
	t.Helper()
	di := &siteopsv1.DirectoryImport{}
	eventually(t, fmt.Sprintf("DirectoryImport %s %s", name, want), func() (bool, string) {
		if err := e.cl.Get(e.ctx, client.ObjectKey{Name: name}, di); err != nil {
			return false, err.Error()
		}
		c := meta.FindStatusCondition(di.Status.Conditions, siteopsv1.ConditionReady)
		if c == nil {
			return false, "no Ready"
		}
		got := string(c.Status) + "/" + c.Reason
		return got == want && c.ObservedGeneration >= generation, got + ": " + c.Message
	})
	return di
}

func (e *env) subnets(t *testing.T, importName string) map[string]siteopsv1.Subnet {
	t.Helper()
	var list siteopsv1.SubnetList
	must(t, e.cl.List(e.ctx, &list, client.MatchingLabels{siteopsv1.LabelDirectoryImport: importName}))
	out := map[string]siteopsv1.Subnet{}
	for _, sn := range list.Items {
		out[sn.Spec.CIDR] = sn
	}
	return out
}

func (e *env) sites(t *testing.T, importName string) []string {
	t.Helper()
	var list siteopsv1.SiteList
	must(t, e.cl.List(e.ctx, &list, client.MatchingLabels{siteopsv1.LabelDirectoryImport: importName}))
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
	}
	slices.Sort(names)
	return names
}

func TestImportFromSamba(t *testing.T) {
	e := start(t)
	dc := e.dc
	// The new domain holds Default-First-Site-Name already.
	_, err := dc.AddSite("Paris Head Office", "HQ", "Paris, 3rd floor")
	must(t, err)
	_, err = dc.AddSite("Lyon", "", "")
	must(t, err)
	for _, sn := range []struct{ cidr, site string }{
		{"10.1.0.0/16", "Paris Head Office"}, {"10.2.0.0/16", "Lyon"}, {"10.3.0.0/16", ""},
		// Accepted by Samba, refused by the import: not canonical.
		{"10.9.0.0/016", "Lyon"},
	} {
		_, err := dc.AddSubnet(sn.cidr, sn.site, "subnet "+sn.cidr, "")
		must(t, err)
	}
	// More subnets than one page of 10.
	for i := range 25 {
		_, err := dc.AddSubnet(fmt.Sprintf("10.100.%d.0/24", i), "Lyon", "", "")
		must(t, err)
	}
	// A manual Site the import maps to, and a manual Subnet it overrides.
	must(t, e.cl.Create(e.ctx, &siteopsv1.Site{ObjectMeta: metav1.ObjectMeta{Name: "lyon"}, Spec: siteopsv1.SiteSpec{DisplayName: "Lyon (manual)"}}))
	must(t, e.cl.Create(e.ctx, &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: "manual-10-1"}, Spec: siteopsv1.SubnetSpec{CIDR: "10.1.0.0/16", Site: "lyon"}}))

	t.Run("first import over LDAPS, paged, with a verified certificate", func(t *testing.T) {
		e.createImport(t, "corp", dc.URL(), "ad-admin", 10)
		di := e.waitReady(t, "corp", "True/Synced", 1)
		if got := e.sites(t, "corp"); !slices.Equal(got, []string{"default-first-site-name", "lyon", "paris-head-office"}) {
			t.Errorf("imported sites %v", got)
		}
		subnets := e.subnets(t, "corp")
		if len(subnets) != 28 || subnets["10.1.0.0/16"].Spec.Site != "paris-head-office" || subnets["10.3.0.0/16"].Spec.Site != "" ||
			subnets["10.1.0.0/16"].Spec.Source != siteopsv1.SourceActiveDirectory || subnets["10.1.0.0/16"].Spec.Description != "subnet 10.1.0.0/16" {
			t.Errorf("%d imported subnets: %+v", len(subnets), subnets["10.1.0.0/16"].Spec)
		}
		if di.Status.SkippedCount != 1 || len(di.Status.Skipped) != 1 {
			t.Errorf("skipped %+v, want the non-canonical 10.9.0.0/016", di.Status.Skipped)
		}
		var lyon siteopsv1.Site
		must(t, e.cl.Get(e.ctx, client.ObjectKey{Name: "lyon"}, &lyon))
		if lyon.Annotations[siteopsv1.AnnotationAdopted] != "corp" || lyon.Spec.DisplayName != "Lyon (manual)" {
			t.Errorf("the manual Site lyon is not adopted: %+v %+v", lyon.Annotations, lyon.Spec)
		}
		eventually(t, "the manual subnet is overridden by the import", func() (bool, string) {
			var sn siteopsv1.Subnet
			must(t, e.cl.Get(e.ctx, client.ObjectKey{Name: "manual-10-1"}, &sn))
			c := meta.FindStatusCondition(sn.Status.Conditions, siteopsv1.ConditionReady)
			return c != nil && c.Reason == siteopsv1.ReasonOverriddenByImport, fmt.Sprint(c)
		})
	})

	t.Run("a subnet moved in the directory moves; a site removed goes, an adopted one goes back to manual", func(t *testing.T) {
		must(t, dc.MoveSubnet("10.3.0.0/16", "Paris Head Office"))
		must(t, dc.RemoveSite("Lyon")) // its subnets lose their siteObject
		e.sync(t, "corp", "True/Synced")
		subnets := e.subnets(t, "corp")
		if subnets["10.3.0.0/16"].Spec.Site != "paris-head-office" || subnets["10.2.0.0/16"].Spec.Site != "" {
			t.Errorf("10.3 names %q, 10.2 names %q", subnets["10.3.0.0/16"].Spec.Site, subnets["10.2.0.0/16"].Spec.Site)
		}
		var lyon siteopsv1.Site
		must(t, e.cl.Get(e.ctx, client.ObjectKey{Name: "lyon"}, &lyon))
		if _, adopted := lyon.Annotations[siteopsv1.AnnotationAdopted]; adopted || lyon.Labels[siteopsv1.LabelDirectoryImport] != "" {
			t.Errorf("the adopted Site lyon was not released: %v %v", lyon.Labels, lyon.Annotations)
		}
		_, err := dc.AddSite("Nantes", "", "")
		must(t, err)
		e.sync(t, "corp", "True/Synced")
		must(t, dc.RemoveSite("Nantes"))
		e.sync(t, "corp", "True/Synced")
		if got := e.sites(t, "corp"); slices.Contains(got, "nantes") {
			t.Errorf("the site removed from the directory is still imported: %v", got)
		}
	})

	t.Run("a directory that stops answering changes nothing", func(t *testing.T) {
		before := e.subnets(t, "corp")
		must(t, dc.Pause())
		e.sync(t, "corp", "False/DirectoryUnreachable")
		must(t, dc.Resume())
		if after := e.subnets(t, "corp"); len(after) != len(before) {
			t.Errorf("%d imported subnets after a failed sync, were %d", len(after), len(before))
		}
		must(t, dc.Kill())
		e.sync(t, "corp", "False/DirectoryUnreachable")
		if after := e.subnets(t, "corp"); len(after) != len(before) {
			t.Errorf("%d imported subnets after a failed sync, were %d", len(after), len(before))
		}
		must(t, dc.Restart(e.ctx))
		e.sync(t, "corp", "True/Synced")
	})

	t.Run("StartTLS on ldap://, and wrong credentials", func(t *testing.T) {
		e.createImport(t, "corp-starttls", dc.LDAPURL(), "ad-admin", 500)
		e.waitReady(t, "corp-starttls", "True/Synced", 1)
		e.createImport(t, "corp-wrong", dc.URL(), "ad-wrong", 500)
		di := e.waitReady(t, "corp-wrong", "False/BindFailed", 1)
		if !meta.IsStatusConditionTrue(di.Status.Conditions, siteopsv1.ConditionStalled) || len(e.subnets(t, "corp-wrong")) != 0 {
			t.Errorf("a refused bind: %+v", di.Status.Conditions)
		}
	})
}
