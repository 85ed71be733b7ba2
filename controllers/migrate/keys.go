package migrate

import "portico.dev/portico/dataplane/route"

// keyInfo is what Portico does about a key of ingress-nginx's ConfigMap it converts to no field.
type keyInfo struct {
	// reason is why there is no field, or how Portico behaves instead; "" when not known.
	reason string
	// same is the value (compared without case) with which ingress-nginx behaves as Portico
	// does without a setting; "" for none.
	same string
}

// Reasons shared by several keys.
const (
	whyNginxConfig = "nginx configuration is never executed"
	whyModSecurity = "ModSecurity is not part of Portico; put a WAF in front of or behind the fleet"
	whyAccessLog   = "the access log is the fleet's spec.accessLog: one JSON line per request with fixed fields on the proxies' standard output, off by default, sampled (docs/operations.md)"
	whyLogs        = "the proxies log JSON lines to standard output (docs/operations.md)"
	whyTuning      = "nginx's own tuning: Portico has no counterpart to set"
	whyTracing     = "tracing is not offered yet"
	whyCompression = "compression is not offered: answers pass as the backend encodes them"
	whyGlobalAuth  = "there is no fleet-wide external authentication; set auth-url on the Ingresses"
	whyGeoIP       = "GeoIP is not offered"
	whyUpstreamKA  = "the proxies pool their connections to endpoints themselves: up to 256 idle connections per endpoint, closed after 90 s idle (docs/data-plane.md)"
	whyTLSSession  = "TLS sessions are Go's TLS defaults"
)

// perIngress is the reason for a ConfigMap key that is also an annotation Portico honours: it
// has no fleet-wide setting.
func perIngress(key string) string {
	return "ingress-nginx applies it to every Ingress; Portico has no fleet-wide setting: set " +
		route.AnnotationPrefix + key + " on each Ingress (or " + route.NginxAnnotationPrefix + key + " on a compatibility fleet)"
}

