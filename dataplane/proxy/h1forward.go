package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"portico.dev/portico/dataplane/route"
)

// bodyKind is how a response body is delimited.
type bodyKind uint8

const (
	bodyNone bodyKind = iota
	bodyLength
	bodyChunked
	bodyUntilClose
)

// respHead is what the fast path needs of a backend's response head; the head to send to the
// client is built in h1Conn.out.
type respHead struct {
	status int
	body   bodyKind
	length int64
	// upClose: the upstream connection is not reused after this response (the backend closes
	// it, its framing was in doubt, it answers a HEAD; see reusable).
	upClose bool
	// informed: an informational answer (1xx) was passed on to the client.
	informed bool
}

// clientError is a failure on the client's side of an exchange (it went away mid-body).
type clientError struct{ error }

func (e clientError) Unwrap() error { return e.error }

// isClientError: err is a clientError (nil is not).
func isClientError(err error) bool {
	if err == nil {
		return false
	}
	var ce clientError
	return errors.As(err, &ce)
}

var (
	errBadResponse   = errors.New("malformed response from upstream")
	errUnexpected101 = errors.New("upstream switched protocols unasked")
)

// forward sends the request to st.endpoint and streams the answer back. When the connection
// fails before any answer, a request that can be repeated (idempotent, no body) is sent again
// once on a new connection if the failed one was reused (the backend had closed it); otherwise
// Handler.retry decides whether it goes on to another endpoint (any request after a refused
// connection, a repeatable one after a connection closed or reset unanswered: a pod that is
// stopping). A request that cannot be repeated checks its pooled connection first.
func (c *h1Conn) forward() {
	hd, st := &c.head, &c.st
	replay := st.replayable(bytesView(hd.method), hd.contentLength != 0 || hd.chunked)
	var (
		uc    *upConn
		rh    respHead
		stale bool
	)
	for again := false; ; again = true {
		e := st.endpoint
		now := st.start
		if again {
			now = time.Now()
		}
		st.attempt = now
		var err error
		uc, err = c.s.up.get(e.Addr, now, stale, !replay, st.dialTimeout(&c.s.h.opts), st.backend.TLS)
		if err != nil {
			if c.retry(err, replay) {
				stale = false
				continue
			}
			c.upstreamFailed(err)
			return
		}
		e.Stats.InFlight.Add(1)
		sendErr := c.send(uc)
		c.bodyRead = sendErr == nil
		if mb := st.mirrors(hd.contentLength != 0 || hd.chunked); mb != nil && !again && sendErr == nil {
			c.s.h.mirror(mb, c.out) // the head as the backend got it (send built it in c.out)
		}
		if isClientError(sendErr) {
			e.Stats.InFlight.Add(-1)
			_ = uc.c.Close()
			if code, msg := bodyFailure(sendErr); code != 0 {
				c.closeAfter = true
				c.answer(code, msg)
				return
			}
			c.clientGone()
			return
		}
		if sendErr != nil && isTimeout(sendErr) {
			// The backend stopped reading the body for the send timeout: 504, without waiting
			// for an answer it is not giving.
			e.Stats.InFlight.Add(-1)
			_ = uc.c.Close()
			c.closeAfter = true // the client's body was not read in full
			c.upstreamFailed(sendErr)
			return
		}
		// Even when the body could not be sent in full, the backend may have answered (413); a
		// connection the backend had closed fails the read at once, and is retried below.
		rh.informed = false
		err = c.readHead(uc, &rh)
		e.Stats.InFlight.Add(-1)
		if isClientError(err) {
			_ = uc.c.Close() // the backend sees the request end, as net/http's cancellation does
			c.clientGone()
			return
		}
		if err == nil {
			if sendErr == nil && !rh.informed && c.s.h.retryStatus(st, rh.status, replay, string(hd.host), string(hd.route)) {
				_ = uc.c.Close() // its answer is not read
				stale = false
				continue
			}
			// Only once the client's body was read whole: send sets bodyRead again for the
			// error page's request, which has none.
			if eb := errorPageBackend(st, rh.status); eb != nil && sendErr == nil && !rh.informed {
				// custom-http-errors: the error backend answers instead (its answer unread,
				// the connection is closed).
				_ = uc.c.Close()
				toErrorPage(st, eb, rh.status)
				replay, stale = true, false
				continue
			}
			if sendErr != nil {
				rh.upClose, c.closeAfter = true, true
			}
			break
		}
		_ = uc.c.Close()
		if resendable(replay, len(c.raw) > 0 || rh.informed, err, st.retriesTimeouts()) {
			if uc.reused && !stale {
				stale = true
				continue
			}
			if c.retry(err, replay) {
				stale = false
				continue
			}
		}
		if sendErr != nil {
			c.closeAfter = true // the client's body was not read in full
		}
		c.upstreamFailed(err)
		return
	}
	c.finishHead(&rh)
	_, werr := c.bw.Write(c.out)
	waits := rh.body != bodyNone && (rh.body != bodyLength || int64(uc.r.Buffered()) < rh.length)
	if waits {
		uc.rd.none(uc.c) // bodies stream as long as they take
	}
	// An HTTP/2 stream reset while the body waits for its backend closes the backend
	// connection (h2Stream.watchUp): the exchange ends then, not when the backend next writes.
	var hs *h2Stream
	if waits {
		hs, _ = c.c.(*h2Stream)
	}
	if hs != nil && !hs.watchUp(uc) && werr == nil {
		werr = errStreamReset
	}
	var err error
	if werr == nil {
		switch rh.body {
		case bodyLength:
			st.bytes, err = pipe(c.bw, uc.r, rh.length, true, nil)
		case bodyChunked:
			st.bytes, err = relayChunked(c.bw, uc.r, &c.out, true, 0, nil)
		case bodyUntilClose:
			st.bytes, err = pipe(c.bw, uc.r, -1, true, nil)
		}
	} else {
		err = clientError{werr}
	}
	if hs != nil && hs.unwatchUp() && !isClientError(err) {
		err = clientError{errStreamReset}
	}
	if !reusable(&rh, err, uc.r.Buffered()) {
		_ = uc.c.Close()
	} else {
		if waits {
			c.now = time.Now()
		}
		uc.suspect = noBodyByRule(hd.method, rh.status)
		c.s.up.put(st.endpoint.Addr, uc, c.now)
	}
	c.endAnswer(err)
}

