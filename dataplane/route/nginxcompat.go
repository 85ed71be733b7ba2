package route

import (
	"net/textproto"
	"regexp"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
)

// NginxAnnotationPrefix is ingress-nginx's annotation prefix. A fleet with
// spec.ingressNginxCompatibility reads it with the same meaning as AnnotationPrefix (the keys
// after the prefixes are the same); when both prefixes set a key, AnnotationPrefix wins and a
// problem says so (docs/migration.md).
const NginxAnnotationPrefix = "nginx.ingress.kubernetes.io/"

// annotationView reads an Ingress's annotations as a fleet does: AnnotationPrefix, and, with
// compat, NginxAnnotationPrefix for keys AnnotationPrefix does not set.
type annotationView struct {
	a      map[string]string
	compat bool
}

func viewOf(ing *networkingv1.Ingress, compat bool) annotationView {
	return annotationView{a: ing.Annotations, compat: compat}
}

// get returns the value of key (after a prefix), trimmed, and the annotation's full name.
func (v annotationView) get(key string) (value, name string, ok bool) {
	if s, ok := v.a[AnnotationPrefix+key]; ok {
		return strings.TrimSpace(s), AnnotationPrefix + key, true
	}
	if v.compat {
		if s, ok := v.a[NginxAnnotationPrefix+key]; ok {
			return strings.TrimSpace(s), NginxAnnotationPrefix + key, true
		}
	}
	return "", "", false
}

// raw is get without trimming (multi-line values).
func (v annotationView) raw(key string) (string, bool) {
	if s, ok := v.a[AnnotationPrefix+key]; ok {
		return s, true
	}
	if v.compat {
		s, ok := v.a[NginxAnnotationPrefix+key]
		return s, ok
	}
	return "", false
}

// keys returns the keys set (after the prefix), sorted by the caller, the keys set under both
// prefixes (AnnotationPrefix wins), and whether any comes from NginxAnnotationPrefix alone.
func (v annotationView) keys() (keys, both []string, nginx bool) {
	for k := range v.a {
		if rest, ok := strings.CutPrefix(k, AnnotationPrefix); ok {
			keys = append(keys, rest)
			if _, dup := v.a[NginxAnnotationPrefix+rest]; dup && v.compat {
				both = append(both, rest)
			}
		} else if rest, ok := strings.CutPrefix(k, NginxAnnotationPrefix); ok && v.compat {
			if _, dup := v.a[AnnotationPrefix+rest]; !dup {
				keys = append(keys, rest)
				nginx = true
			}
		}
	}
	return keys, both, nginx
}

// portico.dev/<key> as a problem names it, followed by something that is not part of a key.
var porticoKeyRef = regexp.MustCompile(`portico\.dev/([a-z0-9-]+)`)

// renamePrefix rewrites the annotation names in a problem message to the prefix the Ingress
// used: on a compatibility fleet, a key set as nginx.ingress.kubernetes.io/ is named so.
func (v annotationView) renamePrefix(msg string) string {
	if !v.compat {
		return msg
	}
	return porticoKeyRef.ReplaceAllStringFunc(msg, func(m string) string {
		key := m[len(AnnotationPrefix):]
		if _, ok := v.a[AnnotationPrefix+key]; ok {
			return m
		}
		if _, ok := v.a[NginxAnnotationPrefix+key]; ok {
			return NginxAnnotationPrefix + key
		}
		return m
	})
}

// merged is the annotations as AnnotationPrefix keys: the Ingress's own map without
// compatibility, else a copy with the NginxAnnotationPrefix keys AnnotationPrefix does not set
// renamed (for the readers of whole maps, such as the backend's affinity and balancing).
func (v annotationView) merged() map[string]string {
	if !v.compat {
		return v.a
	}
	var m map[string]string
	for k, val := range v.a {
		rest, ok := strings.CutPrefix(k, NginxAnnotationPrefix)
		if !ok {
			continue
		}
		if _, own := v.a[AnnotationPrefix+rest]; own {
			continue
		}
		if m == nil {
			m = make(map[string]string, len(v.a))
			for k2, v2 := range v.a {
				m[k2] = v2
			}
		}
		m[AnnotationPrefix+rest] = val
	}
	if m == nil {
		return v.a
	}
	return m
}

