package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"

	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// The policy the differential table cannot hold (its answers differ between HTTP and HTTPS,
// or need several backends), end to end through a real proxy and real backends, over HTTP/1.1
// (event loops), HTTPS and HTTP/2.

// servingPathOf is a serving path a policy test runs on: the server's options, and whether the
// client speaks HTTP/2 (over TLS) rather than HTTP/1.1 in clear.
type servingPathOf struct {
	name string
	so   ServerOptions
	h2   bool
}

var (
	pathLoops      = servingPathOf{"loops", ServerOptions{EventLoops: 1}, false}
	pathGoroutines = servingPathOf{"goroutines", ServerOptions{EventLoops: -1}, false}
	pathNetHTTP    = servingPathOf{"net/http", ServerOptions{NetHTTPOnly: true}, false}
	pathHTTP2      = servingPathOf{"http2", ServerOptions{}, true}
)

// client is a client of the path and the base URL of h it reaches the path through.
func (p servingPathOf) client(h *harness) (*http.Client, string) {
	if p.h2 {
		return h2Client(&tls.Config{InsecureSkipVerify: true}), "https://" + h.https
	}
	return &http.Client{}, "http://" + h.http
}

func noRedirects(c *http.Client) *http.Client {
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c
}

func TestPolicyRedirectsAndHSTS(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("app", echo.Handler("app-1", "app"), "")
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "secure.example.com", "example.com", "www.example.com"))
	a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
	if p := h.compile(
		rt.Ingress("ns", "secure", 1, rt.Rule("secure.example.com", "/", rt.Prefix, "app", 80), rt.TLS("tls", "secure.example.com")),
		rt.Ingress("ns", "root", 2, rt.Rule("root.example.com", "/", rt.Prefix, "app", 80), a("app-root", "/app1")),
		rt.Ingress("ns", "forced", 3, rt.Rule("forced.example.com", "/", rt.Prefix, "app", 80), a("force-ssl-redirect", "true"),
			a("preserve-trailing-slash", "true")),
		rt.Ingress("ns", "www", 4, rt.Rule("example.com", "/", rt.Prefix, "app", 80), a("from-to-www-redirect", "true")),
		rt.Ingress("ns", "temp", 5, rt.Rule("temp.example.com", "/", rt.Prefix, "app", 80),
			a("temporal-redirect", "https://elsewhere.example.org/"), a("permanent-redirect", "https://ignored.example.org/")),
	); len(p) != 1 || !strings.Contains(p[0].Message, "permanent-redirect: ignored") {
		t.Fatalf("problems %v, want the ignored permanent-redirect", p)
	}
	plain := noRedirects(&http.Client{})
	secure := noRedirects(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: true}})
	for _, tc := range []struct {
		name, url, host string
		c               *http.Client
		code            int
		location        string
		hsts            bool
	}{
		{"ssl-redirect by default on a TLS host", "http://" + h.http + "/a/b?c=d", "secure.example.com", plain, 308, "https://secure.example.com/a/b?c=d", false},
		{"ssl-redirect drops a trailing slash", "http://" + h.http + "/a/", "secure.example.com", plain, 308, "https://secure.example.com/a", false},
		{"ACME challenges are not redirected", "http://" + h.http + "/.well-known/acme-challenge/tok", "secure.example.com", plain, 200, "", false},
		{"HTTPS is served, with HSTS", "https://" + h.https + "/a", "secure.example.com", secure, 200, "", true},
		{"HSTS on every HTTPS answer, the proxy's own too", "https://" + h.https + "/", "nothing.example.com", secure, 404, "", true},
		{"no redirect without TLS", "http://" + h.http + "/x", "root.example.com", plain, 200, "", false},
		{"app-root", "http://" + h.http + "/", "root.example.com", plain, 302, "http://root.example.com/app1", false},
		{"app-root over HTTPS", "https://" + h.https + "/", "root.example.com", secure, 302, "https://root.example.com/app1", true},
		{"force-ssl-redirect without TLS, trailing slash kept", "http://" + h.http + "/k/", "forced.example.com", plain, 308, "https://forced.example.com/k/", false},
		{"from-to-www: www. goes to the Ingress's host", "http://" + h.http + "/p/?q=1", "www.example.com", plain, 308, "http://example.com/p/?q=1", false},
		{"from-to-www: the port the client used is kept", "http://" + h.http + "/p/", "www.example.com:8080", plain, 308, "http://example.com:8080/p", false},
		{"from-to-www: the host itself is served", "http://" + h.http + "/p", "example.com", plain, 200, "", false},
		{"temporal-redirect wins over permanent-redirect", "http://" + h.http + "/x", "temp.example.com", plain, 302, "https://elsewhere.example.org/", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, _ := get(t, tc.c, tc.url, tc.host)
			if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location {
				t.Errorf("%d %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tc.code, tc.location)
			}
			if got := resp.Header.Get("Strict-Transport-Security"); (got != "") != tc.hsts || (tc.hsts && got != "max-age=31536000; includeSubDomains") {
				t.Errorf("Strict-Transport-Security %q, want it: %v", got, tc.hsts)
			}
		})
	}
}

