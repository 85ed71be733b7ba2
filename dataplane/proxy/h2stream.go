package proxy

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Stream is one request stream, seen by the core as an HTTP/1.1 connection that carries one
// exchange (see h2.go): reads give the request head built from its HEADERS, then its body;
// writes take the HTTP/1.1 answer the core sends and turn it into frames.
type h2Stream struct {
	cc *h2Conn
	id uint32

	// Guarded by cc.mu.
	cond sync.Cond // body data, window, reset, deadline
	// pre is the request head still to be read; body[bodyOff:] the data received and not yet
	// read.
	pre, body []byte
	bodyOff   int
	// trailers are the request's trailer lines (HTTP/1.1 syntax), for a chunked body.
	trailers []byte
	chunk    []byte // a chunk being read out (chunked bodies)
	chunked  bool
	// length is the request's content-length (-1: none), received the data bytes so far.
	length, received int64
	bodyEnd, bodyOut bool // END_STREAM came; the whole body was read out
	reset            bool // the stream ended abnormally (RST_STREAM either way, or the connection)
	finished         bool // the answer ended (its slot given back)
	send             streamSend
	recv             recvWindow
	rdl              time.Time
	rtimer           *time.Timer

	// The answer, converted by the writer (the core's goroutine, under cc.mu).
	method  string
	status  int // the proxy's own answer to a request it does not serve (see requestHead)
	rs      respState
	rhead   []byte // a response head that came in parts
	remain  int64  // rsLength: body bytes still to come
	cs      chunkParse
	headLen int

	// The backend connection the stream's exchange waits on (watchUp): a reset of the stream
	// closes it (abortUpLocked), so that the exchange ends then and not when the backend next
	// writes. upState: upIdle, upWatching (up set), upAborted.
	up      atomic.Pointer[upConn]
	upState atomic.Int32
}

const (
	upIdle int32 = iota
	upWatching
	upAborted
)

// watchUp has a reset of the stream close uc, the backend connection its exchange is about to
// wait on (its answer's body), until unwatchUp. It reports false when the stream is reset
// already: the exchange ends without waiting.
func (st *h2Stream) watchUp(uc *upConn) bool {
	st.up.Store(uc)
	st.upState.Store(upWatching)
	st.cc.mu.Lock()
	reset := st.reset
	st.cc.mu.Unlock()
	return !reset
}

// unwatchUp ends watchUp's watch; it reports whether a reset closed the connection (or was
// there before the watch): the exchange failed on the client's side, and the connection is
// not reused.
func (st *h2Stream) unwatchUp() (aborted bool) {
	aborted = !st.upState.CompareAndSwap(upWatching, upIdle)
	st.upState.Store(upIdle)
	st.up.Store(nil) // a reset that took the state first may find nil: the caller closes uc
	if !aborted {
		st.cc.mu.Lock()
		aborted = st.reset
		st.cc.mu.Unlock()
	}
	return aborted
}

// abortUpLocked closes the backend connection the stream's exchange waits on, if any (the
// stream was reset, or its connection ended): nginx ends the upstream request when its client
// goes, and a client that resets streams whose backend is silent would otherwise hold their
// backend connections for as long as the backend stays silent.
func (st *h2Stream) abortUpLocked() {
	if st.upState.CompareAndSwap(upWatching, upAborted) {
		if uc := st.up.Load(); uc != nil {
			_ = uc.c.Close()
		}
	}
}

type respState uint8

const (
	rsHead    respState = iota // the response head (or an informational one)
	rsLength                   // a body of remain bytes
	rsChunked                  // a chunked body (cs)
	rsClose                    // a body that ends when the exchange does
	rsDone                     // the answer ended
)

// chunkParse follows the chunked body the core writes: its own canonical framing (sizes
// without extensions, see chunkState.step, or net/http's).
type chunkParse struct {
	state  uint8 // 0 size line, 1 data, 2 the CRLF after data, 3 trailer lines
	remain int64
	line   []byte
	fields []hpack.HeaderField
	done   bool
}

