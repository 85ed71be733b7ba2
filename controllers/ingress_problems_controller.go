package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	"portico.dev/portico/dataplane/route"
)

// hostIndex indexes Ingresses by the hosts of their rules.
const hostIndex = "portico.hosts"

// ReasonIngressProblem is the reason of the Warning Events put on Ingresses.
const ReasonIngressProblem = "RouteProblem"

// IngressProblemsReconciler reports what the proxies cannot serve of an Ingress (a missing
// Service or port, a missing or invalid TLS Secret, a host and path an older Ingress claims, a
// resource backend) as Warning Events on it. The problems come from the data plane's own compile
// step, run on the Ingress and what it refers to, so the operator and the proxies never disagree.
type IngressProblemsReconciler struct {
	client.Client
	// APIReader reads the TLS Secrets an Ingress names (the cache holds Secret metadata only).
	APIReader client.Reader
	// Recorder writes core/v1 Events, which are told apart by message: each distinct problem is
	// an Event of its own. (events.k8s.io folds every Event with the same reason and object into
	// one series that keeps its first note, so a second or a changed problem would not show.)
	Recorder record.EventRecorder

	mu       sync.Mutex
	reported map[types.NamespacedName]reported // last problems reported per Ingress
}

type reported struct {
	uid     types.UID
	summary string
}

// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// Reconcile checks one Ingress.
func (r *IngressProblemsReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ing := &networkingv1.Ingress{}
	if err := r.Get(ctx, req.NamespacedName, ing); err != nil {
		if apierrors.IsNotFound(err) {
			r.mu.Lock()
			delete(r.reported, req.NamespacedName)
			r.mu.Unlock()
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	fleet, err := servingFleet(ctx, r.Client, ing)
	if err != nil || fleet == nil {
		return ctrl.Result{}, err
	}
	in, err := r.input(ctx, ing, fleet)
	if err != nil {
		return ctrl.Result{}, err
	}
	_, problems := route.Compile(in)
	key := client.ObjectKeyFromObject(ing)
	var mine []string
	for _, p := range problems {
		if p.Ingress == key {
			mine = append(mine, p.Message)
		}
	}
	summary := strings.Join(mine, "\n")
	r.mu.Lock()
	prev, seen := r.reported[key]
	r.reported[key] = reported{uid: ing.UID, summary: summary}
	r.mu.Unlock()
	last := ""
	if seen && prev.uid == ing.UID {
		last = prev.summary
		if summary == last {
			return ctrl.Result{}, nil
		}
	}
	for _, m := range mine {
		if !strings.Contains(last, m) {
			r.Recorder.Event(ing, corev1.EventTypeWarning, ReasonIngressProblem, m)
		}
	}
	return ctrl.Result{}, nil
}

// input gathers what compiling this Ingress needs: the fleet's classes, the older Ingresses of
// the fleet sharing a host with it, the Services of its namespace and the TLS Secrets it names.
func (r *IngressProblemsReconciler) input(ctx context.Context, ing *networkingv1.Ingress, fleet *porticov1alpha1.IngressDeployment) (route.Input, error) {
	in := route.Input{Config: render.ProxyConfig(fleet)} // the fleet's settings, as its proxies read them
	compat := in.Config.IngressNginxCompatibility
	classes := &networkingv1.IngressClassList{}
	if err := r.List(ctx, classes); err != nil {
		return in, fmt.Errorf("list IngressClasses: %w", err)
	}
	for i := range classes.Items {
		in.Classes = append(in.Classes, &classes.Items[i])
	}
	in.Ingresses = []*networkingv1.Ingress{ing}
	seen := map[types.UID]bool{ing.UID: true}
	for _, h := range ingressHosts(ing) {
		sharing := &networkingv1.IngressList{}
		if err := r.List(ctx, sharing, client.MatchingFields{hostIndex: h}); err != nil {
			return in, fmt.Errorf("list Ingresses of host %q: %w", h, err)
		}
		for i := range sharing.Items {
			if o := &sharing.Items[i]; !seen[o.UID] {
				seen[o.UID] = true
				in.Ingresses = append(in.Ingresses, o)
			}
		}
	}
	svcs := &corev1.ServiceList{}
	if err := r.List(ctx, svcs, client.InNamespace(ing.Namespace)); err != nil {
		return in, fmt.Errorf("list Services: %w", err)
	}
	for i := range svcs.Items {
		in.Services = append(in.Services, &svcs.Items[i])
	}
	// A mirror-target may name a Service of another namespace.
	if ns, name, ok := route.MirrorService(ing, compat); ok && ns != ing.Namespace {
		svc := &corev1.Service{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, svc); err == nil {
			in.Services = append(in.Services, svc)
		} else if !apierrors.IsNotFound(err) {
			return in, fmt.Errorf("get Service %s/%s: %w", ns, name, err)
		}
	}
	names := make([]string, 0, len(ing.Spec.TLS)+2)
	for _, t := range ing.Spec.TLS {
		names = append(names, t.SecretName)
	}
	names = append(names, route.AnnotationSecrets(ing, compat)...) // backend TLS settings, credentials, client CAs
	for _, name := range names {
		if name == "" {
			continue
		}
		s := &corev1.Secret{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ing.Namespace, Name: name}, s)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return in, fmt.Errorf("get Secret %s/%s: %w", ing.Namespace, name, err)
		}
		in.Secrets = append(in.Secrets, s)
	}
	return in, nil
}

func ingressHosts(ing *networkingv1.Ingress) []string {
	var out []string
	for _, rule := range ing.Spec.Rules {
		h := route.NormalizeHost(rule.Host)
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// SetupWithManager indexes Ingresses by host and watches Ingresses, the Services of their
// namespace and the Secrets they name.
func (r *IngressProblemsReconciler) SetupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	r.reported = map[types.NamespacedName]reported{}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &networkingv1.Ingress{}, hostIndex, func(o client.Object) []string {
		return ingressHosts(o.(*networkingv1.Ingress))
	}); err != nil {
		return fmt.Errorf("index Ingresses by host: %w", err)
	}
	inNamespace := func(match func(*networkingv1.Ingress, client.Object) bool) handler.EventHandler {
		return handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			ings := &networkingv1.IngressList{}
			if err := r.List(ctx, ings, client.InNamespace(o.GetNamespace())); err != nil {
				return nil
			}
			var out []reconcile.Request
			for i := range ings.Items {
				if match(&ings.Items[i], o) {
					out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&ings.Items[i])})
				}
			}
			return out
		})
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingressproblems").
		For(&networkingv1.Ingress{}).
		Watches(&corev1.Service{}, inNamespace(func(i *networkingv1.Ingress, o client.Object) bool { return namesService(i, o.GetName()) })).
		WatchesMetadata(&corev1.Secret{}, inNamespace(func(i *networkingv1.Ingress, o client.Object) bool {
			return slices.ContainsFunc(i.Spec.TLS, func(t networkingv1.IngressTLS) bool { return t.SecretName == o.GetName() })
		})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}

func namesService(i *networkingv1.Ingress, name string) bool {
	if b := i.Spec.DefaultBackend; b != nil && b.Service != nil && b.Service.Name == name {
		return true
	}
	for _, rule := range i.Spec.Rules {
		if rule.HTTP == nil {
			continue
		}
		for _, p := range rule.HTTP.Paths {
			if p.Backend.Service != nil && p.Backend.Service.Name == name {
				return true
			}
		}
	}
	return false
}
