package route

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// TestClientAuthParse reads the auth-tls-* keys as ingress-nginx does (authtls/main.go), with a
// problem for each value not used, and refuses (fail closed) what cannot be served with the
// client certificates it asks for.
func TestClientAuthParse(t *testing.T) {
	root := rt.NewCA("root")
	crl := root.CRL(time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	tlsTyped := rt.CASecret("ns", "tls-ca", root.PEM, nil)
	tlsTyped.Type = corev1.SecretTypeTLS
	secrets := map[types.NamespacedName]*corev1.Secret{
		{Namespace: "ns", Name: "ca"}:       rt.CASecret("ns", "ca", root.PEM, nil),
		{Namespace: "ns", Name: "ca-crl"}:   rt.CASecret("ns", "ca-crl", root.PEM, crl),
		{Namespace: "ns", Name: "tls-ca"}:   tlsTyped,
		{Namespace: "ns", Name: "no-ca"}:    {Data: map[string][]byte{"tls.crt": root.PEM}},
		{Namespace: "ns", Name: "bad-ca"}:   rt.CASecret("ns", "bad-ca", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), nil),
		{Namespace: "ns", Name: "bad-crl"}:  rt.CASecret("ns", "bad-crl", root.PEM, root.PEM),
		{Namespace: "other", Name: "ca"}:    rt.CASecret("other", "ca", root.PEM, nil),
		{Namespace: "ns", Name: "two-cas"}:  rt.CASecret("ns", "two-cas", append(append([]byte(nil), root.PEM...), rt.NewCA("second").PEM...), nil),
		{Namespace: "ns", Name: "empty-ca"}: rt.CASecret("ns", "empty-ca", []byte("no PEM here"), nil),
	}
	type want struct {
		mode       ClientAuthMode
		depth      int
		pass       bool
		errorPage  string
		matchCN    string
		crl        bool
		cas        int
		secret     string
		refuse     string   // a substring of the refusal; "" for none
		problems   []string // substrings, one per problem, in order
		noSettings bool     // no ClientAuth and no refusal
	}
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want want
	}{
		{"none", nil, want{noSettings: true}},
		{"keys without the secret are ignored", map[string]string{"auth-tls-verify-client": "on", "auth-tls-match-cn": "CN=x"},
			want{noSettings: true, problems: []string{"auth-tls-verify-client: ignored without portico.dev/auth-tls-secret",
				"auth-tls-match-cn: ignored without"}}},
		{"defaults", map[string]string{"auth-tls-secret": "ns/ca"},
			want{mode: VerifyOn, depth: 1, cas: 1, secret: "ns/ca"}},
		{"/name is the Ingress's namespace", map[string]string{"auth-tls-secret": "/ca"},
			want{mode: VerifyOn, depth: 1, cas: 1, secret: "ns/ca"}},
		{"two CAs", map[string]string{"auth-tls-secret": "ns/two-cas"},
			want{mode: VerifyOn, depth: 1, cas: 2, secret: "ns/two-cas"}},
		{"every key", map[string]string{"auth-tls-secret": "ns/ca-crl", "auth-tls-verify-client": "optional_no_ca",
			"auth-tls-verify-depth": "3", "auth-tls-pass-certificate-to-upstream": "true",
			"auth-tls-error-page": "https://errors.example.com/cert", "auth-tls-match-cn": "CN=(alice|bob)"},
			want{mode: VerifyOptionalNoCA, depth: 3, pass: true, errorPage: "https://errors.example.com/cert", matchCN: "CN=(alice|bob)",
				crl: true, cas: 1, secret: "ns/ca-crl"}},
		{"a kubernetes.io/tls Secret, optional", map[string]string{"auth-tls-secret": "ns/tls-ca", "auth-tls-verify-client": "optional"},
			want{mode: VerifyOptional, depth: 1, cas: 1, secret: "ns/tls-ca"}},
		{"bad values use the defaults", map[string]string{"auth-tls-secret": "ns/ca", "auth-tls-verify-client": "require",
			"auth-tls-verify-depth": "-1", "auth-tls-pass-certificate-to-upstream": "yes", "auth-tls-error-page": "/cert-error"},
			want{mode: VerifyOn, depth: 1, cas: 1, secret: "ns/ca", problems: []string{
				`auth-tls-verify-client: "require" is not on, off, optional or optional_no_ca; using on`,
				`auth-tls-verify-depth: "-1" is not a depth`,
				`auth-tls-pass-certificate-to-upstream: "yes" is not true or false`,
				`auth-tls-error-page: "/cert-error" is not an absolute http(s) URL`}}},
		{"depth 0 reads as 1", map[string]string{"auth-tls-secret": "ns/ca", "auth-tls-verify-depth": "0"},
			want{mode: VerifyOn, depth: 1, cas: 1, secret: "ns/ca", problems: []string{"auth-tls-verify-depth: 0 reads as the default 1"}}},
		{"off", map[string]string{"auth-tls-secret": "ns/ca", "auth-tls-verify-client": "off"},
			want{mode: VerifyOff, depth: 1, cas: 1, secret: "ns/ca"}},
		{"a bare name", map[string]string{"auth-tls-secret": "ca"},
			want{refuse: `auth-tls-secret: "ca" is not namespace/name`, problems: []string{"is not namespace/name; the host's routes answer 503"}}},
		{"another namespace", map[string]string{"auth-tls-secret": "other/ca"},
			want{refuse: "is in another namespace", problems: []string{"another namespace"}}},
		{"missing", map[string]string{"auth-tls-secret": "ns/missing"},
			want{refuse: "secret ns/missing not found", problems: []string{"auth-tls-secret: secret ns/missing not found"}}},
		{"no ca.crt", map[string]string{"auth-tls-secret": "ns/no-ca"},
			want{refuse: "ca.crt: no PEM certificate", problems: []string{"ca.crt"}}},
		{"ca.crt without PEM", map[string]string{"auth-tls-secret": "ns/empty-ca"},
			want{refuse: "ca.crt: no PEM certificate", problems: []string{"ca.crt"}}},
		{"a ca.crt that does not parse", map[string]string{"auth-tls-secret": "ns/bad-ca"},
			want{refuse: "ca.crt: certificate 1", problems: []string{"ca.crt"}}},
		{"a ca.crl that is no CRL", map[string]string{"auth-tls-secret": "ns/bad-crl"},
			want{refuse: "ca.crl: a PEM block of type", problems: []string{"ca.crl"}}},
		{"match-cn without CN=", map[string]string{"auth-tls-secret": "ns/ca", "auth-tls-match-cn": "alice"},
			want{refuse: `auth-tls-match-cn: "alice" does not start with CN=`, problems: []string{"auth-tls-match-cn"}}},
		{"match-cn that does not compile", map[string]string{"auth-tls-secret": "ns/ca", "auth-tls-match-cn": "CN=(alice"},
			want{refuse: "is not a regular expression", problems: []string{"auth-tls-match-cn"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var probs []string
			bad := func(key, format string, args ...any) {
				probs = append(probs, fmt.Sprintf("annotation %s%s: %s", AnnotationPrefix, key, fmt.Sprintf(format, args...)))
			}
			get := func(key string) (string, bool) {
				v, ok := tc.ann[key]
				return v, ok
			}
			ca, refuse := parseClientAuth("ns", get, bad, func(k types.NamespacedName) *corev1.Secret { return secrets[k] })
			w := tc.want
			if len(probs) != len(w.problems) {
				t.Fatalf("problems %q, want %d like %q", probs, len(w.problems), w.problems)
			}
			for i, p := range probs {
				if !strings.Contains(p, w.problems[i]) || !strings.HasPrefix(p, "annotation portico.dev/auth-tls-") {
					t.Errorf("problem %q, want one naming the annotation with %q", p, w.problems[i])
				}
			}
			switch {
			case w.noSettings:
				if ca != nil || refuse != "" {
					t.Fatalf("got %v, %q; want nothing", ca, refuse)
				}
				return
			case w.refuse != "":
				if ca != nil || !strings.Contains(refuse, w.refuse) || !strings.HasPrefix(refuse, "route refused: annotation portico.dev/auth-tls-") {
					t.Fatalf("got %v, %q; want a refusal with %q", ca, refuse, w.refuse)
				}
				return
			}
			if ca == nil || refuse != "" {
				t.Fatalf("got %v, %q", ca, refuse)
			}
			matchCN := ""
			if ca.MatchCN != nil {
				matchCN = ca.MatchCN.String()
			}
			if ca.Mode != w.mode || ca.Depth != w.depth || ca.PassCertificate != w.pass || ca.ErrorPage != w.errorPage ||
				matchCN != w.matchCN || ca.HasCRL() != w.crl || len(ca.CAs) != w.cas || ca.Secret.String() != w.secret {
				t.Errorf("got %s (%d CAs)", ca, len(ca.CAs))
			}
			if !ca.RequestsCertificate() && ca.Mode != VerifyOff {
				t.Error("no certificate requested")
			}
		})
	}
}

