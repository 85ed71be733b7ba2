package route

import (
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationPrefix is the prefix of Portico's Ingress annotations. The key after it, and the
// value's syntax, are ingress-nginx's (nginx.ingress.kubernetes.io/), so that a migration is a
// change of prefix; docs/annotations.md lists each key and where Portico's meaning differs.
const AnnotationPrefix = "portico.dev/"

// annotation keys (after AnnotationPrefix).
const (
	annSSLRedirect           = "ssl-redirect"
	annForceSSLRedirect      = "force-ssl-redirect"
	annPreserveTrailingSlash = "preserve-trailing-slash"
	annPermanentRedirect     = "permanent-redirect"
	annPermanentRedirectCode = "permanent-redirect-code"
	annTemporalRedirect      = "temporal-redirect"
	annTemporalRedirectCode  = "temporal-redirect-code"
	annAppRoot               = "app-root"
	annFromToWWW             = "from-to-www-redirect"
	annUseRegex              = "use-regex"
	annRewriteTarget         = "rewrite-target"
	annUpstreamVhost         = "upstream-vhost"
	annXForwardedPrefix      = "x-forwarded-prefix"
	annRequestHeadersSet     = "request-headers-set"
	annRequestHeadersAdd     = "request-headers-add"
	annRequestHeadersRemove  = "request-headers-remove"
	annResponseHeadersSet    = "response-headers-set"
	annResponseHeadersAdd    = "response-headers-add"
	annResponseHeadersRemove = "response-headers-remove"
	annConnectTimeout        = "proxy-connect-timeout"
	annReadTimeout           = "proxy-read-timeout"
	annSendTimeout           = "proxy-send-timeout"
	annBodySize              = "proxy-body-size"
	annBackendProtocol       = "backend-protocol"
	annCanary                = "canary"
	annCanaryHeader          = "canary-by-header"
	annCanaryHeaderValue     = "canary-by-header-value"
	annCanaryHeaderPattern   = "canary-by-header-pattern"
	annCanaryCookie          = "canary-by-cookie"
	annCanaryWeight          = "canary-weight"
	annCanaryWeightTotal     = "canary-weight-total"
	annProxySSLSecret        = "proxy-ssl-secret"
	annProxySSLVerify        = "proxy-ssl-verify"
	annProxySSLName          = "proxy-ssl-name"
	annProxySSLServerName    = "proxy-ssl-server-name"
	annAffinity              = "affinity"
	annCookieName            = "session-cookie-name"
	annCookiePath            = "session-cookie-path"
	annCookieDomain          = "session-cookie-domain"
	annCookieMaxAge          = "session-cookie-max-age"
	annCookieExpires         = "session-cookie-expires"
	annCookieSameSite        = "session-cookie-samesite"
	annCookieSecure          = "session-cookie-secure"
	annHashBy                = "upstream-hash-by"
	annSSLPassthrough        = "ssl-passthrough"
	annMirrorTarget          = "mirror-target"
	annCustomErrors          = "custom-http-errors"
	annDefaultBackend        = "default-backend"
	annNextUpstream          = "proxy-next-upstream"
	annNextUpstreamTries     = "proxy-next-upstream-tries"
	annLoadBalancing         = "load-balancing"
	annLoadBalance           = "load-balance" // ingress-nginx's
	annConfigurationSnippet  = "configuration-snippet"
	annEnableAccessLog       = "enable-access-log"
	annNextUpstreamTimeout   = "proxy-next-upstream-timeout"
	annLimitWhitelist        = "limit-whitelist"
)

// known are the keys this version applies.
var known = map[string]bool{
	annSSLRedirect: true, annForceSSLRedirect: true, annPreserveTrailingSlash: true,
	annPermanentRedirect: true, annPermanentRedirectCode: true, annTemporalRedirect: true,
	annTemporalRedirectCode: true, annAppRoot: true, annFromToWWW: true, annUseRegex: true,
	annRewriteTarget: true, annUpstreamVhost: true, annXForwardedPrefix: true,
	annRequestHeadersSet: true, annRequestHeadersAdd: true, annRequestHeadersRemove: true,
	annResponseHeadersSet: true, annResponseHeadersAdd: true, annResponseHeadersRemove: true,
	annConnectTimeout: true, annReadTimeout: true, annSendTimeout: true, annBodySize: true, annBackendProtocol: true,
	annCanary: true, annCanaryHeader: true, annCanaryHeaderValue: true, annCanaryHeaderPattern: true,
	annCanaryCookie: true, annCanaryWeight: true, annCanaryWeightTotal: true,
	annAffinity: true, annLoadBalancing: true, annLoadBalance: true, annLimitWhitelist: true, annConfigurationSnippet: true,
	annEnableAccessLog: true, annNextUpstreamTimeout: true,
	annProxySSLSecret: true, annProxySSLVerify: true, annProxySSLName: true, annProxySSLServerName: true,
	annCookieName: true, annCookiePath: true, annCookieDomain: true, annCookieMaxAge: true, annCookieExpires: true,
	annCookieSameSite: true, annCookieSecure: true, annHashBy: true, annNextUpstream: true, annNextUpstreamTries: true,
	annCustomErrors: true, annDefaultBackend: true, annSSLPassthrough: true, annMirrorTarget: true,
}

func init() {
	for k := range fixedBehaviour {
		known[k] = true
	}
	for _, keys := range [][]string{accessKeys, externalAuthKeys, clientAuthKeys} {
		for _, k := range keys {
			known[k] = true
		}
	}
}

// ingressPolicy is what one Ingress's annotations compile to, before it is bound to the rules
// of a host (which add the HTTPS redirect, the rewrite and the regex paths).
type ingressPolicy struct {
	base        Policy // redirects, headers, timeouts, body size, upstream host
	sslRedirect bool   // ssl-redirect (default: the fleet's)
	forceSSL    bool
	useRegex    bool
	rewrite     string
	fromToWWW   bool
	passthrough bool             // ssl-passthrough: TLS to the Ingress's hosts goes to the backend of "/"
	refuse      string           // a fail-closed key is set: the routes answer 503 with this
	protocol    int8             // backend-protocol: -1 none, else a Protocol
	errorSvc    string           // default-backend: a Service of the Ingress's namespace
	mirror      *mirrorSpec      // mirror-target: a Service port of the cluster
	upTLS       *upstreamTLSSpec // backend-protocol HTTPS or GRPCS
	canary      *canarySpec
	access      *accessSpec // the access-control keys, nil for none
	// empty: nothing in base, no rewrite, no redirect: rules need no Policy of their own
	// unless the host redirects to HTTPS.
	empty bool
}

// upstreamTLSSpec is the proxy-ssl-* annotations of an Ingress whose backends speak TLS.
type upstreamTLSSpec struct {
	secret string // the Secret's name, in the Ingress's namespace; "" for none
	verify bool   // proxy-ssl-verify on
	name   string // proxy-ssl-name; "" for the Service's DNS name
	sni    bool   // proxy-ssl-server-name on
}

// mirrorSpec is a mirror-target naming a Service by its cluster DNS name.
type mirrorSpec struct {
	namespace, name string
	port            int32
}

type canarySpec struct {
	header, value, cookie string
	pattern               *regexp.Regexp
	weight, total         int
}

// parseAnnotations reads the portico.dev/ annotations of an Ingress. Each problem names the
// annotation and why its value is not used; a key with a bad value is left off (the rest of
// the Ingress is served), except the fail-closed keys.
func parseAnnotations(ing *networkingv1.Ingress, defaultSSLRedirect, compat bool) (*ingressPolicy, []string) {
	ip := &ingressPolicy{sslRedirect: defaultSSLRedirect, protocol: -1}
	var probs []string
	view := viewOf(ing, compat)
	bad := func(key, format string, args ...any) {
		probs = append(probs, fmt.Sprintf("annotation %s%s: %s", AnnotationPrefix, key, fmt.Sprintf(format, args...)))
	}
	keys, both, fromNginx := view.keys()
	if !compat {
		n := 0
		for k := range ing.Annotations {
			if strings.HasPrefix(k, NginxAnnotationPrefix) {
				n++
			}
		}
		if n > 0 {
			probs = append(probs, fmt.Sprintf("%d annotations with the prefix %s are ignored: this fleet reads %s only (spec.ingressNginxCompatibility reads both)",
				n, NginxAnnotationPrefix, AnnotationPrefix))
		}
	}
	if len(keys) == 0 {
		ip.empty = true
		return ip, probs
	}
	sort.Strings(keys)
	sort.Strings(both)
	for _, k := range both {
		probs = append(probs, fmt.Sprintf("annotation %s%s: set under %s too; %s wins", AnnotationPrefix, k, NginxAnnotationPrefix, AnnotationPrefix))
	}
	if fromNginx {
		defer func() {
			for i, p := range probs {
				probs[i] = view.renamePrefix(p)
			}
		}()
	}
	get := func(key string) (string, bool) {
		v, _, ok := view.get(key)
		return v, ok
	}
	boolean := func(key string) (val, set bool) {
		v, ok := get(key)
		if !ok {
			return false, false
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(key, "%q is not true or false", v)
			return false, false
		}
		return b, true
	}
	p := &ip.base
	a := func(k string) string { v, _ := get(k); return v }
	for _, k := range keys {
		switch {
		case !fixedBehaviourOK(k, a(k)):
			bad(k, "%q is not offered: Portico's behaviour is %q (%s); ignored", a(k), fixedBehaviour[k].value, fixedBehaviour[k].why)
		case nginxUnsupported[k] != "":
			bad(k, "ingress-nginx's key is not supported by Portico (%s); ignored", nginxUnsupported[k])
		case !known[k]:
			bad(k, "unknown annotation; ignored")
		}
	}
	if v, ok := boolean(annSSLRedirect); ok {
		ip.sslRedirect = v
	}
	ip.forceSSL, _ = boolean(annForceSSLRedirect)
	p.KeepTrailingSlash, _ = boolean(annPreserveTrailingSlash)
	ip.useRegex, _ = boolean(annUseRegex)
	ip.fromToWWW, _ = boolean(annFromToWWW)
	ip.passthrough, _ = boolean(annSSLPassthrough)
	if v, ok := boolean(annEnableAccessLog); ok && !v {
		p.NoAccessLog = true
	}

	// Redirects: temporal wins over permanent, as in ingress-nginx.
	redirect := func(urlKey, codeKey string, def, maxCode int) *Redirect {
		u, ok := get(urlKey)
		if !ok || u == "" {
			return nil
		}
		if err := checkRedirectURL(u); err != nil {
			bad(urlKey, "%v", err)
			return nil
		}
		code := def
		if v, ok := get(codeKey); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 300 || n > maxCode {
				bad(codeKey, "%q is not a redirect status from 300 to %d; using %d", v, maxCode, def)
			} else {
				code = n
			}
		}
		return &Redirect{Code: code, URL: u}
	}
	if r := redirect(annTemporalRedirect, annTemporalRedirectCode, http.StatusFound, http.StatusTemporaryRedirect); r != nil {
		p.Redirect = r
		if _, also := get(annPermanentRedirect); also {
			bad(annPermanentRedirect, "ignored: %s%s is set too and wins, as in ingress-nginx", AnnotationPrefix, annTemporalRedirect)
		}
	} else {
		p.Redirect = redirect(annPermanentRedirect, annPermanentRedirectCode, http.StatusMovedPermanently, http.StatusPermanentRedirect)
	}
	if v, ok := get(annAppRoot); ok {
		if !strings.HasPrefix(v, "/") || !validPath(v) {
			bad(annAppRoot, "%q is not an absolute path", v)
		} else {
			p.AppRoot = v
		}
	}
	if v, ok := get(annRewriteTarget); ok {
		if !validPath(v) || (!strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "$")) {
			bad(annRewriteTarget, "%q is not a path (it may hold $1 to $9)", v)
		} else {
			ip.rewrite = v
		}
	}
	if v, ok := get(annUpstreamVhost); ok {
		if !validHostPort(v) {
			bad(annUpstreamVhost, "%q is not a host name (with an optional port)", v)
		} else {
			p.UpstreamHost = v
		}
	}
	if v, ok := get(annXForwardedPrefix); ok {
		switch {
		case !validPath(v) || !strings.HasPrefix(v, "/"):
			bad(annXForwardedPrefix, "%q is not an absolute path", v)
		case ip.rewrite == "":
			bad(annXForwardedPrefix, "ignored without %s%s, as in ingress-nginx", AnnotationPrefix, annRewriteTarget)
		default:
			p.ForwardedPrefix = v
		}
	}
	headerOps := func(ops *HeaderOps, setKey, addKey, removeKey string, request bool) {
		for _, x := range []struct {
			key string
			dst *[]Header
		}{{setKey, &ops.Set}, {addKey, &ops.Add}} {
			v, ok := view.raw(x.key)
			if !ok {
				continue
			}
			for _, line := range strings.Split(v, "\n") {
				line = strings.TrimSpace(line)
				if line == "" {
					continue
				}
				name, value, found := strings.Cut(line, ":")
				name, value = strings.TrimSpace(name), strings.TrimSpace(value)
				if err := checkHeader(name, value, request); !found || err != nil {
					if err == nil {
						err = fmt.Errorf("%q is not a \"Name: value\" line", line)
					}
					bad(x.key, "%v; that line is ignored", err)
					continue
				}
				*x.dst = append(*x.dst, Header{Name: textproto.CanonicalMIMEHeaderKey(name), Value: value})
			}
		}
		if v, ok := get(removeKey); ok {
			for _, name := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
				if err := checkHeader(name, "", request); err != nil {
					bad(removeKey, "%v; ignored", err)
					continue
				}
				ops.Remove = append(ops.Remove, textproto.CanonicalMIMEHeaderKey(name))
			}
		}
	}
	headerOps(&p.RequestHeaders, annRequestHeadersSet, annRequestHeadersAdd, annRequestHeadersRemove, true)
	headerOps(&p.ResponseHeaders, annResponseHeadersSet, annResponseHeadersAdd, annResponseHeadersRemove, false)
	if v, ok := view.raw(annConfigurationSnippet); ok {
		req, resp, rest := translateSnippet(v)
		if len(rest) > 0 {
			bad(annConfigurationSnippet, "nginx configuration is never executed; only header changes with literal values (more_set_headers, more_clear_headers, add_header, proxy_set_header) are translated, and %q is not one: nothing of the snippet is applied", rest[0])
		} else {
			p.RequestHeaders.Set = append(p.RequestHeaders.Set, req.Set...)
			p.ResponseHeaders.Set = append(p.ResponseHeaders.Set, resp.Set...)
			p.ResponseHeaders.Add = append(p.ResponseHeaders.Add, resp.Add...)
			p.ResponseHeaders.Remove = append(p.ResponseHeaders.Remove, resp.Remove...)
		}
	}
	seconds := func(key string) time.Duration {
		v, ok := get(key)
		if !ok {
			return 0
		}
		n, err := strconv.Atoi(strings.TrimSuffix(v, "s"))
		if err != nil || n <= 0 || n > 3600 {
			bad(key, "%q is not a number of seconds from 1 to 3600", v)
			return 0
		}
		return time.Duration(n) * time.Second
	}
	p.ConnectTimeout = seconds(annConnectTimeout)
	p.ReadTimeout = seconds(annReadTimeout)
	p.SendTimeout = seconds(annSendTimeout)
	if v, ok := get(annBodySize); ok {
		n, err := ParseNginxSize(v)
		if err != nil {
			bad(annBodySize, "%v", err)
		} else {
			p.MaxBodyBytes, p.HasMaxBody = n, true
		}
	}
	if v, ok := get(annBackendProtocol); ok {
		switch strings.ToUpper(v) {
		case "HTTP":
			ip.protocol = int8(HTTP1)
		case "H2C", "GRPC":
			ip.protocol = int8(H2C)
		case "HTTPS":
			ip.protocol, ip.upTLS = int8(HTTP1), &upstreamTLSSpec{}
		case "GRPCS":
			ip.protocol, ip.upTLS = int8(H2C), &upstreamTLSSpec{}
		default:
			bad(annBackendProtocol, "%q is not one of HTTP, HTTPS, GRPC, GRPCS, H2C", v)
		}
	}
	onOff := func(key string) (val, set bool) {
		v, ok := get(key)
		if !ok {
			return false, false
		}
		switch strings.ToLower(v) {
		case "on", "true":
			return true, true
		case "off", "false":
			return false, true
		}
		bad(key, "%q is not on or off", v)
		return false, false
	}
	if t := ip.upTLS; t != nil {
		if v, ok := get(annProxySSLSecret); ok {
			ns, name, cross := strings.Cut(v, "/")
			if !cross {
				name = ns
			}
			switch {
			case cross && ns != ing.Namespace:
				bad(annProxySSLSecret, "%q is in another namespace; only the Ingress's own namespace is read. The backends answer 503 until it is fixed", v)
				ip.refuse = "route refused: " + AnnotationPrefix + annProxySSLSecret + " names a Secret of another namespace"
			case name == "":
				bad(annProxySSLSecret, "empty Secret name")
			default:
				t.secret = name
			}
		}
		t.verify, _ = onOff(annProxySSLVerify)
		t.sni, _ = onOff(annProxySSLServerName)
		if v, ok := get(annProxySSLName); ok {
			if !validHostPort(v) || strings.Contains(v, ":") {
				bad(annProxySSLName, "%q is not a host name", v)
			} else {
				t.name = v
			}
		}
	} else {
		for _, k := range []string{annProxySSLSecret, annProxySSLVerify, annProxySSLName, annProxySSLServerName} {
			if _, ok := get(k); ok {
				bad(k, "ignored without %s%s HTTPS or GRPCS", AnnotationPrefix, annBackendProtocol)
			}
		}
	}
	affinity := false
	if v, ok := get(annAffinity); ok {
		if v != "cookie" {
			bad(annAffinity, "%q is not cookie; no affinity", v)
		} else {
			affinity = true
		}
	}
	if v, ok := get(annLoadBalancing); ok && v != "least-request" && v != "round-robin" {
		bad(annLoadBalancing, "%q is not least-request or round-robin; round robin", v)
	}
	if v, ok := get(annLoadBalance); ok {
		switch v {
		case "round_robin", "ewma": // ewma: the least-request balancer, the closest Portico has
		case "chash", "chashsubset":
			bad(annLoadBalance, "%q is not offered; use %supstream-hash-by (a consistent hash); round robin", v, AnnotationPrefix)
		default:
			bad(annLoadBalance, "%q is not round_robin or ewma; round robin", v)
		}
	}
	cookieKeys := []string{annCookieName, annCookiePath, annCookieDomain, annCookieMaxAge, annCookieExpires, annCookieSameSite, annCookieSecure}
	if affinity {
		p.Affinity = parseAffinityCookie(get, boolean, bad)
	} else {
		for _, k := range cookieKeys {
			if _, ok := get(k); ok {
				bad(k, "ignored without %s%s: cookie", AnnotationPrefix, annAffinity)
			}
		}
	}
	if v, ok := get(annHashBy); ok {
		hk, err := ParseHashKey(v)
		switch {
		case err != nil:
			bad(annHashBy, "%q: %v", v, err)
		case affinity:
			bad(annHashBy, "ignored: %s%s: cookie wins, as in ingress-nginx", AnnotationPrefix, annAffinity)
		default:
			p.Hash = hk
		}
	}
	_, hasOn := get(annNextUpstream)
	_, hasTries := get(annNextUpstreamTries)
	_, hasTimeout := get(annNextUpstreamTimeout)
	if hasOn || hasTries || hasTimeout {
		r := &RetryPolicy{On: RetryError | RetryTimeout, Tries: 3} // ingress-nginx's defaults
		if v, ok := get(annNextUpstream); ok {
			r.On = 0
			for _, tok := range strings.Fields(strings.ReplaceAll(v, ",", " ")) {
				found := tok == "off"
				if tok == "invalid_header" {
					found = true // a malformed head is answered 502 and not sent again: reported below
					bad(annNextUpstream, "invalid_header: an invalid answer head is not retried (the backend answered); ignored")
				}
				for _, x := range retryNames {
					if x.name == tok {
						r.On |= x.bit
						found = true
					}
				}
				if !found {
					bad(annNextUpstream, "%q is not one of error, timeout, invalid_header, http_500, http_502, http_503, http_504, http_403, http_404, http_429, non_idempotent, off; ignored", tok)
				}
			}
			if strings.Contains(" "+v+" ", " off ") {
				r.On = 0
			}
		}
		if v, ok := get(annNextUpstreamTries); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				bad(annNextUpstreamTries, "%q is not a whole number (0: no bound); using 3", v)
			} else {
				r.Tries = n
			}
		}
		if v, ok := get(annNextUpstreamTimeout); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(v, "s"))
			if err != nil || n < 0 || n > 3600 {
				bad(annNextUpstreamTimeout, "%q is not a number of seconds from 0 (no bound) to 3600; no bound", v)
			} else {
				r.Timeout = time.Duration(n) * time.Second
			}
		}
		p.Retry = r
	}
	if v, ok := get(annCustomErrors); ok {
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			n, err := strconv.Atoi(f)
			if err != nil || n < 400 || n > 599 {
				bad(annCustomErrors, "%q is not a status from 400 to 599; ignored", f)
				continue
			}
			p.InterceptErrors = append(p.InterceptErrors, n)
		}
	}
	if v, ok := get(annDefaultBackend); ok {
		if errs := validation.IsDNS1035Label(v); len(errs) > 0 {
			bad(annDefaultBackend, "%q is not a Service name: %s", v, strings.Join(errs, "; "))
		} else {
			ip.errorSvc = v
		}
	}
	if v, ok := get(annMirrorTarget); ok {
		if ms, err := parseMirrorTarget(v); err != nil {
			bad(annMirrorTarget, "%v; ignored", err)
		} else {
			ip.mirror = ms
		}
	}
	var refuse string
	if ip.access, refuse = parseAccess(ing.Namespace, get, bad, boolean); refuse != "" && ip.refuse == "" {
		ip.refuse = refuse
	}
	if v, ok := boolean(annCanary); ok && v {
		ip.canary = parseCanary(get, bad)
		for _, k := range keys {
			if known[k] && !strings.HasPrefix(k, "canary") && k != annBackendProtocol && !strings.HasPrefix(k, "proxy-ssl-") {
				bad(k, "ignored on a canary Ingress: the policy of the main Ingress applies to its routes")
			}
		}
	} else {
		for _, k := range []string{annCanaryHeader, annCanaryHeaderValue, annCanaryHeaderPattern, annCanaryCookie, annCanaryWeight, annCanaryWeightTotal} {
			if _, ok := get(k); ok {
				bad(k, "ignored without %scanary: \"true\"", AnnotationPrefix)
			}
		}
	}
	ip.empty = p.Redirect == nil && p.AppRoot == "" && p.UpstreamHost == "" && p.ForwardedPrefix == "" &&
		p.RequestHeaders.Empty() && p.ResponseHeaders.Empty() && p.ConnectTimeout == 0 && p.ReadTimeout == 0 && p.SendTimeout == 0 &&
		!p.HasMaxBody && ip.rewrite == "" && ip.refuse == "" && p.Affinity == nil && p.Hash == nil && p.Retry == nil &&
		len(p.InterceptErrors) == 0 && ip.errorSvc == "" && ip.mirror == nil && ip.access == nil && !p.NoAccessLog
	return ip, probs
}

