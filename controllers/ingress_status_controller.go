package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	"portico.dev/portico/dataplane/route"
)

// IngressStatusReconciler writes each Ingress's status.loadBalancer: the addresses of the fleet
// serving it (IngressDeployment.status.addresses, with the node ports for NodePort fleets). It is
// the only writer of that field, and runs only on the elected operator.
type IngressStatusReconciler struct {
	client.Client
	// APIReader reads an Ingress's managedFields (the cache strips them) to tell whether the
	// address in its status is one Portico wrote.
	APIReader client.Reader
}

// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingresses/status,verbs=get;update;patch

// Reconcile brings one Ingress's status address in line with its fleet.
func (r *IngressStatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ing := &networkingv1.Ingress{}
	if err := r.Get(ctx, req.NamespacedName, ing); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	fleet, err := servingFleet(ctx, r.Client, ing)
	if err != nil {
		return ctrl.Result{}, err
	}
	switch {
	case fleet == nil:
		// Not ours, or no longer: clear the address only if Portico wrote it.
		return ctrl.Result{}, clearIfOurs(ctx, r.Client, r.APIReader, ing)
	case !fleet.DeletionTimestamp.IsZero():
		return ctrl.Result{}, nil // the fleet's finalizer clears it once the proxies are gone
	}
	want, err := r.loadBalancerStatus(ctx, fleet)
	if err != nil || len(want) == 0 {
		return ctrl.Result{}, err // nothing known yet: keep what the Ingress has
	}
	return ctrl.Result{}, writeIngressStatus(ctx, r.Client, ing, want)
}

// fleetIndex answers which fleet serves an Ingress, from one listing of the IngressClasses and
// IngressDeployments (build it once, ask it for many Ingresses).
type fleetIndex struct {
	classes []networkingv1.IngressClass
	byName  map[types.NamespacedName]*porticov1alpha1.IngressDeployment
}

func newFleetIndex(ctx context.Context, c client.Reader) (*fleetIndex, error) {
	classes := &networkingv1.IngressClassList{}
	if err := c.List(ctx, classes); err != nil {
		return nil, fmt.Errorf("list IngressClasses: %w", err)
	}
	fleets := &porticov1alpha1.IngressDeploymentList{}
	if err := c.List(ctx, fleets); err != nil {
		return nil, fmt.Errorf("list IngressDeployments: %w", err)
	}
	ix := &fleetIndex{classes: classes.Items, byName: make(map[types.NamespacedName]*porticov1alpha1.IngressDeployment, len(fleets.Items))}
	for i := range fleets.Items {
		ix.byName[client.ObjectKeyFromObject(&fleets.Items[i])] = &fleets.Items[i]
	}
	return ix, nil
}

// serving returns the fleet that serves ing, or nil.
func (ix *fleetIndex) serving(ing *networkingv1.Ingress) *porticov1alpha1.IngressDeployment {
	nn, ok := route.FleetServing(ing, ix.classes, func(f types.NamespacedName, ns string) bool {
		fl := ix.byName[f]
		return fl != nil && (len(fl.Spec.WatchNamespaces) == 0 || slices.Contains(fl.Spec.WatchNamespaces, ns))
	}, func(f types.NamespacedName) bool { return ix.byName[f].Spec.IgnoreDefaultClass })
	if !ok {
		return nil
	}
	return ix.byName[nn]
}

// servingFleet returns the fleet that serves ing, or nil.
func servingFleet(ctx context.Context, c client.Reader, ing *networkingv1.Ingress) (*porticov1alpha1.IngressDeployment, error) {
	ix, err := newFleetIndex(ctx, c)
	if err != nil {
		return nil, err
	}
	return ix.serving(ing), nil
}

