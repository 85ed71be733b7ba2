// Package config is the proxy's runtime settings: the document the operator renders into the
// fleet's ConfigMap (key ConfigKey) and the proxy watches, applying changes without a restart.
package config

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ConfigKey is the ConfigMap data key holding the JSON document.
const ConfigKey = "config.json"

// Config is one fleet's proxy settings. The zero value is usable: all namespaces, the proxy's
// built-in 404 default backend, a self-signed default certificate.
type Config struct {
	// FleetNamespace and FleetName identify the IngressDeployment; the proxy serves the
	// IngressClasses whose parameters point at it.
	FleetNamespace string `json:"fleetNamespace"`
	FleetName      string `json:"fleetName"`
	// WatchNamespaces limits the Ingresses served; empty means all namespaces.
	WatchNamespaces []string `json:"watchNamespaces,omitempty"`
	// DefaultBackend receives requests that match no rule; nil means the proxy answers 404 itself.
	DefaultBackend *ServiceRef `json:"defaultBackend,omitempty"`
	// DefaultCertificate is "namespace/name" of a kubernetes.io/tls Secret; empty means a
	// self-signed certificate generated at start.
	DefaultCertificate string `json:"defaultCertificate,omitempty"`
	// IgnoreDefaultClass turns off serving class-less Ingresses through a default IngressClass.
	IgnoreDefaultClass bool `json:"ignoreDefaultClass,omitempty"`
	// IngressNginxCompatibility reads nginx.ingress.kubernetes.io/ annotations with the meaning
	// of portico.dev/ ones (spec.ingressNginxCompatibility).
	IngressNginxCompatibility bool `json:"ingressNginxCompatibility,omitempty"`
	// HTTP holds the fleet-wide HTTP limits; nil means every default.
	HTTP *HTTP `json:"http,omitempty"`
	// AccessLog turns the access log on and samples it; nil means off.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
	// ClientAddress is how the proxies learn a client's address; nil means the connection's
	// peer, with every client-sent X-Forwarded-* header replaced.
	ClientAddress *ClientAddress `json:"clientAddress,omitempty"`
	// TCP are the fleet's TCP services (spec.tcp): each is a listener whose connections are
	// forwarded, byte for byte, to an endpoint of a Service port. Ports and ListenPorts are
	// distinct within the list.
	TCP []L4Service `json:"tcp,omitempty"`
	// UDP are the fleet's UDP services (spec.udp): each is a listener whose datagrams are
	// forwarded to an endpoint of a Service port, per client flow. Ports and ListenPorts are
	// distinct within the list; ProxyProtocol is always empty.
	UDP []L4Service `json:"udp,omitempty"`
}

// PROXY protocol versions a TCP service may send to its backend.
const (
	ProxyProtocolV1 = "V1"
	ProxyProtocolV2 = "V2"
)

// L4Service is one TCP or UDP port of the fleet forwarded to a Service port.
type L4Service struct {
	// Port is the fleet's port (a host port, or a port of the fleet's Service); it names the
	// listener ("tcp/5432") in metrics and logs.
	Port int32 `json:"port"`
	// ListenPort is the port the proxy binds in its pod: Port for HostNetwork fleets; for the
	// Deployment topologies the port the fleet's Service targets, which is Port unless Port
	// is privileged or taken by the proxy's own listeners.
	ListenPort int32 `json:"listenPort"`
	// Service is the Service port forwarded to, in any namespace.
	Service ServiceRef `json:"service"`
	// ProxyProtocol is empty (no header), ProxyProtocolV1 or ProxyProtocolV2: the PROXY
	// protocol header sent to the backend before the client's bytes. TCP only.
	ProxyProtocol string `json:"proxyProtocol,omitempty"`
}

