package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net/http"
	"sync/atomic"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"portico.dev/portico/dataplane/route"
)

// Client certificate authentication (route.ClientAuth, ingress-nginx's auth-tls-*), as nginx
// does it: the handshake of a host with client auth requests a certificate and completes
// whatever the client sends; the chain is verified after it, once per connection (connCert),
// and each request of the host over TLS is decided at the HTTP layer (clientCertVerdict): 421
// for a request whose Host is not the name the handshake was for, 400 for a missing or failed
// certificate (or a 302 to the error page), 403 for a subject the match-CN expression does not
// match. The backend gets nginx's ssl-client-* headers (clientCertHeaders); the client's own
// headers of those names never reach a backend (the parser drops them, h1parse.go; net/http's
// requests lose them in setClientCertHeaders). Over plain HTTP nothing is checked, as in nginx
// (a TLS host redirects it to HTTPS by default; ACME's HTTP-01 challenges keep working).
//
// Where the state lives: a TLS connection has one *connCert (h1Conn.cert, made after the
// handshake), shared by pointer with its HTTP/2 streams (h1Conn.cert of each stream's conn)
// and with net/http when the connection is handed off (handoffConn.cert, then the request's
// context: connCertOf). The request's verification, whose headers go to the backend, is
// h1Conn.clientCert on the fast path; net/http's requests carry the headers themselves.
//
// The serving paths: the fast path (goroutines, HTTP/2 streams) checks in h1Conn.route
// (checkClientCert); net/http's TLS requests are checked before Handler.ServeHTTP
// (tlsStateFromConn, netHTTPClientCert), which also sets the headers.

// clientAuthTLS is Server.TLSConfig's GetConfigForClient: a ClientHello whose server name
// selects a host with client auth (route.Table.ClientAuth) gets that host's configuration,
// which requests a certificate without verifying it (route.ClientAuth.ServerConfig: base with
// tls.RequestClientCert, built once per ClientAuth); any other gets base. Called once per TLS
// handshake.
func clientAuthTLS(h *Handler, base *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if ca := h.Table().ClientAuth(hello.ServerName); ca.RequestsCertificate() {
			return ca.ServerConfig(base), nil
		}
		return nil, nil
	}
}

// connCert is the client certificate state of one TLS connection: its handshake, the client
// auth its server name selected when it was made, and the verification of its certificate
// against the client auth of the host its requests are for: computed at the first request for
// a host with client auth, read by every later one (again only when the table's ClientAuth
// for the host is another, after a table swap). Safe for concurrent use (HTTP/2 streams).
type connCert struct {
	cs *tls.ConnectionState
	// handshake is the client auth of the host the server name selected (nil: none).
	handshake *route.ClientAuth
	last      atomic.Pointer[certVerification]
}

// newConnCert is the state of a connection whose handshake is cs, made with table t.
func newConnCert(t *route.Table, cs *tls.ConnectionState) *connCert {
	return &connCert{cs: cs, handshake: t.ClientAuth(cs.ServerName)}
}

// verification is the verification of the connection's certificate against ca.
func (cc *connCert) verification(ca *route.ClientAuth) *certVerification {
	if v := cc.last.Load(); v != nil && v.ca == ca {
		return v
	}
	v := verifyClientCert(ca, cc.handshake, cc.cs, time.Now())
	cc.last.Store(v)
	return v
}

// certResult is what the verification of a client's certificate found.
type certResult uint8

const (
	certNone certResult = iota // no certificate (or none requested: verify-client off)
	certOK
	// certUntrusted: it failed only because no CA of ca.crt issued it (optional_no_ca lets it
	// through: OpenSSL's errors that nginx's ngx_ssl_verify_error_optional accepts).
	certUntrusted
	certFailed
)