func parseCanary(get func(string) (string, bool), bad func(key, format string, args ...any)) *canarySpec {
	cs := &canarySpec{total: 100}
	cs.header, _ = get(annCanaryHeader)
	if cs.header != "" && checkHeader(cs.header, "", true) != nil {
		bad(annCanaryHeader, "%q is not a header name; ignored", cs.header)
		cs.header = ""
	}
	cs.value, _ = get(annCanaryHeaderValue)
	if v, ok := get(annCanaryHeaderPattern); ok && v != "" {
		re, err := regexp.Compile(v)
		switch {
		case err != nil:
			bad(annCanaryHeaderPattern, "%q is not a regular expression (RE2): %v", v, err)
		case cs.value != "":
			bad(annCanaryHeaderPattern, "ignored: %s%s is set and wins, as in ingress-nginx", AnnotationPrefix, annCanaryHeaderValue)
		default:
			cs.pattern = re
		}
	}
	if (cs.value != "" || cs.pattern != nil) && cs.header == "" {
		bad(annCanaryHeaderValue, "ignored without %s%s", AnnotationPrefix, annCanaryHeader)
	}
	cs.cookie, _ = get(annCanaryCookie)
	if v, ok := get(annCanaryWeightTotal); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			bad(annCanaryWeightTotal, "%q is not a positive whole number; using 100", v)
		} else {
			cs.total = n
		}
	}
	if v, ok := get(annCanaryWeight); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > cs.total {
			bad(annCanaryWeight, "%q is not a whole number from 0 to %d; using 0", v, cs.total)
		} else {
			cs.weight = n
		}
	}
	return cs
}