// TestClientAuthCompilePerHost: client auth is per host, from its oldest Ingress that sets
// it, on every rule of the host whichever Ingress it comes from (ingress-nginx's server-wide
// ssl_verify_client); differing younger Ingresses are reported; an unusable CA fails the host
// closed; the TLS side finds it by server name as requests are routed.
func TestClientAuthCompilePerHost(t *testing.T) {
	root := rt.NewCA("root")
	ann := func(kv ...string) []ingOpt {
		var out []ingOpt
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, rt.Annotation(AnnotationPrefix+kv[i], kv[i+1]))
		}
		return out
	}
	in := baseInput(
		ing("a", 1, append(ann("auth-tls-secret", "ns/ca", "auth-tls-verify-client", "optional"),
			rule("mtls.example.com", "/", rt.Prefix, "a", 80), rule("mtls.example.com", "/a", rt.Prefix, "a", 80),
			withTLS("tls", "mtls.example.com", "same.example.com", "*.w.example.com"))...),
		ing("b", 2, rule("mtls.example.com", "/b", rt.Prefix, "b", 80), rt.Annotation(AnnotationPrefix+"ssl-redirect", "false")),
		ing("c", 3, append(ann("auth-tls-secret", "ns/ca", "auth-tls-verify-client", "on"),
			rule("mtls.example.com", "/c", rt.Prefix, "c", 80), rule("same.example.com", "/", rt.Prefix, "c", 80))...),
		ing("d", 4, append(ann("auth-tls-secret", "ns/ca", "auth-tls-verify-client", "on"), rule("same.example.com", "/d", rt.Prefix, "d", 80))...),
		ing("e", 5, rule("open.example.com", "/", rt.Prefix, "a", 80)),
		ing("f", 6, append(ann("auth-tls-secret", "ns/missing"), rule("broken.example.com", "/", rt.Prefix, "a", 80))...),
		ing("g", 7, append(ann("auth-tls-secret", "ns/ca"), rule("*.w.example.com", "/", rt.Prefix, "b", 80))...),
		ing("h", 8, append(ann("auth-tls-secret", "ns/ca", "auth-tls-verify-client", "off"), rule("", "/", rt.Prefix, "c", 80))...),
		ing("i", 9, append(ann("canary", "true", "canary-weight", "10", "auth-tls-secret", "ns/other"),
			rule("mtls.example.com", "/", rt.Prefix, "b", 80))...),
	)
	in.Secrets = append(in.Secrets, rt.CASecret("ns", "ca", root.PEM, nil), tlsSecret(t, "tls", "mtls.example.com", "same.example.com", "*.w.example.com"))
	tab, probs := Compile(in)

	var got []string
	for _, p := range probs {
		got = append(got, p.String())
	}
	joined := strings.Join(got, "\n")
	for _, want := range []string{
		`ns/c: annotations portico.dev/auth-tls-*: not used: host "mtls.example.com" takes its client certificate authentication from the older Ingress ns/a, whose settings differ`,
		`ns/f: annotation portico.dev/auth-tls-secret: secret ns/missing not found; the host's routes answer 503`,
		`ns/i: annotation portico.dev/auth-tls-secret: ignored on a canary Ingress`,
		// b's /b is served over plain HTTP (a's host's other paths redirect to HTTPS).
		`ns/a: annotation portico.dev/auth-tls-secret: host "mtls.example.com" also answers plain HTTP (no TLS for the host in an Ingress, or ssl-redirect off), where no client certificate is checked`,
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("no problem %q in\n%s", want, joined)
		}
	}
	if n := strings.Count(joined, "auth-tls"); n != 4 {
		t.Errorf("%d problems about auth-tls-*, want the 4 above:\n%s", n, joined)
	}
	if strings.Contains(joined, "not supported") || strings.Contains(joined, "unknown annotation") || strings.Contains(joined, "ns/d:") {
		t.Errorf("unexpected problems:\n%s", joined)
	}

	mtls := tab.ClientAuth("mtls.example.com")
	if mtls == nil || mtls.Mode != VerifyOptional || mtls.Ingress.Name != "a" || mtls.Secret.Name != "ca" {
		t.Fatalf("mtls.example.com: %v", mtls)
	}
	if tab.ClientAuth("MTLS.Example.com.") != mtls {
		t.Error("the server name is not normalized")
	}
	for _, p := range []string{"/", "/a", "/b", "/c", "/x"} {
		r := tab.Match("mtls.example.com", p, nil)
		if r == nil || r.Policy == nil || r.Policy.ClientAuth != mtls || r.Policy.Refuse != "" {
			t.Errorf("mtls.example.com%s: rule %v without the host's client auth", p, r)
		}
	}
	if r := tab.Match("mtls.example.com", "/", nil); r.Policy.Canary == nil {
		t.Error("the canary of / is gone")
	}
	same := tab.ClientAuth("same.example.com")
	if same == nil || same.Mode != VerifyOn || same.Ingress.Name != "c" {
		t.Errorf("same.example.com: %v", same)
	}
	if r := tab.Match("same.example.com", "/d", nil); r == nil || r.Policy.ClientAuth != same {
		t.Error("same.example.com/d: not the host's client auth")
	}
	if tab.ClientAuth("open.example.com") != nil || tab.Match("open.example.com", "/", nil).Policy != nil {
		t.Error("open.example.com has client auth")
	}
	if tab.ClientAuth("broken.example.com") != nil {
		t.Error("broken.example.com requests a certificate it cannot verify")
	}
	if r := tab.Match("broken.example.com", "/", nil); r.Policy == nil || !strings.Contains(r.Policy.Refuse, "auth-tls-secret: secret ns/missing not found") {
		t.Errorf("broken.example.com: not refused: %+v", r.Policy)
	}
	if w := tab.ClientAuth("a.w.example.com"); w == nil || w.Ingress.Name != "g" {
		t.Errorf("a.w.example.com: %v", w)
	}
	any := tab.ClientAuth("")
	if any == nil || any.Mode != VerifyOff || tab.ClientAuth("unknown.example.org") != any || any.RequestsCertificate() {
		t.Errorf("the rules without a host: %v", any)
	}
	dump := tab.Dump()
	if !strings.Contains(dump, "host mtls.example.com\n  client-auth secret=ns/ca verify=optional depth=1 (ns/a)\n") {
		t.Errorf("dump:\n%s", dump)
	}

	// The derived TLS configuration is built once per ClientAuth and listener configuration.
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}
	cfg := mtls.ServerConfig(base)
	if cfg.ClientAuth != tls.RequestClientCert || cfg.ClientCAs != mtls.Pool || cfg.NextProtos[0] != "h2" || base.ClientAuth != tls.NoClientCert {
		t.Errorf("derived configuration %+v", cfg)
	}
	if mtls.ServerConfig(base) != cfg {
		t.Error("the derived configuration is built again")
	}
}

