package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// testCA is a certificate authority for backend TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, cn string) *testCA {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: k, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate signed by the CA for names (a server's), or for the client cn.
func (ca *testCA) issue(t *testing.T, client bool, names ...string) (certPEM, keyPEM []byte, pair tls.Certificate) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if client {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	} else {
		tpl.DNSNames = names
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	pair, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, pair
}

// tlsSeen is what a TLS backend saw of the proxy's handshakes.
type tlsSeen struct {
	mu          sync.Mutex
	serverNames []string
	clients     []string // client certificate CNs ("" for none)
}

func (s *tlsSeen) last() (sni, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.serverNames) == 0 {
		return "<none>", "<none>"
	}
	return s.serverNames[len(s.serverNames)-1], s.clients[len(s.clients)-1]
}

// tlsBackend serves handler over TLS with cert (HTTP/1.1 and h2 by ALPN), asking for a client
// certificate from clientCA when given, and declares Service name for it.
func (h *harness) tlsBackend(name string, cert tls.Certificate, clientCA *testCA, handler http.Handler) *tlsSeen {
	seen := &tlsSeen{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			seen.mu.Lock()
			defer seen.mu.Unlock()
			seen.serverNames = append(seen.serverNames, cs.ServerName)
			cn := ""
			if len(cs.PeerCertificates) > 0 {
				cn = cs.PeerCertificates[0].Subject.CommonName
			}
			seen.clients = append(seen.clients, cn)
			return nil
		}}
	if clientCA != nil {
		pool := x509.NewCertPool()
		pool.AddCert(clientCA.cert)
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	h.t.Cleanup(func() { _ = srv.Close() })
	h.addEndpoints(name, "", ln.Addr().(*net.TCPAddr).Port, "127.0.0.1")
	return seen
}

func backendSecret(name string, ca, crt, key []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("ns/" + name), ResourceVersion: "1"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{"ca.crt": ca, corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
}

func TestBackendTLS(t *testing.T) {
	ca, other := newTestCA(t, "backend CA"), newTestCA(t, "someone else's CA")
	clientCA := newTestCA(t, "proxy client CA")
	_, _, serverPair := ca.issue(t, false, "secure.ns.svc", "api.internal")
	clientCrt, clientKey, _ := clientCA.issue(t, true, "portico-proxy")

	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			seen := h.tlsBackend("secure", serverPair, clientCA, echo.Handler("secure-1", "secure"))
			h.in.Secrets = append(h.in.Secrets, backendSecret("backend-ca", ca.pem, clientCrt, clientKey),
				backendSecret("wrong-ca", other.pem, nil, nil))
			a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
			if probs := h.compile(
				rt.Ingress("ns", "verified", 1, rt.Rule("verified.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS"), a("proxy-ssl-secret", "ns/backend-ca"), a("proxy-ssl-verify", "on")),
				rt.Ingress("ns", "sni", 2, rt.Rule("sni.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS"), a("proxy-ssl-secret", "backend-ca"), a("proxy-ssl-verify", "on"),
					a("proxy-ssl-name", "api.internal"), a("proxy-ssl-server-name", "on")),
				rt.Ingress("ns", "untrusted", 3, rt.Rule("untrusted.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS"), a("proxy-ssl-secret", "wrong-ca"), a("proxy-ssl-verify", "on")),
				rt.Ingress("ns", "wrongname", 4, rt.Rule("wrongname.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS"), a("proxy-ssl-secret", "backend-ca"), a("proxy-ssl-verify", "on"),
					a("proxy-ssl-name", "elsewhere.internal")),
				rt.Ingress("ns", "unverified", 5, rt.Rule("unverified.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS")),
				rt.Ingress("ns", "missing", 6, rt.Rule("missing.example.com", "/", rt.Prefix, "secure", 80),
					a("backend-protocol", "HTTPS"), a("proxy-ssl-secret", "absent"), a("proxy-ssl-verify", "on")),
			); len(probs) != 1 || !strings.Contains(probs[0].String(), "ns/missing") || !strings.Contains(probs[0].Message, "secret ns/absent not found") {
				t.Fatalf("problems %v, want the missing Secret's only", probs)
			}
			c, base := p.client(h)
			c.Timeout = 10 * time.Second
			for _, tc := range []struct {
				host        string
				code        int
				sni, client string
			}{
				{"verified.example.com", 200, "", "portico-proxy"}, // no SNI unless asked, as ingress-nginx
				{"sni.example.com", 200, "api.internal", "portico-proxy"},
				{"untrusted.example.com", 502, "", ""},
				{"wrongname.example.com", 502, "", ""},
				{"unverified.example.com", 200, "", ""}, // proxy-ssl-verify off: any certificate, no client certificate
				{"missing.example.com", 503, "", ""},    // verification asked, settings unusable: fail closed
			} {
				resp, rep, body := get(t, c, base+"/x?y=1", tc.host)
				if resp.StatusCode != tc.code {
					t.Errorf("%s: %d %q, want %d", tc.host, resp.StatusCode, body, tc.code)
					continue
				}
				if tc.code != 200 {
					continue
				}
				sni, client := seen.last()
				if rep.Name != "secure-1" || rep.URI != "/x?y=1" || rep.Host != tc.host || sni != tc.sni || client != tc.client {
					t.Errorf("%s: backend %q uri %q host %q, SNI %q client %q; want SNI %q client %q", tc.host, rep.Name, rep.URI, rep.Host,
						sni, client, tc.sni, tc.client)
				}
			}
			// Connections are pooled per TLS settings: many requests, few handshakes.
			seen.mu.Lock()
			before := len(seen.serverNames)
			seen.mu.Unlock()
			for i := 0; i < 20; i++ {
				if resp, _, _ := get(t, c, base+"/", "verified.example.com"); resp.StatusCode != 200 {
					t.Fatalf("request %d: %d", i, resp.StatusCode)
				}
			}
			seen.mu.Lock()
			after := len(seen.serverNames)
			seen.mu.Unlock()
			if after-before > 2 {
				t.Errorf("%d handshakes for 20 requests: upstream TLS connections are not reused", after-before)
			}
		})
	}
}

