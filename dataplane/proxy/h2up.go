package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"portico.dev/portico/dataplane/route"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 to backends (h2c: Service ports whose appProtocol is h2c or grpc). Requests to such a
// backend go through the core like any other (h1Conn.forwardH2): the head the core built for an
// HTTP/1.1 backend (requestHead: hop-by-hop fields dropped, X-Forwarded-*, X-Request-Id) is sent
// as HEADERS on a stream of a pooled connection, the body as DATA while the answer comes (full
// duplex, for gRPC's streaming calls), and the answer is written to the client as an HTTP/1.1
// answer (chunked, with its trailers), which an HTTP/2 client's stream turns back into frames.
// A connection carries as many streams at a time as the backend's SETTINGS allow; it is read by
// a goroutine of its own and written by a frameWriter, as a client connection is.

// h2UpIdleTimeout closes a connection without a stream this long (a variable for tests).
var h2UpIdleTimeout = upstreamIdleTimeout

// h2UpMaxStreams bounds the streams of one backend connection before the backend's SETTINGS
// say otherwise (and after, when they allow more).
const h2UpMaxStreams = 100

// h2UpConnWindow is a backend connection's receive window: room for every stream's window, so
// that the clients sharing the connection never wait on each other. With 1 MiB (the client
// side's), four slow clients' answers held it all and stalled every other client's answers
// on the connection until they timed out (found by review). Each stream's own window (checked
// as its data comes) bounds what a slow client holds: h2StreamWindow.
const h2UpConnWindow = h2UpMaxStreams * h2StreamWindow

var (
	errUpstreamRefused = errors.New("upstream refused the stream")
	errUpstreamClosed  = errors.New("upstream connection closed")
)

// h2Upstreams holds the HTTP/2 connections to backends, per endpoint address.
type h2Upstreams struct {
	mu     sync.Mutex
	conns  map[string][]*h2UpConn
	dialer *net.Dialer
}

// h2UpConn is one HTTP/2 connection to a backend.
type h2UpConn struct {
	frameWriter
	u     *h2Upstreams
	addr  string // the pool's key: the endpoint's address, and the TLS settings' key if any
	fr    *http2.Framer
	enc   *hpack.Encoder
	hbuf  bytes.Buffer
	rdead readDeadline

	// Guarded by mu.
	nextID           uint32
	streams          map[uint32]*h2UpStream
	active           int // streams open, or reserved by open
	maxStreams       int
	goneAway, broken bool
}

// h2UpStream is one exchange with a backend over HTTP/2.
type h2UpStream struct {
	uc   *h2UpConn
	id   uint32
	cond sync.Cond
	send streamSend
	// Guarded by uc.mu.
	status   int
	head     []hpack.HeaderField // the final response's fields
	headDone bool
	body     []byte
	end      bool // END_STREAM came
	trailers []hpack.HeaderField
	err      error
	sent     bool // the request ended (END_STREAM went out)
	dead     bool // reset (either way) or the connection failed: nothing more is sent
	recv     recvWindow
	timedOut bool
}

// open returns a new stream to addr, on a pooled connection with room or a new one (always a
// new one when fresh), with the request head (the core's HTTP/1.1 head in head) sent as
// HEADERS, END_STREAM set when the request has no body. te: the client takes trailers.
func (u *h2Upstreams) open(addr string, fresh bool, head []byte, te, end bool, dialTimeout time.Duration, ut *route.UpstreamTLS) (*h2UpStream, error) {
	key := addr
	if ut != nil {
		key = addr + "\x00" + ut.Key
	}
	for tries := 0; ; tries++ {
		st, err := u.openOn(addr, key, fresh, head, te, end, dialTimeout, ut)
		if err == errUpstreamRefused && tries < 2 {
			// The connection whose slot was reserved went away (a GOAWAY, gRPC's
			// MaxConnectionAge; the idle timeout) before the head was sent: nothing was, so
			// another connection takes it, not the client's retry budget (found by review:
			// a 502, and the endpoint counted as failed).
			continue
		}
		return st, err
	}
}

// testHookH2UpReserved, set by tests, runs when a stream's slot on a connection is reserved.
var testHookH2UpReserved atomic.Pointer[func(*h2UpConn)]

