package proxy

import (
	"container/list"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"portico.dev/portico/dataplane/route"
)

// External authentication (route.ExternalAuth, ingress-nginx's auth-url): before a request is
// forwarded, a sub-request goes to the auth service, built as ingress-nginx's auth location
// builds it (rootfs/etc/nginx/template/nginx.tmpl, "location = {{ $authPath }}"), and its
// answer is mapped as nginx's auth_request module maps it. Every serving path calls authorize
// once per request of a route with external authentication, after the proxy's own redirects
// and before anything of the request is forwarded.

// authInput is what a sub-request is built from: the client's request as received. header is
// ranged over more than once per call.
type authInput struct {
	method, scheme, host, target string // target: the request URI as the client sent it
	clientIP, requestID          string
	header                       func(yield func(name, value string) bool) // the client's header fields, as received
	// route names the route the request matched (its host and path): answers are cached per
	// route, as ingress-nginx keys its auth cache by server name and location, so that an
	// answer cached for one route never authorizes another's request.
	route string
}

// authResult is the auth service's verdict.
//
// upstream holds every name of auth-response-headers once, in order, with the value of the
// auth service's answer (its lines joined with ", ", nginx's $upstream_http_<name>). A value of
// "" means the answer had none: the request goes to the backend without that header. In both
// cases the client's lines of that name are removed first, so that a client cannot pass one
// off as the auth service's (ingress-nginx's proxy_set_header does both).
type authResult struct {
	allow    bool
	status   int         // when !allow: the status the client gets (401, 403, 500, or 302 to the signin URL)
	location string      // the signin redirect
	upstream [][2]string // headers to set on the request to the backend (auth-response-headers)
	response [][2]string // headers added to the client's answer (Set-Cookie; WWW-Authenticate on 401)
	// always: when allowed, response goes on the backend's answer whatever its status
	// (auth-always-set-cookie); otherwise only on the statuses of responseFor.
	always bool
}

// responseFor is what an allowed request's answer with this status gets of r.response: all
// of it with auth-always-set-cookie, else only on 200, 201, 204, 206, 301, 302, 303, 304, 307
// and 308 (nginx's add_header without always); nothing on the proxy's own errors then.
func (r *authResult) responseFor(status int) [][2]string {
	if r.always {
		return r.response
	}
	switch status {
	case 200, 201, 204, 206, 301, 302, 303, 304, 307, 308:
		return r.response
	}
	return nil
}

// Method, Scheme, Host, Target, ClientIP, RequestID, Header and Cookie make an authInput a
// route.AuthRequest, which the templates of auth-url, auth-signin and auth-cache-key read.
func (in *authInput) Method() string    { return in.method }
func (in *authInput) Scheme() string    { return in.scheme }
func (in *authInput) Host() string      { return in.host }
func (in *authInput) Target() string    { return in.target }
func (in *authInput) ClientIP() string  { return in.clientIP }
func (in *authInput) RequestID() string { return in.requestID }

// Header is every line of a header joined as nginx's $http_<name> joins them: with "; " for
// Cookie, ", " for the others.
func (in *authInput) Header(name string) (string, bool) {
	sep := ", "
	if strings.EqualFold(name, "Cookie") {
		sep = "; "
	}
	var v string
	found := false
	for n, value := range in.header {
		if strings.EqualFold(n, name) {
			if found {
				v += sep + value
			} else {
				v, found = value, true
			}
		}
	}
	return v, found
}

// Cookie is the first value of a cookie of the Cookie lines.
func (in *authInput) Cookie(name string) (string, bool) {
	for n, value := range in.header {
		if !strings.EqualFold(n, "Cookie") {
			continue
		}
		for _, c := range strings.Split(value, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(c), "="); ok && k == name {
				return v, true
			}
		}
	}
	return "", false
}

// authClient holds the connections to auth services and the cache of their answers, created
// on first use (a proxy without external authentication pays nothing).
type authClient struct {
	once      sync.Once
	transport *http.Transport
	cache     *authCache
	// dialTimeout bounds connecting (the proxy's DialTimeout, 5s by default);
	// responseTimeout waiting for the answer's head (10s). ingress-nginx's auth location sets
	// neither, so nginx's defaults apply there (60s each); Portico answers 500 sooner.
	dialTimeout, responseTimeout time.Duration
}

