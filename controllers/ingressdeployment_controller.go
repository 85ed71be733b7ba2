// Package controllers holds the operator's reconcilers: one per kind, each reading top to bottom
// as get, render, apply, observe, conditions, one status write.
package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	"portico.dev/portico/dataplane/route"
)

// Finalizer lets the operator delete what owner references cannot reach (the fleet's
// ClusterRole, ClusterRoleBinding and Roles in other namespaces) before the IngressDeployment
// goes. If the operator is uninstalled first, remove it by hand (see the README).
const Finalizer = "ingress.portico.dev/cleanup"

// IngressDeploymentReconciler turns IngressDeployments into running fleets.
type IngressDeploymentReconciler struct {
	client.Client
	// APIReader reads objects the cache does not hold (a default certificate Secret's data).
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Image runs the proxies and the managed default backends.
	Image string
}

// +kubebuilder:rbac:groups=ingress.portico.dev,resources=ingressdeployments,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=ingress.portico.dev,resources=ingressdeployments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ingress.portico.dev,resources=ingressdeployments/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=deployments;daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;serviceaccounts;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=nodes;pods,verbs=get;list;watch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=clusterroles;clusterrolebindings;roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=ingressclasses;ingresses,verbs=get;list;watch
// +kubebuilder:rbac:groups=discovery.k8s.io,resources=endpointslices,verbs=get;list;watch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one fleet's objects in line with its spec and reports what it sees.
func (r *IngressDeploymentReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	fleet := &porticov1alpha1.IngressDeployment{}
	if err := r.Get(ctx, req.NamespacedName, fleet); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !fleet.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, fleet)
	}
	if !controllerutil.ContainsFinalizer(fleet, Finalizer) {
		patch := client.MergeFrom(fleet.DeepCopy())
		controllerutil.AddFinalizer(fleet, Finalizer)
		if err := r.Patch(ctx, fleet, patch); err != nil {
			return ctrl.Result{}, fmt.Errorf("add finalizer to %s: %w", req.NamespacedName, err)
		}
	}

	obs, excluded, err := r.observeSurroundings(ctx, fleet)
	if err != nil {
		return ctrl.Result{}, err
	}
	objs, err := render.Render(render.Input{Fleet: fleet, Image: r.Image, ExcludedNodes: excluded})
	if err != nil {
		obs.RenderErr = err
	} else {
		obs.ApplyErr = reconcileObjects(ctx, r.Client, fleet, objs)
	}
	if err := r.observeWorkloads(ctx, fleet, &obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.observeAddresses(ctx, fleet, &obs); err != nil {
		return ctrl.Result{}, err
	}
	if err := r.writeStatus(ctx, fleet, computeStatus(fleet, obs)); err != nil {
		return ctrl.Result{}, err
	}
	// An invalid spec is reported, not retried; a failed apply is retried with back-off.
	return ctrl.Result{}, obs.ApplyErr
}

