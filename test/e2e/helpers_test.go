//go:build e2e

package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"portico.dev/portico/test/echo"
)

const (
	appsNS  = "e2e-apps"
	fleetNS = "e2e-ingress"
	host    = "shop.example.com"
)

func objMeta(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func echoDeployment(app string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": app}
	return &appsv1.Deployment{
		ObjectMeta: objMeta(appsNS, app),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: app, Image: "portico.dev/echo:dev", Args: []string{"--port=8080", "--service=" + app},
					Env:   []corev1.EnvVar{{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}},
						PeriodSeconds: 1},
				}}},
			},
		},
	}
}

func echoService(app string) *corev1.Service {
	return &corev1.Service{ObjectMeta: objMeta(appsNS, app), Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": app},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
	}}
}

func waitAvailable(ns, name string, n int32) {
	EventuallyWithOffset(1, func() int32 {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, d); err != nil {
			return -1
		}
		if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < n {
			return -1
		}
		return d.Status.AvailableReplicas
	}).Should(Equal(n))
}

// ingressAddresses returns "ip" or "ip:port,port" entries of an Ingress's status.
func ingressAddresses(ns, name string) func() []string {
	return func() []string {
		i := &networkingv1.Ingress{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, i); err != nil {
			return nil
		}
		var out []string
		for _, in := range i.Status.LoadBalancer.Ingress {
			s := in.IP + in.Hostname
			var ports []string
			for _, p := range in.Ports {
				ports = append(ports, fmt.Sprint(p.Port))
			}
			if len(ports) > 0 {
				s += ":" + strings.Join(ports, ",")
			}
			out = append(out, s)
		}
		return out
	}
}

var plain = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func tlsClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: host, RootCAs: pool}, ForceAttemptHTTP2: true, DisableKeepAlives: true}}
}

// answer sends GET scheme://addr/path with Host shop.example.com; it returns the backend's
// Service name ("" on any failure) and its pod name.
func answer(c *http.Client, scheme, addr, path string) (service, pod string) {
	r, _ := fetch(c, scheme, addr, path)
	return r.Service, r.Name
}

// fetch sends GET scheme://addr/path with Host shop.example.com; it returns the backend's reply
// to a 200, else what went wrong (error or status, body, time).
func fetch(c *http.Client, scheme, addr, path string) (echo.Reply, string) {
	var r echo.Reply
	req, _ := http.NewRequest(http.MethodGet, scheme+"://"+addr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return r, time.Now().Format("15:04:05.000") + " " + err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return r, fmt.Sprintf("%s %s: %q", time.Now().Format("15:04:05.000"), resp.Status, b)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Sprintf("%s not an echo reply: %q", time.Now().Format("15:04:05.000"), b)
	}
	return r, ""
}

// expectServes checks host and path routing over HTTP and HTTPS at one address.
func expectServes(ip string, httpPort, httpsPort int) {
	h := net.JoinHostPort(ip, fmt.Sprint(httpPort))
	s := net.JoinHostPort(ip, fmt.Sprint(httpsPort))
	EventuallyWithOffset(1, func() string { svc, _ := answer(plain, "http", h, "/coffee"); return svc }).Should(Equal("coffee"))
	EventuallyWithOffset(1, func() string { svc, _ := answer(plain, "http", h, "/tea/green"); return svc }).Should(Equal("tea"))
	EventuallyWithOffset(1, func() string { svc, _ := answer(tlsClient(), "https", s, "/tea"); return svc }).Should(Equal("tea"))
	EventuallyWithOffset(1, func() string { svc, _ := answer(tlsClient(), "https", s, "/coffee"); return svc }).Should(Equal("coffee"))
}

func getObj(o client.Object, ns, name string) error {
	return k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, o)
}

// response is an answer as send saw it: Status 0 (and the error as Body) when the request
// failed.
type response struct {
	Status int
	Header http.Header
	Body   string
	Reply  echo.Reply // the backend's, for a 200
}

// String shows an answer in a failure message.
func (r response) String() string { return fmt.Sprintf("%d %v %q", r.Status, r.Header, r.Body) }

// send sends method url through c with the given Host and headers (name, value pairs).
func send(c *http.Client, method, url, hostname string, hdr ...string) response {
	req, _ := http.NewRequest(method, url, nil)
	req.Host = hostname
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{Body: err.Error()}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{Status: resp.StatusCode, Header: resp.Header, Body: string(b)}
	if r.Status == http.StatusOK {
		_ = json.Unmarshal(b, &r.Reply)
	}
	return r
}

// noRedirects is plain without following redirects.
var noRedirects = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// ask sends GET http://addr/path with the given Host and headers (name, value pairs), without
// following redirects.
func ask(addr, hostname, path string, hdr ...string) response {
	return send(noRedirects, http.MethodGet, "http://"+addr+path, hostname, hdr...)
}

// sampleObjects reads the objects of a multi-document YAML file of config/samples.
func sampleObjects(path string) []client.Object {
	raw, err := os.ReadFile(path)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	var out []client.Object
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var meta metav1.TypeMeta
		ExpectWithOffset(1, yaml.Unmarshal([]byte(doc), &meta)).To(Succeed())
		var o client.Object
		switch meta.Kind {
		case "Deployment":
			o = &appsv1.Deployment{}
		case "Service":
			o = &corev1.Service{}
		case "Ingress":
			o = &networkingv1.Ingress{}
		case "Secret":
			o = &corev1.Secret{}
		default:
			ginkgo.Fail("sample kind " + meta.Kind + " not handled")
		}
		ExpectWithOffset(1, yaml.UnmarshalStrict([]byte(doc), o)).To(Succeed())
		out = append(out, o)
	}
	return out
}

// The fleet's TCP and UDP ports (spec.tcp, spec.udp).
const (
	l4TCPPort = 9000
	l4UDPPort = 5353
)

// expectL4 checks the fleet's TCP port (HTTP to coffee, spoken over a plain TCP connection)
// and UDP port (a datagram to the dns echo, answered) at one address.
func expectL4(ip string, tcpPort, udpPort int) {
	EventuallyWithOffset(1, func() string {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, fmt.Sprint(tcpPort)), 2*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		_, _ = io.WriteString(c, "GET /over-tcp HTTP/1.1\r\nHost: anything\r\nConnection: close\r\n\r\n")
		b, _ := io.ReadAll(c)
		return string(b)
	}).Should(ContainSubstring(`"service":"coffee"`))
	EventuallyWithOffset(1, func() string {
		c, err := net.Dial("udp", net.JoinHostPort(ip, fmt.Sprint(udpPort)))
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_, _ = c.Write([]byte("ping"))
		b := make([]byte, 512)
		n, err := c.Read(b)
		if err != nil {
			return err.Error()
		}
		return string(b[:n])
	}).Should(And(HavePrefix("dns-"), HaveSuffix(": ping")))
}
