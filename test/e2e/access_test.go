//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// Access control (docs/access-control.md) as config/samples/access.yaml configures it, one
// Ingress per feature on a host of its own, and client certificates from a CA made here:
// applied once (applyAccess), then checked at each topology's published address (expectAccess).
//
// In the local cluster a connection's source is its destination address (10.88.0.0/16 is a
// local range there), so the proxies see their own address as the peer of every request. The
// fleet trusts 10.88.0.0/16 (spec.clientAddress.trustedProxies), and the checks name their
// client with X-Forwarded-For: an address of an allow or deny list, or a fresh one per rate
// check, so that no check inherits another's (or another topology's) rate count.

// mtlsHost is the host of the client certificate Ingress.
const mtlsHost = "mtls." + host

// accessTLS is the client certificate material applyAccess made: the mtls host's serving
// certificate and a client certificate its CA issued.
var accessTLS struct {
	serverPEM []byte
	client    tls.Certificate
}

// applyAccess creates config/samples/access.yaml in the apps' namespace, its hosts under
// shop.example.com, its auth-url at the auth Service's endpoint (the local cluster has no
// cluster DNS, and no ClusterIP forwarding), and an Ingress for mtls.shop.example.com that
// requires a client certificate of a CA made here.
func applyAccess() {
	GinkgoHelper()
	var ingresses []*networkingv1.Ingress
	for _, o := range sampleObjects("config/samples/access.yaml") {
		o.SetNamespace(appsNS)
		if ing, ok := o.(*networkingv1.Ingress); ok {
			ing.Spec.IngressClassName = ptr.To("e2e")
			for i := range ing.Spec.Rules {
				ing.Spec.Rules[i].Host = strings.Replace(ing.Spec.Rules[i].Host, "cafe.example.com", host, 1)
			}
			ingresses = append(ingresses, ing)
			continue
		}
		Expect(k8s.Create(ctx, o)).To(Succeed())
	}
	waitAvailable(appsNS, "auth", 1)
	var endpoint string
	Eventually(func() string {
		slices := &discoveryv1.EndpointSliceList{}
		Expect(k8s.List(ctx, slices, client.InNamespace(appsNS), client.MatchingLabels{discoveryv1.LabelServiceName: "auth"})).To(Succeed())
		for _, es := range slices.Items {
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready && len(es.Ports) == 1 && es.Ports[0].Port != nil {
					endpoint = net.JoinHostPort(ep.Addresses[0], fmt.Sprint(*es.Ports[0].Port))
				}
			}
		}
		return endpoint
	}).ShouldNot(BeEmpty())
	for _, ing := range ingresses {
		if u, ok := ing.Annotations["portico.dev/auth-url"]; ok {
			ing.Annotations["portico.dev/auth-url"] = strings.Replace(u, "auth.cafe.svc.cluster.local", endpoint, 1)
		}
		Expect(k8s.Create(ctx, ing)).To(Succeed())
	}

	ca := rt.NewCA("e2e clients")
	accessTLS.client = ca.Client("e2e-client", time.Time{}, time.Time{})
	caSecret := rt.CASecret(appsNS, "client-ca", ca.PEM, nil)
	serving := rt.TLSSecret(appsNS, "mtls-tls", mtlsHost)
	accessTLS.serverPEM = serving.Data[corev1.TLSCertKey]
	for _, s := range []*corev1.Secret{caSecret, serving} {
		s.UID, s.ResourceVersion = "", ""
		Expect(k8s.Create(ctx, s)).To(Succeed())
	}
	ing := rt.Ingress(appsNS, "client-cert", 0, rt.ClassOf(ptr.To("e2e"), ""), rt.Rule(mtlsHost, "/", rt.Prefix, "coffee", 80),
		rt.TLS("mtls-tls", mtlsHost), rt.Annotation("portico.dev/auth-tls-secret", appsNS+"/client-ca"))
	ing.UID, ing.CreationTimestamp = "", metav1.Time{}
	Expect(k8s.Create(ctx, ing)).To(Succeed())
}

// accessClients counts the fresh client addresses the rate checks name.
var accessClients int

// freshClient is a client address (of 100.64.0.0/10) no check named before.
func freshClient() string {
	accessClients++
	return fmt.Sprintf("100.64.%d.%d", accessClients/256, accessClients%256)
}

// status is the status of an answer, for Eventually.
func status(f func() response) func() int { return func() int { return f().Status } }