var errStreamReset = errors.New("http2: stream reset")

func newH2Stream(cc *h2Conn, id uint32) *h2Stream {
	st := &h2Stream{cc: cc, id: id, length: -1, recv: recvWindow{window: h2StreamWindow}}
	st.cond.L = &cc.mu
	st.send.init(&st.cond, cc.initialWindow)
	return st
}

// requestHead builds the HTTP/1.1 head of the request in f into st.pre. It returns a stream
// error code for a malformed request (RFC 9113 §8.1.1), with st.status set when the proxy
// answers it instead (405 for CONNECT, which the proxy does not tunnel).
func (st *h2Stream) requestHead(f *headerBlock) http2.ErrCode {
	var method, path, scheme, authority string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		default: // :protocol (extended CONNECT is not offered), :status
			return http2.ErrCodeProtocol
		}
	}
	if method == "CONNECT" {
		st.status = 405
		return http2.ErrCodeProtocol
	}
	if method == "" || path == "" || scheme == "" || !tokenString(method) || !requestTarget(path) {
		return http2.ErrCodeProtocol
	}
	fields := f.RegularFields()
	for _, hf := range fields {
		if hf.Name == "host" && authority == "" {
			authority = hf.Value
		}
	}
	if !plainValue(authority) {
		return http2.ErrCodeProtocol
	}
	st.method = method
	size := len(method) + len(path) + len(authority) + 64 // the request line, host, framing, ends
	for _, hf := range fields {
		size += len(hf.Name) + len(hf.Value) + 4
	}
	b := make([]byte, 0, size) // one allocation for the head
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nhost: "...)
	b = append(b, authority...)
	b = append(b, "\r\n"...)
	cookies := 0
	for _, hf := range fields {
		v := hf.Value
		if v != "" && (v[0] == ' ' || v[0] == '\t' || v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			return http2.ErrCodeProtocol
		}
		switch hf.Name {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return http2.ErrCodeProtocol // connection-specific fields (RFC 9113 §8.2.2)
		case "te":
			if v != "trailers" {
				return http2.ErrCodeProtocol
			}
		case "host":
			continue
		case "cookie": // joined in one line below (RFC 9113 §8.2.3)
			cookies++
			continue
		case "content-length":
			n, ok := parseDecimal([]byte(v))
			if !ok || (st.length >= 0 && n != st.length) {
				return http2.ErrCodeProtocol
			}
			if st.length >= 0 {
				continue
			}
			st.length = n
		}
		b = append(b, hf.Name...)
		b = append(b, ": "...)
		b = append(b, v...)
		b = append(b, "\r\n"...)
	}
	if cookies > 0 {
		b = append(b, "cookie: "...)
		n := 0
		for _, hf := range fields {
			if hf.Name == "cookie" {
				if n > 0 {
					b = append(b, "; "...)
				}
				b = append(b, hf.Value...)
				n++
			}
		}
		b = append(b, "\r\n"...)
	}
	switch {
	case f.StreamEnded() && st.length > 0:
		return http2.ErrCodeProtocol // a content-length the body cannot have
	case !f.StreamEnded() && st.length < 0:
		b = append(b, "transfer-encoding: chunked\r\n"...)
		st.chunked = true
	case f.StreamEnded() && st.length < 0 && (method == "POST" || method == "PUT" || method == "PATCH"):
		b = append(b, "content-length: 0\r\n"...)
	}
	b = append(b, "\r\n"...)
	st.pre, st.headLen = b, len(b)
	return 0
}

// requestTrailers takes the trailers ending the request body (kept for a chunked body); false
// when they cannot end it (pseudo-fields, a body shorter than its content-length).
func (st *h2Stream) requestTrailers(f *headerBlock) bool {
	if len(f.PseudoFields()) > 0 || (st.length >= 0 && st.received != st.length) {
		return false
	}
	fields := f.RegularFields()
	if st.chunked {
		for _, hf := range fields {
			if hf.Name == "content-length" || hf.Name == "transfer-encoding" || hf.Name == "host" || !plainTrimmed(hf.Value) {
				continue
			}
			st.trailers = append(st.trailers, hf.Name...)
			st.trailers = append(st.trailers, ": "...)
			st.trailers = append(st.trailers, hf.Value...)
			st.trailers = append(st.trailers, "\r\n"...)
		}
	}
	st.bodyEnd = true
	st.cond.Broadcast()
	return true
}