// observeSurroundings collects the bound classes and the problems outside the fleet's own
// objects: host port conflicts, a missing default backend Service, a missing or invalid default
// certificate. It returns the nodes the fleet must keep off.
func (r *IngressDeploymentReconciler) observeSurroundings(ctx context.Context, fleet *porticov1alpha1.IngressDeployment) (observation, []string, error) {
	var obs observation
	classes := &networkingv1.IngressClassList{}
	if err := r.List(ctx, classes); err != nil {
		return obs, nil, fmt.Errorf("list IngressClasses: %w", err)
	}
	obs.Classes = route.BoundClasses(classes.Items, client.ObjectKeyFromObject(fleet))
	if err := r.countUnsupported(ctx, fleet, classes.Items, &obs); err != nil {
		return obs, nil, err
	}

	var excluded []string
	if fleet.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork {
		fleets := &porticov1alpha1.IngressDeploymentList{}
		nodes := &corev1.NodeList{}
		if err := r.List(ctx, fleets); err != nil {
			return obs, nil, fmt.Errorf("list IngressDeployments: %w", err)
		}
		if err := r.List(ctx, nodes); err != nil {
			return obs, nil, fmt.Errorf("list Nodes: %w", err)
		}
		var conflicts []hostPortConflict
		excluded, conflicts = hostPortConflicts(fleet, fleets.Items, nodes.Items)
		for _, c := range conflicts {
			obs.Problems = append(obs.Problems, problem{porticov1alpha1.ReasonHostPortConflict, c.String() + "; this fleet is not rolled out there"})
		}
	}

	if db := fleet.Spec.DefaultBackend; db != nil && db.Type == porticov1alpha1.DefaultBackendService && db.Service != nil {
		svc := &corev1.Service{}
		err := r.Get(ctx, types.NamespacedName{Namespace: fleet.Namespace, Name: db.Service.Name}, svc)
		switch {
		case apierrors.IsNotFound(err):
			obs.Problems = append(obs.Problems, problem{porticov1alpha1.ReasonDefaultBackendMissing,
				fmt.Sprintf("spec.defaultBackend.service: Service %s/%s not found", fleet.Namespace, db.Service.Name)})
		case err != nil:
			return obs, nil, fmt.Errorf("get default backend Service: %w", err)
		case !hasPort(svc, db.Service.Port):
			obs.Problems = append(obs.Problems, problem{porticov1alpha1.ReasonDefaultBackendMissing,
				fmt.Sprintf("spec.defaultBackend.service: Service %s/%s has no port %d", fleet.Namespace, db.Service.Name, db.Service.Port)})
		}
	}

	for _, ref := range l4References(fleet) {
		svc := &corev1.Service{}
		err := r.Get(ctx, types.NamespacedName{Namespace: ref.namespace, Name: ref.name}, svc)
		switch {
		case apierrors.IsNotFound(err):
			obs.Problems = append(obs.Problems, problem{porticov1alpha1.ReasonServiceMissing,
				fmt.Sprintf("%s: Service %s/%s not found", ref.field, ref.namespace, ref.name)})
		case err != nil:
			return obs, nil, fmt.Errorf("get Service %s/%s: %w", ref.namespace, ref.name, err)
		case !hasL4Port(svc, ref.port, ref.protocol):
			obs.Problems = append(obs.Problems, problem{porticov1alpha1.ReasonServiceMissing,
				fmt.Sprintf("%s: Service %s/%s has no %s port %s", ref.field, ref.namespace, ref.name, ref.protocol, ref.port.String())})
		}
	}

	if dc := fleet.Spec.DefaultCertificate; dc != nil {
		if p, err := r.checkCertificate(ctx, fleet.Namespace, dc.SecretName); err != nil {
			return obs, nil, err
		} else if p != nil {
			obs.Problems = append(obs.Problems, *p)
		}
	}
	return obs, excluded, nil
}

// checkCertificate reports a default certificate Secret that is missing or not a usable TLS
// Secret. Only its metadata is cached; its data is read straight from the API server.
func (r *IngressDeploymentReconciler) checkCertificate(ctx context.Context, ns, name string) (*problem, error) {
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return &problem{porticov1alpha1.ReasonCertificateMissing, fmt.Sprintf("spec.defaultCertificate.secretName: Secret %s/%s not found; serving a self-signed certificate", ns, name)}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get default certificate Secret %s/%s: %w", ns, name, err)
	}
	if msg := validateTLSSecret(secret); msg != "" {
		return &problem{porticov1alpha1.ReasonCertificateInvalid, fmt.Sprintf("spec.defaultCertificate.secretName: Secret %s/%s %s; serving a self-signed certificate", ns, name, msg)}, nil
	}
	return nil, nil
}

// l4Reference is a Service port named by spec.tcp or spec.udp.
type l4Reference struct {
	field           string // "spec.tcp[0].service"
	namespace, name string
	port            intstr.IntOrString
	protocol        corev1.Protocol
}

// l4References lists the Service ports a fleet's TCP and UDP services name, in spec order, the
// namespace defaulted to the fleet's.
func l4References(f *porticov1alpha1.IngressDeployment) []l4Reference {
	var out []l4Reference
	add := func(field string, ref porticov1alpha1.L4ServiceReference, proto corev1.Protocol) {
		ns := ref.Namespace
		if ns == "" {
			ns = f.Namespace
		}
		out = append(out, l4Reference{field: field, namespace: ns, name: ref.Name, port: ref.Port, protocol: proto})
	}
	for i, s := range f.Spec.TCP {
		add(fmt.Sprintf("spec.tcp[%d].service", i), s.Service, corev1.ProtocolTCP)
	}
	for i, s := range f.Spec.UDP {
		add(fmt.Sprintf("spec.udp[%d].service", i), s.Service, corev1.ProtocolUDP)
	}
	return out
}

