package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"iter"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 server. A connection is served by one goroutine that reads its frames
// (golang.org/x/net/http2's Framer: frame syntax and order; header blocks are decoded and their
// fields checked by readHeaderBlock, h2hpack.go) and keeps the streams' state; each request stream is served by a goroutine of its
// own through the same core as an HTTP/1.1 request: the stream is an HTTP/1.1 exchange on a
// connection of its own (h2Stream is a net.Conn). Its HEADERS become an HTTP/1.1 head that the
// fast path's parser reads, its DATA the body (chunked when it has no content-length), and what
// the core answers (the backend's head as the core rewrote it, the body as the core framed it)
// becomes HEADERS, DATA and trailers again. Every rule of h1core.go (framing, hop-by-hop fields,
// pooling, retries, body limits and timeouts), the routing, the metrics and the access log are
// therefore the HTTP/1.1 path's; a request the fast path hands off (an h2c backend such as a
// gRPC service, a percent-encoded path it does not take) goes to net/http's HTTP/1 server on
// the stream, as a handed-off HTTP/1.1 connection does. See docs/data-plane.md.
//
// Frames to the client are appended to one buffer under the connection's lock and written by
// whichever goroutine finds no write under way (flush combining): answers that end together go
// out in one TLS write.

const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS (nginx's and Go's default); more open
	// streams are refused (REFUSED_STREAM). It also bounds the streams being served: streams a
	// client resets stay counted until their goroutine ends, so resetting streams does not
	// start more work (CVE-2023-44487, rapid reset); streams waiting for a slot are queued, and
	// a queue longer than h2MaxStreams ends the connection (GOAWAY ENHANCE_YOUR_CALM).
	h2MaxStreams = 128
	// h2StreamWindow and h2ConnWindow are the receive windows: what a client may send ahead of
	// the backend reading it, per stream and in all (so at most h2ConnWindow is buffered per
	// connection).
	h2StreamWindow = 256 << 10
	h2ConnWindow   = 1 << 20
	// h2MaxFrame is the largest frame read (SETTINGS_MAX_FRAME_SIZE left at its default).
	h2MaxFrame = 16 << 10
	// h2MaxWriteBuffer: frames waiting to be written past it make DATA writers wait.
	h2MaxWriteBuffer = 256 << 10
	// h2MaxQueued: frames waiting past it (DATA writers stop at h2MaxWriteBuffer, so the rest
	// are answers to the client's control frames it does not read) end the connection.
	h2MaxQueued = 1 << 20
	// h2WriteTimeout bounds a write to the client and a wait for its flow-control window
	// (nginx's send_timeout).
	h2WriteTimeout = 60 * time.Second
	// h2PingAfter: a connection silent this long while streams are open is sent a PING; no
	// answer within h2PingTimeout closes it.
	h2PingAfter   = 30 * time.Second
	h2PingTimeout = 15 * time.Second
	// h2MaxReadPerFrame bounds the bytes one frame read may consume: a header block with its
	// CONTINUATION frames included (readHeaderBlock stops decoding past the header list size,
	// but would read on as long as empty CONTINUATION frames come: the 2024 CONTINUATION flood).
	h2MaxReadPerFrame = 4 << 20
)

var errH2ReadBudget = errors.New("http2: header block too long")

// h2Conn is one HTTP/2 connection.
type h2Conn struct {
	hc   *h1Conn // the connection's own (its goroutine serves the frames)
	rfr  *http2.Framer
	cr   countingReader
	ping bool // a PING of ours awaits its answer
	// bigRead: rfr read a frame past h2SmallFrame (see newReader).
	bigRead bool
	rdead   readDeadline
	// since is when the current wait began, the base of the read deadline: the last frame
	// read, the PING sent, the last stream's end (zero: now, set at the next readDeadline).
	// Waking for bytes that make no whole frame does not move it, so a client that trickles a
	// record byte by byte does not keep an idle connection open past its timeout.
	since time.Time

	frameWriter
	hb         headerBlock  // the client's last header block (the reader's)
	fe         fieldEncoder // answers' header blocks (guarded by mu)
	streams    map[uint32]*h2Stream
	lastStream uint32
	workers    int // streams being served (started, response not ended)
	pending    []*h2Stream
	goingAway  bool
	// waiting: the reader waits for the next frame while streams are open (waitBusy); woken:
	// the last one's end woke it (streamDoneLocked), the connection being idle.
	waiting, woken bool
	// ours: the last streams the proxy ended while the client could still send on them (its
	// RST_STREAM, or its answer before the request's end); frames that crossed are ignored for
	// those, where a frame on another closed stream is an error (RFC 9113 §5.1, endedByUs).
	ours  [16]uint32
	oursN uint8
}

// endedByUsLocked records that the proxy ended stream id while the client may still send on it.
func (cc *h2Conn) endedByUsLocked(id uint32) {
	cc.ours[cc.oursN%uint8(len(cc.ours))] = id
	cc.oursN++
}

// rstLocked resets stream id, which has no h2Stream (refused, malformed), as endedByUsLocked.
func (cc *h2Conn) rstLocked(id uint32, code http2.ErrCode) {
	cc.out = appendRST(cc.out, id, code)
	cc.endedByUsLocked(id)
}

