package plugin

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// The fixtures: one organisation, written once, that every test reads.
//
//	hq     10.0.0.0/8  (corp)                      server hq-1, ready
//	paris  10.1.0.0/16 (paris-lan; paris-old, a    servers paris-1 (ready),
//	       younger duplicate naming hq), and       paris-2 (not ready)
//	       10.1.128.0/20 (paris-wifi, inherited);
//	       10.1.7.0/24 (paris-lab) names the missing site berlin
//	lyon   10.2.0.0/16 (lyon-ad, imported, over    server lyon-1, not ready
//	       the manual lyon-manual)
//	       192.0.2.0/24 (orphan): no site          central: unassigned, ready
var (
	// epoch is when the fixtures' objects were made.
	epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	// now is when the tests look at them.
	now = epoch.Add(3 * time.Hour)
)

// at returns epoch plus minutes, as an API time.
func at(minutes int) metav1.Time {
	return metav1.NewTime(epoch.Add(time.Duration(minutes) * time.Minute))
}

func objMeta(name string, minutes int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, CreationTimestamp: at(minutes)}
}

func cond(condType string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
	return metav1.Condition{Type: condType, Status: status, Reason: reason, Message: message, LastTransitionTime: at(0)}
}

func site(name, displayName string, ready bool) siteopsv1.Site {
	s := siteopsv1.Site{ObjectMeta: objMeta(name, 0), Spec: siteopsv1.SiteSpec{DisplayName: displayName}}
	c := cond(siteopsv1.ConditionReady, metav1.ConditionTrue, siteopsv1.ReasonSiteReady, "site-server task service available")
	if !ready {
		c = cond(siteopsv1.ConditionReady, metav1.ConditionFalse, siteopsv1.ReasonServicesNotReady,
			"no SiteServer of the site has an available task service")
	}
	s.Status.Conditions = []metav1.Condition{c}
	return s
}

func subnet(name, cidr, siteName string, source siteopsv1.SubnetSource, minutes int) siteopsv1.Subnet {
	return siteopsv1.Subnet{ObjectMeta: objMeta(name, minutes), Spec: siteopsv1.SubnetSpec{CIDR: cidr, Site: siteName, Source: source}}
}

// server returns a SiteServer whose task and package services are ready
// (Available) or rolling out with no pod ready (Progressing), advertising
// one URL per service.
func server(name string, ready bool, sites ...string) siteopsv1.SiteServer {
	ss := siteopsv1.SiteServer{ObjectMeta: objMeta(name, 1), Spec: siteopsv1.SiteServerSpec{Sites: sites}}
	if ready {
		ss.Status.Task = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1,
			Advertised: []string{"https://" + name + ".task.example:8443"}}
		ss.Status.Package = siteopsv1.ServiceStatus{Ready: true, Replicas: 1, ReadyReplicas: 1,
			Advertised: []string{"https://" + name + ".pkg.example:8444"}}
		ss.Status.Conditions = []metav1.Condition{
			cond(siteopsv1.ConditionReady, metav1.ConditionTrue, siteopsv1.ReasonServicesReady, "every enabled service is ready"),
			cond(siteopsv1.ConditionTaskServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable, "1/1 ready"),
			cond(siteopsv1.ConditionPackageServiceReady, metav1.ConditionTrue, siteopsv1.ReasonAvailable, "1/1 ready"),
		}
		return ss
	}
	ss.Status.Conditions = []metav1.Condition{
		cond(siteopsv1.ConditionReady, metav1.ConditionFalse, siteopsv1.ReasonProgressing, "0/1 task pods ready"),
		cond(siteopsv1.ConditionTaskServiceReady, metav1.ConditionFalse, siteopsv1.ReasonProgressing, "0/1 ready"),
		cond(siteopsv1.ConditionPackageServiceReady, metav1.ConditionFalse, siteopsv1.ReasonProgressing, "0/1 ready"),
	}
	return ss
}

// org is the fixtures' topology.
func org() Topology {
	return Topology{
		Sites: []siteopsv1.Site{
			site("hq", "Head office", true),
			site("paris", "Paris — Head Office, 3rd floor", true),
			site("lyon", "", false),
		},
		Subnets: []siteopsv1.Subnet{
			subnet("corp", "10.0.0.0/8", "hq", siteopsv1.SourceManual, 0),
			subnet("paris-lan", "10.1.0.0/16", "paris", siteopsv1.SourceManual, 1),
			subnet("paris-old", "10.1.0.0/16", "hq", siteopsv1.SourceManual, 5),
			subnet("paris-wifi", "10.1.128.0/20", "", "", 2),
			subnet("paris-lab", "10.1.7.0/24", "berlin", siteopsv1.SourceManual, 3),
			subnet("lyon-manual", "10.2.0.0/16", "lyon", siteopsv1.SourceManual, 1),
			subnet("lyon-ad", "10.2.0.0/16", "lyon", siteopsv1.SourceActiveDirectory, 9),
			subnet("orphan", "192.0.2.0/24", "", siteopsv1.SourceManual, 4),
		},
		SiteServers: []siteopsv1.SiteServer{
			server("hq-1", true, "hq"),
			server("paris-1", true, "paris"),
			server("paris-2", false, "paris"),
			server("lyon-1", false, "lyon"),
			server("central", true),
		},
	}
}