// openOn is one try of open.
func (u *h2Upstreams) openOn(addr, key string, fresh bool, head []byte, te, end bool, dialTimeout time.Duration, ut *route.UpstreamTLS) (*h2UpStream, error) {
	var uc *h2UpConn
	u.mu.Lock()
	if !fresh {
		for _, c := range u.conns[key] {
			c.mu.Lock()
			ok := !c.broken && !c.goneAway && c.active < c.maxStreams && c.nextID < 1<<31-2
			if ok {
				if c.active == 0 && len(c.streams) == 0 {
					c.rdead.none(c.c) // the idle timeout no longer applies
				}
				c.active++
			}
			c.mu.Unlock()
			if ok {
				uc = c
				break
			}
		}
	}
	u.mu.Unlock()
	if uc == nil {
		var err error
		if uc, err = u.dial(addr, key, dialTimeout, ut); err != nil {
			return nil, err
		}
	}
	if hook := testHookH2UpReserved.Load(); hook != nil {
		(*hook)(uc)
	}
	return uc.openStream(head, te, end)
}

// dial connects to addr and starts the connection (its first stream reserved).
func (u *h2Upstreams) dial(addr, key string, timeout time.Duration, ut *route.UpstreamTLS) (*h2UpConn, error) {
	c, err := dialUpstream(u.dialer, addr, timeout, ut)
	if err != nil {
		return nil, err
	}
	uc := &h2UpConn{u: u, addr: key, nextID: 1, streams: map[uint32]*h2UpStream{}, active: 1,
		maxStreams: h2UpMaxStreams}
	uc.recv.window = h2UpConnWindow
	uc.enc = hpack.NewEncoder(&uc.hbuf)
	uc.fr = http2.NewFramer(nil, bufio.NewReaderSize(c, 16<<10))
	uc.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	uc.fr.MaxHeaderListSize = maxResponseHead
	uc.fr.SetMaxReadFrameSize(h2MaxFrame)
	uc.fr.SetReuseFrames()
	uc.start(c, uc.failStreamsLocked, func() bool { return len(uc.streams) > 0 || uc.active > 0 })
	uc.mu.Lock()
	uc.out = append(uc.out, http2.ClientPreface...)
	uc.out = appendSettings(uc.out,
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxResponseHead})
	uc.out = appendWindowUpdate(uc.out, 0, h2UpConnWindow-65535)
	uc.flushLocked()
	uc.mu.Unlock()
	u.mu.Lock()
	u.conns[key] = append(u.conns[key], uc)
	u.mu.Unlock()
	go uc.read()
	return uc, nil
}

// openStream sends the request head as HEADERS on a new stream (its slot reserved).
func (uc *h2UpConn) openStream(head []byte, te, end bool) (*h2UpStream, error) {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if uc.broken || uc.goneAway || uc.nextID >= 1<<31-2 {
		uc.goneAway = uc.goneAway || uc.nextID >= 1<<31-2 // stream ids used up: a new connection
		uc.active--
		return nil, errUpstreamRefused
	}
	st := &h2UpStream{uc: uc, id: uc.nextID, recv: recvWindow{window: h2StreamWindow}, sent: end}
	st.cond.L = &uc.mu
	st.send.init(&st.cond, uc.initialWindow)
	uc.nextID += 2
	uc.hbuf.Reset()
	requestFields(uc.enc, head, te)
	uc.out = appendHeaderFrames(uc.out, uc.hbuf.Bytes(), st.id, end, uc.maxFrame)
	uc.streams[st.id] = st
	uc.flushLocked()
	return st, nil
}

// requestFields encodes the core's HTTP/1.1 request head as HTTP/2 fields: the request line and
// Host as pseudo-fields, names in lower case, connection-specific fields left out (the core
// dropped the hop-by-hop ones already; Transfer-Encoding frames an HTTP/1.1 body only).
func requestFields(enc *hpack.Encoder, head []byte, te bool) {
	eol := bytes.IndexByte(head, '\n')
	line := trimEOL(head[:eol])
	sp1 := bytes.IndexByte(line, ' ')
	sp2 := bytes.LastIndexByte(line, ' ')
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: string(line[:sp1])})
	_ = enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
	rest := head[eol+1:]
	for l := rest; len(l) > 2; {
		e := bytes.IndexByte(l, '\n')
		if name, value := headerField(l[:e]); headerKind(name) == hHost {
			_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: string(value)})
			break
		}
		l = l[e+1:]
	}
	_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: string(line[sp1+1 : sp2])})
	for len(rest) > 2 {
		e := bytes.IndexByte(rest, '\n')
		name, value := headerField(rest[:e])
		rest = rest[e+1:]
		switch headerKind(name) {
		case hHost, hConnection, hKeepAlive, hProxyConnection, hTransferEncoding, hUpgrade, hTE:
			continue
		}
		_ = enc.WriteField(hpack.HeaderField{Name: lowerName(name), Value: string(value)})
	}
	if te {
		_ = enc.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
	}
}

