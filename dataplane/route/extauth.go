package route

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// External authentication: ingress-nginx's auth-url family, read from the portico.dev/ keys of
// the same names. The meaning is ingress-nginx's (internal/ingress/annotations/authreq/main.go,
// and the auth location its nginx.tmpl writes): before a request is forwarded, a sub-request
// without a body goes to the auth service; a 2xx answer lets the request through, 401 and 403
// go to the client (401 as a redirect to auth-signin when set), anything else is a 500.
// Everything is checked and compiled here, once per Ingress; dataplane/proxy/extauth.go sends
// the sub-requests.

// Annotation keys of external authentication (after AnnotationPrefix).
const (
	annAuthURL             = "auth-url"
	annAuthMethod          = "auth-method"
	annAuthSignin          = "auth-signin"
	annAuthSigninParam     = "auth-signin-redirect-param"
	annAuthResponseHeaders = "auth-response-headers"
	annAuthRequestRedirect = "auth-request-redirect"
	annAuthCacheKey        = "auth-cache-key"
	annAuthCacheDuration   = "auth-cache-duration"
	annAuthAlwaysSetCookie = "auth-always-set-cookie"
	annAuthProxySetHeaders = "auth-proxy-set-headers"
	annAuthSnippet         = "auth-snippet"
)

// externalAuthKeys are the keys parseExternalAuth reads, every one of them reported when it is
// not used: the ones above and ingress-nginx's keep-alive tuning, which Portico does not need.
var externalAuthKeys = append([]string{annAuthURL, annAuthMethod, annAuthSignin, annAuthSigninParam, annAuthResponseHeaders,
	annAuthRequestRedirect, annAuthCacheKey, annAuthCacheDuration, annAuthAlwaysSetCookie, annAuthProxySetHeaders,
	annAuthSnippet}, authKeepaliveKeys...)

// authKeepaliveKeys tune nginx's connections to the auth service.
var authKeepaliveKeys = []string{"auth-keepalive", "auth-keepalive-share-vars", "auth-keepalive-requests", "auth-keepalive-timeout"}

// DefaultAuthCacheDuration is ingress-nginx's auth-cache-duration when none is set.
const DefaultAuthCacheDuration = "200 202 401 5m"

// ExternalAuth is a route's external authentication. It is compiled once per Ingress
// (parseExternalAuth) and immutable; its templates are parsed then, so that a request only
// expands them.
type ExternalAuth struct {
	// URL is auth-url as written. Its host, port and scheme are where the sub-request goes.
	URL string
	// HostVaries: auth-url's host is the request's ($host, $http_host or $best_http_host).
	// On a route that matches any host, the client would choose the auth service: such a
	// route must be refused by the compiler.
	HostVaries bool
	// Method is auth-method, the sub-request's method; "" is GET. When it is set, the
	// sub-request also carries X-Original-URI and X-Scheme, as ingress-nginx's does.
	Method string
	// Signin is auth-signin ("" for none): a 401 from the auth service is answered with a
	// 302 to it, with the request's URL in the query parameter SigninParam.
	Signin      string
	SigninParam string
	// ResponseHeaders are auth-response-headers: the headers of a successful answer that are
	// set on the request to the backend, in place of any the client sent.
	ResponseHeaders []string
	// cleared is ResponseHeaders each with an empty value (ClearedHeaders), built at parse.
	cleared [][2]string
	// RequestRedirect is auth-request-redirect: X-Auth-Request-Redirect's value; "" sends
	// the request URI.
	RequestRedirect string
	// CacheKey is auth-cache-key ("" for no caching), Cache the durations of
	// auth-cache-duration by status.
	CacheKey string
	Cache    []AuthCacheRule
	// AlwaysSetCookie is auth-always-set-cookie: the auth service's Set-Cookie goes on every
	// answer, not only on 200, 201, 204, 206, 301, 302, 303, 304, 307 and 308.
	AlwaysSetCookie bool

	tls         bool
	addr        string       // host:port to connect to, when the host is fixed
	host        string       // the sub-request's Host when fixed: auth-url's host without its port
	hostT       authTemplate // the varying host ($host, $http_host)
	port        string       // ":port" after $host in auth-url
	portDefault string       // ":80" or ":443", added to a varying host without a port
	target      authTemplate
	signin      authTemplate
	signinRel   bool // auth-signin is a path: nginx makes it absolute with $scheme://$host
	signinQuery byte // '?' or '&' before the redirect parameter; 0 when the parameter is in auth-signin already
	cacheKey    authTemplate
}