// hasL4Port reports whether the Service has the port, by number or name, with the protocol
// (a Service port without one is TCP).
func hasL4Port(svc *corev1.Service, port intstr.IntOrString, proto corev1.Protocol) bool {
	for _, p := range svc.Spec.Ports {
		protocol := p.Protocol
		if protocol == "" {
			protocol = corev1.ProtocolTCP
		}
		if protocol != proto {
			continue
		}
		if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.Port == port.IntVal) {
			return true
		}
	}
	return false
}

func hasPort(svc *corev1.Service, port int32) bool {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

// observeWorkloads reads the proxy workload and the managed default backend from the cache.
func (r *IngressDeploymentReconciler) observeWorkloads(ctx context.Context, fleet *porticov1alpha1.IngressDeployment, obs *observation) error {
	sel := metav1.FormatLabelSelector(&metav1.LabelSelector{MatchLabels: render.ProxySelector(fleet)})
	key := types.NamespacedName{Namespace: fleet.Namespace, Name: render.ProxyName(fleet)}
	if fleet.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork {
		ds := &appsv1.DaemonSet{}
		if err := r.Get(ctx, key, ds); err == nil {
			obs.Proxy = daemonSetState(ds, sel)
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get DaemonSet %s: %w", key, err)
		}
	} else {
		d := &appsv1.Deployment{}
		if err := r.Get(ctx, key, d); err == nil {
			obs.Proxy = deploymentState(d, sel)
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get Deployment %s: %w", key, err)
		}
	}
	if db := fleet.Spec.DefaultBackend; db == nil || db.Type != porticov1alpha1.DefaultBackendService {
		obs.DefaultBackend = &workloadState{}
		d := &appsv1.Deployment{}
		dkey := types.NamespacedName{Namespace: fleet.Namespace, Name: render.DefaultBackendName(fleet)}
		if err := r.Get(ctx, dkey, d); err == nil {
			*obs.DefaultBackend = deploymentState(d, "")
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get Deployment %s: %w", dkey, err)
		}
	}
	return nil
}

// observeAddresses computes where the fleet is reachable from its Service, its Ready proxy pods
// and their nodes (all from the cache).
func (r *IngressDeploymentReconciler) observeAddresses(ctx context.Context, fleet *porticov1alpha1.IngressDeployment, obs *observation) error {
	var svc *corev1.Service
	if fleet.Spec.Topology.Type == porticov1alpha1.TopologyLoadBalancer {
		s := &corev1.Service{}
		err := r.Get(ctx, types.NamespacedName{Namespace: fleet.Namespace, Name: render.ProxyName(fleet)}, s)
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("get Service of %s/%s: %w", fleet.Namespace, fleet.Name, err)
		}
		if err == nil {
			svc = s
		}
	}
	pods, err := r.proxyPods(ctx, fleet)
	if err != nil {
		return err
	}
	nodes := map[string]*corev1.Node{}
	for i := range pods {
		name := pods[i].Spec.NodeName
		if name == "" || nodes[name] != nil {
			continue
		}
		n := &corev1.Node{}
		if err := r.Get(ctx, types.NamespacedName{Name: name}, n); err == nil {
			nodes[name] = n
		} else if !apierrors.IsNotFound(err) {
			return fmt.Errorf("get Node %s: %w", name, err)
		}
	}
	obs.Addresses = fleetAddresses(fleet, svc, pods, nodes)
	return nil
}

// proxyPods lists the fleet's proxy pods from the cache.
func (r *IngressDeploymentReconciler) proxyPods(ctx context.Context, fleet *porticov1alpha1.IngressDeployment) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.InNamespace(fleet.Namespace), client.MatchingLabels(render.ProxySelector(fleet))); err != nil {
		return nil, fmt.Errorf("list proxy pods of %s/%s: %w", fleet.Namespace, fleet.Name, err)
	}
	return pods.Items, nil
}

