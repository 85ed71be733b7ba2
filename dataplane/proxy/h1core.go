package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"time"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/route"
)

// The HTTP/1.1 rules every serving path applies: the event loops, the goroutine fast path, and
// (where net/http parses) the fallback. Each rule is decided here, once; the serving paths only
// move bytes. The parser and head builders these rules feed are in h1parse.go (requests) and
// h1forward.go (responses, chunked relay); docs/data-plane.md describes the whole.
//
// Invariants:
//   - A header that frames or routes a message (Host, Content-Length, Transfer-Encoding) and
//     the request id are never removed because Connection names them (keptDespiteConnection).
//   - A request whose framing is in doubt (Content-Length with Transfer-Encoding, or
//     Transfer-Encoding on HTTP/1.0) is answered 400 and its connection closed (framingFault),
//     before anything of it reaches a backend or net/http.
//   - net/http parses at most one HTTP/1 request per connection: the fast path hands it the
//     requests it does not take itself, and net/http closes the connection after answering
//     (Server.Run turns its keep-alives off). Every later request head on a kept-alive
//     connection is read by the fast path's parser, and passes framingFault.
//   - An upstream connection goes back to its pool only when it stands exactly at the end of
//     a message with nothing read past it (reusable); after an answer that must have no body
//     (204, 304), the next user checks it for stray bytes first (mustProbe); after a HEAD, it
//     is closed (closeAfterHead).

// keptDespiteConnection reports whether a request or response header of kind k stays when the
// Connection header names it (RFC 9110 §7.6.1 lets a sender name any header; removing one
// that frames or routes the message would let a client smuggle a body past the backend's
// framing, or strip its Host).
func keptDespiteConnection(k hkind) bool {
	switch k {
	case hHost, hContentLength, hTransferEncoding, hXRequestID:
		return true
	}
	return false
}

// framingFault inspects a request head the fast path does not take, before it is handed off
// to net/http, and returns why it must be refused (400, connection closed), or "". net/http
// would accept both faults: it lets Transfer-Encoding override Content-Length and keeps the
// connection, and ignores Transfer-Encoding on HTTP/1.0; a front proxy that framed the same
// bytes by the other header would then be desynchronised from us (RFC 9112 §6.1, §6.3, §11.2).
// nginx answers 400 to both. head is a complete head (lines may end in a bare LF).
func framingFault(head []byte) string {
	http10, te, cl := framingHeaders(head)
	switch {
	case te && cl:
		return "Content-Length with Transfer-Encoding"
	case te && http10:
		return "Transfer-Encoding on HTTP/1.0"
	}
	return ""
}

// responseFramingInDoubt reports whether the response head at the start of r's buffer
// carries both Content-Length and Transfer-Encoding: it is read by Transfer-Encoding (as
// parseResponseHead and net/http do), and its connection is not reused (RFC 9112 §6.3). A head
// that is not buffered whole is not inspected (r has at least the head's first byte).
func responseFramingInDoubt(r *bufio.Reader) bool {
	buf, _ := r.Peek(r.Buffered())
	n := responseHeadEnd(buf)
	if n <= 0 {
		return false
	}
	_, te, cl := framingHeaders(buf[:n])
	return te && cl
}

// framingHeaders scans a head (lines may end in a bare LF) for what frames its body: whether
// its first line ends in HTTP/1.0, and whether it has Transfer-Encoding and Content-Length.
func framingHeaders(head []byte) (http10, te, cl bool) {
	eol := bytes.IndexByte(head, '\n')
	if eol < 0 {
		return false, false, false
	}
	first := trimEOL(head[:eol+1])
	http10 = bytes.HasSuffix(first, []byte(" HTTP/1.0")) || bytes.HasPrefix(first, []byte("HTTP/1.0 "))
	for rest := head[eol+1:]; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			break
		}
		line := trimEOL(rest[:i+1])
		rest = rest[i+1:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		switch name := line[:colon]; {
		case asciiEqualFold(name, "transfer-encoding"):
			te = true
		case asciiEqualFold(name, "content-length"):
			cl = true
		}
	}
	return http10, te, cl
}

// emptyLines is how many bytes of empty lines (CRLF or LF) b starts with: RFC 9112 §2.2 asks a
// server to ignore at least one before a request line, as nginx ignores any number. A CR at
// the end of b may start one: it is left for more input.
func emptyLines(b []byte) int {
	n := 0
	for n < len(b) {
		switch {
		case b[n] == '\n':
			n++
		case b[n] == '\r' && n+1 < len(b) && b[n+1] == '\n':
			n += 2
		default:
			return n
		}
	}
	return n
}

// h2Preface is how an h2c connection with prior knowledge starts; a connection the fast path
// hands off goes to the h2c server only when it starts so (a short HTTP/1 request would
// otherwise wait for the 24 bytes of a preface before net/http looked at it).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// isH2Preface reports whether b starts like the HTTP/2 preface.
func isH2Preface(b []byte) bool {
	n := min(len(b), len(h2Preface))
	return n > 0 && string(b[:n]) == h2Preface[:n]
}

