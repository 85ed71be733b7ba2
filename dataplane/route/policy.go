package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Policy is what a route does to a request besides choosing its backend: redirects, rewrites,
// header modifiers, timeouts, body size, canary. It is compiled once (from an Ingress's
// annotations today, from a Gateway API HTTPRoute rule later) and is immutable; a route without
// policy has a nil *Policy and costs nothing per request. Every serving path applies it through
// the methods below, which decide; the paths only write the result in their own framing
// (docs/architecture.md, "Routes and policy").
type Policy struct {
	// Access is the route's access control (source ranges, authentication, CORS, limits),
	// nil for none.
	Access *Access
	// NoAccessLog: the route's requests are not written to the access log (enable-access-log
	// false).
	NoAccessLog bool
	// Refuse, when set, answers every request of the route with 503 and this message: an
	// access-control setting the proxy cannot enforce (fail closed).
	Refuse string
	// ClientAuth is the client certificate authentication of the route's host (auth-tls-*),
	// which every serving path checks before the rest of the policy; nil for none.
	ClientAuth *ClientAuth
	// HostRedirect answers every request with a 308 to the same URI on this host
	// (from-to-www-redirect).
	HostRedirect string
	// Redirect answers every request of the route with a redirect; nothing is forwarded.
	Redirect *Redirect
	// SSLRedirect redirects requests that came over plain HTTP to HTTPS (308): set by
	// force-ssl-redirect, or by ssl-redirect (on by default) on a host whose TLS an Ingress
	// configures. KeepTrailingSlash is preserve-trailing-slash (ingress-nginx drops a trailing
	// slash of the request URI in that redirect).
	SSLRedirect       bool
	KeepTrailingSlash bool
	// ForceSSL is force-ssl-redirect: the ACME challenge path is redirected too.
	ForceSSL bool
	// AppRoot redirects (302) a request for "/" to this path.
	AppRoot string
	// Rewrite replaces the request path before the request is forwarded.
	Rewrite *Rewrite
	// UpstreamHost replaces the Host header the backend gets (upstream-vhost).
	UpstreamHost string
	// ForwardedPrefix is sent to the backend as X-Forwarded-Prefix.
	ForwardedPrefix string
	// RequestHeaders and ResponseHeaders modify the request the backend gets and the answer
	// the client gets.
	RequestHeaders, ResponseHeaders HeaderOps
	// ConnectTimeout and ReadTimeout override the proxy's dial and response-head timeouts
	// when not zero.
	ConnectTimeout, ReadTimeout time.Duration
	// SendTimeout overrides the proxy's send timeout (a pause in sending the request body)
	// when not zero.
	SendTimeout time.Duration
	// MaxBodyBytes overrides the fleet's request body limit when HasMaxBody (0: no limit).
	MaxBodyBytes int64
	HasMaxBody   bool
	// Canary sends some requests to another backend.
	Canary *Canary
	// Affinity is the cookie that pins a client to an endpoint, on a Backend with Affinity
	// (nil: DefaultAffinityCookie).
	Affinity *AffinityCookie
	// Hash picks the endpoint by a consistent hash of parts of the request (upstream-hash-by)
	// on a Backend with a ring.
	Hash *HashKey
	// Retry says when a request goes on to another endpoint (proxy-next-upstream); nil: the
	// proxy's own rules.
	Retry *RetryPolicy
	// ErrorBackend answers for the route's backend when it has no endpoint (default-backend),
	// and answers the errors the route intercepts.
	ErrorBackend *Backend
	// Mirror receives a copy of each request of the route without a body (its answer is
	// dropped; the route's answer is the backend's).
	Mirror *Backend
	// InterceptErrors are the statuses (custom-http-errors) whose answers are replaced by the
	// error backend's (ErrorBackend, else the fleet's default backend) to a GET with X-Code.
	InterceptErrors []int
}

// Intercepts reports whether an answer with this status is replaced by the error backend's.
func (p *Policy) Intercepts(code int) bool {
	for _, c := range p.InterceptErrors {
		if c == code {
			return true
		}
	}
	return false
}

