package proxy

import (
	"bufio"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/l4"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// Access control (docs/access-control.md) end to end through a real proxy, on every serving
// path: the exact status, headers and body a client sees, and what the backend gets.

var accessPaths = []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP, pathHTTP2}

func ann(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }

// htpasswdSecret is an Opaque Secret "auth" holding an htpasswd file.
func htpasswdSecret(t testing.TB, name string, lines ...string) *corev1.Secret {
	t.Helper()
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1"},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"auth": []byte(strings.Join(lines, "\n") + "\n")}}
}

func shaLine(user, pass string) string {
	sum := sha1.Sum([]byte(pass))
	return user + ":{SHA}" + base64.StdEncoding.EncodeToString(sum[:])
}

func bcryptLine(t testing.TB, user, pass string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + string(h)
}

// do sends a request with headers (name, value pairs) and returns the answer and its body.
func do(t *testing.T, c *http.Client, method, url, host string, hdr ...string) (*http.Response, echo.Reply, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s (Host %s): %v", method, url, host, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var rep echo.Reply
	_ = json.Unmarshal(body, &rep)
	return resp, rep, string(body)
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestAccessSourceRangesBasicAuthAndCORS(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			h.in.Secrets = append(h.in.Secrets, htpasswdSecret(t, "users", shaLine("alice", "wonderland"), bcryptLine(t, "bob", "builder")))
			r := func(host string) rt.IngressOpt { return rt.Rule(host, "/", rt.Prefix, "app", 80) }
			probs := h.compile(
				rt.Ingress("ns", "allowed", 1, r("allowed.test"), ann("allowlist-source-range", "10.0.0.0/8, 127.0.0.0/8")),
				rt.Ingress("ns", "outside", 2, r("outside.test"), ann("whitelist-source-range", "10.0.0.0/8")),
				rt.Ingress("ns", "denied", 3, r("denied.test"), ann("denylist-source-range", "127.0.0.1"), ann("allowlist-source-range", "127.0.0.0/8")),
				rt.Ingress("ns", "basic", 4, r("basic.test"), ann("auth-type", "basic"), ann("auth-secret", "users"), ann("auth-realm", "Staff only")),
				rt.Ingress("ns", "nosecret", 5, r("nosecret.test"), ann("auth-type", "basic"), ann("auth-secret", "missing")),
				rt.Ingress("ns", "anyin", 6, r("anyin.test"), ann("auth-type", "basic"), ann("auth-secret", "users"),
					ann("allowlist-source-range", "127.0.0.0/8"), ann("satisfy", "any")),
				rt.Ingress("ns", "anyout", 7, r("anyout.test"), ann("auth-type", "basic"), ann("auth-secret", "users"),
					ann("allowlist-source-range", "10.0.0.0/8"), ann("satisfy", "any")),
				rt.Ingress("ns", "badrange", 8, r("badrange.test"), ann("allowlist-source-range", "10.0.0.0/33")),
				rt.Ingress("ns", "cors", 9, r("cors.test"), ann("enable-cors", "true"),
					ann("cors-allow-origin", "https://app.example.com, https://*.example.org:8443"), ann("cors-allow-credentials", "false"),
					ann("cors-expose-headers", "X-Total")),
				rt.Ingress("ns", "corsany", 10, r("corsany.test"), ann("enable-cors", "true"),
					ann("auth-type", "basic"), ann("auth-secret", "users")),
			)
			if len(probs) != 2 || !strings.Contains(fmt.Sprint(probs), "Secret ns/missing not found") ||
				!strings.Contains(fmt.Sprint(probs), "allowlist-source-range") {
				t.Fatalf("problems %v, want the missing Secret and the bad range", probs)
			}
			c, base := p.client(h)
			for _, tc := range []struct {
				name, method, host string
				hdr                []string
				code               int
				body               string // the start of the proxy's own answer, "" for the backend's
				want               map[string]string
			}{
				{"inside the allow list", "GET", "allowed.test", nil, 200, "", nil},
				{"outside the allow list", "GET", "outside.test", nil, 403, "403 Forbidden: access denied", nil},
				{"the deny list wins over the allow list", "GET", "denied.test", nil, 403, "403 Forbidden", nil},
				{"no credentials", "GET", "basic.test", nil, 401, "401 Unauthorized: authentication required",
					map[string]string{"Www-Authenticate": `Basic realm="Staff only"`}},
				{"wrong password", "GET", "basic.test", []string{"Authorization", basic("alice", "nope")}, 401, "401", nil},
				{"unknown user", "GET", "basic.test", []string{"Authorization", basic("eve", "wonderland")}, 401, "401", nil},
				{"SHA1 credentials", "GET", "basic.test", []string{"Authorization", basic("alice", "wonderland")}, 200, "", nil},
				{"bcrypt credentials", "GET", "basic.test", []string{"Authorization", basic("bob", "builder")}, 200, "", nil},
				{"bcrypt again (cached)", "GET", "basic.test", []string{"Authorization", basic("bob", "builder")}, 200, "", nil},
				{"a missing Secret fails closed", "GET", "nosecret.test", []string{"Authorization", basic("alice", "wonderland")}, 503, "503 Service Unavailable: route refused", nil},
				{"satisfy any: the allow list lets in", "GET", "anyin.test", nil, 200, "", nil},
				{"satisfy any: else credentials", "GET", "anyout.test", nil, 401, "401", nil},
				{"satisfy any: credentials let in", "GET", "anyout.test", []string{"Authorization", basic("alice", "wonderland")}, 200, "", nil},
				{"a malformed range fails closed", "GET", "badrange.test", nil, 503, "503", nil},
				{"CORS preflight of a listed origin", "OPTIONS", "cors.test", []string{"Origin", "https://app.example.com", "Access-Control-Request-Method", "PUT"}, 204, "-",
					map[string]string{"Access-Control-Allow-Origin": "https://app.example.com", "Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, PATCH, OPTIONS",
						"Access-Control-Expose-Headers": "X-Total", "Access-Control-Max-Age": "1728000", "Access-Control-Allow-Credentials": ""}},
				{"CORS: a wildcard label", "GET", "cors.test", []string{"Origin", "https://api.example.org:8443"}, 200, "",
					map[string]string{"Access-Control-Allow-Origin": "https://api.example.org:8443"}},
				{"CORS: a wildcard is one label", "GET", "cors.test", []string{"Origin", "https://a.b.example.org:8443"}, 200, "",
					map[string]string{"Access-Control-Allow-Origin": ""}},
				{"CORS: an origin not listed gets no headers", "GET", "cors.test", []string{"Origin", "https://evil-app.example.com"}, 200, "",
					map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""}},
				{"CORS: the preflight comes before authentication", "OPTIONS", "corsany.test", []string{"Origin", "https://x.test"}, 204, "-",
					map[string]string{"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Credentials": "true"}},
				{"CORS headers on the proxy's refusal too", "GET", "corsany.test", nil, 401, "401",
					map[string]string{"Access-Control-Allow-Origin": "*"}},
			} {
				resp, rep, body := do(t, c, tc.method, base+"/x", tc.host, tc.hdr...)
				switch {
				case resp.StatusCode != tc.code:
					t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.code)
					continue
				case tc.body == "" && rep.Name != "app-1":
					t.Errorf("%s: answered %q, want the backend", tc.name, body)
				case tc.body == "-" && body != "":
					t.Errorf("%s: body %q, want none", tc.name, body)
				case tc.body != "" && tc.body != "-" && !strings.HasPrefix(body, tc.body):
					t.Errorf("%s: body %q, want %q...", tc.name, body, tc.body)
				}
				for k, v := range tc.want {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s: %s %q, want %q", tc.name, k, got, v)
					}
				}
				if tc.body == "" && rep.Headers["Authorization"] != nil {
					t.Errorf("%s: the backend got the credentials %q", tc.name, rep.Headers["Authorization"])
				}
			}
		})
	}
}