// AuthCacheRule caches the answers of some statuses (all when Statuses is nil: nginx's "any")
// for TTL.
type AuthCacheRule struct {
	Statuses []int
	TTL      time.Duration
}

// AuthRequest is what the templates of external authentication read of a client's request.
// Values returned may point into the request's buffers: they are not kept past a call.
type AuthRequest interface {
	// Method is the request's method, Scheme "http" or "https", Host its Host header as sent,
	// Target its request target as sent (path and query), ClientIP the client's address,
	// RequestID the X-Request-Id the backend gets.
	Method() string
	Scheme() string
	Host() string
	Target() string
	ClientIP() string
	RequestID() string
	// Header is every line of a header (name in any case) joined with ", ", nginx's
	// $http_<name> (joined with "; " for Cookie), and whether there is one.
	Header(name string) (string, bool)
	// Cookie is the value of a cookie, and whether there is one.
	Cookie(name string) (string, bool)
}

// AuthCall is where one sub-request goes.
type AuthCall struct {
	// TLS: the auth service is reached over TLS (https auth-url), its certificate not
	// verified (ingress-nginx's proxy_ssl_verify off), with the Host as SNI.
	TLS bool
	// Addr is the host:port to connect to, Host the sub-request's Host header, Target its
	// path and query.
	Addr, Host, Target string
}

// Call expands auth-url for a request. It fails when a host taken from the request is not a
// host name.
func (ea *ExternalAuth) Call(r AuthRequest) (AuthCall, error) {
	c := AuthCall{TLS: ea.tls, Addr: ea.addr, Host: ea.host}
	if ea.HostVaries {
		h := string(ea.hostT.append(nil, r, nil))
		if !validAuthority(h) {
			return c, fmt.Errorf("auth-url: the request's host %q is not a host name", h)
		}
		c.Host, c.Addr = h, h
		if ea.port != "" {
			c.Addr = h + ea.port
		} else if _, _, err := net.SplitHostPort(h); err != nil {
			c.Addr = h + ea.portDefault
		}
	}
	c.Target = string(ea.target.append(nil, r, targetUnsafe))
	return c, nil
}

// validAuthority: h is a host name or IP address, with an optional port.
func validAuthority(h string) bool {
	if host, port, err := net.SplitHostPort(h); err == nil {
		n, err := strconv.Atoi(port)
		return err == nil && n >= 1 && n <= 65535 && validHost(host)
	}
	if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		return net.ParseIP(h[1:len(h)-1]) != nil
	}
	return validHost(h)
}

func validHost(h string) bool {
	return h != "" && !strings.Contains(h, ":") && !strings.Contains(h, "..") && validHostPort(h) || net.ParseIP(h) != nil
}

// SigninLocation is the Location of the redirect that answers a 401 of the auth service, ""
// without auth-signin: auth-signin expanded, then (unless auth-signin sets it) the redirect
// parameter with $scheme://$http_host$escaped_request_uri, as ingress-nginx's buildAuthSignURL
// writes it. A path is made absolute with the request's scheme and host, as nginx's return.
func (ea *ExternalAuth) SigninLocation(r AuthRequest) string {
	if ea.Signin == "" {
		return ""
	}
	var b []byte
	if ea.signinRel {
		b = append(b, r.Scheme()...)
		b = append(b, "://"...)
		b = appendVarHost(b, r.Host())
	}
	b = ea.signin.append(b, r, targetUnsafe)
	if ea.signinQuery != 0 {
		b = append(b, ea.signinQuery)
		b = append(b, ea.SigninParam...)
		b = append(b, '=')
		b = append(b, r.Scheme()...)
		b = append(b, "://"...)
		b = appendEscaped(b, r.Host(), queryUnsafe)
		b = appendEscapedURI(b, r.Target())
	}
	return string(b)
}