// endAnswer ends an exchange whose answer was sent: when err says it was cut short, the client
// must not take it as whole (its connection closes), and the failure is counted as the client's
// (499) or the backend's. Both forwarding paths call it.
func (c *h1Conn) endAnswer(err error) {
	h, st := c.s.h, &c.st
	if err != nil {
		c.closeAfter = true
		if s, ok := c.c.(*h2Stream); ok {
			s.abort() // an HTTP/2 client is told (RST_STREAM), not sent an end
		}
		if isClientError(err) {
			st.status = 499
		} else {
			h.metrics.UpstreamErrors.WithLabelValues(st.service, "other").Inc()
			h.log.V(1).Info("Upstream error in the response body", "service", st.service, "endpoint", st.endpoint.Addr, "error", err.Error())
		}
	}
	c.done()
}

// finishHead accounts for an answer whose head came (the endpoint succeeded, the time to the
// head observed) and ends the client's head in c.out: Connection: close when the connection
// ends after it (a body ended by close, a shutdown), then the blank line.
func (c *h1Conn) finishHead(rh *respHead) {
	st := &c.st
	st.endpoint.Stats.Succeeded()
	c.now = time.Now()
	st.upstreamTime = c.now.Sub(st.start)
	c.observe(st.upstreamTime)
	st.status = rh.status
	if rh.body == bodyUntilClose || c.s.closing.Load() {
		c.closeAfter = true
	}
	if c.closeAfter {
		c.out = append(c.out, "Connection: close\r\n"...)
	}
	c.out = append(c.out, "\r\n"...)
}