// nginxUnsupported are ingress-nginx's annotation keys Portico does not honour, with why and
// what to do instead (docs/migration.md lists them). Each draws a problem (a Warning Event)
// naming it; none is ignored silently, and no snippet is ever executed as configuration.
var nginxUnsupported = map[string]string{
	"server-snippet":                           "nginx configuration is never executed",
	"stream-snippet":                           "nginx configuration is never executed",
	"auth-snippet":                             "nginx configuration is never executed",
	"modsecurity-snippet":                      "ModSecurity is not part of Portico; put a WAF in front of or behind the fleet",
	"enable-modsecurity":                       "ModSecurity is not part of Portico; put a WAF in front of or behind the fleet",
	"enable-owasp-core-rules":                  "ModSecurity is not part of Portico; put a WAF in front of or behind the fleet",
	"modsecurity-transaction-id":               "ModSecurity is not part of Portico",
	"enable-opentelemetry":                     "tracing is not offered yet",
	"opentelemetry-trust-incoming-span":        "tracing is not offered yet",
	"enable-rewrite-log":                       "nginx's rewrite log has no counterpart",
	"enable-global-auth":                       "there is no fleet-wide external authentication; set auth-url on the Ingress",
	"client-body-buffer-size":                  "bodies are streamed; there is no buffer to size",
	"proxy-buffer-size":                        "answers are streamed; there is no buffer to size",
	"proxy-buffers-number":                     "answers are streamed; there is no buffer to size",
	"proxy-busy-buffers-size":                  "answers are streamed; there is no buffer to size",
	"proxy-max-temp-file-size":                 "nothing is written to disk",
	"proxy-request-buffering":                  "request bodies are streamed (up to 64 KiB read before forwarding)",
	"connection-proxy-header":                  "the Connection header to backends is the proxy's (keep-alive pooling)",
	"custom-headers":                           "it names a ConfigMap, which the proxies do not read; use response-headers-set",
	"proxy-cookie-domain":                      "cookie rewriting is not offered",
	"proxy-cookie-path":                        "cookie rewriting is not offered",
	"proxy-redirect-from":                      "Location rewriting is not offered",
	"proxy-redirect-to":                        "Location rewriting is not offered",
	"proxy-ssl-ciphers":                        "Go's TLS chooses the ciphers to backends",
	"proxy-ssl-protocols":                      "TLS 1.2 and 1.3 to backends",
	"proxy-ssl-verify-depth":                   "the chain to backends is verified to any depth",
	"ssl-ciphers":                              "Go's TLS chooses the ciphers (TLS 1.2 and 1.3)",
	"ssl-prefer-server-ciphers":                "Go's TLS chooses the ciphers",
	"http2-push-preload":                       "HTTP/2 server push is not offered (browsers dropped it)",
	"limit-rate":                               "bandwidth limits are not offered",
	"limit-rate-after":                         "bandwidth limits are not offered",
	"mirror-host":                              "mirrored copies keep the request's Host",
	"server-alias":                             "list the names as rules (or hosts) of the Ingress",
	"session-cookie-conditional-samesite-none": "set session-cookie-samesite",
	"affinity-canary-behavior":                 "a canary's traffic follows canary-weight",
	"upstream-hash-by-subset":                  "subsets are not offered; upstream-hash-by hashes over all endpoints",
	"upstream-hash-by-subset-size":             "subsets are not offered",
}

// fixedBehaviour are ingress-nginx keys whose value Portico's behaviour always is: that value
// is honoured (the Ingress asks for what it gets), another is reported and ignored.
var fixedBehaviour = map[string]struct{ value, why string }{
	"proxy-buffering":                  {"off", "answers are streamed as they come"},
	"mirror-request-body":              {"off", "mirrored copies carry no body"},
	"service-upstream":                 {"false", "traffic goes to endpoint addresses, never through the Service's cluster IP"},
	"proxy-http-version":               {"1.1", "backends are spoken to over HTTP/1.1 (backend-protocol chooses HTTP/2)"},
	"session-cookie-change-on-failure": {"true", "the affinity cookie moves when its endpoint fails or is gone"},
	"affinity-mode":                    {"balanced", "a new endpoint takes new sessions; existing ones stay"},
}