// loadBalancerStatus is what a fleet's Ingresses carry: its addresses, with the Service's node
// ports for a NodePort fleet.
func (r *IngressStatusReconciler) loadBalancerStatus(ctx context.Context, fleet *porticov1alpha1.IngressDeployment) ([]networkingv1.IngressLoadBalancerIngress, error) {
	var ports []networkingv1.IngressPortStatus
	if fleet.Spec.Topology.Type == porticov1alpha1.TopologyNodePort && (fleet.Spec.StatusAddress == nil ||
		len(fleet.Spec.StatusAddress.Addresses)+len(fleet.Spec.StatusAddress.Hostnames) == 0) {
		svc := &corev1.Service{}
		err := r.Get(ctx, types.NamespacedName{Namespace: fleet.Namespace, Name: render.ProxyName(fleet)}, svc)
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("get Service of %s/%s: %w", fleet.Namespace, fleet.Name, err)
		}
		for _, p := range svc.Spec.Ports {
			// The HTTP and HTTPS node ports: an Ingress is served on those, not on the
			// fleet's TCP and UDP services (spec.tcp, spec.udp) that share the Service.
			if p.NodePort != 0 && (p.Name == "http" || p.Name == "https") {
				ports = append(ports, networkingv1.IngressPortStatus{Port: p.NodePort, Protocol: corev1.ProtocolTCP})
			}
		}
	}
	var out []networkingv1.IngressLoadBalancerIngress
	for _, a := range fleet.Status.Addresses {
		in := networkingv1.IngressLoadBalancerIngress{Ports: ports}
		if a.Type == porticov1alpha1.IPAddressType {
			in.IP = a.Value
		} else {
			in.Hostname = a.Value
		}
		out = append(out, in)
	}
	return out, nil
}

// writeIngressStatus sets status.loadBalancer.ingress when it differs, with an optimistic lock:
// a conflict is returned, and the Ingress reconciled again.
func writeIngressStatus(ctx context.Context, c client.Client, ing *networkingv1.Ingress, want []networkingv1.IngressLoadBalancerIngress) error {
	if equalLB(ing.Status.LoadBalancer.Ingress, want) {
		return nil
	}
	patch := client.MergeFromWithOptions(ing.DeepCopy(), client.MergeFromWithOptimisticLock{})
	ing.Status.LoadBalancer.Ingress = want
	if err := c.Status().Patch(ctx, ing, patch, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("write status of Ingress %s/%s: %w", ing.Namespace, ing.Name, err)
	}
	log.FromContext(ctx).V(1).Info("Ingress address written", "ingress", client.ObjectKeyFromObject(ing), "addresses", len(want))
	return nil
}

func equalLB(a, b []networkingv1.IngressLoadBalancerIngress) bool {
	return slices.EqualFunc(a, b, func(x, y networkingv1.IngressLoadBalancerIngress) bool {
		return x.IP == y.IP && x.Hostname == y.Hostname && slices.EqualFunc(x.Ports, y.Ports, func(p, q networkingv1.IngressPortStatus) bool {
			return p.Port == q.Port && p.Protocol == q.Protocol && (p.Error == nil) == (q.Error == nil) && (p.Error == nil || *p.Error == *q.Error)
		})
	})
}

