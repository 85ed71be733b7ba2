package route

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	"portico.dev/portico/dataplane/access"
)

// Access is a route's access control (docs/access-control.md), checked by the proxy in
// ingress-nginx's phase order: CORS preflights are answered first (nginx's rewrite phase),
// then the rate and connection limits (preaccess), then the source ranges and authentication
// (access, where Satisfy chooses whether one or all must allow). Everything is compiled once:
// a request only compares addresses, looks up a zone and checks credentials.
type Access struct {
	// Deny and Allow are the source ranges (denylist-source-range, allowlist-source-range or
	// whitelist-source-range): a client in Deny is refused, then, when Allow is set, a client
	// outside it is (403). Deny is checked first, as nginx's deny lines come first.
	Deny, Allow []netip.Prefix
	// SatisfyAny: the request passes when the source ranges or the authentication allow it
	// (satisfy: any); by default all must.
	SatisfyAny bool
	// Basic is basic authentication (auth-type: basic), nil for none.
	Basic *BasicAuth
	// External is external authentication (auth-url), nil for none.
	External *ExternalAuth
	// CORS answers preflights and adds the CORS headers (enable-cors), nil for none.
	CORS *CORS
	// Limit is the rate and connection limits per client address, nil for none.
	Limit *Limit
}

// String describes a for golden files.
func (a *Access) String() string {
	var b []string
	for _, x := range []struct {
		name string
		ps   []netip.Prefix
	}{{"deny", a.Deny}, {"allow", a.Allow}} {
		if len(x.ps) > 0 {
			s := make([]string, len(x.ps))
			for i, p := range x.ps {
				s[i] = p.String()
			}
			b = append(b, x.name+"="+strings.Join(s, ","))
		}
	}
	if a.SatisfyAny {
		b = append(b, "satisfy-any")
	}
	if a.Basic != nil {
		b = append(b, fmt.Sprintf("basic(realm=%q users=%d)", a.Basic.Realm, a.Basic.Users.Len()))
	}
	if a.External != nil {
		b = append(b, "external("+a.External.String()+")")
	}
	if c := a.CORS; c != nil {
		s := "cors("
		if c.AnyOrigin {
			s += "*"
		} else {
			s += c.origins.String()
		}
		for _, h := range c.Headers {
			s += " " + h[0][len("Access-Control-"):] + "=" + h[1]
		}
		b = append(b, s+")")
	}
	if l := a.Limit; l != nil {
		b = append(b, fmt.Sprintf("limit(%s exempt=%d)", l.Setting, len(l.Exempt)))
	}
	return "access{" + strings.Join(b, " ") + "}"
}