func (c *h1Conn) retry(err error, replay bool) bool {
	return c.s.h.retry(&c.st, err, replay, string(c.head.host), string(c.head.route))
}

// upstreamFailed answers a failed exchange as the net/http path does.
func (c *h1Conn) upstreamFailed(err error) {
	c.answer(c.s.h.upstreamFailed(&c.st, err))
}

// clientGone ends a request whose client went away mid-body.
func (c *h1Conn) clientGone() {
	c.st.status = 499
	c.closeAfter = true
	c.done()
}

// isClosedConn: the backend closed the connection (or reset it) before answering.
func isClosedConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}

// send writes the request head and body to the backend. The head is built in c.out and
// written in one piece.
func (c *h1Conn) send(uc *upConn) error {
	hd := &c.head
	c.requestHead()
	_, _ = uc.w.Write(c.out)
	if c.st.errorCode != 0 {
		return uc.w.Flush() // an error page's request has no body
	}
	if hd.expect && (hd.contentLength > 0 || hd.chunked) {
		// The proxy answers Expect (it is not forwarded): the client sends the body on this
		// 100, as net/http sends it when a handler first reads the body.
		if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return clientError{err}
		}
		if err := c.bw.Flush(); err != nil {
			return clientError{err}
		}
	}
	if hd.contentLength > 0 || hd.chunked {
		// A backend that stops reading the body fails the request after the send timeout
		// without progress (nginx's proxy_send_timeout); the deadline moves before each read of
		// the client's body, and is lifted at the end (the connection may be pooled).
		send := c.st.sendTimeout(&c.s.h.opts)
		progress := func() {
			c.bodyProgress()
			_ = uc.c.SetWriteDeadline(time.Now().Add(send))
		}
		progress()
		defer func() { _ = uc.c.SetWriteDeadline(time.Time{}) }()
		if hd.contentLength > 0 {
			if int64(c.br.Buffered()) < hd.contentLength && c.bw.Buffered() > 0 {
				// Answers held back for pipelining go out before waiting for this body.
				if err := c.bw.Flush(); err != nil {
					return clientError{err}
				}
			}
			if _, err := pipe(uc.w, c.br, hd.contentLength, false, progress); err != nil {
				return err
			}
		}
		if hd.chunked {
			if _, err := relayChunked(uc.w, c.br, &c.raw, false, c.st.maxBody(), progress); err != nil {
				return err
			}
		}
	}
	return uc.w.Flush()
}

// bodyProgress moves the client's read deadline before a read of the request body: the body
// may take as long as it needs, but not pause longer than the body timeout.
func (c *h1Conn) bodyProgress() {
	c.rd.within(c.c, time.Now(), bodyTimeout(c.st.table))
}

// requestHead builds the head sent to the backend in c.out: the client's head without its
// hop-by-hop lines (and underscored names, see forwardHeader), with X-Forwarded-* and
// X-Request-Id.
func (c *h1Conn) requestHead() {
	hd, h := &c.head, c.s.h
	p := c.st.policy()
	if c.st.errorCode != 0 {
		c.errorPageHead()
		return
	}
	o := append(c.out[:0], hd.method...)
	o = append(o, ' ')
	if p != nil && p.Rewrite != nil {
		o = rewrittenTarget(o, c.st.rule, bytesView(hd.route), bytesView(hd.target))
	} else {
		o = append(o, hd.target...)
	}
	o = append(o, " HTTP/1.1\r\n"...)
	run := -1 // start of a run of kept lines, copied at once
	t := c.st.table
	for i := range hd.lines {
		keep := forwardHeader(&hd.lines[i], t) && (p == nil || !dropsRequestLine(p, &hd.lines[i], hd.buf)) &&
			(c.st.acc == nil || keepForAccess(c.st.acc, &hd.lines[i], hd.buf))
		switch {
		case !keep && run >= 0:
			o = append(o, hd.buf[hd.lines[run].start:hd.lines[i-1].end]...)
			run = -1
		case keep && run < 0:
			run = i
		}
	}
	if run >= 0 {
		o = append(o, hd.buf[hd.lines[run].start:hd.lines[len(hd.lines)-1].end]...)
	}
	if p != nil {
		o = appendRequestPolicy(o, p)
	}
	for _, kv := range c.st.upstreamSet() { // external auth's auth-response-headers
		if kv[1] != "" {
			o = append(o, kv[0]...)
			o = append(o, ": "...)
			o = append(o, kv[1]...)
			o = append(o, "\r\n"...)
		}
	}
	o = appendClientCertHeaders(o, c.clientCert)
	o = c.appendForwarding(o, true)
	if len(hd.requestID) == 0 {
		o = append(o, "X-Request-Id: "...)
		idStart := len(o)
		o = append(o, h.idBase...)
		o = strconv.AppendUint(o, h.idSeq.Add(1), 16)
		if c.st.logging || (p != nil && len(p.InterceptErrors) > 0) { // the access log's, an error page's
			c.st.requestID = string(o[idStart:])
		}
		o = append(o, "\r\n"...)
	} else if c.st.logging || (p != nil && len(p.InterceptErrors) > 0) {
		c.st.requestID = string(hd.requestID)
	}
	o = append(o, "\r\n"...)
	c.out = o
}