func TestPolicyHSTSReplacesTheBackendsAndCanBeOff(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Strict-Transport-Security", "max-age=1")
	}), "")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "app", 80)))
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, _, _ := get(t, c, "https://"+h.https+"/", "a")
	if v := resp.Header.Values("Strict-Transport-Security"); len(v) != 1 || v[0] != "max-age=31536000; includeSubDomains" {
		t.Errorf("HSTS %q, want the fleet's only", v)
	}
	off := false
	h.in.Config.HTTP = &proxyconfig.HTTP{HSTS: &proxyconfig.HSTS{Enabled: &off}}
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "app", 80)))
	resp, _, _ = get(t, c, "https://"+h.https+"/", "a")
	if v := resp.Header.Values("Strict-Transport-Security"); len(v) != 1 || v[0] != "max-age=1" {
		t.Errorf("HSTS off: %q, want the backend's own", v)
	}
}

func TestPolicyCanary(t *testing.T) {
	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("stable", echo.Handler("stable-1", "stable"), "")
			h.backend("canary", echo.Handler("canary-1", "canary"), "")
			a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
			if probs := h.compile(
				rt.Ingress("ns", "main", 1, rt.Rule("c.example.com", "/", rt.Prefix, "stable", 80), a("response-headers-set", "X-Policy: main")),
				rt.Ingress("ns", "canary", 2, rt.Rule("c.example.com", "/", rt.Prefix, "canary", 80),
					a("canary", "true"), a("canary-by-header", "X-Canary"), a("canary-by-cookie", "canary"), a("canary-weight", "30")),
			); len(probs) != 0 {
				t.Fatal(probs)
			}
			c, base := p.client(h)
			ask := func(hdr ...string) (string, http.Header) {
				resp, rep, _ := get(t, c, base+"/", "c.example.com", hdr...)
				return rep.Name, resp.Header
			}
			for _, tc := range []struct {
				hdr  []string
				want string
			}{
				{[]string{"X-Canary", "always"}, "canary-1"},
				{[]string{"X-Canary", "never", "Cookie", "canary=always"}, "stable-1"}, // the header first
				{[]string{"Cookie", "a=b; canary=always"}, "canary-1"},
				{[]string{"Cookie", "canary=never"}, "stable-1"},
			} {
				for i := 0; i < 20; i++ {
					if got, hd := ask(tc.hdr...); got != tc.want || hd.Get("X-Policy") != "main" {
						t.Fatalf("%v: %s (X-Policy %q), want %s with the main Ingress's policy", tc.hdr, got, hd.Get("X-Policy"), tc.want)
					}
				}
			}
			// By weight: 30 of 100; 400 requests put the count far from 0 and 400.
			n := 0
			for i := 0; i < 400; i++ {
				if got, _ := ask("X-Canary", "other"); got == "canary-1" {
					n++
				}
			}
			if n < 70 || n > 170 {
				t.Errorf("canary took %d of 400 requests by weight 30/100", n)
			}
		})
	}
}