// resetIDLocked resets stream id (a stream error), served or not.
func (cc *h2Conn) resetIDLocked(id uint32, code http2.ErrCode) {
	if st := cc.streams[id]; st != nil {
		st.resetLocked(code, true)
	} else {
		cc.rstLocked(id, code)
	}
}

// endedByUs reports whether stream id is one of the last the proxy ended (see ours): a frame
// on it may have crossed the end.
func (cc *h2Conn) endedByUs(id uint32) bool {
	for _, x := range cc.ours {
		if x == id && id != 0 {
			return true
		}
	}
	return false
}

// countingReader counts the bytes of one frame read.
type countingReader struct {
	r      io.Reader
	n, max int
	// idle, when set, is the socket under r (beneath TLS); nowait: the frame read starts with
	// idle not waiting (see h2Conn.serveFrames), until the first byte is delivered.
	idle   idleReader
	nowait bool
	// typ is the type of the frame being read (its header's fourth byte), once read.
	typ http2.FrameType
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n >= r.max {
		return 0, errH2ReadBudget
	}
	if len(p) > r.max-r.n {
		p = p[:r.max-r.n]
	}
	n, err := r.r.Read(p)
	if r.n <= 3 && r.n+n > 3 {
		r.typ = http2.FrameType(p[3-r.n])
	}
	r.n += n
	if r.nowait && n > 0 {
		// The frame has begun: the rest of it is waited for, as usual.
		r.nowait = false
		r.idle.setNowait(false)
		if err == errWouldBlock { // TLS looked past its data for a close_notify
			err = nil
		}
	}
	return n, err
}

// idleReader is a socket whose reads can be made not to wait (rawConn, on Linux): an idle
// HTTP/2 connection's goroutine then waits for its next frame with a small stack (see
// h2Conn.serveFrames).
type idleReader interface {
	// setNowait makes the reads return errWouldBlock rather than wait.
	setNowait(on bool)
	// waitReadable waits until there is something to read, or the read deadline passes.
	waitReadable() error
}

// errWouldBlock is a read's error when idleReader.setNowait is on and nothing is there. It is
// a temporary net.Error, so that crypto/tls keeps the connection (and whatever part of a
// record it has read) as it does after a read deadline.
var errWouldBlock error = wouldBlock{}

type wouldBlock struct{}