func TestAccessRateAndConnectionLimits(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			release := make(chan struct{})
			entered := make(chan struct{}, 4)
			h.backend("slow", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release
			}), "")
			h.compile(
				rt.Ingress("ns", "rps", 1, rt.Rule("rps.test", "/", rt.Prefix, "app", 80), ann("limit-rps", "1"), ann("limit-burst-multiplier", "2")),
				rt.Ingress("ns", "exempt", 2, rt.Rule("exempt.test", "/", rt.Prefix, "app", 80), ann("limit-rps", "1"),
					ann("limit-burst-multiplier", "1"), ann("limit-allowlist", "127.0.0.0/8")),
				rt.Ingress("ns", "conns", 3, rt.Rule("conns.test", "/", rt.Prefix, "slow", 80), ann("limit-connections", "1")),
			)
			c, base := p.client(h)
			// Rate 1/s with a burst of 2: three at once pass, the fourth is refused (429 by default).
			for i, want := range []int{200, 200, 200, 429} {
				resp, _, body := do(t, c, "GET", base+"/", "rps.test")
				if resp.StatusCode != want {
					t.Errorf("request %d: %d %q, want %d", i, resp.StatusCode, body, want)
				}
				if want == 429 && !strings.HasPrefix(body, "429 Too Many Requests: too many requests") {
					t.Errorf("refusal body %q", body)
				}
			}
			for i := range 5 {
				if resp, _, _ := do(t, c, "GET", base+"/", "exempt.test"); resp.StatusCode != 200 {
					t.Errorf("exempt request %d: %d", i, resp.StatusCode)
				}
			}
			// One request in progress per client: a second waits for none, it is refused; once
			// the first is answered, its slot is free again.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, _, _ := do(t, c, "GET", base+"/", "conns.test"); resp.StatusCode != 200 {
					t.Errorf("the first request: %d", resp.StatusCode)
				}
			}()
			<-entered
			if resp, _, _ := do(t, c, "GET", base+"/", "conns.test"); resp.StatusCode != 429 {
				t.Errorf("a second request in progress: %d, want 429", resp.StatusCode)
			}
			close(release)
			wg.Wait()
			for i := range 3 {
				if resp, _, _ := do(t, c, "GET", base+"/", "conns.test"); resp.StatusCode != 200 {
					t.Errorf("after the first was answered, request %d: %d (a slot was not given back)", i, resp.StatusCode)
				}
			}
		})
	}
}