func TestPolicyTimeoutsPerRoute(t *testing.T) {
	h := newHarness(t, Options{UpstreamTimeout: 10 * time.Second})
	h.backend("slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
	}), "")
	h.compile(
		rt.Ingress("ns", "fast", 1, rt.Rule("fast.example.com", "/", rt.Prefix, "slow", 80), rt.Annotation("portico.dev/proxy-read-timeout", "1")),
		rt.Ingress("ns", "patient", 2, rt.Rule("patient.example.com", "/", rt.Prefix, "slow", 80)),
	)
	start := time.Now()
	if resp, _, _ := get(t, &http.Client{}, "http://"+h.http+"/", "fast.example.com"); resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("proxy-read-timeout 1: %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d > 1400*time.Millisecond {
		t.Errorf("504 after %v, want about 1s", d)
	}
	if resp, _, _ := get(t, &http.Client{}, "http://"+h.http+"/", "patient.example.com"); resp.StatusCode != http.StatusOK {
		t.Errorf("the proxy's timeout: %d, want 200", resp.StatusCode)
	}
	// The fleet's default (spec.http.proxyReadTimeout) applies where no annotation does.
	h.in.Config.HTTP = &proxyconfig.HTTP{ProxyReadTimeout: "1s"}
	h.compile(h.in.Ingresses...)
	start = time.Now()
	if resp, _, _ := get(t, &http.Client{}, "http://"+h.http+"/", "patient.example.com"); resp.StatusCode != http.StatusGatewayTimeout ||
		time.Since(start) > 1400*time.Millisecond {
		t.Errorf("the fleet's 1s read timeout: %d after %v, want 504 after about 1s", resp.StatusCode, time.Since(start))
	}
}

// TestPolicyConnectTimeout: a route's proxy-connect-timeout bounds the dial. Only loopback is
// allowed, where a dial is refused or completes at once, except to a listener whose accept
// queue is full: the kernel then drops the SYN and the dial waits.
func TestPolicyConnectTimeout(t *testing.T) {
	addr := fullListener(t)
	h := newHarness(t, Options{DialTimeout: 10 * time.Second})
	h.addEndpoints("full", "", addr.Port, "127.0.0.1")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "full", 80), rt.Annotation("portico.dev/proxy-connect-timeout", "1")))
	start := time.Now()
	resp, _, _ := get(t, &http.Client{}, "http://"+h.http+"/", "a")
	if d := time.Since(start); resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusGatewayTimeout || d > 5*time.Second {
		t.Errorf("%d after %v, want 502 or 504 within the route's 1s connect timeout (and its retries)", resp.StatusCode, d)
	}
}

// fullListener listens on loopback with a backlog of one, never accepts, and fills its accept
// queue: a new connection to it waits for the kernel's SYN retries.
func fullListener(t *testing.T) *net.TCPAddr {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	sa, _ := syscall.Getsockname(fd)
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}
	for i := 0; i < 64; i++ {
		c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond)
		if err != nil {
			return addr
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Skip("the accept queue did not fill")
	return nil
}

func TestPolicyProblemsNameTheAnnotation(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("app", echo.Handler("app-1", "app"), "")
	a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
	probs := h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "app", 80),
		a("rewrite-target", "no slash"), a("proxy-body-size", "lots"), a("no-such-key", "1"),
		a("request-headers-set", "Host: evil\nX-Ok: 1"), a("response-headers-set", "X-Resp: yes")))
	var msgs []string
	for _, p := range probs {
		msgs = append(msgs, p.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"portico.dev/rewrite-target", "portico.dev/proxy-body-size", "portico.dev/no-such-key: unknown annotation",
		"portico.dev/request-headers-set: Host cannot be changed here"} {
		if !strings.Contains(all, want) {
			t.Errorf("problems:\n%s\nwant one about %s", all, want)
		}
	}
	// The rest of the Ingress is served, with what is valid of its policy.
	resp, rep, _ := get(t, &http.Client{}, "http://"+h.http+"/x", "a")
	if rep.Name != "app-1" || resp.Header.Get("X-Resp") != "yes" || http.Header(rep.Headers).Get("X-Ok") != "1" || rep.Host != "a" {
		t.Errorf("served %+v, X-Resp %q", rep, resp.Header.Get("X-Resp"))
	}
}

