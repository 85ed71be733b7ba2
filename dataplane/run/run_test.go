package run_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/dataplane/run"
	"portico.dev/portico/test/echo"
	"portico.dev/portico/test/load"
	"portico.dev/portico/test/testnet"
)

const (
	timeout  = 15 * time.Second
	interval = 50 * time.Millisecond
)

// freePort is a port free on loopback now and never handed out before in this process: the
// kernel may give a port just closed again, and two of a test's ports were once the same (a TCP
// service moved onto the proxy's own health port).
func freePort() int {
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		port := ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if !portsGiven[port] {
			portsGiven[port] = true
			return port
		}
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// fleetEnv is one fleet's namespace, the RBAC the operator renders for it, and a running proxy
// authenticated as the fleet's ServiceAccount.
type fleetEnv struct {
	ns                  string
	http, https, health string
	cancel              context.CancelFunc
	done                chan error
	api                 *relay
}

var nsSeq int

func startFleet(configure func(*porticov1alpha1.IngressDeployment)) *fleetEnv {
	nsSeq++
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: fmt.Sprintf("p%d-", nsSeq)}}
	Expect(k8s.Create(ctx, nsObj)).To(Succeed())
	ns := nsObj.Name
	fleet := &porticov1alpha1.IngressDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge", UID: "fleet-uid"},
		Spec: porticov1alpha1.IngressDeploymentSpec{Topology: porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort}}}
	if configure != nil {
		configure(fleet)
	}
	objs, err := render.Render(render.Input{Fleet: fleet, Image: "unused"})
	Expect(err).NotTo(HaveOccurred())
	for _, o := range objs {
		switch o.(type) {
		case *corev1.ServiceAccount, *corev1.ConfigMap, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *rbacv1.Role, *rbacv1.RoleBinding:
		default:
			continue // workloads: the test runs the proxy itself
		}
		o.SetOwnerReferences(nil)
		Expect(k8s.Create(ctx, o)).To(Succeed())
	}
	// The proxy authenticates exactly as in a pod: a bound token of its ServiceAccount.
	cs, err := kubernetes.NewForConfig(adminCfg)
	Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "edge-proxy", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	// Through a relay the test can cut, as a network failure or an API server outage would.
	apiURL, err := url.Parse(adminCfg.Host)
	Expect(err).NotTo(HaveOccurred())
	rl, err := newRelay(apiURL.Host)
	Expect(err).NotTo(HaveOccurred())
	cfg := &rest.Config{Host: "https://" + rl.addr, BearerToken: tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: adminCfg.CAData, ServerName: apiURL.Hostname()}}

	f := &fleetEnv{ns: ns, done: make(chan error, 1), api: rl}
	flags := run.Flags{Fleet: ns + "/edge", ConfigMap: "edge-proxy", BindAddress: "127.0.0.1",
		HTTPPort: freePort(), HTTPSPort: freePort(), HealthPort: freePort(), DrainSeconds: 0,
		UpstreamTimeout: 5 * time.Second, Holdoff: 10 * time.Millisecond, MaxDelay: 100 * time.Millisecond}
	f.http = "127.0.0.1:" + strconv.Itoa(flags.HTTPPort)
	f.https = "127.0.0.1:" + strconv.Itoa(flags.HTTPSPort)
	f.health = "127.0.0.1:" + strconv.Itoa(flags.HealthPort)
	runCtx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer GinkgoRecover()
		f.done <- run.Run(runCtx, cfg, flags, GinkgoLogr)
	}()
	DeferCleanup(func() {
		cancel()
		Eventually(f.done, 10*time.Second).Should(Receive(BeNil()))
	})
	Expect(k8s.Create(ctx, rt.Class(ns+"-portico", ns, "edge", false))).To(Succeed())
	return f
}

// backend runs an echo server on 127.0.0.1 and publishes it as Service name's endpoint, in an
// EndpointSlice of its own. It returns that slice's name and a graceful stop.
func (f *fleetEnv) backend(name string) (slice string, stop func()) {
	ip := testnet.IP()
	ln, err := net.Listen("tcp", ip+":8080")
	Expect(err).NotTo(HaveOccurred())
	srv := &http.Server{Handler: echo.Handler(name+"-"+ip, name)}
	go func() { _ = srv.Serve(ln) }()
	DeferCleanup(srv.Close)
	svc := rt.Service(f.ns, name)
	if err := k8s.Create(ctx, svc); err != nil {
		Expect(client.IgnoreAlreadyExists(err)).To(Succeed())
	}
	es := rt.Slice(f.ns, name, "http", 8080, rt.Ready, ip)
	es.Name = name + "-" + strings.ReplaceAll(ip, ".", "-")
	Expect(k8s.Create(ctx, es)).To(Succeed())
	return es.Name, func() { _ = srv.Shutdown(context.Background()) }
}