// resetLocked ends the stream abnormally, telling the client (RST_STREAM code) when send.
func (st *h2Stream) resetLocked(code http2.ErrCode, send bool) {
	cc := st.cc
	if send && !st.reset {
		cc.rstLocked(st.id, code)
	}
	st.reset = true
	st.abortUpLocked()
	st.dropBodyLocked()
	if cc.streams[st.id] == st {
		delete(cc.streams, st.id)
	}
	st.cond.Broadcast()
	cc.space.Broadcast() // a send waiting for room in the output ends too
}

// dropBodyLocked gives the connection's window back for body data the core will not read (the
// stream ended first), and drops it.
func (st *h2Stream) dropBodyLocked() {
	if n := len(st.body) - st.bodyOff; n > 0 {
		st.cc.consumedLocked(nil, int32(n))
	}
	st.body, st.bodyOff = nil, 0
}

// serve serves the stream through the core, on its own goroutine.
func (st *h2Stream) serve() {
	cc := st.cc
	c := streamConns.Get().(*h1Conn)
	c.s, c.c, c.rw, c.tls, c.client, c.proto, c.port, c.stream = cc.hc.s, st, st, cc.hc.tls, cc.hc.client, cc.hc.proto, cc.hc.port, true
	c.ip, c.remote, c.cert = cc.hc.ip, cc.hc.remote, cc.hc.cert
	c.takeBuffers()
	if c.serveStream(st.headLen) {
		return // net/http serves it, and closes it
	}
	_ = st.Close()
	c.releaseBuffers(false)
	c.c, c.rw, c.rd, c.st = nil, nil, readDeadline{}, reqState{}
	streamConns.Put(c)
}

var streamConns = sync.Pool{New: func() any { return newH1Conn() }}

// Read gives the request head, then the body (chunked when it has no content-length). Past
// the body it waits, as a connection with nothing more to say does, until the stream is reset
// or the read deadline passes. Once the stream is reset it gives nothing more.
func (st *h2Stream) Read(p []byte) (int, error) {
	cc := st.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		switch {
		case st.reset || cc.werr != nil:
			// Before anything buffered: a reset stream's request is cut where it stands, and
			// a chunked body is never ended for it (its data dropped, the last chunk would
			// give the backend a complete, empty body; FuzzH2 found it).
			return 0, errStreamReset
		case len(st.pre) > 0:
			n := copy(p, st.pre)
			st.pre = st.pre[n:]
			return n, nil
		case len(st.chunk) > 0:
			n := copy(p, st.chunk)
			st.chunk = st.chunk[n:]
			return n, nil
		case len(st.body) > st.bodyOff && !st.chunked:
			n := copy(p, st.body[st.bodyOff:])
			st.takeBody(n)
			return n, nil
		case len(st.body) > st.bodyOff:
			n := min(len(st.body)-st.bodyOff, 16<<10)
			ch := strconv.AppendInt(st.chunk[:0], int64(n), 16)
			ch = append(ch, "\r\n"...)
			ch = append(ch, st.body[st.bodyOff:st.bodyOff+n]...)
			st.chunk = append(ch, "\r\n"...)
			st.takeBody(n)
			continue
		case st.bodyEnd && !st.bodyOut:
			st.bodyOut = true
			if st.chunked {
				st.chunk = append(append(append(st.chunk[:0], "0\r\n"...), st.trailers...), "\r\n"...)
			}
			continue
		case !st.rdl.IsZero() && !time.Now().Before(st.rdl):
			return 0, os.ErrDeadlineExceeded
		}
		st.cond.Wait()
	}
}

