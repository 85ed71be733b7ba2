package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http/httpguts"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/route"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

func TestHeaderKind(t *testing.T) {
	for name, want := range map[string]hkind{
		"Host": hHost, "content-length": hContentLength, "Transfer-Encoding": hTransferEncoding, "CONNECTION": hConnection,
		"Upgrade": hUpgrade, "Expect": hExpect, "TE": hTE, "Trailer": hTrailer, "Keep-Alive": hKeepAlive,
		"Proxy-Connection": hProxyConnection, "Proxy-Authenticate": hProxyAuthenticate, "Proxy-Authorization": hProxyAuthorization,
		"X-Forwarded-For": hXForwardedFor, "X-Forwarded-Host": hXForwardedHost, "X-Forwarded-Proto": hXForwardedProto,
		"X-Forwarded-Port": hXForwardedPort, "Forwarded": hForwarded, "X-Request-Id": hXRequestID, "Cookie": hCookie,
		"User-Agent": hUserAgent, "Server": hServer, "Date": hDate, "HTTP2-Settings": hHTTP2Settings,
		"X-Other": hOther, "Hosts": hOther, "Content-Type": hOther,
	} {
		if got := headerKind([]byte(name)); got != want {
			t.Errorf("headerKind(%q) = %d, want %d", name, got, want)
		}
	}
}

// FuzzRequestHead checks the fast path's parser against net/http's: whatever it accepts,
// http.ReadRequest reads the same way (method, target, path, Host, length, close, headers), and
// net/http's server would not refuse it.
func FuzzRequestHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x?y=1 HTTP/1.1\r\nHost: a.example.com:80\r\nContent-Length: 5\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n\r\n",
		"GET /a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\nX-Empty:\r\nX-Request-Id: \r\n\r\n",
		"GET /?q=a\tb HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
		"GET //x/../y HTTP/1.1\r\nHost: a\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		n := headEnd(in)
		if n <= 0 {
			return
		}
		var h reqHead
		if !parseRequestHead(append([]byte(nil), in[:n]...), &h) {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in[:n])))
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", in[:n], err)
		}
		if !httpguts.ValidHostHeader(r.Host) || len(r.Header["Host"]) > 0 {
			t.Fatalf("fast path took Host %q", r.Host)
		}
		wantLength := h.contentLength
		if h.chunked {
			wantLength = -1
			if len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
				t.Fatalf("%q: fast path chunked, net/http %q", in[:n], r.TransferEncoding)
			}
		}
		if r.Method != string(h.method) || r.RequestURI != string(h.target) || r.URL.Path != string(h.route) ||
			r.Host != string(h.host) || r.ContentLength != wantLength || r.Close != h.close {
			t.Fatalf("%q: net/http %s %s path %q host %q length %d close %v; fast path %s %s path %q host %q length %d close %v",
				in[:n], r.Method, r.RequestURI, r.URL.Path, r.Host, r.ContentLength, r.Close,
				h.method, h.target, h.route, h.host, h.contentLength, h.close)
		}
		// Every header net/http sees, the fast path sees with the same value, in order.
		got := http.Header{}
		for _, l := range h.lines {
			if l.kind != hHost && l.kind != hTransferEncoding { // net/http keeps neither in r.Header
				name := http.CanonicalHeaderKey(string(h.buf[l.start:l.nameEnd]))
				got[name] = append(got[name], string(h.buf[l.vs:l.ve]))
			}
		}
		for k, v := range r.Header {
			if strings.Join(got[k], "\x00") != strings.Join(v, "\x00") {
				t.Fatalf("%q: header %s: net/http %q, fast path %q", in[:n], k, v, got[k])
			}
		}
		if len(got) != len(r.Header) {
			t.Fatalf("%q: headers: net/http %v, fast path %v", in[:n], r.Header, got)
		}
	})
}

// tcpBackend runs serve on each connection accepted on 127.0.0.1 (closing it after) and
// declares Service name with the listener as the endpoint.
func (h *harness) tcpBackend(name string, serve func(net.Conn)) { h.tcpBackendAs(name, "", serve) }

// tcpBackendAs is tcpBackend with the Service port's appProtocol (h2c: spoken to over HTTP/2).
func (h *harness) tcpBackendAs(name, appProtocol string, serve func(net.Conn)) {
	h.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	h.tcpBackendOn(ln, name, appProtocol, serve)
}

// tcpBackendOn is tcpBackendAs on a listener of the test's (on 127.0.0.1).
func (h *harness) tcpBackendOn(ln net.Listener, name, appProtocol string, serve func(net.Conn)) {
	h.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
			}()
		}
	}()
	h.addEndpoints(name, appProtocol, ln.Addr().(*net.TCPAddr).Port, "127.0.0.1")
}