// certVerification is the verification of one connection's client certificate against one
// ClientAuth, with what requests read of it. Immutable once built.
type certVerification struct {
	ca, handshake *route.ClientAuth
	result        certResult
	// verify is ssl-client-verify: SUCCESS, FAILED:<OpenSSL's reason>, NONE.
	verify string
	// subjectDN and issuerDN are the certificate's names as nginx prints them ($ssl_client_s_dn,
	// $ssl_client_i_dn: RFC 2253, OpenSSL's short names); "" without a certificate.
	subjectDN, issuerDN string
	// cnMatch: the ClientAuth's match-CN expression matches subjectDN.
	cnMatch bool
	// headers are the ssl-client-* headers for the backend; lines the same as header lines.
	headers [][2]string
	lines   []byte
}

// verifyClientCert verifies the certificate of a connection (cs; nil over plain HTTP) against
// ca: the chain it sent, to a certificate of ca.crt, for client authentication, within the
// depth, and against ca.crl. handshake is the client auth the handshake was made for. Called
// once per connection (and ClientAuth).
func verifyClientCert(ca, handshake *route.ClientAuth, cs *tls.ConnectionState, now time.Time) *certVerification {
	v := &certVerification{ca: ca, handshake: handshake, verify: "NONE"}
	if cs != nil && ca.Mode != route.VerifyOff && len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		reason, untrusted := verifyChain(ca, cs.PeerCertificates, now)
		switch {
		case reason == "":
			v.result, v.verify = certOK, "SUCCESS"
		case untrusted:
			v.result, v.verify = certUntrusted, "FAILED:"+reason
		default:
			v.result, v.verify = certFailed, "FAILED:"+reason
		}
		v.subjectDN = formatDN(leaf.RawSubject, leaf.Subject)
		v.issuerDN = formatDN(leaf.RawIssuer, leaf.Issuer)
		v.cnMatch = ca.MatchCN != nil && ca.MatchCN.MatchString(v.subjectDN)
	}
	if ca.PassCertificate && v.result != certNone {
		v.headers = append(v.headers, [2]string{"ssl-client-cert", escapedPEM(cs.PeerCertificates[0])})
	}
	v.headers = append(v.headers, [2]string{"ssl-client-verify", v.verify})
	if v.subjectDN != "" {
		v.headers = append(v.headers, [2]string{"ssl-client-subject-dn", v.subjectDN})
	}
	if v.issuerDN != "" {
		v.headers = append(v.headers, [2]string{"ssl-client-issuer-dn", v.issuerDN})
	}
	for _, h := range v.headers {
		v.lines = append(append(append(append(v.lines, h[0]...), ": "...), h[1]...), "\r\n"...)
	}
	return v
}

