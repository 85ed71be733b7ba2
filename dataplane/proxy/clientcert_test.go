package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/route"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// clientPKI is the certificates of the client certificate tests: a root CA (ca.crt), an
// intermediate under it, two levels of intermediates, another root; and clients of each.
type clientPKI struct {
	root, other *rt.CA
	certs       map[string]*tls.Certificate // by name; "none" is nil
	crl         []byte                      // the root's, revoking "revoked"
}

func newClientPKI() *clientPKI {
	p := &clientPKI{root: rt.NewCA("root"), other: rt.NewCA("other")}
	inter, i1 := p.root.Intermediate("inter"), p.root.Intermediate("i1")
	i2 := i1.Intermediate("i2")
	now := time.Now()
	cert := func(c tls.Certificate) *tls.Certificate { return &c }
	p.certs = map[string]*tls.Certificate{
		"none":            nil,
		"good":            cert(p.root.Client("good", time.Time{}, time.Time{})),
		"alice":           cert(p.root.Client("alice", time.Time{}, time.Time{})),
		"revoked":         cert(p.root.Client("revoked", time.Time{}, time.Time{})),
		"via-inter":       cert(inter.Client("via-inter", time.Time{}, time.Time{})), // leaf, inter: depth 1
		"deep":            cert(i2.Client("deep", time.Time{}, time.Time{})),         // leaf, i2, i1: depth 2
		"expired":         cert(p.root.Client("expired", now.Add(-48*time.Hour), now.Add(-24*time.Hour))),
		"not-yet":         cert(p.root.Client("not-yet", now.Add(24*time.Hour), now.Add(48*time.Hour))),
		"other":           cert(p.other.Client("stranger", time.Time{}, time.Time{})), // another CA's, alone
		"other-via-inter": cert(p.other.Intermediate("other-inter").Client("stranger2", time.Time{}, time.Time{})),
		"self":            cert(rt.SelfSignedClient("self")),
	}
	p.crl = p.root.CRL(now.Add(-time.Hour), now.Add(time.Hour), p.certs["revoked"].Leaf.SerialNumber)
	return p
}

// clientCertHosts are the hosts of the proxy tests and their auth-tls-* annotations.
var clientCertHosts = []struct {
	host string
	ann  []string
}{
	{"on.example.com", []string{"auth-tls-secret", "ns/ca"}},
	{"optional.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional"}},
	{"noca.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional_no_ca"}},
	{"off.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-verify-client", "off"}},
	{"depth2.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-verify-depth", "2"}},
	{"page.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-error-page", "https://errors.example.com/cert"}},
	{"cn.example.com", []string{"auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional", "auth-tls-match-cn", "CN=(alice|bob)"}},
	{"crl.example.com", []string{"auth-tls-secret", "ns/ca-crl"}},
	{"plain.example.com", []string{"auth-tls-secret", "ns/ca", "ssl-redirect", "false"}},
	{"open.example.com", []string{"ssl-redirect", "false"}},
}

// newClientCertProxy runs a proxy serving clientCertHosts (one Ingress each, TLS for all of
// them) to the echo backend "a".
func newClientCertProxy(t *testing.T, so ServerOptions) (*harness, *clientPKI) {
	t.Helper()
	p := newClientPKI()
	h := newHarnessWith(t, Options{}, so)
	h.backend("a", echo.Handler("a-1", "a"), "")
	names := make([]string, 0, len(clientCertHosts))
	var ings []*networkingv1.Ingress
	for i, x := range clientCertHosts {
		names = append(names, x.host)
		opts := []rt.IngressOpt{rt.Rule(x.host, "/", rt.Prefix, "a", 80), rt.TLS("tls", x.host)}
		for j := 0; j+1 < len(x.ann); j += 2 {
			opts = append(opts, rt.Annotation(route.AnnotationPrefix+x.ann[j], x.ann[j+1]))
		}
		ings = append(ings, rt.Ingress("ns", strings.Split(x.host, ".")[0], i, opts...))
	}
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", names...), rt.CASecret("ns", "ca", p.root.PEM, nil),
		rt.CASecret("ns", "ca-crl", p.root.PEM, p.crl))
	for _, pr := range h.compile(ings...) {
		if !strings.Contains(pr.Message, `host "plain.example.com" also answers plain HTTP`) {
			t.Fatal(pr)
		}
	}
	return h, p
}

