package route

import (
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseAuth runs parseExternalAuth over annotations given after the prefix.
func parseAuth(a map[string]string) (*ExternalAuth, bool, []string) {
	full := make(map[string]string, len(a))
	for k, v := range a {
		full[AnnotationPrefix+k] = v
	}
	return ExternalAuthOf(full)
}

const refusedTail = "; the Ingress's routes answer 503 rather than be served unprotected"

func TestParseExternalAuth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ann    map[string]string
		want   string // ExternalAuth.String(); "" for nil
		refuse bool
		probs  []string
	}{
		{name: "none", ann: map[string]string{"ssl-redirect": "false"}},
		{name: "keys without auth-url are reported", ann: map[string]string{"auth-signin": "https://login/start", "auth-snippet": "x"},
			probs: []string{"annotation portico.dev/auth-signin: ignored without portico.dev/auth-url",
				"annotation portico.dev/auth-snippet: ignored without portico.dev/auth-url"}},
		{name: "oauth2-proxy example", ann: map[string]string{
			"auth-url":    "https://$host/oauth2/auth",
			"auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri"},
			want: "auth-url=https://$host/oauth2/auth auth-signin=https://$host/oauth2/start?rd=$escaped_request_uri (rd)"},
		{name: "everything", ann: map[string]string{
			"auth-url":                   " http://auth.ns.svc:4180/check?x=1 ",
			"auth-method":                "GET",
			"auth-signin":                "http://login.example/start",
			"auth-signin-redirect-param": "orig",
			"auth-response-headers":      "X-Auth-Request-User, X-Auth-Request-Email,x-auth-request-user,, X_Legacy",
			"auth-request-redirect":      "https://app.example/home",
			"auth-cache-key":             "$remote_user$http_authorization",
			"auth-cache-duration":        "200 202 10m, 401 1m 30s, any 5s",
			"auth-always-set-cookie":     "true"},
			want: "auth-url=http://auth.ns.svc:4180/check?x=1 auth-method=GET auth-signin=http://login.example/start (orig) " +
				"auth-response-headers=X-Auth-Request-User,X-Auth-Request-Email,X_Legacy auth-request-redirect=https://app.example/home " +
				"auth-cache-key=$remote_user$http_authorization auth-cache-duration=200 202 10m0s,401 1m30s,any 5s auth-always-set-cookie"},
		{name: "default cache durations", ann: map[string]string{"auth-url": "http://auth", "auth-cache-key": "${cookie_session}"},
			want: "auth-url=http://auth auth-cache-key=${cookie_session} auth-cache-duration=200 202 401 5m0s"},
		{name: "a rule without statuses caches 200 301 302", ann: map[string]string{"auth-url": "http://auth", "auth-cache-key": "$http_cookie", "auth-cache-duration": "1h"},
			want: "auth-url=http://auth auth-cache-key=$http_cookie auth-cache-duration=200 301 302 1h0m0s"},
		{name: "POST sub-requests are not cached", ann: map[string]string{"auth-url": "http://auth", "auth-method": "POST", "auth-cache-key": "$http_cookie"},
			want:  "auth-url=http://auth auth-method=POST",
			probs: []string{"annotation portico.dev/auth-cache-key: ignored: POST sub-requests are not cached (nginx caches GET and HEAD only)"}},
		{name: "host with a port after $host", ann: map[string]string{"auth-url": "http://$host:4180/oauth2/auth"},
			want: "auth-url=http://$host:4180/oauth2/auth"},
		{name: "a relative signin", ann: map[string]string{"auth-url": "http://auth/", "auth-signin": "/oauth2/start"},
			want: "auth-url=http://auth/ auth-signin=/oauth2/start (rd)"},

		// Problems that leave the route protected.
		{name: "bad signin: 401 goes to the client", ann: map[string]string{"auth-url": "http://auth/", "auth-signin": "ftp://login/$host"},
			want:  "auth-url=http://auth/",
			probs: []string{`annotation portico.dev/auth-signin: "ftp://login/$host" is neither an http(s) URL nor an absolute path; a 401 of the auth service goes to the client as it is`}},
		{name: "signin with an unsupported variable", ann: map[string]string{"auth-url": "http://auth/", "auth-signin": "https://login/?u=$uri"},
			want:  "auth-url=http://auth/",
			probs: []string{`annotation portico.dev/auth-signin: "https://login/?u=$uri": $uri is not supported (only ` + authVarList + `); a 401 of the auth service goes to the client as it is`}},
		{name: "bad redirect parameter", ann: map[string]string{"auth-url": "http://auth/", "auth-signin": "https://login/", "auth-signin-redirect-param": "a&b"},
			want:  "auth-url=http://auth/ auth-signin=https://login/ (rd)",
			probs: []string{`annotation portico.dev/auth-signin-redirect-param: "a&b" is not a query parameter name (letters, digits, -._~); using rd`}},
		{name: "cache key with an unsupported variable: no caching", ann: map[string]string{"auth-url": "http://auth/", "auth-cache-key": "$arg_token"},
			want:  "auth-url=http://auth/",
			probs: []string{`annotation portico.dev/auth-cache-key: $arg_token is not supported (only ` + authVarList + `); answers are not cached`}},
		{name: "durations without a key", ann: map[string]string{"auth-url": "http://auth/", "auth-cache-duration": "200 1m"},
			want:  "auth-url=http://auth/",
			probs: []string{"annotation portico.dev/auth-cache-duration: ignored without portico.dev/auth-cache-key"}},
		{name: "keep-alive tuning", ann: map[string]string{"auth-url": "http://auth/", "auth-keepalive": "10", "auth-keepalive-timeout": "5"},
			want: "auth-url=http://auth/",
			probs: []string{"annotation portico.dev/auth-keepalive: ignored: Portico keeps its connections to auth services alive",
				"annotation portico.dev/auth-keepalive-timeout: ignored: Portico keeps its connections to auth services alive"}},

		// Refusals: the routes answer 503.
		{name: "not a URL", ann: map[string]string{"auth-url": "auth.ns.svc/check"}, want: "auth-url=auth.ns.svc/check", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "auth.ns.svc/check" is not an http or https URL` + refusedTail}},
		{name: "other scheme", ann: map[string]string{"auth-url": "ftp://auth/"}, want: "auth-url=ftp://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "ftp://auth/": the scheme is not http or https` + refusedTail}},
		{name: "unsupported variable", ann: map[string]string{"auth-url": "http://auth/$uri"}, want: "auth-url=http://auth/$uri", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth/$uri": $uri is not supported (only ` + authVarList + `)` + refusedTail}},
		{name: "a host the client names", ann: map[string]string{"auth-url": "http://$http_x_auth/check"}, want: "auth-url=http://$http_x_auth/check", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://$http_x_auth/check": the host is neither fixed nor one of $host (with an optional port), $http_host, $best_http_host` + refusedTail}},
		{name: "user info", ann: map[string]string{"auth-url": "http://user:pw@auth/"}, want: "auth-url=http://user:pw@auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://user:pw@auth/": "user:pw@auth" is not a host name` + refusedTail}},
		{name: "dots", ann: map[string]string{"auth-url": "http://auth..svc/"}, want: "auth-url=http://auth..svc/", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth..svc/": "auth..svc" is not a host name` + refusedTail}},
		{name: "bad port", ann: map[string]string{"auth-url": "http://auth:99999/"}, want: "auth-url=http://auth:99999/", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth:99999/": bad port "99999"` + refusedTail}},
		{name: "space", ann: map[string]string{"auth-url": "http://auth/a b"}, want: "auth-url=http://auth/a b", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth/a b" holds a space, a control or a non-ASCII character` + refusedTail}},
		{name: "fragment", ann: map[string]string{"auth-url": "http://auth/a#b"}, want: "auth-url=http://auth/a#b", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth/a#b": a URL with a fragment` + refusedTail}},
		{name: "unclosed brace", ann: map[string]string{"auth-url": "http://auth/${host"}, want: "auth-url=http://auth/${host", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth/${host": "/${host" has a ${ without }` + refusedTail}},
		{name: "bare dollar", ann: map[string]string{"auth-url": "http://auth/$/x"}, want: "auth-url=http://auth/$/x", refuse: true,
			probs: []string{`annotation portico.dev/auth-url: "http://auth/$/x": "/$/x" has a $ without a variable name` + refusedTail}},
		{name: "method", ann: map[string]string{"auth-url": "http://auth/", "auth-method": "get"}, want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-method: "get" is not one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE` + refusedTail}},
		{name: "response header name", ann: map[string]string{"auth-url": "http://auth/", "auth-response-headers": "X-User, X.Email"},
			want: "auth-url=http://auth/ auth-response-headers=X-User", refuse: true,
			probs: []string{`annotation portico.dev/auth-response-headers: "X.Email" is not a header name` + refusedTail}},
		{name: "response header the proxy owns", ann: map[string]string{"auth-url": "http://auth/", "auth-response-headers": "Host,X-Forwarded-For"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-response-headers: Host cannot be changed here (use portico.dev/upstream-vhost)` + refusedTail,
				`annotation portico.dev/auth-response-headers: X-Forwarded-For is set by the proxy` + refusedTail}},
		{name: "request redirect", ann: map[string]string{"auth-url": "http://auth/", "auth-request-redirect": "/a b"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-request-redirect: "/a b" holds a space, a control or a non-ASCII character` + refusedTail}},
		{name: "status after time", ann: map[string]string{"auth-url": "http://auth/", "auth-cache-key": "$http_cookie", "auth-cache-duration": "200 5m 401"},
			want: "auth-url=http://auth/ auth-cache-key=$http_cookie auth-cache-duration=", refuse: true,
			probs: []string{`annotation portico.dev/auth-cache-duration: "200 5m 401": a status after the time` + refusedTail}},
		{name: "no time", ann: map[string]string{"auth-url": "http://auth/", "auth-cache-duration": "200 202"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-cache-duration: "200 202" has no time such as 5m` + refusedTail,
				"annotation portico.dev/auth-cache-duration: ignored without portico.dev/auth-cache-key"}},
		{name: "bad unit", ann: map[string]string{"auth-url": "http://auth/", "auth-cache-key": "$http_cookie", "auth-cache-duration": "200 5q"},
			want: "auth-url=http://auth/ auth-cache-key=$http_cookie auth-cache-duration=", refuse: true,
			probs: []string{`annotation portico.dev/auth-cache-duration: "200 5q": "5q" is neither a status nor a time such as 5m` + refusedTail}},
		{name: "always-set-cookie", ann: map[string]string{"auth-url": "http://auth/", "auth-always-set-cookie": "yes"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-always-set-cookie: "yes" is not true or false` + refusedTail}},
		{name: "proxy-set-headers", ann: map[string]string{"auth-url": "http://auth/", "auth-proxy-set-headers": "ns/headers"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-proxy-set-headers: not supported by this version of Portico (the auth service would miss the headers the ConfigMap names)` + refusedTail}},
		{name: "snippet", ann: map[string]string{"auth-url": "http://auth/", "auth-snippet": "proxy_set_header Foo 42;"},
			want: "auth-url=http://auth/", refuse: true,
			probs: []string{`annotation portico.dev/auth-snippet: nginx configuration is not supported` + refusedTail}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ea, refuse, probs := parseAuth(tc.ann)
			got := ""
			if ea != nil {
				got = ea.String()
			}
			if got != tc.want || refuse != tc.refuse || !reflect.DeepEqual(probs, tc.probs) {
				t.Errorf("got %q refuse=%v problems:\n%s\nwant %q refuse=%v problems:\n%s", got, refuse, strings.Join(probs, "\n"),
					tc.want, tc.refuse, strings.Join(tc.probs, "\n"))
			}
		})
	}
}

// authReq is a client's request as the templates read it.
type authReq struct {
	method, scheme, host, target, ip, id string
	headers                              map[string]string // lower-case names, lines joined
}

func (r *authReq) Method() string    { return r.method }
func (r *authReq) Scheme() string    { return r.scheme }
func (r *authReq) Host() string      { return r.host }
func (r *authReq) Target() string    { return r.target }
func (r *authReq) ClientIP() string  { return r.ip }
func (r *authReq) RequestID() string { return r.id }
func (r *authReq) Header(name string) (string, bool) {
	v, ok := r.headers[strings.ToLower(name)]
	return v, ok
}
func (r *authReq) Cookie(name string) (string, bool) {
	for _, c := range strings.Split(r.headers["cookie"], ";") {
		if k, v, ok := strings.Cut(strings.TrimSpace(c), "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

func mustAuth(t *testing.T, ann map[string]string) *ExternalAuth {
	t.Helper()
	ea, refuse, probs := parseAuth(ann)
	if ea == nil || refuse || len(probs) > 0 {
		t.Fatalf("%v: refuse=%v %v", ann, refuse, probs)
	}
	return ea
}

func TestExternalAuthCall(t *testing.T) {
	req := &authReq{method: "POST", scheme: "http", host: "App.Example:8443", target: "/a?b=1&c=d", ip: "10.0.0.7", id: "req-1",
		headers: map[string]string{"x-user": "a b#c", "cookie": "session=s1; other=o"}}
	for _, tc := range []struct {
		url  string
		want AuthCall
	}{
		{"http://auth.ns.svc:4180/check?x=1", AuthCall{Addr: "auth.ns.svc:4180", Host: "auth.ns.svc", Target: "/check?x=1"}},
		{"http://auth.ns.svc", AuthCall{Addr: "auth.ns.svc:80", Host: "auth.ns.svc", Target: "/"}},
		{"http://auth.ns.svc?x=$scheme", AuthCall{Addr: "auth.ns.svc:80", Host: "auth.ns.svc", Target: "/?x=http"}},
		{"HTTPS://10.1.2.3/x", AuthCall{TLS: true, Addr: "10.1.2.3:443", Host: "10.1.2.3", Target: "/x"}},
		{"http://[::1]:9000/x", AuthCall{Addr: "[::1]:9000", Host: "[::1]", Target: "/x"}},
		{"https://$host/oauth2/auth", AuthCall{TLS: true, Addr: "app.example:443", Host: "app.example", Target: "/oauth2/auth"}},
		{"http://$host:4180/oauth2/auth", AuthCall{Addr: "app.example:4180", Host: "app.example", Target: "/oauth2/auth"}},
		{"http://$http_host/auth", AuthCall{Addr: "App.Example:8443", Host: "App.Example:8443", Target: "/auth"}},
		{"http://auth/u/$http_x_user/$cookie_session$request_uri", AuthCall{Addr: "auth:80", Host: "auth", Target: "/u/a%20b%23c/s1/a?b=1&c=d"}},
		{"http://auth/?m=$request_method&ip=$remote_addr&id=${request_id}&e=$escaped_request_uri",
			AuthCall{Addr: "auth:80", Host: "auth", Target: "/?m=POST&ip=10.0.0.7&id=req-1&e=%2Fa%3Fb%3D1%26c%3Dd"}},
	} {
		ea := mustAuth(t, map[string]string{"auth-url": tc.url})
		got, err := ea.Call(req)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", tc.url, got, err, tc.want)
		}
	}
	ea := mustAuth(t, map[string]string{"auth-url": "http://$http_host/auth"})
	for _, host := range []string{"evil.example/x", "a@b", "x:y:z", ""} {
		if c, err := ea.Call(&authReq{host: host, target: "/"}); err == nil {
			t.Errorf("host %q: no error (%+v)", host, c)
		}
	}
}

func TestExternalAuthSigninLocation(t *testing.T) {
	req := &authReq{scheme: "http", host: "App.Example:8443", target: "/a?b=1&c=d"}
	for _, tc := range []struct {
		ann  map[string]string
		want string
	}{
		{map[string]string{"auth-signin": "https://login.example/start"}, "https://login.example/start?rd=http://App.Example:8443%2Fa%3Fb%3D1%26c%3Dd"},
		{map[string]string{"auth-signin": "https://login.example/start?x=1"}, "https://login.example/start?x=1&rd=http://App.Example:8443%2Fa%3Fb%3D1%26c%3Dd"},
		{map[string]string{"auth-signin": "https://login.example/start?x=1", "auth-signin-redirect-param": "orig"},
			"https://login.example/start?x=1&orig=http://App.Example:8443%2Fa%3Fb%3D1%26c%3Dd"},
		{map[string]string{"auth-signin": "https://$host/oauth2/start?rd=$escaped_request_uri"}, "https://app.example/oauth2/start?rd=%2Fa%3Fb%3D1%26c%3Dd"},
		{map[string]string{"auth-signin": "https://$host/oauth2/start?rd=https://$host$request_uri"}, "https://app.example/oauth2/start?rd=https://app.example/a?b=1&c=d"},
		{map[string]string{"auth-signin": "/oauth2/start"}, "http://app.example/oauth2/start?rd=http://App.Example:8443%2Fa%3Fb%3D1%26c%3Dd"},
		{map[string]string{}, ""},
	} {
		tc.ann["auth-url"] = "http://auth/"
		if got := mustAuth(t, tc.ann).SigninLocation(req); got != tc.want {
			t.Errorf("%v:\ngot  %s\nwant %s", tc.ann, got, tc.want)
		}
	}
	// $escaped_request_uri is set-misc's set_escape_uri: what it escapes, and what it leaves.
	ea := mustAuth(t, map[string]string{"auth-url": "http://auth/", "auth-signin": "https://login/?rd=$escaped_request_uri"})
	got := ea.SigninLocation(&authReq{scheme: "https", host: "h", target: "/a:b;c=d&e+f%20[g]{h}^i'j(k)*l,m!n@o|p~q_r.s-t$u`v\"w<x>y\\z\x01\xff"})
	want := "https://login/?rd=%2Fa%3Ab%3Bc%3Dd%26e%2Bf%2520%5Bg%5D%7Bh%7D%5Ei'j(k)*l,m!n@o|p~q_r.s-t$u`v%22w%3Cx%3Ey%5Cz%01%FF"
	if got != want {
		t.Errorf("escaped request URI:\ngot  %s\nwant %s", got, want)
	}
}

func TestExternalAuthCacheKeyAndDurations(t *testing.T) {
	ea := mustAuth(t, map[string]string{"auth-url": "http://auth/", "auth-cache-key": "$remote_user:$http_authorization:$cookie_s:$host",
		"auth-cache-duration": "200 202 10m, 401 1m 30s, 200 1h, any 5s"})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))
	key, ok := ea.AppendCacheKey([]byte("k:"), &authReq{host: "App:80", headers: map[string]string{"authorization": basic, "cookie": "s=1"}})
	if want := "k:alice:" + basic + ":1:app"; !ok || string(key) != want {
		t.Errorf("key %q, %v; want %q", key, ok, want)
	}
	for status, want := range map[int]time.Duration{200: 10 * time.Minute, 202: 10 * time.Minute, 401: 90 * time.Second, 403: 5 * time.Second, 500: 5 * time.Second} {
		if got := ea.CacheTTL(status); got != want {
			t.Errorf("status %d: %v, want %v", status, got, want)
		}
	}
	plain := mustAuth(t, map[string]string{"auth-url": "http://auth/"})
	if _, ok := plain.AppendCacheKey(nil, &authReq{}); ok || plain.CacheTTL(200) != 0 {
		t.Errorf("caching without auth-cache-key")
	}
	defaults := mustAuth(t, map[string]string{"auth-url": "http://auth/", "auth-cache-key": "$http_cookie"})
	for status, want := range map[int]time.Duration{200: 5 * time.Minute, 202: 5 * time.Minute, 401: 5 * time.Minute, 403: 0, 204: 0} {
		if got := defaults.CacheTTL(status); got != want {
			t.Errorf("default durations, status %d: %v, want %v", status, got, want)
		}
	}
}