func (wouldBlock) Error() string   { return "read would block" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

// serveH2 serves c as an HTTP/2 connection whose client preface is next in c.br. It reports
// whether the connection was parked (see serveFrames): its goroutine serves it from then on.
func (c *h1Conn) serveH2() (parked bool) {
	c.s.h.metrics.H2Connections.Inc()
	if c.h1Req != nil && c.bw != nil { // frames are written from the frameWriter's buffer
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
	cc := &h2Conn{hc: c}
	// Response headers are sent without HPACK's dynamic table, as nginx and HAProxy send them
	// (static table names, literal values; fieldEncoder): the table would hold every
	// connection's last responses' header names and values, about 1 KB on an idle connection,
	// for the few bytes per response that indexing saves (a Date or Content-Length differs
	// each time anyway). The first header block tells the client so (a table size update to
	// 0), which lets it free its own table.
	cc.recv.window = h2ConnWindow
	cc.start(c.c, func() {
		for _, st := range cc.streams {
			st.cond.Broadcast()
		}
	}, func() bool { return cc.workers > 0 || len(cc.streams) > 0 })
	c.h2.Store(cc)
	defer func() {
		if !parked {
			cc.shut()
		}
	}()

	o := &c.s.opts
	cc.mu.Lock()
	cc.out = appendSettings(cc.out,
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(o.MaxHeaderBytes)})
	cc.out = appendWindowUpdate(cc.out, 0, h2ConnWindow-65535)
	cc.flushLocked()
	cc.mu.Unlock()

	_ = c.c.SetReadDeadline(time.Now().Add(o.ReadHeaderTimeout))
	// Frames are read through c.br on cleartext; a TLS connection buffers a record already, and
	// is read directly (c.br is not taken: an idle connection holds no read buffer of ours).
	var r io.Reader = c.c
	if c.h1Req != nil && c.br != nil {
		r = c.br
	}
	var pre [len(h2Preface)]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil || !isH2Preface(pre[:]) {
		return false
	}
	cc.cr = countingReader{r: r, max: h2MaxReadPerFrame}
	if tc, ok := c.c.(*tls.Conn); ok && r == c.c {
		nc := tc.NetConn()
		if lc, ok := nc.(*loopConn); ok {
			nc = lc.Conn // a loop serves HTTP/1.1 alone: the goroutine reads it
		}
		cc.cr.idle, _ = nc.(idleReader)
	}
	cc.newReader()
	cc.hb.init(uint32(o.MaxHeaderBytes))
	return cc.serveFrames(true)
}

// newReader makes the connection's frame reader (header blocks are decoded by
// readHeaderBlock). The Framer keeps a buffer the size of the largest frame it read, and holds
// no byte of a frame between two reads: a connection that read frames past h2SmallFrame gets a
// new one when it goes idle, so that an idle connection holds no 16 KiB buffer for an upload
// it made once (found by review).
func (cc *h2Conn) newReader() {
	cc.rfr = http2.NewFramer(nil, &cc.cr)
	cc.rfr.SetMaxReadFrameSize(h2MaxFrame)
	cc.rfr.SetReuseFrames()
	cc.bigRead = false
}

// h2SmallFrame: frames up to this size leave the reader's buffer as an idle connection keeps it.
const h2SmallFrame = 1 << 10

// serveFrames reads and processes frames until the connection ends (false), or until it is
// idle (no stream open) with nothing to read (true, on a connection whose socket is an
// idleReader): a new goroutine then waits for its next frame (park) and this one ends. A
// goroutine's stack grows for reading and processing frames (TLS decryption, the header
// block) and shrinks only at a garbage collection, by half and at most once per collection;
// the new goroutine's starts small and stays so while it waits, which is what an idle
// connection costs: 2 KiB of stack, not 4 to 8 (memory per idle HTTP/2 connection, the
// h2idle benchmark row).
func (cc *h2Conn) serveFrames(first bool) (parked bool) {
	for {
		ok, idle := cc.readDeadline(first)
		if !ok {
			return false
		}
		if idle && cc.bigRead {
			cc.newReader() // between frames: the old one holds no byte of the next
		}
		if cc.cr.idle != nil {
			cc.cr.idle.setNowait(true)
			cc.cr.nowait = true
		}
		cc.cr.n = 0
		f, err := cc.rfr.ReadFrame()
		var se http2.StreamError
		if err != nil && cc.cr.typ == http2.FrameHeaders && cc.cr.n >= 9 && errors.As(err, &se) {
			// A HEADERS frame the Framer refused before its block was decoded (padding as
			// long as the frame): the connection's HPACK state is no longer the client's.
			// RFC 9113 §6.2 makes it a connection error; x/net's Framer reports a stream one.
			err = http2.ConnectionError(http2.ErrCodeProtocol)
		}
		var hb *headerBlock
		if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
			hb, err = cc.readHeaderBlock(hf) // the budget (cr.n) counts its CONTINUATION frames
		}
		if err == errWouldBlock { // nothing to read yet
			if idle {
				cc.hb.fields = nil // an idle connection holds no header list
				go cc.park()
				return true
			}
			if err = cc.waitBusy(first); err == nil {
				continue
			}
		}
		if err != nil {
			if !cc.readFailed(err) {
				return false
			}
			continue
		}
		cc.since = time.Time{}
		if f.Header().Length > h2SmallFrame {
			cc.bigRead = true
		}
		if first {
			if _, ok := f.(*http2.SettingsFrame); !ok {
				cc.goAway(http2.ErrCodeProtocol)
				return false
			}
			first = false
		}
		ended := false
		if hb != nil {
			ended = hb.endStream
			if !cc.headers(hb) {
				return false
			}
			if hb.max-hb.remain > h2SmallFrame {
				// The stream's head is built: a large list is not kept until the next block,
				// which an idle connection may wait for long.
				clear(hb.fields)
				hb.fields = nil
			}
		} else {
			if d, ok := f.(*http2.DataFrame); ok {
				ended = d.StreamEnded()
			}
			if !cc.process(f) {
				return false
			}
		}
		if ended && cc.bigRead {
			// A request's last frame: the connection may now wait idle in its next read, with
			// the reader's buffer the size of the largest frame (see newReader).
			cc.newReader()
		}
		cc.mu.Lock()
		flooded := len(cc.out) > h2MaxQueued
		cc.mu.Unlock()
		if flooded {
			// A client that does not read while it sends PINGs, SETTINGS or resets would have
			// their answers pile up (the 2019 ping and settings floods).
			cc.hc.s.h.metrics.H2Calmed.Inc()
			cc.goAway(http2.ErrCodeEnhanceYourCalm)
			return false
		}
	}
}

// waitBusy waits for the next frame (the first, the client's SETTINGS, or one while streams
// are open or a PING of ours is unanswered), or until the last stream's end, which wakes it
// (streamDoneLocked; nil is returned then, and the connection parks next). An error is the
// read deadline's (or the connection's) as a read would have returned it.
func (cc *h2Conn) waitBusy(first bool) error {
	cc.mu.Lock()
	if !first && cc.workers == 0 && len(cc.streams) == 0 && !cc.ping { // the last one ended meanwhile
		cc.mu.Unlock()
		cc.since = time.Time{} // idle from now
		return nil
	}
	cc.waiting = true
	cc.mu.Unlock()
	err := cc.cr.idle.waitReadable()
	cc.mu.Lock()
	cc.waiting = false
	woken := cc.woken
	cc.woken = false
	failed := cc.werr != nil // the writer's wake-up (a write failed) may have come with it
	cc.mu.Unlock()
	if woken {
		if failed {
			return os.ErrDeadlineExceeded // readFailed ends the connection
		}
		cc.rdead = readDeadline{} // the wake-up's deadline is past: readDeadline sets one anew
		cc.since = time.Time{}    // idle from now
		return nil
	}
	return err
}

// park waits, on a goroutine of its own, for an idle connection's next frame (or its idle
// timeout, or Shutdown's wake-up), then serves it (see serveFrames).
func (cc *h2Conn) park() {
	if err := cc.cr.idle.waitReadable(); err != nil {
		cc.cr.n = 0
		if !cc.readFailed(err) {
			cc.end()
			return
		}
	}
	if !cc.serveFrames(false) {
		cc.end()
	}
}

// end ends a parked connection's service, as serveH2 and serve do when it was not parked.
func (cc *h2Conn) end() {
	cc.shut()
	cc.hc.finish(false)
}