func TestAccessLimitStatusIsTheFleets(t *testing.T) {
	h := newHarness(t, Options{})
	h.backend("app", echo.Handler("app-1", "app"), "")
	h.in.Config.HTTP = &proxyconfig.HTTP{LimitStatusCode: 503}
	h.compile(rt.Ingress("ns", "rps", 1, rt.Rule("", "/", rt.Prefix, "app", 80), ann("limit-rpm", "1"), ann("limit-burst-multiplier", "1")))
	c := &http.Client{}
	codes := []int{}
	for range 3 {
		resp, _, _ := do(t, c, "GET", "http://"+h.http+"/", "a")
		codes = append(codes, resp.StatusCode)
	}
	if fmt.Sprint(codes) != "[200 200 503]" {
		t.Errorf("codes %v, want [200 200 503] (rpm 1, burst 1, the fleet's 503)", codes)
	}
}

// TestClientAddressTrustedProxies: behind a trusted proxy, the client is the rightmost
// untrusted X-Forwarded-For address, for allow lists and X-Real-IP; the chain goes on with the
// peer appended and the proxy's X-Forwarded-Proto is believed (no HTTPS redirect loop). From
// an untrusted peer, every such header is replaced.
func TestClientAddressTrustedProxies(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "secure.test"))
			compile := func(trusted ...string) {
				h.in.Config.ClientAddress = &proxyconfig.ClientAddress{TrustedProxies: trusted}
				h.compile(
					rt.Ingress("ns", "office", 1, rt.Rule("office.test", "/", rt.Prefix, "app", 80), ann("allowlist-source-range", "203.0.113.0/24")),
					rt.Ingress("ns", "secure", 2, rt.Rule("secure.test", "/", rt.Prefix, "app", 80), rt.TLS("tls", "secure.test")),
					rt.Ingress("ns", "other", 3, rt.Rule("other.test", "/", rt.Prefix, "app", 80)),
				)
			}
			compile("127.0.0.0/8", "192.0.2.0/24")
			c, base := p.client(h)
			noRedirects(c)
			resp, rep, body := do(t, c, "GET", base+"/", "office.test", "X-Forwarded-For", "198.51.100.1, 203.0.113.7, 192.0.2.10",
				"X-Real-IP", "10.9.9.9", "X-Forwarded-Proto", "https", "X-Forwarded-Host", "office.example.com")
			if resp.StatusCode != 200 {
				t.Fatalf("from a trusted proxy for 203.0.113.7: %d %q", resp.StatusCode, body)
			}
			hd := rep.Headers
			if got := strings.Join(hd["X-Forwarded-For"], "|"); got != "198.51.100.1, 203.0.113.7, 192.0.2.10, 127.0.0.1" {
				t.Errorf("X-Forwarded-For %q, want the chain and the peer", got)
			}
			if got := strings.Join(hd["X-Real-Ip"], "|"); got != "203.0.113.7" {
				t.Errorf("X-Real-IP %q, want the rightmost untrusted address", got)
			}
			if got := strings.Join(hd["X-Forwarded-Proto"], "|"); got != "https" {
				t.Errorf("X-Forwarded-Proto %q, want the trusted proxy's", got)
			}
			if got := strings.Join(hd["X-Forwarded-Host"], "|"); got != "office.example.com" {
				t.Errorf("X-Forwarded-Host %q, want the trusted proxy's", got)
			}
			if !p.h2 {
				if resp, _, _ := do(t, c, "GET", base+"/", "secure.test", "X-Forwarded-Proto", "https"); resp.StatusCode != 200 {
					t.Errorf("a TLS host behind a proxy that terminated TLS: %d, want 200 (no redirect)", resp.StatusCode)
				}
			}
			compile() // nobody trusted
			resp, rep, _ = do(t, c, "GET", base+"/", "office.test", "X-Forwarded-For", "203.0.113.7")
			if resp.StatusCode != 403 {
				t.Errorf("X-Forwarded-For from an untrusted peer was believed: %d", resp.StatusCode)
			}
			_, rep, _ = do(t, c, "GET", base+"/", "other.test", "X-Forwarded-For", "203.0.113.7", "X-Real-IP", "10.9.9.9",
				"X-Forwarded-Proto", "ftp", "X-Forwarded-Host", "evil.test")
			want := "127.0.0.1"
			if got := strings.Join(rep.Headers["X-Forwarded-For"], "|") + " " + strings.Join(rep.Headers["X-Real-Ip"], "|"); got != want+" "+want {
				t.Errorf("untrusted: X-Forwarded-For and X-Real-IP %q, want the peer's", got)
			}
			if got := strings.Join(rep.Headers["X-Forwarded-Host"], "|"); got != "other.test" {
				t.Errorf("untrusted: X-Forwarded-Host %q, want the request's host", got)
			}
			if got, want := strings.Join(rep.Headers["X-Forwarded-Proto"], "|"), map[bool]string{false: "http", true: "https"}[p.h2]; got != want {
				t.Errorf("untrusted: X-Forwarded-Proto %q, want %q", got, want)
			}
		})
	}
}