// bodyTimeout is the longest a request body may pause between two reads (nginx's
// client_body_timeout); past it the request is answered 408 and the connection closed. A
// table compiled from no settings (the empty one before the first sync) has the default.
func bodyTimeout(t *route.Table) time.Duration {
	if d := t.Limits.ClientBodyTimeout; d > 0 {
		return d
	}
	return proxyconfig.DefaultClientBodyTimeout
}

// The proxy's own answers to a request body that failed.
const (
	msgBodyTooLarge = "the request body is larger than the fleet's maxRequestBodySize"
	msgBodyStalled  = "the request body stalled"
	msgBadChunk     = "malformed chunked request body"
)

var (
	// errBodyTooLarge: a chunked request body outgrew the fleet's limit while it was relayed.
	errBodyTooLarge = errors.New("request body larger than the limit")
	// errBadChunk: a chunked request body is malformed.
	errBadChunk = errors.New(msgBadChunk)
)

// bodyFailure is the answer to a request whose body failed while it was read, on every path:
// 413 past the size limit (the fast path's errBodyTooLarge, net/http's MaxBytesError), 408 for
// a stall (a read deadline), 400 for malformed chunked framing; the connection then closes.
// It returns 0 when the client went away (a close or a reset): nobody reads an answer.
func bodyFailure(err error) (int, string) {
	var tooLarge *http.MaxBytesError
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, errBodyTooLarge), errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, msgBodyTooLarge
	case isTimeout(err):
		return http.StatusRequestTimeout, msgBodyStalled
	case isClosedConn(err), isNetError(err):
		return 0, ""
	}
	return http.StatusBadRequest, msgBadChunk // errBadChunk, net/http's chunked reader's errors
}

// forwardHeader reports whether a request header line goes to the backend: dropped are
// hop-by-hop lines and those the proxy sets (l.drop), and names with "_" unless the fleet
// allows them (ingress-nginx's default; CGI, WSGI and PHP read X_Forwarded_For as
// X-Forwarded-For, so a client could pass one past the proxy's own).
func forwardHeader(l *headerLine, t *route.Table) bool {
	return !l.drop && (!l.underscore || t.Limits.AllowUnderscoresInHeaders)
}

// reusable reports whether an upstream connection may serve another request after an
// exchange: only at the exact end of a whole message (no error, the backend did not ask to
// close, the body was not delimited by the close), with nothing read past it (buffered: bytes
// the backend sent beyond the answer, which would otherwise be read as the next client's).
func reusable(rh *respHead, err error, buffered int) bool {
	return err == nil && !rh.upClose && rh.body != bodyUntilClose && buffered == 0
}

// closeAfterHead reports whether the upstream connection of a request with this method is
// closed after the answer (the response framing decisions, parseResponseHead and
// roundTripH1, mark it not reusable): a HEAD's. A backend that answers HEAD with a body (a common bug:
// the handler writes what it writes for GET) may send it after the head, even after the next
// request on the connection has gone out, and no check can then tell those bytes from that
// request's answer. HEAD requests are rare; a new connection for each costs little.
func closeAfterHead(method []byte) bool {
	return string(method) == http.MethodHead
}

// noBodyByRule reports whether an answer has no body whatever its headers say (HEAD, 1xx,
// 204, 304): a backend that sends one anyway leaves stray bytes on its connection, so the
// connection is checked before its next use (mustProbe).
func noBodyByRule(method []byte, status int) bool {
	return string(method) == http.MethodHead || status < 200 || status == http.StatusNoContent ||
		status == http.StatusNotModified
}

// mustProbe reports whether an idle upstream connection is checked (a non-blocking peek)
// before a request uses it: when it has been idle long enough that the backend may have
// closed it, when the request cannot be sent again (a body, not idempotent), or when its last
// answer was bodiless by rule (suspect).
func mustProbe(idle time.Duration, repeatable, suspect bool) bool {
	return idle >= probeAfter || !repeatable || suspect
}

// resendable reports whether a request may be sent again after its connection failed before
// any answer: it must be replayable (idempotent with no body, RFC 9110 §9.2.2, see
// reqState.replayable), nothing of an answer may have come, and the failure must be the
// connection's end, or a timeout when the route retries those (timeouts).
func resendable(replay, answerBegun bool, err error, timeouts bool) bool {
	return replay && !answerBegun && (isClosedConn(err) || (timeouts && isTimeout(err)))
}

// lingers reports whether a connection that ends after an answer closes with a lingering close
// (its write side shut, what the client still sends read and dropped for a while, see
// h1Conn.closeWrite) rather than at once: only when the client may still be sending, because
// its request's body was not read whole or more input is already there, as nginx's
// lingering_close decides. Closing a socket with unread input resets it, and the client may
// lose the answer; closing one whose input was all read costs a FIN, not a wait.
func lingers(bodyRead bool, buffered int) bool {
	return !bodyRead || buffered > 0
}