// verifyChain verifies a client's chain (peer: as sent, its certificate first) against ca. It
// returns "" when it verifies, else OpenSSL's reason (as nginx's $ssl_client_verify gives it
// after FAILED:), and whether the only fault is the missing CA (untrusted).
func verifyChain(ca *route.ClientAuth, peer []*x509.Certificate, now time.Time) (reason string, untrusted bool) {
	opts := x509.VerifyOptions{Roots: ca.Pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(peer) > 1 {
		opts.Intermediates = x509.NewCertPool()
		for _, c := range peer[1:] {
			opts.Intermediates.AddCert(c)
		}
	}
	chains, err := peer[0].Verify(opts)
	if err != nil {
		return verifyError(err, peer, now)
	}
	reason = "certificate chain too long"
	crlReason := ""
	for _, chain := range chains {
		if len(chain) > ca.Depth+2 { // the depth counts the intermediates, not the two ends
			continue
		}
		r := ""
		for i := 0; i+1 < len(chain) && r == ""; i++ {
			r = ca.Revocation(chain[i], chain[i+1], now)
		}
		if r == "" {
			return "", false
		}
		if crlReason == "" {
			crlReason = r
		}
	}
	if crlReason != "" {
		reason = crlReason
	}
	return reason, false
}

// verifyError is OpenSSL's reason for a failed verification (OpenSSL 3's
// X509_verify_cert_error_string, the result nginx reports: the last error found).
func verifyError(err error, peer []*x509.Certificate, now time.Time) (reason string, untrusted bool) {
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var ia x509.InsecureAlgorithmError
	switch {
	case errors.As(err, &ua):
		last := peer[len(peer)-1]
		self := bytes.Equal(last.RawIssuer, last.RawSubject) &&
			last.CheckSignature(last.SignatureAlgorithm, last.RawTBSCertificate, last.Signature) == nil
		switch {
		case self && len(peer) == 1:
			return "self-signed certificate", true
		case self:
			return "self-signed certificate in certificate chain", true
		case len(peer) == 1:
			return "unable to verify the first certificate", true
		}
		return "unable to get local issuer certificate", false
	case errors.As(err, &ci):
		switch ci.Reason {
		case x509.Expired:
			if ci.Cert != nil && now.Before(ci.Cert.NotBefore) {
				return "certificate is not yet valid", false
			}
			return "certificate has expired", false
		case x509.IncompatibleUsage:
			return "unsupported certificate purpose", false
		case x509.NotAuthorizedToSign:
			return "invalid CA certificate", false
		case x509.TooManyIntermediates:
			return "path length constraint exceeded", false
		case x509.CANotAuthorizedForThisName, x509.CANotAuthorizedForExtKeyUsage:
			return "permitted subtree violation", false
		}
	case errors.As(err, &ia):
		return "certificate signature failure", false
	}
	return "unspecified certificate verification error", false
}

// The proxy's answers to requests a host's client auth refuses (nginx's texts for 400).
const (
	msgNoClientCert    = "No required SSL certificate was sent"
	msgClientCertError = "The SSL certificate error"
	msgMisdirected     = "the request's host is not the name the TLS connection was made for, and that host verifies client certificates: connect again with its name"
	msgCNUnauthorized  = "client certificate unauthorized"
)

// clientCertVerdict decides a request on a host with client auth: status 0 to go on; else the
// status (400, 403, 421) or a redirect (302 to the error page, location) and the message. ca
// is the request's (clientAuthFor, nil: 0); host is the request's Host; cs is its TLS
// connection's handshake (nil over plain HTTP: 0) and v its verification against ca
// (connCert.verification). In nginx's order:
//   - 421 when verify-client is not off and the request's host is not the TLS server name
//     (nginx's ngx_http_set_virtual_server), so that a certificate requested (or not) for one
//     name never serves another; without a server name, when the handshake was not made for
//     this ClientAuth;
//   - a missing certificate under "on", or one that does not verify (but under optional_no_ca
//     for want of a CA, and under off) is answered 400 (nginx's 496 and 495), or 302 to the
//     error page;
//   - 403 when match-CN does not match the subject (or there is no certificate).
//
// Called once per TLS request of a host with client auth; does not allocate.
func clientCertVerdict(ca *route.ClientAuth, host string, cs *tls.ConnectionState, v *certVerification) (status int, location, msg string) {
	if ca == nil || cs == nil {
		return 0, "", ""
	}
	if ca.Mode != route.VerifyOff {
		if cs.ServerName != "" {
			if route.NormalizeHost(host) != route.NormalizeHost(cs.ServerName) {
				return http.StatusMisdirectedRequest, "", msgMisdirected
			}
		} else if v == nil || v.handshake != ca {
			return http.StatusMisdirectedRequest, "", msgMisdirected
		}
	}
	result := certNone
	if v != nil {
		result = v.result
	}
	fail, m := false, msgClientCertError
	switch result {
	case certNone:
		fail, m = ca.Mode == route.VerifyOn, msgNoClientCert
	case certUntrusted:
		fail = ca.Mode != route.VerifyOptionalNoCA
	case certFailed:
		fail = true
	}
	if fail {
		if ca.ErrorPage != "" {
			return http.StatusFound, ca.ErrorPage, "redirecting to " + ca.ErrorPage
		}
		return http.StatusBadRequest, "", m
	}
	if ca.MatchCN != nil && (v == nil || !v.cnMatch) {
		return http.StatusForbidden, "", msgCNUnauthorized
	}
	return 0, "", ""
}

// clientCertHeaders are the headers the backend gets on a host with client auth over TLS
// (nginx's proxy_set_header lines of ingress-nginx, in its order): ssl-client-cert (the
// certificate as URL-escaped PEM, with pass-certificate-to-upstream), ssl-client-verify
// (SUCCESS, FAILED:<reason>, NONE), ssl-client-subject-dn and ssl-client-issuer-dn (with a
// certificate). Computed once per connection; nil for v nil (no client auth, or plain HTTP:
// nginx sends none there). Must not be modified.
func clientCertHeaders(v *certVerification) [][2]string {
	if v == nil {
		return nil
	}
	return v.headers
}

// appendClientCertHeaders appends clientCertHeaders as header lines.
func appendClientCertHeaders(o []byte, v *certVerification) []byte {
	if v == nil {
		return o
	}
	return append(o, v.lines...)
}

// clientCertHeaderKeys are the headers only the proxy sets, as net/http keys them (the parser
// drops a client's on the fast path): a client's of these names are dropped on every route
// (nginx's proxy_set_header replaces them on hosts with client auth only; a backend behind
// several hosts must not take a client's for the proxy's anywhere).
var clientCertHeaderKeys = [...]string{"Ssl-Client-Cert", "Ssl-Client-Verify", "Ssl-Client-Subject-Dn", "Ssl-Client-Issuer-Dn"}

// setClientCertHeaders replaces a net/http request's ssl-client-* headers with v's (none for
// nil): the net/http path's form of the parser's drop and appendClientCertHeaders.
func setClientCertHeaders(h http.Header, v *certVerification) {
	for _, k := range clientCertHeaderKeys {
		delete(h, k) // net/http's keys are canonical
	}
	for _, kv := range clientCertHeaders(v) {
		h[kv[0]] = []string{kv[1]} // as nginx writes the names
	}
}

// checkClientCert applies client auth to the fast path's request over TLS, before the route's
// policy (route calls it first, for every request: the goroutine path and HTTP/2 streams; the
// event loops' are plain HTTP), so that a request refused here costs no limit and no auth
// sub-request. It returns 0 to go on, else the refusal (with st.location); it leaves in
// c.clientCert the verification whose headers go to the backend. By host: the rules of a host
// share its client auth.
func (c *h1Conn) checkClientCert(t *route.Table) (int, string) {
	st := &c.st
	c.clientCert = nil
	if c.tls == nil {
		return 0, "" // plain HTTP: applyPolicy answers auth-tls-match-cn (plainClientCertVerdict)
	}
	host := bytesView(c.head.host)
	ca := t.ClientAuth(host)
	if ca == nil {
		return 0, ""
	}
	v := c.connCert().verification(ca)
	status, location, m := clientCertVerdict(ca, host, c.tls, v)
	if status == 0 {
		c.clientCert = v
		return 0, ""
	}
	st.location = location
	if status == http.StatusBadRequest && !c.stream {
		c.closeAfter = true // nginx closes after its 400s
	}
	return status, m
}

// plainClientCertVerdict decides a plain-HTTP request for a route of a host with client auth
// (applyPolicy calls it, on every serving path): served (as nginx, whose certificate check is
// TLS's), except with auth-tls-match-cn, which ingress-nginx checks server-wide against an
// empty subject: 403.
func plainClientCertVerdict(ca *route.ClientAuth) (int, string) {
	if ca.MatchCN != nil {
		return http.StatusForbidden, msgCNUnauthorized
	}
	return 0, ""
}

// connCert is the connection's client certificate state: its own, or for an HTTP/2 stream its
// connection's; one made for the request when it has none (a stream not given its
// connection's: correct, and verified again per request).
func (c *h1Conn) connCert() *connCert {
	if cc := c.cert; cc != nil && cc.cs == c.tls {
		return cc
	}
	return newConnCert(c.st.table, c.tls)
}

// handoffCert is the state a handed-off connection takes to net/http (nil over plain HTTP).
func (c *h1Conn) handoffCert() *connCert {
	if c.tls == nil {
		return nil
	}
	return c.connCert()
}

type connCertKey struct{}

// connCertOf is the client certificate state of a net/http request's connection: the fast
// path's, handed off with it (tlsConnContext), else one made for the request (nil over plain
// HTTP).
func connCertOf(r *http.Request, t *route.Table) *connCert {
	if r.TLS == nil {
		return nil
	}
	if cc, ok := r.Context().Value(connCertKey{}).(*connCert); ok && cc.cs == r.TLS {
		return cc
	}
	return newConnCert(t, r.TLS)
}

// netHTTPClientCert applies client auth to a request net/http serves over TLS (a handed-off
// connection's; tlsStateFromConn calls it before Handler.ServeHTTP): it answers a refused
// request as the proxy's own answers are (and reports false), else replaces the request's
// ssl-client-* headers with the proxy's, which go to the backend with it. By host, as the
// route's are the host's.
func (h *Handler) netHTTPClientCert(w http.ResponseWriter, r *http.Request) bool {
	t := h.table.Load()
	ca := t.ClientAuth(r.Host)
	if ca == nil || r.TLS == nil {
		setClientCertHeaders(r.Header, nil)
		return true
	}
	v := connCertOf(r, t).verification(ca)
	status, location, msg := clientCertVerdict(ca, r.Host, r.TLS, v)
	if status == 0 {
		setClientCertHeaders(r.Header, v)
		return true
	}
	h.refuseClientCert(w, r, t, status, location, msg)
	return false
}

// withoutClientCertHeaders drops a client's ssl-client-* headers from the requests net/http
// serves over plain HTTP (no client auth there).
func withoutClientCertHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setClientCertHeaders(r.Header, nil)
		next.ServeHTTP(w, r)
	})
}