// TestClientAuthIncremental: a change of the CA's Secret rebuilds the hosts of the Ingresses
// that name it, as a full compile would.
func TestClientAuthIncremental(t *testing.T) {
	first, second := rt.NewCA("first"), rt.NewCA("second")
	in := baseInput(ing("a", 1, rule("mtls.example.com", "/", rt.Prefix, "a", 80), rt.Annotation(AnnotationPrefix+"auth-tls-secret", "ns/ca"),
		withTLS("tls", "mtls.example.com")), ing("b", 2, rule("open.example.com", "/", rt.Prefix, "b", 80)))
	in.Secrets = []*corev1.Secret{rt.CASecret("ns", "ca", first.PEM, nil), tlsSecret(t, "tls", "mtls.example.com")}
	var cs Compiler
	tab, _ := cs.Compile(in)
	if ca := tab.ClientAuth("mtls.example.com"); ca == nil || !ca.CAs[0].Equal(first.Cert) {
		t.Fatalf("compiled: %v", ca)
	}
	renewed := rt.CASecret("ns", "ca", second.PEM, nil)
	renewed.ResourceVersion = "2"
	tab, probs, ok := cs.Update(Changes{Secrets: []*corev1.Secret{renewed}})
	if !ok || len(probs) != 0 {
		t.Fatalf("update: %v %v", ok, probs)
	}
	ca := tab.ClientAuth("mtls.example.com")
	if ca == nil || !ca.CAs[0].Equal(second.Cert) || tab.Match("mtls.example.com", "/", nil).Policy.ClientAuth != ca {
		t.Fatalf("after the renewal: %v", ca)
	}
	tab, probs, ok = cs.Update(Changes{DeletedSecrets: []*corev1.Secret{renewed}})
	if !ok || len(probs) != 1 || !strings.Contains(probs[0].Message, "secret ns/ca not found") {
		t.Fatalf("update: %v %v", ok, probs)
	}
	if tab.ClientAuth("mtls.example.com") != nil || tab.Match("mtls.example.com", "/", nil).Policy.Refuse == "" {
		t.Error("the host is served without its CA")
	}
	if k, ok := AuthTLSSecret(in.Ingresses[0], false); !ok || k.String() != "ns/ca" {
		t.Errorf("AuthTLSSecret: %v %v", k, ok)
	}
}