// headerField splits a header line of the core's head (as the client sent it, validated by
// parseRequestHead: "Name:value", optional whitespace around the value) into name and value.
func headerField(line []byte) (name, value []byte) {
	line = trimEOL(line)
	colon := bytes.IndexByte(line, ':')
	if colon < 0 {
		return line, nil
	}
	return line[:colon], trimOWS(line[colon+1:])
}

// appendHeaderFrames appends a header block as a HEADERS frame and the CONTINUATION frames the
// peer's frame size requires.
func appendHeaderFrames(b, block []byte, id uint32, end bool, maxFrame int) []byte {
	typ, flags := http2.FrameHeaders, http2.Flags(0)
	if end {
		flags = http2.FlagHeadersEndStream
	}
	for {
		n := min(len(block), maxFrame)
		fl := flags
		if n == len(block) {
			fl |= http2.FlagHeadersEndHeaders
		}
		b = appendFrameHeader(b, n, typ, fl, id)
		b = append(b, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return b
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// read reads the backend's frames until the connection ends.
func (uc *h2UpConn) read() {
	defer uc.shut()
	for {
		// The deadline is set under the lock, as open lifts it when a stream is reserved: a
		// connection idle for a while must not time out under a new exchange.
		uc.mu.Lock()
		if uc.goneAway && len(uc.streams) == 0 && uc.active == 0 {
			// Sent away with its last stream over: close's wake-up (a deadline in the past)
			// may have come before this, and would be replaced below.
			uc.mu.Unlock()
			return
		}
		if len(uc.streams) == 0 && uc.active == 0 {
			uc.rdead.within(uc.c, time.Now(), h2UpIdleTimeout)
		} else {
			uc.rdead.none(uc.c)
		}
		uc.mu.Unlock()
		f, err := uc.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				uc.mu.Lock()
				if st := uc.streams[se.StreamID]; st != nil {
					st.failLocked(fmt.Errorf("upstream stream: %w", err), true)
				}
				uc.flushLocked()
				uc.mu.Unlock()
				continue
			}
			return
		}
		if !uc.process(f) {
			return
		}
		uc.mu.Lock()
		flooded := len(uc.out) > h2MaxQueued
		uc.mu.Unlock()
		if flooded {
			// A backend that does not read while it sends PINGs or SETTINGS would have their
			// acknowledgements pile up without bound (found by review: 75 MB for 4M PINGs):
			// the connection ends, its streams fail, as a client's would.
			return
		}
	}
}

func (uc *h2UpConn) process(f http2.Frame) bool {
	uc.mu.Lock()
	defer uc.mu.Unlock()
	defer uc.flushLocked()
	switch f := f.(type) {
	case *http2.MetaHeadersFrame:
		st := uc.streams[f.StreamID]
		if st == nil || st.end || st.dead {
			return true // a stream ended already (its answer stands) or failed
		}
		if f.Truncated { // a field list past maxResponseHead: refused, not passed on in part
			st.failLocked(errBadResponse, true)
			return true
		}
		if !st.headDone {
			code, err := strconv.Atoi(f.PseudoValue("status"))
			if err != nil || code < 100 || code > 999 || (code < 200 && f.StreamEnded()) {
				st.failLocked(errBadResponse, true)
				return true
			}
			if code < 200 {
				return true // informational answers are not passed on from HTTP/2 backends
			}
			st.status, st.head, st.headDone = code, append([]hpack.HeaderField(nil), f.RegularFields()...), true
		} else if !f.StreamEnded() {
			// Trailers that do not end the stream: a malformed answer (RFC 9113 §8.1), cut
			// rather than carried on with what follows.
			st.failLocked(errBadResponse, true)
			return true
		} else {
			st.trailers = append([]hpack.HeaderField(nil), f.RegularFields()...)
		}
		if f.StreamEnded() {
			st.end = true
		}
		st.cond.Broadcast()
	case *http2.DataFrame:
		n := int32(f.Length)
		uc.recv.window -= n
		st := uc.streams[f.StreamID]
		if st == nil || st.end || st.dead || uc.recv.window < 0 {
			uc.consumedLocked(nil, n)
			return uc.recv.window >= 0
		}
		st.recv.window -= n
		switch {
		case !st.headDone: // DATA before the answer's HEADERS: malformed (RFC 9113 §8.1)
			st.failLocked(errBadResponse, true)
			uc.consumedLocked(st, n) // the connection's window back
			return true
		case st.recv.window < 0: // past the stream's window: the backend ignores flow control
			st.failLocked(errBadResponse, false)
			uc.out = appendRST(uc.out, st.id, http2.ErrCodeFlowControl)
			uc.consumedLocked(st, n)
			return true
		}
		data := f.Data()
		if pad := n - int32(len(data)); pad > 0 {
			uc.consumedLocked(st, pad)
		}
		st.body = append(st.body, data...)
		if f.StreamEnded() {
			st.end = true
		}
		st.cond.Broadcast()
	case *http2.RSTStreamFrame:
		if st := uc.streams[f.StreamID]; st != nil {
			err := error(http2.StreamError{StreamID: f.StreamID, Code: f.ErrCode})
			if f.ErrCode == http2.ErrCodeRefusedStream {
				err = errUpstreamRefused
			}
			st.failLocked(err, false)
		}
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true
		}
		err := uc.applySettings(f, uc.enc, func(yield func(*streamSend) bool) {
			for _, st := range uc.streams {
				if !yield(&st.send) {
					return
				}
			}
		}, func(s http2.Setting) {
			if s.ID == http2.SettingMaxConcurrentStreams {
				uc.maxStreams = int(min(s.Val, h2UpMaxStreams))
			}
		})
		if err != nil {
			return false // a backend breaking the protocol: its connection ends, its streams fail
		}
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			if int64(uc.sendWindow)+int64(f.Increment) > 1<<31-1 {
				return false
			}
			uc.sendWindow += int32(f.Increment)
			for _, st := range uc.streams {
				if st.send.waiting {
					st.cond.Broadcast()
				}
			}
		} else if st := uc.streams[f.StreamID]; st != nil && !st.send.open(int64(f.Increment)) {
			st.failLocked(errBadResponse, true)
		}
	case *http2.PushPromiseFrame:
		return false // never asked for (SETTINGS_ENABLE_PUSH 0); its header block is not decoded
	case *http2.PingFrame:
		if !f.IsAck() {
			uc.out = appendFrameHeader(uc.out, 8, http2.FramePing, http2.FlagPingAck, 0)
			uc.out = append(uc.out, f.Data[:]...)
		}
	case *http2.GoAwayFrame:
		uc.goneAway = true
		for id, st := range uc.streams {
			if id > f.LastStreamID {
				st.failLocked(errUpstreamRefused, false) // never processed: may go elsewhere
			}
		}
		if len(uc.streams) == 0 {
			return false
		}
	}
	return true
}

