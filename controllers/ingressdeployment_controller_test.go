package controllers_test

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers"
	"portico.dev/portico/controllers/render"
	proxyconfig "portico.dev/portico/dataplane/config"
)

const (
	timeout  = 20 * time.Second
	interval = 100 * time.Millisecond
)

func metav1ObjectMeta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name} }

var nsCounter int

func newNamespace() string {
	nsCounter++
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: fmt.Sprintf("t%d-", nsCounter)}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	return ns.Name
}

func newFleet(ns, name string, t porticov1alpha1.TopologyType) *porticov1alpha1.IngressDeployment {
	return &porticov1alpha1.IngressDeployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       porticov1alpha1.IngressDeploymentSpec{Topology: porticov1alpha1.Topology{Type: t}},
	}
}

func getFleet(f *porticov1alpha1.IngressDeployment) *porticov1alpha1.IngressDeployment {
	out := &porticov1alpha1.IngressDeployment{}
	ExpectWithOffset(1, k8s.Get(ctx, client.ObjectKeyFromObject(f), out)).To(Succeed())
	return out
}

// updateFleet changes a fleet's spec as a user would: read, change, write, again on a conflict
// (the operator writes the status and finalizer of the same object meanwhile).
func updateFleet(f *porticov1alpha1.IngressDeployment, change func(*porticov1alpha1.IngressDeployment)) {
	ExpectWithOffset(1, retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live := &porticov1alpha1.IngressDeployment{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(f), live); err != nil {
			return err
		}
		change(live)
		return k8s.Update(ctx, live)
	})).To(Succeed())
}

// fleetObjects lists, through the live client, every object of a rendered kind carrying the
// fleet's labels, as "Kind/namespace/name".
func fleetObjects(f *porticov1alpha1.IngressDeployment) []string {
	sel := client.MatchingLabels(render.FleetLabels(f))
	var out []string
	add := func(list client.ObjectList, kind string) {
		ExpectWithOffset(2, k8s.List(ctx, list, sel)).To(Succeed())
		items, err := apimeta.ExtractList(list)
		ExpectWithOffset(2, err).NotTo(HaveOccurred())
		for _, it := range items {
			o := it.(client.Object)
			if o.GetDeletionTimestamp().IsZero() {
				out = append(out, kind+"/"+o.GetNamespace()+"/"+o.GetName())
			}
		}
	}
	add(&corev1.ServiceAccountList{}, "ServiceAccount")
	add(&corev1.ConfigMapList{}, "ConfigMap")
	add(&corev1.ServiceList{}, "Service")
	add(&appsv1.DeploymentList{}, "Deployment")
	add(&appsv1.DaemonSetList{}, "DaemonSet")
	add(&policyv1.PodDisruptionBudgetList{}, "PodDisruptionBudget")
	add(&rbacv1.RoleList{}, "Role")
	add(&rbacv1.RoleBindingList{}, "RoleBinding")
	add(&rbacv1.ClusterRoleList{}, "ClusterRole")
	add(&rbacv1.ClusterRoleBindingList{}, "ClusterRoleBinding")
	sort.Strings(out)
	return out
}

// expectedObjects is what a fleet with a managed default backend and no watchNamespaces has.
func expectedObjects(f *porticov1alpha1.IngressDeployment, t porticov1alpha1.TopologyType) []string {
	ns, p, db, cs := f.Namespace, f.Name+"-proxy", f.Name+"-default-backend", "portico-proxy:"+f.Namespace+":"+f.Name
	out := []string{
		"ServiceAccount/" + ns + "/" + p, "ServiceAccount/" + ns + "/" + db,
		"ConfigMap/" + ns + "/" + p,
		"Role/" + ns + "/" + p, "RoleBinding/" + ns + "/" + p,
		"ClusterRole//" + cs, "ClusterRoleBinding//" + cs,
		"Deployment/" + ns + "/" + db, "Service/" + ns + "/" + db,
	}
	if t == porticov1alpha1.TopologyHostNetwork {
		out = append(out, "DaemonSet/"+ns+"/"+p)
	} else {
		out = append(out, "Deployment/"+ns+"/"+p, "Service/"+ns+"/"+p, "PodDisruptionBudget/"+ns+"/"+p)
	}
	sort.Strings(out)
	return out
}

func condition(f *porticov1alpha1.IngressDeployment, t string) func() *metav1.Condition {
	return func() *metav1.Condition {
		return apimeta.FindStatusCondition(getFleet(f).Status.Conditions, t)
	}
}

