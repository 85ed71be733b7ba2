package migrate

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// setting returns the Setting of key, failing the test when there is none.
func setting(t *testing.T, fs FleetSettings, key string) Setting {
	t.Helper()
	for _, s := range fs.Settings {
		if s.Key == key {
			return s
		}
	}
	t.Fatalf("no setting for %s in %+v", key, fs.Settings)
	return Setting{}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

func qty(s string) *resource.Quantity { q := resource.MustParse(s); return &q }

func TestConvertConfigMapHTTP(t *testing.T) {
	cases := []struct {
		key, value string
		status     Status
		field      string
		result     string                                // JSON of Setting.Result
		reason     string                                // a part of Setting.Reason
		want       func(h *porticov1alpha1.HTTPSettings) // the field, set as expected
	}{
		{key: "proxy-body-size", value: "8m", status: Converted, field: "spec.http.maxRequestBodySize", result: `"8Mi"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.MaxRequestBodySize = qty("8Mi") }},
		{key: "proxy-body-size", value: "512k", status: Converted, result: `"512Ki"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.MaxRequestBodySize = qty("512Ki") }},
		{key: "proxy-body-size", value: "1G", status: Converted, result: `"1Gi"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.MaxRequestBodySize = qty("1Gi") }},
		{key: "proxy-body-size", value: "1500", status: Converted, result: `"1500"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.MaxRequestBodySize = qty("1500") }},
		{key: "proxy-body-size", value: "0", status: Converted, result: `"0"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.MaxRequestBodySize = qty("0") }},
		{key: "proxy-body-size", value: "8MB", status: Invalid, reason: "not an nginx size"},
		{key: "proxy-body-size", value: "1.5m", status: Invalid, reason: "not an nginx size"},
		{key: "proxy-body-size", value: "-1", status: Invalid, reason: "not an nginx size"},
		{key: "proxy-body-size", value: "9999999999g", status: Invalid, reason: "too large"},
		{key: "proxy-body-size", value: "99999999999999999999", status: Invalid, reason: "too large"},

		{key: "client-body-timeout", value: "120", status: Converted, field: "spec.http.clientBodyTimeout", result: `"2m0s"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.ClientBodyTimeout = dur(2 * time.Minute) }},
		{key: "client-body-timeout", value: "60s", status: Invalid, reason: "not a whole number of seconds"},
		{key: "client-body-timeout", value: "0", status: NotConverted, reason: "more than 0s"},
		{key: "client-body-timeout", value: "3601", status: NotConverted, reason: "more than 1h"},
		{key: "proxy-connect-timeout", value: "10", status: Converted, field: "spec.http.proxyConnectTimeout", result: `"10s"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.ProxyConnectTimeout = dur(10 * time.Second) }},
		{key: "proxy-connect-timeout", value: "5.5", status: Invalid},
		{key: "proxy-read-timeout", value: "3600", status: Converted, field: "spec.http.proxyReadTimeout", result: `"1h0m0s"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.ProxyReadTimeout = dur(time.Hour) }},
		{key: "proxy-read-timeout", value: "86400", status: NotConverted, reason: "only the wait for a response head"},
		{key: "proxy-read-timeout", value: "-5", status: NotConverted, reason: "more than 0s"},
		{key: "proxy-send-timeout", value: "300", status: Converted, field: "spec.http.proxySendTimeout", result: `"5m0s"`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.ProxySendTimeout = dur(5 * time.Minute) }},
		{key: "proxy-send-timeout", value: "1m", status: Invalid},

		{key: "ssl-redirect", value: "false", status: Converted, field: "spec.http.sslRedirect", result: `false`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.SSLRedirect = ptr.To(false) }},
		{key: "ssl-redirect", value: "True", status: Converted, result: `true`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.SSLRedirect = ptr.To(true) }},
		{key: "ssl-redirect", value: "yes", status: Invalid, reason: "not true or false"},
		{key: "enable-underscores-in-headers", value: "true", status: Converted, field: "spec.http.allowUnderscoresInHeaders", result: `true`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.AllowUnderscoresInHeaders = true }},
		{key: "enable-underscores-in-headers", value: "false", status: Converted, result: `false`},
		{key: "enable-underscores-in-headers", value: "on", status: Invalid},

		{key: "hsts", value: "false", status: Converted, field: "spec.http.hsts.enabled", result: `false`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.HSTS = &porticov1alpha1.HSTSSettings{Enabled: ptr.To(false)} }},
		{key: "hsts", value: "maybe", status: Invalid},
		{key: "hsts-max-age", value: "63072000", status: Converted, field: "spec.http.hsts.maxAgeSeconds", result: `63072000`,
			want: func(h *porticov1alpha1.HTTPSettings) {
				h.HSTS = &porticov1alpha1.HSTSSettings{MaxAgeSeconds: ptr.To(int64(63072000))}
			}},
		{key: "hsts-max-age", value: "0", status: Converted, result: `0`,
			want: func(h *porticov1alpha1.HTTPSettings) {
				h.HSTS = &porticov1alpha1.HSTSSettings{MaxAgeSeconds: ptr.To(int64(0))}
			}},
		{key: "hsts-max-age", value: "1y", status: Invalid},
		{key: "hsts-max-age", value: "315360001", status: NotConverted, reason: "0 to 315360000"},
		{key: "hsts-include-subdomains", value: "false", status: Converted, field: "spec.http.hsts.includeSubdomains", result: `false`,
			want: func(h *porticov1alpha1.HTTPSettings) {
				h.HSTS = &porticov1alpha1.HSTSSettings{IncludeSubdomains: ptr.To(false)}
			}},
		{key: "hsts-include-subdomains", value: "nope", status: Invalid},
		{key: "hsts-preload", value: "true", status: Converted, field: "spec.http.hsts.preload", result: `true`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.HSTS = &porticov1alpha1.HSTSSettings{Preload: true} }},
		{key: "hsts-preload", value: "1", status: Converted, result: `true`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.HSTS = &porticov1alpha1.HSTSSettings{Preload: true} }},

		{key: "limit-req-status-code", value: "503", status: Converted, field: "spec.http.limitStatusCode", result: `503`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.LimitStatusCode = ptr.To(int32(503)) }},
		{key: "limit-req-status-code", value: "429", status: Converted, result: `429`,
			want: func(h *porticov1alpha1.HTTPSettings) { h.LimitStatusCode = ptr.To(int32(429)) }},
		{key: "limit-req-status-code", value: "444", status: NotConverted, reason: "429 or 503"},
		{key: "limit-req-status-code", value: "too-many", status: Invalid, reason: "not an HTTP status code"},
		{key: "limit-req-status-code", value: "1000", status: Invalid},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			fs := ConvertConfigMap(map[string]string{tc.key: tc.value})
			s := setting(t, fs, tc.key)
			if s.Status != tc.status {
				t.Fatalf("status %s, want %s (%+v)", s.Status, tc.status, s)
			}
			if tc.field != "" && s.Field != tc.field {
				t.Errorf("field %q, want %q", s.Field, tc.field)
			}
			if tc.result != "" && string(s.Result) != tc.result {
				t.Errorf("result %s, want %s", s.Result, tc.result)
			}
			if !strings.Contains(s.Reason, tc.reason) {
				t.Errorf("reason %q, want it to say %q", s.Reason, tc.reason)
			}
			if s.Status != Converted && (s.Field != "" || s.Result != nil) {
				t.Errorf("not converted, yet field %q result %s", s.Field, s.Result)
			}
			if s.Status != Converted && s.Reason == "" {
				t.Errorf("status %s without a reason", s.Status)
			}
			var want *porticov1alpha1.HTTPSettings
			if tc.want != nil {
				want = &porticov1alpha1.HTTPSettings{}
				tc.want(want)
			}
			if got, w := mustJSON(fs.HTTP), mustJSON(want); string(got) != string(w) {
				t.Errorf("spec.http %s, want %s", got, w)
			}
			if fs.ClientAddress != nil {
				t.Errorf("spec.clientAddress %+v, want none", fs.ClientAddress)
			}
		})
	}
}