// errorPageHead builds in c.out the request an error backend gets for an intercepted answer
// (custom-http-errors): GET (HEAD stays HEAD) of / with the client's query, the client's Host,
// no body, ingress-nginx's X-Code and companions (X-Original-URI is the client's target), and
// the forwarding headers; no other header of the client's.
func (c *h1Conn) errorPageHead() {
	hd, st := &c.head, &c.st
	o := c.out[:0]
	if string(hd.method) == http.MethodHead {
		o = append(o, "HEAD "...)
	} else {
		o = append(o, "GET "...)
	}
	o = append(o, '/') // as ingress-nginx's rewrite (.*) / break: the path /, the query kept
	if _, q, ok := strings.Cut(bytesView(hd.target), "?"); ok {
		o = append(o, '?')
		o = append(o, q...)
	}
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, hd.host...)
	o = append(o, "\r\n"...)
	accept, _ := c.Header("Accept")
	o = appendErrorPageHeaders(o, st, accept, bytesView(hd.target), st.requestID)
	o = c.appendForwarding(o, false)
	o = append(o, "\r\n"...)
	c.out = o
}

// pipeBuffer is the size of the buffer a long body moves through.
const pipeBuffer = 32 << 10

var pipeBuffers = sync.Pool{New: func() any { b := make([]byte, pipeBuffer); return &b }}

// pipe copies n bytes (n < 0: until end of file) from src to dst. Before it waits for src, it
// flushes what dst holds, so streamed bodies pass through as they come. A short body goes from
// src's buffer to dst's; a body longer than a client read buffer (or until close) moves through
// a pooled pipeBuffer, each read taking what the socket holds and each write sending it at once,
// where the bufio buffers would move it 4 to 8 KiB at a time (a 128 KiB upload: 4 system calls
// instead of 32). Failures on the client's side (dst when clientIsDst, else src) are returned
// as clientError. waiting, when set, is called before each read that may wait for src (it
// moves the request body's progress deadline).
func pipe(dst *bufio.Writer, src *bufio.Reader, n int64, clientIsDst bool, waiting func()) (moved int64, _ error) {
	var buf []byte
	if n < 0 || n > clientReadBuffer {
		bp := pipeBuffers.Get().(*[]byte)
		defer pipeBuffers.Put(bp)
		buf = *bp
	}
	for n != 0 {
		if src.Buffered() == 0 && dst.Buffered() > 0 {
			if err := dst.Flush(); err != nil {
				return moved, dstError(err, clientIsDst)
			}
		}
		var p []byte
		var err error
		if waiting != nil && src.Buffered() == 0 {
			waiting()
		}
		if buf == nil {
			if _, err = src.Peek(1); err == nil {
				p, _ = src.Peek(int(min(int64(src.Buffered()), n)))
			}
		} else {
			p = buf
			if n > 0 && int64(len(p)) > n {
				p = p[:n]
			}
			var k int
			k, err = src.Read(p)
			p = p[:k]
		}
		if len(p) > 0 {
			if _, err := dst.Write(p); err != nil {
				return moved, dstError(err, clientIsDst)
			}
			moved += int64(len(p))
			if buf == nil {
				_, _ = src.Discard(len(p))
			}
			if n > 0 {
				n -= int64(len(p))
			}
		}
		if err != nil && n != 0 {
			if n < 0 && errors.Is(err, io.EOF) {
				return moved, nil
			}
			err = unexpectedEOF(err)
			if !clientIsDst {
				return moved, clientError{err}
			}
			return moved, err
		}
	}
	return moved, nil
}