// AppendCacheKey appends the expanded auth-cache-key to dst; caching is off when ok is false.
func (ea *ExternalAuth) AppendCacheKey(dst []byte, r AuthRequest) (key []byte, ok bool) {
	if ea.CacheKey == "" {
		return dst, false
	}
	return ea.cacheKey.append(dst, r, nil), true
}

// CacheTTL is how long an answer with this status is cached by auth-cache-duration (0: not
// cached): the first rule naming the status, or "any", as nginx's proxy_cache_valid.
func (ea *ExternalAuth) CacheTTL(status int) time.Duration {
	for _, c := range ea.Cache {
		if c.Statuses == nil {
			return c.TTL
		}
		for _, s := range c.Statuses {
			if s == status {
				return c.TTL
			}
		}
	}
	return 0
}

// String prints the external authentication for golden files, one clause per set field.
func (ea *ExternalAuth) String() string {
	s := "auth-url=" + ea.URL
	if ea.Method != "" {
		s += " auth-method=" + ea.Method
	}
	if ea.Signin != "" {
		s += " auth-signin=" + ea.Signin + " (" + ea.SigninParam + ")"
	}
	if len(ea.ResponseHeaders) > 0 {
		s += " auth-response-headers=" + strings.Join(ea.ResponseHeaders, ",")
	}
	if ea.RequestRedirect != "" {
		s += " auth-request-redirect=" + ea.RequestRedirect
	}
	if ea.CacheKey != "" {
		var rules []string
		for _, c := range ea.Cache {
			r := "any"
			if c.Statuses != nil {
				codes := make([]string, len(c.Statuses))
				for i, s := range c.Statuses {
					codes[i] = strconv.Itoa(s)
				}
				r = strings.Join(codes, " ")
			}
			rules = append(rules, r+" "+c.TTL.String())
		}
		s += " auth-cache-key=" + ea.CacheKey + " auth-cache-duration=" + strings.Join(rules, ",")
	}
	if ea.AlwaysSetCookie {
		s += " auth-always-set-cookie"
	}
	return s
}

// authMethods are auth-method's values (ingress-nginx's methodsRegex).
var authMethods = regexp.MustCompile(`^(GET|HEAD|POST|PUT|PATCH|DELETE|CONNECT|OPTIONS|TRACE)$`)

// authHeaderName is a name of auth-response-headers (ingress-nginx's headerRegexp).
var authHeaderName = regexp.MustCompile(`^[a-zA-Z\d\-_]+$`)