// ranged reports whether the source ranges allow a (true when there are none).
func (a *Access) ranged(addr netip.Addr) bool {
	for _, p := range a.Deny {
		if p.Contains(addr) {
			return false
		}
	}
	if len(a.Allow) == 0 {
		return true
	}
	for _, p := range a.Allow {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// HasRanges reports whether source ranges are set.
func (a *Access) HasRanges() bool { return len(a.Deny) > 0 || len(a.Allow) > 0 }

// RangesAllow reports whether the source ranges allow a client (true when there are none).
func (a *Access) RangesAllow(addr netip.Addr) bool { return a.ranged(addr) }

// BasicAuth is a route's basic authentication.
type BasicAuth struct {
	// Realm is auth-realm; Challenge the WWW-Authenticate value built from it.
	Realm, Challenge string
	// Users are the credentials of the auth-secret.
	Users *access.Users
}

// Limit is a route's rate and connection limits per client address. The zones belong to
// the Ingress (every rule of it shares them, as ingress-nginx's zones are per Ingress) and
// outlive a recompile with the same settings (Compiler.zones).
type Limit struct {
	// RPS and RPM are limit-rps and limit-rpm (with limit-burst-multiplier), nil when unset.
	RPS, RPM *access.RateZone
	// Conns is limit-connections: requests in progress per client address.
	Conns *access.ConnZone
	// Exempt are limit-allowlist: clients no limit applies to.
	Exempt []netip.Prefix
	// Setting describes the limits ("rps=5 rpm=0 burst=5 conns=0"), for golden files.
	Setting string
}

// Exempts reports whether addr is exempt from the limits.
func (l *Limit) Exempts(addr netip.Addr) bool {
	for _, p := range l.Exempt {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// CORS is a route's cross-origin resource sharing (ingress-nginx's enable-cors and cors-*).
type CORS struct {
	// AnyOrigin: cors-allow-origin is "*" (the default): every request gets the headers, with
	// Access-Control-Allow-Origin: *.
	AnyOrigin bool
	// origins matches the Origin header against cors-allow-origin's list (case-insensitive,
	// anchored; "*." in a host matches one DNS label).
	origins *regexp.Regexp
	// Headers are the headers every CORS answer carries besides Access-Control-Allow-Origin
	// (credentials, methods, headers, expose-headers, max-age), in ingress-nginx's order.
	Headers [][2]string
	// Star is Access-Control-Allow-Origin: * followed by Headers, built once for AnyOrigin.
	Star [][2]string
}

// AllowOrigin returns the Access-Control-Allow-Origin value for a request's Origin header
// (origin, ok when the request has one), or "" when the request gets no CORS headers.
func (c *CORS) AllowOrigin(origin string, ok bool) string {
	if c.AnyOrigin {
		return "*"
	}
	if !ok || origin == "" || !c.origins.MatchString(origin) {
		return ""
	}
	return origin
}

// Defaults of the CORS annotations, as ingress-nginx's.
const (
	corsDefaultMethods = "GET, PUT, POST, DELETE, PATCH, OPTIONS"
	corsDefaultHeaders = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization"
	corsDefaultMaxAge  = 1728000
)

var (
	// corsOriginSyntax is one entry of cors-allow-origin, as ingress-nginx validates it.
	corsOriginSyntax  = regexp.MustCompile(`^([a-z]+://(\*\.)?[A-Za-z0-9\-.]*(:\d+)?|\*|null)$`)
	corsMethodsSyntax = regexp.MustCompile(`^([A-Za-z]+,?[ \t]?)+$`)
	corsHeadersSyntax = regexp.MustCompile(`^([A-Za-z0-9\-_]+,?[ \t]?)+$`)
	corsExposeSyntax  = regexp.MustCompile(`^(([A-Za-z0-9\-_]+|\*),?[ \t]?)+$`)
)

// parseCORS reads the cors-* annotations of an Ingress with enable-cors true. A bad value
// takes the key's default, as ingress-nginx does, and is reported.
func parseCORS(get func(string) (string, bool), bad func(key, format string, args ...any)) *CORS {
	c := &CORS{}
	var alts []string
	if v, ok := get("cors-allow-origin"); !ok || v == "" {
		c.AnyOrigin = true
	} else {
		for _, o := range strings.Split(v, ",") {
			o = strings.TrimSpace(o)
			switch {
			case o == "":
			case o == "*":
				c.AnyOrigin = true
			case !corsOriginSyntax.MatchString(o):
				bad("cors-allow-origin", "%q is not an origin such as https://example.com, https://*.example.com:8443 or *; left out", o)
			default:
				q := regexp.QuoteMeta(o)
				q = strings.Replace(q, `\*`, `[A-Za-z0-9\-]+`, 1)
				alts = append(alts, q)
			}
		}
		if !c.AnyOrigin && len(alts) == 0 {
			bad("cors-allow-origin", "no valid origin; CORS headers are sent to no origin")
		}
	}
	if !c.AnyOrigin {
		expr := "(?i)^(?:" + strings.Join(alts, "|") + ")$"
		if len(alts) == 0 {
			expr = `^\b$` // matches nothing an Origin header holds
		}
		c.origins = regexp.MustCompile(expr)
	}
	str := func(key, def string, syntax *regexp.Regexp) string {
		v, ok := get(key)
		if !ok {
			return def
		}
		if !syntax.MatchString(v) {
			bad(key, "%q is not a comma-separated list of names; using %q", v, def)
			return def
		}
		return v
	}
	creds := true
	if v, ok := get("cors-allow-credentials"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("cors-allow-credentials", "%q is not true or false; using true", v)
		} else {
			creds = b
		}
	}
	maxAge := corsDefaultMaxAge
	if v, ok := get("cors-max-age"); ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			bad("cors-max-age", "%q is not a number of seconds; using %d", v, corsDefaultMaxAge)
		} else {
			maxAge = n
		}
	}
	if creds {
		c.Headers = append(c.Headers, [2]string{"Access-Control-Allow-Credentials", "true"})
	}
	c.Headers = append(c.Headers,
		[2]string{"Access-Control-Allow-Methods", str("cors-allow-methods", corsDefaultMethods, corsMethodsSyntax)},
		[2]string{"Access-Control-Allow-Headers", str("cors-allow-headers", corsDefaultHeaders, corsHeadersSyntax)})
	if v := str("cors-expose-headers", "", corsExposeSyntax); v != "" {
		c.Headers = append(c.Headers, [2]string{"Access-Control-Expose-Headers", v})
	}
	c.Headers = append(c.Headers, [2]string{"Access-Control-Max-Age", strconv.Itoa(maxAge)})
	if c.AnyOrigin {
		c.Star = append([][2]string{{"Access-Control-Allow-Origin", "*"}}, c.Headers...)
	}
	return c
}

// parseRanges reads a comma-separated list of CIDRs or addresses (a source-range annotation).
func parseRanges(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR or an address", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CIDR in %q", v)
	}
	return out, nil
}

