package proxy

import (
	"bufio"
	"bytes"
	"errors"
)

// The fast path's HTTP/1.1 parsing. It accepts a strict subset of HTTP/1.1 request heads and
// says "hand off" for everything else, which net/http then parses and answers as it always
// does: the fast path never rejects a request, and never accepts one net/http would refuse
// (FuzzRequestHead checks this against http.ReadRequest).

// hkind classifies the header names the proxy acts on; every other header is forwarded as is.
type hkind uint8

const (
	hOther hkind = iota
	hHost
	hContentLength
	hTransferEncoding
	hConnection
	hUpgrade
	hExpect
	hTE
	hTrailer
	hKeepAlive
	hProxyConnection
	hProxyAuthenticate
	hProxyAuthorization
	hXForwardedFor
	hXForwardedHost
	hXForwardedProto
	hXForwardedPort
	hForwarded
	hXRealIP
	hForwardedOther // X-Forwarded-Scheme, X-Scheme, X-Forwarded-Ssl, X-Forwarded-Prefix, X-Original-Forwarded-For
	hAuthorization
	hXRequestID
	hCookie
	hUserAgent
	hServer
	hDate
	hHTTP2Settings
	hSSLClient // ssl-client-cert, -verify, -subject-dn, -issuer-dn: the proxy's (clientcert.go)
)

// headerKind matches a name case-insensitively without allocating.
func headerKind(name []byte) hkind {
	eq := func(s string) bool { return len(name) == len(s) && asciiEqualFold(name, s) }
	switch len(name) {
	case 2:
		if eq("te") {
			return hTE
		}
	case 4:
		switch {
		case eq("host"):
			return hHost
		case eq("date"):
			return hDate
		}
	case 6:
		switch {
		case eq("cookie"):
			return hCookie
		case eq("expect"):
			return hExpect
		case eq("server"):
			return hServer
		}
	case 7:
		switch {
		case eq("upgrade"):
			return hUpgrade
		case eq("trailer"):
			return hTrailer
		}
	case 9:
		switch {
		case eq("forwarded"):
			return hForwarded
		case eq("x-real-ip"):
			return hXRealIP
		}
	case 10:
		switch {
		case eq("connection"):
			return hConnection
		case eq("keep-alive"):
			return hKeepAlive
		case eq("user-agent"):
			return hUserAgent
		}
	case 12:
		if eq("x-request-id") {
			return hXRequestID
		}
	case 13:
		if eq("authorization") {
			return hAuthorization
		}
	case 14:
		switch {
		case eq("content-length"):
			return hContentLength
		case eq("http2-settings"):
			return hHTTP2Settings
		}
	case 8:
		if eq("x-scheme") {
			return hForwardedOther
		}
	case 15:
		switch {
		case eq("x-forwarded-ssl"):
			return hForwardedOther
		case eq("x-forwarded-for"):
			return hXForwardedFor
		case eq("ssl-client-cert"):
			return hSSLClient
		}
	case 16:
		switch {
		case eq("x-forwarded-host"):
			return hXForwardedHost
		case eq("x-forwarded-port"):
			return hXForwardedPort
		case eq("proxy-connection"):
			return hProxyConnection
		}
	case 17:
		switch {
		case eq("transfer-encoding"):
			return hTransferEncoding
		case eq("x-forwarded-proto"):
			return hXForwardedProto
		case eq("ssl-client-verify"):
			return hSSLClient
		}
	case 18:
		switch {
		case eq("proxy-authenticate"):
			return hProxyAuthenticate
		case eq("x-forwarded-scheme"), eq("x-forwarded-prefix"):
			return hForwardedOther
		}
	case 24:
		if eq("x-original-forwarded-for") {
			return hForwardedOther
		}
	case 19:
		if eq("proxy-authorization") {
			return hProxyAuthorization
		}
	case 20:
		if eq("ssl-client-issuer-dn") {
			return hSSLClient
		}
	case 21:
		if eq("ssl-client-subject-dn") {
			return hSSLClient
		}
	}
	return hOther
}

// asciiEqualFold compares b with s, which is lower case, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) || (len(b) > 0 && b[0]|0x20 != s[0]) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

// isToken is RFC 9110's tchar.
var isToken = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// validValue: field-content without control characters other than HTAB (obs-text allowed), as
// net/http checks.
func validValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// headerLine is one header line of a head: buf[start:end] is the whole line with its CRLF;
// value is buf[vs:ve], trimmed.
type headerLine struct {
	start, end, nameEnd, vs, ve int32
	kind                        hkind
	drop                        bool
	// underscore: the name holds "_" (see Limits.AllowUnderscoresInHeaders).
	underscore bool
}

// tokens holds the tokens of Connection headers that name other headers (at most maxTokens;
// more means hand off); close, keep-alive and upgrade are flags.
const maxTokens = 8