func TestPolicyAffinityCookieAndConsistentHash(t *testing.T) {
	for _, p := range []servingPathOf{pathLoops, pathNetHTTP, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			for i := 1; i <= 3; i++ {
				h.backend("app", echo.Handler("app-"+string(rune('0'+i)), "app"), "")
			}
			a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
			ings := []*networkingv1.Ingress{
				rt.Ingress("ns", "sticky", 1, rt.Rule("sticky.example.com", "/", rt.Prefix, "app", 80), a("affinity", "cookie"),
					a("session-cookie-name", "route"), a("session-cookie-path", "/app"), a("session-cookie-max-age", "60"),
					a("session-cookie-samesite", "None")),
				rt.Ingress("ns", "hashed", 2, rt.Rule("hash.example.com", "/", rt.Prefix, "app", 80), a("upstream-hash-by", "$arg_user")),
			}
			if probs := h.compile(ings...); len(probs) != 0 {
				t.Fatal(probs)
			}
			c, base := p.client(h)
			resp, rep, _ := get(t, c, base+"/app", "sticky.example.com")
			cookie := resp.Header.Get("Set-Cookie")
			name, rest, _ := strings.Cut(cookie, "=")
			value, attrs, _ := strings.Cut(rest, ";")
			if name != "route" || attrs != " Path=/app; Max-Age=60; Secure; HttpOnly; SameSite=None" {
				t.Fatalf("Set-Cookie %q", cookie)
			}
			for i := 0; i < 10; i++ {
				resp, again, _ := get(t, c, base+"/app", "sticky.example.com", "Cookie", "route="+value)
				if again.Name != rep.Name || resp.Header.Get("Set-Cookie") != "" {
					t.Fatalf("pinned to %s, request %d went to %s (Set-Cookie %q)", rep.Name, i, again.Name, resp.Header.Get("Set-Cookie"))
				}
			}

			// The hash: a user always reaches the same endpoint, users spread over all.
			owner := func() map[string]string {
				m := map[string]string{}
				for u := 0; u < 60; u++ {
					user := "user" + string(rune('a'+u%26)) + string(rune('a'+u/26))
					_, rep, _ := get(t, c, base+"/x?user="+user+"&z=1", "hash.example.com")
					m[user] = rep.Name
				}
				return m
			}
			before := owner()
			spread := map[string]int{}
			for _, e := range before {
				spread[e]++
			}
			if len(spread) != 3 {
				t.Errorf("60 users on %v, want all three endpoints", spread)
			}
			if again := owner(); !maps.Equal(again, before) {
				t.Errorf("the same users reached other endpoints: %v then %v", before, again)
			}
			// An endpoint goes: only its users move.
			h.in.EndpointSlices = h.in.EndpointSlices[:2] // the third backend's endpoint
			h.compile(ings...)
			after := owner()
			moved := 0
			for u, e := range before {
				if after[u] != e {
					moved++
				}
			}
			lost := ""
			for e := range spread {
				found := false
				for _, a := range after {
					found = found || a == e
				}
				if !found {
					lost = e
				}
			}
			for u, e := range before {
				if e != lost && after[u] != e {
					t.Errorf("user %s of %s (still there) moved to %s when %s went", u, e, after[u], lost)
				}
			}
			if moved != spread[lost] || lost == "" {
				t.Errorf("%d users moved, want the %d of the endpoint that went (%q)", moved, spread[lost], lost)
			}
		})
	}
}