// computer returns a Computer of the fixtures in namespace "branch".
func computer(name, siteName string, online bool) siteopsv1.Computer {
	c := siteopsv1.Computer{ObjectMeta: objMeta(name, 2), Spec: siteopsv1.ComputerSpec{Hostname: name + ".corp.example"}}
	c.Namespace = "branch"
	c.Status.Site = siteName
	c.Status.SiteServer = siteName + "-1"
	c.Status.Addresses = []string{"10.1.2.3"}
	c.Status.LastSeen = ptr.To(at(170))
	c.Status.AgentVersion = "v0.9.0"
	c.Status.Conditions = []metav1.Condition{cond(siteopsv1.ConditionReady, metav1.ConditionTrue, siteopsv1.ReasonAgentOnline, "checked in")}
	if !online {
		c.Status.LastSeen = ptr.To(at(30))
		c.Status.Conditions = []metav1.Condition{cond(siteopsv1.ConditionReady, metav1.ConditionFalse, siteopsv1.ReasonAgentOffline,
			"no check-in for 2h30m")}
	}
	return c
}

// pkg returns a Package in namespace "branch", Ready at the given sites
// and Replicating at lyon.
func pkg(name string, typ siteopsv1.PackageType, size int64, readyAt ...string) siteopsv1.Package {
	p := siteopsv1.Package{ObjectMeta: objMeta(name, 3), Spec: siteopsv1.PackageSpec{Type: typ, Size: size,
		Digest: "sha256:" + fmt64('a')}}
	p.Namespace = "branch"
	for _, s := range readyAt {
		p.Status.Sites = append(p.Status.Sites, siteopsv1.PackageSiteStatus{Site: s, State: siteopsv1.ContentReady, Bytes: size})
	}
	p.Status.Sites = append(p.Status.Sites, siteopsv1.PackageSiteStatus{Site: "lyon", State: siteopsv1.ContentReplicating, Bytes: size / 2})
	return p
}

// fmt64 is 64 times c: a digest's hex part.
func fmt64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// parisInput is the site command's input for paris: three computers
// there (two online), one in hq, and packages ready at paris or not.
func parisInput() SiteInput {
	t := org()
	return SiteInput{
		Site:     t.Sites[1],
		Topology: t,
		Computers: []siteopsv1.Computer{
			computer("pc-001", "paris", true), computer("pc-002", "paris", true),
			computer("pc-003", "paris", false), computer("pc-100", "hq", true),
		},
		Packages: []siteopsv1.Package{
			pkg("win11-23h2", siteopsv1.PackageDiskImage, 6<<30+300<<20, "paris", "hq"),
			pkg("office", siteopsv1.PackageSoftware, 800<<20, "paris"),
			pkg("drivers", siteopsv1.PackageSoftware, 20<<20, "hq"),
		},
	}
}

// rollout is a deployImage task half-way: paris done but for two
// failures, lyon waiting for content, targets in no site pending; it
// failed more often than status.failures lists.
func rollout() *siteopsv1.DeploymentTask {
	task := &siteopsv1.DeploymentTask{ObjectMeta: objMeta("win11-rollout", 10)}
	task.Namespace = "branch"
	task.Spec.Action.DeployImage = &siteopsv1.PackageAction{Package: "win11-23h2"}
	task.Status = siteopsv1.DeploymentTaskStatus{
		Phase:     siteopsv1.TaskRunning,
		Action:    "deployImage",
		Progress:  "37/60",
		StartTime: ptr.To(at(12)),
		Targets:   siteopsv1.TargetCounts{Total: 60, Pending: 15, Running: 5, Succeeded: 37, Failed: 3},
		Sites: []siteopsv1.TaskSiteStatus{
			{Site: "paris", ContentReady: true, Targets: siteopsv1.TargetCounts{Total: 42, Running: 3, Succeeded: 37, Failed: 2}},
			{Site: "lyon", ContentReady: false, Targets: siteopsv1.TargetCounts{Total: 15, Pending: 13, Running: 2}},
			{Site: "", ContentReady: true, Targets: siteopsv1.TargetCounts{Total: 3, Pending: 2, Failed: 1}},
		},
		Failures: []siteopsv1.TaskFailure{
			{Computer: "pc-003", Reason: "DiskFailed", Message: "writing the image to /dev/sda failed at 4.1 GiB: input/output error, " +
				"the disk reports 112 reallocated sectors", Time: ptr.To(at(40))},
			{Computer: "pc-017", Reason: "ExitCode", ExitCode: ptr.To(int32(3)), Message: "the post-install script exited with 3"},
		},
		Conditions: []metav1.Condition{
			cond(siteopsv1.ConditionReady, metav1.ConditionFalse, siteopsv1.ReasonTaskRunning, "37 of 60 targets succeeded"),
			cond(siteopsv1.ConditionContentReady, metav1.ConditionFalse, siteopsv1.ReasonWaitingForContent,
				"Package win11-23h2 is not Ready at site lyon"),
		},
	}
	return task
}

// pc003 is a computer whose last task, a script, failed with output.
func pc003() *siteopsv1.Computer {
	c := computer("pc-003", "paris", false)
	c.Status.LastTask = &siteopsv1.ComputerTask{Name: "inventory", UID: "6c1f", Attempt: 2, State: "Failed", Reason: "ExitCode",
		ExitCode: ptr.To(int32(1)), Started: ptr.To(at(20)), Finished: ptr.To(at(21)), OutputTruncated: true,
		Output: "collecting\nhardware: ok\nsoftware: ok\n\tdrivers: 12\nnetwork: ok\nuploading the report to " +
			"https://inventory.corp.example/api/v2/reports/branch/paris/pc-003 failed: 503 Service Unavailable\n"}
	return &c
}
