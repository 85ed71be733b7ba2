package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"

	"portico.dev/portico/dataplane/route"
)

// authStandIn is an auth service on 127.0.0.1 that records each request head exactly as it
// arrived (and any body) and answers with the raw response its answer function gives.
type authStandIn struct {
	t      *testing.T
	addr   string
	mu     sync.Mutex
	heads  []string
	bodies []string
	answer func(r *http.Request) string
}

func newAuthStandIn(t *testing.T) *authStandIn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &authStandIn{t: t, addr: ln.Addr().String(), answer: func(*http.Request) string { return answer(200) }}
	var conns sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				go func() { <-done; c.Close() }()
				s.serve(c)
			}()
		}
	}()
	return s
}

// serve reads request heads one after another on a connection (keep-alive), recording each.
func (s *authStandIn) serve(c net.Conn) {
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	for {
		raw.Reset()
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		head := raw.String()
		if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
			head = head[:i+4]
		}
		body, _ := io.ReadAll(req.Body)
		s.mu.Lock()
		s.heads = append(s.heads, head)
		s.bodies = append(s.bodies, string(body))
		answer := s.answer
		s.mu.Unlock()
		if _, err := io.WriteString(c, answer(req)); err != nil {
			return
		}
	}
}

func (s *authStandIn) setAnswer(f func(r *http.Request) string) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

// count is how many requests arrived.
func (s *authStandIn) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.heads)
}

func (s *authStandIn) last() (head, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.heads) == 0 {
		s.t.Fatal("the auth service got no request")
	}
	return s.heads[len(s.heads)-1], s.bodies[len(s.bodies)-1]
}