// writeStatus writes status when it differs from what is stored, and emits a Warning Event for
// each Degraded message that is new.
func (r *IngressDeploymentReconciler) writeStatus(ctx context.Context, fleet *porticov1alpha1.IngressDeployment, st porticov1alpha1.IngressDeploymentStatus) error {
	if equality.Semantic.DeepEqual(fleet.Status, st) {
		return nil
	}
	oldDegraded := meta.FindStatusCondition(fleet.Status.Conditions, porticov1alpha1.ConditionDegraded)
	newDegraded := meta.FindStatusCondition(st.Conditions, porticov1alpha1.ConditionDegraded)
	oldAccepted := meta.FindStatusCondition(fleet.Status.Conditions, porticov1alpha1.ConditionAccepted)
	newAccepted := meta.FindStatusCondition(st.Conditions, porticov1alpha1.ConditionAccepted)

	patch := client.MergeFrom(fleet.DeepCopy())
	fleet.Status = st
	if err := r.Status().Patch(ctx, fleet, patch); err != nil {
		return fmt.Errorf("write status of %s/%s: %w", fleet.Namespace, fleet.Name, err)
	}
	if newDegraded != nil && newDegraded.Status == metav1.ConditionTrue &&
		(oldDegraded == nil || oldDegraded.Message != newDegraded.Message) {
		r.Recorder.Eventf(fleet, nil, corev1.EventTypeWarning, newDegraded.Reason, "Reconcile", "%s", newDegraded.Message)
	}
	if newAccepted != nil && newAccepted.Status == metav1.ConditionFalse &&
		(oldAccepted == nil || oldAccepted.Message != newAccepted.Message) {
		r.Recorder.Eventf(fleet, nil, corev1.EventTypeWarning, newAccepted.Reason, "Render", "%s", newAccepted.Message)
	}
	return nil
}

// finalize deletes every object rendered for the fleet, waits for its proxy pods to be gone,
// clears the status address of the Ingresses it served, then releases the finalizer. Pod
// deletions requeue the fleet through the watch; a slow one is looked at again after a while.
func (r *IngressDeploymentReconciler) finalize(ctx context.Context, fleet *porticov1alpha1.IngressDeployment) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(fleet, Finalizer) {
		return ctrl.Result{}, nil
	}
	if err := prune(ctx, r.Client, fleet, nil); err != nil {
		return ctrl.Result{}, fmt.Errorf("clean up fleet %s/%s: %w", fleet.Namespace, fleet.Name, err)
	}
	pods, err := r.proxyPods(ctx, fleet)
	if err != nil {
		return ctrl.Result{}, err
	}
	if len(pods) > 0 {
		log.FromContext(ctx).Info("Waiting for proxy pods to go before clearing Ingress status", "pods", len(pods))
		return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
	}
	if err := clearFleetIngresses(ctx, r.Client, r.APIReader, fleet); err != nil {
		return ctrl.Result{}, err
	}
	patch := client.MergeFrom(fleet.DeepCopy())
	controllerutil.RemoveFinalizer(fleet, Finalizer)
	if err := r.Patch(ctx, fleet, patch); err != nil {
		return ctrl.Result{}, fmt.Errorf("remove finalizer from %s/%s: %w", fleet.Namespace, fleet.Name, err)
	}
	log.FromContext(ctx).Info("Fleet cleaned up", "fleet", client.ObjectKeyFromObject(fleet))
	return ctrl.Result{}, nil
}

