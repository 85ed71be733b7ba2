package controllers_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// statusWorld is a fleet with its class, and helpers to play the kubelet and the cloud.
type statusWorld struct {
	ns    string
	fleet *porticov1alpha1.IngressDeployment
	class string
}

func newStatusWorld(t porticov1alpha1.TopologyType, mutate func(*porticov1alpha1.IngressDeployment)) *statusWorld {
	ns := newNamespace()
	f := newFleet(ns, "edge", t)
	if mutate != nil {
		mutate(f)
	}
	Expect(k8s.Create(ctx, f)).To(Succeed())
	w := &statusWorld{ns: ns, fleet: f, class: ns + "-portico"}
	Expect(k8s.Create(ctx, rt.Class(w.class, ns, "edge", false))).To(Succeed())
	// The pods below run as the fleet's ServiceAccount, which the operator creates.
	Eventually(func() error {
		return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "edge-proxy"}, &corev1.ServiceAccount{})
	}, timeout, interval).Should(Succeed())
	return w
}

func (w *statusWorld) node(name, internal, external string) {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: w.ns + "-" + name}}
	Expect(k8s.Create(ctx, n)).To(Succeed())
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: internal}}
	if external != "" {
		n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: external})
	}
	Expect(k8s.Status().Update(ctx, n)).To(Succeed())
}

// pod plays the kubelet: a proxy pod of the fleet on a node, Ready or not.
func (w *statusWorld) pod(name, node string, ready bool) *corev1.Pod {
	labels := render.ProxySelector(w.fleet)
	for k, v := range render.FleetLabels(w.fleet) {
		labels[k] = v
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: w.ns + "-" + node, ServiceAccountName: "edge-proxy",
			Containers: []corev1.Container{{Name: "proxy", Image: testImage}}}}
	Expect(k8s.Create(ctx, p)).To(Succeed())
	w.setReady(p, ready)
	return p
}

func (w *statusWorld) setReady(p *corev1.Pod, ready bool) {
	s := corev1.ConditionFalse
	if ready {
		s = corev1.ConditionTrue
	}
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(p), p)).To(Succeed())
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: s}}
	Expect(k8s.Status().Update(ctx, p)).To(Succeed())
}

func (w *statusWorld) ingress(name string, class *string) *networkingv1.Ingress {
	i := rt.Ingress(w.ns, name, 0, rt.ClassOf(class, ""), rt.Rule(name+".example.com", "/", rt.Prefix, "svc", 80))
	i.UID, i.CreationTimestamp = "", metav1.Time{}
	Expect(k8s.Create(ctx, i)).To(Succeed())
	return i
}

// lb returns an Ingress's status addresses as "ip" or "hostname", with ":port" for each port.
func lb(i *networkingv1.Ingress) func() []string {
	return func() []string {
		live := &networkingv1.Ingress{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(i), live)).To(Succeed())
		var out []string
		for _, in := range live.Status.LoadBalancer.Ingress {
			s := in.IP + in.Hostname
			for _, p := range in.Ports {
				s += fmt.Sprintf(":%d", p.Port)
			}
			out = append(out, s)
		}
		return out
	}
}