// fixedBehaviourOK reports whether key (after the prefix) is one of fixedBehaviour with the
// value Portico's behaviour is (true for any other key).
func fixedBehaviourOK(key, value string) bool {
	fb, ok := fixedBehaviour[key]
	return !ok || strings.EqualFold(strings.TrimSpace(value), fb.value)
}

// UnsupportedAnnotations returns the annotation keys of an Ingress that the fleet reads but does
// not honour (AnnotationPrefix keys it does not know, and, with compat, ingress-nginx keys
// Portico does not offer), as full names, sorted: the Ingresses the fleet's status counts.
func UnsupportedAnnotations(ing *networkingv1.Ingress, compat bool) []string {
	var out []string
	for k := range ing.Annotations {
		var rest string
		var ok bool
		if rest, ok = strings.CutPrefix(k, AnnotationPrefix); !ok {
			if rest, ok = strings.CutPrefix(k, NginxAnnotationPrefix); !ok || !compat {
				continue
			}
		}
		if !known[rest] || !fixedBehaviourOK(rest, ing.Annotations[k]) {
			out = append(out, k)
		} else if rest == annConfigurationSnippet {
			if _, _, untranslated := translateSnippet(ing.Annotations[k]); len(untranslated) > 0 {
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// translateSnippet reads the forms of a configuration-snippet that are header changes and
// nothing else, as Traefik's ingress-nginx provider does: more_set_headers "Name: value"...
// (response, replacing), add_header Name value [always] (response, added), proxy_set_header
// Name value (request, replacing), more_clear_headers Name... (response, removed). Values are
// literal: one holding an nginx variable ($...) is not translated. Every other statement, and
// any statement not understood, is returned in rest: the snippet is then not applied at all
// (a partial snippet could drop a header the rest depended on), and each is reported.
func translateSnippet(snippet string) (req, resp HeaderOps, rest []string) {
	for _, stmt := range splitStatements(snippet) {
		args, ok := nginxArgs(stmt)
		if !ok || len(args) == 0 {
			rest = append(rest, stmt)
			continue
		}
		literal := func(s string) bool { return !strings.Contains(s, "$") }
		switch args[0] {
		case "more_set_headers":
			good := len(args) > 1
			var hs []Header
			for _, a := range args[1:] {
				if strings.HasPrefix(a, "-") { // -s status / -t type filters: not translated
					good = false
					break
				}
				name, value, found := strings.Cut(a, ":")
				name, value = strings.TrimSpace(name), strings.TrimSpace(value)
				if !found || !literal(value) || checkHeader(name, value, false) != nil {
					good = false
					break
				}
				hs = append(hs, Header{Name: canonical(name), Value: value})
			}
			if !good {
				rest = append(rest, stmt)
				continue
			}
			resp.Set = append(resp.Set, hs...)
		case "more_clear_headers":
			if len(args) < 2 {
				rest = append(rest, stmt)
				continue
			}
			for _, a := range args[1:] {
				resp.Remove = append(resp.Remove, canonical(a))
			}
		case "add_header", "proxy_set_header":
			n := len(args)
			if args[0] == "add_header" && n == 4 && args[3] == "always" {
				n = 3
			}
			if n != 3 || !literal(args[2]) || checkHeader(args[1], args[2], args[0] == "proxy_set_header") != nil {
				rest = append(rest, stmt)
				continue
			}
			h := Header{Name: canonical(args[1]), Value: args[2]}
			if args[0] == "add_header" {
				resp.Add = append(resp.Add, h)
			} else {
				req.Set = append(req.Set, h)
			}
		default:
			rest = append(rest, stmt)
		}
	}
	return req, resp, rest
}

func canonical(name string) string { return textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)) }

// splitStatements splits nginx configuration at the semicolons outside quotes; blocks ({ })
// are kept whole, as one statement (never translated).
func splitStatements(s string) []string {
	var out []string
	var quote byte
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '{':
			depth++
		case c == '}':
			depth--
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i+1]))
				start = i + 1
			}
		case c == ';' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		case c == '#' && depth == 0 && quote == 0:
			j := strings.IndexByte(s[i:], '\n')
			if j < 0 {
				j = len(s) - i
			}
			i += j
			start = i + 1
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" {
		out = append(out, t)
	}
	kept := out[:0]
	for _, st := range out {
		if st != "" {
			kept = append(kept, st)
		}
	}
	return kept
}