// Bounds of the answers cache: ingress-nginx's auth_cache zone keeps about 80,000 keys in 10 MB
// of shared memory; Portico keeps fewer, each with the headers the verdict reads.
const (
	authCacheEntries   = 16384
	authCacheBytes     = 16 << 20
	authMaxEntryBytes  = 64 << 10
	authDrainBytes     = 64 << 10 // of an answer's body, read so that its connection is reused
	authDefaultTimeout = 10 * time.Second
)

func (h *Handler) authClient() *authClient {
	a := &h.auth
	a.once.Do(func() {
		if a.dialTimeout == 0 {
			a.dialTimeout = h.opts.DialTimeout
		}
		if a.responseTimeout == 0 {
			a.responseTimeout = authDefaultTimeout
		}
		dialer := &net.Dialer{Timeout: a.dialTimeout, KeepAlive: 30 * time.Second}
		a.transport = &http.Transport{
			Proxy:                  nil, // never the environment's proxy
			DialContext:            dialer.DialContext,
			TLSClientConfig:        &tls.Config{InsecureSkipVerify: true}, // ingress-nginx: proxy_ssl_verify off
			TLSHandshakeTimeout:    a.dialTimeout,
			ResponseHeaderTimeout:  a.responseTimeout,
			MaxIdleConnsPerHost:    64,
			IdleConnTimeout:        60 * time.Second,
			DisableCompression:     true,
			MaxResponseHeaderBytes: 64 << 10,
		}
		a.cache = newAuthCache(authCacheEntries, authCacheBytes)
	})
	return a
}

