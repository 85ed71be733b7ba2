package proxy

import (
	"bufio"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2/hpack"
)

// forwardH2 sends the request to st.endpoint, an HTTP/2 backend (h2c, gRPC), and streams the
// answer back (see h2up.go). The request head is the one requestHead builds for every backend;
// the body goes on a goroutine of its own while the answer comes (full duplex), which then
// watches the client: its close (an HTTP/1.1 client) or its RST_STREAM (an HTTP/2 client)
// cancels the backend's stream. A stream the backend refused unprocessed (REFUSED_STREAM, past
// its GOAWAY) is sent again on a new connection when the request can be repeated; a failed
// connection goes to Handler.retry as on the HTTP/1.1 path.
func (c *h1Conn) forwardH2() {
	h, hd, st := c.s.h, &c.head, &c.st
	hasBody := hd.contentLength > 0 || hd.chunked
	replay := !hasBody && idempotent(string(hd.method))
	c.requestHead()
	if mb := st.mirrors(hasBody); mb != nil {
		h.mirror(mb, c.out)
	}
	if hd.expect && hasBody {
		// The proxy answers Expect, as on the HTTP/1.1 path (send); a failure shows in the body.
		if _, err := c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n"); err == nil {
			_ = c.bw.Flush()
		}
	}
	var (
		us      *h2UpStream
		sendErr error
		watch   chan struct{}
		sent    chan error
	)
	for fresh := false; ; {
		var err error
		us, err = c.s.up.h2.open(st.endpoint.Addr, fresh, c.out, hd.te, !hasBody, st.dialTimeout(&h.opts), st.backend.TLS)
		if err != nil {
			if c.retry(err, replay) {
				continue
			}
			c.upstreamFailed(err)
			return
		}
		e := st.endpoint
		e.Stats.InFlight.Add(1)
		c.rd.none(c.c) // a retry's: the last sender's wake-up is over
		watch, sent = make(chan struct{}), make(chan error, 1)
		go func() { sent <- c.sendH2Body(us, hasBody, watch) }()
		err = us.awaitHead(st.start, st.upstreamTimeout(&h.opts))
		e.Stats.InFlight.Add(-1)
		if err == nil {
			break
		}
		us.close()
		sendErr = c.stopSender(watch, sent)
		if code, msg := bodyFailure(sendErr); code != 0 {
			c.closeAfter = true
			c.answer(code, msg)
			return
		}
		if isClientError(sendErr) {
			c.clientGone()
			return
		}
		if (errors.Is(err, errUpstreamRefused) || errors.Is(err, errUpstreamClosed)) && replay && !fresh {
			// Never processed (refused, past a GOAWAY), or a pooled connection that died: once
			// more on a new connection, as the HTTP/1.1 path retries a stale one.
			fresh = true
			continue
		}
		if hasBody {
			c.closeAfter = true // the body may not have been read whole
		}
		c.upstreamFailed(err)
		return
	}

	// The head, as an HTTP/1.1 head through the same checks as a backend's (parseResponseHead):
	// a body without content-length is sent on chunked, with the trailers.
	uc := us.uc
	uc.mu.Lock()
	raw := append(c.raw[:0], "HTTP/1.1 "...)
	raw = strconv.AppendInt(raw, int64(us.status), 10)
	raw = append(raw, ' ')
	raw = append(raw, http.StatusText(us.status)...)
	raw = append(raw, "\r\n"...)
	hasLength := false
	if us.end && len(us.body) == 0 && len(us.trailers) == 0 {
		// A gRPC "trailers-only" answer (an error): its status fields are trailers, which an
		// HTTP/1.1 answer can carry only after its (empty) body.
		head := us.head[:0:0]
		for _, f := range us.head {
			if strings.HasPrefix(f.Name, "grpc-") {
				us.trailers = append(us.trailers, f)
			} else {
				head = append(head, f)
			}
		}
		us.head = head
	}
	for _, f := range us.head {
		switch f.Name {
		case "transfer-encoding", "connection", "keep-alive", "proxy-connection", "upgrade":
			continue
		case "content-length":
			hasLength = true
		}
		raw = append(append(append(append(raw, f.Name...), ": "...), f.Value...), "\r\n"...)
	}
	uc.mu.Unlock()
	if !hasLength {
		raw = append(raw, "transfer-encoding: chunked\r\n"...)
	}
	c.raw = append(raw, "\r\n"...)
	var rh respHead
	_, err := c.parseResponseHead(&rh)
	if err != nil {
		us.close()
		c.stopSender(watch, sent)
		c.closeAfter = c.closeAfter || hasBody
		c.upstreamFailed(err)
		return
	}
	c.finishHead(&rh)
	_, werr := c.bw.Write(c.out)
	if werr != nil {
		err = clientError{werr}
	} else {
		err = c.relayH2Body(us, &rh)
	}
	us.close()
	sendErr = c.stopSender(watch, sent)
	c.bodyRead = sendErr == nil
	if sendErr != nil {
		c.closeAfter = true // the request's body was not read whole
	}
	c.endAnswer(err)
}