// clearIfOurs empties the status address of an Ingress, if Portico's field manager wrote it.
func clearIfOurs(ctx context.Context, c client.Client, reader client.Reader, ing *networkingv1.Ingress) error {
	if len(ing.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	live := &networkingv1.Ingress{}
	if err := reader.Get(ctx, client.ObjectKeyFromObject(ing), live); err != nil {
		return client.IgnoreNotFound(err)
	}
	ours := false
	for _, mf := range live.ManagedFields {
		if mf.Manager == FieldOwner && mf.Subresource == "status" {
			ours = true
		}
	}
	if !ours || len(live.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	patch := client.MergeFromWithOptions(live.DeepCopy(), client.MergeFromWithOptimisticLock{})
	live.Status.LoadBalancer.Ingress = nil
	if err := c.Status().Patch(ctx, live, patch, client.FieldOwner(FieldOwner)); err != nil {
		return fmt.Errorf("clear status of Ingress %s/%s: %w", ing.Namespace, ing.Name, err)
	}
	log.FromContext(ctx).Info("Ingress address cleared", "ingress", client.ObjectKeyFromObject(ing))
	return nil
}

// clearFleetIngresses clears the address of every Ingress the fleet serves (called by the
// fleet's finalizer once its proxies are gone).
func clearFleetIngresses(ctx context.Context, c client.Client, reader client.Reader, fleet *porticov1alpha1.IngressDeployment) error {
	ix, err := newFleetIndex(ctx, c)
	if err != nil {
		return err
	}
	ings := &networkingv1.IngressList{}
	if err := c.List(ctx, ings); err != nil {
		return fmt.Errorf("list Ingresses: %w", err)
	}
	var errs []error
	for i := range ings.Items {
		ing := &ings.Items[i]
		if f := ix.serving(ing); f != nil && f.UID == fleet.UID {
			errs = append(errs, clearIfOurs(ctx, c, reader, ing))
		}
	}
	return errors.Join(errs...)
}

// SetupWithManager watches Ingresses, and maps changes of fleets (addresses, served namespaces),
// of their Services (node ports) and of IngressClasses to the Ingresses concerned.
func (r *IngressStatusReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingressstatus").
		For(&networkingv1.Ingress{}).
		Watches(&porticov1alpha1.IngressDeployment{}, handler.EnqueueRequestsFromMapFunc(r.ingressesOfFleet),
			builder.WithPredicates(fleetServingChanged)).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.ingressesOfFleetService)).
		Watches(&networkingv1.IngressClass{}, handler.EnqueueRequestsFromMapFunc(r.ingressesOfClass)).
		WithOptions(controller.Options{MaxConcurrentReconciles: 16}).
		Complete(r)
}

// fleetServingChanged passes fleet events that change what its Ingresses should carry.
var fleetServingChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*porticov1alpha1.IngressDeployment)
		n, ok2 := e.ObjectNew.(*porticov1alpha1.IngressDeployment)
		return ok1 && ok2 && (!slices.Equal(o.Status.Addresses, n.Status.Addresses) || o.Generation != n.Generation ||
			o.DeletionTimestamp.IsZero() != n.DeletionTimestamp.IsZero())
	},
}

// ingressesOfFleet enqueues every Ingress the fleet serves, or could serve (any in its watched
// namespaces): the reconcile decides.
func (r *IngressStatusReconciler) ingressesOfFleet(ctx context.Context, o client.Object) []reconcile.Request {
	f, ok := o.(*porticov1alpha1.IngressDeployment)
	if !ok {
		return nil
	}
	namespaces := f.Spec.WatchNamespaces
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	var out []reconcile.Request
	for _, ns := range namespaces {
		ings := &networkingv1.IngressList{}
		if err := r.List(ctx, ings, client.InNamespace(ns)); err != nil {
			log.FromContext(ctx).Error(err, "List Ingresses", "namespace", ns)
			continue
		}
		for i := range ings.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ings.Items[i])})
		}
	}
	return out
}

func (r *IngressStatusReconciler) ingressesOfFleetService(ctx context.Context, o client.Object) []reconcile.Request {
	reqs := fleetFromLabels(ctx, o)
	if len(reqs) == 0 || o.GetLabels()[render.LabelComponent] != render.ComponentProxy {
		return nil
	}
	f := &porticov1alpha1.IngressDeployment{}
	if err := r.Get(ctx, reqs[0].NamespacedName, f); err != nil {
		return nil
	}
	return r.ingressesOfFleet(ctx, f)
}

// ingressesOfClass enqueues the Ingresses naming the class, and the class-less ones when it is
// (or was) a default class. On update both the old and the new class are mapped.
func (r *IngressStatusReconciler) ingressesOfClass(ctx context.Context, o client.Object) []reconcile.Request {
	ings := &networkingv1.IngressList{}
	if err := r.List(ctx, ings); err != nil {
		log.FromContext(ctx).Error(err, "List Ingresses")
		return nil
	}
	isDefault := o.GetAnnotations()[route.DefaultClassAnnotation] == "true"
	var out []reconcile.Request
	for i := range ings.Items {
		name, has := route.ClassOf(&ings.Items[i])
		if (has && name == o.GetName()) || (!has && isDefault) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ings.Items[i])})
		}
	}
	return out
}
