// Command shardwrites measures what one write of a DispatchShard costs the
// API server: a real kube-apiserver and etcd (envtest, with the CRDs of
// -crd-dir), one shard of N entries, then writes that change 24 entries
// each, as a batch of claims and reports does, sent one after the other
// with the task services' patch (a JSON merge patch conditioned on the
// resourceVersion). It reports the wall time and the kube-apiserver's CPU
// time per write, read from /proc, so it runs on Linux.
//
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/shardwrites
//	KUBEBUILDER_ASSETS="$(hack/controlplane.sh)" go run ./test/bench/shardwrites -crd-dir /tmp/old-crds
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/controllers"
)

func main() {
	crdDir := flag.String("crd-dir", "config/crd/bases", "Directory of the CRDs to install.")
	sizes := flag.String("entries", "156,780,3125", "Entries per shard, comma-separated: 10,000, 50,000 and 200,000 targets over 64 shards.")
	writes := flag.Int("writes", 40, "Writes measured per size.")
	flag.Parse()
	if err := run(*crdDir, *sizes, *writes); err != nil {
		log.Fatal(err)
	}
}

func run(crdDir, sizes string, writes int) (err error) {
	env := &envtest.Environment{CRDDirectoryPaths: []string{crdDir}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	defer func() { err = errors.Join(err, env.Stop()) }()
	apiServer, err := childNamed("kube-apiserver")
	if err != nil {
		return err
	}
	scheme, err := controllers.NewScheme()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := context.Background()
	fmt.Printf("CRDs from %s; %d writes per size, 24 entries changed by each\n\n", crdDir, writes)
	fmt.Println("| entries | shard JSON | wall per write | kube-apiserver CPU per write |")
	fmt.Println("| --- | --- | --- | --- |")
	for i, field := range strings.Split(sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err != nil || n < 24 {
			return fmt.Errorf("-entries: %q is not a count of at least 24", field)
		}
		if err := measure(ctx, c, apiServer, fmt.Sprintf("s%d", i), n, writes); err != nil {
			return err
		}
	}
	return nil
}

// measure creates a shard of n entries and times writes to it.
func measure(ctx context.Context, c client.Client, apiServer int, name string, n, writes int) error {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	sh := &siteopsv1.DispatchShard{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       siteopsv1.DispatchShardSpec{Task: "bench", TaskUID: "bench", Shard: 0},
		Entries:    map[string]siteopsv1.DispatchEntry{},
	}
	for i := range n {
		sh.Entries[computer(i)] = siteopsv1.DispatchEntry{Attempt: 1, State: siteopsv1.DispatchSucceeded,
			Server: "branch-bench-srv", Claimed: now, Finished: &now, ExitCode: ptr.To(int32(0))}
	}
	if err := c.Create(ctx, sh); err != nil {
		return fmt.Errorf("creating a shard of %d entries: %w", n, err)
	}
	size, err := sizeOf(sh)
	if err != nil {
		return err
	}
	cpu0, err := cpuSeconds(apiServer)
	if err != nil {
		return err
	}
	start := time.Now()
	for w := range writes {
		base := sh.DeepCopy()
		for j := range 24 {
			sh.Entries[computer((w*24+j)%n)] = siteopsv1.DispatchEntry{Attempt: 1, State: siteopsv1.DispatchRunning,
				Server: "branch-bench-srv", Claimed: now}
		}
		if err := c.Patch(ctx, sh, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{})); err != nil {
			return fmt.Errorf("writing a shard of %d entries: %w", n, err)
		}
	}
	wall := time.Since(start)
	cpu1, err := cpuSeconds(apiServer)
	if err != nil {
		return err
	}
	fmt.Printf("| %d | %.0f KB | %.1f ms | %.1f ms |\n", n, float64(size)/1000,
		float64(wall.Microseconds())/1000/float64(writes), (cpu1-cpu0)*1000/float64(writes))
	return nil
}

func computer(i int) string { return fmt.Sprintf("computer-%05d", i) }

func sizeOf(sh *siteopsv1.DispatchShard) (int, error) {
	u, err := client.MergeFrom(&siteopsv1.DispatchShard{}).Data(sh)
	return len(u), err
}

// childNamed finds this process's child process of that command name.
func childNamed(comm string) (int, error) {
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := strconv.Itoa(os.Getpid())
	for _, d := range dirs {
		stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != comm {
			continue
		}
		if fields := strings.Fields(s[end+2:]); len(fields) > 1 && fields[1] == self {
			return strconv.Atoi(d.Name())
		}
	}
	return 0, fmt.Errorf("no %s process started by this one", comm)
}

// cpuSeconds is the user and system CPU time of a process.
func cpuSeconds(pid int) (float64, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("reading /proc/%d/stat: too few fields", pid)
	}
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (utime + stime) / 100, nil // clock ticks: 100 per second on Linux
}