func (f *fleetEnv) ingress(name string, opts ...rt.IngressOpt) *networkingv1.Ingress {
	i := rt.Ingress(f.ns, name, 0, append([]rt.IngressOpt{rt.ClassOf(ptr.To(f.ns+"-portico"), "")}, opts...)...)
	i.UID, i.CreationTimestamp = "", metav1.Time{}
	Expect(k8s.Create(ctx, i)).To(Succeed())
	return i
}

func request(c *http.Client, url, host string) (int, echo.Reply) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, echo.Reply{}
	}
	defer resp.Body.Close()
	var rep echo.Reply
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &rep)
	return resp.StatusCode, rep
}

func answeredBy(c *http.Client, url, host string) func() string {
	return func() string {
		_, rep := request(c, url, host)
		return rep.Service
	}
}

var _ = Describe("portico proxy against a real API server", func() {
	It("becomes ready after the first sync and serves HTTP and HTTPS by host, path and SNI", func() {
		f := startFleet(nil)
		f.backend("coffee")
		f.backend("tea")
		secret := rt.TLSSecret(f.ns, "cafe-tls", "cafe.example.com")
		secret.UID, secret.ResourceVersion = "", ""
		Expect(k8s.Create(ctx, secret)).To(Succeed())
		f.ingress("cafe", rt.Rule("cafe.example.com", "/coffee", rt.Prefix, "coffee", 80),
			rt.Rule("cafe.example.com", "/tea", rt.Prefix, "tea", 80), rt.TLS("cafe-tls", "cafe.example.com"),
			rt.Annotation("portico.dev/ssl-redirect", "false")) // served on both listeners

		Eventually(func() int {
			r, err := http.Get("http://" + f.health + "/readyz")
			if err != nil {
				return 0
			}
			r.Body.Close()
			return r.StatusCode
		}, timeout, interval).Should(Equal(200))
		c := &http.Client{Timeout: 5 * time.Second}
		Eventually(answeredBy(c, "http://"+f.http+"/coffee", "cafe.example.com"), timeout, interval).Should(Equal("coffee"))
		Expect(answeredBy(c, "http://"+f.http+"/tea/green", "cafe.example.com")()).To(Equal("tea"))
		code, _ := request(c, "http://"+f.http+"/milk", "cafe.example.com")
		Expect(code).To(Equal(http.StatusNotFound))

		tlsc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{ServerName: "cafe.example.com", InsecureSkipVerify: true}}}
		Eventually(answeredBy(tlsc, "https://"+f.https+"/tea", "cafe.example.com"), timeout, interval).Should(Equal("tea"))
		conn, err := tls.Dial("tcp", f.https, &tls.Config{ServerName: "cafe.example.com", InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.ConnectionState().PeerCertificates[0].Subject.CommonName).To(Equal("cafe.example.com"))
		Expect(conn.ConnectionState().NegotiatedProtocol).To(Equal("h2"))
		conn.Close()
		conn, err = tls.Dial("tcp", f.https, &tls.Config{ServerName: "other.example.com", InsecureSkipVerify: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.ConnectionState().PeerCertificates[0].Subject.CommonName).To(Equal("portico-default"))
		conn.Close()

		// A renewed certificate (as cert-manager writes it: the same Secret, new data) is served
		// to new connections.
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
		secret.Data = rt.TLSSecret(f.ns, "cafe-tls", "cafe.example.com", "renewed.cafe.example.com").Data
		Expect(k8s.Update(ctx, secret)).To(Succeed())
		Eventually(func() []string {
			conn, err := tls.Dial("tcp", f.https, &tls.Config{ServerName: "cafe.example.com", InsecureSkipVerify: true})
			if err != nil {
				return nil
			}
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].DNSNames
		}, timeout, interval).Should(ContainElement("renewed.cafe.example.com"))
	})

	It("applies new Ingresses and settings changes without a restart", func() {
		f := startFleet(nil)
		f.backend("a")
		f.backend("fallback")
		c := &http.Client{Timeout: 5 * time.Second}
		f.ingress("first", rt.Rule("a.example.com", "/", rt.Prefix, "a", 80))
		Eventually(answeredBy(c, "http://"+f.http+"/", "a.example.com"), timeout, interval).Should(Equal("a"))

		// The fleet's default backend moves to another Service through the ConfigMap.
		cm := &corev1.ConfigMap{}
		Expect(k8s.Get(ctx, types.NamespacedName{Namespace: f.ns, Name: "edge-proxy"}, cm)).To(Succeed())
		cfg, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
		Expect(err).NotTo(HaveOccurred())
		cfg.DefaultBackend = &proxyconfig.ServiceRef{Namespace: f.ns, Name: "fallback", Port: 80}
		cm.Data[proxyconfig.ConfigKey], _ = cfg.Marshal()
		Expect(k8s.Update(ctx, cm)).To(Succeed())
		Eventually(answeredBy(c, "http://"+f.http+"/", "unknown.example.com"), timeout, interval).Should(Equal("fallback"))

		// An invalid ConfigMap keeps the last good settings.
		cm.Data[proxyconfig.ConfigKey] = "{broken"
		Expect(k8s.Update(ctx, cm)).To(Succeed())
		Consistently(answeredBy(c, "http://"+f.http+"/", "unknown.example.com"), time.Second, 100*time.Millisecond).Should(Equal("fallback"))
	})

	It("serves only the watched namespaces, and follows a change of them", func() {
		var a, b string
		for _, n := range []*string{&a, &b} {
			o := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "w-"}}
			Expect(k8s.Create(ctx, o)).To(Succeed())
			*n = o.Name
		}
		f := startFleet(func(fl *porticov1alpha1.IngressDeployment) { fl.Spec.WatchNamespaces = []string{a} })
		c := &http.Client{Timeout: 5 * time.Second}
		for _, ns := range []string{a, b} {
			g := &fleetEnv{ns: ns}
			g.backend("svc")
			i := rt.Ingress(ns, "i", 0, rt.ClassOf(ptr.To(f.ns+"-portico"), ""), rt.Rule(ns+".example.com", "/", rt.Prefix, "svc", 80))
			i.UID, i.CreationTimestamp = "", metav1.Time{}
			Expect(k8s.Create(ctx, i)).To(Succeed())
		}
		Eventually(answeredBy(c, "http://"+f.http+"/", a+".example.com"), timeout, interval).Should(Equal("svc"))
		Consistently(answeredBy(c, "http://"+f.http+"/", b+".example.com"), time.Second, 100*time.Millisecond).Should(BeEmpty())
	})

	It("keeps serving while the API server is unreachable and catches up when it is back", func() {
		f := startFleet(nil)
		f.backend("steady")
		f.backend("later")
		c := &http.Client{Timeout: 5 * time.Second}
		f.ingress("steady", rt.Rule("steady.example.com", "/", rt.Prefix, "steady", 80))
		Eventually(answeredBy(c, "http://"+f.http+"/", "steady.example.com"), timeout, interval).Should(Equal("steady"))

		f.api.cut()
		// Changes made while the proxy cannot see them.
		f.ingress("later", rt.Rule("later.example.com", "/", rt.Prefix, "later", 80))
		for i := 0; i < 40; i++ {
			Expect(answeredBy(c, "http://"+f.http+"/", "steady.example.com")()).To(Equal("steady"))
			time.Sleep(50 * time.Millisecond)
		}
		Expect(answeredBy(c, "http://"+f.http+"/", "later.example.com")()).To(BeEmpty())
		Expect(f.api.restore()).To(Succeed())
		Eventually(answeredBy(c, "http://"+f.http+"/", "later.example.com"), 60*time.Second, 100*time.Millisecond).Should(Equal("later"))
		Expect(answeredBy(c, "http://"+f.http+"/", "steady.example.com")()).To(Equal("steady"))
	})

	It("loses no request through 100 Ingress updates and a full replacement of a backend's endpoints", func() {
		f := startFleet(nil)
		oldSlice, stopOld := f.backend("main")
		f.backend("other")
		c := &http.Client{Timeout: 5 * time.Second}
		f.ingress("main", rt.Rule("main.example.com", "/", rt.Prefix, "main", 80))
		Eventually(answeredBy(c, "http://"+f.http+"/", "main.example.com"), timeout, interval).Should(Equal("main"))

		loop := load.Start(2, func() string {
			if code, _ := request(c, "http://"+f.http+"/", "main.example.com"); code != 200 {
				return fmt.Sprintf("status %d", code)
			}
			return ""
		})
		churn := f.ingress("churn", rt.Rule("churn.example.com", "/v0", rt.Prefix, "other", 80))
		for i := 1; i <= 100; i++ {
			Expect(k8s.Get(ctx, client.ObjectKeyFromObject(churn), churn)).To(Succeed())
			churn.Spec.Rules[0].HTTP.Paths[0].Path = "/v" + strconv.Itoa(i)
			Expect(k8s.Update(ctx, churn)).To(Succeed())
		}
		// Replace every endpoint of main: the new one is added, the old slice removed, then the
		// old server stops, as a rolling update does.
		f.backend("main")
		Expect(k8s.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: oldSlice}})).To(Succeed())
		time.Sleep(300 * time.Millisecond)
		stopOld()
		time.Sleep(500 * time.Millisecond)
		total, failed, failures := loop.Stop()
		GinkgoWriter.Printf("%d requests during the churn, %d failed\n", total, failed)
		Expect(total).To(BeNumerically(">", 100))
		Expect(failed).To(BeZero(), "failures: %v", failures)
		Eventually(answeredBy(c, "http://"+f.http+"/", "churn.example.com")).Should(BeEmpty()) // /v100 only
		Expect(answeredBy(c, "http://"+f.http+"/v100", "churn.example.com")()).To(Equal("other"))
	})
})