// SetupWithManager registers the controller and its watches: the IngressDeployments, every kind
// they own (cluster-scoped and cross-namespace objects through the fleet labels), the
// IngressClasses of ours, the Secrets and Services a fleet names, other HostNetwork fleets and
// Nodes (for host port conflicts).
func (r *IngressDeploymentReconciler) SetupWithManager(mgr ctrl.Manager) error {
	byLabels := handler.EnqueueRequestsFromMapFunc(fleetFromLabels)
	return ctrl.NewControllerManagedBy(mgr).
		Named("ingressdeployment").
		For(&porticov1alpha1.IngressDeployment{}).
		Owns(&appsv1.Deployment{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Watches(&corev1.Pod{}, byLabels).
		Watches(&rbacv1.ClusterRole{}, byLabels).
		Watches(&rbacv1.ClusterRoleBinding{}, byLabels).
		Watches(&rbacv1.Role{}, byLabels).
		Watches(&rbacv1.RoleBinding{}, byLabels).
		Watches(&networkingv1.IngressClass{}, handler.EnqueueRequestsFromMapFunc(fleetFromClass)).
		Watches(&networkingv1.Ingress{}, handler.EnqueueRequestsFromMapFunc(r.fleetsOfIngress),
			builder.WithPredicates(predicate.Or(predicate.AnnotationChangedPredicate{}, predicate.GenerationChangedPredicate{}))).
		Watches(&corev1.Service{}, handler.EnqueueRequestsFromMapFunc(r.fleetsNamingService)).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.fleetsNamingSecret)).
		Watches(&porticov1alpha1.IngressDeployment{}, handler.EnqueueRequestsFromMapFunc(r.otherHostNetworkFleets),
			builder.WithPredicates(hostNetworkOnly)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.otherHostNetworkFleets),
			builder.WithPredicates(predicate.LabelChangedPredicate{})).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(r.fleetsOnNode),
			builder.WithPredicates(nodeAddressesChanged)).
		Complete(r)
}

func fleetFromLabels(_ context.Context, o client.Object) []reconcile.Request {
	l := o.GetLabels()
	if l[render.LabelManagedBy] != render.ManagedByValue || l[render.LabelFleetName] == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[render.LabelFleetNamespace], Name: l[render.LabelFleetName]}}}
}

// fleetFromClass maps a class of ours to the fleet it names. On update it is called with the old
// and the new class, so a class that moves to another fleet reconciles both.
// countUnsupported counts the fleet's Ingresses that set annotations it does not honour
// (status.ingressesWithUnsupportedAnnotations), from the cache.
func (r *IngressDeploymentReconciler) countUnsupported(ctx context.Context, fleet *porticov1alpha1.IngressDeployment, classes []networkingv1.IngressClass, obs *observation) error {
	ings := &networkingv1.IngressList{}
	if err := r.List(ctx, ings, client.UnsafeDisableDeepCopy); err != nil { // read only
		return fmt.Errorf("list Ingresses: %w", err)
	}
	in := route.Input{Config: render.ProxyConfig(fleet)}
	for i := range classes {
		in.Classes = append(in.Classes, &classes[i])
	}
	for i := range ings.Items {
		in.Ingresses = append(in.Ingresses, &ings.Items[i])
	}
	obs.Unsupported = 0
	for _, ing := range route.ServedIngresses(&in) {
		if len(route.UnsupportedAnnotations(ing, in.Config.IngressNginxCompatibility)) > 0 {
			obs.Unsupported++
		}
	}
	return nil
}

// fleetsOfIngress enqueues the fleets whose classes serve an Ingress (its class, or the default
// classes when it names none), for the count of Ingresses with unsupported annotations.
func (r *IngressDeploymentReconciler) fleetsOfIngress(ctx context.Context, o client.Object) []reconcile.Request {
	ing, ok := o.(*networkingv1.Ingress)
	if !ok {
		return nil
	}
	classes := &networkingv1.IngressClassList{}
	if err := r.List(ctx, classes); err != nil {
		log.FromContext(ctx).Error(err, "List IngressClasses")
		return nil
	}
	var out []reconcile.Request
	for i := range classes.Items {
		ic := &classes.Items[i]
		named := ing.Spec.IngressClassName != nil && *ing.Spec.IngressClassName == ic.Name
		byDefault := ing.Spec.IngressClassName == nil && ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true"
		if named || byDefault {
			out = append(out, fleetFromClass(ctx, ic)...)
		}
	}
	return out
}

func fleetFromClass(_ context.Context, o client.Object) []reconcile.Request {
	ic, ok := o.(*networkingv1.IngressClass)
	if !ok || !route.IsOurs(ic) {
		return nil
	}
	nn, err := route.FleetForClass(ic)
	if err != nil {
		return nil
	}
	return []reconcile.Request{{NamespacedName: nn}}
}