// rawBackend serves each request read from a connection with answer, which writes the response
// bytes itself. It declares Service name with it as the endpoint.
func (h *harness) rawBackend(name string, answer func(r *http.Request, body []byte, w *bufio.Writer, conn net.Conn) bool) *atomic.Int64 {
	h.t.Helper()
	var requests atomic.Int64
	h.tcpBackend(name, func(c net.Conn) {
		br, bw := bufio.NewReader(c), bufio.NewWriter(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			body, _ := io.ReadAll(r.Body)
			requests.Add(1)
			keep := answer(r, body, bw, c)
			if bw.Flush() != nil || !keep {
				return
			}
		}
	})
	return &requests
}

// clientConn dials addr for a test's requests, with a 10-second deadline, closed at its end.
func clientConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	return conn, bufio.NewReader(conn)
}

// exchange sends raw request bytes on one connection and reads n responses.
func exchange(t *testing.T, addr, raw string, n int) ([]*http.Response, []string, net.Conn) {
	t.Helper()
	conn, br := clientConn(t, addr)
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	var resps []*http.Response
	var bodies []string
	for i := 0; i < n; i++ {
		method := http.MethodGet
		if strings.HasPrefix(raw, "HEAD") {
			method = http.MethodHead
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("response %d to %q: %v", i, raw, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
		resps, bodies = append(resps, resp), append(bodies, string(b))
	}
	return resps, bodies, conn
}

func handoffs(h *harness) float64 {
	return testutil.ToFloat64(h.handler.metrics.Handoffs.WithLabelValues("request"))
}

func TestFastPathTakesCommonRequestsAndHandsOffTheRest(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("echo", echo.Handler("echo-1", "echo"), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "echo", 80)))

	// Pipelined keep-alive requests, one with a body: answered in order, all on the fast path.
	resps, bodies, _ := exchange(t, h.http, "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"+
		"GET /c?x=1 HTTP/1.1\r\nHost: h\r\nX-Request-Id: r-1\r\n\r\n"+
		"GET /a%2Fb?q=%zz HTTP/1.1\r\nHost: h\r\n\r\n"+
		"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n", 5)
	for i, want := range []string{`"uri":"/a"`, `"bodySize":5`, `"uri":"/c?x=1"`, `"uri":"/a%2Fb?q=%zz"`, `"bodySize":5`} {
		if resps[i].StatusCode != 200 || !strings.Contains(bodies[i], want) {
			t.Errorf("pipelined response %d: %d %s, want %s", i, resps[i].StatusCode, bodies[i], want)
		}
	}
	if n := handoffs(h); n != 0 {
		t.Fatalf("%v connections handed off for fast-path requests", n)
	}

	// A request followed by the start of the next: the first answer does not wait for the rest.
	conn, err := net.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprint(conn, "GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two HTTP/1.1\r\nHo")
	if r, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil || r.StatusCode != 200 {
		t.Fatalf("answer to a request followed by half of the next: %v %v", r, err)
	}

	// Requests outside the fast path's subset, alone and after a fast one on the same
	// connection: net/http answers them, with nothing lost.
	for _, tc := range []struct{ name, req, want string }{
		{"HTTP/1.0", "GET /old HTTP/1.0\r\nHost: h\r\n\r\n", `"uri":"/old"`},
		{"large head", "GET /big HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("x", 10000) + "\r\n\r\n", `"uri":"/big"`},
	} {
		before := handoffs(h)
		resps, bodies, _ := exchange(t, h.http, "GET /first HTTP/1.1\r\nHost: h\r\n\r\n"+tc.req, 2)
		last := len(resps) - 1
		if resps[0].StatusCode != 200 || resps[last].StatusCode != 200 || !strings.Contains(bodies[last], tc.want) {
			t.Errorf("%s: %d %d %s, want 200 and %s", tc.name, resps[0].StatusCode, resps[last].StatusCode, bodies[last], tc.want)
		}
		if handoffs(h) != before+1 {
			t.Errorf("%s: not handed off", tc.name)
		}
	}

	// Expect: 100-continue is the fast path's: one 100 Continue from the proxy, the header not
	// forwarded, the connection kept.
	before := handoffs(h)
	resps, bodies, _ = exchange(t, h.http, "PUT /e HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok"+
		"GET /after HTTP/1.1\r\nHost: h\r\n\r\n", 3)
	if resps[0].StatusCode != 100 || resps[1].StatusCode != 200 || !strings.Contains(bodies[1], `"bodySize":2`) ||
		strings.Contains(bodies[1], "Expect") || resps[2].StatusCode != 200 || handoffs(h) != before {
		t.Errorf("expect: %d %d %s %d (handoffs %v); want 100, 200 without Expect upstream, 200, none handed off",
			resps[0].StatusCode, resps[1].StatusCode, bodies[1], resps[2].StatusCode, handoffs(h)-before)
	}

	// net/http answers malformed requests as it always does.
	for _, raw := range []string{"GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"} {
		resps, _, _ := exchange(t, h.http, raw, 1)
		if resps[0].StatusCode != 400 {
			t.Errorf("%q: %d, want 400", raw, resps[0].StatusCode)
		}
	}
}

func TestFastPathResponseFraming(t *testing.T) {
	h := newHarness(t, Options{})
	var closes atomic.Int64
	h.rawBackend("raw", func(r *http.Request, _ []byte, w *bufio.Writer, _ net.Conn) bool {
		switch r.URL.Path {
		case "/chunked":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nContent-Length: 99\r\n\r\n"+
				"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n")
		case "/until-close":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
			closes.Add(1)
			return false
		case "/head":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nServer: raw\r\n\r\n")
		case "/204":
			fmt.Fprint(w, "HTTP/1.1 204 No Content\r\n\r\n")
		case "/304":
			fmt.Fprint(w, "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n")
		case "/early-hints":
			fmt.Fprint(w, "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case "/same-length-twice":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
		case "/conflicting-length":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!")
			return false
		case "/hop":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nUpgrade: nothing\r\nContent-Length: 2\r\n\r\nok")
			closes.Add(1)
			return false
		case "/garbage":
			fmt.Fprint(w, "HTTQ/9 what\r\n\r\n")
			return false
		case "/bare-lf":
			fmt.Fprint(w, "HTTP/1.1 200 OK\nContent-Length: 2\nX-A: 1\n\nok")
		case "/big-head":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("b", 20000)+"\r\nContent-Length: 2\r\n\r\nok")
		case "/http10":
			fmt.Fprint(w, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
			return false
		}
		return true
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "raw", 80)))
	get := func(method, path string) (*http.Response, string) {
		resps, bodies, _ := exchange(t, h.http, method+" "+path+" HTTP/1.1\r\nHost: h\r\n\r\n", 1)
		return resps[0], bodies[0]
	}

	resp, body := get("GET", "/chunked")
	if body != "hello world" || resp.Trailer.Get("X-Sum") != "11" || len(resp.TransferEncoding) != 1 || resp.Header.Get("Content-Length") != "" {
		t.Errorf("chunked: %q trailer %v te %v header %v", body, resp.Trailer, resp.TransferEncoding, resp.Header)
	}
	resp, body = get("GET", "/until-close")
	if body != "all of it" || !resp.Close {
		t.Errorf("body until close: %q close=%v", body, resp.Close)
	}
	resp, body = get("HEAD", "/head")
	if body != "" || resp.ContentLength != 1234 || resp.Header.Get("Server") != "raw" {
		t.Errorf("HEAD: %q length %d server %q", body, resp.ContentLength, resp.Header.Get("Server"))
	}
	if resp, _ = get("GET", "/204"); resp.StatusCode != 204 || resp.Header.Get("Server") != "portico" || resp.Header.Get("Date") == "" {
		t.Errorf("204: %d %v", resp.StatusCode, resp.Header)
	}
	if resp, _ = get("GET", "/304"); resp.StatusCode != 304 || resp.Header.Get("Etag") != `"x"` {
		t.Errorf("304: %d %v", resp.StatusCode, resp.Header)
	}
	resps, bodies, _ := exchange(t, h.http, "GET /early-hints HTTP/1.1\r\nHost: h\r\n\r\n", 2)
	if resps[0].StatusCode != 103 || resps[0].Header.Get("Link") == "" || resps[1].StatusCode != 200 || bodies[1] != "ok" {
		t.Errorf("103 then 200: %v %v %q", resps[0].Status, resps[1].Status, bodies[1])
	}
	if resp, body = get("GET", "/same-length-twice"); body != "ok" || len(resp.Header["Content-Length"]) != 1 {
		t.Errorf("repeated equal Content-Length: %q %v", body, resp.Header)
	}
	if resp, body = get("GET", "/conflicting-length"); resp.StatusCode != 502 || !strings.Contains(body, "upstream ns/raw:80 failed") {
		t.Errorf("conflicting Content-Length: %d %q", resp.StatusCode, body)
	}
	resp, _ = get("GET", "/hop")
	for _, k := range []string{"X-Secret", "Keep-Alive", "Upgrade"} {
		if resp.Header.Get(k) != "" {
			t.Errorf("hop-by-hop %s passed: %v", k, resp.Header)
		}
	}
	if resp.Close {
		t.Error("the backend's Connection: close reached the client")
	}
	if resp, _ = get("GET", "/garbage"); resp.StatusCode != 502 {
		t.Errorf("malformed response: %d, want 502", resp.StatusCode)
	}
	if resp, body = get("GET", "/bare-lf"); body != "ok" || resp.Header.Get("X-A") != "1" {
		t.Errorf("bare LF line ends: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if resp, body = get("GET", "/big-head"); body != "ok" || len(resp.Header.Get("X-Big")) != 20000 {
		t.Errorf("head larger than the buffer: %d %q", resp.StatusCode, body)
	}
	if resp, body = get("GET", "/http10"); resp.StatusCode != 200 || body != "ok" || resp.ProtoMinor != 1 {
		t.Errorf("HTTP/1.0 backend: %d %q %s", resp.StatusCode, body, resp.Proto)
	}
	if closes.Load() != 2 {
		t.Errorf("backend closed %d connections, want 2", closes.Load())
	}
}

func TestFastPathRetriesConnectionsTheBackendClosed(t *testing.T) {
	h := newHarness(t, Options{})
	// A backend that closes each connection shortly after answering, without saying so: the
	// proxy's pooled connection is dead when the next request comes.
	requests := h.rawBackend("flaky", func(r *http.Request, _ []byte, w *bufio.Writer, c net.Conn) bool {
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		_ = w.Flush()
		time.Sleep(20 * time.Millisecond)
		return false
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "flaky", 80)))
	c := &http.Client{}
	for i := 0; i < 10; i++ {
		resp, _, body := get(t, c, "http://"+h.http+"/", "h")
		if resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := requests.Load(); n != 10 {
		t.Errorf("backend answered %d requests, want 10 (each once)", n)
	}
	// A POST is not repeated (the backend may have run it), so its pooled connection is
	// checked before use instead.
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest(http.MethodPost, "http://"+h.http+"/", strings.NewReader("x"))
		req.Host = "h"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %d: %d", i, resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFastPathClientTimeouts: a client that sends half a head is closed after ReadHeaderTimeout,
// an idle keep-alive connection after IdleTimeout (up to an eighth late: deadlines move
// lazily), and a busy keep-alive connection outlives IdleTimeout.
func TestFastPathClientTimeouts(t *testing.T) {
	const header, idle = 400 * time.Millisecond, 800 * time.Millisecond
	h := newHarnessWith(t, Options{}, ServerOptions{ReadHeaderTimeout: header, IdleTimeout: idle})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "svc", 80)))
	const slop = 150 * time.Millisecond // scheduling on a loaded machine
	closedWithin := func(what string, conn net.Conn, br *bufio.Reader, min, max time.Duration) {
		t.Helper()
		start := time.Now()
		_ = conn.SetReadDeadline(start.Add(5 * time.Second))
		if _, err := br.ReadByte(); err == nil {
			t.Fatalf("%s: the proxy sent something", what)
		}
		if d := time.Since(start); d < min || d > max {
			t.Errorf("%s: closed after %v, want %v to %v", what, d, min, max)
		}
	}
	request := func(conn net.Conn, br *bufio.Reader) { t.Helper(); getOn(t, conn, br) }
	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.Dial("tcp", h.http)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, bufio.NewReader(conn)
	}

	conn, br := dial()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\n"); err != nil {
		t.Fatal(err)
	}
	closedWithin("half a head", conn, br, header-slop/3, header+header/8+slop)

	conn, br = dial()
	request(conn, br)
	closedWithin("idle after a request", conn, br, idle-slop/3, idle+idle/8+slop)

	conn, br = dial()
	for end := time.Now().Add(2 * idle); time.Now().Before(end); time.Sleep(idle / 4) {
		request(conn, br)
	}
	request(conn, br) // still open
}

