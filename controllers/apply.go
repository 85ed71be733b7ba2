package controllers

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
)

// FieldOwner is the server-side apply field manager of everything the operator writes.
const FieldOwner = "portico-operator"

// managedKinds are the kinds Render may return. Pruning lists each by the fleet's labels, so an
// object of one of these kinds that Render stops returning is deleted.
var managedKinds = []client.ObjectList{
	&corev1.ServiceAccountList{},
	&rbacv1.ClusterRoleList{},
	&rbacv1.ClusterRoleBindingList{},
	&rbacv1.RoleList{},
	&rbacv1.RoleBindingList{},
	&corev1.ConfigMapList{},
	&appsv1.DaemonSetList{},
	&appsv1.DeploymentList{},
	&corev1.ServiceList{},
	&policyv1.PodDisruptionBudgetList{},
}

// objectKey identifies an object across kinds and namespaces.
type objectKey struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

// applyObject server-side applies obj under FieldOwner with forced ownership. The object is
// sent as unstructured without status or creation timestamps, so the operator owns exactly the
// fields Render sets: fields other managers set (annotations added by a cloud controller, say)
// are left alone, and fields Render stops setting are removed.
func applyObject(ctx context.Context, c client.Client, obj client.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("convert %T %s: %w", obj, client.ObjectKeyFromObject(obj), err)
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "spec", "template", "metadata", "creationTimestamp")
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
	if err := c.Apply(ctx, ac, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// reconcileObjects applies every desired object, then deletes every object of a managed kind
// carrying the fleet's labels that is not desired. An apply error does not stop the others; all
// errors are returned joined. Nothing is pruned while any apply failed, so a transient error never
// takes a working fleet down.
func reconcileObjects(ctx context.Context, c client.Client, fleet *porticov1alpha1.IngressDeployment, desired []client.Object) error {
	want := make(map[objectKey]bool, len(desired))
	var errs []error
	for _, obj := range desired {
		want[keyOf(obj.GetObjectKind().GroupVersionKind(), obj)] = true
		if err := applyObject(ctx, c, obj); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return prune(ctx, c, fleet, want)
}

// prune deletes the fleet's objects (found by label) whose key is not in want.
func prune(ctx context.Context, c client.Client, fleet *porticov1alpha1.IngressDeployment, want map[objectKey]bool) error {
	var errs []error
	for _, proto := range managedKinds {
		list := proto.DeepCopyObject().(client.ObjectList)
		if err := c.List(ctx, list, client.MatchingLabels(render.FleetLabels(fleet))); err != nil {
			errs = append(errs, fmt.Errorf("list %T: %w", list, err))
			continue
		}
		gvk, err := apiutil.GVKForObject(list, c.Scheme())
		if err != nil {
			return err
		}
		gvk.Kind = gvk.Kind[:len(gvk.Kind)-len("List")]
		items, err := itemsOf(list)
		if err != nil {
			return err
		}
		for _, obj := range items {
			if want[keyOf(gvk, obj)] || !obj.GetDeletionTimestamp().IsZero() {
				continue
			}
			if err := c.Delete(ctx, obj, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete %s %s: %w", gvk.Kind, client.ObjectKeyFromObject(obj), err))
			}
		}
	}
	return errors.Join(errs...)
}

func keyOf(gvk schema.GroupVersionKind, obj client.Object) objectKey {
	return objectKey{gvk: gvk, namespace: obj.GetNamespace(), name: obj.GetName()}
}

func itemsOf(list client.ObjectList) ([]client.Object, error) {
	objs, err := apimeta.ExtractList(list)
	if err != nil {
		return nil, fmt.Errorf("extract %T: %w", list, err)
	}
	out := make([]client.Object, 0, len(objs))
	for _, o := range objs {
		co, ok := o.(client.Object)
		if !ok {
			return nil, fmt.Errorf("extract %T: item %T is not a client.Object", list, o)
		}
		out = append(out, co)
	}
	return out, nil
}