// TestProxyProtocolListeners: with the fleet's proxyProtocol on, the header's source is the
// client (X-Real-IP, X-Forwarded-For, allow lists), on HTTP (event loops and goroutines) and
// HTTPS; a connection without a valid header gets no answer.
func TestProxyProtocolListeners(t *testing.T) {
	for _, p := range []servingPathOf{pathLoops, pathGoroutines, pathNetHTTP} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			h.in.Config.ClientAddress = &proxyconfig.ClientAddress{ProxyProtocol: true}
			h.compile(rt.Ingress("ns", "office", 1, rt.Rule("", "/", rt.Prefix, "app", 80), ann("allowlist-source-range", "203.0.113.0/24")))
			exchange := func(addr string, tlsOn bool, header string) (string, error) {
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					return "", err
				}
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(conn, header); err != nil {
					return "", err
				}
				var rw io.ReadWriter = conn
				if tlsOn {
					tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: "a.test"})
					if err := tc.Handshake(); err != nil {
						return "", err
					}
					rw = tc
				}
				if _, err := io.WriteString(rw, "GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"); err != nil {
					return "", err
				}
				resp, err := http.ReadResponse(bufio.NewReader(rw), nil)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				var rep echo.Reply
				body, _ := io.ReadAll(resp.Body)
				_ = json.Unmarshal(body, &rep)
				return fmt.Sprintf("%d %s|%s", resp.StatusCode, strings.Join(rep.Headers["X-Real-Ip"], ","), strings.Join(rep.Headers["X-Forwarded-For"], ",")), nil
			}
			for _, addr := range []struct {
				name string
				addr string
				tls  bool
			}{{"http", h.http, false}, {"https", h.https, true}} {
				got, err := exchange(addr.addr, addr.tls, "PROXY TCP4 203.0.113.9 192.0.2.1 40000 443\r\n")
				if err != nil || got != "200 203.0.113.9|203.0.113.9" {
					t.Errorf("%s, v1 header: %q %v", addr.name, got, err)
				}
				v2 := string(l4.AppendProxyHeader(nil, l4.ProxyV2, netip.MustParseAddrPort("198.51.100.4:5000"), netip.MustParseAddrPort("192.0.2.1:443")))
				got, err = exchange(addr.addr, addr.tls, v2)
				if err != nil || got != "403 |" {
					t.Errorf("%s, v2 header from outside the allow list: %q %v", addr.name, got, err)
				}
				if got, err := exchange(addr.addr, addr.tls, ""); err == nil {
					t.Errorf("%s, no header: answered %q, want the connection closed", addr.name, got)
				}
			}
		})
	}
}

