package controllers

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/labels"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"portico.dev/portico/controllers/render"
)

// Setup registers every reconciler of the operator with mgr. image runs the fleets.
func Setup(ctx context.Context, mgr ctrl.Manager, image string) error {
	if err := (&IngressDeploymentReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("portico-operator"),
		Image:     image,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up IngressDeployment controller: %w", err)
	}
	if err := (&IngressStatusReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up Ingress status controller: %w", err)
	}
	if err := (&IngressProblemsReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		//lint:ignore SA1019 core/v1 Events on purpose: see IngressProblemsReconciler.Recorder.
		Recorder: mgr.GetEventRecorderFor("portico-operator"),
	}).SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up Ingress problems controller: %w", err)
	}
	if err := (&IngressClassReconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("portico-operator"),
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up IngressClass controller: %w", err)
	}
	return nil
}

// CacheOptions restricts the operator's informers for the kinds it renders to the objects it
// labelled (and the pods of its fleets), so a large cluster's Deployments, ConfigMaps, RBAC and
// pods are not all held in memory.
// Services are cached whole (a fleet may name any Service as its default backend); Secrets are
// watched as metadata only.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{render.LabelManagedBy: render.ManagedByValue})
	by := cache.ByObject{Label: managed}
	return cache.Options{
		DefaultTransform: cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:            by,
			&appsv1.DaemonSet{}:             by,
			&corev1.ServiceAccount{}:        by,
			&corev1.ConfigMap{}:             by,
			&policyv1.PodDisruptionBudget{}: by,
			&rbacv1.Role{}:                  by,
			&rbacv1.RoleBinding{}:           by,
			&rbacv1.ClusterRole{}:           by,
			&rbacv1.ClusterRoleBinding{}:    by,
			&corev1.Pod{}:                   by,
		},
	}
}