// fleetsInNamespace enqueues the fleets of a namespace ("": every namespace) that names accepts.
func (r *IngressDeploymentReconciler) fleetsInNamespace(ctx context.Context, ns string, names func(*porticov1alpha1.IngressDeployment) bool) []reconcile.Request {
	fleets := &porticov1alpha1.IngressDeploymentList{}
	if err := r.List(ctx, fleets, client.InNamespace(ns)); err != nil {
		log.FromContext(ctx).Error(err, "List IngressDeployments", "namespace", ns)
		return nil
	}
	var out []reconcile.Request
	for i := range fleets.Items {
		if names(&fleets.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&fleets.Items[i])})
		}
	}
	return out
}

// fleetsNamingService enqueues the fleets naming a Service: as their default backend (in their
// own namespace) or in spec.tcp and spec.udp (in any namespace).
func (r *IngressDeploymentReconciler) fleetsNamingService(ctx context.Context, o client.Object) []reconcile.Request {
	return r.fleetsInNamespace(ctx, "", func(f *porticov1alpha1.IngressDeployment) bool {
		if db := f.Spec.DefaultBackend; db != nil && db.Service != nil && db.Service.Name == o.GetName() && f.Namespace == o.GetNamespace() {
			return true
		}
		for _, ref := range l4References(f) {
			if ref.name == o.GetName() && ref.namespace == o.GetNamespace() {
				return true
			}
		}
		return false
	})
}

func (r *IngressDeploymentReconciler) fleetsNamingSecret(ctx context.Context, o client.Object) []reconcile.Request {
	return r.fleetsInNamespace(ctx, o.GetNamespace(), func(f *porticov1alpha1.IngressDeployment) bool {
		return f.Spec.DefaultCertificate != nil && f.Spec.DefaultCertificate.SecretName == o.GetName()
	})
}

// otherHostNetworkFleets enqueues every HostNetwork fleet except the object itself: a change to
// one fleet or to a node's labels can create or end a host port conflict for the others.
func (r *IngressDeploymentReconciler) otherHostNetworkFleets(ctx context.Context, o client.Object) []reconcile.Request {
	fleets := &porticov1alpha1.IngressDeploymentList{}
	if err := r.List(ctx, fleets); err != nil {
		log.FromContext(ctx).Error(err, "List IngressDeployments")
		return nil
	}
	var out []reconcile.Request
	for i := range fleets.Items {
		f := &fleets.Items[i]
		if f.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork && f.UID != o.GetUID() {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f)})
		}
	}
	return out
}

// fleetsOnNode enqueues the fleets with a proxy pod on a node (its address is theirs).
func (r *IngressDeploymentReconciler) fleetsOnNode(ctx context.Context, o client.Object) []reconcile.Request {
	pods := &corev1.PodList{}
	if err := r.List(ctx, pods, client.MatchingLabels{render.LabelManagedBy: render.ManagedByValue, render.LabelComponent: render.ComponentProxy}); err != nil {
		log.FromContext(ctx).Error(err, "List proxy pods")
		return nil
	}
	seen := map[reconcile.Request]bool{}
	var out []reconcile.Request
	for i := range pods.Items {
		if pods.Items[i].Spec.NodeName != o.GetName() {
			continue
		}
		for _, req := range fleetFromLabels(ctx, &pods.Items[i]) {
			if !seen[req] {
				seen[req] = true
				out = append(out, req)
			}
		}
	}
	return out
}

// nodeAddressesChanged passes node events that can change a fleet's address.
var nodeAddressesChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Node)
		n, ok2 := e.ObjectNew.(*corev1.Node)
		return ok1 && ok2 && nodeAddress(o) != nodeAddress(n)
	},
}

// hostNetworkOnly passes events of IngressDeployments that are, or were, HostNetwork fleets.
var hostNetworkOnly = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return isHostNetwork(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return isHostNetwork(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return (isHostNetwork(e.ObjectOld) || isHostNetwork(e.ObjectNew)) && e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration()
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func isHostNetwork(o client.Object) bool {
	f, ok := o.(*porticov1alpha1.IngressDeployment)
	return ok && f.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork
}