var _ = Describe("Ingress status addresses", func() {
	It("HostNetwork: the addresses of the nodes running a Ready proxy, following readiness and node changes", func() {
		w := newStatusWorld(porticov1alpha1.TopologyHostNetwork, nil)
		w.node("n1", "10.0.0.1", "")
		w.node("n2", "10.0.0.2", "192.0.2.2") // ExternalIP wins
		w.node("n3", "10.0.0.3", "")
		ing := w.ingress("web", &w.class)
		p1 := w.pod("p1", "n1", true)
		p2 := w.pod("p2", "n2", true)
		w.pod("p3", "n3", false)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.0.0.1", "192.0.2.2"}))
		Expect(getFleet(w.fleet).Status.Addresses).To(Equal([]porticov1alpha1.Address{
			{Type: porticov1alpha1.IPAddressType, Value: "10.0.0.1"}, {Type: porticov1alpha1.IPAddressType, Value: "192.0.2.2"}}))

		// A new Ingress gets the address through the watch, not a resync (how fast: bench-status).
		late := w.ingress("late", &w.class)
		Eventually(lb(late), 5*time.Second, 20*time.Millisecond).Should(Equal([]string{"10.0.0.1", "192.0.2.2"}))

		w.setReady(p2, false)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.0.0.1"}))

		n1 := &corev1.Node{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: w.ns + "-n1"}, n1)).To(Succeed())
		n1.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.1.1"}}
		Expect(k8s.Status().Update(ctx, n1)).To(Succeed())
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.0.1.1"}))

		// A rolling restart: the only Ready pod goes; the status is never emptied.
		w.setReady(p1, false)
		Expect(k8s.Delete(ctx, p1)).To(Succeed())
		Consistently(lb(ing), 2*time.Second, 50*time.Millisecond).Should(Equal([]string{"10.0.1.1"}))
		w.pod("p1b", "n3", true)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.0.0.3"}))
	})

	It("NodePort: node addresses with the node ports", func() {
		w := newStatusWorld(porticov1alpha1.TopologyNodePort, func(f *porticov1alpha1.IngressDeployment) {
			// Node ports in the static band (see the TCP and UDP services' test).
			f.Spec.Topology.NodePort = &porticov1alpha1.NodePortTopology{HTTPNodePort: ptr.To[int32](30033), HTTPSNodePort: ptr.To[int32](30034)}
			// A TCP service on the same Service: not an address of the Ingress's. (Node ports
			// are cluster-wide: each spec of the suite uses its own.)
			f.Spec.TCP = []porticov1alpha1.TCPService{{Port: 5432, NodePort: ptr.To[int32](30035),
				Service: porticov1alpha1.L4ServiceReference{Namespace: "db", Name: "postgres", Port: intstr.FromInt32(5432)}}}
		})
		w.node("n1", "10.1.0.1", "")
		ing := w.ingress("np", &w.class)
		w.pod("p1", "n1", true)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.1.0.1:30033:30034"}))
	})

	It("LoadBalancer: the balancer's addresses and externalIPs, untouched while pending", func() {
		w := newStatusWorld(porticov1alpha1.TopologyLoadBalancer, nil)
		ing := w.ingress("lb", &w.class)
		svc := &corev1.Service{}
		key := types.NamespacedName{Namespace: w.ns, Name: "edge-proxy"}
		Eventually(func() error { return k8s.Get(ctx, key, svc) }, timeout, interval).Should(Succeed())
		Consistently(lb(ing), time.Second, 100*time.Millisecond).Should(BeEmpty(), "pending balancer: nothing written")

		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {Hostname: "lb.example.net"}}
		Expect(k8s.Status().Update(ctx, svc)).To(Succeed())
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"203.0.113.10", "lb.example.net"}))

		// The balancer going back to pending keeps the published address.
		Expect(k8s.Get(ctx, key, svc)).To(Succeed())
		svc.Status.LoadBalancer.Ingress = nil
		Expect(k8s.Status().Update(ctx, svc)).To(Succeed())
		Consistently(lb(ing), time.Second, 100*time.Millisecond).Should(Equal([]string{"203.0.113.10", "lb.example.net"}))
	})

	It("spec.statusAddress overrides what is observed", func() {
		w := newStatusWorld(porticov1alpha1.TopologyHostNetwork, func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.StatusAddress = &porticov1alpha1.StatusAddress{Addresses: []string{"198.51.100.7"}, Hostnames: []string{"edge.example.com"}}
		})
		w.node("n1", "10.2.0.1", "")
		w.pod("p1", "n1", true)
		ing := w.ingress("pinned", &w.class)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"198.51.100.7", "edge.example.com"}))
	})

	It("clears the address when the Ingress leaves the fleet, and never touches an Ingress of a class not ours", func() {
		w := newStatusWorld(porticov1alpha1.TopologyHostNetwork, nil)
		w.node("n1", "10.3.0.1", "")
		w.pod("p1", "n1", true)
		moved := w.ingress("moved", &w.class)
		Eventually(lb(moved), timeout, interval).Should(Equal([]string{"10.3.0.1"}))

		// An Ingress of an unknown class, whose status another controller wrote.
		foreign := w.ingress("foreign", ptr.To("somebody-else"))
		foreign.Status.LoadBalancer.Ingress = []networkingv1.IngressLoadBalancerIngress{{IP: "192.0.2.99"}}
		Expect(k8s.Status().Update(ctx, foreign, client.FieldOwner("other-controller"))).To(Succeed())

		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(moved), moved)).To(Succeed())
		moved.Spec.IngressClassName = ptr.To("somebody-else")
		Expect(k8s.Update(ctx, moved)).To(Succeed())
		Eventually(lb(moved), timeout, interval).Should(BeEmpty())
		Consistently(lb(foreign), time.Second, 100*time.Millisecond).Should(Equal([]string{"192.0.2.99"}))

		// The class deleted: its Ingresses lose the address.
		gone := w.ingress("gone", &w.class)
		Eventually(lb(gone), timeout, interval).Should(Equal([]string{"10.3.0.1"}))
		Expect(k8s.Delete(ctx, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: w.class}})).To(Succeed())
		Eventually(lb(gone), timeout, interval).Should(BeEmpty())
	})

	It("serves class-less Ingresses through a default class, unless the fleet opts out", func() {
		w := newStatusWorld(porticov1alpha1.TopologyHostNetwork, nil)
		w.node("n1", "10.4.0.1", "")
		w.pod("p1", "n1", true)
		def := &networkingv1.IngressClass{}
		Expect(k8s.Get(ctx, types.NamespacedName{Name: w.class}, def)).To(Succeed())
		def.Annotations = map[string]string{"ingressclass.kubernetes.io/is-default-class": "true"}
		Expect(k8s.Update(ctx, def)).To(Succeed())
		// The API server defaults the class of new Ingresses: create with one, then remove it.
		classless := w.ingress("classless", &w.class)
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(classless), classless)).To(Succeed())
		classless.Spec.IngressClassName = nil
		Expect(k8s.Update(ctx, classless)).To(Succeed())
		Eventually(lb(classless), timeout, interval).Should(Equal([]string{"10.4.0.1"}))

		updateFleet(w.fleet, func(f *porticov1alpha1.IngressDeployment) { f.Spec.IgnoreDefaultClass = true })
		Eventually(lb(classless), timeout, interval).Should(BeEmpty())
		// Another test's default class must not serve this namespace's Ingresses later.
		def.Annotations = nil
		Expect(k8s.Update(ctx, def)).To(Succeed())
	})

	It("clears its Ingresses once the fleet is deleted and its pods are gone", func() {
		w := newStatusWorld(porticov1alpha1.TopologyHostNetwork, nil)
		w.node("n1", "10.5.0.1", "")
		p := w.pod("p1", "n1", true)
		ing := w.ingress("bye", &w.class)
		Eventually(lb(ing), timeout, interval).Should(Equal([]string{"10.5.0.1"}))

		Expect(k8s.Delete(ctx, getFleet(w.fleet))).To(Succeed())
		// The pod still exists (no kubelet here): the address stays, the fleet waits.
		Consistently(lb(ing), 2*time.Second, 100*time.Millisecond).Should(Equal([]string{"10.5.0.1"}))
		Expect(k8s.Delete(ctx, p, client.GracePeriodSeconds(0))).To(Succeed())
		Eventually(lb(ing), timeout, interval).Should(BeEmpty())
		Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKeyFromObject(w.fleet), &porticov1alpha1.IngressDeployment{})
		},
			timeout, interval).Should(Satisfy(apierrors.IsNotFound))
	})
})