// withConnCert adds a handed-off connection's client certificate state to its context.
func withConnCert(ctx context.Context, cc *connCert) context.Context {
	if cc == nil {
		return ctx
	}
	return context.WithValue(ctx, connCertKey{}, cc)
}

// escapedPEM is a certificate as nginx's $ssl_client_escaped_cert: PEM, URL-escaped as
// ngx_escape_uri's NGX_ESCAPE_URI_COMPONENT does (every byte but ALPHA, DIGIT, "-._~").
func escapedPEM(c *x509.Certificate) string {
	p := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	b := make([]byte, 0, len(p)+len(p)/16+64)
	for _, ch := range p {
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b = append(b, ch)
		} else {
			b = append(b, '%', upperHex[ch>>4], upperHex[ch&15])
		}
	}
	return string(b)
}

const upperHex = "0123456789ABCDEF"

// dnSET is one relative distinguished name as read for printing (asn1 reads a slice type whose
// name ends in SET as a SET).
type dnSET []dnAttribute

type dnAttribute struct {
	Type  asn1.ObjectIdentifier
	Value asn1.RawValue
}

// dnShortNames are OpenSSL's short names of the attributes of names.
var dnShortNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "serialNumber", "2.5.4.6": "C", "2.5.4.7": "L",
	"2.5.4.8": "ST", "2.5.4.9": "street", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title",
	"2.5.4.13": "description", "2.5.4.15": "businessCategory", "2.5.4.17": "postalCode",
	"2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.44": "generationQualifier", "2.5.4.46": "dnQualifier",
	"2.5.4.65": "pseudonym", "2.5.4.97": "organizationIdentifier",
	"0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
	"1.2.840.113549.1.9.1": "emailAddress", "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
}

