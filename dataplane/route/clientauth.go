package route

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Client certificate authentication: ingress-nginx's auth-tls-* annotations, per host.
//
// ingress-nginx configures it per nginx server (host), from the first Ingress of the host that
// sets it (controller.go, getBackendServers), for every path of the host whichever Ingress it
// comes from; Portico does the same: the oldest Ingress of a host that sets auth-tls-secret
// decides (Host.ClientAuth), every rule of the host carries it (Policy.ClientAuth), and younger
// Ingresses whose auth-tls-* settings differ are reported. When the deciding Ingress's settings
// cannot be used (no such Secret, no usable ca.crt or ca.crl, another namespace, a bad
// auth-tls-match-cn), every rule of the host answers 503 (nginx answers 403 for the whole
// server): the host is never served without the client certificates it asks for.

// auth-tls-* annotation keys (after AnnotationPrefix).
const (
	annAuthTLSSecret       = "auth-tls-secret"
	annAuthTLSVerifyClient = "auth-tls-verify-client"
	annAuthTLSVerifyDepth  = "auth-tls-verify-depth"
	annAuthTLSPassCert     = "auth-tls-pass-certificate-to-upstream"
	annAuthTLSErrorPage    = "auth-tls-error-page"
	annAuthTLSMatchCN      = "auth-tls-match-cn"
)

// clientAuthKeys are the auth-tls-* keys, auth-tls-secret first.
var clientAuthKeys = []string{annAuthTLSSecret, annAuthTLSVerifyClient, annAuthTLSVerifyDepth, annAuthTLSPassCert,
	annAuthTLSErrorPage, annAuthTLSMatchCN}

// ClientAuthMode is auth-tls-verify-client.
type ClientAuthMode uint8

// The modes of auth-tls-verify-client (nginx's ssl_verify_client).
const (
	// VerifyOn requires a certificate that verifies (the default).
	VerifyOn ClientAuthMode = iota
	// VerifyOff requests no certificate; the backend is told NONE.
	VerifyOff
	// VerifyOptional lets a client without a certificate through; one that does not verify is
	// refused.
	VerifyOptional
	// VerifyOptionalNoCA is VerifyOptional that also lets through a certificate whose only
	// fault is that no CA of ca.crt issued it (the backend is told FAILED:<why>).
	VerifyOptionalNoCA
)

func (m ClientAuthMode) String() string {
	switch m {
	case VerifyOff:
		return "off"
	case VerifyOptional:
		return "optional"
	case VerifyOptionalNoCA:
		return "optional_no_ca"
	}
	return "on"
}

// ClientAuth is the client certificate authentication of a host (auth-tls-*). It is built at
// compile time and immutable, but for the TLS configuration it derives once (ServerConfig).
// A TLS handshake whose server name selects the host requests a certificate (when Mode is not
// VerifyOff), without verifying it: the proxy verifies the chain after the handshake, once per
// connection, and answers as nginx does at the HTTP layer.
type ClientAuth struct {
	// Pool holds the certificates of ca.crt, the trust anchors of client certificates; CAs is
	// the same, as a list.
	Pool *x509.CertPool
	CAs  []*x509.Certificate
	Mode ClientAuthMode
	// Depth is auth-tls-verify-depth: how many intermediate certificates may stand between the
	// client's certificate and a certificate of ca.crt (OpenSSL's verify depth: a chain of at
	// most Depth+2 certificates, the anchor included).
	Depth int
	// PassCertificate sends the client's certificate to the backend (ssl-client-cert).
	PassCertificate bool
	// ErrorPage, when set, answers a missing or failed certificate with a 302 to it rather than
	// a 400 (auth-tls-error-page, an absolute http(s) URL).
	ErrorPage string
	// MatchCN, when set, refuses (403) a request whose certificate's subject DN (RFC 2253, as
	// nginx's $ssl_client_s_dn) it does not match anywhere: auth-tls-match-cn, e.g. "CN=(a|b)".
	MatchCN *regexp.Regexp
	// Secret is the Secret holding ca.crt (and ca.crl), Ingress the Ingress that set it.
	Secret  types.NamespacedName
	Ingress types.NamespacedName
	// crls are the CRLs of ca.crl by the raw subject of their issuer; nil without ca.crl.
	crls map[string][]*crlEntry
	// server is the TLS configuration derived from a listener's (see ServerConfig).
	server atomic.Pointer[derivedTLS]
}

type derivedTLS struct{ base, cfg *tls.Config }

type crlEntry struct {
	list *x509.RevocationList
	// signer is the raw certificate of ca.crt that signed it; nil: checked when used.
	signer  []byte
	revoked map[string]bool // serial numbers, as big.Int.String
}