// parseExternalAuth reads an Ingress's external-auth keys. get returns the trimmed value of a
// key (after the portico.dev/ prefix); bad records a problem naming the key. It returns nil,
// false when auth-url is not set; refuse is true when auth-url is set but cannot be used
// (malformed URL, unsupported variable, a bad duration...): the Ingress's routes then answer
// 503 rather than be served unprotected. Problems that leave the routes protected (a bad
// auth-signin: 401 to the client; a bad auth-cache-key: no caching) are reported without
// refusing, as ingress-nginx drops those keys.
func parseExternalAuth(get func(key string) (string, bool), bad func(key, format string, args ...any)) (ea *ExternalAuth, refuse bool) {
	const refused = "; the Ingress's routes answer 503 rather than be served unprotected"
	raw, ok := get(annAuthURL)
	if !ok {
		for _, k := range externalAuthKeys[1:] {
			if _, set := get(k); set {
				bad(k, "ignored without %s%s", AnnotationPrefix, annAuthURL)
			}
		}
		return nil, false
	}
	ea = &ExternalAuth{URL: raw, SigninParam: "rd"}
	if err := ea.parseURL(raw); err != nil {
		bad(annAuthURL, "%v%s", err, refused)
		refuse = true
	}
	if v, ok := get(annAuthMethod); ok {
		if !authMethods.MatchString(v) {
			bad(annAuthMethod, "%q is not one of GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE%s", v, refused)
			refuse = true
		} else {
			ea.Method = v
		}
	}
	if v, ok := get(annAuthSigninParam); ok {
		if v == "" || strings.Trim(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") != "" {
			bad(annAuthSigninParam, "%q is not a query parameter name (letters, digits, -._~); using rd", v)
		} else {
			ea.SigninParam = v
		}
	}
	if v, ok := get(annAuthSignin); ok && v != "" {
		if err := ea.parseSignin(v); err != nil {
			bad(annAuthSignin, "%v; a 401 of the auth service goes to the client as it is", err)
			ea.Signin, ea.signin = "", authTemplate{}
		}
	}
	if v, ok := get(annAuthResponseHeaders); ok {
		seen := map[string]bool{}
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if !authHeaderName.MatchString(name) {
				bad(annAuthResponseHeaders, "%q is not a header name%s", name, refused)
				refuse = true
				continue
			}
			if err := checkHeader(name, "", true); err != nil {
				bad(annAuthResponseHeaders, "%v%s", err, refused)
				refuse = true
				continue
			}
			if l := strings.ToLower(name); !seen[l] {
				seen[l] = true
				ea.ResponseHeaders = append(ea.ResponseHeaders, name)
				ea.cleared = append(ea.cleared, [2]string{name, ""})
			}
		}
	}
	if v, ok := get(annAuthRequestRedirect); ok && v != "" {
		if strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
			bad(annAuthRequestRedirect, "%q holds a space, a control or a non-ASCII character%s", v, refused)
			refuse = true
		} else {
			ea.RequestRedirect = v
		}
	}
	durations := DefaultAuthCacheDuration
	if v, ok := get(annAuthCacheDuration); ok && v != "" {
		durations = v
	}
	rules, err := parseAuthCacheDurations(durations)
	if err != nil {
		bad(annAuthCacheDuration, "%v%s", err, refused)
		refuse = true
	}
	if v, ok := get(annAuthCacheKey); ok && v != "" {
		t, err := compileAuthTemplate(v)
		switch {
		case err != nil:
			bad(annAuthCacheKey, "%v; answers are not cached", err)
		case ea.Method != "" && ea.Method != "GET" && ea.Method != "HEAD":
			bad(annAuthCacheKey, "ignored: %s sub-requests are not cached (nginx caches GET and HEAD only)", ea.Method)
		default:
			ea.CacheKey, ea.cacheKey, ea.Cache = v, t, rules
		}
	} else if _, ok := get(annAuthCacheDuration); ok {
		bad(annAuthCacheDuration, "ignored without %s%s", AnnotationPrefix, annAuthCacheKey)
	}
	if v, ok := get(annAuthAlwaysSetCookie); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(annAuthAlwaysSetCookie, "%q is not true or false%s", v, refused)
			refuse = true
		}
		ea.AlwaysSetCookie = b
	}
	if _, ok := get(annAuthProxySetHeaders); ok {
		bad(annAuthProxySetHeaders, "not supported by this version of Portico (the auth service would miss the headers the ConfigMap names)%s", refused)
		refuse = true
	}
	if _, ok := get(annAuthSnippet); ok {
		bad(annAuthSnippet, "nginx configuration is not supported%s", refused)
		refuse = true
	}
	for _, k := range authKeepaliveKeys {
		if _, ok := get(k); ok {
			bad(k, "ignored: Portico keeps its connections to auth services alive")
		}
	}
	return ea, refuse
}

// ExternalAuthOf reads the external authentication of an Ingress's annotations (keys with
// AnnotationPrefix), as the compiler does: nil without auth-url; refuse when it cannot be
// used; each problem names its annotation.
func ExternalAuthOf(annotations map[string]string) (ea *ExternalAuth, refuse bool, problems []string) {
	get := func(key string) (string, bool) {
		v, ok := annotations[AnnotationPrefix+key]
		return strings.TrimSpace(v), ok
	}
	bad := func(key, format string, args ...any) {
		problems = append(problems, fmt.Sprintf("annotation %s%s: %s", AnnotationPrefix, key, fmt.Sprintf(format, args...)))
	}
	ea, refuse = parseExternalAuth(get, bad)
	return ea, refuse, problems
}

