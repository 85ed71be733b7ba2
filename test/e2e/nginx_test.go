//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// Ingresses written for ingress-nginx (config/samples/ingress-nginx.yaml: its documented rewrite,
// app-root, basic-auth and configuration-snippet examples), applied with only their class and
// namespace changed to the suite's fleet, which has spec.ingressNginxCompatibility: applied once
// (applyIngressNginx), then checked at each topology's published address
// (expectIngressNginx) against the answers ingress-nginx's docs show.

// nginxPrefix is ingress-nginx's annotation prefix.
const nginxPrefix = "nginx.ingress.kubernetes.io/"

// serverSnippet is the server-snippet of ingress-nginx's annotations documentation: nginx
// configuration, which Portico never executes.
const serverSnippet = `set $agentflag 0;

if ($http_user_agent ~* "(Mobile)" ){
  set $agentflag 1;
}

if ( $agentflag = 1 ) {
  return 301 https://m.example.com;
}
`

// applyIngressNginx creates config/samples/ingress-nginx.yaml in the apps' namespace with the
// suite's class (its hosts are the docs' own), and returns its Ingresses as created.
func applyIngressNginx() []*networkingv1.Ingress {
	GinkgoHelper()
	var ingresses []*networkingv1.Ingress
	for _, o := range sampleObjects("config/samples/ingress-nginx.yaml") {
		o.SetNamespace(appsNS)
		if ing, ok := o.(*networkingv1.Ingress); ok {
			ing.Spec.IngressClassName = ptr.To("e2e")
			ingresses = append(ingresses, ing)
		}
		Expect(k8s.Create(ctx, o)).To(Succeed()) // the Secret comes first in the file
	}
	return ingresses
}

// expectIngressNginx checks the sample's hosts over plain HTTP at one published address. The
// first request of each host waits for it to be served; the rest must answer at once.
func expectIngressNginx(ip string, httpPort int) {
	GinkgoHelper()
	addr := net.JoinHostPort(ip, fmt.Sprint(httpPort))
	get := func(hostname, path string, hdr ...string) func() response {
		return func() response { return ask(addr, hostname, path, hdr...) }
	}
	uri := func(f func() response) func() string { return func() string { return f().Reply.URI } }

	By("ingress-nginx's rewrite example at " + ip)
	Eventually(uri(get("rewrite.bar.com", "/something/new"))).Should(Equal("/new"))
	for path, want := range map[string]string{"/something": "/", "/something/": "/", "/something/new?q=1": "/new?q=1"} {
		r := get("rewrite.bar.com", path)()
		Expect(r.Status).To(Equal(http.StatusOK), "%s: %v", path, r)
		Expect(r.Reply.Service).To(Equal("coffee"))
		Expect(r.Reply.URI).To(Equal(want), "%s reaches the backend as %s", path, want)
	}

	By("ingress-nginx's app-root example at " + ip)
	Eventually(status(get("approot.bar.com", "/"))).Should(Equal(http.StatusFound))
	r := get("approot.bar.com", "/")()
	Expect(r.Header.Get("Location")).To(Equal("http://approot.bar.com/app1"), "%v", r)
	r = get("approot.bar.com", "/app1")()
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Reply.URI).To(Equal("/app1"))

	By("ingress-nginx's basic-auth example at " + ip)
	// The credentials first: until the proxy has the Secret, the route fails closed (503).
	Eventually(status(get("foo.bar.com", "/", "Authorization", basic("foo", "bar")))).Should(Equal(http.StatusOK))
	r = get("foo.bar.com", "/", "Authorization", basic("foo", "bar"))()
	Expect(r.Reply.Service).To(Equal("coffee"), "%v", r)
	r = get("foo.bar.com", "/")()
	Expect(r.Status).To(Equal(http.StatusUnauthorized), "no credentials: %v", r)
	Expect(r.Header.Get("WWW-Authenticate")).To(Equal(`Basic realm="Authentication Required - foo"`))
	r = get("foo.bar.com", "/", "Authorization", basic("foo", "baz"))()
	Expect(r.Status).To(Equal(http.StatusUnauthorized), "a wrong password: %v", r)

	By("a configuration-snippet of more_set_headers at " + ip)
	Eventually(func() string { return get("custom.configuration.com", "/")().Header.Get("X-Frame-Options") }).Should(Equal("DENY"))
	r = get("custom.configuration.com", "/")()
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Reply.Service).To(Equal("coffee"))
}

// expectNginxReport checks what the operator makes of the sample's Ingresses: no Warning Event
// on them, and none counted in the fleet's status.ingressesWithUnsupportedAnnotations; then that
// an Ingress with ingress-nginx's server-snippet (its docs' example) is counted, and carries a
// Warning Event naming the key, until it is deleted.
func expectNginxReport(sample []*networkingv1.Ingress) {
	GinkgoHelper()
	unsupported := func() int32 {
		f := &porticov1alpha1.IngressDeployment{}
		if err := getObj(f, fleetNS, "e2e"); err != nil {
			return -1
		}
		return f.Status.IngressesWithUnsupportedAnnotations
	}
	snippet := rt.Ingress(appsNS, "server-snippet", 0, rt.ClassOf(ptr.To("e2e"), ""), rt.Rule("m.bar.com", "/", rt.Prefix, "coffee", 80),
		rt.Annotation(nginxPrefix+"server-snippet", serverSnippet))
	snippet.UID, snippet.CreationTimestamp = "", metav1.Time{}
	Expect(k8s.Create(ctx, snippet)).To(Succeed())
	// The operator's cache sees Ingresses in the order they were created: once it counts the
	// snippet's, it has the sample's, and counts none of them.
	Eventually(unsupported).Should(Equal(int32(1)))
	Eventually(func() []string { return warnings(snippet) }).Should(ContainElement(ContainSubstring(
		"annotation nginx.ingress.kubernetes.io/server-snippet: ingress-nginx's key is not supported by Portico (nginx configuration is never executed)")))
	for _, ing := range sample {
		Expect(warnings(ing)).To(BeEmpty(), "Ingress %s", ing.Name)
	}
	Expect(k8s.Delete(ctx, snippet)).To(Succeed())
	Eventually(unsupported).Should(BeZero())
}

// warnings are the messages of the Warning Events on an object created here.
func warnings(o client.Object) []string {
	events := &corev1.EventList{}
	Expect(k8s.List(ctx, events, client.InNamespace(o.GetNamespace()))).To(Succeed())
	var out []string
	for _, e := range events.Items {
		if e.InvolvedObject.UID == o.GetUID() && e.Type == corev1.EventTypeWarning {
			out = append(out, strings.TrimSpace(e.Message))
		}
	}
	return out
}