// TestBackendGRPCS: gRPC to a backend that terminates TLS itself (backend-protocol GRPCS), its
// certificate verified, unary and server-streaming, the status in the trailers.
func TestBackendGRPCS(t *testing.T) {
	ca := newTestCA(t, "backend CA")
	_, _, pair := ca.issue(t, false, "grpc-backend.ns.svc")
	h := newHarness(t, Options{})
	hs := health.NewServer()
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	grpcBackend(t, h, func(gs *grpc.Server) { healthpb.RegisterHealthServer(gs, hs) },
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}})))
	h.in.Secrets = append(h.in.Secrets, backendSecret("backend-ca", ca.pem, nil, nil))
	if probs := h.compile(rt.Ingress("ns", "g", 1, rt.Rule("grpc.example.com", "/", rt.Prefix, "grpc-backend", 80),
		rt.Annotation("portico.dev/backend-protocol", "GRPCS"), rt.Annotation("portico.dev/proxy-ssl-secret", "backend-ca"),
		rt.Annotation("portico.dev/proxy-ssl-verify", "on"))); len(probs) != 0 {
		t.Fatal(probs)
	}
	conn := grpcDial(t, h.https, grpcWays(h)["tls"].creds)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := healthpb.NewHealthClient(conn)
	if resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop"}); err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check: %v %v", resp, err)
	}
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check(unknown): want NotFound from the trailers, got %v", err)
	}
	stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch: %v %v", m, err)
	}
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch after a change: %v %v", m, err)
	}

	// A backend certificate the CA did not sign: the call fails (Unavailable), nothing is sent
	// unverified.
	other := newTestCA(t, "someone else's CA")
	h.in.Secrets[len(h.in.Secrets)-1] = backendSecret("backend-ca", other.pem, nil, nil)
	h.in.Secrets[len(h.in.Secrets)-1].ResourceVersion = "2"
	h.compile(h.in.Ingresses...)
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Check with an untrusted backend: %v, want Unavailable (502)", err)
	}
}