// takeBody marks n bytes of the body read and gives their window back; the buffer is reused
// once read whole (data compacts it only when it would otherwise grow).
func (st *h2Stream) takeBody(n int) {
	st.bodyOff += n
	if st.bodyOff == len(st.body) {
		st.body, st.bodyOff = st.body[:0], 0
	}
	st.consumed(n)
}

// consumed gives n bytes of window back and sends what that wrote.
func (st *h2Stream) consumed(n int) {
	cc := st.cc
	before := len(cc.out)
	cc.consumedLocked(st, int32(n))
	if len(cc.out) > before {
		cc.flushLocked()
	}
}

// Write takes the core's HTTP/1.1 answer and sends it as HEADERS, DATA and trailers.
func (st *h2Stream) Write(p []byte) (int, error) {
	cc := st.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	err := st.convert(p)
	cc.flushLocked()
	if err == nil && cc.werr != nil {
		err = errStreamReset
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (st *h2Stream) convert(p []byte) error {
	for len(p) > 0 {
		if st.reset {
			return errStreamReset
		}
		switch st.rs {
		case rsHead:
			head := p
			if len(st.rhead) > 0 {
				st.rhead = append(st.rhead, p...)
				head = st.rhead
			}
			end := bytes.Index(head, []byte("\r\n\r\n"))
			if end < 0 {
				if len(st.rhead) == 0 {
					st.rhead = append(st.rhead, p...)
				}
				return nil
			}
			end += 4
			rest := len(head) - end // bytes past the head, at the end of p
			if err := st.sendHead(head[:end]); err != nil {
				return err
			}
			st.rhead = st.rhead[:0]
			p = p[len(p)-rest:]
		case rsLength:
			n := int(min(int64(len(p)), st.remain))
			st.remain -= int64(n)
			if err := st.sendData(p[:n], st.remain == 0); err != nil {
				return err
			}
			p = p[n:]
		case rsClose:
			if err := st.sendData(p, false); err != nil {
				return err
			}
			p = nil
		case rsChunked:
			n, err := st.dechunk(p)
			if err == errBadChunk {
				st.resetLocked(http2.ErrCodeInternal, true)
				return errStreamReset
			}
			if err != nil {
				return err
			}
			p = p[n:]
		default:
			return nil // past the answer: nothing more is sent
		}
	}
	return nil
}

// sendHead sends a response head (the core's HTTP/1.1 head, ending in its blank line) as a
// HEADERS frame, and sets how the body that follows is framed.
func (st *h2Stream) sendHead(head []byte) error {
	cc := st.cc
	status := 0
	if len(head) >= 12 {
		status, _ = strconv.Atoi(string(head[9:12]))
	}
	if status < 100 {
		st.resetLocked(http2.ErrCodeInternal, true)
		return errStreamReset
	}
	cc.fe.begin()
	cc.fe.status(status)
	length, chunked := int64(-1), false
	next := bytes.IndexByte(head, '\n') + 1
	for next < len(head)-2 {
		eol := next + bytes.IndexByte(head[next:], '\n')
		line := head[next : eol-1]
		next = eol + 1
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue
		}
		name, value := line[:colon], bytes.TrimLeft(line[colon+1:], " \t")
		switch headerKind(name) {
		case hConnection, hKeepAlive, hProxyConnection, hUpgrade, hTE:
			continue
		case hTransferEncoding:
			chunked = true
			continue
		case hContentLength:
			if status == 204 || status == 304 {
				continue // no body follows, whatever length it announces (RFC 9110 §8.6)
			}
			length, _ = parseDecimal(value)
		}
		cc.fe.field(name, value)
	}
	informational := status < 200
	switch {
	case informational:
		st.rs = rsHead
	case st.method == "HEAD" || status == 204 || status == 304 || length == 0:
		st.rs = rsDone
	case chunked:
		st.rs, st.cs = rsChunked, chunkParse{}
	case length > 0:
		st.rs, st.remain = rsLength, length
	default:
		st.rs = rsClose
	}
	cc.out = cc.appendHeaderBlock(cc.out, st.id, st.rs == rsDone)
	if st.rs == rsDone {
		st.finishLocked()
	}
	return nil
}

// sendData sends p as DATA frames, END_STREAM on the last when end (see frameWriter.sendData).
func (st *h2Stream) sendData(p []byte, end bool) error {
	ended, err := st.cc.sendData(&st.send, st.id, p, end, &st.reset)
	if ended {
		st.rs = rsDone
		st.finishLocked()
	}
	return err
}

// dechunk reads the chunked body in p, sending its data and at its end its trailers (or an
// empty DATA frame ending the stream); it returns how much of p it consumed.
func (st *h2Stream) dechunk(p []byte) (int, error) {
	cc := st.cc
	return st.cs.feed(p, func(d []byte) error { return st.sendData(d, false) }, func(trailers []hpack.HeaderField) error {
		if len(trailers) == 0 {
			return st.sendData(nil, true)
		}
		cc.fe.begin()
		for _, f := range trailers {
			if validTrailer(f) && tokenString(f.Name) {
				cc.fe.fieldString(f.Name, f.Value)
			}
		}
		cc.out = cc.appendHeaderBlock(cc.out, st.id, true)
		st.rs = rsDone
		st.finishLocked()
		return nil
	})
}

// feed decodes the chunked body in p: its data goes to data, its end with the trailer fields
// (names in lower case) to end. It returns how much of p it consumed, and stops at the end.
func (cs *chunkParse) feed(p []byte, data func([]byte) error, end func([]hpack.HeaderField) error) (int, error) {
	used := 0
	for used < len(p) && !cs.done {
		switch cs.state {
		case 0, 3: // a line: a chunk size, or a trailer field
			i := bytes.IndexByte(p[used:], '\n')
			if i < 0 {
				cs.line = append(cs.line, p[used:]...)
				return len(p), nil
			}
			line := p[used : used+i+1]
			if len(cs.line) > 0 {
				cs.line = append(cs.line, line...)
				line = cs.line
			}
			used += i + 1
			line = trimEOL(line)
			switch {
			case cs.state == 0:
				n, err := strconv.ParseInt(string(line), 16, 64)
				if err != nil || n < 0 {
					return used, errBadChunk
				}
				cs.remain, cs.state = n, 1
				if n == 0 {
					cs.state = 3
				}
			case len(line) == 0:
				cs.done = true
				if err := end(cs.fields); err != nil {
					return used, err
				}
			default:
				if colon := bytes.IndexByte(line, ':'); colon > 0 {
					cs.fields = append(cs.fields, hpack.HeaderField{Name: lowerName(line[:colon]), Value: string(bytes.TrimSpace(line[colon+1:]))})
				}
			}
			cs.line = cs.line[:0]
		case 1:
			n := int(min(int64(len(p)-used), cs.remain))
			if err := data(p[used : used+n]); err != nil {
				return used, err
			}
			used += n
			cs.remain -= int64(n)
			if cs.remain == 0 {
				cs.state, cs.remain = 2, 2
			}
		case 2: // the CRLF after a chunk's data
			n := int(min(int64(len(p)-used), cs.remain))
			used += n
			cs.remain -= int64(n)
			if cs.remain == 0 {
				cs.state = 0
			}
		}
	}
	return used, nil
}

// finishLocked accounts for the answer's end: the stream's slot is given back, and a request
// body still coming is refused (RST_STREAM NO_ERROR, RFC 9113 §8.1).
func (st *h2Stream) finishLocked() {
	if st.finished {
		return
	}
	st.finished = true
	if !st.bodyEnd && !st.reset {
		st.resetLocked(http2.ErrCodeNo, true)
	}
	st.dropBodyLocked()
	st.cc.streamDoneLocked(st)
}

// abort resets the stream of an answer cut short (the backend's body failed), so that Close
// does not end an answer delimited by the backend's close as if it were whole (found by
// review: the client got END_STREAM after a backend's connection reset).
func (st *h2Stream) abort() {
	cc := st.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !st.finished {
		st.resetLocked(http2.ErrCodeInternal, true)
		cc.flushLocked()
	}
}

// Close ends the exchange: an answer that did not end is cut (RST_STREAM), one that ends with
// the exchange ends its stream.
func (st *h2Stream) Close() error {
	cc := st.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if st.rtimer != nil {
		st.rtimer.Stop()
	}
	if st.finished {
		return nil
	}
	if st.rs == rsClose && !st.reset && cc.werr == nil {
		_ = st.sendData(nil, true)
	}
	if !st.finished {
		st.resetLocked(http2.ErrCodeInternal, true)
		st.finishLocked()
	}
	cc.flushLocked()
	return nil
}

func (st *h2Stream) LocalAddr() net.Addr { return st.cc.c.LocalAddr() }
func (st *h2Stream) RemoteAddr() net.Addr {
	if r := st.cc.hc.remote; r != nil {
		return r // the PROXY protocol's source
	}
	return st.cc.c.RemoteAddr()
}

func (st *h2Stream) SetDeadline(t time.Time) error { return st.SetReadDeadline(t) }

// SetReadDeadline bounds the waits for the request body (the body timeout) and, past it, for
// the stream's reset (the core's watch of a client that gives up).
func (st *h2Stream) SetReadDeadline(t time.Time) error {
	cc := st.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	st.rdl = t
	switch d := time.Until(t); {
	case t.IsZero():
		if st.rtimer != nil {
			st.rtimer.Stop()
		}
	case d <= 0:
		st.cond.Broadcast()
	case st.rtimer == nil:
		st.rtimer = time.AfterFunc(d, func() {
			cc.mu.Lock()
			st.cond.Broadcast()
			cc.mu.Unlock()
		})
	default:
		st.rtimer.Reset(d)
	}
	return nil
}

// SetWriteDeadline: writes are bounded by h2WriteTimeout.
func (st *h2Stream) SetWriteDeadline(time.Time) error { return nil }

var _ net.Conn = (*h2Stream)(nil)

// tokenString reports whether s is a non-empty token (a method).
func tokenString(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isToken[s[i]] {
			return false
		}
	}
	return s != ""
}