type tokenList struct {
	n                         int
	t                         [maxTokens][]byte
	close, keepAlive, upgrade bool
}

// add splits a comma-separated list into the list; false when it is full or malformed.
func (l *tokenList) add(v []byte) bool {
	for len(v) > 0 {
		i := bytes.IndexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		tok = trimOWS(tok)
		if len(tok) == 0 {
			continue
		}
		for _, c := range tok {
			if !isToken[c] {
				return false
			}
		}
		switch {
		case asciiEqualFold(tok, "close"):
			l.close = true
			continue
		case asciiEqualFold(tok, "keep-alive"):
			l.keepAlive = true
			continue
		case asciiEqualFold(tok, "upgrade"):
			l.upgrade = true
			continue
		}
		if l.n == maxTokens {
			return false
		}
		l.t[l.n] = tok
		l.n++
	}
	return true
}

func (l *tokenList) has(name []byte) bool {
	for i := 0; i < l.n; i++ {
		if len(l.t[i]) == len(name) && bytes.EqualFold(l.t[i], name) {
			return true
		}
	}
	return false
}

// headEnd finds the end of a request head in b: the index just past the blank line, 0 when b
// holds no complete head yet, -1 when the fast path cannot read it (a bare LF, or an empty
// first line), so it must be handed off.
func headEnd(b []byte) int { return scanHead(b, false) }

// responseHeadEnd is headEnd for a backend's head, whose lines may end in a bare LF.
func responseHeadEnd(b []byte) int { return scanHead(b, true) }

func scanHead(b []byte, bareLF bool) int {
	start := 0
	for {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return 0
		}
		i += start
		end := i // the line is b[start:end]
		if i > start && b[i-1] == '\r' {
			end--
		} else if !bareLF {
			return -1
		}
		if end == start { // the blank line
			if start == 0 {
				return -1
			}
			return i + 1
		}
		start = i + 1
	}
}

// reqHead is a request head the fast path accepted. Its slices point into buf.
type reqHead struct {
	buf                        []byte
	method, target, path, host []byte
	// route is the path requests are routed by: path, or path percent-decoded into decoded
	// (as net/http's URL.Path).
	route, decoded []byte
	contentLength  int64
	close          bool // Connection: close
	// expect: Expect: 100-continue (the proxy answers it, see h1Conn.send; not forwarded).
	expect bool
	// chunked: Transfer-Encoding: chunked, the body relayed chunk by chunk (chunkState).
	chunked bool
	// te: TE: trailers (the client takes trailers: gRPC); any other TE is handed off.
	te                   bool
	requestID, userAgent []byte
	lines                []headerLine
	conn                 tokenList
}