// RetryPolicy is proxy-next-upstream and proxy-next-upstream-tries: the failures after which a
// request goes on to another endpoint, and how many endpoints it tries in all.
type RetryPolicy struct {
	On RetryOn
	// Tries bounds the endpoints tried, the first included; 0: no bound but the endpoints.
	Tries int
	// Timeout bounds the time from the request's start during which it may go on to another
	// endpoint (proxy-next-upstream-timeout); 0: no bound.
	Timeout time.Duration
}

// Within reports whether a request that started at start may still go on to another endpoint
// at now.
func (r *RetryPolicy) Within(start, now time.Time) bool {
	return r.Timeout == 0 || now.Sub(start) < r.Timeout
}

// RetryOn is a set of failures a request is sent again after.
type RetryOn uint16

// The failures of proxy-next-upstream.
const (
	RetryError         RetryOn = 1 << iota // the connection failed or closed before an answer
	RetryTimeout                           // connecting or the answer's head timed out
	RetryNonIdempotent                     // also requests whose method is not idempotent (without a body)
	Retry500
	Retry502
	Retry503
	Retry504
	Retry403
	Retry404
	Retry429
)

// OnStatus reports whether an answer with this status sends the request on.
func (r *RetryPolicy) OnStatus(code int) bool {
	var bit RetryOn
	switch code {
	case 500:
		bit = Retry500
	case 502:
		bit = Retry502
	case 503:
		bit = Retry503
	case 504:
		bit = Retry504
	case 403:
		bit = Retry403
	case 404:
		bit = Retry404
	case 429:
		bit = Retry429
	}
	return bit != 0 && r.On&bit != 0
}

// More reports whether a request that has tried n endpoints may try another.
func (r *RetryPolicy) More(n int) bool { return r.Tries == 0 || n < r.Tries }

// AffinityCookie is the cookie of session affinity: its name and the attributes that follow
// its value in Set-Cookie.
type AffinityCookie struct {
	Name string
	// Attrs follow the value: "; Path=/; HttpOnly; SameSite=Lax" and the like.
	Attrs string
	// Expires, when set, adds an Expires attribute that far from the answer's time.
	Expires time.Duration
}

// DefaultAffinityCookie is the affinity cookie of routes that do not name one.
var DefaultAffinityCookie = &AffinityCookie{Name: "portico-affinity", Attrs: "; Path=/; HttpOnly; SameSite=Lax"}

// AppendSetCookie appends the Set-Cookie value pinning a client to the endpoint with key.
func (a *AffinityCookie) AppendSetCookie(dst []byte, key string, now time.Time) []byte {
	dst = append(dst, a.Name...)
	dst = append(dst, '=')
	dst = append(dst, key...)
	dst = append(dst, a.Attrs...)
	if a.Expires > 0 {
		dst = append(dst, "; Expires="...)
		dst = now.Add(a.Expires).UTC().AppendFormat(dst, http.TimeFormat)
	}
	return dst
}

// HashKey is what a consistent hash reads of a request: nginx variables ($request_uri, $uri,
// $host, $remote_addr, $http_<name>, $cookie_<name>, $arg_<name>) and text between them.
type HashKey struct {
	// Source is the annotation's value, for printing.
	Source string
	parts  []hashPart
}

type hashPart struct {
	kind uint8
	text string // the literal, or the header, cookie or argument name
}

const (
	hashLiteral uint8 = iota
	hashRequestURI
	hashURI
	hashHost
	hashRemoteAddr
	hashHeader
	hashCookie
	hashArg
)