func TestConvertConfigMapClientAddress(t *testing.T) {
	type st = map[string]Status
	cases := []struct {
		name    string
		data    map[string]string
		want    *porticov1alpha1.ClientAddressSettings
		status  st
		reasons map[string]string // key -> a part of its reason
	}{
		{
			name:   "forwarded headers with trusted CIDRs, addresses and unmasked prefixes",
			data:   map[string]string{"use-forwarded-headers": "true", "proxy-real-ip-cidr": " 10.0.0.0/8,192.0.2.7 , 2001:db8::1/32,10.0.0.0/8,"},
			want:   &porticov1alpha1.ClientAddressSettings{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"}},
			status: st{"use-forwarded-headers": Converted, "proxy-real-ip-cidr": Converted},
		},
		{
			name:    "forwarded headers trusting everyone: converted, with a warning",
			data:    map[string]string{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "0.0.0.0/0"},
			want:    &porticov1alpha1.ClientAddressSettings{TrustedProxies: []string{"0.0.0.0/0"}},
			status:  st{"use-forwarded-headers": Converted, "proxy-real-ip-cidr": Converted},
			reasons: map[string]string{"proxy-real-ip-cidr": "trusts every address"},
		},
		{
			name:    "forwarded headers without CIDRs: ingress-nginx trusts everyone, Portico nobody",
			data:    map[string]string{"use-forwarded-headers": "true"},
			status:  st{"use-forwarded-headers": NotConverted},
			reasons: map[string]string{"use-forwarded-headers": "0.0.0.0/0"},
		},
		{
			name:    "a bad CIDR converts nothing",
			data:    map[string]string{"use-forwarded-headers": "true", "proxy-real-ip-cidr": "10.0.0.0/8, 10.0.0.0/33, bogus"},
			status:  st{"use-forwarded-headers": NotConverted, "proxy-real-ip-cidr": Invalid},
			reasons: map[string]string{"proxy-real-ip-cidr": "10.0.0.0/33, bogus"},
		},
		{
			name:   "an empty CIDR list",
			data:   map[string]string{"use-forwarded-headers": "true", "proxy-real-ip-cidr": " , "},
			status: st{"use-forwarded-headers": NotConverted, "proxy-real-ip-cidr": Invalid},
		},
		{
			name:    "forwarded headers off, CIDRs without effect",
			data:    map[string]string{"use-forwarded-headers": "false", "proxy-real-ip-cidr": "10.0.0.0/8"},
			status:  st{"use-forwarded-headers": Same, "proxy-real-ip-cidr": Same},
			reasons: map[string]string{"proxy-real-ip-cidr": "no effect"},
		},
		{
			name:    "PROXY protocol with CIDRs: the CIDRs only choose whose header nginx believed",
			data:    map[string]string{"use-proxy-protocol": "true", "proxy-real-ip-cidr": "10.0.0.0/8"},
			want:    &porticov1alpha1.ClientAddressSettings{ProxyProtocol: true},
			status:  st{"use-proxy-protocol": Converted, "proxy-real-ip-cidr": NotConverted},
			reasons: map[string]string{"proxy-real-ip-cidr": "every connection"},
		},
		{
			name:   "PROXY protocol and forwarded headers",
			data:   map[string]string{"use-proxy-protocol": "true", "use-forwarded-headers": "true", "proxy-real-ip-cidr": "192.168.0.0/16"},
			want:   &porticov1alpha1.ClientAddressSettings{ProxyProtocol: true, TrustedProxies: []string{"192.168.0.0/16"}},
			status: st{"use-proxy-protocol": Converted, "use-forwarded-headers": Converted, "proxy-real-ip-cidr": Converted},
		},
		{
			name:   "PROXY protocol off",
			data:   map[string]string{"use-proxy-protocol": "false"},
			status: st{"use-proxy-protocol": Converted},
		},
		{
			name:   "bad booleans",
			data:   map[string]string{"use-proxy-protocol": "enabled", "use-forwarded-headers": "y"},
			status: st{"use-proxy-protocol": Invalid, "use-forwarded-headers": Invalid},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := ConvertConfigMap(tc.data)
			if got, want := mustJSON(fs.ClientAddress), mustJSON(tc.want); string(got) != string(want) {
				t.Errorf("spec.clientAddress %s, want %s", got, want)
			}
			if len(fs.Settings) != len(tc.status) {
				t.Errorf("settings %+v, want one per key of %v", fs.Settings, tc.status)
			}
			for key, want := range tc.status {
				s := setting(t, fs, key)
				if s.Status != want {
					t.Errorf("%s: status %s, want %s (%s)", key, s.Status, want, s.Reason)
				}
				if s.Status == Converted && s.Field == "" {
					t.Errorf("%s: converted without a field", key)
				}
				if r := tc.reasons[key]; !strings.Contains(s.Reason, r) {
					t.Errorf("%s: reason %q, want it to say %q", key, s.Reason, r)
				}
			}
		})
	}
}