// readDeadline sets how long the next frame may take: the header timeout for the first, the
// idle timeout while no stream is open, else until a PING is due (see readFailed). It reports
// false when the connection ends instead: sent away (GOAWAY), with no stream left; idle when
// no stream is open.
func (cc *h2Conn) readDeadline(first bool) (ok, idle bool) {
	o := &cc.hc.s.opts
	if first {
		return true, false
	}
	// The deadline is set under mu: the last stream's end (streamDoneLocked) sets its own
	// after this one, never before it.
	cc.mu.Lock()
	defer cc.mu.Unlock()
	busy := cc.workers > 0 || len(cc.streams) > 0
	if cc.goingAway && !busy {
		return false, false
	}
	if cc.since.IsZero() {
		cc.since = time.Now()
	}
	switch {
	case cc.ping:
		cc.rdead.within(cc.c, cc.since, h2PingTimeout)
	case busy:
		cc.rdead.within(cc.c, cc.since, h2PingAfter)
	default:
		cc.rdead.within(cc.c, cc.since, o.IdleTimeout)
	}
	return true, !busy && !cc.ping
}

// readFailed handles a failed frame read; it reports whether the connection goes on.
func (cc *h2Conn) readFailed(err error) bool {
	var se http2.StreamError
	if errors.As(err, &se) {
		cc.mu.Lock()
		if se.StreamID%2 == 1 && se.StreamID > cc.lastStream {
			cc.lastStream = se.StreamID // the stream was opened, malformed
		}
		cc.resetIDLocked(se.StreamID, se.Code)
		cc.flushLocked()
		cc.mu.Unlock()
		return true
	}
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		cc.goAway(http2.ErrCode(ce))
		return false
	case errors.Is(err, errH2ReadBudget):
		cc.goAway(http2.ErrCodeEnhanceYourCalm)
		return false
	case isTimeout(err) && cc.cr.n == 0:
		cc.mu.Lock()
		busy := cc.workers > 0 || len(cc.streams) > 0
		failed := cc.werr != nil // the writer's wake-up: writing failed, the connection ends
		cc.mu.Unlock()
		if !busy || cc.ping || failed {
			cc.goAway(http2.ErrCodeNo)
			return false
		}
		cc.ping, cc.since = true, time.Time{}
		cc.mu.Lock()
		cc.out = appendFrameHeader(cc.out, 8, http2.FramePing, 0, 0)
		cc.out = append(cc.out, "portico!"...)
		cc.flushLocked()
		cc.mu.Unlock()
		return true
	}
	return false
}

// process handles one frame; it reports whether the connection goes on.
func (cc *h2Conn) process(f http2.Frame) bool {
	switch f := f.(type) {
	case *http2.DataFrame:
		return cc.data(f)
	case *http2.WindowUpdateFrame:
		return cc.windowUpdate(f)
	case *http2.RSTStreamFrame:
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if f.StreamID > cc.lastStream {
			cc.goAwayLocked(http2.ErrCodeProtocol)
			return false
		}
		if st := cc.streams[f.StreamID]; st != nil {
			st.resetLocked(f.ErrCode, false)
			cc.flushLocked() // the connection's window its dropped body gives back (found by review)
		}
		// The client closed it: what it sends on it from now on did not cross the proxy's end.
		for i, x := range cc.ours {
			if x == f.StreamID {
				cc.ours[i] = 0
			}
		}
		return true
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true
		}
		return cc.settings(f)
	case *http2.PingFrame:
		if f.IsAck() {
			cc.ping = false
			return true
		}
		cc.mu.Lock()
		cc.out = appendFrameHeader(cc.out, 8, http2.FramePing, http2.FlagPingAck, 0)
		cc.out = append(cc.out, f.Data[:]...)
		cc.flushLocked()
		cc.mu.Unlock()
		return true
	case *http2.GoAwayFrame:
		cc.mu.Lock()
		cc.goingAway = true
		cc.mu.Unlock()
		return true
	case *http2.PushPromiseFrame:
		cc.goAway(http2.ErrCodeProtocol)
		return false
	case *http2.PriorityFrame:
		if f.StreamDep == f.StreamID { // a stream cannot depend on itself (RFC 9113 §5.3.1)
			cc.mu.Lock()
			cc.resetIDLocked(f.StreamID, http2.ErrCodeProtocol)
			cc.flushLocked()
			cc.mu.Unlock()
		}
		return true // priorities are otherwise ignored
	}
	return true // unknown frame types: ignored
}