// parseRequestHead parses a complete head (as found by headEnd) into h, reusing h's storage.
// It reports false when the request must be handed off to net/http: anything but origin-form
// HTTP/1.1 with one valid Host, an optional plain Content-Length or Transfer-Encoding: chunked
// (not both), no Upgrade, no TE but trailers, no Expect but 100-continue, no obs-fold, no fragment or invalid
// percent-encoding in the path, and well-formed fields. Before a request is handed off, framingFault decides whether it is
// refused instead (see h1core.go).
func parseRequestHead(b []byte, h *reqHead) bool {
	h.buf, h.method, h.target, h.path, h.host, h.route = b, nil, nil, nil, nil, nil
	h.contentLength, h.close, h.requestID, h.userAgent, h.expect, h.chunked, h.te = 0, false, nil, nil, false, false, false
	h.lines = h.lines[:0]
	h.conn = tokenList{}

	// Request line: method SP origin-form SP HTTP/1.1 CRLF.
	eol := bytes.IndexByte(b, '\n') - 1
	line := b[:eol]
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 {
		return false
	}
	h.method = line[:sp]
	for _, c := range h.method {
		if !isToken[c] {
			return false
		}
	}
	if string(h.method) == "CONNECT" || string(h.method) == "PRI" {
		return false
	}
	rest := line[sp+1:]
	sp = bytes.IndexByte(rest, ' ')
	if sp <= 0 || string(rest[sp+1:]) != "HTTP/1.1" {
		return false
	}
	h.target = rest[:sp]
	if h.target[0] != '/' {
		return false // absolute-form, asterisk-form: net/http's rules
	}
	h.path = h.target
	escaped := false
	for i, c := range h.target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return false
		}
		if len(h.path) == len(h.target) {
			switch c {
			case '?':
				h.path = h.target[:i]
			case '%':
				escaped = true
			}
		}
	}
	h.route = h.path
	if escaped {
		var ok bool
		if h.decoded, ok = unescapePath(h.decoded[:0], h.path); !ok {
			return false // net/http answers 400
		}
		h.route = h.decoded
	}

	hosts, lengths := 0, 0
	pos := eol + 2
	for pos < len(b)-2 {
		end := pos + bytes.IndexByte(b[pos:], '\n') + 1
		colon := bytes.IndexByte(b[pos:end], ':')
		if colon <= 0 {
			return false // no name, or obs-fold (a line starting with SP/HTAB has no valid name)
		}
		name := b[pos : pos+colon]
		underscore := false
		for _, c := range name {
			if !isToken[c] {
				return false
			}
			underscore = underscore || c == '_'
		}
		vs, ve := pos+colon+1, end-2
		for vs < ve && (b[vs] == ' ' || b[vs] == '\t') {
			vs++
		}
		for ve > vs && (b[ve-1] == ' ' || b[ve-1] == '\t') {
			ve--
		}
		value := b[vs:ve]
		if !validValue(value) {
			return false
		}
		l := headerLine{start: int32(pos), end: int32(end), nameEnd: int32(pos + colon), vs: int32(vs), ve: int32(ve),
			kind: headerKind(name), underscore: underscore}
		switch l.kind {
		case hHost:
			hosts++
			if !validHost(value) {
				return false
			}
			h.host = value
		case hContentLength:
			lengths++
			n, ok := parseDecimal(value)
			if !ok || lengths > 1 {
				return false
			}
			h.contentLength = n
		case hExpect:
			if !asciiEqualFold(value, "100-continue") || h.expect {
				return false // net/http answers 417
			}
			h.expect, l.drop = true, true
		case hTransferEncoding:
			if !asciiEqualFold(value, "chunked") || h.chunked {
				return false // other codings: net/http answers 501
			}
			h.chunked = true
		case hTE:
			if !asciiEqualFold(value, "trailers") || h.te {
				return false // other codings: net/http's
			}
			h.te = true // sent on, as net/http's ReverseProxy does (h2up.go re-adds it for HTTP/2)
		case hUpgrade, hHTTP2Settings:
			return false // upgrades: net/http's
		case hConnection:
			if !h.conn.add(value) {
				return false
			}
			l.drop = true
		case hTrailer, hKeepAlive, hProxyConnection, hProxyAuthenticate, hProxyAuthorization,
			hXForwardedFor, hXForwardedHost, hXForwardedProto, hXForwardedPort, hForwarded, hXRealIP, hSSLClient, hForwardedOther:
			l.drop = true // hop-by-hop, or set by the proxy
		case hXRequestID:
			if h.requestID == nil {
				h.requestID = value
			}
			if len(value) == 0 {
				l.drop = true
			}
		case hUserAgent:
			h.userAgent = value
		}
		h.lines = append(h.lines, l)
		pos = end
	}
	if hosts != 1 {
		return false // missing or repeated Host: net/http answers 400
	}
	if h.chunked && lengths > 0 {
		return false // framingFault refuses it
	}
	if h.conn.upgrade {
		return false
	}
	h.close = h.conn.close
	if h.conn.n > 0 {
		for i := range h.lines {
			l := &h.lines[i]
			if !l.drop && !keptDespiteConnection(l.kind) && h.conn.has(b[l.start:l.nameEnd]) {
				l.drop = true
			}
		}
	}
	return true
}

// unescapePath appends p percent-decoded to dst; false when an escape is malformed.
func unescapePath(dst, p []byte) ([]byte, bool) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '%' {
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return dst, false
			}
			c = unhex(p[i+1])<<4 | unhex(p[i+2])
			i += 2
		}
		dst = append(dst, c)
	}
	return dst, true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// validHost accepts the characters of DNS names, IPv4 and bracketed IPv6 addresses and a port:
// a subset of what net/http allows, so nothing net/http refuses gets through.
func validHost(v []byte) bool {
	if len(v) == 0 {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// parseDecimal parses 1 to 18 ASCII digits.
func parseDecimal(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// parseHex parses a chunk size: 1 to 15 hex digits, then optional chunk extensions.
func parseHex(v []byte) (int64, bool) {
	if i := bytes.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	v = trimOWS(v)
	if len(v) == 0 || len(v) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		switch {
		case '0' <= c && c <= '9':
			n = n<<4 | int64(c-'0')
		case 'a' <= c && c <= 'f':
			n = n<<4 | int64(c-'a'+10)
		case 'A' <= c && c <= 'F':
			n = n<<4 | int64(c-'A'+10)
		default:
			return 0, false
		}
	}
	return n, true
}

var errLineTooLong = errors.New("header line too long")

// readLine appends the next line of r (with its line ending) to acc, returning the grown acc
// and the line within it. Lines may exceed r's buffer; acc is limited to max bytes in all.
func readLine(r *bufio.Reader, acc []byte, max int) (grown []byte, line []byte, err error) {
	start := len(acc)
	for {
		frag, err := r.ReadSlice('\n')
		acc = append(acc, frag...)
		if len(acc) > max {
			return acc, nil, errLineTooLong
		}
		if err == nil {
			return acc, acc[start:], nil
		}
		if err != bufio.ErrBufferFull {
			return acc, nil, err
		}
	}
}
