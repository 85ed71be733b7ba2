package migrate

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// FleetSettings is what the controller ConfigMap converts to: the emitted fleet's spec.http and
// spec.clientAddress (nil when nothing is set), one Setting per key, and the statuses a refused
// request gets from rate and connection limits on both sides (for the Ingresses' differences).
type FleetSettings struct {
	HTTP          *porticov1alpha1.HTTPSettings
	ClientAddress *porticov1alpha1.ClientAddressSettings
	Settings      []Setting
	Limits        LimitStatuses
}

// LimitStatuses are the statuses of requests refused by limits.
type LimitStatuses struct {
	// NginxReq and NginxConn are ingress-nginx's limit-req-status-code and
	// limit-conn-status-code (default 503).
	NginxReq, NginxConn int32
	// Portico is the emitted fleet's spec.http.limitStatusCode, else its default, 429.
	Portico int32
}

// Portico's limits on the duration fields of spec.http (the CRD's rules).
const maxDuration = time.Hour

// The defaults the conversion needs to know: ingress-nginx's limit statuses and Portico's.
const (
	nginxDefaultLimitStatus   = 503
	porticoDefaultLimitStatus = 429
	maxTrustedProxies         = 64
	maxHSTSMaxAge             = 315360000
)

// ConvertConfigMap converts the data of ingress-nginx's controller ConfigMap. It reads values as
// ingress-nginx does (integers of seconds, nginx sizes, "true"/"false"), converts the keys
// Portico has a fleet-wide equivalent for, and says for every other key why it is not converted.
// Settings are sorted by key.
func ConvertConfigMap(data map[string]string) FleetSettings {
	c := &converter{data: data, done: map[string]bool{}}
	c.http()
	c.clientAddress()
	c.limits()
	for k, v := range data {
		if !c.done[k] {
			c.settings = append(c.settings, otherKey(k, v))
		}
	}
	sort.Slice(c.settings, func(i, j int) bool { return c.settings[i].Key < c.settings[j].Key })
	out := FleetSettings{Settings: c.settings, Limits: c.lim}
	if c.h != (porticov1alpha1.HTTPSettings{}) {
		out.HTTP = &c.h
	}
	if c.ca.ProxyProtocol || len(c.ca.TrustedProxies) > 0 {
		out.ClientAddress = &c.ca
	}
	return out
}

type converter struct {
	data     map[string]string
	done     map[string]bool
	settings []Setting
	h        porticov1alpha1.HTTPSettings
	hsts     porticov1alpha1.HSTSSettings
	ca       porticov1alpha1.ClientAddressSettings
	lim      LimitStatuses
}

// get returns a key's value, marking the key handled.
func (c *converter) get(key string) (string, bool) {
	v, ok := c.data[key]
	if ok {
		c.done[key] = true
	}
	return v, ok
}

func (c *converter) add(key, value string, st Status, field string, result any, reason string) {
	s := Setting{Key: key, Value: value, Status: st, Field: field, Reason: reason}
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			panic(fmt.Sprintf("migrate: marshal %s: %v", field, err)) // only API types get here
		}
		s.Result = b
	}
	c.settings = append(c.settings, s)
}

func (c *converter) invalid(key, value, format string, args ...any) {
	c.add(key, value, Invalid, "", nil, fmt.Sprintf(format, args...))
}

// boolean reads a boolean key as ingress-nginx does (strconv.ParseBool); a bad value is reported.
func (c *converter) boolean(key string) (val, ok bool) {
	v, set := c.get(key)
	if !set {
		return false, false
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		c.invalid(key, v, "not true or false: ingress-nginx keeps its default")
		return false, false
	}
	return b, true
}

// seconds reads an integer of seconds (ingress-nginx's timeouts are integers, rendered with an
// "s" after them) into a duration Portico accepts: more than 0s, at most 1h.
func (c *converter) seconds(key, field, note string, set func(*metav1.Duration)) {
	v, ok := c.get(key)
	if !ok {
		return
	}
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		c.invalid(key, v, "not a whole number of seconds: ingress-nginx reads an integer (no unit) and keeps its default otherwise")
	case n <= 0:
		c.add(key, v, NotConverted, "", nil, "Portico's "+field+" must be more than 0s")
	case time.Duration(n)*time.Second > maxDuration:
		c.add(key, v, NotConverted, "", nil, "more than 1h, the most Portico's "+field+" takes"+note)
	default:
		d := &metav1.Duration{Duration: time.Duration(n) * time.Second}
		set(d)
		c.add(key, v, Converted, field, d, "")
	}
}