var _ = Describe("portico proxy against a real API server: protocols and errors", func() {
	It("serves h2c and WebSocket backends and answers 503 and 502, from objects in the API server", func() {
		f := startFleet(nil)
		c := &http.Client{Timeout: 5 * time.Second}

		// An h2c backend: the Service port's appProtocol says so.
		ip := testnet.IP()
		ln, err := net.Listen("tcp", ip+":8080")
		Expect(err).NotTo(HaveOccurred())
		h2 := &http.Server{Handler: echo.Handler("h2c-1", "h2c")}
		h2.Protocols = new(http.Protocols)
		h2.Protocols.SetHTTP1(true)
		h2.Protocols.SetUnencryptedHTTP2(true)
		go func() { _ = h2.Serve(ln) }()
		DeferCleanup(h2.Close)
		svc := rt.Service(f.ns, "h2c", corev1.ServicePort{Name: "http", Port: 80, AppProtocol: ptr.To("kubernetes.io/h2c")})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		es := rt.Slice(f.ns, "h2c", "http", 8080, rt.Ready, ip)
		Expect(k8s.Create(ctx, es)).To(Succeed())

		f.backend("ws")
		Expect(k8s.Create(ctx, rt.Service(f.ns, "empty"))).To(Succeed())
		// A Service whose only endpoint accepts no connection.
		Expect(k8s.Create(ctx, rt.Service(f.ns, "dead"))).To(Succeed())
		dead := rt.Slice(f.ns, "dead", "http", 8080, rt.Ready, testnet.IP())
		Expect(k8s.Create(ctx, dead)).To(Succeed())

		f.ingress("protocols",
			rt.Rule("h2c.example.com", "/", rt.Prefix, "h2c", 80),
			rt.Rule("ws.example.com", "/", rt.Prefix, "ws", 80),
			rt.Rule("empty.example.com", "/", rt.Prefix, "empty", 80),
			rt.Rule("dead.example.com", "/", rt.Prefix, "dead", 80))

		Eventually(func() string {
			req, _ := http.NewRequest(http.MethodGet, "http://"+f.http+"/", nil)
			req.Host = "h2c.example.com"
			resp, err := c.Do(req)
			if err != nil {
				return ""
			}
			defer resp.Body.Close()
			var rep echo.Reply
			_ = json.NewDecoder(resp.Body).Decode(&rep)
			return rep.Proto
		}, timeout, interval).Should(Equal("HTTP/2.0"), "the backend is reached over h2c")

		Eventually(func() int { code, _ := request(c, "http://"+f.http+"/", "empty.example.com"); return code }, timeout, interval).
			Should(Equal(http.StatusServiceUnavailable))
		Eventually(func() int { code, _ := request(c, "http://"+f.http+"/", "dead.example.com"); return code }, timeout, interval).
			Should(Equal(http.StatusBadGateway))

		Eventually(answeredBy(c, "http://"+f.http+"/", "ws.example.com"), timeout, interval).Should(Equal("ws"))
		conn, err := net.Dial("tcp", f.http)
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(http.StatusSwitchingProtocols))
		// An Ingress change while the WebSocket is open does not cut it.
		f.ingress("later", rt.Rule("later.example.com", "/", rt.Prefix, "ws", 80))
		Eventually(answeredBy(c, "http://"+f.http+"/", "later.example.com"), timeout, interval).Should(Equal("ws"))
		_, err = conn.Write(echo.Frame([]byte("still here"), true))
		Expect(err).NotTo(HaveOccurred())
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		msg, err := echo.ReadFrame(br)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(msg)).To(Equal("still here"))
	})
})