// consumedLocked gives back n bytes of receive window (see frameWriter.giveBack).
func (uc *h2UpConn) consumedLocked(st *h2UpStream, n int32) {
	if st == nil {
		uc.giveBack(nil, 0, n, false)
		return
	}
	uc.giveBack(&st.recv, st.id, n, !st.end && !st.dead)
}

// failStreamsLocked fails every stream (a write failed).
func (uc *h2UpConn) failStreamsLocked() {
	uc.broken = true
	for _, st := range uc.streams {
		st.failLocked(errUpstreamClosed, false)
	}
}

// shut ends the connection: it leaves the pool, its streams fail.
func (uc *h2UpConn) shut() {
	u := uc.u
	u.mu.Lock()
	cs := u.conns[uc.addr]
	for i, c := range cs {
		if c == uc {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(u.conns, uc.addr)
	} else {
		u.conns[uc.addr] = cs
	}
	u.mu.Unlock()
	uc.mu.Lock()
	uc.broken, uc.closed = true, true
	for _, st := range uc.streams {
		st.failLocked(errUpstreamClosed, false)
	}
	uc.space.Broadcast()
	uc.mu.Unlock()
	uc.stop()
	_ = uc.c.Close()
}

// closeAll closes every connection (at shutdown).
func (u *h2Upstreams) closeAll() {
	u.mu.Lock()
	var all []*h2UpConn
	for _, cs := range u.conns {
		all = append(all, cs...)
	}
	u.mu.Unlock()
	for _, uc := range all {
		uc.mu.Lock()
		uc.goneAway = true // the reader's next look ends it, should it replace the wake-up
		uc.mu.Unlock()
		_ = uc.c.SetReadDeadline(time.Unix(1, 0))
	}
}

// failLocked ends the stream with err (RST_STREAM CANCEL sent when send).
func (st *h2UpStream) failLocked(err error, send bool) {
	uc := st.uc
	if st.err == nil {
		st.err = err
	}
	if send && !st.dead && !uc.broken {
		uc.out = appendRST(uc.out, st.id, http2.ErrCodeCancel)
	}
	st.dead = true
	st.cond.Broadcast()
	uc.space.Broadcast() // a send waiting for room in the output ends too
}

// writeData sends request body data (END_STREAM when end).
func (st *h2UpStream) writeData(p []byte, end bool) error {
	uc := st.uc
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	ended, err := uc.sendData(&st.send, st.id, p, end, &st.dead)
	if ended {
		st.sent = true
	}
	uc.flushLocked()
	if err != nil && st.err != nil {
		err = st.err
	}
	return err
}

// writeTrailers ends the request body with trailer fields.
func (st *h2UpStream) writeTrailers(fields []hpack.HeaderField) error {
	if len(fields) == 0 {
		return st.writeData(nil, true)
	}
	uc := st.uc
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if st.err != nil {
		return st.err
	}
	uc.hbuf.Reset()
	for _, f := range fields {
		_ = uc.enc.WriteField(f)
	}
	uc.out = appendHeaderFrames(uc.out, uc.hbuf.Bytes(), st.id, true, uc.maxFrame)
	st.sent = true
	uc.flushLocked()
	return nil
}

// awaitHead waits for the response head, timeout from start; while the request body is still
// being sent (the backend may read all of it before it answers), the wait goes on.
func (st *h2UpStream) awaitHead(start time.Time, timeout time.Duration) error {
	uc := st.uc
	uc.mu.Lock()
	defer uc.mu.Unlock()
	var timer *time.Timer
	for !st.headDone && st.err == nil {
		if st.timedOut {
			if st.sent {
				break
			}
			st.timedOut = false
			timer.Reset(timeout)
		}
		if timer == nil {
			timer = time.AfterFunc(time.Until(start.Add(timeout)), func() {
				uc.mu.Lock()
				st.timedOut = true
				st.cond.Broadcast()
				uc.mu.Unlock()
			})
			defer timer.Stop()
		}
		st.cond.Wait()
	}
	switch {
	case st.headDone:
		return nil
	case st.err != nil:
		return st.err
	}
	st.failLocked(errUpstreamTimeout, true)
	uc.flushLocked()
	return errUpstreamTimeout
}

// next waits for body data (appended to buf) or the body's end: it returns buf, whether the
// body ended (its trailers then in st.trailers), and whether more is buffered already.
func (st *h2UpStream) next(buf []byte) ([]byte, bool, error) {
	uc := st.uc
	uc.mu.Lock()
	defer uc.mu.Unlock()
	for len(st.body) == 0 && !st.end && st.err == nil {
		st.cond.Wait()
	}
	if len(st.body) > 0 {
		buf = append(buf, st.body...)
		n := int32(len(st.body))
		st.body = st.body[:0]
		uc.consumedLocked(st, n)
		uc.flushLocked()
		return buf, false, nil
	}
	if st.end {
		return buf, true, nil
	}
	return buf, false, st.err
}

// close ends the exchange: a stream not ended both ways is reset (CANCEL), and its slot goes
// back to the connection. It reports whether the exchange ended cleanly.
func (st *h2UpStream) close() {
	uc := st.uc
	uc.mu.Lock()
	defer uc.mu.Unlock()
	if !(st.end && st.sent) && !st.dead {
		st.failLocked(errStreamReset, true)
	}
	if n := len(st.body); n > 0 { // data nobody will read: the connection's window back
		uc.consumedLocked(nil, int32(n))
		st.body = nil
	}
	if uc.streams[st.id] == st {
		delete(uc.streams, st.id)
		uc.active--
	}
	uc.flushLocked()
	if len(uc.streams) == 0 && uc.active == 0 {
		uc.idleLocked()
		// The reader waits with no deadline (it read the stream's end while the stream was
		// open): the idle timeout starts now, and open lifts it again.
		uc.rdead.within(uc.c, time.Now(), h2UpIdleTimeout)
	}
	if uc.goneAway && len(uc.streams) == 0 {
		_ = uc.c.SetReadDeadline(time.Unix(1, 0)) // the reader ends the connection
	}
}

var errUpstreamTimeout = timeoutError{}

// timeoutError is a wait for a backend's answer that ran out of time (a net.Error, so that it
// is answered 504).
type timeoutError struct{}

func (timeoutError) Error() string   { return "upstream timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