func specJSON(f *porticov1alpha1.IngressDeployment) string {
	b, err := json.Marshal(f.Spec)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// resourceVersions maps every object of the fleet (and the fleet) to its resourceVersion.
func resourceVersions(f *porticov1alpha1.IngressDeployment) map[string]string {
	out := map[string]string{"fleet": getFleet(f).ResourceVersion}
	for _, key := range fleetObjects(f) {
		parts := strings.SplitN(key, "/", 3)
		var o client.Object
		switch parts[0] {
		case "ServiceAccount":
			o = &corev1.ServiceAccount{}
		case "ConfigMap":
			o = &corev1.ConfigMap{}
		case "Service":
			o = &corev1.Service{}
		case "Deployment":
			o = &appsv1.Deployment{}
		case "DaemonSet":
			o = &appsv1.DaemonSet{}
		case "PodDisruptionBudget":
			o = &policyv1.PodDisruptionBudget{}
		case "Role":
			o = &rbacv1.Role{}
		case "RoleBinding":
			o = &rbacv1.RoleBinding{}
		case "ClusterRole":
			o = &rbacv1.ClusterRole{}
		case "ClusterRoleBinding":
			o = &rbacv1.ClusterRoleBinding{}
		}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: parts[1], Name: parts[2]}, o)).To(Succeed())
		out[key] = o.GetResourceVersion()
	}
	return out
}

