package migrate

import (
	"fmt"
	"strings"
)

// difference is a documented difference of behaviour between Portico and ingress-nginx for
// annotation keys, as docs/annotations.md and docs/access-control.md state it. Only documented
// differences belong here: each names the section that says so.
type difference struct {
	// keys are the annotation keys (after the prefix) it concerns; it is reported for an
	// Ingress that sets any of them (and does not draw an unsupported key's Event for it).
	keys []string
	// applies, when set, decides from the Ingress's values (get) and the fleet's limits.
	applies func(get func(key string) (string, bool), lim LimitStatuses) bool
	// text says the difference; textf, when set, words it from the limits instead.
	text  string
	textf func(lim LimitStatuses) string
	doc   string
}

// differences are listed in the order reports give them.
var differences = []difference{
	{
		keys: []string{"limit-rps", "limit-rpm"},
		applies: func(_ func(string) (string, bool), lim LimitStatuses) bool {
			return lim.NginxReq != lim.Portico
		},
		textf: func(lim LimitStatuses) string {
			return fmt.Sprintf("a request refused by the rate limit is answered %d, where ingress-nginx answered %d (limit-req-status-code)%s",
				lim.Portico, lim.NginxReq, keepStatus(lim.NginxReq))
		},
		doc: "access-control.md#rate-and-connection-limits",
	},
	{
		keys: []string{"limit-connections"},
		applies: func(_ func(string) (string, bool), lim LimitStatuses) bool {
			return lim.NginxConn != lim.Portico
		},
		textf: func(lim LimitStatuses) string {
			return fmt.Sprintf("a request refused by the connection limit is answered %d, where ingress-nginx answered %d (limit-conn-status-code)%s",
				lim.Portico, lim.NginxConn, keepStatus(lim.NginxConn))
		},
		doc: "access-control.md#rate-and-connection-limits",
	},
	{
		keys: []string{"cors-allow-origin"},
		text: "origins are matched anchored at both ends; ingress-nginx's expression is anchored at the end only, so it also matched longer origins ending in a listed one",
		doc:  "access-control.md#cors",
	},
	{
		keys: []string{"auth-type"},
		applies: func(get func(string) (string, bool), _ LimitStatuses) bool {
			v, _ := get("auth-type")
			return strings.EqualFold(v, "digest")
		},
		text: "digest authentication is refused: every route of the Ingress answers 503; use basic over TLS",
		doc:  "access-control.md#basic-authentication",
	},
	{
		keys: []string{"auth-url"},
		text: "an auth service that cannot be reached, or does not answer within 5 s to connect and 10 s to answer, gives 500 (nginx waits 60 s); an invalid value refuses the routes (503) where ingress-nginx dropped the whole configuration and served unprotected",
		doc:  "access-control.md#external-authentication",
	},
	{
		keys: []string{"auth-tls-secret"},
		text: "the Secret must be in the Ingress's own namespace (as ingress-nginx by default); a missing Secret, or a ca.crt or ca.crl that does not parse, makes every route of the host answer 503 (nginx: 403); a CA of ca.crt is a trust anchor even when it is an intermediate (OpenSSL needs the chain up to a self-signed root)",
		doc:  "annotations.md#client-certificates",
	},
	{
		keys: []string{"auth-tls-error-page"},
		applies: func(get func(string) (string, bool), _ LimitStatuses) bool {
			v, _ := get("auth-tls-error-page")
			return !strings.HasPrefix(v, "http://") && !strings.HasPrefix(v, "https://")
		},
		text: "only an absolute http(s) URL is taken; a path (which nginx serves by an internal redirect) is reported and the request answered 400",
		doc:  "annotations.md#client-certificates",
	},
	{
		keys: []string{"proxy-ssl-secret"},
		text: "the Secret must be a kubernetes.io/tls Secret of the Ingress's own namespace: ingress-nginx reads any namespace, Portico refuses another (503)",
		doc:  "annotations.md#backends",
	},
	{
		keys: []string{"proxy-ssl-verify"},
		applies: func(get func(string) (string, bool), _ LimitStatuses) bool {
			v, _ := get("proxy-ssl-verify")
			_, named := get("proxy-ssl-name")
			return strings.EqualFold(v, "on") && !named
		},
		text: "without proxy-ssl-name the backend's certificate is verified against the Service's DNS name <service>.<namespace>.svc (ingress-nginx: nginx's upstream name, which no certificate carries)",
		doc:  "annotations.md#backends",
	},
	{
		keys: []string{"proxy-read-timeout"},
		text: "it bounds the wait for the backend's response head, per attempt; nginx's is the time between two reads, the body included: bodies stream as long as they take",
		doc:  "annotations.md#timeouts-and-limits",
	},
	{
		keys: []string{"proxy-next-upstream"},
		text: "only requests without a body (and idempotent ones unless non_idempotent) go on to another endpoint; retries on a status apply to HTTP/1.1 backends; invalid_header is reported and ignored",
		doc:  "annotations.md#timeouts-and-limits",
	},
	{
		keys: []string{"custom-http-errors"},
		text: "the error backend gets the request as GET / with the X-Code family of headers and the forwarding headers, but not the client's other headers (nginx passes them); errors of HTTP/2 (gRPC) backends pass as they are",
		doc:  "annotations.md#errors",
	},
	{
		keys: []string{"affinity"},
		text: "the cookie is portico-affinity with path / unless session-cookie-name and -path say otherwise (ingress-nginx: INGRESSCOOKIE, the rule's path); affinity-mode is not read (Portico's is balanced)",
		doc:  "annotations.md#backends",
	},
	{
		keys: []string{"load-balance"},
		applies: func(get func(string) (string, bool), _ LimitStatuses) bool {
			v, _ := get("load-balance")
			return strings.EqualFold(v, "ewma")
		},
		text: "EWMA is not offered: Portico balances round robin, or least-request with its own key load-balancing",
		doc:  "annotations.md#backends",
	},
	{
		keys: []string{"canary"},
		applies: func(get func(string) (string, bool), _ LimitStatuses) bool {
			v, _ := get("canary")
			return strings.EqualFold(v, "true")
		},
		text: "the route's policy is the main Ingress's (the canary's other keys are reported and not used); a client's affinity cookie applies within the backend chosen, where ingress-nginx kept it on the backend (main or canary) it was pinned to",
		doc:  "annotations.md#canary",
	},
	{
		keys: []string{"mirror-target"},
		text: "copies go to Services of the cluster only, without bodies; mirror-uri, mirror-host and mirror-request-body are not read",
		doc:  "annotations.md#mirroring",
	},
	{
		keys: []string{"app-root"},
		text: "it applies to the routes of the Ingress that sets it; ingress-nginx applied it to every route of the host",
		doc:  "annotations.md#redirects",
	},
	{
		keys: []string{"from-to-www-redirect"},
		text: "the redirect keeps the port the client used, where ingress-nginx wrote its listening port",
		doc:  "annotations.md#redirects",
	},
	{
		keys: []string{"use-regex"},
		text: "paths are RE2 expressions: no look-around or back-references, which PCRE has",
		doc:  "annotations.md#paths-and-rewriting",
	},
	{
		keys: []string{"configuration-snippet"},
		text: "only its header changes with literal values (more_set_headers, more_clear_headers, add_header, proxy_set_header) are applied, translated; nothing else of nginx is executed",
		doc:  "annotations.md#headers",
	},
}

// keepStatus says how to keep ingress-nginx's status, when Portico can.
func keepStatus(nginx int32) string {
	if nginx == 429 || nginx == 503 {
		return fmt.Sprintf(": spec.http.limitStatusCode: %d keeps it", nginx)
	}
	return ""
}

// differencesFor returns the differences for an Ingress's keys: set (after the prefix, as the
// fleet reads them) minus the unsupported ones.
func differencesFor(get func(key string) (string, bool), skip map[string]bool, lim LimitStatuses) []Difference {
	out := []Difference{}
	for _, d := range differences {
		var used []string
		for _, k := range d.keys {
			if _, ok := get(k); ok && !skip[k] {
				used = append(used, k)
			}
		}
		if len(used) == 0 || (d.applies != nil && !d.applies(get, lim)) {
			continue
		}
		text := d.text
		if d.textf != nil {
			text = d.textf(lim)
		}
		out = append(out, Difference{Annotations: used, Text: text, Doc: "docs/" + d.doc})
	}
	return out
}