// nginxArgs splits a statement into its words, unquoting "..." and '...' (with \ escapes).
func nginxArgs(stmt string) ([]string, bool) {
	var args []string
	for i := 0; i < len(stmt); {
		c := stmt[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'':
			var b strings.Builder
			j := i + 1
			for ; j < len(stmt) && stmt[j] != c; j++ {
				if stmt[j] == '\\' && j+1 < len(stmt) {
					j++
				}
				b.WriteByte(stmt[j])
			}
			if j >= len(stmt) {
				return nil, false
			}
			args = append(args, b.String())
			i = j + 1
		case c == '{' || c == '}':
			return nil, false
		default:
			j := i
			for j < len(stmt) && !strings.ContainsRune(" \t\r\n\"'", rune(stmt[j])) {
				j++
			}
			args = append(args, stmt[i:j])
			i = j
		}
	}
	return args, true
}

// AnnotationReport is what a fleet makes of one Ingress's annotations: the keys it honours,
// and each problem (an unsupported or unknown key, a bad value, a conflict), as the Warning
// Events name them. For `portico migrate` and the fleet's status.
type AnnotationReport struct {
	// Honoured are the full names of the annotations applied (a bad value is in Problems
	// instead, even when the rest of the key's meaning applies).
	Honoured []string
	// Unsupported are the full names of keys the fleet reads but does not honour.
	Unsupported []string
	// Problems are the messages, one per problem, as the Events say them.
	Problems []string
}

// ReportAnnotations compiles an Ingress's annotations as a fleet with compat (its
// spec.ingressNginxCompatibility) does, without Secrets or Services: credentials and CAs
// named by the Ingress are not checked (the Events of a running fleet do).
func ReportAnnotations(ing *networkingv1.Ingress, compat bool) AnnotationReport {
	var r AnnotationReport
	_, probs := parseAnnotations(ing, true, compat)
	r.Unsupported = UnsupportedAnnotations(ing, compat)
	bad := map[string]bool{}
	for _, p := range probs {
		r.Problems = append(r.Problems, p)
		if name, _, ok := strings.Cut(strings.TrimPrefix(p, "annotation "), ":"); ok {
			bad[name] = true
		}
	}
	unsupported := map[string]bool{}
	for _, k := range r.Unsupported {
		unsupported[k] = true
	}
	view := viewOf(ing, compat)
	keys, _, _ := view.keys()
	for _, k := range keys {
		_, name, _ := view.get(k)
		if !unsupported[name] && !bad[name] {
			r.Honoured = append(r.Honoured, name)
		}
	}
	sort.Strings(r.Honoured)
	return r
}

// NginxUnsupportedReason is why Portico does not honour an ingress-nginx annotation key (after
// the prefix), "" when it does or does not know the key.
func NginxUnsupportedReason(key string) string { return nginxUnsupported[key] }

// KnownAnnotation reports whether Portico honours an annotation key (after the prefix).
func KnownAnnotation(key string) bool { return known[key] }

// FixedBehaviour returns, for an ingress-nginx key (after the prefix) whose value Portico's
// behaviour always is, that value and why; ok false for any other key.
func FixedBehaviour(key string) (value, why string, ok bool) {
	fb, ok := fixedBehaviour[key]
	return fb.value, fb.why, ok
}
