package route

import (
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// ingressNginxKeys are the annotation keys of ingress-nginx (its annotations guide,
// docs/user-guide/nginx-configuration/annotations.md, and the aliases its parsers read:
// allowlist-source-range, limit-allowlist), for the count docs/migration.md reports.
var ingressNginxKeys = strings.Fields(`affinity affinity-canary-behavior affinity-mode allowlist-source-range app-root
auth-always-set-cookie auth-cache-duration auth-cache-key auth-keepalive auth-keepalive-requests auth-keepalive-share-vars
auth-keepalive-timeout auth-method auth-proxy-set-headers auth-realm auth-request-redirect auth-response-headers auth-secret
auth-secret-type auth-signin auth-signin-redirect-param auth-snippet auth-tls-error-page auth-tls-match-cn
auth-tls-pass-certificate-to-upstream auth-tls-secret auth-tls-verify-client auth-tls-verify-depth auth-type auth-url
backend-protocol canary canary-by-cookie canary-by-header canary-by-header-pattern canary-by-header-value canary-weight
canary-weight-total client-body-buffer-size configuration-snippet connection-proxy-header cors-allow-credentials
cors-allow-headers cors-allow-methods cors-allow-origin cors-expose-headers cors-max-age custom-headers custom-http-errors
default-backend denylist-source-range enable-access-log enable-cors enable-global-auth enable-modsecurity
enable-opentelemetry enable-owasp-core-rules enable-rewrite-log force-ssl-redirect from-to-www-redirect http2-push-preload
limit-allowlist limit-burst-multiplier limit-connections limit-rate limit-rate-after limit-rpm limit-rps limit-whitelist
load-balance mirror-host mirror-request-body mirror-target modsecurity-snippet modsecurity-transaction-id
opentelemetry-trust-incoming-span permanent-redirect permanent-redirect-code preserve-trailing-slash proxy-body-size
proxy-buffer-size proxy-buffering proxy-buffers-number proxy-busy-buffers-size proxy-connect-timeout proxy-cookie-domain
proxy-cookie-path proxy-http-version proxy-max-temp-file-size proxy-next-upstream proxy-next-upstream-timeout
proxy-next-upstream-tries proxy-read-timeout proxy-redirect-from proxy-redirect-to proxy-request-buffering
proxy-send-timeout proxy-ssl-ciphers proxy-ssl-name proxy-ssl-protocols proxy-ssl-secret proxy-ssl-server-name
proxy-ssl-verify proxy-ssl-verify-depth rewrite-target satisfy server-alias server-snippet service-upstream
session-cookie-change-on-failure session-cookie-conditional-samesite-none session-cookie-domain session-cookie-expires
session-cookie-max-age session-cookie-name session-cookie-path session-cookie-samesite session-cookie-secure ssl-ciphers
ssl-passthrough ssl-prefer-server-ciphers ssl-redirect stream-snippet temporal-redirect temporal-redirect-code
upstream-hash-by upstream-hash-by-subset upstream-hash-by-subset-size upstream-vhost use-regex whitelist-source-range
x-forwarded-prefix`)

// notHonoured are keys Portico reads but does not honour: they refuse the routes or are
// reported and ignored (docs/access-control.md).
var notHonoured = map[string]bool{"auth-proxy-set-headers": true, "auth-snippet": true, "auth-keepalive": true,
	"auth-keepalive-requests": true, "auth-keepalive-share-vars": true, "auth-keepalive-timeout": true}

// keyCase is one honoured key's test: the key's annotations (with the companions it needs, all
// under ingress-nginx's prefix), the companions alone, and whether the key shows in the
// compiled table (keys whose value is Portico's fixed behaviour do not: they must draw no
// problem, and another value must).
type keyCase struct {
	with, without map[string]string
	fixed         bool
	other         string // fixed: a value Portico does not offer
	tls, main     bool   // the Ingress has TLS; a main Ingress shares the host (canaries)
}

func TestIngressNginxKeysHonoured(t *testing.T) {
	kv := func(pairs ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(pairs); i += 2 {
			m[pairs[i]] = pairs[i+1]
		}
		return m
	}
	key := func(k, v string, companions ...string) keyCase {
		return keyCase{with: kv(append([]string{k, v}, companions...)...), without: kv(companions...)}
	}
	fixed := func(k, v, other string) keyCase {
		return keyCase{with: kv(k, v), without: kv(), fixed: true, other: other}
	}
	withTLS := func(c keyCase) keyCase {
		c.tls = true
		return c
	}
	onMain := func(c keyCase) keyCase {
		c.main = true
		return c
	}
	canary := func(k, v string) keyCase {
		c := key(k, v, "canary", "true")
		c.main = true
		return c
	}
	basic := []string{"auth-type", "basic", "auth-secret", "users"}
	ext := []string{"auth-url", "http://auth.example.com/check"}
	cors := []string{"enable-cors", "true"}
	sticky := []string{"affinity", "cookie"}
	ca := []string{"auth-tls-secret", "ns/ca"}
	tlsBackend := []string{"backend-protocol", "HTTPS"}
	cases := map[string]keyCase{
		"affinity":                              key("affinity", "cookie"),
		"affinity-mode":                         fixed("affinity-mode", "balanced", "persistent"),
		"allowlist-source-range":                key("allowlist-source-range", "10.0.0.0/8"),
		"app-root":                              key("app-root", "/app1"),
		"auth-always-set-cookie":                key("auth-always-set-cookie", "true", ext...),
		"auth-cache-duration":                   key("auth-cache-duration", "200 10m", append([]string{"auth-cache-key", "$remote_user"}, ext...)...),
		"auth-cache-key":                        key("auth-cache-key", "$remote_user", ext...),
		"auth-method":                           key("auth-method", "POST", ext...),
		"auth-realm":                            key("auth-realm", "Staff", basic...),
		"auth-request-redirect":                 key("auth-request-redirect", "/back", ext...),
		"auth-response-headers":                 key("auth-response-headers", "X-User", ext...),
		"auth-secret":                           key("auth-secret", "users", "auth-type", "basic", "auth-secret-type", "auth-file"),
		"auth-secret-type":                      key("auth-secret-type", "auth-map", "auth-type", "basic", "auth-secret", "map"),
		"auth-signin":                           key("auth-signin", "https://login.example.com/start", ext...),
		"auth-signin-redirect-param":            key("auth-signin-redirect-param", "next", append([]string{"auth-signin", "https://login.example.com/start"}, ext...)...),
		"auth-tls-error-page":                   withTLS(key("auth-tls-error-page", "https://example.com/error", ca...)),
		"auth-tls-match-cn":                     withTLS(key("auth-tls-match-cn", "CN=client", ca...)),
		"auth-tls-pass-certificate-to-upstream": withTLS(key("auth-tls-pass-certificate-to-upstream", "true", ca...)),
		"auth-tls-secret":                       withTLS(key("auth-tls-secret", "ns/ca")),
		"auth-tls-verify-client":                withTLS(key("auth-tls-verify-client", "optional", ca...)),
		"auth-tls-verify-depth":                 withTLS(key("auth-tls-verify-depth", "3", ca...)),
		"auth-type":                             key("auth-type", "basic", "auth-secret", "users"),
		"auth-url":                              key("auth-url", "http://auth.example.com/check"),
		"backend-protocol":                      key("backend-protocol", "GRPC"),
		"canary":                                canary("canary-weight", "10"),
		"canary-by-cookie":                      canary("canary-by-cookie", "beta"),
		"canary-by-header":                      canary("canary-by-header", "X-Beta"),
		"canary-by-header-pattern":              onMain(key("canary-by-header-pattern", "^y", "canary", "true", "canary-by-header", "X-Beta")),
		"canary-by-header-value":                onMain(key("canary-by-header-value", "on", "canary", "true", "canary-by-header", "X-Beta")),
		"canary-weight":                         canary("canary-weight", "30"),
		"canary-weight-total":                   onMain(key("canary-weight-total", "1000", "canary", "true", "canary-weight", "30")),
		"configuration-snippet":                 key("configuration-snippet", `more_set_headers "X-Frame-Options: DENY";`),
		"cors-allow-credentials":                key("cors-allow-credentials", "false", cors...),
		"cors-allow-headers":                    key("cors-allow-headers", "X-Custom", cors...),
		"cors-allow-methods":                    key("cors-allow-methods", "GET", cors...),
		"cors-allow-origin":                     key("cors-allow-origin", "https://a.example.com", cors...),
		"cors-expose-headers":                   key("cors-expose-headers", "X-Total", cors...),
		"cors-max-age":                          key("cors-max-age", "60", cors...),
		"custom-http-errors":                    key("custom-http-errors", "404,503"),
		"default-backend":                       key("default-backend", "b", "custom-http-errors", "404"),
		"denylist-source-range":                 key("denylist-source-range", "192.0.2.0/24"),
		"enable-access-log":                     key("enable-access-log", "false"),
		"enable-cors":                           key("enable-cors", "true"),
		"force-ssl-redirect":                    key("force-ssl-redirect", "true"),
		"from-to-www-redirect":                  key("from-to-www-redirect", "true"),
		"limit-allowlist":                       key("limit-allowlist", "10.0.0.0/8", "limit-rps", "5"),
		"limit-burst-multiplier":                key("limit-burst-multiplier", "2", "limit-rps", "5"),
		"limit-connections":                     key("limit-connections", "5"),
		"limit-rpm":                             key("limit-rpm", "60"),
		"limit-rps":                             key("limit-rps", "5"),
		"limit-whitelist":                       key("limit-whitelist", "10.0.0.0/8", "limit-rps", "5"),
		"load-balance":                          key("load-balance", "ewma"),
		"mirror-request-body":                   fixed("mirror-request-body", "off", "on"),
		"mirror-target":                         key("mirror-target", "http://c.ns.svc"),
		"permanent-redirect":                    key("permanent-redirect", "https://example.org/"),
		"permanent-redirect-code":               key("permanent-redirect-code", "308", "permanent-redirect", "https://example.org/"),
		"preserve-trailing-slash":               key("preserve-trailing-slash", "true", "force-ssl-redirect", "true"),
		"proxy-body-size":                       key("proxy-body-size", "8m"),
		"proxy-buffering":                       fixed("proxy-buffering", "off", "on"),
		"proxy-connect-timeout":                 key("proxy-connect-timeout", "3"),
		"proxy-http-version":                    fixed("proxy-http-version", "1.1", "1.0"),
		"proxy-next-upstream":                   key("proxy-next-upstream", "error timeout http_503"),
		"proxy-next-upstream-timeout":           key("proxy-next-upstream-timeout", "10", "proxy-next-upstream", "error"),
		"proxy-next-upstream-tries":             key("proxy-next-upstream-tries", "5", "proxy-next-upstream", "error"),
		"proxy-read-timeout":                    key("proxy-read-timeout", "30"),
		"proxy-send-timeout":                    key("proxy-send-timeout", "30"),
		"proxy-ssl-name":                        key("proxy-ssl-name", "backend.internal", tlsBackend...),
		"proxy-ssl-secret":                      key("proxy-ssl-secret", "ns/backend-ca", tlsBackend...),
		"proxy-ssl-server-name":                 key("proxy-ssl-server-name", "on", tlsBackend...),
		"proxy-ssl-verify":                      key("proxy-ssl-verify", "on", append([]string{"proxy-ssl-secret", "ns/backend-ca"}, tlsBackend...)...),
		"rewrite-target":                        key("rewrite-target", "/"),
		"satisfy":                               key("satisfy", "any", append([]string{"whitelist-source-range", "10.0.0.0/8"}, basic...)...),
		"service-upstream":                      fixed("service-upstream", "false", "true"),
		"session-cookie-change-on-failure":      fixed("session-cookie-change-on-failure", "true", "false"),
		"session-cookie-domain":                 key("session-cookie-domain", "example.com", sticky...),
		"session-cookie-expires":                key("session-cookie-expires", "3600", sticky...),
		"session-cookie-max-age":                key("session-cookie-max-age", "3600", sticky...),
		"session-cookie-name":                   key("session-cookie-name", "route", sticky...),
		"session-cookie-path":                   key("session-cookie-path", "/shop", sticky...),
		"session-cookie-samesite":               key("session-cookie-samesite", "Strict", sticky...),
		"session-cookie-secure":                 key("session-cookie-secure", "true", sticky...),
		"ssl-passthrough":                       key("ssl-passthrough", "true"),
		"ssl-redirect":                          {with: kv("ssl-redirect", "false"), without: kv(), tls: true},
		"temporal-redirect":                     key("temporal-redirect", "https://example.org/"),
		"temporal-redirect-code":                key("temporal-redirect-code", "307", "temporal-redirect", "https://example.org/"),
		"upstream-hash-by":                      key("upstream-hash-by", "$remote_addr"),
		"upstream-vhost":                        key("upstream-vhost", "internal.example.com"),
		"use-regex":                             key("use-regex", "true"),
		"whitelist-source-range":                key("whitelist-source-range", "10.0.0.0/8"),
		"x-forwarded-prefix":                    key("x-forwarded-prefix", "/shop", "rewrite-target", "/app"),
	}
	caCrt, _ := rt.SelfSigned("client-ca")
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "users", UID: "u", ResourceVersion: "1"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"auth": []byte("foo:{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=\n")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "map", UID: "m", ResourceVersion: "1"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"foo": []byte("{SHA}Ys23Ag/5IOWqZCw9QGaVDdHwH00=")}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "ca", UID: "c", ResourceVersion: "1"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"ca.crt": caCrt}},
		rt.TLSSecret("ns", "site", "keys.example.com"),
	}
	backendCA := rt.TLSSecret("ns", "backend-ca", "backend.internal")
	backendCA.Data["ca.crt"] = backendCA.Data["tls.crt"]
	secrets = append(secrets, backendCA)

	compile := func(c keyCase, ann map[string]string) (string, []Problem) {
		opts := []rt.IngressOpt{rt.Rule("keys.example.com", "/", rt.Prefix, "a", 80)}
		for k, v := range ann {
			opts = append(opts, rt.Annotation(NginxAnnotationPrefix+k, v))
		}
		if c.tls {
			opts = append(opts, rt.TLS("site", "keys.example.com"))
		}
		in := baseInput(rt.Ingress("ns", "subject", 2, opts...))
		if c.main {
			in.Ingresses = append(in.Ingresses, rt.Ingress("ns", "main", 1, rt.Rule("keys.example.com", "/", rt.Prefix, "b", 80)))
		}
		in.Secrets = secrets
		in.Config.IngressNginxCompatibility = true
		tab, probs := Compile(in)
		return tab.Dump(), probs
	}
	honoured := 0
	for _, k := range ingressNginxKeys {
		if !KnownAnnotation(k) || notHonoured[k] {
			if _, ok := cases[k]; ok {
				t.Errorf("%s: a case for a key Portico does not honour", k)
			}
			continue
		}
		honoured++
		c, ok := cases[k]
		if !ok {
			t.Errorf("%s: Portico honours it, and it has no case here", k)
			continue
		}
		t.Run(k, func(t *testing.T) {
			with, probs := compile(c, c.with)
			if len(probs) > 0 {
				t.Fatalf("problems with %v: %v", c.with, probs)
			}
			without, _ := compile(c, c.without)
			switch {
			case c.fixed:
				if with != without {
					t.Errorf("%s: Portico's fixed behaviour changed the table", k)
				}
				if _, probs := compile(c, kv(k, c.other)); len(probs) != 1 || !strings.Contains(probs[0].Message, NginxAnnotationPrefix+k) {
					t.Errorf("%s: %q: problems %v, want one naming the key", k, c.other, probs)
				}
			case with == without:
				t.Errorf("%s: no effect on the compiled table:\n%s", k, with)
			}
		})
	}
	var unsupported []string
	for _, k := range ingressNginxKeys {
		if !KnownAnnotation(k) || notHonoured[k] {
			unsupported = append(unsupported, k)
		}
	}
	sort.Strings(unsupported)
	t.Logf("ingress-nginx annotation keys honoured, each with a case above: %d of %d; not honoured: %s",
		honoured, len(ingressNginxKeys), strings.Join(unsupported, " "))
	if honoured != len(cases) {
		t.Errorf("%d honoured keys, %d cases", honoured, len(cases))
	}
}