// TestIdleConnectionsGiveBuffersBack: keep-alive connections idle past idleRelease give their
// read and write buffers back: a thousand of them cost the proxy less than 12 KiB each, its
// goroutine's stack included (with their buffers they held 12 KiB in buffers alone), and each
// serves its next request; so does an idle HTTPS connection (which keeps its read buffer).
func TestIdleConnectionsGiveBuffersBack(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "svc", 80)))
	request := func(conn net.Conn) {
		t.Helper()
		getOn(t, conn, bufio.NewReaderSize(conn, 16)) // 16: the smallest reader, dropped after
	}
	inUse := heapAndStacksInUse
	const n = 1000
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	request(dialed(t, h.http, &conns)) // warm: upstream connection, pools, metric series
	tc, err := tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, tc)
	request(tc)
	before := inUse()
	for i := 1; i < n; i++ {
		request(dialed(t, h.http, &conns))
	}
	// Released 1 to 2 idleRelease after the answer; a loaded machine may take longer.
	time.Sleep(2 * idleRelease)
	per := (inUse() - before) / (n - 1)
	for end := time.Now().Add(5 * time.Second); per > 12<<10 && time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		per = (inUse() - before) / (n - 1)
	}
	t.Logf("%d idle keep-alive connections: %d bytes each (the client's side included)", n-1, per)
	if per > 12<<10 {
		t.Errorf("an idle connection costs %d bytes, want under %d", per, 12<<10)
	}
	for _, c := range conns[:10] {
		request(c)
	}
	request(tc)
}