func TestConvertConfigMapTooManyTrustedProxies(t *testing.T) {
	var cidrs []string
	for i := 0; i < 65; i++ {
		cidrs = append(cidrs, "10.0."+strconv.Itoa(i)+".0/24")
	}
	fs := ConvertConfigMap(map[string]string{"use-forwarded-headers": "true", "proxy-real-ip-cidr": strings.Join(cidrs, ",")})
	if fs.ClientAddress != nil {
		t.Errorf("spec.clientAddress %+v with 65 CIDRs, the CRD takes 64", fs.ClientAddress)
	}
	if s := setting(t, fs, "proxy-real-ip-cidr"); s.Status != NotConverted || !strings.Contains(s.Reason, "at most 64") {
		t.Errorf("proxy-real-ip-cidr: %+v", s)
	}
}

// limit-conn-status-code converts only when it says what Portico answers anyway; the statuses
// the Ingresses' differences compare are ingress-nginx's (503 by default) and Portico's.
func TestConvertConfigMapLimits(t *testing.T) {
	cases := []struct {
		data       map[string]string
		conn       Status // "" when absent
		limits     LimitStatuses
		emitStatus *int32
	}{
		{data: map[string]string{}, limits: LimitStatuses{NginxReq: 503, NginxConn: 503, Portico: 429}},
		{data: map[string]string{"limit-req-status-code": "503"}, limits: LimitStatuses{NginxReq: 503, NginxConn: 503, Portico: 503}, emitStatus: ptr.To(int32(503))},
		{data: map[string]string{"limit-req-status-code": "503", "limit-conn-status-code": "503"}, conn: Same,
			limits: LimitStatuses{NginxReq: 503, NginxConn: 503, Portico: 503}, emitStatus: ptr.To(int32(503))},
		{data: map[string]string{"limit-req-status-code": "503", "limit-conn-status-code": "429"}, conn: NotConverted,
			limits: LimitStatuses{NginxReq: 503, NginxConn: 429, Portico: 503}, emitStatus: ptr.To(int32(503))},
		{data: map[string]string{"limit-conn-status-code": "429"}, conn: Same, limits: LimitStatuses{NginxReq: 503, NginxConn: 429, Portico: 429}},
		{data: map[string]string{"limit-conn-status-code": "x"}, conn: Invalid, limits: LimitStatuses{NginxReq: 503, NginxConn: 503, Portico: 429}},
		{data: map[string]string{"limit-req-status-code": "418"}, limits: LimitStatuses{NginxReq: 418, NginxConn: 503, Portico: 429}},
	}
	for _, tc := range cases {
		fs := ConvertConfigMap(tc.data)
		if fs.Limits != tc.limits {
			t.Errorf("%v: limits %+v, want %+v", tc.data, fs.Limits, tc.limits)
		}
		var got *int32
		if fs.HTTP != nil {
			got = fs.HTTP.LimitStatusCode
		}
		if string(mustJSON(got)) != string(mustJSON(tc.emitStatus)) {
			t.Errorf("%v: limitStatusCode %s, want %s", tc.data, mustJSON(got), mustJSON(tc.emitStatus))
		}
		if tc.conn != "" {
			if s := setting(t, fs, "limit-conn-status-code"); s.Status != tc.conn {
				t.Errorf("%v: limit-conn-status-code %s, want %s", tc.data, s.Status, tc.conn)
			}
		}
	}
}