func TestPolicyNextUpstream(t *testing.T) {
	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{UpstreamTimeout: 10 * time.Second}, p.so)
			h.backend("app", echo.Handler("good", "app"), "")
			h.backend("app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					time.Sleep(1500 * time.Millisecond)
				}
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
			}), "")
			a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
			if probs := h.compile(
				rt.Ingress("ns", "retry", 1, rt.Rule("retry.example.com", "/", rt.Prefix, "app", 80),
					a("proxy-next-upstream", "error timeout http_503"), a("proxy-read-timeout", "1")),
				rt.Ingress("ns", "post", 2, rt.Rule("post.example.com", "/", rt.Prefix, "app", 80),
					a("proxy-next-upstream", "http_503 non_idempotent")),
				rt.Ingress("ns", "off", 3, rt.Rule("off.example.com", "/", rt.Prefix, "app", 80), a("proxy-next-upstream", "off")),
				rt.Ingress("ns", "once", 4, rt.Rule("once.example.com", "/", rt.Prefix, "app", 80),
					a("proxy-next-upstream", "http_503"), a("proxy-next-upstream-tries", "1")),
			); len(probs) != 0 {
				t.Fatal(probs)
			}
			c, base := p.client(h)
			c.Timeout = 10 * time.Second
			do := func(method, host, path string) int {
				req, _ := http.NewRequest(method, base+path, nil)
				req.Host = host
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s%s: %v", method, host, path, err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			count := func(method, host, path string) (ok, bad int) {
				for i := 0; i < 12; i++ {
					if do(method, host, path) == 200 {
						ok++
					} else {
						bad++
					}
				}
				return ok, bad
			}
			if ok, bad := count("GET", "retry.example.com", "/"); bad != 0 {
				t.Errorf("http_503: %d of %d GETs got the 503", bad, ok+bad)
			}
			if _, bad := count("POST", "retry.example.com", "/"); bad == 0 {
				t.Error("a POST was sent again without non_idempotent")
			}
			if ok, bad := count("POST", "post.example.com", "/"); bad != 0 {
				t.Errorf("non_idempotent: %d of %d POSTs (no body) got the 503", bad, ok+bad)
			}
			if _, bad := count("GET", "off.example.com", "/"); bad == 0 {
				t.Error("off: no GET got the 503")
			}
			if _, bad := count("GET", "once.example.com", "/"); bad == 0 {
				t.Error("tries 1: no GET got the 503")
			}
			// Last: timeouts count towards the slow endpoint's ejection.
			start := time.Now()
			if ok, bad := count("GET", "retry.example.com", "/slow"); bad != 0 {
				t.Errorf("timeout: %d of %d GETs failed", bad, ok+bad)
			}
			if d := time.Since(start); d > 9*time.Second {
				t.Errorf("12 GETs, some waiting out a 1s timeout before another endpoint, took %v", d)
			}
		})
	}
}

// TestPolicySendTimeout: a backend that stops reading a request body fails the request after the
// route's proxy-send-timeout (504), not after the client's patience.
func TestPolicySendTimeout(t *testing.T) {
	for _, p := range []struct {
		name string
		so   ServerOptions
	}{{"goroutines", ServerOptions{EventLoops: -1}}, {"net/http", ServerOptions{NetHTTPOnly: true}}} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.unlimitedBodies()
			h.tcpBackend("deaf", func(c net.Conn) { // reads the head, then nothing
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, _ = c.Read(make([]byte, 1024))
				time.Sleep(10 * time.Second)
			})
			h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "deaf", 80), rt.Annotation("portico.dev/proxy-send-timeout", "1")))
			conn, err := net.Dial("tcp", h.http)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			const size = 64 << 20
			go func() {
				_, _ = fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", size)
				chunk := make([]byte, 1<<20)
				for i := 0; i < size/len(chunk); i++ {
					if _, err := conn.Write(chunk); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			_ = conn.SetReadDeadline(time.Now().Add(8 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer after %v: %v", time.Since(start), err)
			}
			if resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("%d after %v, want 504", resp.StatusCode, time.Since(start))
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("answered after %v, want about the 1s send timeout", d)
			}
		})
	}
}