// nginxKeys are the keys of ingress-nginx's ConfigMap (controller v1.15:
// docs/user-guide/nginx-configuration/configmap.md and internal/ingress/controller/config) that
// no field converts. Keys that are also annotations take their reason from the annotation's
// (init below).
var nginxKeys = map[string]keyInfo{
	"allow-snippet-annotations":       {reason: "Portico never executes snippets: a configuration-snippet's literal header changes are translated, any other snippet is reported", same: "false"},
	"annotations-risk-level":          {reason: "Portico checks every annotation's value itself; there are no risk levels"},
	"annotation-value-word-blocklist": {reason: "Portico checks every annotation's value itself; there are no risk levels"},
	"allow-cross-namespace-resources": {reason: "Portico refuses Secrets of another namespace (auth-secret, auth-tls-secret, proxy-ssl-secret)", same: "false"},
	"main-snippet":                    {reason: whyNginxConfig},
	"http-snippet":                    {reason: whyNginxConfig},
	"server-snippet":                  {reason: whyNginxConfig},
	"location-snippet":                {reason: whyNginxConfig},
	"stream-snippet":                  {reason: whyNginxConfig},
	"global-auth-snippet":             {reason: whyNginxConfig},
	"modsecurity-snippet":             {reason: whyModSecurity},
	"enable-modsecurity":              {reason: whyModSecurity, same: "false"},
	"enable-owasp-modsecurity-crs":    {reason: whyModSecurity, same: "false"},

	"disable-access-log":                    {reason: whyAccessLog, same: "true"},
	"disable-http-access-log":               {reason: whyAccessLog, same: "true"},
	"disable-stream-access-log":             {reason: whyAccessLog},
	"access-log-path":                       {reason: whyAccessLog},
	"http-access-log-path":                  {reason: whyAccessLog},
	"stream-access-log-path":                {reason: whyAccessLog},
	"access-log-params":                     {reason: whyAccessLog},
	"log-format-upstream":                   {reason: whyAccessLog},
	"log-format-stream":                     {reason: whyAccessLog},
	"log-format-escape-json":                {reason: whyAccessLog},
	"log-format-escape-none":                {reason: whyAccessLog},
	"skip-access-log-urls":                  {reason: whyAccessLog},
	"enable-access-log-for-default-backend": {reason: whyAccessLog},
	"enable-auth-access-log":                {reason: whyAccessLog},
	"error-log-path":                        {reason: whyLogs},
	"error-log-level":                       {reason: "the proxies' log level is their --zap-log-level flag (docs/operations.md)"},
	"enable-syslog":                         {reason: whyLogs, same: "false"},
	"syslog-host":                           {reason: whyLogs},
	"syslog-port":                           {reason: whyLogs},

	"client-header-buffer-size":      {reason: "request headers are read up to 64 KiB in all (431 or 400 past it)"},
	"large-client-header-buffers":    {reason: "request headers are read up to 64 KiB in all (431 or 400 past it)"},
	"client-header-timeout":          {reason: "the proxies' read-header timeout is 10 s (docs/data-plane.md)"},
	"keep-alive":                     {reason: "the proxies' idle timeout is fixed (docs/data-plane.md)"},
	"keep-alive-requests":            {reason: whyTuning},
	"upstream-keepalive-connections": {reason: whyUpstreamKA},
	"upstream-keepalive-time":        {reason: whyUpstreamKA},
	"upstream-keepalive-timeout":     {reason: whyUpstreamKA},
	"upstream-keepalive-requests":    {reason: whyUpstreamKA},
	"ignore-invalid-headers":         {reason: whyTuning},
	"retry-non-idempotent":           {reason: "set non_idempotent in proxy-next-upstream on the Ingresses"},
	"http2-max-field-size":           {reason: whyTuning},
	"http2-max-header-size":          {reason: "HTTP/2 header lists are limited to 64 KiB (431 past it)"},
	"http2-max-requests":             {reason: whyTuning},
	"http2-max-concurrent-streams":   {reason: whyTuning},
	"use-http2":                      {reason: "HTTP/2 is always on (h2 by ALPN, h2c with prior knowledge)", same: "true"},

	"worker-processes":               {reason: whyTuning},
	"worker-cpu-affinity":            {reason: whyTuning},
	"worker-shutdown-timeout":        {reason: "on shutdown a proxy drains for its --drain-seconds (15 s), then waits for the requests in flight"},
	"max-worker-connections":         {reason: whyTuning},
	"max-worker-open-files":          {reason: whyTuning},
	"enable-multi-accept":            {reason: whyTuning},
	"enable-serial-reloads":          {reason: "Portico never reloads: a change builds a new routing table"},
	"reuse-port":                     {reason: whyTuning},
	"enable-aio-write":               {reason: whyTuning},
	"map-hash-bucket-size":           {reason: whyTuning},
	"server-name-hash-max-size":      {reason: whyTuning},
	"server-name-hash-bucket-size":   {reason: whyTuning},
	"proxy-headers-hash-max-size":    {reason: whyTuning},
	"proxy-headers-hash-bucket-size": {reason: whyTuning},
	"variables-hash-bucket-size":     {reason: whyTuning},
	"variables-hash-max-size":        {reason: whyTuning},
	"lua-shared-dicts":               {reason: "Portico runs no Lua"},
	"nginx-status-ipv4-whitelist":    {reason: "the proxies' metrics are /metrics on their health port (docs/operations.md)"},
	"nginx-status-ipv6-whitelist":    {reason: "the proxies' metrics are /metrics on their health port (docs/operations.md)"},
	"debug-connections":              {reason: "the proxies' --zap-log-level debug logs upstream errors, TLS failures and client resets"},
	"bind-address":                   {reason: whyTuning},
	"disable-ipv6":                   {reason: whyTuning},
	"disable-ipv6-dns":               {reason: whyTuning},
	"grpc-buffer-size-kb":            {reason: "answers are streamed; there is no buffer to size"},
	"default-type":                   {reason: whyTuning},
	"strict-validate-path-type":      {reason: whyTuning},
	"relative-redirects":             {reason: whyTuning},
	"use-port-in-redirects":          {reason: "the HTTPS redirect names the proxy's HTTPS port only when it is not 443"},

	"ssl-protocols":           {reason: "TLS 1.2 and 1.3 (Go's TLS)", same: "TLSv1.2 TLSv1.3"},
	"ssl-ecdh-curve":          {reason: "Go's TLS chooses the curves"},
	"ssl-dh-param":            {reason: "Go's TLS offers no finite-field Diffie-Hellman"},
	"ssl-early-data":          {reason: "TLS 1.3 early data is not accepted", same: "false"},
	"ssl-session-cache":       {reason: whyTLSSession},
	"ssl-session-cache-size":  {reason: whyTLSSession},
	"ssl-session-tickets":     {reason: whyTLSSession},
	"ssl-session-ticket-key":  {reason: whyTLSSession},
	"ssl-session-timeout":     {reason: whyTLSSession},
	"ssl-buffer-size":         {reason: whyTuning},
	"ssl-reject-handshake":    {reason: "a TLS name without a certificate is answered with the default certificate (spec.defaultCertificate)", same: "false"},
	"enable-ocsp":             {reason: "OCSP stapling is not offered", same: "false"},
	"proxy-ssl-location-only": {reason: whyTuning},

	"use-gzip":                     {reason: whyCompression, same: "false"},
	"gzip-disable":                 {reason: whyCompression},
	"gzip-level":                   {reason: whyCompression},
	"gzip-min-length":              {reason: whyCompression},
	"gzip-types":                   {reason: whyCompression},
	"enable-brotli":                {reason: whyCompression, same: "false"},
	"brotli-level":                 {reason: whyCompression},
	"brotli-min-length":            {reason: whyCompression},
	"brotli-types":                 {reason: whyCompression},
	"use-geoip":                    {reason: whyGeoIP, same: "false"},
	"use-geoip2":                   {reason: whyGeoIP, same: "false"},
	"geoip2-autoreload-in-minutes": {reason: whyGeoIP},

	"enable-opentelemetry": {reason: whyTracing, same: "false"},
	"enable-opentracing":   {reason: whyTracing, same: "false"},

	"enable-real-ip":                      {reason: "the client's address comes from X-Forwarded-For only from trusted proxies (spec.clientAddress.trustedProxies, converted from use-forwarded-headers with proxy-real-ip-cidr)", same: "false"},
	"forwarded-for-header":                {reason: "Portico reads X-Forwarded-For only", same: "X-Forwarded-For"},
	"forwarded-for-proxy-protocol-header": {reason: "Portico reads X-Forwarded-For only"},
	"forwarded-host-header":               {reason: "Portico passes X-Forwarded-Host from trusted proxies only", same: "X-Forwarded-Host"},
	"compute-full-forwarded-for":          {reason: "from a trusted proxy the backend gets the X-Forwarded-For chain received followed by the peer; from any other address, the peer", same: "true"},
	"proxy-protocol-header-timeout":       {reason: "a connection whose PROXY protocol header does not arrive within the header timeout (10 s) is closed"},
	"generate-request-id":                 {reason: "X-Request-Id is kept when present, else generated, sent upstream and logged", same: "true"},
	"proxy-add-original-uri-header":       {reason: whyTuning, same: "false"},
	"server-tokens":                       {reason: "answers carry the backend's Server header, or Server: portico when it sends none"},
	"allow-backend-server-header":         {reason: "answers carry the backend's Server header, or Server: portico when it sends none", same: "true"},
	"hide-headers":                        {reason: "set response-headers-remove on the Ingresses"},
	"add-headers":                         {reason: "it names a ConfigMap, which the proxies do not read; set response-headers-set on the Ingresses"},
	"proxy-set-headers":                   {reason: "it names a ConfigMap, which the proxies do not read; set request-headers-set on the Ingresses"},
	"global-allowed-response-headers":     {reason: "set response-headers-set on the Ingresses"},
	"http-redirect-code":                  {reason: "the HTTPS redirect is always 308", same: "308"},
	"no-tls-redirect-locations":           {reason: "requests under /.well-known/acme-challenge/ are never redirected to HTTPS; no other path can be added", same: "/.well-known/acme-challenge"},
	"no-auth-locations":                   {reason: whyTuning},
	"block-cidrs":                         {reason: "set denylist-source-range on the Ingresses"},
	"block-user-agents":                   {reason: "blocking by User-Agent is not offered"},
	"block-referers":                      {reason: "blocking by Referer is not offered"},
	"limit-conn-zone-variable":            {reason: "limits count per client address"},
	"disable-proxy-intercept-errors":      {reason: whyTuning},

	"proxy-stream-timeout":               {reason: "TCP connections close after 10 minutes without a byte either way (docs/data-plane.md)", same: "600s"},
	"proxy-stream-next-upstream":         {reason: whyTuning},
	"proxy-stream-next-upstream-timeout": {reason: whyTuning},
	"proxy-stream-next-upstream-tries":   {reason: whyTuning},
	"proxy-stream-responses":             {reason: whyTuning},

	"global-auth-url":                   {reason: whyGlobalAuth},
	"global-auth-method":                {reason: whyGlobalAuth},
	"global-auth-signin":                {reason: whyGlobalAuth},
	"global-auth-signin-redirect-param": {reason: whyGlobalAuth},
	"global-auth-response-headers":      {reason: whyGlobalAuth},
	"global-auth-request-redirect":      {reason: whyGlobalAuth},
	"global-auth-cache-key":             {reason: whyGlobalAuth},
	"global-auth-cache-duration":        {reason: whyGlobalAuth},
	"global-auth-always-set-cookie":     {reason: whyGlobalAuth},

	// Keys that are also annotations: filled in by init.
	"app-root": {}, "custom-http-errors": {}, "preserve-trailing-slash": {}, "force-ssl-redirect": {},
	"whitelist-source-range": {}, "denylist-source-range": {}, "proxy-next-upstream": {},
	"proxy-next-upstream-tries": {}, "proxy-next-upstream-timeout": {}, "upstream-hash-by": {},
	"upstream-hash-by-subset": {}, "upstream-hash-by-subset-size": {}, "load-balance": {},
	"proxy-buffering": {}, "proxy-buffer-size": {}, "proxy-buffers-number": {}, "proxy-busy-buffers-size": {},
	"proxy-max-temp-file-size": {}, "proxy-request-buffering": {}, "client-body-buffer-size": {},
	"proxy-http-version": {}, "proxy-cookie-domain": {}, "proxy-cookie-path": {}, "proxy-redirect-from": {},
	"proxy-redirect-to": {}, "limit-rate": {}, "limit-rate-after": {}, "service-upstream": {},
	"ssl-ciphers": {}, "ssl-prefer-server-ciphers": {}, "opentelemetry-trust-incoming-span": {},
	"opentelemetry-config": {reason: whyTracing}, "opentelemetry-operation-name": {reason: whyTracing},
}