// requestTarget reports whether an HTTP/2 :path can stand in an HTTP/1.1 request line:
// origin-form or "*", no space or control byte.
func requestTarget(s string) bool {
	if s != "*" && s[0] != '/' {
		return false
	}
	return plainValue(s)
}

// plainValue reports whether s has no space, control byte or DEL (an authority, a target).
func plainValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// plainTrimmed reports whether a field value has no leading or trailing whitespace.
func plainTrimmed(v string) bool {
	return v == "" || (v[0] != ' ' && v[0] != '\t' && v[len(v)-1] != ' ' && v[len(v)-1] != '\t')
}

// lowerName is a header name in lower case, as HTTP/2 requires: the common names without
// allocating.
func lowerName(b []byte) string {
	var buf [32]byte
	l := lowerBytes(&buf, b)
	switch string(l) {
	case "content-type":
		return "content-type"
	case "content-length":
		return "content-length"
	case "date":
		return "date"
	case "server":
		return "server"
	case "cache-control":
		return "cache-control"
	case "set-cookie":
		return "set-cookie"
	case "etag":
		return "etag"
	case "last-modified":
		return "last-modified"
	case "location":
		return "location"
	case "vary":
		return "vary"
	case "content-encoding":
		return "content-encoding"
	case "x-request-id":
		return "x-request-id"
	case "grpc-status":
		return "grpc-status"
	case "grpc-message":
		return "grpc-message"
	}
	return string(l)
}

// lowerBytes is b in lower case (ASCII: header names are tokens), in buf when it fits, else in a
// new slice.
func lowerBytes(buf *[32]byte, b []byte) []byte {
	if len(b) > len(buf) {
		return bytes.ToLower(b)
	}
	l := buf[:len(b)]
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		l[i] = c
	}
	return l
}
