package proxy

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"portico.dev/portico/test/echo"
)

// ingress-nginx's own documented examples (its docs/examples and user guide: rewrite, app-root,
// canary, basic auth, external auth, CORS, redirects, cookie affinity, configuration-snippet
// headers), their Ingress YAML as the docs give it with only the class changed (and the
// namespace the harness serves), on a fleet with ingressNginxCompatibility: the same requests
// get the answers, and the backends the requests, the docs describe.

// nginxExample is one documented example: its manifests and the exchanges the docs show.
type nginxExample struct {
	name     string
	yaml     string // Ingresses and Secrets, "---"-separated, as the docs write them
	requests []nginxExchange
}

type nginxExchange struct {
	method, host, target string
	header               []string // name, value pairs
	status               int
	answer               map[string]string // headers of the answer ("" for absent)
	backend              string            // the backend that answers ("" for the proxy)
	path                 string            // the path the backend gets, when it answers
}

func TestIngressNginxDocumentedExamples(t *testing.T) {
	auth, _ := authService(t)
	examples := []nginxExample{
		{name: "rewrite (docs/examples/rewrite)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
  name: rewrite
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: rewrite.bar.com
    http:
      paths:
      - path: /something(/|$)(.*)
        pathType: ImplementationSpecific
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "rewrite.bar.com", target: "/something", status: 200, backend: "http-svc", path: "/"},
			{host: "rewrite.bar.com", target: "/something/", status: 200, backend: "http-svc", path: "/"},
			{host: "rewrite.bar.com", target: "/something/new", status: 200, backend: "http-svc", path: "/new"},
		}},
		{name: "app-root (docs/examples/rewrite)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/app-root: /app1
  name: approot
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: approot.bar.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "approot.bar.com", target: "/", status: 302, answer: map[string]string{"Location": "http://approot.bar.com/app1"}},
			{host: "approot.bar.com", target: "/app1", status: 200, backend: "http-svc", path: "/app1"},
		}},
		{name: "canary by header and weight (user guide, canary annotations)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: production
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: echo.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: production
            port:
              number: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: canary
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/canary: "true"
    nginx.ingress.kubernetes.io/canary-by-header: "canary"
    nginx.ingress.kubernetes.io/canary-weight: "0"
spec:
  ingressClassName: nginx
  rules:
  - host: echo.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: canary
            port:
              number: 80`, requests: []nginxExchange{
			{host: "echo.com", target: "/", header: []string{"canary", "always"}, status: 200, backend: "canary", path: "/"},
			{host: "echo.com", target: "/", header: []string{"canary", "never"}, status: 200, backend: "production", path: "/"},
			{host: "echo.com", target: "/", status: 200, backend: "production", path: "/"}, // weight 0
		}},
		{name: "basic auth (docs/examples/auth/basic, htpasswd -c auth foo)", yaml: `
apiVersion: v1
kind: Secret
metadata:
  name: basic-auth
  namespace: default
type: Opaque
data:
  auth: Zm9vOiRhcHIxJDBTNVkyRWtyJDIvR1pRb3B2VVdBcFVYemNOMVJCejA=
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ingress-with-auth
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: basic-auth
    nginx.ingress.kubernetes.io/auth-realm: 'Authentication Required - foo'
spec:
  ingressClassName: nginx
  rules:
  - host: foo.bar.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "foo.bar.com", target: "/", status: 401, answer: map[string]string{"WWW-Authenticate": `Basic realm="Authentication Required - foo"`}},
			{host: "foo.bar.com", target: "/", header: []string{"Authorization", basic("foo", "bar")}, status: 200, backend: "http-svc", path: "/"},
			{host: "foo.bar.com", target: "/", header: []string{"Authorization", basic("foo", "baz")}, status: 401},
		}},
		{name: "external auth (docs/examples/auth/external-auth, the auth service on loopback)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/auth-url: http://` + auth + `/auth
    nginx.ingress.kubernetes.io/auth-response-headers: X-Auth-Request-User
  name: external-auth
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: external-auth-01.sample.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "external-auth-01.sample.com", target: "/", status: 401, answer: map[string]string{"WWW-Authenticate": `Bearer realm="app"`}},
			{host: "external-auth-01.sample.com", target: "/", header: []string{"Cookie", "session=good"}, status: 200, backend: "http-svc", path: "/"},
		}},
		{name: "CORS (user guide, enable-cors)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/enable-cors: "true"
    nginx.ingress.kubernetes.io/cors-allow-origin: "https://origin-site.com:4443, http://origin-site.com, myprotocol://example.org:1199"
  name: cors
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: cors.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{method: "OPTIONS", host: "cors.example.com", target: "/", header: []string{"Origin", "https://origin-site.com:4443"}, status: 204,
				answer: map[string]string{"Access-Control-Allow-Origin": "https://origin-site.com:4443", "Access-Control-Allow-Credentials": "true",
					"Access-Control-Allow-Methods": "GET, PUT, POST, DELETE, PATCH, OPTIONS", "Access-Control-Max-Age": "1728000"}},
			{host: "cors.example.com", target: "/", header: []string{"Origin", "myprotocol://example.org:1199"}, status: 200, backend: "http-svc", path: "/",
				answer: map[string]string{"Access-Control-Allow-Origin": "myprotocol://example.org:1199"}},
			{host: "cors.example.com", target: "/", header: []string{"Origin", "https://other-site.com"}, status: 200, backend: "http-svc", path: "/",
				answer: map[string]string{"Access-Control-Allow-Origin": ""}},
		}},
		{name: "permanent and temporal redirects (user guide, redirect annotations)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: https://www.google.com
  name: permanent
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: permanent.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/temporal-redirect: https://www.google.com
    nginx.ingress.kubernetes.io/temporal-redirect-code: "307"
  name: temporal
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: temporal.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "permanent.example.com", target: "/x", status: 301, answer: map[string]string{"Location": "https://www.google.com"}},
			{host: "temporal.example.com", target: "/x", status: 307, answer: map[string]string{"Location": "https://www.google.com"}},
		}},
		{name: "cookie affinity (docs/examples/affinity/cookie)", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: nginx-test
  namespace: default
  annotations:
    nginx.ingress.kubernetes.io/affinity: "cookie"
    nginx.ingress.kubernetes.io/session-cookie-name: "route"
    nginx.ingress.kubernetes.io/session-cookie-expires: "172800"
    nginx.ingress.kubernetes.io/session-cookie-max-age: "172800"
spec:
  ingressClassName: nginx
  rules:
  - host: stickyingress.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "stickyingress.example.com", target: "/", status: 200, backend: "http-svc", path: "/",
				answer: map[string]string{"Set-Cookie": "route=*; Path=/; Max-Age=172800; HttpOnly; SameSite=Lax; Expires=*"}},
		}},
		{name: "configuration-snippet of headers (user guide), translated, never executed", yaml: `
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    nginx.ingress.kubernetes.io/configuration-snippet: |
      more_set_headers "Request-Id: abc";
      proxy_set_header X-Tenant blue;
  name: snippet
  namespace: default
spec:
  ingressClassName: nginx
  rules:
  - host: snippet.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: http-svc
            port:
              number: 80`, requests: []nginxExchange{
			{host: "snippet.example.com", target: "/", status: 200, backend: "http-svc", path: "/", answer: map[string]string{"Request-Id": "abc"}},
		}},
	}
	for _, ex := range examples {
		t.Run(ex.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			h.in.Config.IngressNginxCompatibility = true
			var ings []*networkingv1.Ingress
			for _, doc := range strings.Split(ex.yaml, "\n---\n") {
				doc = strings.ReplaceAll(doc, "namespace: default", "namespace: ns")
				doc = strings.ReplaceAll(doc, "ingressClassName: nginx", "ingressClassName: portico") // the one change
				if strings.Contains(doc, "kind: Secret") {
					s := &corev1.Secret{}
					if err := yaml.UnmarshalStrict([]byte(doc), s); err != nil {
						t.Fatal(err)
					}
					h.in.Secrets = append(h.in.Secrets, s)
					continue
				}
				ing := &networkingv1.Ingress{}
				if err := yaml.UnmarshalStrict([]byte(doc), ing); err != nil {
					t.Fatal(err)
				}
				for _, r := range ing.Spec.Rules {
					for _, p := range r.HTTP.Paths {
						if name := p.Backend.Service.Name; !h.hasService(name) {
							h.backend(name, echo.Handler(name, name), "")
						}
					}
				}
				ings = append(ings, ing)
			}
			if probs := h.compile(ings...); len(probs) != 0 {
				t.Fatalf("problems: %v", probs)
			}
			c := noRedirects(&http.Client{})
			for i, x := range ex.requests {
				method := x.method
				if method == "" {
					method = http.MethodGet
				}
				resp, rep, body := do(t, c, method, "http://"+h.http+x.target, x.host, x.header...)
				what := fmt.Sprintf("exchange %d (%s %s%s)", i, method, x.host, x.target)
				if resp.StatusCode != x.status {
					t.Errorf("%s: %d %q, want %d", what, resp.StatusCode, body, x.status)
					continue
				}
				if x.backend != "" && (rep.Name != x.backend || rep.Path != x.path) {
					t.Errorf("%s: backend %q got %q, want %q to get %q", what, rep.Name, rep.Path, x.backend, x.path)
				}
				if x.backend == "" && rep.Name != "" {
					t.Errorf("%s: a backend answered (%s), want the proxy", what, rep.Name)
				}
				for k, v := range x.answer {
					if got := resp.Header.Get(k); !wildcardMatch(v, got) {
						t.Errorf("%s: %s %q, want %q", what, k, got, v)
					}
				}
			}
		})
	}
}

// wildcardMatch matches s against a pattern whose "*" stands for any run of characters ("" only
// matches "").
func wildcardMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	rest := []byte(s[len(parts[0]):])
	for i, p := range parts[1:] {
		if i == len(parts)-2 {
			return bytes.HasSuffix(rest, []byte(p)) && len(rest) >= len(p)
		}
		j := bytes.Index(rest, []byte(p))
		if j < 0 {
			return false
		}
		rest = rest[j+len(p):]
	}
	return true
}