// ClientAddress is the fleet's spec.clientAddress.
type ClientAddress struct {
	// ProxyProtocol: the HTTP and HTTPS listeners read a PROXY protocol header (version 1 or
	// 2) at the start of every connection, and close a connection without one.
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`
	// TrustedProxies are CIDRs whose X-Forwarded-For (and -Proto, -Host, -Port) is believed.
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// TrustedProxies parses clientAddress.trustedProxies; the error names the entry.
func (c Config) TrustedProxies() ([]netip.Prefix, error) {
	if c.ClientAddress == nil {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(c.ClientAddress.TrustedProxies))
	for i, s := range c.ClientAddress.TrustedProxies {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("clientAddress.trustedProxies[%d] %q: want a CIDR such as 10.0.0.0/8", i, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// AccessLog is the fleet's access log setting.
type AccessLog struct {
	// Enabled writes one JSON line per request.
	Enabled bool `json:"enabled,omitempty"`
	// OneIn logs one request in every OneIn (0 or 1: every request); 5xx answers always.
	OneIn int32 `json:"oneIn,omitempty"`
}

// AccessLogPolicy is AccessLog with its default applied: Every is at least 1.
type AccessLogPolicy struct {
	Enabled bool
	Every   uint64
}

// AccessLogPolicy returns the fleet's access log setting with its default applied.
func (c Config) AccessLogPolicy() AccessLogPolicy {
	p := AccessLogPolicy{Every: 1}
	if a := c.AccessLog; a != nil {
		p.Enabled = a.Enabled
		if a.OneIn > 1 {
			p.Every = uint64(a.OneIn)
		}
	}
	return p
}

// Defaults of the fleet-wide HTTP limits, as ingress-nginx's (client_max_body_size 1m,
// client_body_timeout 60s, underscores_in_headers off).
const (
	DefaultMaxRequestBodyBytes = 1 << 20
	DefaultClientBodyTimeout   = 60 * time.Second
	// DefaultLimitStatusCode is 429 Too Many Requests (ingress-nginx answers 503: the fleet's
	// limitStatusCode sets it; docs/access-control.md says why 429).
	DefaultLimitStatusCode = 429
)

// HTTP is the fleet-wide HTTP limits. A field left out takes its default.
type HTTP struct {
	// MaxRequestBodyBytes is the largest request body accepted; a larger one is answered 413.
	// 0 means no limit; nil means DefaultMaxRequestBodyBytes.
	MaxRequestBodyBytes *int64 `json:"maxRequestBodyBytes,omitempty"`
	// ClientBodyTimeout is the longest a request body may pause between two reads (nginx's
	// client_body_timeout), as a Go duration ("60s"); empty means DefaultClientBodyTimeout.
	ClientBodyTimeout string `json:"clientBodyTimeout,omitempty"`
	// AllowUnderscoresInHeaders forwards request header names containing "_"; by default they
	// are dropped (CGI, WSGI and PHP backends read X_Forwarded_For as X-Forwarded-For).
	AllowUnderscoresInHeaders bool `json:"allowUnderscoresInHeaders,omitempty"`
	// ProxyConnectTimeout, ProxyReadTimeout and ProxySendTimeout are the fleet's defaults of
	// the proxy-connect-timeout, proxy-read-timeout and proxy-send-timeout annotations, as Go
	// durations; empty means the proxy's own (5s, 60s, 60s).
	ProxyConnectTimeout string `json:"proxyConnectTimeout,omitempty"`
	ProxyReadTimeout    string `json:"proxyReadTimeout,omitempty"`
	ProxySendTimeout    string `json:"proxySendTimeout,omitempty"`
	// LimitStatusCode answers a request refused by a rate or connection limit: 429 or 503;
	// 0 means DefaultLimitStatusCode.
	LimitStatusCode int32 `json:"limitStatusCode,omitempty"`
	// SSLRedirect is the default of the ssl-redirect annotation: plain HTTP requests for a
	// host whose TLS an Ingress configures are redirected to HTTPS (308). nil means true.
	SSLRedirect *bool `json:"sslRedirect,omitempty"`
	// HSTS is the Strict-Transport-Security header of answers over HTTPS; nil means the
	// defaults (on, max-age one year, includeSubDomains), as ingress-nginx's.
	HSTS *HSTS `json:"hsts,omitempty"`
}

// HSTS is the fleet's Strict-Transport-Security setting. A field left out takes its default.
type HSTS struct {
	// Enabled adds the header; nil means true.
	Enabled *bool `json:"enabled,omitempty"`
	// MaxAgeSeconds is max-age; nil means DefaultHSTSMaxAge.
	MaxAgeSeconds *int64 `json:"maxAgeSeconds,omitempty"`
	// IncludeSubdomains adds includeSubDomains; nil means true.
	IncludeSubdomains *bool `json:"includeSubdomains,omitempty"`
	// Preload adds preload.
	Preload bool `json:"preload,omitempty"`
}

// DefaultHSTSMaxAge is ingress-nginx's hsts-max-age: one year.
const DefaultHSTSMaxAge = 31536000

// SSLRedirect is the fleet's default of the ssl-redirect annotation.
func (c Config) SSLRedirect() bool {
	return c.HTTP == nil || c.HTTP.SSLRedirect == nil || *c.HTTP.SSLRedirect
}

// HSTSValue is the Strict-Transport-Security value answers over HTTPS carry, "" for none.
func (c Config) HSTSValue() string {
	var h HSTS
	if c.HTTP != nil && c.HTTP.HSTS != nil {
		h = *c.HTTP.HSTS
	}
	if h.Enabled != nil && !*h.Enabled {
		return ""
	}
	age := int64(DefaultHSTSMaxAge)
	if h.MaxAgeSeconds != nil {
		age = *h.MaxAgeSeconds
	}
	v := "max-age=" + strconv.FormatInt(age, 10)
	if h.IncludeSubdomains == nil || *h.IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if h.Preload {
		v += "; preload"
	}
	return v
}

// Limits are HTTP with every default applied.
type Limits struct {
	MaxRequestBodyBytes       int64 // 0: no limit
	ClientBodyTimeout         time.Duration
	AllowUnderscoresInHeaders bool
	// ConnectTimeout, ReadTimeout and SendTimeout are the fleet's upstream timeouts; 0: the
	// proxy's own.
	ConnectTimeout, ReadTimeout, SendTimeout time.Duration
	// LimitStatus answers a request over a rate or connection limit.
	LimitStatus int
}

// Limits returns the fleet's HTTP limits with defaults applied (c.HTTP is validated by Parse).
func (c Config) Limits() Limits {
	l := Limits{MaxRequestBodyBytes: DefaultMaxRequestBodyBytes, ClientBodyTimeout: DefaultClientBodyTimeout,
		LimitStatus: DefaultLimitStatusCode}
	if h := c.HTTP; h != nil {
		if h.LimitStatusCode == 429 || h.LimitStatusCode == 503 {
			l.LimitStatus = int(h.LimitStatusCode)
		}
		if h.MaxRequestBodyBytes != nil {
			l.MaxRequestBodyBytes = *h.MaxRequestBodyBytes
		}
		if d, err := time.ParseDuration(h.ClientBodyTimeout); err == nil && d > 0 {
			l.ClientBodyTimeout = d
		}
		l.AllowUnderscoresInHeaders = h.AllowUnderscoresInHeaders
		for _, x := range []struct {
			v   string
			dst *time.Duration
		}{{h.ProxyConnectTimeout, &l.ConnectTimeout}, {h.ProxyReadTimeout, &l.ReadTimeout}, {h.ProxySendTimeout, &l.SendTimeout}} {
			if d, err := time.ParseDuration(x.v); err == nil && d > 0 {
				*x.dst = d
			}
		}
	}
	return l
}

// ServiceRef is a Service port, named by number (Port) or by name (PortName): exactly one is
// set. The default backend is always named by number.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port,omitempty"`
	PortName  string `json:"portName,omitempty"`
}

