package controllers

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/dataplane/route"
)

// IngressClassReconciler reports IngressClasses of ours whose parameters cannot be served, with a
// Warning Event on the class naming the problem. It writes nothing else.
type IngressClassReconciler struct {
	client.Client
	Recorder events.EventRecorder
}

// Reconcile checks one IngressClass.
func (r *IngressClassReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ic := &networkingv1.IngressClass{}
	if err := r.Get(ctx, req.NamespacedName, ic); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !route.IsOurs(ic) {
		return ctrl.Result{}, nil
	}
	nn, err := route.FleetForClass(ic)
	if err != nil {
		r.Recorder.Eventf(ic, nil, corev1.EventTypeWarning, porticov1alpha1.ReasonInvalidClassParams, "Bind", "%s", err.Error())
		return ctrl.Result{}, nil
	}
	err = r.Get(ctx, nn, &porticov1alpha1.IngressDeployment{})
	if apierrors.IsNotFound(err) {
		r.Recorder.Eventf(ic, nil, corev1.EventTypeWarning, porticov1alpha1.ReasonInvalidClassParams, "Bind",
			"spec.parameters: IngressDeployment %s not found", nn)
		return ctrl.Result{}, nil
	}
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("get IngressDeployment %s for IngressClass %s: %w", nn, ic.Name, err)
	}
	return ctrl.Result{}, nil
}

// SetupWithManager watches the IngressClasses of ours, and IngressDeployments being created or
// deleted (a class naming a fleet that appears or goes).
func (r *IngressClassReconciler) SetupWithManager(mgr ctrl.Manager) error {
	ours := predicate.NewPredicateFuncs(func(o client.Object) bool {
		ic, ok := o.(*networkingv1.IngressClass)
		return ok && route.IsOurs(ic)
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingressclass").
		For(&networkingv1.IngressClass{}, builder.WithPredicates(ours, predicate.GenerationChangedPredicate{})).
		Complete(r)
}