func dstError(err error, clientIsDst bool) error {
	if clientIsDst {
		return clientError{err}
	}
	return err
}

// relayChunked copies a chunked body from src to dst through chunkState.step (chunk sizes
// without extensions, trailers as they are), in scratch, flushing dst whenever src has nothing
// more buffered, as pipe does: a backend's answer to the client (clientIsDst) or a client's
// request body to the backend, whose data limit > 0 bounds (errBodyTooLarge) and before whose
// waits waiting is called. Failures on the client's side (dst when clientIsDst, else src, a
// malformed or too large request body included) are clientError; a malformed answer is
// errBadResponse.
func relayChunked(dst *bufio.Writer, src *bufio.Reader, scratch *[]byte, clientIsDst bool, limit int64, waiting func()) (data int64, _ error) {
	srcError := func(err error) error {
		if clientIsDst {
			return err
		}
		return clientError{err}
	}
	var cs chunkState
	defer func() { data = cs.data }()
	for need := 1; ; {
		if src.Buffered() < need {
			if src.Buffered() == 0 && dst.Buffered() > 0 {
				if err := dst.Flush(); err != nil {
					return 0, dstError(err, clientIsDst)
				}
			}
			if waiting != nil {
				waiting()
			}
			if _, err := src.Peek(need); err != nil {
				return 0, srcError(unexpectedEOF(err))
			}
		}
		buf, _ := src.Peek(src.Buffered())
		n, out, done, err := cs.step(buf, (*scratch)[:0], src.Size())
		*scratch = out
		switch {
		case err != nil && !clientIsDst:
			return 0, clientError{errBadChunk}
		case err != nil:
			return 0, err
		case limit > 0 && cs.data > limit:
			return 0, clientError{errBodyTooLarge}
		}
		_, _ = src.Discard(n)
		if _, err := dst.Write(out); err != nil {
			return 0, dstError(err, clientIsDst)
		}
		if done {
			return 0, nil
		}
		need = 1
		if n == 0 {
			need = len(buf) + 1 // a line not whole yet
		}
	}
}

// chunkState follows a chunked body through step, which every serving path calls.
type chunkState struct {
	data    int64 // data bytes passed so far
	left    int64 // data bytes left in the current chunk
	inData  bool
	crlf    bool // the CRLF after a chunk's data is next
	trailer bool // in the trailer section
}