// relayH2Body writes the backend's body to the client as rh frames it (its length, or chunked
// with the trailers at the end), flushing whenever nothing more is buffered.
func (c *h1Conn) relayH2Body(us *h2UpStream, rh *respHead) error {
	var written int64
	buf := c.raw[:0]
	uc := us.uc
	for {
		// Nothing more there yet: what is written goes out, the head first of all (a streaming
		// call's headers and gRPC metadata before its first message, however late that comes;
		// found by review: they waited for the first DATA).
		uc.mu.Lock()
		more := len(us.body) > 0 || us.end
		uc.mu.Unlock()
		if !more {
			if err := c.bw.Flush(); err != nil {
				return clientError{err}
			}
		}
		var ended bool
		var err error
		buf, ended, err = us.next(buf[:0])
		if err != nil {
			return err
		}
		if len(buf) > 0 && rh.body != bodyNone {
			if rh.body == bodyChunked {
				c.out = strconv.AppendInt(c.out[:0], int64(len(buf)), 16)
				c.out = append(c.out, "\r\n"...)
				_, _ = c.bw.Write(c.out)
			}
			written += int64(len(buf))
			if rh.body == bodyLength && written > rh.length {
				return errBadResponse
			}
			if _, err := c.bw.Write(buf); err != nil {
				return clientError{err}
			}
			if rh.body == bodyChunked {
				_, _ = c.bw.WriteString("\r\n")
			}
		}
		if ended {
			break
		}
	}
	c.raw = buf[:0]
	c.st.bytes = written
	switch rh.body {
	case bodyLength:
		if written != rh.length {
			return errBadResponse
		}
	case bodyChunked:
		o := append(c.out[:0], "0\r\n"...)
		us.uc.mu.Lock()
		for _, f := range us.trailers {
			if validTrailer(f) {
				o = append(append(append(append(o, f.Name...), ": "...), f.Value...), "\r\n"...)
			}
		}
		us.uc.mu.Unlock()
		c.out = append(o, "\r\n"...)
		if _, err := c.bw.Write(c.out); err != nil {
			return clientError{err}
		}
	}
	return nil
}

// validTrailer reports whether a trailer field may be sent on: not one that frames, routes or
// is connection-specific.
func validTrailer(f hpack.HeaderField) bool {
	switch headerKind([]byte(f.Name)) {
	case hOther, hServer, hDate:
		return true
	}
	return false
}