// ServicePort is the Service port as an Ingress backend names it: the number in decimal, or
// the name.
func (r ServiceRef) ServicePort() string {
	if r.PortName != "" {
		return r.PortName
	}
	return strconv.Itoa(int(r.Port))
}

// Marshal renders c as the ConfigMap value; the output is deterministic.
func (c Config) Marshal() (string, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", fmt.Errorf("marshal proxy config: %w", err)
	}
	return string(b) + "\n", nil
}

// Parse reads a ConfigMap value, rejecting unknown fields so a typo is reported, not ignored.
func Parse(data string) (Config, error) {
	var c Config
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	if c.FleetNamespace == "" || c.FleetName == "" {
		return Config{}, fmt.Errorf("parse %s: fleetNamespace and fleetName are required", ConfigKey)
	}
	if a := c.AccessLog; a != nil && a.OneIn < 0 {
		return Config{}, fmt.Errorf("parse %s: accessLog.oneIn %d: must not be negative", ConfigKey, a.OneIn)
	}
	if h := c.HTTP; h != nil {
		if h.MaxRequestBodyBytes != nil && *h.MaxRequestBodyBytes < 0 {
			return Config{}, fmt.Errorf("parse %s: http.maxRequestBodyBytes %d: must not be negative", ConfigKey, *h.MaxRequestBodyBytes)
		}
		if h.ClientBodyTimeout != "" {
			if d, err := time.ParseDuration(h.ClientBodyTimeout); err != nil || d <= 0 {
				return Config{}, fmt.Errorf("parse %s: http.clientBodyTimeout %q: want a positive duration such as 60s", ConfigKey, h.ClientBodyTimeout)
			}
		}
		for _, x := range []struct{ name, v string }{{"proxyConnectTimeout", h.ProxyConnectTimeout},
			{"proxyReadTimeout", h.ProxyReadTimeout}, {"proxySendTimeout", h.ProxySendTimeout}} {
			if x.v == "" {
				continue
			}
			if d, err := time.ParseDuration(x.v); err != nil || d <= 0 {
				return Config{}, fmt.Errorf("parse %s: http.%s %q: want a positive duration such as 60s", ConfigKey, x.name, x.v)
			}
		}
		if v := h.LimitStatusCode; v != 0 && v != 429 && v != 503 {
			return Config{}, fmt.Errorf("parse %s: http.limitStatusCode %d: want 429 or 503", ConfigKey, v)
		}
		if s := h.HSTS; s != nil && s.MaxAgeSeconds != nil && *s.MaxAgeSeconds < 0 {
			return Config{}, fmt.Errorf("parse %s: http.hsts.maxAgeSeconds %d: must not be negative", ConfigKey, *s.MaxAgeSeconds)
		}
	}
	if _, err := c.TrustedProxies(); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	if err := validateL4("tcp", c.TCP, true); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	if err := validateL4("udp", c.UDP, false); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	return c, nil
}