// step parses what in holds of a chunked body and appends it to out as it is sent on: chunk
// sizes without extensions, data as is, trailer fields as they are (validated), CRLF line
// ends. It returns how much of in it consumed, the grown out, and done at the body's end. A
// line (size, trailer field) longer than maxLine, or malformed, is errBadResponse. It may
// consume nothing when in holds only part of a line.
func (cs *chunkState) step(in, out []byte, maxLine int) (n int, _ []byte, done bool, err error) {
	for {
		rest := in[n:]
		switch {
		case cs.inData:
			k := min(int64(len(rest)), cs.left)
			out = append(out, rest[:k]...)
			n += int(k)
			cs.data += k
			if cs.left -= k; cs.left > 0 {
				return n, out, false, nil
			}
			cs.inData, cs.crlf = false, true
		case cs.crlf:
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				if len(rest) > 1 {
					return n, out, false, errBadResponse
				}
				return n, out, false, nil
			}
			if len(trimEOL(rest[:i+1])) != 0 {
				return n, out, false, errBadResponse
			}
			n += i + 1
			out = append(out, "\r\n"...)
			cs.crlf = false
		default:
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				if len(rest) >= maxLine {
					return n, out, false, errBadResponse
				}
				return n, out, false, nil
			}
			line := trimEOL(rest[:i+1])
			if cs.trailer {
				n += i + 1
				if len(line) == 0 {
					return n, append(out, "\r\n"...), true, nil
				}
				if j := bytes.IndexByte(line, ':'); j <= 0 || !validValue(line) {
					return n, out, false, errBadResponse
				}
				out = append(append(out, line...), "\r\n"...)
				continue
			}
			size, ok := parseHex(line)
			if !ok {
				return n, out, false, errBadResponse
			}
			n += i + 1
			out = strconv.AppendInt(out, size, 16)
			out = append(out, "\r\n"...)
			if size == 0 {
				cs.trailer = true
			} else {
				cs.inData, cs.left = true, size
			}
		}
	}
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func trimEOL(l []byte) []byte {
	if len(l) > 0 && l[len(l)-1] == '\n' {
		l = l[:len(l)-1]
	}
	if len(l) > 0 && l[len(l)-1] == '\r' {
		l = l[:len(l)-1]
	}
	return l
}

// readRawHead reads one response head, up to and with its blank line, into c.raw: in one copy
// when the buffer holds it whole (the common case), else line by line (a head longer than the
// buffer, or lines ending in a bare LF), after calling waits.
func (c *h1Conn) readRawHead(r *bufio.Reader, waits func()) error {
	c.raw = c.raw[:0]
	if buf, _ := r.Peek(r.Buffered()); len(buf) > 0 {
		if n := headEnd(buf); n > 0 {
			c.raw = append(c.raw, buf[:n]...)
			_, _ = r.Discard(n)
			return nil
		}
	}
	waits() // reads will wait: with the head's full deadline
	if _, err := r.Peek(1); err != nil {
		return err
	}
	for {
		start := len(c.raw)
		var line []byte
		var err error
		if c.raw, line, err = readLine(r, c.raw, maxResponseHead); err != nil {
			return unexpectedEOF(err)
		}
		if len(trimEOL(line)) == 0 {
			if start == 0 {
				return errBadResponse
			}
			return nil
		}
	}
}

// readHead reads the backend's response head into rh and builds the client's head in c.out
// (without its final blank line): hop-by-hop headers dropped, Server and Date added when
// missing, the affinity cookie when the client is not pinned. Informational answers (1xx but
// 101) are passed to the client as they come.
func (c *h1Conn) readHead(uc *upConn, rh *respHead) error {
	st := &c.st
	// The deadline covers the head only; forward lifts it before the body when it has to wait.
	// Each attempt (a retry's included) has the whole timeout, as nginx's proxy_read_timeout.
	base := st.attempt
	if c.head.contentLength > 0 {
		base = time.Now() // the body took its time to send
	}
	c.raw = c.raw[:0] // nothing of this answer read yet (forward's retry checks)
	if err := c.awaitAnswer(uc, base); err != nil {
		return err
	}
	for {
		if err := c.readRawHead(uc.r, func() { uc.rd.within(uc.c, base, st.upstreamTimeout(&c.s.h.opts)) }); err != nil {
			return err
		}
		informational, err := c.parseResponseHead(rh)
		if err != nil {
			return err
		}
		if !informational {
			return nil
		}
		rh.informed = true
		if _, err := c.bw.Write(c.out); err != nil {
			return clientError{err}
		}
	}
}

// watchClientAfter: while a backend takes longer than this (up to twice: the timer is coarse)
// to start its answer, the client's connection is watched for its close.
const watchClientAfter = time.Second