// Keys converted to no field: the same behaviour for some values, not converted (with why) for
// others, unknown when ingress-nginx does not read them either.
func TestConvertConfigMapOtherKeys(t *testing.T) {
	cases := []struct {
		key, value string
		status     Status
		reason     string
	}{
		{"use-http2", "true", Same, "HTTP/2"},
		{"use-http2", "false", NotConverted, "always on"},
		{"use-gzip", "true", NotConverted, "compression"},
		{"use-gzip", "false", Same, "compression"},
		{"proxy-buffering", "off", Same, "streamed"},
		{"proxy-buffering", "on", NotConverted, "streamed"},
		{"http-redirect-code", "308", Same, "308"},
		{"http-redirect-code", "301", NotConverted, "308"},
		{"ssl-protocols", "tlsv1.2 tlsv1.3", Same, "TLS 1.2 and 1.3"},
		{"ssl-protocols", "TLSv1.3", NotConverted, "TLS 1.2 and 1.3"},
		{"ssl-ciphers", "HIGH:!aNULL", NotConverted, "Go's TLS chooses the ciphers"},
		{"server-snippet", "return 418;", NotConverted, "never executed"},
		{"enable-modsecurity", "true", NotConverted, "WAF"},
		{"whitelist-source-range", "10.0.0.0/8", NotConverted, "portico.dev/whitelist-source-range on each Ingress"},
		{"custom-http-errors", "404", NotConverted, "on each Ingress"},
		{"load-balance", "round_robin", Same, "on each Ingress"},
		{"load-balance", "ewma", NotConverted, "on each Ingress"},
		{"limit-rate", "100", NotConverted, "bandwidth"},
		{"global-auth-url", "https://auth", NotConverted, "auth-url on the Ingresses"},
		{"otel-sampler-ratio", "0.1", NotConverted, "tracing"},
		{"jaeger-collector-host", "jaeger", NotConverted, "tracing"},
		{"disable-access-log", "true", Same, "spec.accessLog"},
		{"disable-access-log", "false", NotConverted, "spec.accessLog"},
		{"proxy-stream-timeout", "600s", Same, "10 minutes"},
		{"compute-full-forwarded-for", "true", Same, "trusted proxy"},
		{"worker-processes", "4", NotConverted, "tuning"},
		{"proxy-bodysize", "8m", Unknown, "not a key of ingress-nginx's ConfigMap"},
		{"some-other-controllers-key", "x", Unknown, "ignores it too"},
	}
	for _, tc := range cases {
		s := setting(t, ConvertConfigMap(map[string]string{tc.key: tc.value}), tc.key)
		if s.Status != tc.status || !strings.Contains(s.Reason, tc.reason) || s.Field != "" || s.Result != nil {
			t.Errorf("%s=%q: %+v, want status %s and a reason saying %q", tc.key, tc.value, s, tc.status, tc.reason)
		}
	}
}