// Annotation keys of access control (after AnnotationPrefix).
const (
	annAllowlist       = "allowlist-source-range"
	annWhitelist       = "whitelist-source-range"
	annDenylist        = "denylist-source-range"
	annSatisfy         = "satisfy"
	annAuthType        = "auth-type"
	annAuthSecret      = "auth-secret"
	annAuthSecretType  = "auth-secret-type"
	annAuthRealm       = "auth-realm"
	annEnableCORS      = "enable-cors"
	annLimitRPS        = "limit-rps"
	annLimitRPM        = "limit-rpm"
	annLimitBurst      = "limit-burst-multiplier"
	annLimitConns      = "limit-connections"
	annLimitAllowlist  = "limit-allowlist"
	defaultAuthRealm   = "Authentication Required"
	defaultBurstFactor = 5
)

// accessKeys are the access-control keys this file reads.
var accessKeys = []string{annAllowlist, annWhitelist, annDenylist, annSatisfy, annAuthType, annAuthSecret,
	annAuthSecretType, annAuthRealm, annEnableCORS, "cors-allow-origin", "cors-allow-methods", "cors-allow-headers",
	"cors-expose-headers", "cors-allow-credentials", "cors-max-age", annLimitRPS, annLimitRPM, annLimitBurst,
	annLimitConns, annLimitAllowlist}

// accessSpec is an Ingress's access annotations before the Secret and the zones are bound
// (compiler.bindAccess).
type accessSpec struct {
	deny, allow []netip.Prefix
	satisfyAny  bool
	// basic: auth-type basic, with the Secret's name (own namespace) and whether it is an
	// auth-map.
	basic        bool
	external     *ExternalAuth
	secret       string
	authMap      bool
	realm        string
	cors         *CORS
	rps, rpm     int
	burst        int
	conns        int
	limitExempt  []netip.Prefix
	limitSetting string // the limits as text: a zone is kept across compiles while it is the same
}

