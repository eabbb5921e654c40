package topologyfeed

import (
	"testing"

	toolscache "k8s.io/client-go/tools/cache"

	siteopsv1 "github.com/siteops/site-operator/api/v1alpha1"
)

// An informer that missed a delete hands over a tombstone keyed by the
// name of the cluster-scoped object.
func TestDeletedName(t *testing.T) {
	sn := &siteopsv1.Subnet{}
	sn.Name = "lab"
	if got := DeletedName(sn); got != "lab" {
		t.Errorf("DeletedName(object) = %q", got)
	}
	if got := DeletedName(toolscache.DeletedFinalStateUnknown{Key: "lab", Obj: sn}); got != "lab" {
		t.Errorf("DeletedName(tombstone) = %q", got)
	}
}
