//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/load"
)

// Node addresses of the local cluster: node-1 and node-2 carry portico.dev/edge=true.
const (
	node1 = "10.88.0.2"
	node2 = "10.88.0.3"
)

var _ = Describe("A fleet on the local cluster", Ordered, func() {
	fleet := &porticov1alpha1.IngressDeployment{}

	setTopology := func(mutate func(*porticov1alpha1.IngressDeployment)) {
		Expect(getObj(fleet, fleetNS, "e2e")).To(Succeed())
		mutate(fleet)
		Expect(k8s.Update(ctx, fleet)).To(Succeed())
	}
	available := func() bool {
		f := &porticov1alpha1.IngressDeployment{}
		if getObj(f, fleetNS, "e2e") != nil {
			return false
		}
		return apimeta.IsStatusConditionTrue(f.Status.Conditions, porticov1alpha1.ConditionAvailable) &&
			f.Status.ObservedGeneration == f.Generation
	}
	absent := func(o client.Object, name string) func() bool {
		return func() bool { return apierrors.IsNotFound(getObj(o, fleetNS, name)) }
	}

	BeforeAll(func() {
		for _, app := range []string{"coffee", "tea"} {
			waitAvailable(appsNS, app, 2)
		}
	})

	It("HostNetwork: becomes Available, publishes the edge nodes, serves HTTP and HTTPS there", func() {
		Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: objMeta("", fleetNS)}))).To(Succeed())
		*fleet = porticov1alpha1.IngressDeployment{ObjectMeta: objMeta(fleetNS, "e2e"), Spec: porticov1alpha1.IngressDeploymentSpec{
			Topology:      porticov1alpha1.Topology{Type: porticov1alpha1.TopologyHostNetwork},
			NodePlacement: &porticov1alpha1.NodePlacement{NodeSelector: map[string]string{"portico.dev/edge": "true"}},
			// A TCP port to the coffee Service (HTTP spoken over it, byte for byte) and a UDP
			// port to the dns Service, in the apps' namespace.
			TCP: []porticov1alpha1.TCPService{{Port: l4TCPPort,
				Service: porticov1alpha1.L4ServiceReference{Namespace: appsNS, Name: "coffee", Port: intstr.FromInt32(80)}}},
			UDP: []porticov1alpha1.UDPService{{Port: l4UDPPort,
				Service: porticov1alpha1.L4ServiceReference{Namespace: appsNS, Name: "dns", Port: intstr.FromString("dns")}}},
			// The proxies' peers are local addresses here: the access checks name their
			// clients with X-Forwarded-For (access_test.go).
			ClientAddress: &porticov1alpha1.ClientAddressSettings{TrustedProxies: []string{"10.88.0.0/16"}},
			// nginx.ingress.kubernetes.io/ annotations are read as portico.dev/ ones
			// (nginx_test.go); the suite's other Ingresses set portico.dev/ keys only.
			IngressNginxCompatibility: true,
		}}
		Expect(k8s.Create(ctx, fleet)).To(Succeed())
		Expect(k8s.Create(ctx, rt.Class("e2e", fleetNS, "e2e", false))).To(Succeed())
		ing := rt.Ingress(appsNS, "shop", 0, rt.ClassOf(ptr.To("e2e"), ""),
			rt.Rule(host, "/coffee", rt.Prefix, "coffee", 80), rt.Rule(host, "/tea", rt.Prefix, "tea", 80), rt.TLS("shop-tls", host),
			rt.Annotation("portico.dev/ssl-redirect", "false")) // served on both listeners (expectServes)
		ing.UID, ing.CreationTimestamp = "", metav1.Time{}
		Expect(k8s.Create(ctx, ing)).To(Succeed())

		Eventually(available).Should(BeTrue())
		pods := &corev1.PodList{}
		Expect(k8s.List(ctx, pods, client.InNamespace(fleetNS), client.MatchingLabels{"app.kubernetes.io/component": "proxy"})).To(Succeed())
		for _, p := range pods.Items {
			Expect(p.Spec.ServiceAccountName).To(Equal("e2e-proxy"), "the proxies run with their generated RBAC")
		}
		Eventually(ingressAddresses(appsNS, "shop")).Should(Equal([]string{node1, node2}))
		expectServes(node1, 80, 443)
		expectServes(node2, 80, 443)
		waitAvailable(appsNS, "dns", 1)
		expectL4(node1, l4TCPPort, l4UDPPort)
		expectL4(node2, l4TCPPort, l4UDPPort)
	})

	It("HostNetwork: applies access control (config/samples/access.yaml, client certificates), each feature answers at the edge nodes", func() {
		applyAccess()
		expectAccess(node1, 80, 443)
		expectAccess(node2, 80, 443)
	})

	It("HostNetwork: serves Ingresses written for ingress-nginx (config/samples/ingress-nginx.yaml), only their class changed, as its docs describe, at the edge nodes", func() {
		sample := applyIngressNginx()
		expectIngressNginx(node1, 80)
		expectIngressNginx(node2, 80)
		expectNginxReport(sample)
	})

	It("drains the DaemonSet pod of a node that loses its label, and its address leaves the status", func() {
		n := &corev1.Node{}
		Expect(getObj(n, "", "node-2")).To(Succeed())
		delete(n.Labels, "portico.dev/edge")
		Expect(k8s.Update(ctx, n)).To(Succeed())
		Eventually(ingressAddresses(appsNS, "shop")).Should(Equal([]string{node1}))
		Eventually(func() int {
			pods := &corev1.PodList{}
			Expect(k8s.List(ctx, pods, client.InNamespace(fleetNS), client.MatchingLabels{"app.kubernetes.io/component": "proxy"})).To(Succeed())
			return len(pods.Items)
		}).Should(Equal(1))
		expectServes(node1, 80, 443)
		Expect(getObj(n, "", "node-2")).To(Succeed())
		n.Labels["portico.dev/edge"] = "true"
		Expect(k8s.Update(ctx, n)).To(Succeed())
		Eventually(ingressAddresses(appsNS, "shop")).Should(Equal([]string{node1, node2}))
	})

	It("NodePort: switched live, publishes node addresses with node ports, leaves no DaemonSet", func() {
		setTopology(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort,
				NodePort: &porticov1alpha1.NodePortTopology{HTTPNodePort: ptr.To[int32](30080), HTTPSNodePort: ptr.To[int32](30443)}}
			f.Spec.NodePlacement = nil
			f.Spec.TCP[0].NodePort, f.Spec.UDP[0].NodePort = ptr.To[int32](30900), ptr.To[int32](30353)
		})
		Eventually(absent(&appsv1.DaemonSet{}, "e2e-proxy")).Should(BeTrue())
		Eventually(available).Should(BeTrue())
		Eventually(func() []string {
			a := ingressAddresses(appsNS, "shop")()
			if len(a) == 0 || len(a[0]) < 12 || a[0][len(a[0])-11:] != "30080,30443" {
				return nil
			}
			return a
		}).ShouldNot(BeEmpty())
		for _, a := range ingressAddresses(appsNS, "shop")() {
			expectServes(a[:len(a)-12], 30080, 30443)
			expectL4(a[:len(a)-12], 30900, 30353)
			expectAccess(a[:len(a)-12], 30080, 30443)
			expectIngressNginx(a[:len(a)-12], 30080)
		}
	})

	It("LoadBalancer: switched live, publishes the balancer's address and serves there", func() {
		setTopology(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyLoadBalancer}
			f.Spec.TCP[0].NodePort, f.Spec.UDP[0].NodePort = nil, nil
		})
		Eventually(func() string {
			a := ingressAddresses(appsNS, "shop")()
			if len(a) != 1 {
				return ""
			}
			return a[0]
		}).Should(HavePrefix("10.88.250."))
		lb := ingressAddresses(appsNS, "shop")()[0]
		expectServes(lb, 80, 443)
		expectL4(lb, l4TCPPort, l4UDPPort)
		expectAccess(lb, 80, 443)
		expectIngressNginx(lb, 80)
		svc := &corev1.Service{}
		Expect(getObj(svc, fleetNS, "e2e-proxy")).To(Succeed())
		Expect(svc.Spec.Type).To(Equal(corev1.ServiceTypeLoadBalancer))
	})

	It("back to HostNetwork: no Deployment, Service or PDB of the proxy is left, traffic is back on the nodes", func() {
		setTopology(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyHostNetwork}
			f.Spec.NodePlacement = &porticov1alpha1.NodePlacement{NodeSelector: map[string]string{"portico.dev/edge": "true"}}
		})
		Eventually(absent(&appsv1.Deployment{}, "e2e-proxy")).Should(BeTrue())
		Eventually(absent(&corev1.Service{}, "e2e-proxy")).Should(BeTrue())
		Eventually(absent(&policyv1.PodDisruptionBudget{}, "e2e-proxy")).Should(BeTrue())
		Eventually(ingressAddresses(appsNS, "shop")).Should(Equal([]string{node1, node2}))
		expectServes(node1, 80, 443)
		expectL4(node1, l4TCPPort, l4UDPPort)
	})

	It("spreads requests over ten backend replicas, and loses none while they roll", func() {
		d := &appsv1.Deployment{}
		Expect(getObj(d, appsNS, "coffee")).To(Succeed())
		d.Spec.Replicas = ptr.To[int32](10)
		Expect(k8s.Update(ctx, d)).To(Succeed())
		waitAvailable(appsNS, "coffee", 10)
		Eventually(func() int {
			seen := map[string]bool{}
			for i := 0; i < 100; i++ {
				if _, pod := answer(plain, "http", node1+":80", "/coffee"); pod != "" {
					seen[pod] = true
				}
			}
			return len(seen)
		}).Should(Equal(10))

		loop := load.Start(4, func() string {
			r, problem := fetch(plain, "http", node1+":80", "/coffee")
			if problem == "" && r.Service != "coffee" {
				problem = "answered by " + r.Service
			}
			return problem
		})
		Expect(getObj(d, appsNS, "coffee")).To(Succeed())
		if d.Spec.Template.Annotations == nil {
			d.Spec.Template.Annotations = map[string]string{}
		}
		d.Spec.Template.Annotations["e2e/restartedAt"] = time.Now().Format(time.RFC3339)
		Expect(k8s.Update(ctx, d)).To(Succeed())
		waitAvailable(appsNS, "coffee", 10)
		time.Sleep(2 * time.Second)
		total, failed, failures := loop.Stop()
		GinkgoWriter.Printf("rollout of 10 replicas: %d requests, %d failed\n", total, failed)
		Expect(total).To(BeNumerically(">", 100))
		Expect(failed).To(BeZero(), "failures: %v", failures)
	})

	It("survives a restart of the operator's pod without losing or rewriting anything", func() {
		versions := func() []string {
			ing, ds, f, cm := &networkingv1.Ingress{}, &appsv1.DaemonSet{}, &porticov1alpha1.IngressDeployment{}, &corev1.ConfigMap{}
			Expect(getObj(ing, appsNS, "shop")).To(Succeed())
			Expect(getObj(ds, fleetNS, "e2e-proxy")).To(Succeed())
			Expect(getObj(f, fleetNS, "e2e")).To(Succeed())
			Expect(getObj(cm, fleetNS, "e2e-proxy")).To(Succeed())
			return []string{"ingress " + ing.ResourceVersion, "daemonset " + ds.ResourceVersion, "fleet " + f.ResourceVersion, "configmap " + cm.ResourceVersion}
		}
		Eventually(available).Should(BeTrue())
		// Let the fleet settle: its status stops changing.
		var before []string
		Eventually(func() bool {
			v := versions()
			settled := fmt.Sprint(v) == fmt.Sprint(before)
			before = v
			return settled
		}, 2*time.Minute, 3*time.Second).Should(BeTrue())

		pods := &corev1.PodList{}
		Expect(k8s.List(ctx, pods, client.InNamespace("portico-system"), client.MatchingLabels{"app.kubernetes.io/component": "operator"})).To(Succeed())
		Expect(pods.Items).To(HaveLen(1))
		old := pods.Items[0].Name
		Expect(k8s.Delete(ctx, &pods.Items[0])).To(Succeed())
		// Traffic does not depend on the operator.
		for i := 0; i < 20; i++ {
			svc, _ := answer(plain, "http", node1+":80", "/tea")
			Expect(svc).To(Equal("tea"))
			time.Sleep(100 * time.Millisecond)
		}
		Eventually(func() bool {
			Expect(k8s.List(ctx, pods, client.InNamespace("portico-system"), client.MatchingLabels{"app.kubernetes.io/component": "operator"})).To(Succeed())
			for _, p := range pods.Items {
				if p.Name != old && p.DeletionTimestamp == nil {
					for _, c := range p.Status.Conditions {
						if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
							return true
						}
					}
				}
			}
			return false
		}).Should(BeTrue())
		// The new operator reconciles everything; nothing it finds is rewritten.
		Consistently(versions, 20*time.Second, 2*time.Second).Should(Equal(before))
	})

	It("serves the cafe sample's traffic policy: a canary, a rewrite and a redirect", func() {
		// config/samples/policy.yaml as make demo applies it, moved to this suite's namespace,
		// class and host.
		objs := sampleObjects("config/samples/policy.yaml") // the suite runs from the repository root
		for _, o := range objs {
			o.SetNamespace(appsNS)
			if ing, ok := o.(*networkingv1.Ingress); ok {
				ing.Spec.IngressClassName = ptr.To("e2e")
				for i := range ing.Spec.Rules {
					ing.Spec.Rules[i].Host = strings.Replace(ing.Spec.Rules[i].Host, "cafe.example.com", host, 1)
				}
			}
			Expect(k8s.Create(ctx, o)).To(Succeed())
		}
		waitAvailable(appsNS, "coffee-v2", 1)
		addr := node1 + ":80"

		// The canary: by header, by cookie, and by weight (one in ten).
		Eventually(func() string { return ask(addr, host, "/coffee", "X-Canary", "always").Reply.Service }).Should(Equal("coffee-v2"))
		Expect(ask(addr, host, "/coffee", "X-Canary", "never", "Cookie", "canary=always").Reply.Service).To(Equal("coffee"))
		Expect(ask(addr, host, "/coffee", "Cookie", "canary=always").Reply.Service).To(Equal("coffee-v2"))
		canary := 0
		for i := 0; i < 200; i++ {
			if ask(addr, host, "/coffee").Reply.Service == "coffee-v2" {
				canary++
			}
		}
		Expect(canary).To(BeNumerically("~", 20, 18), "canary answers of 200 at weight 10")

		// The rewrite: /v1/<item> reaches tea as /<item>, with the prefix it came under.
		menu := "menu." + host
		Eventually(func() string { return ask(addr, menu, "/v1/green?size=large").Reply.URI }).Should(Equal("/green?size=large"))
		got := ask(addr, menu, "/v1/green")
		Expect(got.Reply.Service).To(Equal("tea"))
		Expect(http.Header(got.Reply.Headers).Get("X-Forwarded-Prefix")).To(Equal("/v1"))
		Expect(http.Header(got.Reply.Headers).Get("X-Forwarded-Host")).To(Equal(menu))
		Expect(got.Header.Get("X-Menu-Version")).To(Equal("1"))

		// The redirect: nothing is forwarded.
		legacy := ask(addr, "legacy."+host, "/anything")
		Expect(legacy.Status).To(Equal(http.StatusMovedPermanently))
		Expect(legacy.Header.Get("Location")).To(Equal("https://cafe.example.com/coffee"))
	})

	It("deleting the fleet removes everything it made and clears the Ingress's status", func() {
		Expect(getObj(fleet, fleetNS, "e2e")).To(Succeed())
		Expect(k8s.Delete(ctx, fleet)).To(Succeed())
		Eventually(absent(&porticov1alpha1.IngressDeployment{}, "e2e")).Should(BeTrue())
		Eventually(ingressAddresses(appsNS, "shop")).Should(BeEmpty())
		Eventually(absent(&appsv1.DaemonSet{}, "e2e-proxy")).Should(BeTrue())
		Eventually(func() int {
			pods := &corev1.PodList{}
			Expect(k8s.List(ctx, pods, client.InNamespace(fleetNS))).To(Succeed())
			return len(pods.Items)
		}).Should(BeZero())
		Expect(apierrors.IsNotFound(getObj(&corev1.ServiceAccount{}, fleetNS, "e2e-proxy"))).To(BeTrue())
		Expect(apierrors.IsNotFound(getObj(&rbacv1.ClusterRole{}, "", "portico-proxy:"+fleetNS+":e2e"))).To(BeTrue())
	})
})