// slowBackend declares Service name served by a backend that answers "late" after wait, or
// sends how long it waited on the channel returned when the request is cancelled first.
func (h *harness) slowBackend(name string, wait time.Duration) <-chan time.Duration {
	cancelled := make(chan time.Duration, 4)
	h.backend(name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		select {
		case <-r.Context().Done():
			cancelled <- time.Since(start)
		case <-time.After(wait):
			_, _ = io.WriteString(w, "late")
		}
	}), "")
	return cancelled
}

// heapAndStacksInUse is the memory the process uses for heap and goroutine stacks, after
// collecting.
func heapAndStacksInUse() int64 {
	runtime.GC()
	runtime.GC() // a second cycle shrinks the stacks the first found mostly unused
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse)
}

// getOn sends GET / with Host h on conn and reads a 200 answer with br.
func getOn(t *testing.T, conn net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// dialed opens a connection to addr and adds it to conns.
func dialed(t *testing.T, addr string, conns *[]net.Conn) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	*conns = append(*conns, c)
	return c
}

// TestFastPathNoticesAClientThatGivesUp: while a slow backend prepares its answer, a client
// that closes its connection (HTTP or HTTPS) ends the request: the proxy closes the backend
// connection, so the backend's request is cancelled, and counts a 499. A client that waits gets
// the slow answer.
func TestFastPathNoticesAClientThatGivesUp(t *testing.T) {
	h := newHarness(t, Options{})
	cancelled := h.slowBackend("slow", 4*time.Second)
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "slow", 80)))
	if resp, _, body := get(t, &http.Client{}, "http://"+h.http+"/", "h"); resp.StatusCode != 200 || body != "late" {
		t.Fatalf("a client that waits: %d %q", resp.StatusCode, body)
	}
	dials := map[string]func() (net.Conn, error){
		"HTTP": func() (net.Conn, error) { return net.Dial("tcp", h.http) },
		"HTTPS": func() (net.Conn, error) {
			return tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		},
	}
	for name, dial := range dials {
		conn, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // past watchClientAfter
		conn.Close()
		select {
		case d := <-cancelled:
			// The watch starts 1 to 2 s into the wait.
			if d > 3*time.Second {
				t.Errorf("%s: the backend's request ended %v after it began, the client left at 1.5 s", name, d)
			}
		case <-time.After(4 * time.Second):
			t.Fatalf("%s: the backend was not told that the client left", name)
		}
	}
	gone := func() float64 {
		return testutil.ToFloat64(h.handler.metrics.Requests.WithLabelValues("ns/i", "ns/slow:80", "499"))
	}
	for end := time.Now().Add(2 * time.Second); gone() != 2 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond) // counted just after the backend connection is closed
	}
	if n := gone(); n != 2 {
		t.Errorf("requests counted 499: %v, want 2", n)
	}
	// A request pipelined while the first waits is kept and answered after it.
	conn, err := net.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := "GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	for i := 0; i < 2; i++ {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined answer %d: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "late" {
			t.Fatalf("pipelined answer %d: %d %q", i, resp.StatusCode, body)
		}
	}
}