// RequestsCertificate reports whether a TLS handshake for the host asks for a certificate.
func (ca *ClientAuth) RequestsCertificate() bool { return ca != nil && ca.Mode != VerifyOff }

// ServerConfig is the TLS configuration of a handshake for the host: base (the listener's,
// without GetConfigForClient) with a request for a client certificate, which the handshake
// does not verify (tls.RequestClientCert), naming the CAs of ca.crt to the client. It is built
// on first use and kept for the life of the ClientAuth; base must not change once used.
// Called once per TLS handshake for a host with client auth; safe for concurrent use.
func (ca *ClientAuth) ServerConfig(base *tls.Config) *tls.Config {
	if d := ca.server.Load(); d != nil && d.base == base {
		return d.cfg
	}
	cfg := base.Clone()
	cfg.GetConfigForClient = nil
	cfg.ClientAuth = tls.RequestClientCert
	cfg.ClientCAs = ca.Pool
	ca.server.Store(&derivedTLS{base: base, cfg: cfg})
	return cfg
}

// HasCRL reports whether client certificates are checked against ca.crl.
func (ca *ClientAuth) HasCRL() bool { return ca.crls != nil }

// Revocation checks cert, issued by issuer, against the CRLs of ca.crl as nginx's ssl_crl does
// (OpenSSL with CRL_CHECK and CRL_CHECK_ALL: every certificate of the chain needs a CRL of its
// issuer). It returns "" when a CRL of the issuer holds cert valid, else OpenSSL's reason:
// "unable to get certificate CRL" (no CRL of that issuer), "CRL has expired", "CRL is not yet
// valid", "certificate revoked". Without ca.crl it returns "". Called once per certificate of
// a client's chain, once per connection.
func (ca *ClientAuth) Revocation(cert, issuer *x509.Certificate, now time.Time) string {
	if ca.crls == nil {
		return ""
	}
	reason := "unable to get certificate CRL"
	for _, e := range ca.crls[string(issuer.RawSubject)] {
		if e.signer == nil || !bytes.Equal(e.signer, issuer.Raw) {
			if e.list.CheckSignatureFrom(issuer) != nil {
				continue
			}
		}
		switch {
		case now.Before(e.list.ThisUpdate):
			reason = "CRL is not yet valid"
			continue
		case !e.list.NextUpdate.IsZero() && now.After(e.list.NextUpdate):
			reason = "CRL has expired"
			continue
		case e.revoked[cert.SerialNumber.String()]:
			return "certificate revoked"
		}
		return ""
	}
	return reason
}

// String prints the settings for Table.Dump.
func (ca *ClientAuth) String() string {
	s := "client-auth secret=" + ca.Secret.String() + " verify=" + ca.Mode.String() + " depth=" + strconv.Itoa(ca.Depth)
	if ca.crls != nil {
		s += " crl"
	}
	if ca.PassCertificate {
		s += " pass-certificate"
	}
	if ca.ErrorPage != "" {
		s += " error-page=" + ca.ErrorPage
	}
	if ca.MatchCN != nil {
		s += " match-cn=" + ca.MatchCN.String()
	}
	return s + " (" + ca.Ingress.String() + ")"
}

// ClientAuth returns the client certificate authentication of the host a TLS server name (SNI)
// selects, as a request for that name is routed (precise, then wildcard, then the rules
// without a host, which also take a handshake without SNI); nil for none. Called once per TLS
// handshake.
func (t *Table) ClientAuth(serverName string) *ClientAuth {
	if h := t.host(NormalizeHost(serverName)); h != nil {
		return h.ClientAuth
	}
	return nil
}