// formatDN prints a DER name as nginx's $ssl_client_s_dn does (OpenSSL's XN_FLAG_RFC2253):
// the attributes last first, RDNs apart by ",", the attributes of one by "+", OpenSSL's short
// names (an unknown attribute as its OID with "#" and its DER in hex), RFC 2253's specials
// escaped with "\", control and non-ASCII bytes as "\XX". The result is printable ASCII.
// fallback is used for a name asn1 cannot read.
func formatDN(raw []byte, fallback pkix.Name) string {
	var rdns []dnSET
	if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) > 0 {
		var b []byte // Go's RFC 2253 form, its control and non-ASCII bytes escaped
		for _, c := range []byte(fallback.String()) {
			if c >= 0x80 || c < 0x20 || c == 0x7f {
				b = append(b, '\\', upperHex[c>>4], upperHex[c&15])
			} else {
				b = append(b, c)
			}
		}
		return string(b)
	}
	var b []byte
	for i := len(rdns) - 1; i >= 0; i-- {
		for j := len(rdns[i]) - 1; j >= 0; j-- {
			a := &rdns[i][j]
			switch {
			case j < len(rdns[i])-1:
				b = append(b, '+')
			case len(b) > 0:
				b = append(b, ',')
			}
			oid := a.Type.String()
			name, known := dnShortNames[oid]
			if !known {
				name = oid
			}
			b = append(append(b, name...), '=')
			if s, ok := dnString(a.Value); ok && known {
				b = appendDNValue(b, s)
				continue
			}
			b = append(b, '#')
			for _, x := range a.Value.FullBytes {
				b = append(b, upperHex[x>>4], upperHex[x&15])
			}
		}
	}
	return string(b)
}