// ParseHashKey reads an upstream-hash-by value.
func ParseHashKey(v string) (*HashKey, error) {
	k := &HashKey{Source: v}
	for rest := v; rest != ""; {
		i := strings.IndexByte(rest, '$')
		if i != 0 {
			if i < 0 {
				i = len(rest)
			}
			k.parts = append(k.parts, hashPart{kind: hashLiteral, text: rest[:i]})
			rest = rest[i:]
			continue
		}
		j := 1
		for j < len(rest) && (rest[j] == '_' || rest[j] >= 'a' && rest[j] <= 'z' || rest[j] >= 'A' && rest[j] <= 'Z' || rest[j] >= '0' && rest[j] <= '9') {
			j++
		}
		name := strings.ToLower(rest[1:j])
		rest = rest[j:]
		switch {
		case name == "request_uri":
			k.parts = append(k.parts, hashPart{kind: hashRequestURI})
		case name == "uri":
			k.parts = append(k.parts, hashPart{kind: hashURI})
		case name == "host":
			k.parts = append(k.parts, hashPart{kind: hashHost})
		case name == "remote_addr" || name == "binary_remote_addr":
			k.parts = append(k.parts, hashPart{kind: hashRemoteAddr})
		case strings.HasPrefix(name, "http_") && len(name) > 5:
			k.parts = append(k.parts, hashPart{kind: hashHeader, text: strings.ReplaceAll(name[5:], "_", "-")})
		case strings.HasPrefix(name, "cookie_") && len(name) > 7:
			k.parts = append(k.parts, hashPart{kind: hashCookie, text: name[7:]})
		case strings.HasPrefix(name, "arg_") && len(name) > 4:
			k.parts = append(k.parts, hashPart{kind: hashArg, text: name[4:]})
		default:
			return nil, fmt.Errorf("$%s is not one of $request_uri, $uri, $host, $remote_addr, $http_<name>, $cookie_<name>, $arg_<name>", name)
		}
	}
	if len(k.parts) == 0 {
		return nil, fmt.Errorf("empty")
	}
	return k, nil
}

// Sum hashes the request's parts (FNV-1a, 64 bits), without allocating. path is the cleaned
// request path ($uri).
func (k *HashKey) Sum(r Request, path string) uint64 {
	h := uint64(14695981039346656037)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= 1099511628211
		}
	}
	for _, p := range k.parts {
		switch p.kind {
		case hashLiteral:
			add(p.text)
		case hashRequestURI:
			add(r.Target())
		case hashURI:
			add(path)
		case hashHost:
			add(r.Host())
		case hashRemoteAddr:
			add(r.ClientIP())
		case hashHeader:
			v, _ := r.Header(p.text)
			add(v)
		case hashCookie:
			v, _ := r.Cookie(p.text)
			add(v)
		case hashArg:
			add(queryArg(r.Target(), p.text))
		}
	}
	return mix64(h)
}

// queryArg is the first value of a query argument of a request target ("" for none).
func queryArg(target, name string) string {
	v, _ := queryValue(target, name)
	return v
}

// queryValue is the first value of a query argument of a request target, as sent (not
// decoded), and whether the target has the argument.
func queryValue(target, name string) (string, bool) {
	_, q, ok := strings.Cut(target, "?")
	for ok && q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		if k, v, _ := strings.Cut(kv, "="); k == name {
			return v, true
		}
	}
	return "", false
}

// Request is what a policy reads of a request beyond its host and path. Each serving path
// implements it over its own representation of the request, without copying it; values
// returned may point into the request's buffers and must not be kept past the call.
type Request interface {
	// Method is the request method.
	Method() string
	// Target is the request target as the client sent it (path and query), Host its Host
	// header, ClientIP the client's address.
	Target() string
	Host() string
	ClientIP() string
	// Header is the first value of a header (name in any case), and whether there is one.
	Header(name string) (string, bool)
	// Cookie is the value of a cookie, and whether there is one.
	Cookie(name string) (string, bool)
}

// Redirect answers a route's requests with a redirect: to a fixed URL (permanent-redirect,
// temporal-redirect), or (URL empty) to the request's own URL with the parts set here replaced
// (Gateway API's RequestRedirect filter).
type Redirect struct {
	Code int
	URL  string
	// Scheme, Hostname and Port replace the request's; Port 0 keeps the request's port, unless
	// the scheme changes (then the new scheme's default is used, and left out).
	Scheme, Hostname string
	Port             int
	// Path replaces the whole path; PrefixPath replaces the part the route's prefix matched.
	// The query is kept.
	Path, PrefixPath string
}