// certClient is one client TLS connection to the proxy, HTTP/1.1.
type certClient struct {
	conn *tls.Conn
	br   *bufio.Reader
	// requested: the server asked for a certificate; acceptable are the CAs it named.
	requested  bool
	acceptable [][]byte
}

// dialTLS connects to addr with server name sni ("" for none), presenting cert when asked
// (nil: none), whatever CAs the server names.
func dialTLS(t *testing.T, addr, sni string, cert *tls.Certificate) *certClient {
	t.Helper()
	c := &certClient{}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: []string{"http/1.1"},
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c.requested, c.acceptable = true, cri.AcceptableCAs
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatalf("handshake (SNI %q): %v", sni, err)
	}
	t.Cleanup(func() { conn.Close() })
	c.conn, c.br = conn, bufio.NewReader(conn)
	return c
}

// get sends GET / for host with extra header lines and reads the answer.
func (c *certClient) get(t *testing.T, host string, extra ...string) (*http.Response, string) {
	t.Helper()
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: " + host + "\r\n"
	for _, l := range extra {
		req += l + "\r\n"
	}
	if _, err := io.WriteString(c.conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("GET for %s: %v", host, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

// TestClientCertModes runs each mode of auth-tls-verify-client (and depth, error page,
// match-CN, CRL) against clients with no certificate, a good one, one of another CA, an
// expired one, chains within and beyond the depth, over real TLS through the goroutine path:
// every handshake completes, a certificate is requested when the host has client auth and is
// not off (naming the CA), and the request gets nginx's answer.
func TestClientCertModes(t *testing.T) {
	h, p := newClientCertProxy(t, ServerOptions{})
	const ok, noCert, certErr = "ok", msgNoClientCert, msgClientCertError
	for _, tc := range []struct {
		host, client string
		status       int
		want         string // ok (the backend answered), a message, or the Location
	}{
		{"on.example.com", "none", 400, noCert},
		{"on.example.com", "good", 200, ok},
		{"on.example.com", "via-inter", 200, ok}, // one intermediate: within depth 1
		{"on.example.com", "deep", 400, certErr}, // two: beyond it
		{"on.example.com", "expired", 400, certErr},
		{"on.example.com", "not-yet", 400, certErr},
		{"on.example.com", "other", 400, certErr},
		{"on.example.com", "self", 400, certErr},
		{"optional.example.com", "none", 200, ok},
		{"optional.example.com", "good", 200, ok},
		{"optional.example.com", "other", 400, certErr},
		{"optional.example.com", "expired", 400, certErr},
		{"noca.example.com", "none", 200, ok},
		{"noca.example.com", "good", 200, ok},
		{"noca.example.com", "other", 200, ok}, // unable to verify the first certificate: optional
		{"noca.example.com", "self", 200, ok},
		{"noca.example.com", "other-via-inter", 400, certErr}, // unable to get local issuer certificate: not
		{"noca.example.com", "expired", 400, certErr},
		{"noca.example.com", "deep", 400, certErr},
		{"off.example.com", "none", 200, ok},
		{"off.example.com", "other", 200, ok},
		{"depth2.example.com", "deep", 200, ok},
		{"depth2.example.com", "good", 200, ok},
		{"page.example.com", "none", 302, "https://errors.example.com/cert"},
		{"page.example.com", "other", 302, "https://errors.example.com/cert"},
		{"page.example.com", "good", 200, ok},
		{"cn.example.com", "alice", 200, ok},
		{"cn.example.com", "good", 403, msgCNUnauthorized},
		{"cn.example.com", "none", 403, msgCNUnauthorized},
		{"crl.example.com", "good", 200, ok},
		{"crl.example.com", "revoked", 400, certErr},
		{"crl.example.com", "via-inter", 400, certErr}, // no CRL of inter
		{"open.example.com", "none", 200, ok},
		{"open.example.com", "other", 200, ok},
	} {
		name := tc.host + "/" + tc.client
		c := dialTLS(t, h.https, tc.host, p.certs[tc.client])
		wantRequested := tc.host != "open.example.com" && tc.host != "off.example.com"
		if c.requested != wantRequested {
			t.Errorf("%s: certificate requested %t, want %t", name, c.requested, wantRequested)
		}
		if c.requested && (len(c.acceptable) != 1 || string(c.acceptable[0]) != string(p.root.Cert.RawSubject)) {
			t.Errorf("%s: the CAs named are not ca.crt's", name)
		}
		resp, body := c.get(t, tc.host)
		switch {
		case resp.StatusCode != tc.status:
			t.Errorf("%s: %d %q, want %d", name, resp.StatusCode, body, tc.status)
		case tc.want == ok:
			var rep echo.Reply
			if err := json.Unmarshal([]byte(body), &rep); err != nil || rep.Name != "a-1" {
				t.Errorf("%s: not the backend's answer: %q", name, body)
			}
		case tc.status == 302:
			if loc := resp.Header.Get("Location"); loc != tc.want {
				t.Errorf("%s: Location %q, want %q", name, loc, tc.want)
			}
		case !strings.Contains(body, tc.want):
			t.Errorf("%s: %q, want the message %q", name, body, tc.want)
		}
		if tc.status == 400 && !resp.Close {
			t.Errorf("%s: the connection stays open after a 400 (nginx closes it)", name)
		}
	}
}

// TestClientCertMisdirected: a request over TLS for a host with client auth must name the host
// the handshake was for (nginx answers 421 otherwise), so that a client cannot present a name
// without client auth, or with another CA, and ask for a host with it. A request from a
// client-auth connection for a host without it is served, as in nginx. Over HTTP/2 too.
func TestClientCertMisdirected(t *testing.T) {
	h, p := newClientCertProxy(t, ServerOptions{})
	good := p.certs["good"]
	for _, tc := range []struct {
		sni, host string
		cert      *tls.Certificate
		status    int
	}{
		{"open.example.com", "on.example.com", good, 421},
		{"optional.example.com", "on.example.com", good, 421},
		{"on.example.com", "optional.example.com", good, 421},
		{"", "on.example.com", good, 421},                    // no server name: the handshake asked for nothing
		{"unknown.example.org", "on.example.com", good, 421}, // a name of no host: nor here
		{"on.example.com", "On.Example.com:443", good, 200},
		{"on.example.com", "on.example.com.", good, 200},
		{"on.example.com", "open.example.com", good, 200},
		{"on.example.com", "open.example.com", nil, 200},
		{"off.example.com", "on.example.com", good, 421}, // off asked for no certificate
		{"on.example.com", "off.example.com", nil, 200},
	} {
		c := dialTLS(t, h.https, tc.sni, tc.cert)
		resp, body := c.get(t, tc.host)
		if resp.StatusCode != tc.status {
			t.Errorf("SNI %q, Host %q: %d %q, want %d", tc.sni, tc.host, resp.StatusCode, body, tc.status)
		}
		if tc.status == 421 && !strings.Contains(body, "not the name the TLS connection was made for") {
			t.Errorf("SNI %q, Host %q: %q", tc.sni, tc.host, body)
		}
	}

	// HTTP/2: the streams of one connection, each decided (the verification is the
	// connection's), :authority as Host.
	for _, tc := range []struct {
		cert          *tls.Certificate
		authority     string
		status        int
		backendAnswer bool
	}{
		{good, "on.example.com", 200, true},
		{good, "open.example.com", 200, true},
		{good, "optional.example.com", 421, false},
		{nil, "on.example.com", 400, false},
		{p.certs["other"], "on.example.com", 400, false},
	} {
		cert := tc.cert
		c := h2Client(&tls.Config{InsecureSkipVerify: true, ServerName: "on.example.com",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if cert == nil {
					return &tls.Certificate{}, nil
				}
				return cert, nil
			}})
		resp, rep, body := get(t, c, "https://"+h.https+"/", tc.authority)
		if resp.StatusCode != tc.status || resp.ProtoMajor != 2 || (rep.Name == "a-1") != tc.backendAnswer {
			t.Errorf("HTTP/2 to %s: %s %d %q, want %d", tc.authority, resp.Proto, resp.StatusCode, body, tc.status)
		}
		c.CloseIdleConnections()
	}
}

// TestClientCertSNISelection: the handshake asks for a certificate only for the names whose
// host has client auth (and is not off), on the same listener: by name precisely, by wildcard,
// and the rules without a host for no name or an unknown one.
func TestClientCertSNISelection(t *testing.T) {
	p := newClientPKI()
	h := newHarness(t, Options{})
	h.backend("a", echo.Handler("a-1", "a"), "")
	auth := rt.Annotation(route.AnnotationPrefix+"auth-tls-secret", "ns/ca")
	h.in.Secrets = append(h.in.Secrets, rt.CASecret("ns", "ca", p.root.PEM, nil), rt.TLSSecret("ns", "tls", "a.example.com", "*.w.example.com"))
	tlsAll := rt.TLS("tls", "a.example.com", "*.w.example.com")
	probs := h.compile(
		rt.Ingress("ns", "exact", 1, rt.Rule("a.example.com", "/", rt.Prefix, "a", 80), tlsAll, auth),
		rt.Ingress("ns", "open", 2, rt.Rule("b.example.com", "/", rt.Prefix, "a", 80)),
		rt.Ingress("ns", "wild", 3, rt.Rule("*.w.example.com", "/", rt.Prefix, "a", 80), tlsAll, auth),
		rt.Ingress("ns", "precise", 4, rt.Rule("x.w.example.com", "/", rt.Prefix, "a", 80), tlsAll))
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	for _, tc := range []struct {
		sni       string
		requested bool
	}{
		{"a.example.com", true}, {"A.EXAMPLE.COM", true}, {"b.example.com", false}, {"y.w.example.com", true},
		{"x.w.example.com", false}, {"unknown.example.org", false}, {"", false},
	} {
		if c := dialTLS(t, h.https, tc.sni, p.certs["good"]); c.requested != tc.requested {
			t.Errorf("SNI %q: certificate requested %t, want %t", tc.sni, c.requested, tc.requested)
		}
	}
	// The rules without a host take the handshakes without a name, and of unknown names.
	probs = h.compile(rt.Ingress("ns", "any", 1, rt.Rule("", "/", rt.Prefix, "a", 80), auth),
		rt.Ingress("ns", "open", 2, rt.Rule("b.example.com", "/", rt.Prefix, "a", 80)))
	if len(probs) != 1 || !strings.Contains(probs[0].Message, "also answers plain HTTP") {
		t.Fatal(probs)
	}
	for _, tc := range []struct {
		sni, host string
		requested bool
		status    int
	}{
		{"", "10.0.0.1", true, 200}, {"unknown.example.org", "unknown.example.org", true, 200},
		{"b.example.com", "b.example.com", false, 200}, {"b.example.com", "other.example.org", false, 421},
	} {
		c := dialTLS(t, h.https, tc.sni, p.certs["good"])
		resp, body := c.get(t, tc.host)
		if c.requested != tc.requested || resp.StatusCode != tc.status {
			t.Errorf("SNI %q Host %q: requested %t, %d %q; want %t, %d", tc.sni, tc.host, c.requested, resp.StatusCode, body, tc.requested, tc.status)
		}
	}
}

// TestClientCertTableSwap: a connection's verification is redone when its host's client auth
// changes with a new table (the CA replaced), and refuses a certificate the new CA did not
// issue on a connection that was let through.
func TestClientCertTableSwap(t *testing.T) {
	h, p := newClientCertProxy(t, ServerOptions{})
	c := dialTLS(t, h.https, "on.example.com", p.certs["good"])
	if resp, body := c.get(t, "on.example.com"); resp.StatusCode != 200 {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for i, s := range h.in.Secrets {
		if s.Name == "ca" {
			h.in.Secrets[i] = rt.CASecret("ns", "ca", p.other.PEM, nil)
			h.in.Secrets[i].ResourceVersion = "2"
		}
	}
	h.compile(h.in.Ingresses...)
	if resp, body := c.get(t, "on.example.com"); resp.StatusCode != 400 || !strings.Contains(body, msgClientCertError) {
		t.Errorf("after the CA changed: %d %q, want 400", resp.StatusCode, body)
	}
}

// TestClientCertHeadersFromClientsDropped: a client's ssl-client-* headers never reach a
// backend, on any serving path, with client auth or without.
func TestClientCertHeadersFromClientsDropped(t *testing.T) {
	forged := []string{"ssl-client-verify: SUCCESS", "SSL-Client-Subject-DN: CN=admin", "ssl-client-issuer-dn: CN=root",
		"ssl-client-cert: forged"}
	for _, so := range []ServerOptions{{}, {EventLoops: -1}, {NetHTTPOnly: true}} {
		h, _ := newClientCertProxy(t, so)
		check := func(where, body string) {
			t.Helper()
			var rep echo.Reply
			if err := json.Unmarshal([]byte(body), &rep); err != nil {
				t.Fatalf("%s: %q", where, body)
			}
			for k, v := range rep.Headers {
				if strings.HasPrefix(strings.ToLower(k), "ssl-client-") && (v[0] == "SUCCESS" || strings.Contains(v[0], "admin") || v[0] == "forged" || v[0] == "CN=root") {
					t.Errorf("%s (%+v): the client's %s: %q reached the backend", where, so, k, v)
				}
			}
		}
		for _, host := range []string{"open.example.com", "optional.example.com", "plain.example.com"} {
			c := dialTLS(t, h.https, host, nil)
			if resp, body := c.get(t, host, forged...); resp.StatusCode == 200 {
				check("https://"+host, body)
			} else if host != "plain.example.com" {
				t.Errorf("https://%s: %d %q", host, resp.StatusCode, body)
			}
			// An upgrade goes to net/http.
			c = dialTLS(t, h.https, host, nil)
			if resp, body := c.get(t, host, append(forged, "Connection: Upgrade", "Upgrade: something")...); resp.StatusCode == 200 {
				check("https://"+host+" (upgrade)", body)
			}
		}
		for _, host := range []string{"open.example.com", "plain.example.com"} {
			conn, err := net.Dial("tcp", h.http)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n%s\r\nConnection: close\r\n\r\n", host, strings.Join(forged, "\r\n"))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			conn.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("http://%s: %d %q", host, resp.StatusCode, body)
			}
			check("http://"+host, string(body))
		}
	}
}

// TestClientCertNetHTTPPath: the requests net/http serves over TLS are decided as the fast
// path's, and carry the proxy's ssl-client-* headers to the backend.
func TestClientCertNetHTTPPath(t *testing.T) {
	h, p := newClientCertProxy(t, ServerOptions{NetHTTPOnly: true})
	for _, tc := range []struct {
		sni, host, client string
		status            int
		verify            string
	}{
		{"on.example.com", "on.example.com", "good", 200, "SUCCESS"},
		{"on.example.com", "on.example.com", "none", 400, ""},
		{"on.example.com", "on.example.com", "other", 400, ""},
		{"noca.example.com", "noca.example.com", "other", 200, "FAILED:unable to verify the first certificate"},
		{"optional.example.com", "optional.example.com", "none", 200, "NONE"},
		{"open.example.com", "on.example.com", "good", 421, ""},
		{"cn.example.com", "cn.example.com", "good", 403, ""},
	} {
		c := dialTLS(t, h.https, tc.sni, p.certs[tc.client])
		resp, body := c.get(t, tc.host)
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d %q, want %d", tc.host, tc.client, resp.StatusCode, body, tc.status)
			continue
		}
		if tc.status == 200 {
			var rep echo.Reply
			_ = json.Unmarshal([]byte(body), &rep)
			if got := http.Header(rep.Headers).Get("Ssl-Client-Verify"); got != tc.verify {
				t.Errorf("%s %s: ssl-client-verify %q, want %q", tc.host, tc.client, got, tc.verify)
			}
		}
	}
}

// serverState makes a TLS handshake on 127.0.0.1 with the server configuration of ca (its
// ServerConfig) as client cert would, and returns the server's view of it.
func serverState(t *testing.T, ca *route.ClientAuth, cert *tls.Certificate) *tls.ConnectionState {
	t.Helper()
	pair, err := tls.X509KeyPair(rt.SelfSigned("x.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *tls.ConnectionState, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		tc := tls.Server(c, ca.ServerConfig(&tls.Config{Certificates: []tls.Certificate{pair}}))
		if tc.Handshake() != nil {
			got <- nil
			return
		}
		cs := tc.ConnectionState()
		got <- &cs
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, ServerName: "x.example.com",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert == nil {
				return &tls.Certificate{}, nil
			}
			return cert, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cs := <-got
	if cs == nil {
		t.Fatal("server handshake failed")
	}
	return cs
}

// compiledClientAuth is the client auth of host x.example.com with the auth-tls-* annotations
// kv (the root's CA, and its CRL).
func compiledClientAuth(t *testing.T, p *clientPKI, kv ...string) *route.ClientAuth {
	t.Helper()
	opts := []rt.IngressOpt{rt.Rule("x.example.com", "/", rt.Prefix, "a", 80), rt.TLS("tls", "x.example.com")}
	for i := 0; i+1 < len(kv); i += 2 {
		opts = append(opts, rt.Annotation(route.AnnotationPrefix+kv[i], kv[i+1]))
	}
	tab, probs := route.Compile(route.Input{
		Config:    proxyconfig.Config{FleetNamespace: "ingress", FleetName: "edge"},
		Classes:   []*networkingv1.IngressClass{rt.Class("portico", "ingress", "edge", false)},
		Ingresses: []*networkingv1.Ingress{rt.Ingress("ns", "i", 0, opts...)},
		Secrets: []*corev1.Secret{rt.TLSSecret("ns", "tls", "x.example.com"), rt.CASecret("ns", "ca", p.root.PEM, nil),
			rt.CASecret("ns", "ca-crl", p.root.PEM, p.crl)},
	})
	ca := tab.ClientAuth("x.example.com")
	if ca == nil {
		t.Fatalf("no client auth: %v", probs)
	}
	return ca
}

// TestClientCertVerification: the verification of real handshakes' certificates, its
// ssl-client-verify (OpenSSL's reasons, as nginx reports them) and headers, and the verdict of
// each mode on each outcome.
func TestClientCertVerification(t *testing.T) {
	p := newClientPKI()
	on := compiledClientAuth(t, p, "auth-tls-secret", "ns/ca", "auth-tls-pass-certificate-to-upstream", "true")
	withCRL := compiledClientAuth(t, p, "auth-tls-secret", "ns/ca-crl")
	modes := map[string]*route.ClientAuth{
		"on":             on,
		"optional":       compiledClientAuth(t, p, "auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional"),
		"optional_no_ca": compiledClientAuth(t, p, "auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional_no_ca"),
		"off":            compiledClientAuth(t, p, "auth-tls-secret", "ns/ca", "auth-tls-verify-client", "off"),
	}
	for _, tc := range []struct {
		client string
		verify string
		result certResult
		// the status of the verdict under on, optional, optional_no_ca, off
		on, optional, noCA, off int
	}{
		{"none", "NONE", certNone, 400, 0, 0, 0},
		{"good", "SUCCESS", certOK, 0, 0, 0, 0},
		{"via-inter", "SUCCESS", certOK, 0, 0, 0, 0},
		{"deep", "FAILED:certificate chain too long", certFailed, 400, 400, 400, 0},
		{"expired", "FAILED:certificate has expired", certFailed, 400, 400, 400, 0},
		{"not-yet", "FAILED:certificate is not yet valid", certFailed, 400, 400, 400, 0},
		{"other", "FAILED:unable to verify the first certificate", certUntrusted, 400, 400, 0, 0},
		{"self", "FAILED:self-signed certificate", certUntrusted, 400, 400, 0, 0},
		{"other-via-inter", "FAILED:unable to get local issuer certificate", certFailed, 400, 400, 400, 0},
	} {
		cs := serverState(t, on, p.certs[tc.client])
		v := verifyClientCert(on, on, cs, time.Now())
		if v.verify != tc.verify || v.result != tc.result {
			t.Errorf("%s: %q (%d), want %q (%d)", tc.client, v.verify, v.result, tc.verify, tc.result)
		}
		for mode, want := range map[string]int{"on": tc.on, "optional": tc.optional, "optional_no_ca": tc.noCA, "off": tc.off} {
			ca := modes[mode]
			mv := verifyClientCert(ca, ca, cs, time.Now())
			if status, _, _ := clientCertVerdict(ca, "x.example.com", cs, mv); status != want {
				t.Errorf("%s under %s: %d, want %d", tc.client, mode, status, want)
			}
		}
	}
	// ca.crl: every certificate of the chain needs its issuer's CRL (OpenSSL's CRL_CHECK_ALL).
	for _, tc := range []struct{ client, verify string }{
		{"good", "SUCCESS"}, {"revoked", "FAILED:certificate revoked"}, {"via-inter", "FAILED:unable to get certificate CRL"},
	} {
		cs := serverState(t, withCRL, p.certs[tc.client])
		if v := verifyClientCert(withCRL, withCRL, cs, time.Now()); v.verify != tc.verify {
			t.Errorf("with ca.crl, %s: %q, want %q", tc.client, v.verify, tc.verify)
		}
	}

	// The headers, once per connection: with pass-certificate-to-upstream the certificate as
	// nginx's $ssl_client_escaped_cert.
	cs := serverState(t, on, p.certs["good"])
	v := verifyClientCert(on, on, cs, time.Now())
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.certs["good"].Leaf.Raw})
	wantCert := strings.ReplaceAll(url.QueryEscape(string(leafPEM)), "+", "%20") // QueryEscape's + is a space
	want := [][2]string{{"ssl-client-cert", wantCert}, {"ssl-client-verify", "SUCCESS"},
		{"ssl-client-subject-dn", "CN=good,O=Portico Tests"}, {"ssl-client-issuer-dn", "CN=root,O=Portico Tests"}}
	if got := clientCertHeaders(v); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("headers\n got %q\nwant %q", got, want)
	}
	if !strings.HasPrefix(wantCert, "-----BEGIN%20CERTIFICATE-----%0AMII") || strings.ContainsAny(wantCert, "+/= \n") {
		t.Errorf("escaped certificate %q", wantCert[:40])
	}
	lines := string(appendClientCertHeaders([]byte("X: 1\r\n"), v))
	if lines != "X: 1\r\nssl-client-cert: "+wantCert+"\r\nssl-client-verify: SUCCESS\r\nssl-client-subject-dn: CN=good,O=Portico Tests\r\nssl-client-issuer-dn: CN=root,O=Portico Tests\r\n" {
		t.Errorf("lines %q", lines)
	}
	none := verifyClientCert(on, on, serverState(t, on, nil), time.Now())
	if got := clientCertHeaders(none); len(got) != 1 || got[0] != [2]string{"ssl-client-verify", "NONE"} {
		t.Errorf("without a certificate: %q", got)
	}
	if clientCertHeaders(nil) != nil || string(appendClientCertHeaders([]byte("x"), nil)) != "x" {
		t.Error("no verification, no headers")
	}
	hd := http.Header{"Ssl-Client-Verify": {"SUCCESS"}, "Ssl-Client-Cert": {"forged"}, "Ssl-Client-Subject-Dn": {"CN=admin"},
		"Ssl-Client-Issuer-Dn": {"CN=x"}, "X-Other": {"1"}}
	setClientCertHeaders(hd, none)
	nginxName := "ssl-client-verify" // as nginx names it, not canonical
	if len(hd) != 2 || hd[nginxName][0] != "NONE" || hd.Get("X-Other") != "1" {
		t.Errorf("net/http's headers: %v", hd)
	}

	// Once per connection: the state keeps the verification for its ClientAuth.
	cc := &connCert{cs: cs, handshake: on}
	if v1, v2 := cc.verification(on), cc.verification(on); v1 != v2 || v1.verify != "SUCCESS" {
		t.Error("the verification is not kept")
	}
	if allocs := testing.AllocsPerRun(100, func() {
		_, _, _ = clientCertVerdict(on, "x.example.com", cs, cc.verification(on))
	}); allocs != 0 {
		t.Errorf("%v allocations per request", allocs)
	}
}