func (c *converter) http() {
	if v, ok := c.get("proxy-body-size"); ok {
		if n, err := nginxSize(v); err != nil {
			c.invalid("proxy-body-size", v, "%v", err)
		} else {
			q := resource.NewQuantity(n, resource.BinarySI)
			c.h.MaxRequestBodySize = q
			c.add("proxy-body-size", v, Converted, "spec.http.maxRequestBodySize", q, "")
		}
	}
	c.seconds("client-body-timeout", "spec.http.clientBodyTimeout", "",
		func(d *metav1.Duration) { c.h.ClientBodyTimeout = d })
	c.seconds("proxy-connect-timeout", "spec.http.proxyConnectTimeout", "",
		func(d *metav1.Duration) { c.h.ProxyConnectTimeout = d })
	c.seconds("proxy-read-timeout", "spec.http.proxyReadTimeout",
		"; it bounds only the wait for a response head (bodies, streams and WebSockets last as long as they take), so long values are not needed",
		func(d *metav1.Duration) { c.h.ProxyReadTimeout = d })
	c.seconds("proxy-send-timeout", "spec.http.proxySendTimeout", "",
		func(d *metav1.Duration) { c.h.ProxySendTimeout = d })
	if b, ok := c.boolean("ssl-redirect"); ok {
		c.h.SSLRedirect = &b
		c.add("ssl-redirect", c.data["ssl-redirect"], Converted, "spec.http.sslRedirect", b, "")
	}
	if b, ok := c.boolean("enable-underscores-in-headers"); ok {
		c.h.AllowUnderscoresInHeaders = b
		c.add("enable-underscores-in-headers", c.data["enable-underscores-in-headers"], Converted, "spec.http.allowUnderscoresInHeaders", b, "")
	}

	if b, ok := c.boolean("hsts"); ok {
		c.hsts.Enabled = &b
		c.add("hsts", c.data["hsts"], Converted, "spec.http.hsts.enabled", b, "")
	}
	if v, ok := c.get("hsts-max-age"); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil:
			c.invalid("hsts-max-age", v, "not a whole number of seconds")
		case n < 0 || n > maxHSTSMaxAge:
			c.add("hsts-max-age", v, NotConverted, "", nil, "Portico's spec.http.hsts.maxAgeSeconds is 0 to 315360000 (ten years)")
		default:
			c.hsts.MaxAgeSeconds = &n
			c.add("hsts-max-age", v, Converted, "spec.http.hsts.maxAgeSeconds", n, "")
		}
	}
	if b, ok := c.boolean("hsts-include-subdomains"); ok {
		c.hsts.IncludeSubdomains = &b
		c.add("hsts-include-subdomains", c.data["hsts-include-subdomains"], Converted, "spec.http.hsts.includeSubdomains", b, "")
	}
	if b, ok := c.boolean("hsts-preload"); ok {
		c.hsts.Preload = b
		c.add("hsts-preload", c.data["hsts-preload"], Converted, "spec.http.hsts.preload", b, "")
	}
	if c.hsts != (porticov1alpha1.HSTSSettings{}) {
		c.h.HSTS = &c.hsts
	}
}

// nginxSizeRE is nginx's size syntax (ngx_parse_size): digits and an optional unit.
var nginxSizeRE = regexp.MustCompile(`^([0-9]+)([kKmMgG]?)$`)

// nginxSize parses an nginx size ("8m", "512k", "1g", "1048576") into bytes.
func nginxSize(s string) (int64, error) {
	m := nginxSizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("not an nginx size (a number of bytes with an optional k, m or g, such as 8m)")
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("too large")
	}
	shift := map[string]uint{"": 0, "k": 10, "m": 20, "g": 30}[strings.ToLower(m[2])]
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("too large")
	}
	return n << shift, nil
}