// parseAccess reads an Ingress's access-control annotations. refuse is set when a key that
// protects the routes cannot be applied: they then answer 503 rather than serve unprotected.
func parseAccess(ns string, get func(string) (string, bool), bad func(key, format string, args ...any), boolean func(string) (bool, bool)) (a *accessSpec, refuse string) {
	a = &accessSpec{}
	fail := func(key, format string, args ...any) {
		bad(key, format+"; the Ingress's routes answer 503 until it is fixed", args...)
		if refuse == "" {
			refuse = "route refused: annotation " + AnnotationPrefix + key + " is invalid"
		}
	}
	set := false
	ranges := func(key string) []netip.Prefix {
		v, ok := get(key)
		if !ok {
			return nil
		}
		set = true
		ps, err := parseRanges(v)
		if err != nil {
			fail(key, "%v", err)
		}
		return ps
	}
	a.allow = ranges(annAllowlist)
	if w := ranges(annWhitelist); w != nil {
		if a.allow != nil {
			bad(annWhitelist, "ignored: %s%s is set too and wins", AnnotationPrefix, annAllowlist)
		} else {
			a.allow = w
		}
	}
	a.deny = ranges(annDenylist)
	if v, ok := get(annSatisfy); ok {
		switch v {
		case "any":
			a.satisfyAny = true
		case "all", "":
		default:
			bad(annSatisfy, "%q is not any or all; all", v)
		}
	}
	if v, ok := get(annAuthType); ok {
		set = true
		switch v {
		case "basic":
			a.basic = true
		case "digest":
			fail(annAuthType, "digest authentication is not supported (it needs MD5 and offers less than basic over TLS); use basic")
		default:
			fail(annAuthType, "%q is not basic", v)
		}
	}
	if a.basic {
		v, _ := get(annAuthSecret)
		name := v
		if sns, sname, cross := strings.Cut(v, "/"); cross {
			name = sname
			if sns != ns {
				fail(annAuthSecret, "%q is in another namespace; only the Ingress's own namespace is read", v)
				name = ""
			}
		}
		if name == "" && refuse == "" {
			fail(annAuthSecret, "auth-type basic needs the name of a Secret holding the credentials")
		}
		a.secret = name
		if t, ok := get(annAuthSecretType); ok {
			switch t {
			case "auth-map":
				a.authMap = true
			case "auth-file", "":
			default:
				fail(annAuthSecretType, "%q is not auth-file or auth-map", t)
			}
		}
		a.realm = defaultAuthRealm
		if r, ok := get(annAuthRealm); ok && r != "" {
			if strings.ContainsAny(r, "\"\\\r\n") {
				bad(annAuthRealm, "%q holds a quote, backslash or line break; using %q", r, defaultAuthRealm)
			} else {
				a.realm = r
			}
		}
	} else if _, typed := get(annAuthType); !typed {
		for _, k := range []string{annAuthSecret, annAuthSecretType, annAuthRealm} {
			if _, ok := get(k); ok {
				bad(k, "ignored without %s%s: basic", AnnotationPrefix, annAuthType)
			}
		}
	}
	ea, eaRefuse := parseExternalAuth(get, bad)
	if ea != nil {
		set = true
		a.external = ea
		if eaRefuse && refuse == "" {
			refuse = "route refused: annotation " + AnnotationPrefix + annAuthURL + " cannot be used"
		}
		if a.basic {
			bad(annAuthURL, "set with %s%s: basic; both apply", AnnotationPrefix, annAuthType)
		}
	}
	if on, _ := boolean(annEnableCORS); on {
		set = true
		a.cors = parseCORS(get, bad)
	} else {
		for _, k := range []string{"cors-allow-origin", "cors-allow-methods", "cors-allow-headers", "cors-expose-headers", "cors-allow-credentials", "cors-max-age"} {
			if _, ok := get(k); ok {
				bad(k, "ignored without %s%s: \"true\"", AnnotationPrefix, annEnableCORS)
			}
		}
	}
	count := func(key string) int {
		v, ok := get(key)
		if !ok {
			return 0
		}
		set = true
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1e9 {
			fail(key, "%q is not a whole number", v)
			return 0
		}
		return n
	}
	a.rps, a.rpm, a.conns = count(annLimitRPS), count(annLimitRPM), count(annLimitConns)
	a.burst = defaultBurstFactor
	if v, ok := get(annLimitBurst); ok {
		if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 1000 {
			bad(annLimitBurst, "%q is not a whole number from 1 to 1000; using %d", v, defaultBurstFactor)
		} else {
			a.burst = n
		}
	}
	if _, ok := get(annLimitAllowlist); !ok {
		if v, ok := get(annLimitWhitelist); ok { // ingress-nginx's older name
			set = true
			if ps, err := parseRanges(v); err != nil {
				bad(annLimitWhitelist, "%v; no address is exempt", err)
			} else {
				a.limitExempt = ps
			}
		}
	}
	if v, ok := get(annLimitAllowlist); ok {
		ps, err := parseRanges(v)
		if err != nil {
			bad(annLimitAllowlist, "%v; no address is exempt", err)
		}
		a.limitExempt = ps
	}
	if a.rps > 0 || a.rpm > 0 || a.conns > 0 {
		a.limitSetting = fmt.Sprintf("rps=%d rpm=%d burst=%d conns=%d", a.rps, a.rpm, a.burst, a.conns)
	}
	if !set && !a.satisfyAny {
		return nil, refuse
	}
	return a, refuse
}

// AnnotationSecrets are the Secrets of its own namespace an Ingress's annotations name
// (proxy-ssl-secret, auth-secret, auth-tls-secret): a change of one recompiles the Ingress, and the operator's
// problems reconciler reads them.
func AnnotationSecrets(ing *networkingv1.Ingress, compat bool) []string {
	var out []string
	if s := ProxySSLSecret(ing, compat); s != "" {
		out = append(out, s)
	}
	if k, ok := AuthTLSSecret(ing, compat); ok {
		out = append(out, k.Name)
	}
	if s := ownSecret(ing, compat, annAuthSecret); s != "" {
		out = append(out, s)
	}
	return out
}

// zoneSize is the number of client addresses a rate or connection zone keeps (the least
// recently seen is evicted past it: docs/access-control.md).
const zoneSize = 1 << 16

// AccessCache keeps, across compiles, the rate and connection zones of each Ingress (while its
// limits are the same: a recompile does not reset the clients' counts) and the parsed
// credentials of each Secret version (their verification cache survives too). Safe for
// concurrent use; may be nil in Input (each compile then starts afresh).
type AccessCache struct {
	mu    sync.Mutex
	zones map[string]*limitZones
	users map[string]*access.Users // by Secret UID, resourceVersion and kind
}