// TestClientCertSubjectDN: names are printed as nginx's $ssl_client_s_dn (OpenSSL's RFC 2253
// form): the last attribute first, short names, RFC 2253's escapes, non-ASCII and control bytes
// as \XX, an unknown attribute as its OID and DER.
func TestClientCertSubjectDN(t *testing.T) {
	atv := func(oid asn1.ObjectIdentifier, v any) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	var (
		cn, o, c, ou = asn1.ObjectIdentifier{2, 5, 4, 3}, asn1.ObjectIdentifier{2, 5, 4, 10}, asn1.ObjectIdentifier{2, 5, 4, 6}, asn1.ObjectIdentifier{2, 5, 4, 11}
		email, dc    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	)
	for _, tc := range []struct {
		name pkix.RDNSequence
		want string
	}{
		{pkix.RDNSequence{{atv(c, "US")}, {atv(o, "Acme, Inc.")}, {atv(cn, "a+b")}}, `CN=a\+b,O=Acme\, Inc.,C=US`},
		{pkix.RDNSequence{{atv(dc, "com")}, {atv(dc, "example")}, {atv(email, "x@example.com")}}, `emailAddress=x@example.com,DC=example,DC=com`},
		{pkix.RDNSequence{{atv(cn, "José")}}, `CN=Jos\C3\A9`},
		{pkix.RDNSequence{{atv(cn, "#x ")}}, `CN=\#x\ `},
		{pkix.RDNSequence{{atv(cn, "a\x01b<c>;\"d\\")}}, `CN=a\01b\<c\>\;\"d\\`},
		{pkix.RDNSequence{{atv(asn1.ObjectIdentifier{1, 2, 3, 4}, "xyz")}}, `1.2.3.4=#130378797A`},
	} {
		raw, err := asn1.Marshal(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		if got := formatDN(raw, pkix.Name{}); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.name, got, tc.want)
		}
	}
	// A multi-valued RDN: its attributes apart by "+", in the reverse of their DER order, as
	// OpenSSL's DN_REV prints the flat list of entries.
	raw, _ := asn1.Marshal(pkix.RDNSequence{{atv(c, "US")}, {atv(ou, "x"), atv(cn, "y")}})
	var back pkix.RDNSequence
	if _, err := asn1.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	first, second := back[1][0], back[1][1] // DER sorts a SET
	short := map[string]string{"2.5.4.3": "CN", "2.5.4.11": "OU"}
	want := fmt.Sprintf("%s=%s+%s=%s,C=US", short[second.Type.String()], second.Value, short[first.Type.String()], first.Value)
	if got := formatDN(raw, pkix.Name{}); got != want {
		t.Errorf("multi-valued: %q, want %q", got, want)
	}
	if got := formatDN([]byte("not DER"), pkix.Name{CommonName: "fallback"}); got != "CN=fallback" {
		t.Errorf("fallback: %q", got)
	}
	// A certificate's, through x509.
	leaf := newClientPKI().certs["alice"].Leaf
	if got := formatDN(leaf.RawSubject, leaf.Subject); got != "CN=alice,O=Portico Tests" {
		t.Errorf("alice: %q", got)
	}
}
