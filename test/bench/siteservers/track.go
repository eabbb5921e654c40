package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// tracker records, from an informer's events, when each object of a kind
// first met a condition, measured from a start time.
type tracker struct {
	name  string
	want  int
	ready func(client.Object) bool

	mu    sync.Mutex
	start time.Time
	at    map[string]time.Duration
	done  chan struct{}
}

// newTracker tracks objects of obj's kind in c (namespace "" for all)
// that meet ready; it is done once want of them have.
func newTracker[T client.Object](ctx context.Context, c cache.Cache, name string, want int, obj T, namespace string,
	ready func(T) bool) (*tracker, error) {
	t := &tracker{
		name:  name,
		want:  want,
		ready: func(o client.Object) bool { v, ok := o.(T); return ok && ready(v) },
		start: time.Now(),
		at:    map[string]time.Duration{},
		done:  make(chan struct{}),
	}
	inf, err := c.GetInformer(ctx, obj)
	if err != nil {
		return nil, fmt.Errorf("getting the informer of %s: %w", name, err)
	}
	observe := func(o any) {
		if co, ok := o.(client.Object); ok && (namespace == "" || co.GetNamespace() == namespace) {
			t.observe(co)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, o any) { observe(o) },
	}); err != nil {
		return nil, fmt.Errorf("watching %s: %w", name, err)
	}
	return t, nil
}

// reset starts the clock again and forgets what was seen.
func (t *tracker) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = time.Now()
	clear(t.at)
}

func (t *tracker) observe(o client.Object) {
	if !t.ready(o) {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	key := o.GetNamespace() + "/" + o.GetName()
	if _, seen := t.at[key]; seen {
		return
	}
	t.at[key] = time.Since(t.start)
	if len(t.at) == t.want {
		close(t.done)
	}
}

// count is how many objects have met the condition.
func (t *tracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.at)
}

// latencies are the times at which the objects met the condition, sorted.
func (t *tracker) latencies() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]time.Duration, 0, len(t.at))
	for _, d := range t.at {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// quantile is the q-quantile (0..1) of sorted durations; 0 when empty.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