// headers opens a stream, or ends one with trailers.
func (cc *h2Conn) headers(f *headerBlock) bool {
	id := f.streamID
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if st := cc.streams[id]; st != nil {
		switch {
		case st.bodyEnd: // half-closed (remote): RFC 9113 §5.1
			st.resetLocked(http2.ErrCodeStreamClosed, true)
		case !f.StreamEnded() || !st.requestTrailers(f):
			st.resetLocked(http2.ErrCodeProtocol, true)
		}
		cc.flushLocked()
		return true
	}
	if id%2 == 0 {
		cc.goAwayLocked(http2.ErrCodeProtocol)
		return false
	}
	if id <= cc.lastStream {
		if cc.endedByUs(id) {
			return true // trailers that crossed the proxy's end of the stream
		}
		// A new stream below the last one (RFC 9113 §5.1.1), or a stream the client had
		// ended or reset (§5.1, closed): net/http's server ends the connection for both.
		cc.goAwayLocked(http2.ErrCodeProtocol)
		return false
	}
	cc.lastStream = id
	switch {
	case cc.goingAway:
		cc.rstLocked(id, http2.ErrCodeRefusedStream)
	case len(cc.streams) >= h2MaxStreams:
		cc.hc.s.h.metrics.H2Refused.Inc()
		cc.rstLocked(id, http2.ErrCodeRefusedStream)
	case f.selfDep: // a stream cannot depend on itself (RFC 9113 §5.3.1)
		cc.rstLocked(id, http2.ErrCodeProtocol)
	case f.truncated:
		cc.answerLocked(id, 431)
	default:
		st := newH2Stream(cc, id)
		if code := st.requestHead(f); code != 0 {
			if code == http2.ErrCodeProtocol && st.status != 0 {
				cc.answerLocked(id, st.status)
			} else {
				cc.rstLocked(id, code)
			}
			break
		}
		st.bodyEnd = f.StreamEnded()
		if cc.streams == nil {
			cc.streams = make(map[uint32]*h2Stream, 1)
		}
		cc.streams[id] = st
		if cc.workers < h2MaxStreams {
			cc.workers++
			startStream(st)
			break
		}
		cc.pending = append(cc.pending, st)
		if len(cc.pending) > h2MaxStreams {
			cc.hc.s.h.metrics.H2Calmed.Inc()
			cc.goAwayLocked(http2.ErrCodeEnhanceYourCalm)
			return false
		}
	}
	cc.flushLocked()
	return true
}

// data takes a DATA frame: its payload goes to its stream's body, within the windows.
func (cc *h2Conn) data(f *http2.DataFrame) bool {
	n := int32(f.Length)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.recv.window -= n
	if cc.recv.window < 0 {
		cc.goAwayLocked(http2.ErrCodeFlowControl)
		return false
	}
	st := cc.streams[f.StreamID]
	if st == nil || st.bodyEnd || st.reset {
		cc.consumedLocked(nil, n) // the connection's window is given back at once
		switch {
		case f.StreamID > cc.lastStream || f.StreamID%2 == 0: // idle
			cc.goAwayLocked(http2.ErrCodeProtocol)
			return false
		case st != nil && st.bodyEnd:
			st.resetLocked(http2.ErrCodeStreamClosed, true)
		case st == nil && !cc.endedByUs(f.StreamID):
			// Closed by the client (its end of stream and the answer's, or its reset): a
			// stream error, as net/http's server answers it (RFC 9113 §5.1).
			cc.out = appendRST(cc.out, f.StreamID, http2.ErrCodeStreamClosed)
		}
		cc.flushLocked()
		return true
	}
	st.recv.window -= n
	if st.recv.window < 0 {
		cc.consumedLocked(nil, n) // this frame is dropped with the stream
		st.resetLocked(http2.ErrCodeFlowControl, true)
		cc.flushLocked()
		return true
	}
	data := f.Data()
	if pad := n - int32(len(data)); pad > 0 {
		cc.consumedLocked(st, pad)
	}
	st.received += int64(len(data))
	if st.length >= 0 && (st.received > st.length || (f.StreamEnded() && st.received != st.length)) {
		cc.consumedLocked(nil, int32(len(data)))    // this frame is dropped with the stream
		st.resetLocked(http2.ErrCodeProtocol, true) // the body disagrees with its content-length
		cc.flushLocked()
		return true
	}
	if st.bodyOff > 0 && len(st.body)+len(data) > cap(st.body) { // compact rather than grow
		st.body = st.body[:copy(st.body, st.body[st.bodyOff:])]
		st.bodyOff = 0
	}
	st.body = append(st.body, data...)
	if f.StreamEnded() {
		st.bodyEnd = true
	}
	cc.flushLocked()
	st.cond.Broadcast()
	return true
}

// windowUpdate opens a send window.
func (cc *h2Conn) windowUpdate(f *http2.WindowUpdateFrame) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	inc := int64(f.Increment)
	if f.StreamID == 0 {
		if int64(cc.sendWindow)+inc > 1<<31-1 {
			cc.goAwayLocked(http2.ErrCodeFlowControl)
			return false
		}
		cc.sendWindow += int32(inc)
		for _, st := range cc.streams {
			if st.send.waiting {
				st.cond.Broadcast()
			}
		}
		return true
	}
	if f.StreamID%2 == 0 || f.StreamID > cc.lastStream { // an idle stream (RFC 9113 §5.1)
		cc.goAwayLocked(http2.ErrCodeProtocol)
		return false
	}
	if st := cc.streams[f.StreamID]; st != nil && !st.send.open(inc) {
		st.resetLocked(http2.ErrCodeFlowControl, true)
		cc.flushLocked()
	}
	return true
}

// settings applies the client's settings and acknowledges them.
func (cc *h2Conn) settings(f *http2.SettingsFrame) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	err := cc.applySettings(f, nil, func(yield func(*streamSend) bool) {
		for _, st := range cc.streams {
			if !yield(&st.send) {
				return
			}
		}
	}, nil)
	if err != nil {
		var ce http2.ConnectionError
		code := http2.ErrCodeProtocol
		if errors.As(err, &ce) {
			code = http2.ErrCode(ce)
		}
		cc.goAwayLocked(code)
		return false
	}
	cc.flushLocked()
	return true
}