// awaitAnswer waits for the first byte of the backend's answer (UpstreamTimeout from base in
// all). When the backend takes more than watchClientAfter, a goroutine watches the client's
// connection meanwhile: a client that closes or resets it ends the wait with a clientError
// (forward then closes the backend connection, so the backend sees the request end), as nginx
// and net/http notice a client that gives up. A client that sends more (a pipelined request) is
// not watched further. Upstream timeouts too short for the watch to matter skip it.
func (c *h1Conn) awaitAnswer(uc *upConn, base time.Time) error {
	timeout := c.st.upstreamTimeout(&c.s.h.opts)
	if uc.r.Buffered() > 0 || timeout <= 2*watchClientAfter {
		uc.rd.within(uc.c, base, timeout)
		return nil
	}
	uc.rd.withinLate(uc.c, base, watchClientAfter, watchClientAfter) // when is not critical
	_, err := uc.r.Peek(1)
	if err == nil {
		return nil // readHead gives the rest of a head that came in part the full time
	}
	deadline := base.Add(timeout)
	if !isTimeout(err) || !time.Now().Before(deadline) {
		return err
	}
	uc.rd.exactly(uc.c, deadline)
	if c.br.Buffered() > 0 { // a pipelined request is there: no telling
		_, err = uc.r.Peek(1)
		return err
	}
	// The watch reads into c.br, which nothing else uses until it ends: a pipelined request
	// that comes meanwhile stays there for later, and a TLS client's close_notify is read as
	// the end it is.
	c.rd.none(c.c)
	var closed atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := c.br.Peek(1)
		if err != nil && !isTimeout(err) {
			closed.Store(true)
			_ = uc.c.SetReadDeadline(time.Unix(1, 0)) // wakes the wait below
		}
	}()
	_, err = uc.r.Peek(1)
	c.rd.exactly(c.c, time.Unix(1, 0)) // wakes the watch, if it still waits
	<-done
	if closed.Load() {
		return clientError{io.ErrUnexpectedEOF}
	}
	return err
}