// clientAddress converts use-forwarded-headers with proxy-real-ip-cidr, and use-proxy-protocol.
func (c *converter) clientAddress() {
	pp, ppOK := c.boolean("use-proxy-protocol")
	if ppOK {
		c.ca.ProxyProtocol = pp
		c.add("use-proxy-protocol", c.data["use-proxy-protocol"], Converted, "spec.clientAddress.proxyProtocol", pp, "")
	}

	fwdVal := c.data["use-forwarded-headers"]
	fwd, fwdOK := c.boolean("use-forwarded-headers")
	cidrVal, cidrSet := c.get("proxy-real-ip-cidr")
	var cidrs []string
	var bad []string
	if cidrSet {
		for _, s := range strings.Split(cidrVal, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			p, err := parseCIDR(s)
			if err != nil {
				bad = append(bad, s)
				continue
			}
			if !contains(cidrs, p) {
				cidrs = append(cidrs, p)
			}
		}
	}
	const field = "spec.clientAddress.trustedProxies"
	switch {
	case fwdOK && fwd && cidrSet:
		if len(bad) > 0 {
			c.invalid("proxy-real-ip-cidr", cidrVal, "not CIDRs or addresses: %s; nothing converted: list the balancers' CIDRs in %s", strings.Join(bad, ", "), field)
			c.add("use-forwarded-headers", fwdVal, NotConverted, "", nil, "proxy-real-ip-cidr is invalid, so no trusted proxy is converted")
			return
		}
		if len(cidrs) == 0 {
			c.invalid("proxy-real-ip-cidr", cidrVal, "empty")
			c.add("use-forwarded-headers", fwdVal, NotConverted, "", nil, "proxy-real-ip-cidr lists nothing, so no trusted proxy is converted")
			return
		}
		if len(cidrs) > maxTrustedProxies {
			c.add("proxy-real-ip-cidr", cidrVal, NotConverted, "", nil, fmt.Sprintf("%d CIDRs: Portico's %s takes at most %d", len(cidrs), field, maxTrustedProxies))
			c.add("use-forwarded-headers", fwdVal, NotConverted, "", nil, "proxy-real-ip-cidr has too many entries, so no trusted proxy is converted")
			return
		}
		c.ca.TrustedProxies = cidrs
		var note string
		if contains(cidrs, "0.0.0.0/0") || contains(cidrs, "::/0") {
			note = "trusts every address: any client can choose the address allow lists and rate limits see by sending X-Forwarded-For; list the balancers' CIDRs instead"
		}
		c.add("use-forwarded-headers", fwdVal, Converted, field, cidrs, note)
		c.add("proxy-real-ip-cidr", cidrVal, Converted, field, cidrs, note)
	case fwdOK && fwd:
		c.add("use-forwarded-headers", fwdVal, NotConverted, "", nil,
			"without proxy-real-ip-cidr ingress-nginx believes X-Forwarded-For from every address (its default, 0.0.0.0/0); Portico trusts no address by default: list the balancers' CIDRs in "+field)
	case cidrSet && ppOK && pp:
		c.add("proxy-real-ip-cidr", cidrVal, NotConverted, "", nil,
			"without use-forwarded-headers it says whose PROXY protocol header ingress-nginx believes; Portico reads the header on every connection (spec.clientAddress.proxyProtocol)")
		if fwdOK {
			c.add("use-forwarded-headers", fwdVal, Same, "", nil, "client-sent X-Forwarded-* headers are replaced, as Portico does for every address not in "+field)
		}
	default:
		if cidrSet {
			c.add("proxy-real-ip-cidr", cidrVal, Same, "", nil, "without use-forwarded-headers or use-proxy-protocol it has no effect in ingress-nginx")
		}
		if fwdOK {
			c.add("use-forwarded-headers", fwdVal, Same, "", nil, "client-sent X-Forwarded-* headers are replaced, as Portico does for every address not in "+field)
		}
	}
}

// parseCIDR reads an entry of proxy-real-ip-cidr (a CIDR or, as nginx's set_real_ip_from takes
// it, an address) as the CIDR the CRD takes, masked.
func parseCIDR(s string) (string, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("not a CIDR or an address")
	}
	return netip.PrefixFrom(a, a.BitLen()).String(), nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// limits converts limit-req-status-code; limit-conn-status-code converts only when it says what
// Portico answers anyway, since Portico has one status for both kinds of limits.
func (c *converter) limits() {
	c.lim = LimitStatuses{NginxReq: nginxDefaultLimitStatus, NginxConn: nginxDefaultLimitStatus, Portico: porticoDefaultLimitStatus}
	status := func(key string) (int32, string, bool) {
		v, ok := c.get(key)
		if !ok {
			return 0, "", false
		}
		n, err := strconv.ParseInt(v, 10, 32)
		if err != nil || n < 100 || n > 599 {
			c.invalid(key, v, "not an HTTP status code")
			return 0, v, false
		}
		return int32(n), v, true
	}
	if n, v, ok := status("limit-req-status-code"); ok {
		c.lim.NginxReq = n
		if n == 429 || n == 503 {
			c.lim.Portico = n
			c.h.LimitStatusCode = &n
			c.add("limit-req-status-code", v, Converted, "spec.http.limitStatusCode", n, "")
		} else {
			c.add("limit-req-status-code", v, NotConverted, "", nil, "Portico's spec.http.limitStatusCode is 429 or 503")
		}
	}
	if n, v, ok := status("limit-conn-status-code"); ok {
		c.lim.NginxConn = n
		if n == c.lim.Portico {
			c.add("limit-conn-status-code", v, Same, "", nil, fmt.Sprintf("Portico answers both rate and connection limits with spec.http.limitStatusCode (%d here)", n))
		} else {
			c.add("limit-conn-status-code", v, NotConverted, "", nil,
				fmt.Sprintf("Portico answers both rate and connection limits with one status, spec.http.limitStatusCode: %d here", c.lim.Portico))
		}
	}
}

// otherKey reports a key Portico converts to no field: the same behaviour, no counterpart (with
// why, when known), or a key ingress-nginx does not read.
func otherKey(key, value string) Setting {
	s := Setting{Key: key, Value: value}
	info, known := nginxKeys[key]
	if !known {
		for prefix, i := range nginxKeyPrefixes {
			if strings.HasPrefix(key, prefix) {
				info, known = i, true
			}
		}
	}
	switch {
	case !known:
		s.Status, s.Reason = Unknown, "not a key of ingress-nginx's ConfigMap: ingress-nginx ignores it too"
	case info.same != "" && strings.EqualFold(strings.TrimSpace(value), info.same):
		s.Status, s.Reason = Same, info.reason
	default:
		s.Status, s.Reason = NotConverted, info.reason
	}
	return s
}