var _ = Describe("IngressDeployment controller", func() {
	topologies := []porticov1alpha1.TopologyType{porticov1alpha1.TopologyHostNetwork, porticov1alpha1.TopologyNodePort, porticov1alpha1.TopologyLoadBalancer}

	for _, topo := range topologies {
		It("renders and applies the "+string(topo)+" topology, leaving the spec untouched and writing nothing on a second reconcile", func() {
			ns := newNamespace()
			f := newFleet(ns, "edge", topo)
			Expect(k8s.Create(ctx, f)).To(Succeed())
			created := specJSON(f) // as stored, with the schema's defaults

			Eventually(func() []string { return fleetObjects(f) }, timeout, interval).Should(Equal(expectedObjects(f, topo)))
			Eventually(func() int64 { return getFleet(f).Status.ObservedGeneration }, timeout, interval).Should(Equal(int64(1)))
			Expect(condition(f, porticov1alpha1.ConditionAccepted)()).NotTo(BeNil())
			Expect(getFleet(f).Status.Selector).To(Equal("app.kubernetes.io/component=proxy,app.kubernetes.io/instance=edge,app.kubernetes.io/name=portico"))

			live := getFleet(f)
			Expect(specJSON(live)).To(Equal(created), "the operator must never write the spec")
			Expect(live.Generation).To(Equal(int64(1)))
			Expect(live.Finalizers).To(ContainElement(controllers.Finalizer))

			// Let the manager settle, then reconcile twice more by hand: nothing may change.
			Eventually(func() map[string]string { return resourceVersions(f) }, timeout, time.Second).Should(
				WithTransform(func(m map[string]string) bool {
					time.Sleep(time.Second)
					return equalMaps(m, resourceVersions(f))
				}, BeTrue()))
			before := resourceVersions(f)
			r := &controllers.IngressDeploymentReconciler{Client: k8s, APIReader: k8s, Recorder: discardRecorder{}, Image: testImage}
			for range 2 {
				_, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(f)})
				Expect(err).NotTo(HaveOccurred())
			}
			Expect(resourceVersions(f)).To(Equal(before), "a reconcile with nothing to change must write nothing")
		})
	}

	for _, from := range topologies {
		for _, to := range topologies {
			if from == to {
				continue
			}
			It(fmt.Sprintf("switches %s to %s leaving no orphan", from, to), func() {
				ns := newNamespace()
				f := newFleet(ns, "sw", from)
				if from != porticov1alpha1.TopologyHostNetwork {
					f.Spec.Replicas = ptr.To[int32](3)
				}
				Expect(k8s.Create(ctx, f)).To(Succeed())
				Eventually(func() []string { return fleetObjects(f) }, timeout, interval).Should(Equal(expectedObjects(f, from)))

				updateFleet(f, func(live *porticov1alpha1.IngressDeployment) {
					live.Spec.Topology = porticov1alpha1.Topology{Type: to}
					if to == porticov1alpha1.TopologyHostNetwork {
						live.Spec.Replicas = nil
					}
				})
				Eventually(func() []string { return fleetObjects(f) }, timeout, interval).Should(Equal(expectedObjects(f, to)))
				if to != porticov1alpha1.TopologyHostNetwork {
					// NodePort and LoadBalancer render the same kinds: wait for the Service's type.
					Eventually(func() string {
						svc := &corev1.Service{}
						Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "sw-proxy"}, svc)).To(Succeed())
						return string(svc.Spec.Type)
					}, timeout, interval).Should(Equal(string(to)))
				}
			})
		}
	}

	It("renders the LoadBalancer Service from the spec, keeps annotations others add and drops annotations removed from the spec", func() {
		ns := newNamespace()
		f := newFleet(ns, "lb", porticov1alpha1.TopologyLoadBalancer)
		local := corev1.ServiceExternalTrafficPolicyLocal
		f.Spec.Topology.ExternalTrafficPolicy = &local
		f.Spec.Topology.LoadBalancer = &porticov1alpha1.LoadBalancerTopology{
			LoadBalancerClass:        ptr.To("example.com/lb"),
			Annotations:              map[string]string{"lb.example.com/a": "1", "lb.example.com/b": "2"},
			LoadBalancerSourceRanges: []string{"192.0.2.0/24"},
		}
		Expect(k8s.Create(ctx, f)).To(Succeed())
		svc := &corev1.Service{}
		key := types.NamespacedName{Namespace: ns, Name: "lb-proxy"}
		Eventually(func() error { return k8s.Get(ctx, key, svc) }, timeout, interval).Should(Succeed())
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
		Expect(svc.Spec.LoadBalancerClass).To(Equal(ptr.To("example.com/lb")))
		Expect(svc.Spec.ExternalTrafficPolicy).To(Equal(corev1.ServiceExternalTrafficPolicyLocal))
		Expect(svc.Spec.LoadBalancerSourceRanges).To(Equal([]string{"192.0.2.0/24"}))
		Expect(svc.Annotations).To(HaveKeyWithValue("lb.example.com/a", "1"))

		// A cloud controller adds its own annotation.
		patch := client.MergeFrom(svc.DeepCopy())
		svc.Annotations["cloud.example.com/id"] = "lb-123"
		Expect(k8s.Patch(ctx, svc, patch, client.FieldOwner("cloud-controller"))).To(Succeed())

		updateFleet(f, func(live *porticov1alpha1.IngressDeployment) {
			delete(live.Spec.Topology.LoadBalancer.Annotations, "lb.example.com/b")
		})
		Eventually(func() map[string]string {
			Expect(k8s.Get(ctx, key, svc)).To(Succeed())
			return svc.Annotations
		}, timeout, interval).ShouldNot(HaveKey("lb.example.com/b"))
		Expect(svc.Annotations).To(HaveKeyWithValue("cloud.example.com/id", "lb-123"))
		Expect(svc.Annotations).To(HaveKeyWithValue("lb.example.com/a", "1"))
	})

	It("carries spec.http into the proxy's ConfigMap and follows changes to it", func() {
		ns := newNamespace()
		f := newFleet(ns, "limits", porticov1alpha1.TopologyNodePort)
		f.Spec.HTTP = &porticov1alpha1.HTTPSettings{
			MaxRequestBodySize: ptr.To(resource.MustParse("8Mi")),
			ClientBodyTimeout:  &metav1.Duration{Duration: 90 * time.Second},
		}
		Expect(k8s.Create(ctx, f)).To(Succeed())
		limits := func() proxyconfig.Limits {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "limits-proxy"}, cm); err != nil {
				return proxyconfig.Limits{}
			}
			c, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
			Expect(err).NotTo(HaveOccurred(), "the proxy would reject its ConfigMap")
			return c.Limits()
		}
		Eventually(limits, timeout, interval).Should(Equal(proxyconfig.Limits{MaxRequestBodyBytes: 8 << 20, ClientBodyTimeout: 90 * time.Second, LimitStatus: 429}))

		updateFleet(f, func(live *porticov1alpha1.IngressDeployment) {
			live.Spec.HTTP.MaxRequestBodySize = ptr.To(resource.MustParse("0"))
			live.Spec.HTTP.AllowUnderscoresInHeaders = true
		})
		Eventually(limits, timeout, interval).Should(Equal(proxyconfig.Limits{MaxRequestBodyBytes: 0, ClientBodyTimeout: 90 * time.Second, AllowUnderscoresInHeaders: true, LimitStatus: 429}))

		updateFleet(f, func(live *porticov1alpha1.IngressDeployment) { live.Spec.HTTP = nil })
		Eventually(limits, timeout, interval).Should(Equal(proxyconfig.Limits{MaxRequestBodyBytes: proxyconfig.DefaultMaxRequestBodyBytes, ClientBodyTimeout: proxyconfig.DefaultClientBodyTimeout, LimitStatus: 429}))
	})

	It("carries spec.accessLog into the proxy's ConfigMap, and the API server refuses a sampling below 1", func() {
		ns := newNamespace()
		f := newFleet(ns, "logs", porticov1alpha1.TopologyNodePort)
		f.Spec.AccessLog = &porticov1alpha1.AccessLogSettings{Enabled: true, OneIn: ptr.To[int32](50)}
		Expect(k8s.Create(ctx, f)).To(Succeed())
		policy := func() proxyconfig.AccessLogPolicy {
			cm := &corev1.ConfigMap{}
			if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "logs-proxy"}, cm); err != nil {
				return proxyconfig.AccessLogPolicy{}
			}
			c, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
			Expect(err).NotTo(HaveOccurred(), "the proxy would reject its ConfigMap")
			return c.AccessLogPolicy()
		}
		Eventually(policy, timeout, interval).Should(Equal(proxyconfig.AccessLogPolicy{Enabled: true, Every: 50}))
		updateFleet(f, func(live *porticov1alpha1.IngressDeployment) { live.Spec.AccessLog = nil })
		Eventually(policy, timeout, interval).Should(Equal(proxyconfig.AccessLogPolicy{Every: 1}))

		bad := newFleet(ns, "badlogs", porticov1alpha1.TopologyNodePort)
		bad.Spec.AccessLog = &porticov1alpha1.AccessLogSettings{Enabled: true, OneIn: ptr.To[int32](0)}
		err := k8s.Create(ctx, bad)
		Expect(err).To(HaveOccurred())
		Expect(err.Error()).To(ContainSubstring("spec.accessLog.oneIn"))
	})

	It("puts the proxy pods of every topology under the restricted profile except what HostNetwork needs", func() {
		ns := newNamespace()
		Expect(k8s.Create(ctx, newFleet(ns, "hn", porticov1alpha1.TopologyHostNetwork))).To(Succeed())
		Expect(k8s.Create(ctx, newFleet(ns, "np", porticov1alpha1.TopologyNodePort))).To(Succeed())
		ds := &appsv1.DaemonSet{}
		d := &appsv1.Deployment{}
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "hn-proxy"}, ds) }, timeout, interval).Should(Succeed())
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "np-proxy"}, d) }, timeout, interval).Should(Succeed())

		hn := ds.Spec.Template.Spec
		Expect(hn.HostNetwork).To(BeTrue())
		Expect(hn.DNSPolicy).To(Equal(corev1.DNSClusterFirstWithHostNet))
		Expect(hn.Containers[0].Ports[0].HostPort).To(Equal(int32(80)))
		Expect(hn.Containers[0].SecurityContext.Capabilities.Add).To(Equal([]corev1.Capability{"NET_BIND_SERVICE"}))
		np := d.Spec.Template.Spec
		Expect(np.HostNetwork).To(BeFalse())
		for _, spec := range []corev1.PodSpec{hn, np} {
			Expect(*spec.SecurityContext.RunAsNonRoot).To(BeTrue())
			Expect(spec.SecurityContext.SeccompProfile.Type).To(Equal(corev1.SeccompProfileTypeRuntimeDefault))
			c := spec.Containers[0]
			Expect(*c.SecurityContext.ReadOnlyRootFilesystem).To(BeTrue())
			Expect(c.SecurityContext.Capabilities.Drop).To(Equal([]corev1.Capability{"ALL"}))
			Expect(c.ReadinessProbe.HTTPGet.Port).To(Equal(intstr.FromString("health")))
			var env []string
			for _, e := range c.Env {
				env = append(env, e.Name)
			}
			Expect(env).To(ContainElements("POD_NAME", "POD_NAMESPACE", "NODE_NAME"))
		}
		Expect(np.Containers[0].SecurityContext.Capabilities.Add).To(BeEmpty())
		Expect(*np.Containers[0].SecurityContext.AllowPrivilegeEscalation).To(BeFalse())
	})

	Describe("the proxy's RBAC, checked with SubjectAccessReviews", func() {
		can := func(ns, sa, verb, group, resource, inNS, name string) bool {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User:   "system:serviceaccount:" + ns + ":" + sa,
				Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: inNS, Verb: verb, Group: group, Resource: resource, Name: name,
				},
			}}
			ExpectWithOffset(1, k8s.Create(ctx, sar)).To(Succeed())
			return sar.Status.Allowed
		}
		type res struct{ group, resource string }
		served := []res{{"networking.k8s.io", "ingresses"}, {"", "services"}, {"discovery.k8s.io", "endpointslices"}, {"", "secrets"}}
		writes := []string{"create", "update", "patch", "delete", "deletecollection"}
		all := append(served, res{"networking.k8s.io", "ingressclasses"}, res{"", "configmaps"}, res{"", "pods"},
			res{"networking.k8s.io", "ingresses/status"}, res{"", "events"}, res{"events.k8s.io", "events"}, res{"coordination.k8s.io", "leases"})

		It("reads what it serves cluster-wide, its own ConfigMap by name, and can write nothing", func() {
			ns := newNamespace()
			other := newNamespace()
			f := newFleet(ns, "rbac", porticov1alpha1.TopologyNodePort)
			Expect(k8s.Create(ctx, f)).To(Succeed())
			Eventually(func() error {
				return k8s.Get(ctx, types.NamespacedName{Name: "portico-proxy:" + ns + ":rbac"}, &rbacv1.ClusterRoleBinding{})
			}, timeout, interval).Should(Succeed())
			Eventually(func() error {
				return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "rbac-proxy"}, &rbacv1.RoleBinding{})
			}, timeout, interval).Should(Succeed())
			sa := "rbac-proxy"
			// The authorizer reads RBAC from its own cache: wait until it has the new bindings.
			Eventually(func() bool { return can(ns, sa, "list", "networking.k8s.io", "ingresses", other, "") }, timeout, interval).Should(BeTrue())
			Eventually(func() bool { return can(ns, sa, "get", "", "configmaps", ns, "rbac-proxy") }, timeout, interval).Should(BeTrue())
			for _, verb := range []string{"get", "list", "watch"} {
				for _, r := range served {
					Expect(can(ns, sa, verb, r.group, r.resource, other, "")).To(BeTrue(), "%s %s", verb, r.resource)
				}
				Expect(can(ns, sa, verb, "networking.k8s.io", "ingressclasses", "", "")).To(BeTrue(), "%s ingressclasses", verb)
				Expect(can(ns, sa, verb, "", "configmaps", ns, "rbac-proxy")).To(BeTrue(), "%s own configmap", verb)
			}
			Expect(can(ns, sa, "get", "", "configmaps", ns, "someone-else")).To(BeFalse())
			Expect(can(ns, sa, "get", "", "pods", ns, "")).To(BeFalse())
			for _, verb := range writes {
				for _, r := range all {
					Expect(can(ns, sa, verb, r.group, r.resource, ns, "")).To(BeFalse(), "%s %s", verb, r.resource)
					Expect(can(ns, sa, verb, r.group, r.resource, other, "")).To(BeFalse(), "%s %s", verb, r.resource)
				}
			}
		})

		It("is limited to the watched namespaces when watchNamespaces is set, and follows changes to it", func() {
			ns := newNamespace()
			a, b, c := newNamespace(), newNamespace(), newNamespace()
			f := newFleet(ns, "scoped", porticov1alpha1.TopologyNodePort)
			f.Spec.WatchNamespaces = []string{a, b}
			Expect(k8s.Create(ctx, f)).To(Succeed())
			sa := "scoped-proxy"
			Eventually(func() bool { return can(ns, sa, "list", "networking.k8s.io", "ingresses", b, "") }, timeout, interval).Should(BeTrue())
			for _, r := range served {
				Expect(can(ns, sa, "watch", r.group, r.resource, a, "")).To(BeTrue(), r.resource)
				Expect(can(ns, sa, "list", r.group, r.resource, c, "")).To(BeFalse(), r.resource)
				Expect(can(ns, sa, "list", r.group, r.resource, "", "")).To(BeFalse(), "cluster-wide "+r.resource)
			}
			Expect(can(ns, sa, "list", "networking.k8s.io", "ingressclasses", "", "")).To(BeTrue())

			updateFleet(f, func(live *porticov1alpha1.IngressDeployment) { live.Spec.WatchNamespaces = []string{c} })
			Eventually(func() bool { return can(ns, sa, "list", "", "secrets", c, "") }, timeout, interval).Should(BeTrue())
			Eventually(func() bool { return can(ns, sa, "list", "", "secrets", a, "") }, timeout, interval).Should(BeFalse())
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: a, Name: "portico-proxy:" + ns + ":scoped"}, &rbacv1.Role{})).
				To(Satisfy(apierrors.IsNotFound), "the Role in a namespace no longer watched is pruned")
		})
	})

	Describe("IngressClass binding", func() {
		class := func(name, ns, fleet string) *networkingv1.IngressClass {
			return &networkingv1.IngressClass{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: networkingv1.IngressClassSpec{
					Controller: porticov1alpha1.ControllerName,
					Parameters: &networkingv1.IngressClassParametersReference{
						APIGroup: ptr.To(porticov1alpha1.GroupVersion.Group), Kind: "IngressDeployment", Name: fleet,
						Scope: ptr.To(networkingv1.IngressClassParametersReferenceScopeNamespace), Namespace: ptr.To(ns),
					},
				},
			}
		}
		classesOf := func(f *porticov1alpha1.IngressDeployment) func() []string {
			return func() []string { return getFleet(f).Status.IngressClasses }
		}

		It("moves status.ingressClasses when a class is added, changed or deleted", func() {
			ns := newNamespace()
			a := newFleet(ns, "a", porticov1alpha1.TopologyNodePort)
			b := newFleet(ns, "b", porticov1alpha1.TopologyNodePort)
			Expect(k8s.Create(ctx, a)).To(Succeed())
			Expect(k8s.Create(ctx, b)).To(Succeed())
			c1 := class(ns+"-one", ns, "a")
			c2 := class(ns+"-two", ns, "a")
			Expect(k8s.Create(ctx, c1)).To(Succeed())
			Expect(k8s.Create(ctx, c2)).To(Succeed())
			Eventually(classesOf(a), timeout, interval).Should(Equal([]string{ns + "-one", ns + "-two"}))
			Expect(condition(a, porticov1alpha1.ConditionAccepted)().Reason).To(Equal(porticov1alpha1.ReasonAccepted))

			c1.Spec.Parameters.Name = "b"
			Expect(k8s.Update(ctx, c1)).To(Succeed())
			Eventually(classesOf(a), timeout, interval).Should(Equal([]string{ns + "-two"}))
			Eventually(classesOf(b), timeout, interval).Should(Equal([]string{ns + "-one"}))

			Expect(k8s.Delete(ctx, c1)).To(Succeed())
			Eventually(classesOf(b), timeout, interval).Should(BeEmpty())
			Eventually(condition(b, porticov1alpha1.ConditionAccepted), timeout, interval).Should(
				HaveField("Reason", porticov1alpha1.ReasonNoIngressClass))
			Expect(classesOf(a)()).To(Equal([]string{ns + "-two"}))
		})

		It("reports a class of ours with scope Cluster, or naming a missing fleet, with a Warning Event on the class", func() {
			ns := newNamespace()
			bad := class(ns+"-cluster", ns, "x")
			bad.Spec.Parameters.Scope = ptr.To(networkingv1.IngressClassParametersReferenceScopeCluster)
			bad.Spec.Parameters.Namespace = nil
			missing := class(ns+"-missing", ns, "nope")
			Expect(k8s.Create(ctx, bad)).To(Succeed())
			Expect(k8s.Create(ctx, missing)).To(Succeed())
			Eventually(func() string { return eventNotes(bad) }, timeout, interval).Should(ContainSubstring("spec.parameters.scope must be Namespace"))
			Eventually(func() string { return eventNotes(missing) }, timeout, interval).Should(ContainSubstring("IngressDeployment " + ns + "/nope not found"))
		})
	})

	Describe("problems around the fleet", func() {
		It("reports a missing default backend Service until it exists", func() {
			ns := newNamespace()
			f := newFleet(ns, "dbs", porticov1alpha1.TopologyLoadBalancer)
			f.Spec.DefaultBackend = &porticov1alpha1.DefaultBackend{Type: porticov1alpha1.DefaultBackendService,
				Service: &porticov1alpha1.ServiceReference{Name: "my-404", Port: 80}}
			Expect(k8s.Create(ctx, f)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(And(
				HaveField("Status", metav1.ConditionTrue),
				HaveField("Reason", porticov1alpha1.ReasonDefaultBackendMissing),
				HaveField("Message", ContainSubstring("spec.defaultBackend.service: Service "+ns+"/my-404 not found"))))
			Expect(fleetObjects(f)).NotTo(ContainElement(ContainSubstring("dbs-default-backend")), "no managed default backend with type Service")
			Eventually(func() string { return eventNotes(f) }, timeout, interval).Should(ContainSubstring("my-404 not found"))

			Expect(k8s.Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "my-404"},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
			})).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))
		})

		It("serves TCP and UDP services on one Service, reads their namespace, and reports their Services until they exist with the port's protocol", func() {
			ns, dbns := newNamespace(), newNamespace()
			f := newFleet(ns, "l4", porticov1alpha1.TopologyNodePort)
			f.Spec.WatchNamespaces = []string{ns}
			// A node port in the range's static band (30000-30085 of 30000-32767), which the API
			// server leaves to Services that ask for a port: another test's Service with an
			// allocated one cannot have taken it (31432 once had: "provided port is already
			// allocated").
			f.Spec.TCP = []porticov1alpha1.TCPService{{Port: 5432, NodePort: ptr.To[int32](30032), ProxyProtocol: porticov1alpha1.ProxyProtocolV2,
				Service: porticov1alpha1.L4ServiceReference{Namespace: dbns, Name: "pg", Port: intstr.FromInt32(5432)}}}
			f.Spec.UDP = []porticov1alpha1.UDPService{{Port: 53,
				Service: porticov1alpha1.L4ServiceReference{Namespace: dbns, Name: "dns", Port: intstr.FromString("dns")}}}
			Expect(k8s.Create(ctx, f)).To(Succeed())

			svc := &corev1.Service{}
			Eventually(func() []string {
				if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "l4-proxy"}, svc); err != nil {
					return nil
				}
				var out []string
				for _, p := range svc.Spec.Ports {
					out = append(out, fmt.Sprintf("%s %s %d->%s", p.Name, p.Protocol, p.Port, p.TargetPort.String()))
				}
				return out
			}, timeout, interval).Should(Equal([]string{"http TCP 80->http", "https TCP 443->https", "tcp-5432 TCP 5432->tcp-5432", "udp-53 UDP 53->udp-53"}))
			Expect(svc.Spec.Ports[2].NodePort).To(Equal(int32(30032)))
			Expect(svc.Spec.Ports[3].NodePort).NotTo(BeZero(), "the API server allocates the UDP port's node port")
			Expect(fleetObjects(f)).To(ContainElements("Role/"+dbns+"/portico-proxy:"+ns+":l4", "RoleBinding/"+dbns+"/portico-proxy:"+ns+":l4"))
			cm := &corev1.ConfigMap{}
			Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "l4-proxy"}, cm)).To(Succeed())
			cfg, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
			Expect(err).NotTo(HaveOccurred())
			Expect(cfg.TCP).To(Equal([]proxyconfig.L4Service{{Port: 5432, ListenPort: 5432, Service: proxyconfig.ServiceRef{Namespace: dbns, Name: "pg", Port: 5432}, ProxyProtocol: "V2"}}))
			Expect(cfg.UDP).To(Equal([]proxyconfig.L4Service{{Port: 53, ListenPort: 10053, Service: proxyconfig.ServiceRef{Namespace: dbns, Name: "dns", PortName: "dns"}}}))

			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(And(
				HaveField("Reason", porticov1alpha1.ReasonServiceMissing),
				HaveField("Message", ContainSubstring("spec.tcp[0].service: Service "+dbns+"/pg not found"))))
			Expect(k8s.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: dbns, Name: "pg"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}})).To(Succeed())
			dns := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: dbns, Name: "dns"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolTCP}}}}
			Expect(k8s.Create(ctx, dns)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(And(
				HaveField("Reason", porticov1alpha1.ReasonServiceMissing),
				HaveField("Message", Equal("spec.udp[0].service: Service "+dbns+"/dns has no UDP port dns"))))
			dns.Spec.Ports[0].Protocol = corev1.ProtocolUDP
			Expect(k8s.Update(ctx, dns)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))
		})

		It("reports a missing default certificate Secret until a valid one exists", func() {
			ns := newNamespace()
			f := newFleet(ns, "cert", porticov1alpha1.TopologyNodePort)
			f.Spec.DefaultCertificate = &porticov1alpha1.DefaultCertificate{SecretName: "wildcard-tls"}
			Expect(k8s.Create(ctx, f)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(And(
				HaveField("Reason", porticov1alpha1.ReasonCertificateMissing),
				HaveField("Message", ContainSubstring("spec.defaultCertificate.secretName: Secret "+ns+"/wildcard-tls not found"))))

			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wildcard-tls"}, Type: corev1.SecretTypeTLS,
				Data: map[string][]byte{corev1.TLSCertKey: []byte("junk"), corev1.TLSPrivateKeyKey: []byte("junk")}}
			Expect(k8s.Create(ctx, secret)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(
				HaveField("Reason", porticov1alpha1.ReasonCertificateInvalid))

			crt, key := selfSigned("*.example.com")
			secret.Data = map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}
			Expect(k8s.Update(ctx, secret)).To(Succeed())
			Eventually(condition(f, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))
		})

		It("keeps a later HostNetwork fleet off the nodes where an older one binds the same host ports", func() {
			ns := newNamespace()
			label := "edge-" + ns
			for _, n := range []string{ns + "-n1", ns + "-n2", ns + "-n3"} {
				node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: map[string]string{label: "true"}}}
				if strings.HasSuffix(n, "-n3") {
					node.Labels = map[string]string{label: "other"}
				}
				Expect(k8s.Create(ctx, node)).To(Succeed())
			}
			// Ports no other test uses: fleets of other tests select every node on the default ports.
			ports := &porticov1alpha1.HostNetworkTopology{HTTPPort: 18080, HTTPSPort: 18443, HealthPort: 18254}
			older := newFleet(ns, "older", porticov1alpha1.TopologyHostNetwork)
			older.Spec.Topology.HostNetwork = ports
			older.Spec.NodePlacement = &porticov1alpha1.NodePlacement{NodeSelector: map[string]string{label: "true"}}
			Expect(k8s.Create(ctx, older)).To(Succeed())
			time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
			later := newFleet(ns, "later", porticov1alpha1.TopologyHostNetwork)
			later.Spec.Topology.HostNetwork = &porticov1alpha1.HostNetworkTopology{HTTPPort: 18080, HTTPSPort: 18444, HealthPort: 18255}
			Expect(k8s.Create(ctx, later)).To(Succeed())
			apart := newFleet(ns, "apart", porticov1alpha1.TopologyHostNetwork)
			apart.Spec.Topology.HostNetwork = &porticov1alpha1.HostNetworkTopology{HTTPPort: 28080, HTTPSPort: 28443, HealthPort: 28254}
			Expect(k8s.Create(ctx, apart)).To(Succeed())

			Eventually(condition(later, porticov1alpha1.ConditionDegraded), timeout, interval).Should(And(
				HaveField("Reason", porticov1alpha1.ReasonHostPortConflict),
				HaveField("Message", ContainSubstring("host port 18080 on node "+ns+"-n1,"+ns+"-n2 already bound by older fleet "+ns+"/older"))))
			ds := &appsv1.DaemonSet{}
			Eventually(func() []corev1.NodeSelectorRequirement {
				Expect(k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "later-proxy"}, ds)).To(Succeed())
				a := ds.Spec.Template.Spec.Affinity
				if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
					return nil
				}
				return a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields
			}, timeout, interval).Should(ContainElements(
				corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{ns + "-n1"}},
				corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{ns + "-n2"}}))
			Eventually(condition(older, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))
			Eventually(condition(apart, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))

			// A node leaving the older fleet's selector is given to the later fleet.
			n2 := &corev1.Node{}
			Expect(k8s.Get(ctx, types.NamespacedName{Name: ns + "-n2"}, n2)).To(Succeed())
			n2.Labels[label] = "other"
			Expect(k8s.Update(ctx, n2)).To(Succeed())
			Eventually(condition(later, porticov1alpha1.ConditionDegraded), timeout, interval).Should(
				HaveField("Message", ContainSubstring("on node "+ns+"-n1 already bound")))

			// The older fleet gone, the conflict ends.
			Expect(k8s.Delete(ctx, older)).To(Succeed())
			Eventually(condition(later, porticov1alpha1.ConditionDegraded), timeout, interval).Should(HaveField("Status", metav1.ConditionFalse))
		})
	})

	It("deletes the cluster-scoped and cross-namespace objects when the fleet is deleted, then releases it", func() {
		ns := newNamespace()
		w := newNamespace()
		f := newFleet(ns, "gone", porticov1alpha1.TopologyHostNetwork)
		f.Spec.WatchNamespaces = []string{w}
		Expect(k8s.Create(ctx, f)).To(Succeed())
		cs := "portico-proxy:" + ns + ":gone"
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Name: cs}, &rbacv1.ClusterRole{}) }, timeout, interval).Should(Succeed())
		Eventually(func() error { return k8s.Get(ctx, types.NamespacedName{Namespace: w, Name: cs}, &rbacv1.Role{}) }, timeout, interval).Should(Succeed())

		Expect(k8s.Delete(ctx, f)).To(Succeed())
		Eventually(func() error { return k8s.Get(ctx, client.ObjectKeyFromObject(f), &porticov1alpha1.IngressDeployment{}) }, timeout, interval).
			Should(Satisfy(apierrors.IsNotFound))
		for _, o := range []client.Object{&rbacv1.ClusterRole{}, &rbacv1.ClusterRoleBinding{}} {
			Expect(k8s.Get(ctx, types.NamespacedName{Name: cs}, o)).To(Satisfy(apierrors.IsNotFound))
		}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: w, Name: cs}, &rbacv1.Role{})).To(Satisfy(apierrors.IsNotFound))
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: w, Name: cs}, &rbacv1.RoleBinding{})).To(Satisfy(apierrors.IsNotFound))
	})
})

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// eventNotes joins the notes of the Events (events.k8s.io, which also lists core/v1 Events)
// regarding obj itself, matched by UID: names repeat across namespaces and kinds (a fleet and an
// Ingress of other specs are both named "older"), and specs run in random order.
func eventNotes(obj client.Object) string {
	Expect(obj.GetUID()).NotTo(BeEmpty(), "eventNotes needs an object read back from the API server")
	list := &eventsv1.EventList{}
	Expect(k8s.List(ctx, list)).To(Succeed())
	var notes []string
	for _, e := range list.Items {
		if e.Regarding.UID == obj.GetUID() {
			notes = append(notes, e.Note)
		}
	}
	return strings.Join(notes, "\n")
}