// NewAccessCache returns an empty cache.
func NewAccessCache() *AccessCache {
	return &AccessCache{zones: map[string]*limitZones{}, users: map[string]*access.Users{}}
}

type limitZones struct {
	setting string
	limit   *Limit
	used    bool
}

// zone returns the zones of the Ingress key with setting, made by mk when new or changed.
func (ac *AccessCache) zone(key, setting string, mk func() *Limit) *Limit {
	if ac == nil {
		return mk()
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	z := ac.zones[key]
	if z == nil || z.setting != setting {
		z = &limitZones{setting: setting, limit: mk()}
		ac.zones[key] = z
	}
	z.used = true
	return z.limit
}

// parsedUsers returns the credentials of a Secret version, parsing them on first use.
func (ac *AccessCache) parsedUsers(s *corev1.Secret, authMap bool, parse func() (*access.Users, error)) (*access.Users, error) {
	if ac == nil {
		return parse()
	}
	key := fmt.Sprintf("%s/%s/%t", s.UID, s.ResourceVersion, authMap)
	ac.mu.Lock()
	u := ac.users[key]
	ac.mu.Unlock()
	if u != nil {
		return u, nil
	}
	u, err := parse()
	if err == nil {
		ac.mu.Lock()
		ac.users[key] = u
		ac.mu.Unlock()
	}
	return u, err
}

// retain forgets the zones a full compile did not use, and credentials past a bound.
func (ac *AccessCache) retain() {
	if ac == nil {
		return
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	for k, z := range ac.zones {
		if !z.used {
			delete(ac.zones, k)
		}
		z.used = false
	}
	if len(ac.users) > 4096 {
		clear(ac.users)
	}
}

// bindAccess builds an Ingress's Access from its spec: the basic-auth Secret read and parsed,
// the limit zones taken from the last compile when the settings are the same. A Secret that is
// missing or holds no usable credentials refuses the routes (fail closed).
func (c *compiler) bindAccess(ing *networkingv1.Ingress, ip *ingressPolicy, report func(string)) {
	spec := ip.access
	a := &Access{Deny: spec.deny, Allow: spec.allow, SatisfyAny: spec.satisfyAny, CORS: spec.cors, External: spec.external}
	refuse := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		report(fmt.Sprintf("annotation %s%s: %s; the Ingress's routes answer 503 until it is fixed", AnnotationPrefix, annAuthSecret, msg))
		if ip.refuse == "" {
			ip.refuse = "route refused: the credentials of " + AnnotationPrefix + annAuthSecret + " cannot be read"
		}
	}
	if spec.basic && spec.secret != "" {
		s := c.secrets[types.NamespacedName{Namespace: ing.Namespace, Name: spec.secret}]
		var users *access.Users
		var err error
		switch {
		case s == nil:
			refuse("Secret %s/%s not found (the proxies read Secrets of type Opaque and kubernetes.io/tls)", ing.Namespace, spec.secret)
		case spec.authMap:
			users, err = c.in.Access.parsedUsers(s, true, func() (*access.Users, error) { return access.ParseAuthMap(s.Data) })
		default:
			data, ok := s.Data["auth"]
			if !ok {
				refuse("Secret %s/%s has no key \"auth\" (an htpasswd file)", ing.Namespace, spec.secret)
			} else {
				users, err = c.in.Access.parsedUsers(s, false, func() (*access.Users, error) { return access.ParseHtpasswd(data) })
			}
		}
		switch {
		case err != nil:
			refuse("Secret %s/%s: %v", ing.Namespace, spec.secret, err)
		case users != nil && users.Len() == 0:
			refuse("Secret %s/%s holds no user", ing.Namespace, spec.secret)
		case users != nil:
			a.Basic = &BasicAuth{Realm: spec.realm, Challenge: `Basic realm="` + spec.realm + `"`, Users: users}
		}
	}
	if spec.limitSetting != "" {
		shared := c.in.Access.zone(ing.Namespace+"/"+ing.Name, spec.limitSetting, func() *Limit {
			l := &Limit{}
			if spec.rps > 0 {
				l.RPS = access.NewRateZone(float64(spec.rps), min(spec.rps*spec.burst, 1e9), zoneSize)
			}
			if spec.rpm > 0 {
				l.RPM = access.NewRateZone(float64(spec.rpm)/60, min(spec.rpm*spec.burst, 1e9), zoneSize)
			}
			if spec.conns > 0 {
				l.Conns = access.NewConnZone(spec.conns, zoneSize)
			}
			return l
		})
		l := *shared
		l.Exempt, l.Setting = spec.limitExempt, spec.limitSetting
		a.Limit = &l
	}
	ip.base.Access = a
}
