package controllers

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// collectTimeout bounds one scrape's reads of the cache.
const collectTimeout = 10 * time.Second

// Readiness label values of the status rollups: a Ready condition that
// is True, False, or absent or Unknown.
const (
	readyTrue    = "true"
	readyFalse   = "false"
	readyUnknown = "unknown"
)

var (
	readyValues   = []string{readyTrue, readyFalse, readyUnknown}
	contentStates = []string{siteopsv1.ContentPending, siteopsv1.ContentReplicating, siteopsv1.ContentReady, siteopsv1.ContentFailed}
	taskPhases    = []string{siteopsv1.TaskPending, siteopsv1.TaskWaitingForContent, siteopsv1.TaskRunning,
		siteopsv1.TaskSucceeded, siteopsv1.TaskFailed, siteopsv1.TaskStopped}
	targetStates = []string{"pending", "running", "succeeded", "failed"}
)

var (
	sitesDesc = prometheus.NewDesc("siteops_sites",
		"Sites by their Ready condition (true: a task service of their own is ready).", []string{"ready"}, nil)
	siteServersDesc = prometheus.NewDesc("siteops_siteservers",
		"SiteServers by their Ready condition.", []string{"ready"}, nil)
	computersDesc = prometheus.NewDesc("siteops_computers",
		"Computers by their Ready condition (true: the agent checked in recently; false: AgentOffline or not yet seen).", []string{"ready"}, nil)
	packagesDesc = prometheus.NewDesc("siteops_packages",
		"Packages by their Ready condition (true: the content is Ready at every site that wants it).", []string{"ready"}, nil)
	packageSitesDesc = prometheus.NewDesc("siteops_package_sites",
		"Copies of Packages at sites (the entries of every Package's status.sites) by state.", []string{"state"}, nil)
	tasksDesc = prometheus.NewDesc("siteops_deploymenttasks",
		"DeploymentTasks by phase.", []string{"phase"}, nil)
	targetsDesc = prometheus.NewDesc("siteops_deploymenttask_targets",
		"Targets of every DeploymentTask (status.targets added up) by state.", []string{"state"}, nil)
	importsDesc = prometheus.NewDesc("siteops_directoryimports",
		"DirectoryImports by their Ready condition.", []string{"ready"}, nil)
)

// StatusCollector exports the status of the siteops.io objects as
// counts, read from the manager's cache at each scrape: how many Sites,
// SiteServers, Computers, Packages and DirectoryImports are ready, how many
// copies of Packages are in each state, how many DeploymentTasks are in
// each phase and where their targets stand. No label names an object or a
// site, so the series stay a handful however many objects there are.
//
// Only the elected replica exports them (elected is closed once it leads;
// ctrl.Manager.Elected): it is the one whose controllers wrote those
// statuses and whose cache watches every kind, and the figures are not
// repeated once per replica. A dashboard takes the max over the pods.
func StatusCollector(c client.Reader, elected <-chan struct{}) prometheus.Collector {
	return &statusCollector{reader: c, elected: elected}
}

type statusCollector struct {
	reader  client.Reader
	elected <-chan struct{}
}

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{sitesDesc, siteServersDesc, computersDesc, packagesDesc, packageSitesDesc,
		tasksDesc, targetsDesc, importsDesc} {
		ch <- d
	}
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	select {
	case <-c.elected:
	default:
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), collectTimeout)
	defer cancel()
	log := ctrl.Log.WithName("metrics")
	// Read-only: the cache's objects are not copied.
	list := func(l client.ObjectList) bool {
		if err := c.reader.List(ctx, l, client.UnsafeDisableDeepCopy); err != nil {
			// A failed family is left out of this scrape rather than
			// failing the scrape of every other metric.
			log.Error(err, "Listing for the status metrics", "list", fmt.Sprintf("%T", l))
			return false
		}
		return true
	}
	emit := func(desc *prometheus.Desc, values []string, counts map[string]int) {
		for _, v := range values {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(counts[v]), v)
		}
	}

	var sites siteopsv1.SiteList
	if list(&sites) {
		counts := map[string]int{}
		for i := range sites.Items {
			counts[readiness(sites.Items[i].Status.Conditions)]++
		}
		emit(sitesDesc, readyValues, counts)
	}
	var servers siteopsv1.SiteServerList
	if list(&servers) {
		counts := map[string]int{}
		for i := range servers.Items {
			counts[readiness(servers.Items[i].Status.Conditions)]++
		}
		emit(siteServersDesc, readyValues, counts)
	}
	var computers siteopsv1.ComputerList
	if list(&computers) {
		counts := map[string]int{}
		for i := range computers.Items {
			counts[readiness(computers.Items[i].Status.Conditions)]++
		}
		emit(computersDesc, readyValues, counts)
	}
	var pkgs siteopsv1.PackageList
	if list(&pkgs) {
		ready, states := map[string]int{}, map[string]int{}
		for i := range pkgs.Items {
			p := &pkgs.Items[i]
			ready[readiness(p.Status.Conditions)]++
			for _, s := range p.Status.Sites {
				states[s.State]++
			}
		}
		emit(packagesDesc, readyValues, ready)
		emit(packageSitesDesc, contentStates, states)
	}
	var tasks siteopsv1.DeploymentTaskList
	if list(&tasks) {
		phases, targets := map[string]int{}, map[string]int{}
		for i := range tasks.Items {
			st := &tasks.Items[i].Status
			phase := st.Phase
			if phase == "" {
				phase = siteopsv1.TaskPending // not reconciled yet
			}
			phases[phase]++
			targets["pending"] += int(st.Targets.Pending)
			targets["running"] += int(st.Targets.Running)
			targets["succeeded"] += int(st.Targets.Succeeded)
			targets["failed"] += int(st.Targets.Failed)
		}
		emit(tasksDesc, taskPhases, phases)
		emit(targetsDesc, targetStates, targets)
	}
	var imports siteopsv1.DirectoryImportList
	if list(&imports) {
		counts := map[string]int{}
		for i := range imports.Items {
			counts[readiness(imports.Items[i].Status.Conditions)]++
		}
		emit(importsDesc, readyValues, counts)
	}
}

// readiness is the ready label value of an object with conds.
func readiness(conds []metav1.Condition) string {
	c := meta.FindStatusCondition(conds, siteopsv1.ConditionReady)
	switch {
	case c == nil:
		return readyUnknown
	case c.Status == metav1.ConditionTrue:
		return readyTrue
	case c.Status == metav1.ConditionFalse:
		return readyFalse
	}
	return readyUnknown
}