// ParseNginxSize reads a size as nginx writes it: bytes, or a number followed by k, m or g
// (binary units, any case). "0" means no limit.
func ParseNginxSize(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "g"):
		mult, s = 1<<30, s[:len(s)-1]
	case strings.HasSuffix(s, "b"):
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size such as 1m, 512k or 1048576", v)
	}
	return n * mult, nil
}

// checkRedirectURL accepts an absolute http or https URL, or an absolute path.
func checkRedirectURL(v string) error {
	if strings.ContainsAny(v, "\r\n\x00 ") {
		return fmt.Errorf("%q holds a space or a control character", v)
	}
	u, err := url.Parse(v)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", v, err)
	}
	if (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return nil
	}
	if u.Scheme == "" && u.Host == "" && strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "//") {
		return nil
	}
	return fmt.Errorf("%q is neither an http(s) URL nor an absolute path", v)
}

// validPath: printable ASCII without space, quote, backslash or fragment.
func validPath(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '#' {
			return false
		}
	}
	return true
}

func validHostPort(v string) bool {
	host := v
	if h, port, err := net.SplitHostPort(v); err == nil {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return false
		}
		host = h
	}
	if host == "" || len(host) > 253 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// checkHeader checks a header a policy sets, adds or removes: a token name that is not one the