// parseURL checks auth-url and compiles it: an http or https URL whose host is fixed or the
// request's, with variables in its path and query.
func (ea *ExternalAuth) parseURL(raw string) error {
	if strings.IndexFunc(raw, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return fmt.Errorf("%q holds a space, a control or a non-ASCII character", raw)
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	scheme = strings.ToLower(scheme)
	switch {
	case !ok:
		return fmt.Errorf("%q is not an http or https URL", raw)
	case scheme == "https":
		ea.tls, ea.portDefault = true, ":443"
	case scheme == "http":
		ea.portDefault = ":80"
	default:
		return fmt.Errorf("%q: the scheme is not http or https", raw)
	}
	authority, path := rest, "/"
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, path = rest[:i], rest[i:]
		if path[0] == '?' {
			path = "/" + path // nginx sends "/?…" for a URL with a query and no path
		}
	}
	if strings.ContainsAny(path, "#") {
		return fmt.Errorf("%q: a URL with a fragment", raw)
	}
	t, err := compileAuthTemplate(path)
	if err != nil {
		return fmt.Errorf("%q: %v", raw, err)
	}
	ea.target = t
	if strings.Contains(authority, "$") {
		ht, err := compileAuthTemplate(authority)
		if err != nil {
			return fmt.Errorf("%q: %v", raw, err)
		}
		switch {
		case len(ht.parts) == 1 && ht.parts[0].hostVar():
		case len(ht.parts) == 2 && ht.parts[0].kind == avHost && ht.parts[1].kind == avLiteral && validPort(ht.parts[1].text):
			ea.port, ht.parts = ht.parts[1].text, ht.parts[:1]
		default:
			return fmt.Errorf("%q: the host is neither fixed nor one of $host (with an optional port), $http_host, $best_http_host", raw)
		}
		ea.HostVaries, ea.hostT = true, ht
		return nil
	}
	u, err := url.Parse(scheme + "://" + authority + "/")
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	host := u.Hostname()
	if u.User != nil || host == "" || strings.Contains(host, "..") || (!validHostPort(host) && net.ParseIP(host) == nil) {
		return fmt.Errorf("%q: %q is not a host name", raw, authority)
	}
	ea.host, ea.addr = host, authority
	if strings.Contains(host, ":") {
		ea.host = "[" + host + "]"
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%q: bad port %q", raw, p)
		}
	} else {
		ea.addr = strings.TrimSuffix(authority, ":") + ea.portDefault
	}
	return nil
}

// parseSignin checks auth-signin, an http(s) URL or an absolute path with variables, and
// where the redirect parameter goes (ingress-nginx's buildAuthSignURL: after "?" when
// auth-signin has no query, after "&" when it has one without the parameter, nowhere when it
// sets the parameter).
func (ea *ExternalAuth) parseSignin(v string) error {
	if strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return fmt.Errorf("%q holds a space, a control or a non-ASCII character", v)
	}
	t, err := compileAuthTemplate(v)
	if err != nil {
		return fmt.Errorf("%q: %v", v, err)
	}
	u, err := url.Parse(v)
	if err != nil || u.Fragment != "" {
		return fmt.Errorf("%q is not a URL", v)
	}
	switch {
	case (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.User == nil:
	case u.Scheme == "" && u.Host == "" && strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "//"):
		ea.signinRel = true
	default:
		return fmt.Errorf("%q is neither an http(s) URL nor an absolute path", v)
	}
	ea.Signin, ea.signin = v, t
	q := u.Query()
	switch {
	case len(q) == 0:
		ea.signinQuery = '?'
	case q.Get(ea.SigninParam) == "":
		ea.signinQuery = '&'
	}
	return nil
}