// location composes a component redirect's Location for a request u of route r.
func (rd *Redirect) location(u *RequestURI) string {
	scheme := "http"
	if u.TLS {
		scheme = "https"
	}
	host := hostOnly(u.Host)
	port := u.Host[len(host):] // ":8080" or ""
	if rd.Scheme != "" && rd.Scheme != scheme {
		scheme, port = rd.Scheme, ""
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if rd.Port != 0 {
		port = ":" + strconv.Itoa(rd.Port)
		if (scheme == "http" && rd.Port == 80) || (scheme == "https" && rd.Port == 443) {
			port = ""
		}
	}
	target := u.Target
	path, query, hasQuery := strings.Cut(target, "?")
	switch {
	case rd.Path != "":
		path = rd.Path
	case rd.PrefixPath != "" && u.Rule != nil:
		rw := Rewrite{Prefix: rd.PrefixPath}
		path = string(rw.AppendTarget(nil, u.Rule, u.Path, ""))
	}
	loc := scheme + "://" + host + port + path
	if hasQuery {
		loc += "?" + query
	}
	return loc
}

// Rewrite replaces the path a route's requests are forwarded with. Exactly one field is set.
type Rewrite struct {
	// Template replaces the whole path; $1 to $9 are the capture groups of the route's
	// regular expression ($0 the whole match). As nginx's rewrite, a template with a query
	// string puts the request's query after its own, unless it ends in "?".
	Template string
	// Prefix replaces the part of the path the route's prefix matched (Gateway API's
	// ReplacePrefixMatch).
	Prefix string
}

// HeaderOps modify a message's headers: Remove and Set take the named headers out (every
// line of them), then Set and Add lines are appended. Names are canonical, values checked
// (no CR, LF or NUL) at compile time.
type HeaderOps struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is one header line.
type Header struct{ Name, Value string }

// Empty reports whether the ops change nothing.
func (o *HeaderOps) Empty() bool { return len(o.Set) == 0 && len(o.Add) == 0 && len(o.Remove) == 0 }

// Drops reports whether a header line named name is taken out (by Remove or Set). Called per
// header line of a message whose route has header ops.
func (o *HeaderOps) Drops(name []byte) bool {
	for i := range o.Set {
		if equalFoldBytes(name, o.Set[i].Name) {
			return true
		}
	}
	for _, r := range o.Remove {
		if equalFoldBytes(name, r) {
			return true
		}
	}
	return false
}

// AppendLines appends the Set and Add lines to a head under construction.
func (o *HeaderOps) AppendLines(b []byte) []byte {
	for _, l := range [2][]Header{o.Set, o.Add} {
		for _, h := range l {
			b = append(b, h.Name...)
			b = append(b, ": "...)
			b = append(b, h.Value...)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

// Apply applies the ops to a header map (the net/http path).
func (o *HeaderOps) Apply(h http.Header) {
	for _, r := range o.Remove {
		h.Del(r)
	}
	for _, s := range o.Set {
		h.Set(s.Name, s.Value)
	}
	for _, a := range o.Add {
		h.Add(a.Name, a.Value)
	}
}

func equalFoldBytes(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x|0x20 != y|0x20 || (x|0x20) < 'a' || (x|0x20) > 'z' {
			if x != y {
				return false
			}
		}
	}
	return true
}

// Canary sends a share of a route's requests to another backend, as ingress-nginx's canary
// Ingresses do: by header, then by cookie, then by weight.
type Canary struct {
	Backend *Backend
	// Ingress is the canary Ingress, as "namespace/name" (for metrics and logs).
	IngressName string
	// Header, when the request has it: HeaderValue equal, or HeaderPattern matching (when no
	// HeaderValue), sends to the canary; without either, "always" and "never" decide. Any
	// other value goes on to the cookie.
	Header        string
	HeaderValue   string
	HeaderPattern *regexp.Regexp
	// Cookie "always" or "never" decides; any other value goes on to the weight.
	Cookie string
	// Weight out of WeightTotal (default 100) requests go to the canary.
	Weight, WeightTotal int
}

// Takes reports whether a request goes to the canary backend. Called once per request of a
// route with a canary.
func (c *Canary) Takes(r Request) bool {
	if c.Header != "" {
		if v, ok := r.Header(c.Header); ok {
			switch {
			case c.HeaderValue != "":
				if v == c.HeaderValue {
					return true
				}
			case c.HeaderPattern != nil:
				if c.HeaderPattern.MatchString(v) {
					return true
				}
			case v == "always":
				return true
			case v == "never":
				return false
			}
		}
	}
	if c.Cookie != "" {
		if v, ok := r.Cookie(c.Cookie); ok {
			switch v {
			case "always":
				return true
			case "never":
				return false
			}
		}
	}
	if c.Weight <= 0 {
		return false
	}
	total := c.WeightTotal
	if total <= 0 {
		total = 100
	}
	return rand.IntN(total) < c.Weight
}

// RequestURI is the target of a request as the redirects read it.
type RequestURI struct {
	// Host is the Host header, Path the cleaned, decoded path, Target the request target as
	// the client sent it (path and query), TLS whether the request came over HTTPS.
	Host, Path, Target string
	TLS                bool
	// HTTPSPort is the port HTTPS is served on (omitted from redirects when 443).
	HTTPSPort string
	// Rule is the route matched (for a redirect that replaces its prefix).
	Rule *Rule
}

// RedirectFor decides whether a request is answered with a redirect, in ingress-nginx's
// order (nginx's phases): the www. counterpart's, app-root, the route's fixed redirect, then
// to HTTPS. It returns the status
// and Location, or 0. Called once per request of a route with policy; allocates only when it
// redirects.
func (p *Policy) RedirectFor(u *RequestURI) (int, string) {
	if p.HostRedirect != "" {
		target := strings.TrimSuffix(u.Target, "/")
		scheme, host := "http://", p.HostRedirect
		if u.TLS {
			scheme = "https://"
		}
		if h := hostOnly(u.Host); len(h) < len(u.Host) {
			host += u.Host[len(h):] // the port the client used
		}
		return http.StatusPermanentRedirect, scheme + host + target
	}
	if p.AppRoot != "" && u.Path == "/" {
		scheme := "http://"
		if u.TLS {
			scheme = "https://"
		}
		return http.StatusFound, scheme + u.Host + p.AppRoot
	}
	if rd := p.Redirect; rd != nil {
		if rd.URL != "" {
			return rd.Code, rd.URL
		}
		return rd.Code, rd.location(u)
	}
	if p.SSLRedirect && !u.TLS && (p.ForceSSL || !strings.HasPrefix(u.Path, acmeChallenge)) {
		target := u.Target
		if !p.KeepTrailingSlash && len(target) > 0 && target[len(target)-1] == '/' {
			target = target[:len(target)-1]
		}
		host := hostOnly(u.Host)
		if u.HTTPSPort != "" && u.HTTPSPort != "443" {
			host += ":" + u.HTTPSPort
		}
		return http.StatusPermanentRedirect, "https://" + host + target
	}
	return 0, ""
}

// acmeChallenge is where ACME HTTP-01 challenges are answered: never redirected to HTTPS by
// ssl-redirect (force-ssl-redirect does), so that certificates can be issued and renewed.
const acmeChallenge = "/.well-known/acme-challenge/"

// hostOnly strips the port of a Host header value.
func hostOnly(h string) string {
	if strings.HasPrefix(h, "[") {
		if i := strings.IndexByte(h, ']'); i > 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		return h[:i]
	}
	return h
}

// AppendTarget appends the request target the backend gets to dst: the rewritten path
// (escaped) and the query. path is the cleaned, decoded request path the route matched, query
// the request's query (without "?"). r is the route, whose expression gives the captures. As in
// nginx, whether the template sets a query is read from the template itself: a "?" a capture
// brings in (from a decoded %3F) stays in the path, escaped.
func (rw *Rewrite) AppendTarget(dst []byte, r *Rule, path, query string) []byte {
	if rw.Template == "" {
		rest := path
		switch {
		case r.Type == Exact:
			rest = ""
		case r.Type == Prefix && r.Path != "/":
			rest = path[len(r.Path):]
		case r.Type == Prefix:
			rest = path[1:]
		case r.Type == Regex:
			if n := r.matchLen(path); n >= 0 {
				rest = path[n:]
			}
		}
		p := rw.Prefix
		switch {
		case rest == "":
		case strings.HasSuffix(p, "/") && rest[0] == '/':
			p += rest[1:]
		case !strings.HasSuffix(p, "/") && rest[0] != '/':
			p += "/" + rest
		default:
			p += rest
		}
		if p == "" {
			p = "/"
		}
		dst = appendEscaped(dst, p, pathUnsafe)
		if query != "" {
			dst = append(dst, '?')
			dst = append(dst, query...)
		}
		return dst
	}
	var m []int
	if r.re != nil {
		m = r.re.FindStringSubmatchIndex(path)
	} else if n := r.matchLen(path); n >= 0 {
		m = []int{0, n}
	}
	pathTmpl, queryTmpl, hasQuery := strings.Cut(rw.Template, "?")
	dst = appendEscaped(dst, string(expand(nil, pathTmpl, path, m)), pathUnsafe)
	keepQuery := true
	if hasQuery {
		if strings.HasSuffix(queryTmpl, "?") || (queryTmpl == "" && strings.HasSuffix(rw.Template, "?")) {
			keepQuery, queryTmpl = false, strings.TrimSuffix(queryTmpl, "?") // "…?" drops the request's query
		}
		if queryTmpl != "" {
			dst = append(dst, '?')
			dst = appendEscaped(dst, string(expand(nil, queryTmpl, path, m)), queryUnsafe)
		}
	}
	if keepQuery && query != "" {
		if hasQuery && queryTmpl != "" {
			dst = append(dst, '&')
		} else {
			dst = append(dst, '?')
		}
		dst = append(dst, query...)
	}
	return dst
}

// expand writes template with $0-$9 replaced by the groups m (indexes into s) give.
func expand(dst []byte, template, s string, m []int) []byte {
	for i := 0; i < len(template); i++ {
		c := template[i]
		if c == '$' && i+1 < len(template) && template[i+1] >= '0' && template[i+1] <= '9' {
			g := int(template[i+1] - '0')
			i++
			if 2*g+1 < len(m) && m[2*g] >= 0 {
				dst = append(dst, s[m[2*g]:m[2*g+1]]...)
			}
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// What appendEscaped percent-encodes besides controls, space and non-ASCII (as nginx escapes a
// rewritten URI): in a path, " # % < > ? \ ^ ` { | }; in a query, " # < > \ ^ ` { | }.
const (
	pathUnsafe  = "\"#%<>?\\^`{|}"
	queryUnsafe = "\"#<>\\^`{|}"
)

// appendEscaped appends s, percent-encoding controls, space, non-ASCII and the bytes in unsafe.
func appendEscaped(dst []byte, s, unsafe string) []byte {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(unsafe, c) >= 0 {
			dst = append(dst, '%', hex[c>>4], hex[c&15])
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

// String prints the policy for golden files and debugging, one clause per set field.
func (p *Policy) String() string {
	if p == nil {
		return ""
	}
	var b []string
	if p.Refuse != "" {
		b = append(b, "refuse")
	}
	if a := p.Access; a != nil {
		b = append(b, a.String())
	}
	if p.NoAccessLog {
		b = append(b, "no-access-log")
	}
	if p.HostRedirect != "" {
		b = append(b, "host-redirect="+p.HostRedirect)
	}
	if rd := p.Redirect; rd != nil {
		s := "redirect=" + strconv.Itoa(rd.Code) + " " + rd.URL
		if rd.URL == "" {
			s += fmt.Sprintf("{scheme=%s host=%s port=%d path=%s prefix=%s}", rd.Scheme, rd.Hostname, rd.Port, rd.Path, rd.PrefixPath)
		}
		b = append(b, s)
	}
	if p.SSLRedirect {
		s := "ssl-redirect"
		if p.KeepTrailingSlash {
			s += "(keep-slash)"
		}
		b = append(b, s)
	}
	if p.AppRoot != "" {
		b = append(b, "app-root="+p.AppRoot)
	}
	if rw := p.Rewrite; rw != nil {
		if rw.Prefix != "" {
			b = append(b, "rewrite-prefix="+rw.Prefix)
		} else {
			b = append(b, "rewrite="+rw.Template)
		}
	}
	if p.UpstreamHost != "" {
		b = append(b, "upstream-host="+p.UpstreamHost)
	}
	if p.ForwardedPrefix != "" {
		b = append(b, "x-forwarded-prefix="+p.ForwardedPrefix)
	}
	for _, x := range []struct {
		name string
		ops  *HeaderOps
	}{{"request", &p.RequestHeaders}, {"response", &p.ResponseHeaders}} {
		for _, h := range x.ops.Set {
			b = append(b, x.name+"-set="+h.Name+":"+h.Value)
		}
		for _, h := range x.ops.Add {
			b = append(b, x.name+"-add="+h.Name+":"+h.Value)
		}
		for _, n := range x.ops.Remove {
			b = append(b, x.name+"-remove="+n)
		}
	}
	if p.ConnectTimeout > 0 {
		b = append(b, "connect-timeout="+p.ConnectTimeout.String())
	}
	if p.ReadTimeout > 0 {
		b = append(b, "read-timeout="+p.ReadTimeout.String())
	}
	if p.SendTimeout > 0 {
		b = append(b, "send-timeout="+p.SendTimeout.String())
	}
	if p.HasMaxBody {
		b = append(b, "max-body="+strconv.FormatInt(p.MaxBodyBytes, 10))
	}
	if a := p.Affinity; a != nil {
		s := "affinity-cookie=" + a.Name + a.Attrs
		if a.Expires > 0 {
			s += "; Expires=+" + a.Expires.String()
		}
		b = append(b, s)
	}
	if p.Hash != nil {
		b = append(b, "hash-by="+p.Hash.Source)
	}
	if r := p.Retry; r != nil {
		b = append(b, "next-upstream="+r.String())
	}
	if p.ErrorBackend != nil {
		b = append(b, "default-backend="+p.ErrorBackend.Name())
	}
	if p.Mirror != nil {
		b = append(b, "mirror="+p.Mirror.Name())
	}
	if len(p.InterceptErrors) > 0 {
		codes := make([]string, len(p.InterceptErrors))
		for i, c := range p.InterceptErrors {
			codes[i] = strconv.Itoa(c)
		}
		b = append(b, "custom-http-errors="+strings.Join(codes, ","))
	}
	if c := p.Canary; c != nil {
		s := "canary=" + c.Backend.Name()
		if c.Header != "" {
			s += " header=" + c.Header
			if c.HeaderValue != "" {
				s += "==" + c.HeaderValue
			}
			if c.HeaderPattern != nil {
				s += "~" + c.HeaderPattern.String()
			}
		}
		if c.Cookie != "" {
			s += " cookie=" + c.Cookie
		}
		if c.Weight > 0 {
			s += " weight=" + strconv.Itoa(c.Weight) + "/" + strconv.Itoa(c.WeightTotal)
		}
		b = append(b, s)
	}
	return strings.Join(b, " ")
}

// String prints the policy as proxy-next-upstream writes it, with the tries.
func (r *RetryPolicy) String() string {
	var names []string
	for _, x := range retryNames {
		if r.On&x.bit != 0 {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		names = []string{"off"}
	}
	s := strings.Join(names, ",") + " tries=" + strconv.Itoa(r.Tries)
	if r.Timeout > 0 {
		s += " timeout=" + r.Timeout.String()
	}
	return s
}

var retryNames = []struct {
	name string
	bit  RetryOn
}{{"error", RetryError}, {"timeout", RetryTimeout}, {"non_idempotent", RetryNonIdempotent}, {"http_500", Retry500},
	{"http_502", Retry502}, {"http_503", Retry503}, {"http_504", Retry504}, {"http_403", Retry403}, {"http_404", Retry404},
	{"http_429", Retry429}}