// proxy owns (framing, hop-by-hop, and for requests the forwarding headers it sets itself),
// and a value without control characters.
func checkHeader(name, value string, request bool) error {
	if name == "" {
		return fmt.Errorf("empty header name")
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Errorf("%q is not a header name", name)
		}
	}
	switch strings.ToLower(name) {
	case "host":
		return fmt.Errorf("%s cannot be changed here (use %s%s)", name, AnnotationPrefix, annUpstreamVhost)
	case "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade", "te", "trailer":
		return fmt.Errorf("%s frames the message and is the proxy's to set", name)
	case "x-forwarded-for", "x-forwarded-host", "x-forwarded-port", "x-forwarded-proto", "x-forwarded-prefix", "x-request-id":
		if request {
			return fmt.Errorf("%s is set by the proxy", name)
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return fmt.Errorf("the value of %s holds a control character", name)
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// ProxySSLSecret is the name of the Secret an Ingress's proxy-ssl-secret names (in the
// Ingress's namespace: "namespace/name" with another namespace is refused), "" for none.
func ProxySSLSecret(ing *networkingv1.Ingress, compat bool) string {
	return ownSecret(ing, compat, annProxySSLSecret)
}

// ownSecret is the Secret name annotation key names, "name" or "namespace/name", when it is in
// the Ingress's own namespace; "" otherwise (another namespace is refused where it is parsed).
func ownSecret(ing *networkingv1.Ingress, compat bool, key string) string {
	v, _, _ := viewOf(ing, compat).get(key)
	if ns, name, cross := strings.Cut(v, "/"); cross {
		if ns != ing.Namespace {
			return ""
		}
		return name
	}
	return v
}

// parseAffinityCookie reads the session-cookie-* keys: the cookie's name (default
// portico-affinity), path (default /), domain, Max-Age and Expires (seconds), SameSite (Lax by
// default; None adds Secure, which browsers require with it) and Secure. It is always HttpOnly.
func parseAffinityCookie(get func(string) (string, bool), boolean func(string) (bool, bool), bad func(key, format string, args ...any)) *AffinityCookie {
	a := &AffinityCookie{Name: DefaultAffinityCookie.Name}
	if v, ok := get(annCookieName); ok {
		if v == "" || checkHeader(v, "", false) != nil || strings.ContainsAny(v, "=;,") {
			bad(annCookieName, "%q is not a cookie name; using %s", v, a.Name)
		} else {
			a.Name = v
		}
	}
	attrs := "; Path=/"
	if v, ok := get(annCookiePath); ok {
		if !strings.HasPrefix(v, "/") || !validPath(v) || strings.Contains(v, ";") {
			bad(annCookiePath, "%q is not an absolute path; using /", v)
		} else {
			attrs = "; Path=" + v
		}
	}
	if v, ok := get(annCookieDomain); ok {
		if !validHostPort(v) || strings.Contains(v, ":") {
			bad(annCookieDomain, "%q is not a domain", v)
		} else {
			attrs += "; Domain=" + v
		}
	}
	seconds := func(key string) int {
		v, ok := get(key)
		if !ok {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			bad(key, "%q is not a positive number of seconds", v)
			return 0
		}
		return n
	}
	if n := seconds(annCookieMaxAge); n > 0 {
		attrs += "; Max-Age=" + strconv.Itoa(n)
	}
	if n := seconds(annCookieExpires); n > 0 {
		a.Expires = time.Duration(n) * time.Second
	}
	secure, _ := boolean(annCookieSecure)
	sameSite := "Lax"
	if v, ok := get(annCookieSameSite); ok {
		switch strings.ToLower(v) {
		case "none":
			sameSite, secure = "None", true
		case "lax":
			sameSite = "Lax"
		case "strict":
			sameSite = "Strict"
		default:
			bad(annCookieSameSite, "%q is not None, Lax or Strict; using Lax", v)
		}
	}
	if secure {
		attrs += "; Secure"
	}
	a.Attrs = attrs + "; HttpOnly; SameSite=" + sameSite
	if a.Name == DefaultAffinityCookie.Name && a.Attrs == DefaultAffinityCookie.Attrs && a.Expires == 0 {
		return nil // the default: routes share it
	}
	return a
}

// parseMirrorTarget reads a mirror-target: http://<service>.<namespace>.svc[.cluster.local][:port]
// with no path, or the path $request_uri (ingress-nginx's usual form): requests are mirrored to
// the Service's endpoints directly, with their own target. Other hosts and paths are refused.
func parseMirrorTarget(v string) (*mirrorSpec, error) {
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http:// URL of a Service (<service>.<namespace>.svc)", v)
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/$request_uri" && u.Path != "$request_uri" {
		return nil, fmt.Errorf("%q: only the path $request_uri is supported (a mirrored request keeps its target)", v)
	}
	host := u.Hostname()
	host = strings.TrimSuffix(strings.TrimSuffix(host, "."), ".cluster.local")
	labels := strings.Split(host, ".")
	if len(labels) != 3 || labels[2] != "svc" {
		return nil, fmt.Errorf("%q: the host is not a Service of the cluster (<service>.<namespace>.svc); other hosts are not mirrored to", v)
	}
	ms := &mirrorSpec{name: labels[0], namespace: labels[1], port: 80}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%q: bad port", v)
		}
		ms.port = int32(n)
	}
	return ms, nil
}

// MirrorService is the Service an Ingress's mirror-target names, if it names one.
func MirrorService(ing *networkingv1.Ingress, compat bool) (namespace, name string, ok bool) {
	v, _, set := viewOf(ing, compat).get(annMirrorTarget)
	if !set {
		return "", "", false
	}
	ms, err := parseMirrorTarget(strings.TrimSpace(v))
	if err != nil {
		return "", "", false
	}
	return ms.namespace, ms.name, true
}