// TestClientAuthRevocation checks certificates against ca.crl as OpenSSL's CRL_CHECK_ALL: a
// CRL of each issuer, current, not listing the certificate.
func TestClientAuthRevocation(t *testing.T) {
	root := rt.NewCA("root")
	inter := root.Intermediate("inter")
	good, revoked := root.Client("good", time.Time{}, time.Time{}), root.Client("revoked", time.Time{}, time.Time{})
	viaInter := inter.Client("via-inter", time.Time{}, time.Time{})
	now := time.Now()
	build := func(crls ...[]byte) *ClientAuth {
		t.Helper()
		var raw []byte
		for _, c := range crls {
			raw = append(raw, c...)
		}
		s := map[types.NamespacedName]*corev1.Secret{{Namespace: "ns", Name: "ca"}: rt.CASecret("ns", "ca", root.PEM, raw)}
		ca, refuse := parseClientAuth("ns", func(k string) (string, bool) {
			if k == annAuthTLSSecret {
				return "ns/ca", true
			}
			return "", false
		}, func(string, string, ...any) {}, func(k types.NamespacedName) *corev1.Secret { return s[k] })
		if ca == nil {
			t.Fatal(refuse)
		}
		return ca
	}
	current := build(root.CRL(now.Add(-time.Hour), now.Add(time.Hour), revoked.Leaf.SerialNumber))
	for _, tc := range []struct {
		name         string
		ca           *ClientAuth
		cert, issuer *x509.Certificate
		want         string
	}{
		{"valid", current, good.Leaf, root.Cert, ""},
		{"revoked", current, revoked.Leaf, root.Cert, "certificate revoked"},
		{"intermediate valid", current, inter.Cert, root.Cert, ""},
		{"no CRL of the intermediate", current, viaInter.Leaf, inter.Cert, "unable to get certificate CRL"},
		{"the intermediate's CRL, checked when used", build(root.CRL(now.Add(-time.Hour), now.Add(time.Hour)), inter.CRL(now.Add(-time.Hour), now.Add(time.Hour))),
			viaInter.Leaf, inter.Cert, ""},
		{"expired", build(root.CRL(now.Add(-2*time.Hour), now.Add(-time.Hour))), good.Leaf, root.Cert, "CRL has expired"},
		{"not yet valid", build(root.CRL(now.Add(time.Hour), now.Add(2*time.Hour))), good.Leaf, root.Cert, "CRL is not yet valid"},
		{"signed by another key", build(rt.NewCA("root").CRL(now.Add(-time.Hour), now.Add(time.Hour))), good.Leaf, root.Cert, "unable to get certificate CRL"},
	} {
		if got := tc.ca.Revocation(tc.cert, tc.issuer, now); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if !current.HasCRL() || build().HasCRL() {
		t.Error("HasCRL")
	}
}
