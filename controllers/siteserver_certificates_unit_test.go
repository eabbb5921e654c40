package controllers

import (
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

func TestHostOf(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://tasks.paris.example:8443", "tasks.paris.example"},
		{"https://10.1.2.3:30443/v1", "10.1.2.3"},
		{"https://[fd00::7]:8080", "fd00::7"},
		{"http://node-1.example", "node-1.example"},
		{"tasks.paris.example:8443", "tasks.paris.example"},
		{"tasks.paris.example", "tasks.paris.example"},
		{"[fd00::7]:8443", "fd00::7"},
		{"[fd00::7]", "fd00::7"},
		{"192.0.2.1", "192.0.2.1"},
		{"https://", ""},
	} {
		if got := hostOf(tt.in); got != tt.want {
			t.Errorf("hostOf(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCertificateHosts(t *testing.T) {
	ss := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "paris-1"}}
	ss.Spec.Sites = []string{"paris", "lyon"}
	ss.Spec.Exposure.Addresses = []string{"tasks.paris.example:8443"}
	ss.Status.Task.Advertised = []string{"https://tasks.paris.example:8443", "https://10.1.2.3:8080"}
	ss.Status.Package.Advertised = []string{"https://[fd00::7]:8080", "https://bad_host-:8080"}

	names, bad := certificateNames(certificateHosts(ss, "ops"))
	wantDNS := []string{
		"paris-1-package.ops.svc", "paris-1-package.ops.svc.cluster.local",
		"paris-1-task.ops.svc", "paris-1-task.ops.svc.cluster.local",
		"site-lyon-package.ops.svc", "site-lyon-package.ops.svc.cluster.local",
		"site-lyon-task.ops.svc", "site-lyon-task.ops.svc.cluster.local",
		"site-paris-package.ops.svc", "site-paris-package.ops.svc.cluster.local",
		"site-paris-task.ops.svc", "site-paris-task.ops.svc.cluster.local",
		"tasks.paris.example",
	}
	if !slices.Equal(names.DNS, wantDNS) {
		t.Errorf("DNS names\n%v\nwant\n%v", names.DNS, wantDNS)
	}
	if got := names.String(); !slices.Contains(names.DNS, "tasks.paris.example") || len(names.IPs) != 2 ||
		names.IPs[0].String() != "10.1.2.3" || names.IPs[1].String() != "fd00::7" {
		t.Errorf("names %s, want the advertised IPs 10.1.2.3 and fd00::7", got)
	}
	if !slices.Equal(bad, []string{"bad_host-"}) {
		t.Errorf("left out %v, want the host that cannot be a SAN", bad)
	}

	unassigned := &siteopsv1.SiteServer{ObjectMeta: metav1.ObjectMeta{Name: "central"}}
	names, _ = certificateNames(certificateHosts(unassigned, "ops"))
	if len(names.DNS) != 4 || len(names.IPs) != 0 {
		t.Errorf("an unassigned server without exposure: %s, want its own 2 Services' 4 names", names)
	}
}

func TestAdvertisedChanged(t *testing.T) {
	old := &siteopsv1.SiteServer{}
	old.Status.Task.Advertised = []string{"https://10.0.0.1:8080"}
	same := old.DeepCopy()
	same.Status.Conditions = []metav1.Condition{{Type: "Ready"}}
	moved := old.DeepCopy()
	moved.Status.Task.Advertised = []string{"https://10.0.0.2:8080"}
	pkg := old.DeepCopy()
	pkg.Status.Package.Advertised = []string{"https://10.0.0.1:8080"}
	for _, tt := range []struct {
		name string
		new  *siteopsv1.SiteServer
		want bool
	}{{"another condition", same, false}, {"a task address moved", moved, true}, {"a package address added", pkg, true}} {
		if got := advertisedChanged.Update(event.UpdateEvent{ObjectOld: old, ObjectNew: tt.new}); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCertificateRequeue(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		renewAt time.Time
		want    time.Duration
	}{{time.Time{}, 0}, {now.Add(time.Hour), time.Hour}, {now.Add(-time.Hour), time.Second}} {
		if got := (certificateState{renewAt: tt.renewAt}).requeueAfter(now); got != tt.want {
			t.Errorf("requeueAfter for %v = %v, want %v", tt.renewAt, got, tt.want)
		}
	}
}

func TestEarliest(t *testing.T) {
	now := time.Now()
	later := now.Add(time.Hour)
	for _, tt := range []struct{ a, b, want time.Time }{
		{now, later, now}, {later, now, now}, {time.Time{}, later, later}, {later, time.Time{}, later}, {time.Time{}, time.Time{}, time.Time{}},
	} {
		if got := earliest(tt.a, tt.b); !got.Equal(tt.want) {
			t.Errorf("earliest(%v, %v) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}