// parseAuthCacheDurations reads auth-cache-duration: comma-separated rules, each statuses
// (three digits, or "any") then one or more nginx times that add up ("1h 30m"), as
// ingress-nginx's ValidCacheDuration; a rule without statuses caches 200, 301 and 302, as
// nginx's proxy_cache_valid.
func parseAuthCacheDurations(v string) ([]AuthCacheRule, error) {
	var rules []AuthCacheRule
	for _, spec := range strings.Split(v, ",") {
		fields := strings.Fields(spec)
		if len(fields) == 0 {
			continue
		}
		var r AuthCacheRule
		any, codes := false, 0
		for _, f := range fields {
			if d, ok := nginxTime(f); ok {
				r.TTL += d
				continue
			}
			if r.TTL > 0 {
				return nil, fmt.Errorf("%q: a status after the time", spec)
			}
			switch n, err := strconv.Atoi(f); {
			case f == "any":
				any = true
			case len(f) == 3 && err == nil && n >= 100:
				r.Statuses = append(r.Statuses, n)
				codes++
			default:
				return nil, fmt.Errorf("%q: %q is neither a status nor a time such as 5m", spec, f)
			}
		}
		switch {
		case r.TTL == 0:
			return nil, fmt.Errorf("%q has no time such as 5m", spec)
		case any:
			r.Statuses = nil
		case codes == 0:
			r.Statuses = []int{200, 301, 302}
		}
		rules = append(rules, r)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%q holds no rule", v)
	}
	return rules, nil
}