// sendH2Body sends the request body to us, then watches the client until watch is closed: the
// client's close or reset cancels the stream. It returns the failure of the body (a client
// error, or the stream's).
func (c *h1Conn) sendH2Body(us *h2UpStream, hasBody bool, watch chan struct{}) error {
	hd := &c.head
	if hasBody {
		progress := func() {
			c.bodyProgress()
			c.rewake(watch)
		}
		var err error
		if hd.contentLength > 0 {
			err = c.sendH2Length(us, hd.contentLength, progress)
		} else {
			bw := writerPool.Get().(*bufio.Writer)
			bw.Reset(&h2BodyWriter{us: us})
			var scratch []byte
			_, err = relayChunked(bw, c.br, &scratch, false, c.st.table.Limits.MaxRequestBodyBytes, progress)
			if err == nil {
				err = bw.Flush()
			}
			bw.Reset(nil)
			writerPool.Put(bw)
		}
		if err != nil {
			us.uc.mu.Lock()
			us.failLocked(err, true)
			us.uc.flushLocked()
			us.uc.mu.Unlock()
			return err
		}
	}
	if hook := testHookSenderWatch.Load(); hook != nil {
		(*hook)(watch)
	}
	// The watch has no deadline of its own (the body timeout no longer applies: a gRPC stream
	// may answer for as long as it likes); stopSender's wakes it.
	c.rd.none(c.c)
	c.rewake(watch)
	if _, err := c.br.Peek(1); err != nil && !isTimeout(err) {
		select {
		case <-watch: // the exchange ended
		default:
			us.uc.mu.Lock()
			us.failLocked(clientError{err}, true) // the client went away
			us.uc.flushLocked()
			us.uc.mu.Unlock()
		}
	}
	return nil
}

// sendH2Length sends a body of n bytes; progress sets the read deadline before each wait.
func (c *h1Conn) sendH2Length(us *h2UpStream, n int64, progress func()) error {
	bp := pipeBuffers.Get().(*[]byte)
	defer pipeBuffers.Put(bp)
	buf := *bp
	for n > 0 {
		if c.br.Buffered() == 0 {
			progress()
		}
		k, err := c.br.Read(buf[:min(int64(len(buf)), n)])
		n -= int64(k)
		if k > 0 {
			if werr := us.writeData(buf[:k], n == 0); werr != nil {
				return werr
			}
		}
		if err != nil && n > 0 {
			return clientError{unexpectedEOF(err)}
		}
	}
	return nil
}

// stopSender ends the body's goroutine (its reads of the client wake at once; its stream was
// closed first, which wakes its waits for a window) and returns what it returned. The wake-up
// is a read deadline in the past, set after watch is closed: a deadline the sender sets (its
// body's progress, the watch's none) may land after it, and the sender then sets it again
// (rewake). Before, the watch's none could erase it: the answer, held in c.bw until the
// sender ended, never reached the client (a gRPC call hung, 1 in ~2,000 in TestGRPC).
func (c *h1Conn) stopSender(watch chan struct{}, sent chan error) error {
	close(watch)
	_ = c.c.SetReadDeadline(time.Unix(1, 0))
	err := <-sent
	c.rd = readDeadline{at: time.Unix(1, 0)}
	return err
}

// testHookSenderWatch, set by tests, runs when the body's sender starts watching the client.
var testHookSenderWatch atomic.Pointer[func(watch chan struct{})]

// rewake sets stopSender's wake-up again once watch is closed; the body's sender calls it after
// each read deadline it sets.
func (c *h1Conn) rewake(watch chan struct{}) {
	select {
	case <-watch:
		c.rd.exactly(c.c, time.Unix(1, 0))
	default:
	}
}

// h2BodyWriter takes a chunked request body (as relayChunked writes it) and sends its data and
// trailers on the stream.
type h2BodyWriter struct {
	us *h2UpStream
	cs chunkParse
}

func (w *h2BodyWriter) Write(p []byte) (int, error) {
	n, err := w.cs.feed(p, func(d []byte) error { return w.us.writeData(d, false) }, w.us.writeTrailers)
	if err != nil {
		return n, err
	}
	return len(p), nil
}