// TestFastPathHeadInParts: a backend that sends the first line of its head at once and the rest
// after more than watchClientAfter gets the full upstream timeout for it.
func TestFastPathHeadInParts(t *testing.T) {
	h := newHarness(t, Options{})
	h.rawBackend("parts", func(r *http.Request, _ []byte, w *bufio.Writer, c net.Conn) bool {
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\n")
		_ = w.Flush()
		time.Sleep(watchClientAfter + watchClientAfter/2)
		fmt.Fprint(w, "Content-Length: 2\r\n\r\nok")
		_ = w.Flush()
		return true
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "parts", 80)))
	if resp, _, body := get(t, &http.Client{}, "http://"+h.http+"/", "h"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
}

// TestFastPathAllocatesNothingPerRequest: a keep-alive GET through the fast path allocates
// nothing in the proxy (the test's backend and client do not either); one allocation per
// request would read as 1.
func TestFastPathAllocatesNothingPerRequest(t *testing.T) {
	h := newHarness(t, Options{})
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	h.tcpBackend("b", func(c net.Conn) {
		b := make([]byte, 4096)
		n := 0
		for {
			k, err := c.Read(b[n:])
			if err != nil {
				return
			}
			n += k
			if n >= 4 && string(b[n-4:n]) == "\r\n\r\n" {
				n = 0
				_, _ = c.Write(answer)
			}
		}
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "b", 80)))
	conn, _ := net.Dial("tcp", h.http)
	defer conn.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	buf := make([]byte, 4096)
	do := func() {
		if _, err := conn.Write(req); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			k, err := conn.Read(buf[n:])
			if err != nil {
				t.Fatal(err)
			}
			n += k
			if n >= 2 && string(buf[n-2:n]) == "ok" {
				return
			}
		}
	}
	for i := 0; i < 1000; i++ {
		do()
	}
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	const n = 20000
	for i := 0; i < n; i++ {
		do()
	}
	runtime.ReadMemStats(&b)
	// A little slack for what the runtime and the proxy do now and then (the Date header's
	// cache once a second, timers).
	if per := float64(b.Mallocs-a.Mallocs) / n; per > 0.05 {
		t.Errorf("%.2f allocations per request, want none", per)
	}
}