var _ = Describe("Ingress route problems", func() {
	It("are Warning Events on the Ingress, from the data plane's compile step", func() {
		w := newStatusWorld(porticov1alpha1.TopologyNodePort, nil)
		Expect(k8s.Create(ctx, rt.Service(w.ns, "svc"))).To(Succeed())
		older := rt.Ingress(w.ns, "older", 0, rt.ClassOf(&w.class, ""), rt.Rule("shop.example.com", "/", rt.Prefix, "svc", 80))
		older.UID, older.CreationTimestamp = "", metav1.Time{}
		Expect(k8s.Create(ctx, older)).To(Succeed())
		time.Sleep(1100 * time.Millisecond) // creationTimestamp has one-second resolution
		bad := rt.Ingress(w.ns, "bad", 0, rt.ClassOf(&w.class, ""),
			rt.Rule("shop.example.com", "/", rt.Prefix, "svc", 80),         // claimed by older
			rt.Rule("shop.example.com", "/missing", rt.Prefix, "nope", 80), // no such Service
			rt.Rule("shop.example.com", "/port", rt.Prefix, "svc", 81),     // no such port
			rt.RuleTo("shop.example.com", "/bucket", rt.Prefix, networkingv1.IngressBackend{
				Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "assets"}}),
			rt.TLS("absent-tls", "shop.example.com"))
		bad.UID, bad.CreationTimestamp = "", metav1.Time{}
		Expect(k8s.Create(ctx, bad)).To(Succeed())
		Eventually(func() string { return eventNotes(bad) }, timeout, interval).Should(And(
			ContainSubstring(`spec.rules[0].http.paths[0]: host "shop.example.com" path "/" is already claimed by the older Ingress `+w.ns+"/older"),
			ContainSubstring("spec.rules[0].http.paths[1].backend: service "+w.ns+"/nope not found"),
			ContainSubstring("spec.rules[0].http.paths[2].backend: service "+w.ns+"/svc has no port 81"),
			ContainSubstring("resource backends (Bucket assets) cannot be proxied"),
			ContainSubstring("spec.tls[0]: secret "+w.ns+"/absent-tls not found"),
		))
		Expect(eventNotes(older)).To(BeEmpty())
		// Fixing the Service clears that problem: no new Event for it appears later.
		Expect(k8s.Create(ctx, rt.Service(w.ns, "nope"))).To(Succeed())
		Consistently(func() int { return strings.Count(eventNotes(bad), "nope not found") }, 2*time.Second, 200*time.Millisecond).Should(Equal(1))
	})

	It("name the annotation and why, for bad values and unknown keys; a mirror's Service in another namespace is found", func() {
		w := newStatusWorld(porticov1alpha1.TopologyNodePort, nil)
		Expect(k8s.Create(ctx, rt.Service(w.ns, "svc"))).To(Succeed())
		other := newNamespace()
		Expect(k8s.Create(ctx, rt.Service(other, "shadow"))).To(Succeed())
		// The operator's cache sees the Service before the Ingress exists (else a "not found",
		// then cleared, is what a lagging cache rightly reports: a CI failure of session 14).
		Eventually(func() error {
			return cached.Get(ctx, client.ObjectKey{Namespace: other, Name: "shadow"}, &corev1.Service{})
		}, timeout, interval).Should(Succeed())
		ing := rt.Ingress(w.ns, "annotated", 0, rt.ClassOf(&w.class, ""), rt.Rule("shop.example.com", "/", rt.Prefix, "svc", 80),
			rt.Annotation("portico.dev/rewrite-target", "no-slash"), rt.Annotation("portico.dev/no-such-key", "x"),
			rt.Annotation("portico.dev/mirror-target", "http://shadow."+other+".svc"))
		ing.UID, ing.CreationTimestamp = "", metav1.Time{}
		Expect(k8s.Create(ctx, ing)).To(Succeed())
		Eventually(func() string { return eventNotes(ing) }, timeout, interval).Should(And(
			ContainSubstring(`annotation portico.dev/rewrite-target: "no-slash" is not a path`),
			ContainSubstring("annotation portico.dev/no-such-key: unknown annotation; ignored"),
		))
		Consistently(func() string { return eventNotes(ing) }, 2*time.Second, 200*time.Millisecond).ShouldNot(ContainSubstring("shadow"))
	})

	It("on a fleet with ingressNginxCompatibility, name ingress-nginx's keys as written, and the fleet counts the Ingresses with unsupported ones", func() {
		w := newStatusWorld(porticov1alpha1.TopologyNodePort, func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.IngressNginxCompatibility = true
		})
		Expect(k8s.Create(ctx, rt.Service(w.ns, "svc"))).To(Succeed())
		n := "nginx.ingress.kubernetes.io/"
		legacy := rt.Ingress(w.ns, "legacy", 0, rt.ClassOf(&w.class, ""), rt.Rule("shop.example.com", "/", rt.Prefix, "svc", 80),
			rt.Annotation(n+"server-snippet", "location /x { return 200; }"), rt.Annotation(n+"proxy-read-timeout", "forever"),
			rt.Annotation(n+"ssl-redirect", "false"), rt.Annotation(n+"proxy-body-size", "1m"), rt.Annotation("portico.dev/proxy-body-size", "8m"))
		clean := rt.Ingress(w.ns, "clean", 0, rt.ClassOf(&w.class, ""), rt.Rule("blog.example.com", "/", rt.Prefix, "svc", 80),
			rt.Annotation(n+"rewrite-target", "/"), rt.Annotation(n+"configuration-snippet", `more_set_headers "X-Frame-Options: DENY";`))
		for _, ing := range []*networkingv1.Ingress{legacy, clean} {
			ing.UID, ing.CreationTimestamp = "", metav1.Time{}
			Expect(k8s.Create(ctx, ing)).To(Succeed())
		}
		Eventually(func() string { return eventNotes(legacy) }, timeout, interval).Should(And(
			ContainSubstring("annotation nginx.ingress.kubernetes.io/server-snippet: ingress-nginx's key is not supported by Portico (nginx configuration is never executed); ignored"),
			ContainSubstring(`annotation nginx.ingress.kubernetes.io/proxy-read-timeout: "forever" is not a number of seconds`),
			ContainSubstring("annotation portico.dev/proxy-body-size: set under nginx.ingress.kubernetes.io/ too; portico.dev/ wins"),
		))
		Eventually(func() int32 { return getFleet(w.fleet).Status.IngressesWithUnsupportedAnnotations }, timeout, interval).Should(Equal(int32(1)))
		Consistently(func() string { return eventNotes(clean) }, 2*time.Second, 200*time.Millisecond).Should(BeEmpty())
		// Removing the snippet clears the count.
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(legacy), legacy)).To(Succeed())
		delete(legacy.Annotations, n+"server-snippet")
		Expect(k8s.Update(ctx, legacy)).To(Succeed())
		Eventually(func() int32 { return getFleet(w.fleet).Status.IngressesWithUnsupportedAnnotations }, timeout, interval).Should(BeZero())
	})
})
