package controllers

// The Subnet controller's read-your-writes guard, over controller-runtime's
// fake client with a Get that can serve a stale copy, as an informer that
// has not seen the controller's last write yet does.

import (
	"context"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
	"github.com/siteops/site-operator/internal/topology"
	"github.com/siteops/site-operator/internal/topologyfeed"
)

func TestSubnetStatusIsNotWrittenAgainFromAStaleCache(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := siteopsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	sn := &siteopsv1.Subnet{ObjectMeta: metav1.ObjectMeta{Name: "lan", Generation: 1},
		Spec: siteopsv1.SubnetSpec{CIDR: "10.9.0.0/16", Site: "paris"}}
	var stale atomic.Pointer[siteopsv1.Subnet]
	var patches atomic.Int32
	fc := fake.NewClientBuilder().WithScheme(scheme).WithObjects(sn).WithStatusSubresource(sn).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				if old := stale.Load(); old != nil {
					old.DeepCopyInto(obj.(*siteopsv1.Subnet))
					return nil
				}
				return c.Get(ctx, key, obj, opts...)
			},
			SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
				patches.Add(1)
				return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	resolver := topology.New()
	resolver.SetSite("paris")
	var stored siteopsv1.Subnet
	if err := fc.Get(context.Background(), types.NamespacedName{Name: "lan"}, &stored); err != nil {
		t.Fatal(err)
	}
	resolver.SetSubnet(topologyfeed.Subnet(&stored))
	r := &SubnetReconciler{Client: fc, feed: &resolverFeed{resolver: resolver, fedGeneration: map[string]int64{"lan": 1}}}
	reconcile := func() {
		t.Helper()
		if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Name: "lan"}}); err != nil {
			t.Fatal(err)
		}
	}

	reconcile()
	if patches.Load() != 1 {
		t.Fatalf("%d status writes for a new Subnet, want 1", patches.Load())
	}
	// The cache has not seen that write yet: the same status is not
	// written again.
	stale.Store(stored.DeepCopy())
	reconcile()
	if patches.Load() != 1 {
		t.Errorf("the status was written again from a cache that lags the first write (%d writes)", patches.Load())
	}
	// Once the cache holds the write, the controller compares as usual.
	stale.Store(nil)
	reconcile()
	if patches.Load() != 1 {
		t.Errorf("a current cache led to a write (%d writes)", patches.Load())
	}
	// A new verdict is written.
	resolver.DeleteSite("paris")
	reconcile()
	var got siteopsv1.Subnet
	if err := fc.Get(context.Background(), types.NamespacedName{Name: "lan"}, &got); err != nil {
		t.Fatal(err)
	}
	if patches.Load() != 2 || got.Status.EffectiveSite != "" {
		t.Errorf("after the Site went: %d writes, effectiveSite %q, want 2 and none", patches.Load(), got.Status.EffectiveSite)
	}
}