// AuthTLSSecret is the Secret an Ingress's auth-tls-secret names, when it names one of the
// Ingress's own namespace ("namespace/name", or "/name").
func AuthTLSSecret(ing *networkingv1.Ingress, compat bool) (types.NamespacedName, bool) {
	v, _, ok := viewOf(ing, compat).get(annAuthTLSSecret)
	if !ok {
		return types.NamespacedName{}, false
	}
	ns, name, found := strings.Cut(strings.TrimSpace(v), "/")
	if ns == "" {
		ns = ing.Namespace
	}
	if !found || name == "" || strings.Contains(name, "/") || ns != ing.Namespace {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}

// clientAuthResult is what an Ingress's auth-tls-* annotations compile to.
type clientAuthResult struct {
	set    bool        // auth-tls-secret is set
	ca     *ClientAuth // nil when refuse is set
	refuse string      // the settings cannot be used: the host's routes answer 503 with this
	// spec is the annotations' values, to compare the Ingresses of a host.
	spec string
}

// clientAuthOf parses the auth-tls-* annotations of an Ingress, once per compile (policyOf
// calls it with the rest of the annotations, and adds the problems it returns).
func (c *compiler) clientAuthOf(ing *networkingv1.Ingress) (clientAuthResult, []string) {
	if r, ok := c.clientAuths[ing]; ok {
		return r, nil
	}
	var probs []string
	bad := func(key, format string, args ...any) {
		probs = append(probs, fmt.Sprintf("annotation %s%s: %s", AnnotationPrefix, key, fmt.Sprintf(format, args...)))
	}
	view := viewOf(ing, c.in.Config.IngressNginxCompatibility)
	get := func(key string) (string, bool) {
		v, _, ok := view.get(key)
		return v, ok
	}
	var r clientAuthResult
	if _, r.set = get(annAuthTLSSecret); r.set {
		for _, k := range clientAuthKeys {
			v, _ := get(k)
			r.spec += k + "=" + v + "\n"
		}
	}
	r.ca, r.refuse = parseClientAuth(ing.Namespace, get, bad, func(k types.NamespacedName) *corev1.Secret { return c.secrets[k] })
	if r.ca != nil {
		r.ca.Ingress = types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	}
	if c.clientAuths == nil {
		c.clientAuths = map[*networkingv1.Ingress]clientAuthResult{}
	}
	c.clientAuths[ing] = r
	return r, probs
}

// parseClientAuth reads the auth-tls-* keys of an Ingress of namespace ns, with ingress-nginx's
// syntax and defaults (authtls/main.go): auth-tls-secret "namespace/name" (or "/name") of ns,
// holding ca.crt and optionally ca.crl; auth-tls-verify-client on (default), off, optional,
// optional_no_ca; auth-tls-verify-depth (default 1; 0 reads as 1); auth-tls-pass-certificate-
// to-upstream (default false); auth-tls-error-page; auth-tls-match-cn ("CN=" and an RE2
// expression). It returns nil without auth-tls-secret; refuse is set (with nil) when the
// settings cannot be used, which fails the host closed. get and bad are parseAnnotations';
// secret looks a Secret up.
func parseClientAuth(ns string, get func(key string) (string, bool), bad func(key, format string, args ...any),
	secret func(types.NamespacedName) *corev1.Secret) (ca *ClientAuth, refuse string) {
	v, ok := get(annAuthTLSSecret)
	if !ok {
		for _, k := range clientAuthKeys[1:] {
			if _, set := get(k); set {
				bad(k, "ignored without %s%s", AnnotationPrefix, annAuthTLSSecret)
			}
		}
		return nil, ""
	}
	fail := func(key, format string, args ...any) (*ClientAuth, string) {
		why := fmt.Sprintf(format, args...)
		bad(key, "%s; the host's routes answer 503 rather than serve without client certificates", why)
		return nil, "route refused: annotation " + AnnotationPrefix + key + ": " + why
	}
	secNS, name, found := strings.Cut(v, "/")
	switch {
	case !found || name == "" || strings.Contains(name, "/"):
		return fail(annAuthTLSSecret, "%q is not namespace/name", v)
	case secNS == "":
		secNS = ns // ingress-nginx reads "/name" in the Ingress's namespace
	case secNS != ns:
		return fail(annAuthTLSSecret, "%q is in another namespace; only the Ingress's own namespace is read", v)
	}
	key := types.NamespacedName{Namespace: secNS, Name: name}
	s := secret(key)
	if s == nil {
		return fail(annAuthTLSSecret, "secret %s not found", key)
	}
	cas, err := parseCertificates(s.Data["ca.crt"])
	if err != nil {
		return fail(annAuthTLSSecret, "secret %s: ca.crt: %v", key, err)
	}
	ca = &ClientAuth{Pool: x509.NewCertPool(), CAs: cas, Mode: VerifyOn, Depth: 1, Secret: key}
	for _, c := range cas {
		ca.Pool.AddCert(c)
	}
	if raw := s.Data["ca.crl"]; len(raw) > 0 {
		if ca.crls, err = parseCRLs(raw, cas); err != nil {
			return fail(annAuthTLSSecret, "secret %s: ca.crl: %v", key, err)
		}
	}
	if v, ok := get(annAuthTLSMatchCN); ok {
		if !strings.HasPrefix(v, "CN=") {
			return fail(annAuthTLSMatchCN, "%q does not start with CN=", v)
		}
		re, err := regexp.Compile(v)
		if err != nil {
			return fail(annAuthTLSMatchCN, "%q is not a regular expression (RE2): %v", v, err)
		}
		ca.MatchCN = re
	}
	if v, ok := get(annAuthTLSVerifyClient); ok {
		switch v {
		case "on":
		case "off":
			ca.Mode = VerifyOff
		case "optional":
			ca.Mode = VerifyOptional
		case "optional_no_ca":
			ca.Mode = VerifyOptionalNoCA
		default:
			bad(annAuthTLSVerifyClient, "%q is not on, off, optional or optional_no_ca; using on, as ingress-nginx does", v)
		}
	}
	if v, ok := get(annAuthTLSVerifyDepth); ok {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0 || n > 100:
			bad(annAuthTLSVerifyDepth, "%q is not a depth from 0 to 100; using 1", v)
		case n == 0:
			bad(annAuthTLSVerifyDepth, "0 reads as the default 1, as in ingress-nginx")
		default:
			ca.Depth = n
		}
	}
	if v, ok := get(annAuthTLSPassCert); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(annAuthTLSPassCert, "%q is not true or false; the certificate is not passed", v)
		}
		ca.PassCertificate = b
	}
	if v, ok := get(annAuthTLSErrorPage); ok && v != "" {
		if err := checkErrorPage(v); err != nil {
			bad(annAuthTLSErrorPage, "%v; a failed certificate is answered 400", err)
		} else {
			ca.ErrorPage = v
		}
	}
	return ca, ""
}