// expectAccess checks each access-control feature at one published address: plain HTTP on
// httpPort for the sample's hosts, HTTPS on httpsPort for the client certificate host. The
// first request of each host waits for it to be served; the rest must answer at once.
func expectAccess(ip string, httpPort, httpsPort int) {
	GinkgoHelper()
	base := "http://" + net.JoinHostPort(ip, fmt.Sprint(httpPort)) + "/menu"
	get := func(sub string, hdr ...string) func() response {
		return func() response { return send(plain, http.MethodGet, base, sub+"."+host, hdr...) }
	}

	By("source ranges at " + ip)
	Eventually(status(get("allow"))).Should(Equal(http.StatusForbidden))
	r := get("allow")()
	Expect(r.Body).To(ContainSubstring("access denied: the client's address is not allowed"), "%v", r)
	r = get("allow", "X-Forwarded-For", "192.0.2.10")()
	Expect(r.Status).To(Equal(http.StatusOK), "a client of the allow list: %v", r)
	Expect(r.Reply.Service).To(Equal("coffee"))
	Expect(http.Header(r.Reply.Headers).Get("X-Real-Ip")).To(Equal("192.0.2.10"))
	Eventually(status(get("deny"))).Should(Equal(http.StatusOK))
	r = get("deny", "X-Forwarded-For", "203.0.113.9")()
	Expect(r.Status).To(Equal(http.StatusForbidden), "a client of the deny list: %v", r)
	Expect(r.Body).To(ContainSubstring("access denied"))

	By("basic authentication at " + ip)
	Eventually(status(get("staff"))).Should(Equal(http.StatusUnauthorized))
	r = get("staff")()
	Expect(r.Header.Get("WWW-Authenticate")).To(Equal(`Basic realm="Cafe staff"`), "%v", r)
	r = get("staff", "Authorization", basic("guest", "wrong"))()
	Expect(r.Status).To(Equal(http.StatusUnauthorized), "a wrong password: %v", r)
	Expect(r.Header.Get("WWW-Authenticate")).To(Equal(`Basic realm="Cafe staff"`))
	for _, user := range []string{"guest", "barista"} { // {SHA} and $apr1$ lines
		r = get("staff", "Authorization", basic(user, "portico"))()
		Expect(r.Status).To(Equal(http.StatusOK), "%s: %v", user, r)
		Expect(r.Reply.Service).To(Equal("coffee"))
		Expect(r.Reply.Headers).NotTo(HaveKey("Authorization"), "the credentials do not reach the backend")
	}

	By("external authentication at " + ip)
	Eventually(status(get("members"))).Should(Equal(http.StatusUnauthorized))
	r = get("members", "Cookie", "session=bad")()
	Expect(r.Status).To(Equal(http.StatusUnauthorized), "a cookie the auth service refuses: %v", r)
	Expect(r.Header.Get("WWW-Authenticate")).To(Equal(`Cookie realm="echo"`), "the auth service's challenge")
	r = get("members", "Cookie", "session=good")()
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Reply.Service).To(Equal("coffee"))
	Expect(http.Header(r.Reply.Headers).Get("X-Auth-Request-User")).To(Equal("good"), "auth-response-headers")

	By("CORS at " + ip)
	preflight := func() response {
		return send(plain, http.MethodOptions, base, "api."+host, "Origin", "https://app.example.com", "Access-Control-Request-Method", "PUT")
	}
	Eventually(status(preflight)).Should(Equal(http.StatusNoContent))
	r = preflight()
	Expect(r.Header.Get("Access-Control-Allow-Origin")).To(Equal("https://app.example.com"), "%v", r)
	Expect(r.Header.Get("Access-Control-Allow-Methods")).To(ContainSubstring("PUT"))
	r = get("api", "Origin", "https://app.example.com")()
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Header.Get("Access-Control-Allow-Origin")).To(Equal("https://app.example.com"))
	r = get("api", "Origin", "https://other.example.com")()
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Header).NotTo(HaveKey("Access-Control-Allow-Origin"), "another origin")

	By("the rate limit at " + ip)
	Eventually(func() int { return get("limited", "X-Forwarded-For", freshClient())().Status }).Should(Equal(http.StatusOK))
	// One connection: behind a NodePort or a balancer, its requests all reach one proxy
	// (limits are per proxy pod).
	conn := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer conn.CloseIdleConnections()
	who := freshClient()
	var statuses []int
	for range 3 {
		r = send(conn, http.MethodGet, base, "limited."+host, "X-Forwarded-For", who)
		statuses = append(statuses, r.Status)
	}
	Expect(statuses).To(Equal([]int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests}), "burst 1 at 1 r/s: %v", r)
	Expect(r.Body).To(ContainSubstring("too many requests from this client address"))
	r = send(conn, http.MethodGet, base, "limited."+host, "X-Forwarded-For", freshClient())
	Expect(r.Status).To(Equal(http.StatusOK), "another client has its own count: %v", r)

	By("client certificates at " + ip)
	mtls := "https://" + net.JoinHostPort(ip, fmt.Sprint(httpsPort)) + "/menu"
	anonymous, withCert := mtlsClient(nil), mtlsClient(&accessTLS.client)
	Eventually(func() int { return send(anonymous, http.MethodGet, mtls, mtlsHost).Status }).Should(Equal(http.StatusBadRequest))
	r = send(anonymous, http.MethodGet, mtls, mtlsHost)
	Expect(r.Body).To(ContainSubstring("No required SSL certificate was sent"), "%v", r)
	r = send(withCert, http.MethodGet, mtls, mtlsHost)
	Expect(r.Status).To(Equal(http.StatusOK), "%v", r)
	Expect(r.Reply.Service).To(Equal("coffee"))
	Expect(http.Header(r.Reply.Headers).Get("Ssl-Client-Verify")).To(Equal("SUCCESS"))
	Expect(http.Header(r.Reply.Headers).Get("Ssl-Client-Subject-Dn")).To(Equal("CN=e2e-client,O=Portico Tests"))
}

// basic is an Authorization header's value of basic authentication.
func basic(user, password string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.SetBasicAuth(user, password)
	return req.Header.Get("Authorization")
}

// mtlsClient is an HTTPS client of the client certificate host, presenting cert when not nil.
func mtlsClient(cert *tls.Certificate) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(accessTLS.serverPEM)
	cfg := &tls.Config{ServerName: mtlsHost, RootCAs: pool}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}