func TestFastPathStreamsResponses(t *testing.T) {
	h := newHarness(t, Options{})
	release := make(chan struct{})
	h.rawBackend("stream", func(r *http.Request, _ []byte, w *bufio.Writer, _ net.Conn) bool {
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n6\r\nfirst\n\r\n")
		_ = w.Flush()
		<-release
		fmt.Fprint(w, "7\r\nsecond\n\r\n0\r\n\r\n")
		return true
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "stream", 80)))
	conn, err := net.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(conn, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first event before the second was sent: %q %v", line, err)
	}
	close(release)
}

func TestFastPathUploadWithLength(t *testing.T) {
	h := newHarness(t, Options{})
	h.unlimitedBodies()
	h.backend("up", echo.Handler("up-1", "up"), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "up", 80)))
	const size = 64 << 20
	req, _ := http.NewRequest(http.MethodPut, "http://"+h.http+"/upload", io.LimitReader(zeros{}, size))
	req.ContentLength = size
	req.Host = "h"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"bodySize":`+strconv.Itoa(size)) || handoffs(h) != 0 {
		t.Errorf("upload with Content-Length: %s (handoffs %v)", b, handoffs(h))
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestFastPathEarlyAnswerToUpload(t *testing.T) {
	h := newHarness(t, Options{})
	h.unlimitedBodies()
	// The backend refuses the upload without reading it, and closes.
	h.tcpBackend("strict", func(c net.Conn) {
		_, _ = http.ReadRequest(bufio.NewReader(c))
		fmt.Fprint(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
	})
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "strict", 80)))
	req, _ := http.NewRequest(http.MethodPut, "http://"+h.http+"/", io.LimitReader(zeros{}, 32<<20))
	req.ContentLength = 32 << 20
	req.Host = "h"
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || string(b) != "too large" {
		t.Errorf("early answer: %d %q, want the backend's 413", resp.StatusCode, b)
	}
}

func TestFastPathConnectionClose(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("echo", echo.Handler("echo-1", "echo"), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "echo", 80)))
	resps, _, conn := exchange(t, h.http, "GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 1)
	if !resps[0].Close {
		t.Error("Connection: close not answered with Connection: close")
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("connection still open after Connection: close: %d %v", n, err)
	}
	// A 404 answered by the proxy itself, for a HEAD: no body, keep-alive kept.
	resps, bodies, _ := exchange(t, h.http, "HEAD / HTTP/1.1\r\nHost: nowhere\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 2)
	if resps[0].StatusCode != 404 || bodies[0] != "" || resps[0].ContentLength <= 0 || resps[1].StatusCode != 200 {
		t.Errorf("HEAD 404 then GET: %d %q %d / %d", resps[0].StatusCode, bodies[0], resps[0].ContentLength, resps[1].StatusCode)
	}
}

func TestFastPathShutdownFinishesActiveRequests(t *testing.T) {
	h := newHarness(t, Options{})
	started := make(chan struct{})
	var once sync.Once
	h.backend("slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			once.Do(func() { close(started) })
			time.Sleep(600 * time.Millisecond)
		}
		_, _ = w.Write([]byte("done"))
	}), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "slow", 80)))
	idle, err := net.Dial("tcp", h.http) // an idle keep-alive connection
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	fmt.Fprint(idle, "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	ibr := bufio.NewReader(idle)
	if r, err := http.ReadResponse(ibr, nil); err != nil || r.StatusCode != 200 {
		t.Fatalf("idle connection's first request: %v %v", r, err)
	} else {
		_, _ = io.ReadAll(r.Body)
	}
	result := make(chan string, 1)
	go func() {
		resps, bodies, _ := exchange(t, h.http, "GET /slow HTTP/1.1\r\nHost: h\r\n\r\n", 1)
		result <- fmt.Sprint(resps[0].StatusCode, " ", bodies[0], " close=", resps[0].Close)
	}()
	<-started
	h.cancel() // drain 300ms, then shutdown while /slow is in flight
	if got := <-result; got != "200 done close=true" {
		t.Errorf("in-flight request across shutdown: %s", got)
	}
	_ = idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := ibr.ReadByte(); err == nil {
		t.Error("idle connection not closed by shutdown")
	}
	<-h.done
	h.done <- nil
}

func TestFastPathOverTLS(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("a", echo.Handler("a-1", "a"), "")
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "a-tls", "a.example.com"))
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("a.example.com", "/", rt.Prefix, "a", 80), rt.TLS("a-tls", "a.example.com")))
	conn, err := tls.Dial("tcp", h.https, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// A request for the fast path, then one it hands off (HTTP/1.0): both see HTTPS.
	fmt.Fprint(conn, "GET /fast HTTP/1.1\r\nHost: a.example.com\r\n\r\n"+
		"POST /handed-off HTTP/1.0\r\nHost: a.example.com\r\nContent-Length: 2\r\n\r\nhi")
	br := bufio.NewReader(conn)
	for i, path := range []string{"/fast", "/handed-off"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var rep echo.Reply
		_ = json.NewDecoder(resp.Body).Decode(&rep)
		_, _ = io.Copy(io.Discard, resp.Body)
		hd := http.Header(rep.Headers)
		if rep.URI != path || hd.Get("X-Forwarded-Proto") != "https" || hd.Get("X-Forwarded-Port") != "443" {
			t.Errorf("request %d over TLS HTTP/1.1: %s %v", i, rep.URI, rep.Headers)
		}
	}
	if handoffs(h) != 1 {
		t.Errorf("handoffs %v, want 1 (the HTTP/1.0 request)", handoffs(h))
	}
}

// TestAccessLogPerFleet: the fleet's spec.accessLog turns the access log on and off with the
// table (no restart), every serving path writes the same fields (HTTP/1.1 on the fast path,
// HTTP/1.0 through net/http, HTTP/2), and sampling writes one request in every N but every 5xx.
func TestAccessLogPerFleet(t *testing.T) {
	var buf syncBuffer
	alog := NewAccessLog(&buf)
	h := newHarness(t, Options{AccessLog: alog})
	h.backend("echo", echo.Handler("echo-1", "echo"), "")
	h.in.Services = append(h.in.Services, rt.Service("ns", "empty"))
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "h"))
	ing := rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "echo", 80), rt.Rule("h", "/down", rt.Prefix, "empty", 80), rt.TLS("tls", "h"),
		rt.Annotation("portico.dev/ssl-redirect", "false"))
	h.compile(ing)
	entries := func() []accessEntry {
		alog.mu.Lock()
		_ = alog.f()
		alog.mu.Unlock()
		var es []accessEntry
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if line == "" {
				continue
			}
			var e accessEntry
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			es = append(es, e)
		}
		buf.mu.Lock()
		buf.b.Reset()
		buf.mu.Unlock()
		return es
	}
	h2c := h2Client(&tls.Config{InsecureSkipVerify: true, ServerName: "h"})
	send := func() (bodies []int) {
		resps, bs, _ := exchange(t, h.http, "GET /fast?x=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: ua/1\r\nX-Request-Id: id-1\r\n\r\n"+
			"GET /slow HTTP/1.0\r\nHost: h\r\nUser-Agent: ua/2\r\n\r\n", 2)
		for i, r := range resps {
			if r.StatusCode != 200 {
				t.Fatalf("answer %d: %d", i, r.StatusCode)
			}
			bodies = append(bodies, len(bs[i]))
		}
		req, _ := http.NewRequest("GET", "https://"+h.https+"/two", nil)
		req.Host = "h"
		req.Header.Set("User-Agent", "ua/3")
		resp, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return append(bodies, len(b))
	}

	send()
	if es := entries(); len(es) != 0 {
		t.Fatalf("logged with spec.accessLog off: %+v", es)
	}

	h.in.Config.AccessLog = &proxyconfig.AccessLog{Enabled: true}
	h.compile(ing)
	bodies := send()
	es := entries()
	if len(es) != 3 {
		t.Fatalf("access log: %+v", es)
	}
	for i, want := range []accessEntry{
		{Method: "GET", Host: "h", URI: "/fast?x=1", Proto: "HTTP/1.1", Status: 200, Ingress: "ns/i", Service: "ns/echo:80", RequestID: "id-1", UserAgent: "ua/1"},
		{Method: "GET", Host: "h", URI: "/slow", Proto: "HTTP/1.0", Status: 200, Ingress: "ns/i", Service: "ns/echo:80", UserAgent: "ua/2"},
		{Method: "GET", Host: "h", URI: "/two", Proto: "HTTP/2.0", Status: 200, Ingress: "ns/i", Service: "ns/echo:80", UserAgent: "ua/3"},
	} {
		e := es[i]
		if e.Method != want.Method || e.Host != want.Host || e.URI != want.URI || e.Proto != want.Proto || e.Status != want.Status ||
			e.Ingress != want.Ingress || e.Service != want.Service || e.UserAgent != want.UserAgent || e.Upstream == "" || e.Client == "" ||
			(want.RequestID != "" && e.RequestID != want.RequestID) || e.RequestID == "" || e.Bytes != int64(bodies[i]) ||
			e.UpstreamTime <= 0 || e.Duration < e.UpstreamTime {
			t.Errorf("entry %d: %+v, want %+v with %d bytes and times", i, e, want, bodies[i])
		}
	}

	h.in.Config.AccessLog = &proxyconfig.AccessLog{Enabled: true, OneIn: 10}
	h.compile(ing)
	entries()
	for range 30 {
		exchange(t, h.http, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n", 1)
	}
	exchange(t, h.http, "GET /down HTTP/1.1\r\nHost: h\r\n\r\n", 1)
	es = entries()
	n503 := 0
	for _, e := range es {
		if e.Status == 503 {
			n503++
		}
	}
	if len(es)-n503 != 3 || n503 != 1 {
		t.Errorf("one in 10 of 30 requests and every 5xx: %d logged, %d of them 503", len(es), n503)
	}

	h.in.Config.AccessLog = nil
	h.compile(ing)
	send()
	if es := entries(); len(es) != 0 {
		t.Fatalf("logged after spec.accessLog was removed: %+v", es)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FuzzResponseHead checks the fast path's reading of a backend's response head against
// net/http's: whatever it accepts, http.ReadResponse reads with the same status, framing and
// connection reuse, and the head it sends the client carries the same end-to-end headers and
// parses cleanly.
func FuzzResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nServer: x\r\nDate: today\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: X-A, close\r\nX-A: 1\r\nX-B: 2\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\nX: y\n\nz",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 999\r\nX:\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, in []byte, head bool) {
		c := newH1Conn()
		c.st.backend = &route.Backend{}
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		c.head.method = []byte(method)
		if c.readRawHead(bufio.NewReader(bytes.NewReader(in)), func() {}) != nil {
			return
		}
		var rh respHead
		informational, err := c.parseResponseHead(&rh)
		if err != nil {
			return
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("fast path took %q, net/http refuses it: %v", in, err)
		}
		closes := rh.upClose || rh.body == bodyUntilClose // the connection is not reused
		// net/http keeps a connection whose answer had Content-Length and Transfer-Encoding, or
		// answered a HEAD; the fast path does not (h1core.go).
		_, te, cl := framingHeaders(in)
		if resp.StatusCode != rh.status || (!informational && resp.Close != closes && !((te && cl || head) && closes)) {
			t.Fatalf("%q: net/http status %d close %v; fast path %d close %v", in, resp.StatusCode, resp.Close, rh.status, closes)
		}
		if !informational && rh.body != bodyNone {
			chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"
			if (rh.body == bodyChunked) != chunked || (rh.body == bodyLength && resp.ContentLength != rh.length) ||
				(rh.body == bodyUntilClose && (resp.ContentLength != -1 || chunked)) {
				t.Fatalf("%q: net/http length %d te %v; fast path body %d length %d", in, resp.ContentLength, resp.TransferEncoding, rh.body, rh.length)
			}
		}
		out := string(c.out)
		if !informational {
			out += "\r\n"
		}
		sent, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out)), &http.Request{Method: http.MethodHead})
		if err != nil {
			t.Fatalf("%q: the head sent to the client does not parse: %v\n%q", in, err, out)
		}
		hop := map[string]bool{"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
			"Upgrade": true, "Te": true, "Proxy-Authenticate": true, "Proxy-Authorization": true, "Content-Length": true}
		tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(in)))
		_, _ = tp.ReadLine()
		raw, _ := tp.ReadMIMEHeader() // net/http drops Connection: close from resp.Header
		for _, v := range raw["Connection"] {
			for _, tok := range strings.Split(v, ",") {
				hop[http.CanonicalHeaderKey(strings.TrimSpace(tok))] = true
			}
		}
		for k, v := range resp.Header {
			if !hop[k] && strings.Join(sent.Header[k], "\x00") != strings.Join(v, "\x00") {
				t.Fatalf("%q: header %s: backend %q, sent %q", in, k, v, sent.Header[k])
			}
		}
		for k := range sent.Header {
			if _, ok := resp.Header[k]; !ok && !hop[k] && k != "Server" && k != "Date" {
				t.Fatalf("%q: header %s sent, not from the backend", in, k)
			}
		}
	})
}