// consumedLocked gives back n bytes of receive window, on st (unless nil) and the
// connection.
func (cc *h2Conn) consumedLocked(st *h2Stream, n int32) {
	if st == nil {
		cc.giveBack(nil, 0, n, false)
		return
	}
	cc.giveBack(&st.recv, st.id, n, !st.bodyEnd && !st.reset)
}

// answerLocked answers a stream the proxy refuses before serving it (431 for a header list
// too long, 400 for a malformed request, 405 for CONNECT), with no body.
func (cc *h2Conn) answerLocked(id uint32, status int) {
	cc.endedByUsLocked(id) // the request's body may still come
	cc.fe.begin()
	cc.fe.status(status)
	cc.fe.fieldString("server", "portico")
	cc.out = cc.appendHeaderBlock(cc.out, id, true)
}

// appendHeaderBlock appends the header block in fe as HEADERS and CONTINUATION frames.
func (cc *h2Conn) appendHeaderBlock(b []byte, id uint32, end bool) []byte {
	return appendHeaderFrames(b, cc.fe.buf, id, end, cc.maxFrame)
}

// goAway sends GOAWAY with code; the connection then ends.
func (cc *h2Conn) goAway(code http2.ErrCode) {
	cc.mu.Lock()
	cc.goAwayLocked(code)
	cc.mu.Unlock()
}

func (cc *h2Conn) goAwayLocked(code http2.ErrCode) {
	if cc.closed {
		return
	}
	cc.out = appendFrameHeader(cc.out, 8, http2.FrameGoAway, 0, 0)
	cc.out = append(cc.out, byte(cc.lastStream>>24)&0x7f, byte(cc.lastStream>>16), byte(cc.lastStream>>8), byte(cc.lastStream),
		byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
	cc.goingAway = true
	cc.flushLocked()
}

// shutdown asks the client to open no more streams (GOAWAY NO_ERROR); the connection ends when
// its streams have (Shutdown closes it after its timeout).
func (cc *h2Conn) shutdown() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.goingAway {
		if cc.workers == 0 && len(cc.streams) == 0 {
			_ = cc.c.SetReadDeadline(time.Unix(1, 0))
		}
		return
	}
	cc.goAwayLocked(http2.ErrCodeNo)
}

// shut ends the connection: its streams are reset, their goroutines end on their own.
func (cc *h2Conn) shut() {
	cc.mu.Lock()
	cc.closed = true
	for _, st := range cc.streams {
		st.reset = true
		st.abortUpLocked()
		st.cond.Broadcast()
	}
	for _, st := range cc.pending {
		st.reset = true
	}
	cc.pending = nil
	cc.space.Broadcast()
	cc.mu.Unlock()
	cc.stop()
	cc.hc.h2.Store(nil)
}

// frameWriter writes an HTTP/2 connection's frames (to a client or to a backend). Frames are
// appended to out under mu (the connection's lock, which also guards its streams) and written
// by the connection's writer goroutine, which the first frames after a write wake: under load,
// the frames appended while a write is under way, or while the writer waits for a core, go out
// together in the next write, as an event loop writes once for all it found ready.
type frameWriter struct {
	mu       sync.Mutex
	space    sync.Cond // signalled when a write ends (DATA writers wait for buffer space)
	c        net.Conn
	out      []byte // frames to write
	spare    []byte
	flushing bool // a write is due or under way
	running  bool // the writer goroutine runs (writing, or waiting for more)
	closed   bool
	werr     error
	kick     chan struct{} // wakes a waiting writer
	stay     func() bool   // (mu held) whether the writer waits for more: the connection has streams
	wd       time.Time     // the write deadline last set
	failed   func()        // called (mu held) when a write fails
	// The peer's settings, and the connection's send window.
	sendWindow, initialWindow int32
	maxFrame                  int
	// recv is the connection's receive window (what the peer may still send).
	recv recvWindow
}