func TestPolicyCustomErrorsAndDefaultBackend(t *testing.T) {
	errorPages := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.Header.Get("X-Code"))
		if code == 0 {
			code = 200
		}
		w.Header().Set("X-Error-Page", "yes")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"method": r.Method, "uri": r.RequestURI, "host": r.Host,
			"code": r.Header.Get("X-Code"), "format": r.Header.Get("X-Format"), "original": r.Header.Get("X-Original-URI"),
			"namespace": r.Header.Get("X-Namespace"), "ingress": r.Header.Get("X-Ingress-Name"),
			"service": r.Header.Get("X-Service-Name"), "port": r.Header.Get("X-Service-Port"), "id": r.Header.Get("X-Request-ID")})
	})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.Error(w, "app's own 404", http.StatusNotFound)
		case "/teapot":
			w.WriteHeader(http.StatusTeapot)
		default:
			_, _ = w.Write([]byte("app"))
		}
	})
	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", app, "")
			h.backend("errors", errorPages, "")
			h.in.Services = append(h.in.Services, rt.Service("ns", "gone"))
			a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
			if probs := h.compile(
				rt.Ingress("ns", "shop", 1, rt.Rule("shop.example.com", "/", rt.Prefix, "app", 80),
					a("custom-http-errors", "404,503"), a("default-backend", "errors")),
				rt.Ingress("ns", "fallback", 2, rt.Rule("fallback.example.com", "/", rt.Prefix, "gone", 80), a("default-backend", "errors")),
				rt.Ingress("ns", "nofleet", 3, rt.Rule("nofleet.example.com", "/", rt.Prefix, "app", 80), a("custom-http-errors", "404")),
			); len(probs) != 0 {
				t.Fatal(probs)
			}
			c, base := p.client(h)
			do := func(method, host, path, body string) (int, http.Header, map[string]string, string) {
				var rd io.Reader
				if body != "" {
					rd = strings.NewReader(body)
				}
				req, _ := http.NewRequest(method, base+path, rd)
				req.Host = host
				req.Header.Set("Accept", "text/html")
				resp, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s%s: %v", method, host, path, err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				var m map[string]string
				_ = json.Unmarshal(b, &m)
				return resp.StatusCode, resp.Header, m, string(b)
			}
			for _, method := range []string{"GET", "POST"} {
				body := ""
				if method == "POST" {
					body = "some form"
				}
				code, hdr, m, raw := do(method, "shop.example.com", "/missing?x=1", body)
				want := map[string]string{"method": "GET", "uri": "/?x=1", "host": "shop.example.com", "code": "404", "format": "text/html",
					"original": "/missing?x=1", "namespace": "ns", "ingress": "shop", "service": "app", "port": "80"}
				if code != 404 || hdr.Get("X-Error-Page") != "yes" {
					t.Fatalf("%s /missing: %d %q, want the error page's 404", method, code, raw)
				}
				for k, v := range want {
					if m[k] != v {
						t.Errorf("%s /missing: the error backend got %s %q, want %q (all: %v)", method, k, m[k], v, m)
					}
				}
				if m["id"] == "" {
					t.Errorf("%s /missing: no X-Request-ID", method)
				}
			}
			if code, hdr, _, raw := do("GET", "shop.example.com", "/teapot", ""); code != 418 || hdr.Get("X-Error-Page") != "" {
				t.Errorf("a status not intercepted: %d %q", code, raw)
			}
			if code, _, _, raw := do("GET", "shop.example.com", "/fine", ""); code != 200 || raw != "app" {
				t.Errorf("an answer not intercepted: %d %q", code, raw)
			}
			if code, hdr, m, _ := do("GET", "fallback.example.com", "/x", ""); code != 200 || hdr.Get("X-Error-Page") != "yes" || m["uri"] != "/x" {
				t.Errorf("default-backend for a Service without endpoints: %d %v", code, m)
			}
			if code, hdr, _, raw := do("GET", "nofleet.example.com", "/missing", ""); code != 404 || hdr.Get("X-Error-Page") != "" ||
				!strings.Contains(raw, "app's own 404") {
				t.Errorf("no error backend at all: %d %q, want the app's 404 as it is", code, raw)
			}
		})
	}
}

func TestPolicyMirror(t *testing.T) {
	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			seen := make(chan string, 16)
			h.backend("shadow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen <- r.Method + " " + r.RequestURI + " " + r.Host + " " + r.Header.Get("X-Request-Id")
				http.Error(w, "the shadow's answer is dropped", http.StatusTeapot)
			}), "")
			if probs := h.compile(rt.Ingress("ns", "i", 1, rt.Rule("m.example.com", "/", rt.Prefix, "app", 80),
				rt.Annotation("portico.dev/mirror-target", "http://shadow.ns.svc.cluster.local/$request_uri"))); len(probs) != 0 {
				t.Fatal(probs)
			}
			c, base := p.client(h)
			resp, rep, _ := get(t, c, base+"/m?x=1", "m.example.com", "X-Request-Id", "req-7")
			if resp.StatusCode != 200 || rep.Name != "app-1" {
				t.Fatalf("the route's answer: %d %+v", resp.StatusCode, rep)
			}
			select {
			case got := <-seen:
				if got != "GET /m?x=1 m.example.com req-7" {
					t.Errorf("the mirror got %q", got)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("nothing mirrored")
			}
			// A request with a body is not mirrored.
			req, _ := http.NewRequest(http.MethodPost, base+"/p", strings.NewReader("body"))
			req.Host = "m.example.com"
			if r, err := c.Do(req); err != nil || r.StatusCode != 200 {
				t.Fatalf("POST: %v %v", r, err)
			} else {
				r.Body.Close()
			}
			select {
			case got := <-seen:
				t.Errorf("a request with a body was mirrored: %q", got)
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}