// authorize asks ea's auth service about a request and returns its verdict. It fails closed:
// an auth service that cannot be reached, does not answer in time or answers anything but
// 2xx, 401 and 403 denies the request with 500. Called once per request of a route with
// external authentication, before the request's body is read.
func (h *Handler) authorize(ctx context.Context, ea *route.ExternalAuth, in *authInput) authResult {
	a := h.authClient()
	call, err := ea.Call(in)
	if err != nil {
		h.log.V(1).Info("External auth failed", "url", ea.URL, "error", err.Error())
		return authResult{status: http.StatusInternalServerError}
	}
	method := ea.Method
	if method == "" {
		method = http.MethodGet
	}
	var key [sha256.Size]byte
	cached := false
	if kb, ok := ea.AppendCacheKey(appendAuthScope(nil, in.route, method, &call), in); ok {
		key, cached = sha256.Sum256(kb), true
		if e, ok := a.cache.get(key, time.Now()); ok {
			return authVerdict(ea, in, e.status, e.values)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, a.dialTimeout+a.responseTimeout)
	defer cancel()
	resp, err := a.transport.RoundTrip(authRequest(ctx, ea, in, method, &call))
	if err != nil {
		h.log.V(1).Info("External auth failed", "url", ea.URL, "addr", call.Addr, "error", err.Error())
		return authResult{status: http.StatusInternalServerError}
	}
	_, _ = io.CopyN(io.Discard, resp.Body, authDrainBytes)
	_ = resp.Body.Close()
	values := resp.Header.Values
	if cached {
		if ttl := authCacheTTL(ea, resp.StatusCode, resp.Header, time.Now()); ttl > 0 {
			e := newAuthEntry(key, resp.StatusCode, ea, resp.Header, time.Now().Add(ttl))
			a.cache.put(e)
		}
	}
	return authVerdict(ea, in, resp.StatusCode, values)
}

// appendAuthScope starts a cache key: the route, the method and where the sub-request goes.
func appendAuthScope(b []byte, route, method string, c *route.AuthCall) []byte {
	for _, s := range [...]string{route, method, c.Addr, c.Host, c.Target} {
		b = append(b, s...)
		b = append(b, 0)
	}
	if c.TLS {
		b = append(b, 's')
	}
	return append(b, 0)
}

// authDropped are the client's headers a sub-request never carries: hop-by-hop and framing
// headers (no body is sent), and the headers the proxy sets or that an auth service may
// trust to come from the proxy (client-sent ones would let a client tell the auth service what
// it asked for). ingress-nginx replaces most of them; it passes a client's X-Forwarded-Host,
// -Port, -Uri and X-Original-URI through (unset by it), which Portico drops, so that an auth
// service gets what ingress-nginx sends an honest client's request.
var authDropped = map[string]bool{
	"Host": true, "Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true, "Expect": true, "Proxy-Authorization": true,
	"Http2-Settings": true, "X-Real-Ip": true, "X-Original-Url": true, "X-Original-Method": true, "X-Original-Uri": true,
	"X-Scheme": true, "X-Sent-From": true, "X-Auth-Request-Redirect": true, "X-Request-Id": true,
}

// authRequest builds the sub-request: method, auth-url's target and host; the client's
// headers but those above and those its Connection names; no body; and ingress-nginx's
// headers: X-Original-URL, X-Original-Method, X-Sent-From, X-Real-IP, X-Forwarded-For,
// X-Auth-Request-Redirect, X-Request-ID, and with auth-method X-Original-URI and X-Scheme.
func authRequest(ctx context.Context, ea *route.ExternalAuth, in *authInput, method string, c *route.AuthCall) *http.Request {
	var conn []string
	for name, value := range in.header {
		if strings.EqualFold(name, "Connection") || strings.EqualFold(name, "Proxy-Connection") {
			for _, t := range strings.Split(value, ",") {
				if t = strings.TrimSpace(t); t != "" {
					conn = append(conn, textproto.CanonicalMIMEHeaderKey(t))
				}
			}
		}
	}
	hdr := make(http.Header, 16)
	for name, value := range in.header {
		k := textproto.CanonicalMIMEHeaderKey(name)
		if authDropped[k] || strings.HasPrefix(k, "X-Forwarded-") || containsString(conn, k) {
			continue
		}
		hdr[k] = append(hdr[k], value)
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = []string{""} // none rather than Go's
	}
	// The names as nginx writes them (ingress-nginx's spelling), not Go's canonical form.
	if in.requestID != "" {
		hdr["X-Request-ID"] = []string{in.requestID}
	}
	if ea.Method != "" {
		hdr["X-Original-URI"] = []string{in.target}
		hdr["X-Scheme"] = []string{in.scheme}
	}
	hdr["X-Original-URL"] = []string{in.scheme + "://" + in.host + in.target}
	hdr["X-Original-Method"] = []string{in.method}
	hdr["X-Sent-From"] = []string{"nginx-ingress-controller"}
	hdr["X-Real-IP"] = []string{in.clientIP}
	hdr["X-Forwarded-For"] = []string{in.clientIP}
	redirect := ea.RequestRedirect
	if redirect == "" {
		redirect = in.target
	}
	hdr["X-Auth-Request-Redirect"] = []string{redirect}

	u := &url.URL{Scheme: "http", Host: c.Addr}
	if c.TLS {
		u.Scheme = "https"
	}
	path, query, hasQuery := strings.Cut(c.Target, "?")
	if strings.HasPrefix(path, "//") {
		path = "//" + c.Host + path // the absolute form: "//…" alone would read as a host
	}
	u.Opaque, u.RawQuery, u.ForceQuery = path, query, hasQuery && query == ""
	return (&http.Request{Method: method, URL: u, Host: c.Host, Header: hdr, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
}

func containsString(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// authVerdict maps an answer of the auth service as nginx's auth_request module and
// ingress-nginx's configuration do: 2xx allows (auth-response-headers to the backend,
// Set-Cookie to the client's answer); 401 denies with the answer's WWW-Authenticate, or
// redirects (302) to auth-signin, Set-Cookie included; 403 denies; anything else is a 500.
// On a denial, Set-Cookie goes on the client's answer only with auth-always-set-cookie. values
// reads the answer's header lines.
func authVerdict(ea *route.ExternalAuth, in *authInput, status int, values func(string) []string) authResult {
	cookies := values("Set-Cookie")
	var r authResult
	switch {
	case status >= 200 && status < 300:
		r.allow, r.always = true, ea.AlwaysSetCookie
		if len(ea.ResponseHeaders) > 0 {
			r.upstream = make([][2]string, len(ea.ResponseHeaders))
			for i, name := range ea.ResponseHeaders {
				r.upstream[i] = [2]string{name, strings.Join(values(name), ", ")}
			}
		}
		r.response = appendLines(nil, "Set-Cookie", cookies)
		return r
	case status == http.StatusUnauthorized:
		r.status = status
		r.response = appendLines(nil, "WWW-Authenticate", values("WWW-Authenticate"))
		if r.location = ea.SigninLocation(in); r.location != "" {
			r.status = http.StatusFound
			return authWithCookies(r, cookies)
		}
	case status == http.StatusForbidden:
		r.status = status
	default:
		r.status = http.StatusInternalServerError
	}
	if ea.AlwaysSetCookie {
		r = authWithCookies(r, cookies)
	}
	return r
}

func authWithCookies(r authResult, cookies []string) authResult {
	r.response = appendLines(r.response, "Set-Cookie", cookies)
	return r
}

func appendLines(dst [][2]string, name string, values []string) [][2]string {
	for _, v := range values {
		dst = append(dst, [2]string{name, v})
	}
	return dst
}

// authCacheTTL is how long an answer is cached, as nginx's proxy_cache decides (ingress-nginx
// sets no proxy_ignore_headers there): never with Set-Cookie; X-Accel-Expires, else
// Cache-Control (no-cache, no-store and private: never; s-maxage, else max-age), else Expires
// decide when present, whatever the status; else auth-cache-duration by status. An answer
// with Vary is not cached (nginx keeps a variant per value of the headers it names).
func authCacheTTL(ea *route.ExternalAuth, status int, h http.Header, now time.Time) time.Duration {
	if len(h["Set-Cookie"]) > 0 || len(h["Vary"]) > 0 {
		return 0
	}
	if v := h.Get("X-Accel-Expires"); v != "" {
		if at, ok := strings.CutPrefix(v, "@"); ok {
			if n, err := strconv.ParseInt(at, 10, 64); err == nil {
				return time.Unix(n, 0).Sub(now)
			}
		} else if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
			return time.Duration(n) * time.Second
		}
	}
	if cc := strings.ToLower(strings.Join(h["Cache-Control"], ",")); cc != "" {
		if strings.Contains(cc, "no-cache") || strings.Contains(cc, "no-store") || strings.Contains(cc, "private") {
			return 0
		}
		i, off := strings.Index(cc, "s-maxage="), len("s-maxage=")
		if i < 0 {
			i, off = strings.Index(cc, "max-age="), len("max-age=")
		}
		if i >= 0 {
			n := 0
			for _, c := range []byte(cc[i+off:]) {
				if c == ',' || c == ';' || c == ' ' {
					break
				}
				if c < '0' || c > '9' || n > 1<<30 {
					return 0
				}
				n = n*10 + int(c-'0')
			}
			return time.Duration(n) * time.Second
		}
	}
	if v := h.Get("Expires"); v != "" {
		t, err := http.ParseTime(v)
		if err != nil {
			return 0
		}
		return t.Sub(now)
	}
	return ea.CacheTTL(status)
}

// authEntry is a cached answer: its status and the header lines a verdict reads.
type authEntry struct {
	key     [sha256.Size]byte
	status  int
	lines   [][2]string
	expires time.Time
	size    int
}

func newAuthEntry(key [sha256.Size]byte, status int, ea *route.ExternalAuth, h http.Header, expires time.Time) *authEntry {
	e := &authEntry{key: key, status: status, expires: expires, size: 128}
	names := append([]string{"WWW-Authenticate"}, ea.ResponseHeaders...)
	for _, name := range names {
		for _, v := range h.Values(name) {
			e.lines = append(e.lines, [2]string{name, v})
			e.size += len(name) + len(v) + 32
		}
	}
	return e
}

// values reads a cached answer's header lines.
func (e *authEntry) values(name string) []string {
	var vs []string
	for _, l := range e.lines {
		if strings.EqualFold(l[0], name) {
			vs = append(vs, l[1])
		}
	}
	return vs
}

// authCache holds answers of auth services, the least recently used evicted past its bounds
// (entries and bytes); an entry past its expiry is never used.
type authCache struct {
	mu                   sync.Mutex
	entries              map[[sha256.Size]byte]*list.Element
	lru                  list.List // of *authEntry, most recent first
	bytes                int
	maxEntries, maxBytes int
}

func newAuthCache(maxEntries, maxBytes int) *authCache {
	return &authCache{entries: make(map[[sha256.Size]byte]*list.Element), maxEntries: maxEntries, maxBytes: maxBytes}
}

func (c *authCache) get(key [sha256.Size]byte, now time.Time) (*authEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*authEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return e, true
}

func (c *authCache) put(e *authEntry) {
	if e.size > authMaxEntryBytes || e.size > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok {
		c.remove(el)
	}
	c.entries[e.key] = c.lru.PushFront(e)
	c.bytes += e.size
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.remove(c.lru.Back())
	}
}

func (c *authCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*authEntry)
	delete(c.entries, e.key)
	c.bytes -= e.size
}