// applySettings applies a peer's SETTINGS, each validated: the initial window (every open
// stream's send window moves by the difference), the frame size, the encoder's table size;
// other, when set, is given the rest. It appends the acknowledgement (mu held).
func (w *frameWriter) applySettings(f *http2.SettingsFrame, enc *hpack.Encoder, streams iter.Seq[*streamSend], other func(http2.Setting)) error {
	if f.NumSettings() > 100 || f.HasDuplicates() {
		// Not in the RFC; x/net's server refuses them too: a frame of 2,730 window settings
		// made the reader walk every open stream for each (found by review: 7.8 ms of CPU for
		// 16 KB with 100 streams open). Each frame now walks them once at most.
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - int64(w.initialWindow)
			w.initialWindow = int32(s.Val)
			if delta == 0 {
				break
			}
			for ss := range streams {
				if !ss.open(delta) {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			w.maxFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			if enc != nil { // nil: an encoder that never indexes (fieldEncoder)
				enc.SetMaxDynamicTableSizeLimit(s.Val)
			}
		default:
			if other != nil {
				other(s)
			}
		}
		return nil
	})
	if err == nil {
		w.out = appendFrameHeader(w.out, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
	}
	return err
}

// recvWindow is a receive window's books: what the peer may still send, and what was consumed
// and not yet given back.
type recvWindow struct{ window, unacked int32 }

// giveBack gives back n consumed bytes of the connection's window and of a stream's (unless
// nil; only while open: a stream that will take no more data is not credited), in WINDOW_UPDATE
// frames once a quarter of a window is due (mu held).
func (w *frameWriter) giveBack(s *recvWindow, id uint32, n int32, open bool) {
	w.recv.unacked += n
	if w.recv.unacked >= h2ConnWindow/4 {
		w.out = appendWindowUpdate(w.out, 0, uint32(w.recv.unacked))
		w.recv.window += w.recv.unacked
		w.recv.unacked = 0
	}
	if s == nil {
		return
	}
	s.unacked += n
	if s.unacked >= h2StreamWindow/4 && open {
		w.out = appendWindowUpdate(w.out, id, uint32(s.unacked))
		s.window += s.unacked
		s.unacked = 0
	}
}

// streamSend is a stream's side of sending DATA: its window, and the waits for it.
type streamSend struct {
	cond    *sync.Cond // on the connection's mu: signalled when the window opens
	window  int32
	waiting bool // a writer waits for a window
	expired bool // a wait outlasted h2WriteTimeout
}

func (s *streamSend) init(cond *sync.Cond, window int32) { s.cond, s.window = cond, window }

// open adds inc (a WINDOW_UPDATE, a change of SETTINGS_INITIAL_WINDOW_SIZE) to the window;
// false when it would pass 2^31-1 (FLOW_CONTROL_ERROR).
func (s *streamSend) open(inc int64) bool {
	if int64(s.window)+inc > 1<<31-1 {
		return false
	}
	s.window += int32(inc)
	if s.waiting {
		s.cond.Broadcast()
	}
	return true
}

// sendData appends p as DATA frames of stream id within the stream's and the connection's
// windows and the peer's frame size, END_STREAM on the last when end. It waits (mu held, as
// by every caller) for a window or for buffer space, flushing first, up to h2WriteTimeout, and
// gives up when *dead (the stream was reset) or the connection failed. ended reports that the
// END_STREAM frame went out.
func (w *frameWriter) sendData(s *streamSend, id uint32, p []byte, end bool, dead *bool) (ended bool, _ error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
		s.waiting = false
	}()
	for len(p) > 0 || end {
		if *dead || w.werr != nil || s.expired {
			return false, errStreamReset
		}
		// Not below 0: a window the peer's SETTINGS made negative still lets an empty
		// END_STREAM go (it takes no window); a negative n panicked (found by review).
		n := max(0, min(len(p), w.maxFrame, int(s.window), int(w.sendWindow)))
		if (len(p) > 0 && n <= 0) || len(w.out) >= h2MaxWriteBuffer {
			if timer == nil {
				timer = time.AfterFunc(h2WriteTimeout, func() {
					w.mu.Lock()
					s.expired = true
					s.cond.Broadcast()
					w.space.Broadcast()
					w.mu.Unlock()
				})
			}
			w.flushLocked()
			if len(w.out) >= h2MaxWriteBuffer {
				w.space.Wait()
			} else if n <= 0 && len(p) > 0 {
				s.waiting = true
				s.cond.Wait()
			}
			continue
		}
		last := end && n == len(p)
		flags := http2.Flags(0)
		if last {
			flags = http2.FlagDataEndStream
		}
		w.out = appendFrameHeader(w.out, n, http2.FrameData, flags, id)
		w.out = append(w.out, p[:n]...)
		s.window -= int32(n)
		w.sendWindow -= int32(n)
		p = p[n:]
		if last {
			return true, nil
		}
	}
	return false, nil
}

// start starts the writer of c.
func (w *frameWriter) start(c net.Conn, failed func(), stay func() bool) {
	w.c, w.failed, w.stay = c, failed, stay
	w.kick = make(chan struct{}, 1)
	w.sendWindow, w.initialWindow, w.maxFrame = 65535, 65535, 16384 // until the peer's SETTINGS
	w.space.L = &w.mu
}

// flushLocked has the frames buffered written, by the connection's writer goroutine: started
// when none runs; it writes what is appended meanwhile too, and waits for more while the
// connection has streams (stay), so that no goroutine waits on an idle connection.
func (w *frameWriter) flushLocked() {
	if w.flushing || len(w.out) == 0 {
		return
	}
	w.flushing = true
	w.wake()
}

// wake has the writer run: a running one is kicked, else one is started (mu held).
func (w *frameWriter) wake() {
	if w.running {
		select {
		case w.kick <- struct{}{}:
		default:
		}
		return
	}
	w.running = true
	go w.run()
}