// checkErrorPage accepts an absolute http(s) URL. nginx also takes a path, which it serves by
// an internal redirect on the same host; a redirect of the client there would meet the same
// refusal, so Portico does not take one.
func checkErrorPage(v string) error {
	if strings.ContainsAny(v, "\r\n\x00 \"") {
		return fmt.Errorf("%q holds a space, a quote or a control character", v)
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL (a path of the same host would be refused too)", v)
	}
	return nil
}

// parseCertificates reads the PEM certificates of a ca.crt: at least one, and nothing that
// does not parse.
func parseCertificates(raw []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificate")
	}
	return out, nil
}

// parseCRLs reads the PEM CRLs ("X509 CRL") of a ca.crl, indexed by the raw subject of their
// issuer; a CRL signed by a certificate of cas records it, so that its signature is not checked
// again per connection.
func parseCRLs(raw []byte, cas []*x509.Certificate) (map[string][]*crlEntry, error) {
	out := map[string][]*crlEntry{}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			return nil, fmt.Errorf("a PEM block of type %q, want X509 CRL", b.Type)
		}
		l, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CRL %d: %w", n+1, err)
		}
		n++
		e := &crlEntry{list: l, revoked: make(map[string]bool, len(l.RevokedCertificateEntries))}
		for _, rc := range l.RevokedCertificateEntries {
			e.revoked[rc.SerialNumber.String()] = true
		}
		for _, c := range cas {
			if bytes.Equal(c.RawSubject, l.RawIssuer) && l.CheckSignatureFrom(c) == nil {
				e.signer = c.Raw
				break
			}
		}
		out[string(l.RawIssuer)] = append(out[string(l.RawIssuer)], e)
	}
	if n == 0 {
		return nil, fmt.Errorf("no PEM CRL")
	}
	return out, nil
}

// applyClientAuth gives host h (the normalized name host, its Ingresses ings oldest first) its
// client certificate authentication: that of the oldest main Ingress with rules for the host
// that sets auth-tls-secret, on every rule of the host (a Policy of its own each); younger
// Ingresses whose auth-tls-* values differ are reported, and so is a host that answers plain
// HTTP (where nothing is checked). When that Ingress's settings cannot be used, every rule
// refuses. Called by compileHost once the rules are built.
func (c *compiler) applyClientAuth(h *Host, host string, ings []*networkingv1.Ingress) {
	var first *networkingv1.Ingress
	var res clientAuthResult
	for _, ing := range ings {
		if c.policyOf(ing, false).canary != nil || !hasRulesFor(ing, host) {
			continue
		}
		r, _ := c.clientAuthOf(ing) // its problems were reported with its annotations'
		switch {
		case !r.set:
		case first == nil:
			first, res = ing, r
		case r.spec != res.spec:
			c.problem(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name},
				"annotations %sauth-tls-*: not used: host %q takes its client certificate authentication from the older Ingress %s/%s, whose settings differ",
				AnnotationPrefix, host, first.Namespace, first.Name)
		}
	}
	if first == nil {
		return
	}
	h.ClientAuth = res.ca
	plain := false
	for i := range h.Rules {
		r := &h.Rules[i]
		var p Policy
		if r.Policy != nil {
			p = *r.Policy
		}
		plain = plain || !p.SSLRedirect
		if res.refuse != "" {
			if p.Refuse == "" {
				p.Refuse = res.refuse
			}
		} else {
			p.ClientAuth = res.ca
		}
		r.Policy = &p
	}
	if plain && res.ca != nil && res.ca.Mode != VerifyOff {
		c.problem(types.NamespacedName{Namespace: first.Namespace, Name: first.Name},
			"annotation %s%s: host %q also answers plain HTTP (no TLS for the host in an Ingress, or ssl-redirect off), where no client certificate is checked, as in nginx",
			AnnotationPrefix, annAuthTLSSecret, host)
	}
}