// authService is a loopback stand-in for an auth service as ingress-nginx's auth-url calls it:
// a session cookie "good" passes (with the user for the backend and a refreshed cookie),
// "forbidden" is refused, anything else needs to sign in. It counts the sub-requests.
func authService(t *testing.T) (addr string, calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		c, _ := r.Cookie("session")
		switch {
		case c != nil && c.Value == "good":
			w.Header().Set("X-Auth-Request-User", "alice")
			w.Header().Add("Set-Cookie", "refreshed=1; Path=/")
			w.WriteHeader(http.StatusAccepted)
		case c != nil && c.Value == "forbidden":
			w.WriteHeader(http.StatusForbidden)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="app"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), calls
}

func TestAccessExternalAuth(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			auth, calls := authService(t)
			url := "http://" + auth + "/auth"
			r := func(host string) rt.IngressOpt { return rt.Rule(host, "/", rt.Prefix, "app", 80) }
			if probs := h.compile(
				rt.Ingress("ns", "ext", 1, r("ext.test"), ann("auth-url", url), ann("auth-response-headers", "X-Auth-Request-User")),
				rt.Ingress("ns", "signin", 2, r("signin.test"), ann("auth-url", url), ann("auth-signin", "https://login.example.com/start")),
				rt.Ingress("ns", "down", 3, r("down.test"), ann("auth-url", fmt.Sprintf("http://127.0.0.1:%d/auth", deadPort(t)))),
				rt.Ingress("ns", "limited", 4, r("limited.test"), ann("auth-url", url), ann("limit-rps", "1"), ann("limit-burst-multiplier", "1")),
				rt.Ingress("ns", "anyhost", 5, r(""), ann("auth-url", "http://$host/auth")),
			); len(probs) != 1 || !strings.Contains(probs[0].Message, "takes its host from the request") {
				t.Fatalf("problems %v, want the auth-url of any host's rule", probs)
			}
			c, base := p.client(h)
			noRedirects(c)
			scheme := map[bool]string{false: "http", true: "https"}[p.h2]
			good, bad := []string{"Cookie", "session=good", "X-Auth-Request-User", "mallory"}, []string{"Cookie", "session=forbidden"}
			for _, tc := range []struct {
				name, host string
				hdr        []string
				code       int
				want       map[string]string
			}{
				{"a session passes; the backend gets the auth service's user, not the client's", "ext.test", good, 200,
					map[string]string{"Set-Cookie": "refreshed=1; Path=/"}},
				{"no session: 401 with the auth service's challenge", "ext.test", nil, 401,
					map[string]string{"Www-Authenticate": `Bearer realm="app"`, "Set-Cookie": ""}},
				{"refused: 403", "ext.test", bad, 403, nil},
				{"no session, with auth-signin: to sign in", "signin.test", nil, 302,
					map[string]string{"Location": "https://login.example.com/start?rd=" + scheme + "://signin.test%2Fx%3Fq%3D1"}},
				{"the auth service down: 500", "down.test", good, 500, nil},
				{"a rule of any host with a host from the request refuses", "other.test", good, 503, nil},
			} {
				resp, rep, body := do(t, c, "GET", base+"/x?q=1", tc.host, tc.hdr...)
				if resp.StatusCode != tc.code {
					t.Errorf("%s: %d %q, want %d", tc.name, resp.StatusCode, body, tc.code)
					continue
				}
				for k, v := range tc.want {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s: %s %q, want %q", tc.name, k, got, v)
					}
				}
				if tc.code == 200 {
					if got := rep.Headers["X-Auth-Request-User"]; len(got) != 1 || got[0] != "alice" {
						t.Errorf("%s: the backend got X-Auth-Request-User %q, want the auth service's alone", tc.name, got)
					}
				}
			}
			// A request is counted once against a limit, though an event loop hands a request
			// with external auth to the goroutine path: rate 1/s, burst 1 lets two through.
			n := calls.Load()
			for i, want := range []int{200, 200, 429} {
				if resp, _, _ := do(t, c, "GET", base+"/", "limited.test", good...); resp.StatusCode != want {
					t.Errorf("limited request %d: %d, want %d", i, resp.StatusCode, want)
				}
			}
			if got := calls.Load() - n; got != 2 {
				t.Errorf("%d sub-requests for two requests let in by the limit, want 2 (a limited request asks nobody)", got)
			}
		})
	}
}