func (w *frameWriter) run() {
	for {
		// Streams whose frames are ready to be appended run first, so that they go out in
		// this write.
		runtime.Gosched()
		runtime.Gosched()
		w.mu.Lock()
		for len(w.out) > 0 && w.werr == nil {
			b := w.out
			w.out, w.spare = w.spare[:0], nil
			// Under mu, as stop sets its shorter deadline: this one never replaces it.
			if now := time.Now(); !w.closed && w.wd.Sub(now) < h2WriteTimeout*7/8 {
				w.wd = now.Add(h2WriteTimeout)
				_ = w.c.SetWriteDeadline(w.wd)
			}
			w.mu.Unlock()
			_, err := w.c.Write(b)
			w.mu.Lock()
			if cap(b) <= 64<<10 {
				w.spare = b[:0] // never the buffer being filled
			}
			if err != nil {
				w.werr = err
				w.failed()
				_ = w.c.SetReadDeadline(time.Unix(1, 0)) // the reader ends too
			}
			w.space.Broadcast()
		}
		w.flushing = false
		if w.closed || w.werr != nil || !w.stay() {
			w.running = false
			w.out, w.spare = nil, nil // an idle connection holds no buffer
			w.space.Broadcast()
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
		<-w.kick
	}
}

// idleLocked ends a writer waiting on a connection whose last stream ended (mu held).
func (w *frameWriter) idleLocked() {
	if w.running && !w.flushing {
		w.wake()
	}
}

// stop writes what is left (a GOAWAY), for a second at most, and ends the writer; nothing is
// written after it.
func (w *frameWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	_ = w.c.SetWriteDeadline(time.Now().Add(time.Second))
	for len(w.out) > 0 && w.werr == nil {
		if !w.flushing {
			w.flushing = true
			w.wake()
		}
		w.space.Wait()
	}
	for w.running {
		w.wake()
		w.space.Wait()
	}
	if w.werr == nil {
		w.werr = net.ErrClosed
	}
	w.flushing = true // no writer starts again
}

// streamWorkers: a goroutine that served a stream waits for the next one, of any connection, so
// that a busy proxy does not start every stream on a fresh goroutine whose stack then grows and
// is copied on the way into the core (5% of the CPU of HTTP/2 under load, measured, before
// this). A waiting worker receives from one channel, with no timer of its own (a select on a
// timer's channel costs a timer added and removed per stream); the reaper ends, each second, as
// many workers as waited through all of the second before (the fewest seen waiting at ten looks
// over it), and itself when no worker is left.
const streamWorkerIdle = time.Second

var (
	streamWork    = make(chan *h2Stream) // nil: the receiving worker ends
	streamWorkers atomic.Int32           // started and not ended
	streamIdle    atomic.Int32           // waiting on streamWork
	streamReaping atomic.Bool            // the reaper runs
)

// startStream has st served by a waiting worker, else by a new one.
func startStream(st *h2Stream) {
	select {
	case streamWork <- st:
	default:
		streamWorkers.Add(1)
		if streamReaping.CompareAndSwap(false, true) {
			go reapStreamWorkers()
		}
		go streamWorker(st)
	}
}

func streamWorker(st *h2Stream) {
	defer streamWorkers.Add(-1)
	for st != nil {
		st.serve()
		streamIdle.Add(1)
		st = <-streamWork
		streamIdle.Add(-1)
	}
}

func reapStreamWorkers() {
	for {
		fewest := int32(1 << 30)
		for range 10 {
			time.Sleep(streamWorkerIdle / 10)
			fewest = min(fewest, streamIdle.Load())
		}
		for ; fewest > 0; fewest-- {
			select {
			case streamWork <- nil:
			default:
				fewest = 0 // none waits any more
			}
		}
		if streamWorkers.Load() == 0 {
			streamReaping.Store(false)
			// A worker started since the look above finds the flag still set and starts no
			// reaper: this one goes on for it.
			if streamWorkers.Load() == 0 || !streamReaping.CompareAndSwap(false, true) {
				return
			}
		}
	}
}

// streamDone accounts for a stream whose answer ended: its slot goes to the next stream
// waiting, if any.
func (cc *h2Conn) streamDoneLocked(st *h2Stream) {
	if cc.streams[st.id] == st {
		delete(cc.streams, st.id)
	}
	cc.workers--
	for len(cc.pending) > 0 {
		next := cc.pending[0]
		cc.pending = cc.pending[1:]
		if next.reset {
			continue
		}
		cc.workers++
		startStream(next)
		break
	}
	if cc.workers == 0 && len(cc.streams) == 0 {
		cc.idleLocked()
		cc.fe.buf = nil  // the encoder's scratch, regrown for the next answer
		cc.streams = nil // and the map, made again for the next stream
		switch {
		case cc.goingAway:
			_ = cc.c.SetReadDeadline(time.Unix(1, 0)) // nothing left: the reader ends the connection
		case cc.waiting && !cc.woken:
			// The reader waits between frames (waitBusy), with the stack it grew serving them:
			// woken, it parks the idle connection on a new goroutine with a small one.
			cc.woken = true
			_ = cc.c.SetReadDeadline(time.Unix(1, 0))
		case cc.cr.idle == nil:
			// A reader that does not park (h2c, or TLS over a wrapped socket) waits in its read
			// with the busy connection's deadline (a PING due): the idle timeout starts now
			// (readDeadline sets its deadlines under mu too, so it cannot replace this one with
			// a busy deadline it chose before this end).
			cc.rdead.exactly(cc.c, time.Now().Add(cc.hc.s.opts.IdleTimeout))
		}
	}
}

func appendFrameHeader(b []byte, length int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(length>>16), byte(length>>8), byte(length), byte(typ), byte(flags),
		byte(id>>24)&0x7f, byte(id>>16), byte(id>>8), byte(id))
}

func appendSettings(b []byte, ss ...http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(ss), http2.FrameSettings, 0, 0)
	for _, s := range ss {
		b = append(b, byte(s.ID>>8), byte(s.ID), byte(s.Val>>24), byte(s.Val>>16), byte(s.Val>>8), byte(s.Val))
	}
	return b
}

func appendWindowUpdate(b []byte, id, inc uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return append(b, byte(inc>>24)&0x7f, byte(inc>>16), byte(inc>>8), byte(inc))
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return append(b, byte(code>>24), byte(code>>16), byte(code>>8), byte(code))
}