// nginxTime reads one nginx time: a number and a unit of ms, s, m, h, d, w, M (30 days), y (365
// days), the units ingress-nginx accepts.
func nginxTime(f string) (time.Duration, bool) {
	i := 0
	for i < len(f) && f[i] >= '0' && f[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(f[:i], 10, 32)
	if i == 0 || err != nil {
		return 0, false
	}
	u, ok := nginxTimeUnits[f[i:]]
	return time.Duration(n) * u, ok
}

var nginxTimeUnits = map[string]time.Duration{"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour,
	"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "M": 30 * 24 * time.Hour, "y": 365 * 24 * time.Hour}

// validPort: ":n" with n from 1 to 65535.
func validPort(s string) bool {
	n, err := strconv.Atoi(strings.TrimPrefix(s, ":"))
	return strings.HasPrefix(s, ":") && err == nil && n >= 1 && n <= 65535
}

// authTemplate is text with nginx variables, compiled once.
type authTemplate struct {
	src   string
	parts []authPart
}

type authPart struct {
	kind uint8
	text string // the literal, or the header or cookie name
}

const (
	avLiteral uint8 = iota
	avHost
	avHTTPHost
	avScheme
	avRequestURI
	avEscapedRequestURI
	avMethod
	avRemoteAddr
	avRemoteUser
	avRequestID
	avHeader
	avCookie
)

// authVars are the variables the templates know, by name.
var authVars = map[string]uint8{
	"host": avHost, "http_host": avHTTPHost, "best_http_host": avHTTPHost, "scheme": avScheme,
	"pass_access_scheme": avScheme, "request_uri": avRequestURI, "escaped_request_uri": avEscapedRequestURI,
	"request_method": avMethod, "remote_addr": avRemoteAddr, "remote_user": avRemoteUser, "request_id": avRequestID,
	"req_id": avRequestID,
}

// authVarList names them in problems.
const authVarList = "$host, $http_host, $best_http_host, $scheme, $pass_access_scheme, $request_uri, $escaped_request_uri, " +
	"$request_method, $remote_addr, $remote_user, $request_id, $req_id, $http_<name>, $cookie_<name>"

// hostVar: the part is a variable holding the request's host.
func (p authPart) hostVar() bool { return p.kind == avHost || p.kind == avHTTPHost }

// compileAuthTemplate reads text with nginx variables: $name or ${name}.
func compileAuthTemplate(s string) (authTemplate, error) {
	t := authTemplate{src: s}
	for rest := s; rest != ""; {
		i := strings.IndexByte(rest, '$')
		if i != 0 {
			if i < 0 {
				i = len(rest)
			}
			t.parts = append(t.parts, authPart{kind: avLiteral, text: rest[:i]})
			rest = rest[i:]
			continue
		}
		var name string
		if strings.HasPrefix(rest, "${") {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				return t, fmt.Errorf("%q has a ${ without }", s)
			}
			name, rest = rest[2:end], rest[end+1:]
		} else {
			j := 1
			for j < len(rest) && (rest[j] == '_' || rest[j] >= 'a' && rest[j] <= 'z' || rest[j] >= 'A' && rest[j] <= 'Z' || rest[j] >= '0' && rest[j] <= '9') {
				j++
			}
			name, rest = rest[1:j], rest[j:]
		}
		name = strings.ToLower(name)
		switch k, ok := authVars[name]; {
		case name == "":
			return t, fmt.Errorf("%q has a $ without a variable name", s)
		case ok:
			t.parts = append(t.parts, authPart{kind: k})
		case strings.HasPrefix(name, "http_") && len(name) > 5:
			t.parts = append(t.parts, authPart{kind: avHeader, text: strings.ReplaceAll(name[5:], "_", "-")})
		case strings.HasPrefix(name, "cookie_") && len(name) > 7:
			t.parts = append(t.parts, authPart{kind: avCookie, text: name[7:]})
		default:
			return t, fmt.Errorf("$%s is not supported (only %s)", name, authVarList)
		}
	}
	return t, nil
}

// append expands the template for a request. The variables' values are escaped by unsafe: a
// byte in it (or a control, space or non-ASCII byte) is percent-encoded; nil escapes nothing.
func (t *authTemplate) append(dst []byte, r AuthRequest, unsafe *[256]bool) []byte {
	for _, p := range t.parts {
		var v string
		switch p.kind {
		case avLiteral:
			dst = append(dst, p.text...)
			continue
		case avHost:
			dst = appendVarHost(dst, r.Host())
			continue
		case avEscapedRequestURI:
			dst = appendEscapedURI(dst, r.Target())
			continue
		case avHTTPHost:
			v = r.Host()
		case avScheme:
			v = r.Scheme()
		case avRequestURI:
			v = r.Target()
		case avMethod:
			v = r.Method()
		case avRemoteAddr:
			v = r.ClientIP()
		case avRemoteUser:
			v = remoteUser(r)
		case avRequestID:
			v = r.RequestID()
		case avHeader:
			v, _ = r.Header(p.text)
		case avCookie:
			v, _ = r.Cookie(p.text)
		}
		if unsafe == nil {
			dst = append(dst, v...)
			continue
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; unsafe[c] {
				dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
			} else {
				dst = append(dst, c)
			}
		}
	}
	return dst
}

const upperHex = "0123456789ABCDEF"

// appendVarHost appends nginx's $host of a Host header: without its port, in lower case.
func appendVarHost(dst []byte, host string) []byte {
	for _, c := range []byte(hostOnly(host)) {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// remoteUser is nginx's $remote_user: the user name of Basic credentials.
func remoteUser(r AuthRequest) string {
	v, ok := r.Header("Authorization")
	if !ok || len(v) < 6 || !strings.EqualFold(v[:6], "basic ") {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v[6:]))
	if err != nil {
		return ""
	}
	user, _, _ := strings.Cut(string(b), ":")
	return user
}

// targetUnsafe are the bytes a variable's value cannot put in a request target as they are
// (nginx would send them raw and break the request line): controls, space, non-ASCII and
// " # < > \ ^ ` { | }.
var targetUnsafe = byteSet("\"#<>\\^`{|}")

// escapedURIUnsafe is what set-misc's set_escape_uri (v0.33, which ingress-nginx builds in)
// escapes, $escaped_request_uri: controls, space, non-ASCII and " # % & + / : ; < = > ? [ \ ] ^
// { }.
var escapedURIUnsafe = byteSet("\"#%&+/:;<=>?[\\]^{}")

func byteSet(s string) *[256]bool {
	var set [256]bool
	for c := 0; c < 256; c++ {
		set[c] = c <= ' ' || c >= 0x7f
	}
	for i := 0; i < len(s); i++ {
		set[s[i]] = true
	}
	return &set
}

// appendEscapedURI appends s escaped as $escaped_request_uri.
func appendEscapedURI(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; escapedURIUnsafe[c] {
			dst = append(dst, '%', upperHex[c>>4], upperHex[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}

// ClearedHeaders are auth-response-headers each with an empty value: what a request let in
// without asking the auth service (satisfy any) carries, so that the client's own copies of
// those headers are removed rather than passed off as the auth service's.
func (ea *ExternalAuth) ClearedHeaders() [][2]string { return ea.cleared }