// dnString decodes an attribute value of a string type to UTF-8, as OpenSSL's UTF8_CONVERT.
func dnString(v asn1.RawValue) (string, bool) {
	if v.Class != asn1.ClassUniversal {
		return "", false
	}
	switch v.Tag {
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String, asn1.TagNumericString, 26: // 26: VisibleString
		return string(v.Bytes), true
	case asn1.TagT61String: // read as Latin-1, as OpenSSL does
		r := make([]rune, len(v.Bytes))
		for i, x := range v.Bytes {
			r[i] = rune(x)
		}
		return string(r), true
	case asn1.TagBMPString:
		if len(v.Bytes)%2 != 0 {
			return "", false
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		return string(utf16.Decode(u)), true
	case 28: // UniversalString: UCS-4
		if len(v.Bytes)%4 != 0 {
			return "", false
		}
		var b []byte
		for i := 0; i < len(v.Bytes); i += 4 {
			r := rune(v.Bytes[i])<<24 | rune(v.Bytes[i+1])<<16 | rune(v.Bytes[i+2])<<8 | rune(v.Bytes[i+3])
			b = utf8.AppendRune(b, r)
		}
		return string(b), true
	}
	return "", false
}

// appendDNValue escapes a value as OpenSSL's ASN1_STRFLGS_RFC2253 (ESC_2253, ESC_CTRL, ESC_MSB).
func appendDNValue(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80 || c < 0x20 || c == 0x7f:
			b = append(b, '\\', upperHex[c>>4], upperHex[c&15])
		case c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' || c == ';',
			i == 0 && (c == '#' || c == ' '), i == len(s)-1 && c == ' ':
			b = append(b, '\\', c)
		default:
			b = append(b, c)
		}
	}
	return b
}

// refuseClientCert answers a request net/http serves that client auth refuses, as the proxy's
// own answers are.
func (h *Handler) refuseClientCert(w http.ResponseWriter, r *http.Request, t *route.Table, status int, location, msg string) {
	st := &reqState{start: time.Now(), port: h.httpsPort, tls: true, target: r.RequestURI, table: t, location: location, service: "default"}
	if rule := t.Match(r.Host, r.URL.Path, httpReq{r, st}); rule != nil {
		st.ingress, st.rule = rule.IngressName, rule
		if rule.Backend != nil {
			st.service = rule.Backend.Name()
		}
	}
	st.logging = h.logging(t)
	if status == http.StatusBadRequest {
		w.Header().Set("Connection", "close") // nginx closes after its 400s
	}
	noContinue(w, r)
	h.answer(w, r, st, status, msg)
}