// validateL4 checks one protocol's services; the error names the field ("tcp[1].listenPort").
func validateL4(field string, services []L4Service, tcp bool) error {
	ports := map[int32]bool{}
	listen := map[int32]bool{}
	for i, s := range services {
		at := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case s.Port < 1 || s.Port > 65535:
			return fmt.Errorf("%s.port %d: want 1 to 65535", at, s.Port)
		case s.ListenPort < 1 || s.ListenPort > 65535:
			return fmt.Errorf("%s.listenPort %d: want 1 to 65535", at, s.ListenPort)
		case ports[s.Port]:
			return fmt.Errorf("%s.port %d: used twice", at, s.Port)
		case listen[s.ListenPort]:
			return fmt.Errorf("%s.listenPort %d: used twice", at, s.ListenPort)
		case s.Service.Namespace == "" || s.Service.Name == "":
			return fmt.Errorf("%s.service: namespace and name are required", at)
		case (s.Service.Port == 0) == (s.Service.PortName == ""):
			return fmt.Errorf("%s.service: want exactly one of port and portName", at)
		case s.Service.Port < 0 || s.Service.Port > 65535:
			return fmt.Errorf("%s.service.port %d: want 1 to 65535", at, s.Service.Port)
		case !tcp && s.ProxyProtocol != "":
			return fmt.Errorf("%s.proxyProtocol %q: TCP only", at, s.ProxyProtocol)
		case s.ProxyProtocol != "" && s.ProxyProtocol != ProxyProtocolV1 && s.ProxyProtocol != ProxyProtocolV2:
			return fmt.Errorf("%s.proxyProtocol %q: want %q, %q or none", at, s.ProxyProtocol, ProxyProtocolV1, ProxyProtocolV2)
		}
		ports[s.Port], listen[s.ListenPort] = true, true
	}
	return nil
}