// Every key of ingress-nginx's ConfigMap that no field converts says why.
func TestNginxKeysHaveReasons(t *testing.T) {
	for k, info := range nginxKeys {
		if info.reason == "" {
			t.Errorf("%s: no reason", k)
		}
	}
	for k, info := range nginxKeyPrefixes {
		if info.reason == "" {
			t.Errorf("%s*: no reason", k)
		}
	}
	// The converted keys are not in the table: a key is converted or reported, not both.
	for _, k := range []string{"proxy-body-size", "client-body-timeout", "proxy-connect-timeout", "proxy-read-timeout",
		"proxy-send-timeout", "ssl-redirect", "hsts", "hsts-max-age", "hsts-include-subdomains", "hsts-preload",
		"enable-underscores-in-headers", "use-forwarded-headers", "proxy-real-ip-cidr", "use-proxy-protocol",
		"limit-req-status-code", "limit-conn-status-code"} {
		if _, ok := nginxKeys[k]; ok {
			t.Errorf("%s is converted and in nginxKeys", k)
		}
	}
}

// Settings come sorted by key, whatever the map's order, and every key has one.
func TestConvertConfigMapDeterministic(t *testing.T) {
	data := map[string]string{"use-gzip": "true", "proxy-body-size": "1m", "a-typo": "1", "hsts": "true", "use-forwarded-headers": "true",
		"proxy-real-ip-cidr": "10.0.0.0/8", "worker-processes": "2", "limit-req-status-code": "503", "limit-conn-status-code": "503"}
	first := mustJSON(ConvertConfigMap(data))
	for i := 0; i < 20; i++ {
		if got := mustJSON(ConvertConfigMap(data)); string(got) != string(first) {
			t.Fatalf("conversion differs between runs:\n%s\n%s", first, got)
		}
	}
	fs := ConvertConfigMap(data)
	if len(fs.Settings) != len(data) {
		t.Fatalf("%d settings for %d keys", len(fs.Settings), len(data))
	}
	for i := 1; i < len(fs.Settings); i++ {
		if fs.Settings[i-1].Key >= fs.Settings[i].Key {
			t.Errorf("settings not sorted: %s before %s", fs.Settings[i-1].Key, fs.Settings[i].Key)
		}
	}
}