// TestAccessOAuth2Proxy: the real oauth2-proxy behind auth-url, through a real proxy, as
// ingress-nginx's oauth2-proxy example sets it up: a signed-in browser's session reaches the
// application with the user oauth2-proxy names, anyone else is sent to sign in.
func TestAccessOAuth2Proxy(t *testing.T) {
	addr, session, _ := startOAuth2Proxy(t)
	for _, p := range []servingPathOf{pathLoops, pathHTTP2} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			h.compile(rt.Ingress("ns", "app", 1, rt.Rule("app.example", "/", rt.Prefix, "app", 80),
				ann("auth-url", "http://"+addr+"/oauth2/auth"), ann("auth-signin", "http://"+addr+"/oauth2/start"),
				ann("auth-response-headers", "X-Auth-Request-User, X-Auth-Request-Email")))
			c, base := p.client(h)
			noRedirects(c)
			resp, rep, body := do(t, c, "GET", base+"/dashboard", "app.example", "Cookie", session)
			if resp.StatusCode != 200 || strings.Join(rep.Headers["X-Auth-Request-User"], ",") != "alice@example.test" {
				t.Errorf("signed in: %d %q, the backend got the user %q", resp.StatusCode, body, rep.Headers["X-Auth-Request-User"])
			}
			scheme := map[bool]string{false: "http", true: "https"}[p.h2]
			resp, _, _ = do(t, c, "GET", base+"/dashboard", "app.example")
			if want := "http://" + addr + "/oauth2/start?rd=" + scheme + "://app.example%2Fdashboard"; resp.StatusCode != 302 || resp.Header.Get("Location") != want {
				t.Errorf("not signed in: %d to %q, want 302 to %q", resp.StatusCode, resp.Header.Get("Location"), want)
			}
		})
	}
}

// TestAccessCORSReplacesTheBackends: the route's CORS headers replace a backend's own, once.
func TestAccessCORSReplacesTheBackends(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, p.so)
			h.backend("app", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Access-Control-Allow-Origin", "https://backend.example")
				w.Header().Set("Access-Control-Max-Age", "5")
			}), "")
			h.compile(rt.Ingress("ns", "cors", 1, rt.Rule("", "/", rt.Prefix, "app", 80), ann("enable-cors", "true"),
				ann("cors-allow-origin", "https://app.example.com")))
			c, base := p.client(h)
			resp, _, _ := do(t, c, "GET", base+"/", "a.test", "Origin", "https://APP.example.com")
			if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://APP.example.com" {
				t.Errorf("Access-Control-Allow-Origin %q, want the request's origin alone", got)
			}
			if got := resp.Header.Values("Access-Control-Max-Age"); len(got) != 1 || got[0] != "1728000" {
				t.Errorf("Access-Control-Max-Age %q, want the route's alone", got)
			}
			resp, _, _ = do(t, c, "GET", base+"/", "a.test", "Origin", "https://other.example.com")
			if got := resp.Header.Values("Access-Control-Allow-Origin"); len(got) != 1 || got[0] != "https://backend.example" {
				t.Errorf("an origin not listed: Access-Control-Allow-Origin %q, want the backend's as it is", got)
			}
		})
	}
}

// TestAccessLogClientBehindTrustedProxy: the access log names the client the allow lists see.
func TestAccessLogClientBehindTrustedProxy(t *testing.T) {
	for _, p := range accessPaths {
		t.Run(p.name, func(t *testing.T) {
			var buf syncBuffer
			alog := NewAccessLog(&buf)
			h := newHarnessWith(t, Options{AccessLog: alog}, p.so)
			h.backend("app", echo.Handler("app-1", "app"), "")
			h.in.Config.AccessLog = &proxyconfig.AccessLog{Enabled: true}
			h.in.Config.ClientAddress = &proxyconfig.ClientAddress{TrustedProxies: []string{"127.0.0.0/8"}}
			h.compile(rt.Ingress("ns", "i", 1, rt.Rule("", "/", rt.Prefix, "app", 80)))
			c, base := p.client(h)
			do(t, c, "GET", base+"/", "a.test", "X-Forwarded-For", "198.51.100.20")
			alog.mu.Lock()
			_ = alog.f()
			alog.mu.Unlock()
			var e accessEntry
			if err := json.Unmarshal([]byte(strings.TrimSpace(buf.String())), &e); err != nil || e.Client != "198.51.100.20" {
				t.Errorf("access log %q (%v), want the client 198.51.100.20", buf.String(), err)
			}
		})
	}
}