// parseResponseHead parses the response head in c.raw into rh and builds the client's head in
// c.out (without its final blank line, unless the answer is informational: 1xx but 101, sent on
// as is).
func (c *h1Conn) parseResponseHead(rh *respHead) (informational bool, err error) {
	st := &c.st
	// Status line: HTTP/1.x SP 3DIGIT [SP reason].
	next := bytes.IndexByte(c.raw, '\n') + 1
	sl := trimEOL(c.raw[:next])
	if len(sl) < 12 || string(sl[:7]) != "HTTP/1." || (sl[7] != '0' && sl[7] != '1') || sl[8] != ' ' ||
		(len(sl) > 12 && sl[12] != ' ') || !validValue(sl) {
		return false, errBadResponse
	}
	code := 0
	for _, d := range sl[9:12] {
		if d < '0' || d > '9' {
			return false, errBadResponse
		}
		code = code*10 + int(d-'0')
	}
	if code < 100 {
		return false, errBadResponse
	}
	http10 := sl[7] == '0'
	slLen := len(sl) // c.raw[:slLen] is the status line without its end

	// Header lines, up to the blank line that ends c.raw.
	c.hl = c.hl[:0]
	var conn tokenList
	for {
		start := next
		next += bytes.IndexByte(c.raw[next:], '\n') + 1
		l := trimEOL(c.raw[start:next])
		if len(l) == 0 {
			break
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return false, errBadResponse
		}
		for _, ch := range l[:colon] {
			if !isToken[ch] {
				return false, errBadResponse
			}
		}
		vs, ve := start+colon+1, start+len(l)
		for vs < ve && (c.raw[vs] == ' ' || c.raw[vs] == '\t') {
			vs++
		}
		for ve > vs && (c.raw[ve-1] == ' ' || c.raw[ve-1] == '\t') {
			ve--
		}
		if !validValue(c.raw[vs:ve]) {
			return false, errBadResponse
		}
		k := headerKind(l[:colon])
		if k == hConnection && !conn.add(c.raw[vs:ve]) {
			return false, errBadResponse
		}
		c.hl = append(c.hl, headerLine{start: int32(start), nameEnd: int32(start + colon), vs: int32(vs), ve: int32(ve), kind: k})
	}
	if code == http.StatusSwitchingProtocols {
		return false, errUnexpected101
	}

	// What to keep, and how the body ends.
	*rh = respHead{status: code, length: -1}
	rh.upClose = conn.close || (http10 && !conn.keepAlive) || closeAfterHead(c.head.method)
	chunked, hasServer, hasDate := false, false, false
	for i := range c.hl {
		l := &c.hl[i]
		v := c.raw[l.vs:l.ve]
		switch l.kind {
		case hConnection, hKeepAlive, hProxyConnection, hUpgrade, hTE, hProxyAuthenticate, hProxyAuthorization:
			l.drop = true
		case hTransferEncoding:
			if chunked || http10 || !asciiEqualFold(v, "chunked") {
				return false, errBadResponse
			}
			chunked, l.drop = true, true
		case hContentLength:
			n, ok := parseDecimal(v)
			if !ok || (rh.length >= 0 && n != rh.length) {
				return false, errBadResponse
			}
			l.drop = rh.length >= 0 // a repeated, equal value is sent once
			rh.length = n
		case hServer:
			hasServer = true
		case hDate:
			hasDate = true
		}
		if !l.drop && conn.n > 0 && !keptDespiteConnection(l.kind) && conn.has(c.raw[l.start:l.nameEnd]) {
			l.drop = true
		}
	}
	switch {
	case noBodyByRule(c.head.method, code):
		rh.body = bodyNone
	case chunked:
		rh.body = bodyChunked
	case rh.length >= 0:
		rh.body = bodyLength
	default:
		rh.body = bodyUntilClose
	}
	if chunked && rh.length >= 0 {
		// Transfer-Encoding overrides Content-Length, and the connection is not trusted with
		// another exchange (RFC 9112 §6.3: the framing is in doubt).
		for i := range c.hl {
			if c.hl[i].kind == hContentLength {
				c.hl[i].drop = true
			}
		}
		rh.upClose = true
	}

	var ops *route.HeaderOps
	var hsts string
	if code >= 200 {
		ops, hsts = responseOps(st, st.tls)
	}
	o := append(c.out[:0], "HTTP/1.1 "...)
	o = append(o, c.raw[9:slLen]...)
	o = append(o, "\r\n"...)
	var set [][2]string
	if st.acc != nil && code >= 200 {
		set = st.acc.respSet
	}
	for _, l := range c.hl {
		if !l.drop && (ops == nil && hsts == "" || !dropsResponseLine(ops, hsts, c.raw[l.start:l.nameEnd])) &&
			(set == nil || !namedIn(set, c.raw[l.start:l.nameEnd])) {
			o = append(o, c.raw[l.start:l.nameEnd]...)
			o = append(o, ": "...)
			o = append(o, c.raw[l.vs:l.ve]...)
			o = append(o, "\r\n"...)
		}
	}
	if code < 200 {
		c.out = append(o, "\r\n"...)
		return true, nil
	}
	if chunked {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if !hasServer {
		o = append(o, "Server: portico\r\n"...)
	}
	if !hasDate {
		o = append(o, "Date: "...)
		o = appendDate(o, time.Now())
		o = append(o, "\r\n"...)
	}
	if st.backend.Affinity && !st.pinned {
		o = append(o, "Set-Cookie: "...)
		o = affinityCookie(st).AppendSetCookie(o, st.endpoint.Key, time.Now())
		o = append(o, "\r\n"...)
	}
	if ops != nil || hsts != "" {
		o = appendResponsePolicy(o, ops, hsts)
	}
	for _, kv := range set {
		o = append(o, kv[0]...)
		o = append(o, ": "...)
		o = append(o, kv[1]...)
		o = append(o, "\r\n"...)
	}
	if st.acc != nil && st.acc.auth != nil { // external auth's cookies
		for _, kv := range st.acc.auth.responseFor(code) {
			o = append(o, kv[0]...)
			o = append(o, ": "...)
			o = append(o, kv[1]...)
			o = append(o, "\r\n"...)
		}
	}
	c.out = o
	return false, nil
}