// answer is a raw response with a status and header lines ("Name: value"), and no body.
func answer(status int, lines ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	for _, l := range lines {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func newAuthHandler(t *testing.T) *Handler {
	return NewHandler(Options{}, NewMetrics(prometheus.NewRegistry()), testr.NewWithInterface(t, testr.Options{Verbosity: 1}))
}

// externalAuth compiles annotations (after the prefix) into an ExternalAuth.
func externalAuth(t *testing.T, ann map[string]string) *route.ExternalAuth {
	t.Helper()
	full := make(map[string]string, len(ann))
	for k, v := range ann {
		full[route.AnnotationPrefix+k] = v
	}
	ea, refuse, problems := route.ExternalAuthOf(full)
	if ea == nil || refuse || len(problems) > 0 {
		t.Fatalf("%v: %v", ann, problems)
	}
	return ea
}

// headerSeq is a request's header fields in order, from "Name: value" lines.
func headerSeq(lines ...string) func(yield func(name, value string) bool) {
	return func(yield func(name, value string) bool) {
		for _, l := range lines {
			name, value, _ := strings.Cut(l, ":")
			if !yield(name, strings.TrimSpace(value)) {
				return
			}
		}
	}
}

// clientRequest is a POST over HTTPS with every kind of header a sub-request must sort out.
func clientRequest(lines ...string) *authInput {
	if lines == nil {
		lines = []string{
			"Host: App.Example:8443",
			"User-Agent: ua/1",
			"Accept: */*",
			"Cookie: _oauth2_proxy=abc",
			"cookie: other=1",
			"Authorization: Bearer tok",
			"Content-Type: text/plain",
			"Content-Length: 5",
			"Connection: keep-alive, X-Hop",
			"X-Hop: 1",
			"Keep-Alive: timeout=5",
			"TE: trailers",
			"Upgrade: websocket",
			"Expect: 100-continue",
			"Proxy-Authorization: Basic eDp5",
			"X-Forwarded-For: 6.6.6.6",
			"X-Forwarded-Host: evil.example",
			"X-Forwarded-Proto: gopher",
			"X-Forwarded-Uri: /public",
			"X-Original-URL: http://evil.example/",
			"X-Original-URI: /public",
			"X-Real-IP: 6.6.6.6",
			"X-Auth-Request-Redirect: http://evil.example/",
			"X-Request-ID: client-id",
			"X-Sent-From: me",
			"X-Auth-Request-User: mallory",
		}
	}
	return &authInput{method: "POST", scheme: "https", host: "App.Example:8443", target: "/a/b?x=1&y=%20z", clientIP: "10.1.2.3",
		requestID: "client-id", header: headerSeq(lines...), route: "app.example/a"}
}

func TestExternalAuthSubRequest(t *testing.T) {
	s := newAuthStandIn(t)
	h := newAuthHandler(t)
	ea := externalAuth(t, map[string]string{"auth-url": "http://" + s.addr + "/auth?check=$scheme",
		"auth-response-headers": "X-Auth-Request-User, X-Auth-Request-Email, X-Auth-Missing"})
	s.setAnswer(func(*http.Request) string {
		return answer(202, "X-Auth-Request-User: alice", "X-Auth-Request-User: again", "X-Auth-Request-Email: alice@example.test",
			"Set-Cookie: a=1; Path=/", "Set-Cookie: b=2; Path=/")
	})
	got := h.authorize(context.Background(), ea, clientRequest())

	// What ingress-nginx's auth location sends (nginx.tmpl): a GET without a body; Host is
	// auth-url's host without its port; the client's headers but the hop-by-hop and framing
	// ones, with X-Original-URL, X-Original-Method, X-Sent-From, X-Real-IP, X-Forwarded-For,
	// X-Auth-Request-Redirect and X-Request-ID set by the proxy. A client's X-Forwarded-* and
	// X-Original-URI are dropped (ingress-nginx lets some through), its X-Auth-Request-User
	// passes (as in ingress-nginx: it is the backend that must not get it).
	wantHead := "GET /auth?check=https HTTP/1.1\r\n" +
		"Host: 127.0.0.1\r\n" +
		"User-Agent: ua/1\r\n" +
		"Accept: */*\r\n" +
		"Authorization: Bearer tok\r\n" +
		"Content-Type: text/plain\r\n" +
		"Cookie: _oauth2_proxy=abc\r\n" +
		"Cookie: other=1\r\n" +
		"X-Auth-Request-Redirect: /a/b?x=1&y=%20z\r\n" +
		"X-Auth-Request-User: mallory\r\n" +
		"X-Forwarded-For: 10.1.2.3\r\n" +
		"X-Original-Method: POST\r\n" +
		"X-Original-URL: https://App.Example:8443/a/b?x=1&y=%20z\r\n" +
		"X-Real-IP: 10.1.2.3\r\n" +
		"X-Request-ID: client-id\r\n" +
		"X-Sent-From: nginx-ingress-controller\r\n" +
		"\r\n"
	if head, body := s.last(); head != wantHead || body != "" {
		t.Errorf("sub-request:\n%s\nbody %q; want:\n%s", head, body, wantHead)
	}
	want := authResult{allow: true,
		upstream: [][2]string{{"X-Auth-Request-User", "alice, again"}, {"X-Auth-Request-Email", "alice@example.test"}, {"X-Auth-Missing", ""}},
		response: [][2]string{{"Set-Cookie", "a=1; Path=/"}, {"Set-Cookie", "b=2; Path=/"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("verdict %+v, want %+v", got, want)
	}
	for status, n := range map[int]int{200: 2, 302: 2, 304: 2, 404: 0, 500: 0, 502: 0} {
		if l := len(got.responseFor(status)); l != n {
			t.Errorf("an answer %d gets %d lines of the auth service's, want %d", status, l, n)
		}
	}

	// auth-method adds X-Original-URI and X-Scheme; auth-request-redirect replaces
	// X-Auth-Request-Redirect; no client header, no User-Agent, no request id: none sent.
	ea = externalAuth(t, map[string]string{"auth-url": "http://" + s.addr + "/v?u=$http_x_user&c=$cookie_s&e=$escaped_request_uri",
		"auth-method": "POST", "auth-request-redirect": "https://app.example/home"})
	in := clientRequest("X-User: a b", "Cookie: s=1")
	in.requestID = ""
	h.authorize(context.Background(), ea, in)
	wantHead = "POST /v?u=a%20b&c=1&e=%2Fa%2Fb%3Fx%3D1%26y%3D%2520z HTTP/1.1\r\n" +
		"Host: 127.0.0.1\r\n" +
		"Content-Length: 0\r\n" +
		"Cookie: s=1\r\n" +
		"X-Auth-Request-Redirect: https://app.example/home\r\n" +
		"X-Forwarded-For: 10.1.2.3\r\n" +
		"X-Original-Method: POST\r\n" +
		"X-Original-URI: /a/b?x=1&y=%20z\r\n" +
		"X-Original-URL: https://App.Example:8443/a/b?x=1&y=%20z\r\n" +
		"X-Real-IP: 10.1.2.3\r\n" +
		"X-Scheme: https\r\n" +
		"X-Sent-From: nginx-ingress-controller\r\n" +
		"X-User: a b\r\n" +
		"\r\n"
	if head, body := s.last(); head != wantHead || body != "" {
		t.Errorf("sub-request with auth-method:\n%s\nbody %q; want:\n%s", head, body, wantHead)
	}
}

func TestExternalAuthVerdicts(t *testing.T) {
	s := newAuthStandIn(t)
	h := newAuthHandler(t)
	h.auth.responseTimeout = 300 * time.Millisecond
	url := "http://" + s.addr + "/auth"
	const signin = "https://login.example/start"
	// ingress-nginx's buildAuthSignURL: rd=$pass_access_scheme://$http_host$escaped_request_uri.
	const location = signin + "?rd=https://App.Example:8443%2Fa%2Fb%3Fx%3D1%26y%3D%2520z"
	wwwAuth := []string{`WWW-Authenticate: Basic realm="one"`, `WWW-Authenticate: Bearer realm="two"`}
	cookie := "Set-Cookie: _oauth2_proxy=; Max-Age=0"
	www := [][2]string{{"WWW-Authenticate", `Basic realm="one"`}, {"WWW-Authenticate", `Bearer realm="two"`}}
	setCookie := [2]string{"Set-Cookie", "_oauth2_proxy=; Max-Age=0"}
	never := make(chan struct{})
	defer close(never)
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		answer string
		want   authResult
	}{
		{"200", nil, answer(200, cookie), authResult{allow: true, response: [][2]string{setCookie}}},
		{"204 with always-set-cookie", map[string]string{"auth-always-set-cookie": "true"}, answer(204),
			authResult{allow: true, always: true}},
		{"401: WWW-Authenticate, no cookie", nil, answer(401, append(wwwAuth, cookie)...), authResult{status: 401, response: www}},
		{"401 with always-set-cookie", map[string]string{"auth-always-set-cookie": "true"}, answer(401, append(wwwAuth, cookie)...),
			authResult{status: 401, response: append(www[:2:2], setCookie)}},
		{"401 with signin: 302, cookie and WWW-Authenticate", map[string]string{"auth-signin": signin}, answer(401, append(wwwAuth, cookie)...),
			authResult{status: 302, location: location, response: append(www[:2:2], setCookie)}},
		{"403", map[string]string{"auth-signin": signin}, answer(403, cookie), authResult{status: 403}},
		{"403 with always-set-cookie", map[string]string{"auth-always-set-cookie": "true"}, answer(403, cookie),
			authResult{status: 403, response: [][2]string{setCookie}}},
		{"500", nil, answer(500), authResult{status: 500}},
		{"500 with always-set-cookie", map[string]string{"auth-always-set-cookie": "true"}, answer(503, cookie),
			authResult{status: 500, response: [][2]string{setCookie}}},
		{"a redirect is not followed", map[string]string{"auth-signin": signin}, answer(302, "Location: /login"), authResult{status: 500}},
		{"404", nil, answer(404), authResult{status: 500}},
		{"not HTTP", nil, "SSH-2.0-OpenSSH_9.2\r\n", authResult{status: 500}},
		{"timeout", nil, "", authResult{status: 500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann := map[string]string{"auth-url": url}
			for k, v := range tc.ann {
				ann[k] = v
			}
			s.setAnswer(func(*http.Request) string {
				if tc.answer == "" {
					<-never
				}
				return tc.answer
			})
			start := time.Now()
			got := h.authorize(context.Background(), externalAuth(t, ann), clientRequest())
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}

	t.Run("unreachable", func(t *testing.T) {
		ea := externalAuth(t, map[string]string{"auth-url": fmt.Sprintf("http://127.0.0.1:%d/auth", deadPort(t))})
		if got := h.authorize(context.Background(), ea, clientRequest()); !reflect.DeepEqual(got, authResult{status: 500}) {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("host not a host name", func(t *testing.T) {
		ea := externalAuth(t, map[string]string{"auth-url": "http://$http_host/auth"})
		in := clientRequest()
		in.host = "evil.example/x"
		if got := h.authorize(context.Background(), ea, in); !reflect.DeepEqual(got, authResult{status: 500}) {
			t.Errorf("got %+v", got)
		}
	})
	t.Run("https, the certificate not verified as in ingress-nginx", func(t *testing.T) {
		var gotHost string
		ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			gotHost = r.Host + " " + r.TLS.ServerName
			w.Header().Set("X-User", "tls")
			w.WriteHeader(200)
		}))
		defer ts.Close()
		_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
		ea := externalAuth(t, map[string]string{"auth-url": "https://localhost:" + port + "/auth", "auth-response-headers": "X-User"})
		got := h.authorize(context.Background(), ea, clientRequest())
		if !got.allow || got.upstream[0][1] != "tls" || gotHost != "localhost localhost" {
			t.Errorf("got %+v, Host and SNI %q", got, gotHost)
		}
	})
}

func TestExternalAuthCache(t *testing.T) {
	s := newAuthStandIn(t)
	h := newAuthHandler(t)
	base := "http://" + s.addr + "/auth"
	withAuth := func(route, authz string, extra ...string) *authInput {
		in := clientRequest(append([]string{"Authorization: " + authz}, extra...)...)
		in.route = route
		return in
	}
	user := 0
	s.setAnswer(func(r *http.Request) string {
		user++
		return answer(202, fmt.Sprintf("X-User: u%d", user))
	})
	ea := externalAuth(t, map[string]string{"auth-url": base, "auth-response-headers": "X-User",
		"auth-cache-key": "$http_authorization", "auth-cache-duration": "202 400ms"})
	check := func(in *authInput, wantUser string, wantCount int) {
		t.Helper()
		got := h.authorize(context.Background(), ea, in)
		if !got.allow || got.upstream[0][1] != wantUser || s.count() != wantCount {
			t.Errorf("got %+v after %d sub-requests; want user %s after %d", got, s.count(), wantUser, wantCount)
		}
	}
	check(withAuth("r1", "a"), "u1", 1)
	check(withAuth("r1", "a", "Cookie: other"), "u1", 1) // a hit: the key is the Authorization
	check(withAuth("r1", "b"), "u2", 2)                  // another key
	check(withAuth("r2", "a"), "u3", 3)                  // another route: its own entries
	time.Sleep(500 * time.Millisecond)
	check(withAuth("r1", "a"), "u4", 4) // expired

	// Not cached: what nginx's proxy_cache does not keep, and statuses not listed.
	for _, tc := range []struct {
		name   string
		lines  []string
		status int
	}{
		{"Set-Cookie", []string{"Set-Cookie: s=1"}, 202},
		{"no-store", []string{"Cache-Control: no-store"}, 202},
		{"private", []string{"Cache-Control: private, max-age=60"}, 202},
		{"max-age=0", []string{"Cache-Control: max-age=0"}, 202},
		{"X-Accel-Expires: 0", []string{"X-Accel-Expires: 0", "Cache-Control: max-age=60"}, 202},
		{"Expires in the past", []string{"Expires: Thu, 01 Jan 1970 00:00:00 GMT"}, 202},
		{"Vary", []string{"Vary: Cookie"}, 202},
		{"a status not listed", nil, 200},
	} {
		s.setAnswer(func(*http.Request) string { return answer(tc.status, tc.lines...) })
		n := s.count()
		for range 2 {
			h.authorize(context.Background(), ea, withAuth("r1", "nc-"+tc.name))
		}
		if s.count() != n+2 {
			t.Errorf("%s: cached (%d sub-requests for 2 requests)", tc.name, s.count()-n)
		}
	}
	// Cached for the time the answer gives, whatever its status: max-age, X-Accel-Expires
	// (winning over Cache-Control), Expires.
	for _, tc := range []struct {
		name  string
		lines []string
	}{
		{"max-age", []string{"Cache-Control: public, max-age=60"}},
		{"X-Accel-Expires", []string{"Cache-Control: no-cache", "X-Accel-Expires: 60"}},
		{"Expires", []string{"Expires: " + time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)}},
	} {
		s.setAnswer(func(*http.Request) string { return answer(403, tc.lines...) })
		n := s.count()
		for range 2 {
			if got := h.authorize(context.Background(), ea, withAuth("r1", "c-"+tc.name)); got.status != 403 {
				t.Errorf("%s: %+v", tc.name, got)
			}
		}
		if s.count() != n+1 {
			t.Errorf("%s: not cached (%d sub-requests for 2 requests)", tc.name, s.count()-n)
		}
	}

	// A cached 401 redirects each request to the signin with its own URL.
	ea = externalAuth(t, map[string]string{"auth-url": base, "auth-signin": "https://login/", "auth-cache-key": "$cookie_session"})
	s.setAnswer(func(*http.Request) string { return answer(401) })
	n := s.count()
	first := h.authorize(context.Background(), ea, clientRequest("Cookie: session=x"))
	in := clientRequest("Cookie: session=x; theme=dark")
	in.target = "/other"
	second := h.authorize(context.Background(), ea, in)
	if s.count() != n+1 || first.status != 302 || second.location != "https://login/?rd=https://App.Example:8443%2Fother" {
		t.Errorf("%d sub-requests; %+v then %+v", s.count()-n, first, second)
	}
}

func TestExternalAuthCacheBounds(t *testing.T) {
	c := newAuthCache(2, 1000)
	now := time.Now()
	entry := func(b byte, size int) *authEntry {
		return &authEntry{key: [32]byte{b}, status: 200, expires: now.Add(time.Minute), size: size}
	}
	c.put(entry(1, 100))
	c.put(entry(2, 100))
	c.get([32]byte{1}, now) // 1 is the most recent now
	c.put(entry(3, 100))
	if _, ok := c.get([32]byte{2}, now); ok {
		t.Error("the least recently used entry stayed past the entry bound")
	}
	if _, ok := c.get([32]byte{1}, now); !ok {
		t.Error("the most recent entry was evicted")
	}
	c.put(entry(4, 950)) // past the byte bound: the others go
	if _, ok := c.get([32]byte{4}, now); !ok || len(c.entries) != 1 || c.bytes != 950 {
		t.Errorf("after a large entry: %d entries, %d bytes", len(c.entries), c.bytes)
	}
	c.put(entry(5, 2000)) // larger than the cache: not kept
	if _, ok := c.get([32]byte{5}, now); ok {
		t.Error("an entry larger than the cache was kept")
	}
	if _, ok := c.get([32]byte{4}, now.Add(time.Hour)); ok || len(c.entries) != 0 || c.bytes != 0 {
		t.Errorf("an expired entry was used or kept: %d entries, %d bytes", len(c.entries), c.bytes)
	}
}

// oauth2ProxyBinary is the oauth2-proxy hack/oauth2-proxy.sh builds, "" when it is not there.
func oauth2ProxyBinary() string {
	p := os.Getenv("PORTICO_OAUTH2_PROXY")
	if p == "" {
		p, _ = filepath.Abs("../../bin/oauth2-proxy")
	}
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// TestExternalAuthOAuth2Proxy runs the real oauth2-proxy on 127.0.0.1 as ingress-nginx's
// oauth2 example uses it (/oauth2/auth, /oauth2/start), with an htpasswd user for a session
// without an identity provider: its OIDC endpoints are unused loopback addresses.
// startOAuth2Proxy runs the real oauth2-proxy on 127.0.0.1 with one htpasswd user
// (alice@example.test, password wonderland) and an identity provider that is never reached,
// and signs in as a browser would: it returns oauth2-proxy's address, the session cookie
// ("_oauth2_proxy=..."), and the provider's base URL. The test is skipped when the binary is not
// built.
func startOAuth2Proxy(t *testing.T) (addr, session, idp string) {
	t.Helper()
	bin := oauth2ProxyBinary()
	if bin == "" && os.Getenv("PORTICO_REQUIRE_OAUTH2_PROXY") != "" {
		t.Fatal("oauth2-proxy is not built (make oauth2-proxy), and make test requires it")
	}
	if bin == "" {
		t.Skip("oauth2-proxy is not built: run hack/oauth2-proxy.sh (or set PORTICO_OAUTH2_PROXY)")
	}
	dir := t.TempDir()
	sum := sha1.Sum([]byte("wonderland"))
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice@example.test:{SHA}"+base64.StdEncoding.EncodeToString(sum[:])+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	idp = fmt.Sprintf("http://127.0.0.1:%d", deadPort(t))
	cmd := exec.Command(bin,
		"--http-address="+addr, "--upstream=static://202",
		"--provider=oidc", "--skip-oidc-discovery", "--oidc-issuer-url="+idp+"/", "--login-url="+idp+"/authorize",
		"--redeem-url="+idp+"/token", "--oidc-jwks-url="+idp+"/jwks", "--redirect-url=http://"+addr+"/oauth2/callback",
		"--client-id=portico", "--client-secret=portico-secret", "--cookie-secret=0123456789abcdef0123456789abcdef",
		"--cookie-secure=false", "--email-domain=*", "--htpasswd-file="+htpasswd, "--set-xauthrequest", "--prefer-email-to-user", "--whitelist-domain=app.example")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("oauth2-proxy:\n%s", logs.String())
		}
	})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for deadline := time.Now().Add(15 * time.Second); ; {
		resp, err := client.Get("http://" + addr + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("oauth2-proxy did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A session cookie from the htpasswd form, as a browser gets it after signing in.
	resp, err := client.PostForm("http://"+addr+"/oauth2/sign_in", url.Values{"username": {"alice@example.test"}, "password": {"wonderland"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "_oauth2_proxy" {
			session = c.Name + "=" + c.Value
		}
	}
	if resp.StatusCode != http.StatusFound || session == "" {
		t.Fatalf("sign-in: %s, cookies %v", resp.Status, resp.Header["Set-Cookie"])
	}
	return addr, session, idp
}

func TestExternalAuthOAuth2Proxy(t *testing.T) {
	addr, session, idp := startOAuth2Proxy(t)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	h := newAuthHandler(t)
	ann := map[string]string{"auth-url": "http://" + addr + "/oauth2/auth", "auth-signin": "http://" + addr + "/oauth2/start",
		"auth-response-headers": "X-Auth-Request-User, X-Auth-Request-Email"}
	ea := externalAuth(t, ann)
	request := func(lines ...string) *authInput {
		return &authInput{method: "GET", scheme: "https", host: "app.example", target: "/dashboard?tab=1", clientIP: "10.1.2.3",
			requestID: "rid", header: headerSeq(append([]string{"Host: app.example", "Accept: text/html"}, lines...)...), route: "app.example/"}
	}
	basic := "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice@example.test:wonderland"))
	for _, tc := range []struct {
		name string
		ea   *route.ExternalAuth
		in   *authInput
		want authResult
	}{
		{"the session cookie passes to oauth2-proxy", ea, request("Cookie: theme=dark; " + session),
			authResult{allow: true, upstream: [][2]string{{"X-Auth-Request-User", "alice@example.test"}, {"X-Auth-Request-Email", ""}}}},
		{"basic credentials", ea, request(basic),
			authResult{allow: true, upstream: [][2]string{{"X-Auth-Request-User", "alice@example.test"}, {"X-Auth-Request-Email", "alice@example.test"}}}},
		{"no session: to the signin", ea, request(),
			authResult{status: 302, location: "http://" + addr + "/oauth2/start?rd=https://app.example%2Fdashboard%3Ftab%3D1"}},
		// oauth2-proxy clears a cookie it cannot read; that goes with the redirect, as nginx
		// adds the auth answer's Set-Cookie in the signin location.
		{"a forged cookie", ea, request("Cookie: _oauth2_proxy=forged"),
			authResult{status: 302, location: "http://" + addr + "/oauth2/start?rd=https://app.example%2Fdashboard%3Ftab%3D1",
				response: [][2]string{{"Set-Cookie", "_oauth2_proxy=; Path=/; Max-Age=0; HttpOnly"}}}},
		{"a wrong password, without signin: 401", externalAuth(t, map[string]string{"auth-url": ann["auth-url"]}),
			request("Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("alice@example.test:guess"))), authResult{status: 401}},
		{"not an allowed email: 403", externalAuth(t, map[string]string{"auth-url": ann["auth-url"] + "?allowed_emails=bob@example.test",
			"auth-signin": ann["auth-signin"]}), request(basic), authResult{status: 403}},
	} {
		if got := h.authorize(context.Background(), tc.ea, tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}

	// The signin redirect leads to oauth2-proxy's start, which sends the browser on to the
	// identity provider, the URL it came from (rd) kept in the OAuth state.
	start := h.authorize(context.Background(), ea, request()).location
	resp, err := client.Get(start)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || loc == nil || !strings.HasPrefix(loc.String(), idp+"/authorize?") ||
		!strings.HasSuffix(loc.Query().Get("state"), ":"+url.QueryEscape("https://app.example/dashboard?tab=1")) {
		t.Errorf("%s: %s to %v", start, resp.Status, loc)
	}
}