// nginxKeyPrefixes give the reason for families of keys (tracing keys of this and older
// versions). No prefix is a prefix of another.
var nginxKeyPrefixes = map[string]keyInfo{
	"otel-":        {reason: whyTracing},
	"otlp-":        {reason: whyTracing},
	"jaeger-":      {reason: whyTracing},
	"zipkin-":      {reason: whyTracing},
	"datadog-":     {reason: whyTracing},
	"opentracing-": {reason: whyTracing},
}

// sameAsAnnotation are the values of annotation keys with which ingress-nginx's fleet-wide
// default is Portico's behaviour without the annotation.
var sameAsAnnotation = map[string]string{
	"load-balance":            "round_robin",
	"proxy-buffering":         "off",
	"proxy-http-version":      "1.1",
	"force-ssl-redirect":      "false",
	"preserve-trailing-slash": "false",
	"service-upstream":        "false",
}

func init() {
	for k, info := range nginxKeys {
		if info.reason != "" {
			continue
		}
		_, why, fixed := route.FixedBehaviour(k)
		switch {
		case route.NginxUnsupportedReason(k) != "":
			info.reason = route.NginxUnsupportedReason(k)
		case fixed:
			info.reason = why
		case route.KnownAnnotation(k):
			info.reason = perIngress(k)
		}
		info.same = sameAsAnnotation[k]
		nginxKeys[k] = info
	}
}
