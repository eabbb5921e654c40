package controllers

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"
	"k8s.io/utils/ptr"
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

// ErrNotOwned is wrapped by the error of applyIfChanged and deleteIfExists
// when the object exists but another controller (or nobody) controls it:
// the operator neither overwrites nor deletes it, and reports it instead.
var ErrNotOwned = errors.New("object is not controlled by the expected owner")

// OwnershipError says which object is in the way and who controls it.
type OwnershipError struct {
	// Object is "<Kind> <namespace>/<name>".
	Object string
	// Expected is "<Kind> <name>" of the owner the operator would set.
	Expected string
	// Actual is "<Kind> <name>" of the live object's controller, or "".
	Actual string
}

func (e *OwnershipError) Error() string {
	actual := "no controller"
	if e.Actual != "" {
		actual = "controller " + e.Actual
	}
	return fmt.Sprintf("%s exists with %s, not %s: the operator leaves it alone; delete or rename it", e.Object, actual, e.Expected)
}

// Unwrap makes errors.Is(err, ErrNotOwned) true.
func (e *OwnershipError) Unwrap() error { return ErrNotOwned }

// expectedOwner is the controller owner reference of desired, nil when it
// names none. client-go's typed apply configurations have no getter for
// their owner references, so it reads the embedded
// ObjectMetaApplyConfiguration they all share.
func expectedOwner(desired any) *metav1ac.OwnerReferenceApplyConfiguration {
	v := reflect.ValueOf(desired)
	if v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	f := v.FieldByName("ObjectMetaApplyConfiguration")
	if !f.IsValid() || f.Kind() != reflect.Pointer || f.IsNil() {
		return nil
	}
	meta, ok := f.Interface().(*metav1ac.ObjectMetaApplyConfiguration)
	if !ok {
		return nil
	}
	for _, ref := range meta.OwnerReferences {
		if ref.Controller != nil && *ref.Controller && ref.Kind != nil && ref.Name != nil {
			return &ref
		}
	}
	return nil
}

// checkController returns an *OwnershipError when live's controller is not
// the owner described by kind, name and uid.
func checkController(live client.Object, kind, name string, uid types.UID) error {
	ref := metav1.GetControllerOf(live)
	if ref != nil && ref.Kind == kind && ref.Name == name && (uid == "" || ref.UID == uid) {
		return nil
	}
	err := &OwnershipError{
		Object:   fmt.Sprintf("%T %s", live, client.ObjectKeyFromObject(live)),
		Expected: kind + " " + name,
	}
	if ref != nil {
		err.Actual = ref.Kind + " " + ref.Name
	}
	return err
}

// applyIfChanged applies desired with server-side apply unless the fields
// the operator owns in the cached live object already equal it, so that a
// steady state sends no request. extract is client-go's Extract<Kind>
// function for the type. live is filled from the cache.
//
// When desired names a controller and the live object is controlled by
// another one (or by none), nothing is written and the error wraps
// ErrNotOwned: force-applying would take over an object that belongs to
// somebody else.
func applyIfChanged[T client.Object, AC applyConfiguration](ctx context.Context, c client.Client, live T, desired AC,
	extract func(T, string) (AC, error)) error {
	key := client.ObjectKey{Name: *desired.GetName()}
	if ns := desired.GetNamespace(); ns != nil {
		key.Namespace = *ns
	}
	switch err := c.Get(ctx, key, live); {
	case err == nil:
		if owner := expectedOwner(desired); owner != nil {
			uid := types.UID("")
			if owner.UID != nil {
				uid = *owner.UID
			}
			if err := checkController(live, *owner.Kind, *owner.Name, uid); err != nil {
				return err
			}
		}
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

// deleteIfExists deletes the named object when the cache holds it and
// owner controls it. An object controlled by anything else is left alone
// and reported with an error that wraps ErrNotOwned. The delete is
// preconditioned on the UID read, so an object recreated meanwhile is not
// deleted by mistake.
func deleteIfExists(ctx context.Context, c client.Client, obj client.Object, key client.ObjectKey, owner client.Object) error {
	if err := c.Get(ctx, key, obj); err != nil {
		return client.IgnoreNotFound(err)
	}
	gvk, err := c.GroupVersionKindFor(owner)
	if err != nil {
		return fmt.Errorf("finding the kind of %T: %w", owner, err)
	}
	if err := checkController(obj, gvk.Kind, owner.GetName(), owner.GetUID()); err != nil {
		return err
	}
	if err := c.Delete(ctx, obj, client.Preconditions{UID: ptr.To(obj.GetUID())}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %T %s: %w", obj, key, err)
	}
	return nil
}
