package controllers

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// fieldOwner is the server-side-apply field manager of every object the
// operator applies.
const fieldOwner = "site-operator"

// applyConfiguration is a typed apply configuration that knows its name.
type applyConfiguration interface {
	runtime.ApplyConfiguration
	GetName() *string
	GetNamespace() *string
}

// applyIfChanged applies desired with server-side apply unless the fields
// the operator owns in the cached live object already equal it, so that a
// steady state sends no request. extract is client-go's Extract<Kind>
// function for the type. live is filled from the cache.
func applyIfChanged[T client.Object, AC applyConfiguration](ctx context.Context, c client.Client, live T, desired AC,
	extract func(T, string) (AC, error)) error {
	key := client.ObjectKey{Name: *desired.GetName()}
	if ns := desired.GetNamespace(); ns != nil {
		key.Namespace = *ns
	}
	switch err := c.Get(ctx, key, live); {
	case err == nil:
		owned, err := extract(live, fieldOwner)
		if err == nil && equality.Semantic.DeepEqual(owned, desired) {
			return nil
		}
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("reading %T %s: %w", live, key, err)
	}
	if err := c.Apply(ctx, desired, client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %T %s: %w", live, key, err)
	}
	return nil
}

// deleteIfExists deletes the named object when the cache holds it.
func deleteIfExists(ctx context.Context, c client.Client, obj client.Object, key client.ObjectKey) error {
	if err := c.Get(ctx, key, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	if err := c.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %T %s: %w", obj, key, err)
	}
	return nil
}
