package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// TestTLSPassthrough: a host with ssl-passthrough gets its TLS connections unterminated, the
// backend's own certificate and all, whatever the ClientHello's fragmentation; other names, no
// SNI and a malformed ClientHello are terminated by the proxy on the same port.
func TestTLSPassthrough(t *testing.T) {
	h := newHarness(t, Options{})
	ca := newTestCA(t, "vault CA")
	_, _, pair := ca.issue(t, false, "vault.example.com")
	h.tlsBackend("vault", pair, nil, echo.Handler("vault-1", "vault"))
	h.backend("web", echo.Handler("web-1", "web"), "")
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "web-tls", "web.example.com"))
	if probs := h.compile(
		rt.Ingress("ns", "vault", 1, rt.Rule("vault.example.com", "/", rt.Prefix, "vault", 80), rt.Annotation("portico.dev/ssl-passthrough", "true")),
		rt.Ingress("ns", "web", 2, rt.Rule("web.example.com", "/", rt.Prefix, "web", 80), rt.TLS("web-tls", "web.example.com")),
	); len(probs) != 0 {
		t.Fatal(probs)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	// Through the proxy to the backend's own TLS: verified against the backend's CA.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "vault.example.com"},
		ForceAttemptHTTP2: true}}
	resp, rep, _ := get(t, c, "https://"+h.https+"/secret", "vault.example.com")
	if rep.Name != "vault-1" || resp.TLS.PeerCertificates[0].Subject.CommonName != "vault.example.com" || resp.ProtoMajor != 2 {
		t.Fatalf("passthrough: %+v (certificate %q, %s)", rep, resp.TLS.PeerCertificates[0].Subject.CommonName, resp.Proto)
	}
	// The backend sees what the client sent: no X-Forwarded-For, the connection is not proxied at HTTP.
	if len(rep.Headers["X-Forwarded-For"]) != 0 {
		t.Errorf("passthrough went through HTTP: %v", rep.Headers)
	}
	// A ClientHello in one-byte writes: still passed through.
	raw, err := net.Dial("tcp", h.https)
	if err != nil {
		t.Fatal(err)
	}
	slow := tls.Client(&trickleConn{Conn: raw}, &tls.Config{RootCAs: roots, ServerName: "vault.example.com", NextProtos: []string{"http/1.1"}})
	_ = slow.SetDeadline(time.Now().Add(5 * time.Second))
	if err := slow.Handshake(); err != nil {
		t.Fatalf("a fragmented ClientHello: %v", err)
	}
	_, _ = io.WriteString(slow, "GET / HTTP/1.1\r\nHost: vault.example.com\r\nConnection: close\r\n\r\n")
	b, _ := io.ReadAll(slow)
	if !strings.Contains(string(b), "vault-1") {
		t.Errorf("fragmented: %q", b)
	}
	slow.Close()

	// Other names, and none, are terminated by the proxy.
	for _, sni := range []string{"web.example.com", ""} {
		tc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: sni}}}
		resp, rep, _ := get(t, tc, "https://"+h.https+"/", "web.example.com")
		want := "web.example.com"
		if sni == "" {
			want = "portico-default"
		}
		if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != want || rep.Name != "web-1" {
			t.Errorf("SNI %q: certificate %q backend %q, want %q web-1", sni, cn, rep.Name, want)
		}
	}
	// Not TLS at all on the HTTPS port: the TLS server refuses it, the proxy stays up.
	plain, err := net.Dial("tcp", h.https)
	if err != nil {
		t.Fatal(err)
	}
	_ = plain.SetDeadline(time.Now().Add(3 * time.Second))
	_, _ = io.WriteString(plain, "GET / HTTP/1.1\r\nHost: vault.example.com\r\n\r\n")
	_, _ = io.ReadAll(plain)
	plain.Close()
	if _, rep, _ := get(t, c, "https://"+h.https+"/", "vault.example.com"); rep.Name != "vault-1" {
		t.Errorf("after a plain-text client: %+v", rep)
	}
}

// trickleConn writes one byte at a time, each its own TCP segment.
type trickleConn struct{ net.Conn }

func (c *trickleConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		time.Sleep(time.Millisecond)
	}
	return len(p), nil
}
