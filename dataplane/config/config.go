// Package config is the proxy's runtime settings: the document the operator renders into the
// fleet's ConfigMap (key ConfigKey) and the proxy watches, applying changes without a restart.
package config

import (
	"encoding/json"
	"fmt"
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
	// HTTP holds the fleet-wide HTTP limits; nil means every default.
	HTTP *HTTP `json:"http,omitempty"`
	// AccessLog turns the access log on and samples it; nil means off.
	AccessLog *AccessLog `json:"accessLog,omitempty"`
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
}

// Limits returns the fleet's HTTP limits with defaults applied (c.HTTP is validated by Parse).
func (c Config) Limits() Limits {
	l := Limits{MaxRequestBodyBytes: DefaultMaxRequestBodyBytes, ClientBodyTimeout: DefaultClientBodyTimeout}
	if h := c.HTTP; h != nil {
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

// ServiceRef is a Service port.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port"`
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
		if s := h.HSTS; s != nil && s.MaxAgeSeconds != nil && *s.MaxAgeSeconds < 0 {
			return Config{}, fmt.Errorf("parse %s: http.hsts.maxAgeSeconds %d: must not be negative", ConfigKey, *s.MaxAgeSeconds)
		}
	}
	return c, nil
}
