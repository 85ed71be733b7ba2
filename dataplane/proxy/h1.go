package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/procs"
	"portico.dev/portico/dataplane/route"
)

// The fast path. A connection is served by one goroutine that reads a request head, routes it,
// writes it to a pooled upstream connection, and streams the answer back: no http.Request, no
// header maps, no goroutine or channel per request or per upstream connection. It takes the
// common HTTP/1.1 request (see parseRequestHead); at the first request it does not take (HTTP/2
// preface, HTTP/1.0, chunked request body, Expect, Upgrade/WebSocket, h2c backend, a head
// larger than its buffer or than MaxHeaderBytes, a percent-encoded path, anything malformed) it
// hands the connection, unread bytes included, to net/http, which serves it from then on with
// the same Handler. net/http stays the authority on HTTP: the fast path never answers 400.

// connection states, for graceful shutdown.
const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

const (
	clientReadBuffer  = 8 << 10
	clientWriteBuffer = 4 << 10
	// idleRelease: a keep-alive connection idle this long (up to twice: the timer is coarse)
	// gives its buffers back while it waits for the next request.
	idleRelease = time.Second
	// maxDiscard is how much of an unforwarded request body is read to keep the connection;
	// past it, the connection is closed after the answer (as net/http does).
	maxDiscard = 256 << 10
	// lingerTime and lingerIdle bound the lingering close (closeWrite).
	lingerTime = 5 * time.Second
	lingerIdle = 500 * time.Millisecond
)

// h1Server serves the fast path on one listener and hands connections to fallback servers.
type h1Server struct {
	h    *Handler
	opts ServerOptions
	up   *upstreams
	// tlsConfig is set on the HTTPS listener.
	tlsConfig *tls.Config
	// plain takes the cleartext connections the fast path hands off, tlsH1 the TLS ones
	// (HTTP/2 streams included: a stream is handed off as an HTTP/1.1 connection).
	plain, tlsH1 *connQueue
	// loopsOf, on the HTTPS listener, is the cleartext listener's server, whose event loops
	// serve HTTPS connections too once their handshake chose HTTP/1.1 (evtls_linux.go).
	loopsOf *h1Server

	mu      sync.Mutex
	ln      net.Listener
	loops   *loops // the event loops serving ln, if any (Linux)
	conns   map[*h1Conn]struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	// started is closed once Serve accepts: its loops run, or its goroutine accepts (or it
	// returned).
	started     chan struct{}
	startedOnce sync.Once
}

// markStarted closes s.started, once.
func (s *h1Server) markStarted() {
	s.startedOnce.Do(func() {
		if s.started != nil {
			close(s.started)
		}
	})
}

// Serve accepts connections until the listener is closed. The cleartext listener is served by
// event loops where they run (Linux, opts.EventLoops not negative), which give the connections
// they do not serve to this server's goroutines.
func (s *h1Server) Serve(ln net.Listener) error {
	defer s.markStarted()
	if s.tlsConfig == nil && s.opts.EventLoops >= 0 && !s.opts.NetHTTPOnly {
		n := s.opts.EventLoops
		if n == 0 {
			n = procs.Loops()
		}
		if ok, err := s.serveLoops(ln, n); ok {
			return err
		}
	}
	s.mu.Lock()
	s.ln = ln
	if s.conns == nil {
		s.conns = map[*h1Conn]struct{}{}
	}
	s.mu.Unlock()
	s.markStarted()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return http.ErrServerClosed
			}
			// Out of file descriptors and the like: wait and retry, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.h.log.Error(err, "Accept failed, retrying", "in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		var hc *h1Conn
		if s.tlsConfig != nil {
			hc = &h1Conn{} // its exchange state comes after the handshake, unless it is HTTP/2
		} else {
			hc = newH1Conn()
		}
		hc.s, hc.c = s, c
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			_ = c.Close()
			continue
		}
		s.conns[hc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go hc.serve()
	}
}

// Shutdown stops accepting, closes idle connections, lets active ones finish their request
// (answered with Connection: close) and waits for them until ctx ends, then closes the rest.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	if s.ln != nil {
		_ = s.ln.Close()
	}
	ls := s.loops
	s.mu.Unlock()
	if ls != nil {
		ls.stop()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for c := range s.conns {
			if c.state.CompareAndSwap(stateIdle, stateClosed) {
				_ = c.c.Close()
			}
			if cc := c.h2.Load(); cc != nil {
				cc.shutdown()
			}
		}
		s.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			if ls != nil {
				ls.kill()
			}
			s.mu.Lock()
			for c := range s.conns {
				_ = c.c.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (s *h1Server) forget(c *h1Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// h1Conn is one client connection on the fast path.
type h1Conn struct {
	s     *h1Server
	c     net.Conn      // a *tls.Conn on HTTPS
	rw    io.ReadWriter // what br and bw read and write: the raw or TLS connection
	state atomic.Int32
	tls   *tls.ConnectionState
	// rd is the client connection's read deadline.
	rd     readDeadline
	client string     // the connection's peer's IP (the PROXY protocol's source, if any), as text
	ip     netip.Addr // and as an address
	// remote is the PROXY protocol's source address and port, nil without the protocol.
	remote net.Addr
	// loop: an event loop serves the connection.
	loop bool
	// stream: the connection is an HTTP/2 stream (h2Stream), which carries one exchange.
	stream bool
	// carried is the limits of the request an event loop handed over with the connection
	// (checked there, its slot held): the first request's state takes it.
	carried *carriedLimits
	// peer is the client's address while an event loop serves the connection (c is nil then).
	peer  netip.AddrPort
	proto string // "http" or "https"
	port  string // X-Forwarded-Port
	// h2 is the HTTP/2 connection this connection serves, if it does (for Shutdown).
	h2 atomic.Pointer[h2Conn]
	// cert is the TLS connection's client certificate state (its HTTP/2 streams share it).
	cert *connCert

	// h1Req is the state of the exchanges the connection serves itself (HTTP/1.x, or an
	// HTTP/2 stream's). An HTTP/2 connection over TLS has none: its streams have their own,
	// and an idle one so keeps about 1 KiB less (the h2idle benchmark row). newH1Conn makes a
	// connection with it, in one allocation.
	*h1Req
}

// h1Req is an h1Conn's exchange state (see h1Conn.h1Req).
type h1Req struct {
	br   *bufio.Reader
	bw   *bufio.Writer
	head reqHead
	out  []byte // the response head being built
	raw  []byte // the backend's response head as read
	hl   []headerLine
	st   reqState
	// closeAfter: the connection ends after the current answer.
	closeAfter bool
	// bodyRead: the current request's body was read whole (see lingers).
	bodyRead bool
	// now is when the last answer was written (one clock reading serves several uses).
	now time.Time
	// metrics caches the series of the last request: a keep-alive connection mostly repeats it.
	metrics metricCache
	// host is the last request's Host as a string: the next one mostly repeats it, and a string
	// the routing keeps is then not allocated again (see hostString).
	host string
	// clientCert is the current request's client certificate verification, whose headers go to
	// the backend (nil when its route has no client auth). See clientcert.go.
	clientCert *certVerification
}

// h1Full is a connection and its exchange state, allocated together.
type h1Full struct {
	h1Conn
	req h1Req
}

// newH1Conn returns a connection with its exchange state (one allocation).
func newH1Conn() *h1Conn {
	f := new(h1Full)
	f.h1Req = &f.req
	return &f.h1Conn
}

// metricCache holds the series last used on a connection, of the Metrics in of (a pooled
// connection object may next serve another Handler: tests run many).
type metricCache struct {
	of               *Metrics
	ingress, service string
	code             int
	requests         prometheus.Counter
	durationService  string
	duration         prometheus.Observer
}

// observe records the time to the response head.
func (c *h1Conn) observe(d time.Duration) {
	m := c.metricsOf(c.s.h.metrics)
	if m.duration == nil || m.durationService != c.st.service {
		m.durationService, m.duration = c.st.service, c.s.h.metrics.Duration.WithLabelValues(c.st.service)
	}
	m.duration.Observe(d.Seconds())
}

// metricsOf returns the connection's cache of series, emptied if they are not of ms.
func (c *h1Conn) metricsOf(ms *Metrics) *metricCache {
	m := &c.metrics
	if m.of != ms {
		*m = metricCache{of: ms}
	}
	return m
}

// finish ends the connection's goroutine: the connection is closed unless net/http took it.
func (c *h1Conn) finish(handedOff bool) {
	if c.h1Req != nil {
		c.st.releaseLimits()
	}
	if cr := c.carried; cr != nil { // a slot an event loop handed over with a request never served here
		cr.slot.release()
		c.carried = nil
	}
	if !handedOff {
		_ = c.c.Close()
		if c.h1Req != nil {
			c.releaseBuffers(false)
		}
	}
	c.s.forget(c)
}

func (c *h1Conn) serve() {
	handedOff, moved := false, false
	defer func() {
		if !moved {
			c.finish(handedOff)
		}
	}()
	o := &c.s.opts
	c.proto, c.port = "http", c.s.h.httpPort
	if ta, ok := c.c.RemoteAddr().(*net.TCPAddr); ok {
		c.ip = ta.AddrPort().Addr().Unmap()
		c.client = c.ip.String()
	}
	var pre []byte // read past a PROXY protocol header
	if c.s.h.table.Load().Clients.ProxyProtocol {
		var ok bool
		if pre, ok = c.proxyHeader(time.Now().Add(o.ReadHeaderTimeout)); !ok {
			return
		}
	}
	if c.s.tlsConfig != nil {
		sock := c.c
		conn := newRawConn(c.c)
		if len(pre) > 0 {
			conn = &prefixedConn{Conn: conn, pre: pre}
		}
		if t := c.s.h.table.Load(); t.HasPassthrough() {
			var pass bool
			if conn, pass = c.passthrough(t, conn); pass || conn == nil {
				handedOff = true // the forwarder closed it (or the client is gone: closed below)
				if conn == nil {
					_ = c.c.Close()
				}
				return
			}
		}
		conn, lc := c.s.loopTransport(conn)
		tc := tls.Server(conn, c.s.tlsConfig)
		c.c = tc
		_ = tc.SetDeadline(time.Now().Add(o.ReadHeaderTimeout))
		if err := tc.HandshakeContext(context.Background()); err != nil {
			c.s.h.log.V(1).Info("TLS handshake failed", "client", tc.RemoteAddr().String(), "error", err.Error())
			return
		}
		_ = tc.SetDeadline(time.Time{})
		cs := tc.ConnectionState()
		c.tls = &cs
		c.cert = newConnCert(c.s.h.table.Load(), c.tls)
		c.proto, c.port = "https", c.s.h.httpsPort
		if cs.NegotiatedProtocol != "h2" && c.toLoop(sock, tc, lc) {
			handedOff = true // a loop serves it from now on
			return
		}
	}
	c.rw = c.c
	if c.tls == nil {
		c.rw = newRawConn(c.c)
		if len(pre) > 0 {
			c.rw = &prefixedConn{Conn: c.rw.(net.Conn), pre: pre}
		}
	}
	if c.tls != nil && c.tls.NegotiatedProtocol == "h2" {
		// A new goroutine serves it: its stack starts small, where this one's grew for the
		// handshake, and an idle HTTP/2 connection keeps its reader's stack.
		c.state.Store(stateActive)
		moved = true
		go func() {
			if !c.serveH2() {
				c.finish(false)
			}
		}()
		return
	}
	if c.h1Req == nil {
		c.h1Req = new(h1Req)
	}
	c.takeBuffers()
	c.now = time.Now()
	handedOff = c.serveRequests(o.ReadHeaderTimeout) // before the first request
}

// passthrough reads the ClientHello of a TLS connection when some host is passed through
// (ssl-passthrough): a connection for such a host goes to its backend unterminated, byte for
// byte, the ClientHello first (pass is true once the forwarder is done with it). Any other
// name, no SNI, or a ClientHello that is malformed or no TLS at all, is terminated as usual
// (with the default certificate when the name has none, as ingress-nginx does): the returned
// connection replays what was read. A client that sends no whole ClientHello within the header
// timeout, or goes away, gets nil.
func (c *h1Conn) passthrough(t *route.Table, conn net.Conn) (_ net.Conn, pass bool) {
	hello, raw, err := l4.ReadClientHello(conn, time.Now().Add(c.s.opts.ReadHeaderTimeout))
	if err == nil {
		if b := t.PassthroughBackend(hello.ServerName); b != nil {
			c.state.Store(stateActive) // a graceful shutdown waits for it
			_ = c.s.h.passthrough.ServeConn(conn, raw, NewBackendPicker(b))
			return nil, true
		}
	} else if !errors.Is(err, l4.ErrMalformedClientHello) && !errors.Is(err, l4.ErrNotTLS) {
		return nil, false // gone, or too slow
	}
	return &prefixedConn{Conn: conn, pre: raw}, false
}

// serveFromLoop serves a connection an event loop gave up: out is written first, then the
// requests are read from in and the connection.
func (c *h1Conn) serveFromLoop(in, out []byte) {
	handedOff := false
	defer func() { c.finish(handedOff) }()
	var raw net.Conn
	if tc, ok := c.c.(*tls.Conn); ok {
		raw = tc // over a loopConn, whose output the loop had not sent goes first
		if lc, ok := tc.NetConn().(*loopConn); ok && lc.writePending() != nil {
			return
		}
	} else {
		raw = newRawConn(c.c)
	}
	if len(out) > 0 {
		if _, err := raw.Write(out); err != nil {
			return
		}
	}
	c.rw = raw
	if len(in) > 0 {
		c.rw = &prefixedConn{Conn: raw, pre: in}
	}
	c.takeBuffers()
	c.now = time.Now()
	handedOff = c.serveRequests(c.s.opts.IdleTimeout)
}

// prefixedConn reads pre before the connection.
type prefixedConn struct {
	net.Conn
	pre []byte
}

func (p *prefixedConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		if len(p.pre) == 0 {
			p.pre = nil // read: a connection that lives on (HTTP/2) does not keep it
		}
		return n, nil
	}
	return p.Conn.Read(b)
}

// serveRequests serves the connection's requests, waiting wait from c.now for the first. It
// reports whether the connection was handed to net/http.
func (c *h1Conn) serveRequests(wait time.Duration) (handedOff bool) {
	o := &c.s.opts
	limit := min(clientReadBuffer, o.MaxHeaderBytes)
	for {
		if !c.awaitRequest(wait) {
			return false
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			return false // closed by Shutdown
		}
		n := 0
		for first := true; ; first = false {
			buf, _ := c.br.Peek(c.br.Buffered())
			if k := emptyLines(buf); k > 0 {
				_, _ = c.br.Discard(k)
				buf = buf[k:]
			}
			if n = headEnd(buf); n != 0 {
				break
			}
			if len(buf) >= limit {
				n = -1
				break
			}
			if first { // the head did not come in one piece: it has ReadHeaderTimeout to arrive
				c.rd.exactly(c.c, time.Now().Add(o.ReadHeaderTimeout))
				// Answers held back for a pipelined request go out before waiting for its rest.
				if err := c.bw.Flush(); err != nil {
					return false
				}
			}
			if _, err := c.br.Peek(len(buf) + 1); err != nil {
				return false // timeout or close before a whole head: nothing to answer
			}
		}
		fast := false
		if n > 0 {
			buf, _ := c.br.Peek(n)
			c.head.buf = append(c.head.buf[:0], buf...)
			fast = parseRequestHead(c.head.buf, &c.head) && !o.NetHTTPOnly
			if !fast {
				if fault := framingFault(c.head.buf); fault != "" {
					c.refuse(fault)
					return false
				}
			}
		}
		if !fast {
			return c.handoff()
		}
		c.serveRequest(n)
		if c.closeAfter {
			_ = c.bw.Flush()
			c.closeWrite()
			return false
		}
		if c.br.Buffered() == 0 { // pipelined requests get their answers in one write
			if err := c.bw.Flush(); err != nil {
				return false
			}
		}
		c.state.Store(stateIdle)
		if c.s.closing.Load() && c.state.CompareAndSwap(stateIdle, stateClosed) {
			_ = c.bw.Flush()
			return false
		}
		wait = o.IdleTimeout
	}
}

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, clientReadBuffer) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, clientWriteBuffer) }}
)

// takeBuffers gives the connection the buffers it lacks.
func (c *h1Conn) takeBuffers() {
	if c.br == nil {
		c.br = readerPool.Get().(*bufio.Reader)
		c.br.Reset(c.rw)
	}
	if c.bw == nil {
		c.bw = writerPool.Get().(*bufio.Writer)
		c.bw.Reset(c.rw)
	}
}

// releaseBuffers gives the connection's empty buffers back (the reader too unless keepReader),
// and drops its head buffers when they grew large.
func (c *h1Conn) releaseBuffers(keepReader bool) {
	if c.bw != nil {
		c.bw.Reset(nil)
		writerPool.Put(c.bw)
		c.bw = nil
	}
	if c.br != nil && !keepReader {
		c.br.Reset(nil)
		readerPool.Put(c.br)
		c.br = nil
	}
	if cap(c.head.buf) > 1<<10 {
		c.head.buf = nil
	}
	if cap(c.out) > 1<<10 {
		c.out = nil
	}
	if cap(c.raw) > 1<<10 {
		c.raw = nil
	}
}

// awaitRequest waits for the next request's first byte, wait from c.now at most (a pipelined
// one may be buffered already). A connection still idle after idleRelease (to twice that) gives
// its buffers back for the rest of the wait (a TLS connection keeps its read buffer, which may hold
// decrypted bytes), so an idle keep-alive connection costs its goroutine and little more.
func (c *h1Conn) awaitRequest(wait time.Duration) bool {
	if c.br.Buffered() > 0 {
		return true
	}
	if wait <= idleRelease {
		c.rd.within(c.c, c.now, wait)
		_, err := c.br.Peek(1)
		return err == nil
	}
	c.rd.withinLate(c.c, c.now, idleRelease, idleRelease) // when is not critical
	_, err := c.br.Peek(1)
	if err == nil || !isTimeout(err) {
		return err == nil
	}
	c.rd.exactly(c.c, c.now.Add(wait))
	keepReader := c.tls != nil
	c.releaseBuffers(keepReader)
	if !keepReader {
		if _, err := waitReadable(c.c); err != nil {
			return false
		}
	}
	if c.br == nil {
		c.takeBuffers()
		_, err = c.br.Peek(1)
	} else {
		_, err = c.br.Peek(1)
		c.takeBuffers()
	}
	return err == nil
}

// closeWrite ends a connection after Connection: close: the answer is sent, the write side is
// shut, and what the client still sends (the rest of an upload answered early) is read and
// dropped until it stops for lingerIdle or lingerTime has passed, as nginx's lingering close
// does, so that the client reads the answer instead of a reset.
func (c *h1Conn) closeWrite() {
	type closeWriter interface{ CloseWrite() error }
	cw, ok := c.c.(closeWriter)
	if !ok || !lingers(c.bodyRead, c.br.Buffered()) {
		return
	}
	_ = cw.CloseWrite()
	end := time.Now().Add(lingerTime)
	buf := make([]byte, 32<<10)
	for now := time.Now(); now.Before(end); now = time.Now() {
		d := now.Add(lingerIdle)
		if d.After(end) {
			d = end
		}
		_ = c.c.SetReadDeadline(d)
		if _, err := c.c.Read(buf); err != nil {
			return
		}
	}
}

// handoff gives the connection to net/http, the bytes it has not consumed included. It reports
// whether net/http took it.
func (c *h1Conn) handoff() bool {
	if err := c.bw.Flush(); err != nil {
		return false
	}
	_ = c.c.SetReadDeadline(time.Time{})
	q := c.s.plain
	if c.tls != nil {
		q = c.s.tlsH1
	}
	if q == c.s.plain && !c.stream {
		if buf, _ := c.br.Peek(min(c.br.Buffered(), len(h2Preface))); isH2Preface(buf) {
			// HTTP/2 with prior knowledge: served here (h2.go).
			_ = c.c.SetReadDeadline(time.Time{})
			c.serveH2()
			return false
		}
	}
	c.state.Store(stateClosed)
	c.s.h.metrics.Handoffs.WithLabelValues("request").Inc()
	return q.push(&handoffConn{Conn: c.c, r: c.br, tls: c.tls, remote: c.remote, cert: c.handoffCert()})
}

// serveStream serves the one request of an HTTP/2 stream, whose head (headLen bytes) comes
// first from c.br. It reports whether the stream was handed to net/http.
func (c *h1Conn) serveStream(headLen int) (handedOff bool) {
	c.state.Store(stateActive)
	buf, err := c.br.Peek(headLen)
	if err == errStreamReset {
		return false // reset before its head was read: nothing to serve, nothing for net/http
	}
	if err == nil {
		c.head.buf = append(c.head.buf[:0], buf...)
		if parseRequestHead(c.head.buf, &c.head) && !c.s.opts.NetHTTPOnly {
			c.serveRequest(headLen)
			_ = c.bw.Flush()
			return false
		}
	}
	return c.handoff()
}

// refuse answers a request whose framing is in doubt with 400 and closes the connection
// (see framingFault): nothing of it reaches a backend.
func (c *h1Conn) refuse(fault string) {
	c.answer(c.refusal(fault))
	_ = c.bw.Flush()
	c.closeWrite()
}

// refusal starts the answer to a request refused for fault (see framingFault), on either
// path: a new request's state, the connection closed after (lingering: its body is unread).
func (c *h1Conn) refusal(fault string) (int, string) {
	c.st = reqState{start: time.Now(), port: c.port, service: "default"}
	c.closeAfter, c.bodyRead = true, false
	return http.StatusBadRequest, "request framing is ambiguous: " + fault
}

// serveRequest answers the parsed head: forwards it (over HTTP/1.1, or HTTP/2 to an h2c
// backend), or answers for the proxy.
func (c *h1Conn) serveRequest(headLen int) {
	b, code, msg := c.route()
	_, _ = c.br.Discard(headLen)
	if bodyTooLarge(&c.st, c.head.contentLength) {
		c.closeAfter = true // the body is not read: the lingering close drops it
		c.answer(http.StatusRequestEntityTooLarge, msgBodyTooLarge)
		return
	}
	if c.head.contentLength > 0 || c.head.chunked {
		c.rd.within(c.c, time.Now(), bodyTimeout(c.st.table)) // each read of the body extends it
	}
	if b == nil {
		if c.head.expect || c.head.chunked {
			c.closeAfter = true // no 100 Continue: the body does not come (if it does, the close lingers)
		} else {
			c.discardBody()
		}
		c.answer(code, msg)
		return
	}
	if b.Protocol == route.H2C {
		c.forwardH2()
	} else {
		c.forward()
	}
}

// route starts the request in c.head: it resets c.st, routes by host and path, and picks the
// endpoint (the affinity cookie's, else the balancer's). It returns
// nil with the proxy's own answer when nothing is forwarded (see decide).
func (c *h1Conn) route() (*route.Backend, int, string) {
	hd, st := &c.head, &c.st
	st.releaseLimits()
	*st = reqState{start: time.Now(), port: c.port, tls: c.proto == "https", onLoop: c.loop}
	if cr := c.carried; cr != nil { // the request an event loop routed: limits checked, a slot held
		st.admitted = true
		if cr.slot != nil {
			st.access().slot = cr.slot
		}
		c.carried = nil
	}
	c.closeAfter = hd.close || c.s.closing.Load()
	c.bodyRead = hd.contentLength == 0 && !hd.chunked
	t := c.s.h.table.Load()
	if code, msg := c.checkClientCert(t); code != 0 {
		st.table, st.service = t, "default"
		if rule := t.Match(c.hostString(), string(hd.route), c); rule != nil && rule.Backend != nil {
			st.ingress, st.service = rule.IngressName, rule.Backend.Name()
		}
		st.logging = c.s.h.logging(t)
		return nil, code, msg
	}
	b, code, msg := c.s.h.decide(t, c.hostString(), string(hd.route), c, st)
	st.logging = c.s.h.logs(st)
	if b == nil {
		return b, code, msg
	}
	st.backend, st.service = b, b.Name()
	pickEndpoint(st, b, c, bytesView(hd.route))
	return b, 0, ""
}

// hostString is the request's Host as a string, the last request's when it is the same.
func (c *h1Conn) hostString() string {
	if c.host != string(c.head.host) {
		c.host = string(c.head.host)
	}
	return c.host
}

// discardBody reads the body of a request that is answered without forwarding, up to
// maxDiscard; a longer body ends the connection after the answer.
func (c *h1Conn) discardBody() {
	n := c.head.contentLength
	if n == 0 {
		return
	}
	if n > maxDiscard {
		c.closeAfter = true
		return
	}
	if _, err := io.CopyN(io.Discard, c.br, n); err != nil {
		c.closeAfter = true
		return
	}
	c.bodyRead = true
}

// answer writes the proxy's own answer (404, 502, 503, 504) and accounts for the request.
func (c *h1Conn) answer(code int, msg string) {
	c.answerHead(code, msg)
	_, _ = c.bw.Write(c.out)
	c.done()
}

// answerHead builds the proxy's own answer in c.out, body included.
func (c *h1Conn) answerHead(code int, msg string) {
	var body string
	o := append(c.out[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(code), 10)
	o = append(o, ' ')
	o = append(o, http.StatusText(code)...)
	if code != http.StatusNoContent { // a CORS preflight's has no body
		body = errorBody(code, msg)
		o = append(o, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
		o = strconv.AppendInt(o, int64(len(body)), 10)
		o = append(o, "\r\nCache-Control: no-store"...)
	}
	o = append(o, "\r\nServer: portico\r\nDate: "...)
	c.now = time.Now()
	o = appendDate(o, c.now)
	if c.st.location != "" {
		o = append(o, "\r\nLocation: "...)
		o = append(o, c.st.location...)
	}
	if a := c.st.acc; a != nil {
		for _, kv := range a.answerHeaders {
			o = appendHeaderLine(o, kv)
		}
		for _, kv := range a.respSet {
			o = appendHeaderLine(o, kv)
		}
		if a.auth != nil {
			for _, kv := range a.auth.responseFor(code) {
				o = appendHeaderLine(o, kv)
			}
		}
	}
	if c.st.tls && c.st.table != nil && c.st.table.HSTS != "" {
		o = append(o, "\r\n"+hstsName+": "...)
		o = append(o, c.st.table.HSTS...)
	}
	if c.closeAfter {
		o = append(o, "\r\nConnection: close"...)
	}
	o = append(o, "\r\n\r\n"...)
	if string(c.head.method) != http.MethodHead {
		o = append(o, body...)
		c.st.bytes = int64(len(body))
	}
	c.out = o
	c.st.status = code
}

// appendHeaderLine appends "\r\nName: value" (the lines of an own answer start with their
// CRLF).
func appendHeaderLine(o []byte, kv [2]string) []byte {
	o = append(o, "\r\n"...)
	o = append(o, kv[0]...)
	o = append(o, ": "...)
	return append(o, kv[1]...)
}

// peerAddr is the client's address and port, for the access log.
func (c *h1Conn) peerAddr() string {
	if c.remote != nil {
		return c.remote.String()
	}
	if c.c != nil {
		return c.c.RemoteAddr().String()
	}
	return c.peer.String()
}

func (c *h1Conn) done() {
	h, st := c.s.h, &c.st
	st.releaseLimits()
	if st.status == 0 {
		st.status = http.StatusOK
	}
	m := c.metricsOf(h.metrics)
	if m.requests == nil || m.code != st.status || m.ingress != st.ingress || m.service != st.service {
		m.ingress, m.service, m.code = st.ingress, st.service, st.status
		m.requests = h.metrics.Requests.WithLabelValues(st.ingress, st.service, codeString(st.status))
	}
	m.requests.Inc()
	if st.logging && h.sampled(st.table, st.status) {
		hd := &c.head
		h.opts.AccessLog.write(accessEntry{
			Time: time.Now().UTC().Format(time.RFC3339Nano), Client: clientForLog(st, c.peerAddr()), Method: string(hd.method),
			Host: string(hd.host), URI: string(hd.target), Proto: c.protoVersion(), Status: st.status, Bytes: st.bytes,
			Duration: time.Since(st.start).Seconds(), Ingress: st.ingress, Service: st.service, Upstream: st.upstream(),
			UpstreamTime: st.upstreamSeconds(), RequestID: st.requestID, UserAgent: string(hd.userAgent),
		})
	}
}

// protoVersion is the client's protocol version, for the access log.
func (c *h1Conn) protoVersion() string {
	if c.stream {
		return "HTTP/2.0"
	}
	return "HTTP/1.1"
}

// cookieValue finds a cookie in the request's Cookie headers.
func cookieValue(hd *reqHead, name string) string {
	for _, l := range hd.lines {
		if l.kind != hCookie {
			continue
		}
		v := hd.buf[l.vs:l.ve]
		for len(v) > 0 {
			var part []byte
			if i := bytes.IndexByte(v, ';'); i >= 0 {
				part, v = v[:i], v[i+1:]
			} else {
				part, v = v, nil
			}
			part = trimOWS(part)
			if len(part) > len(name) && part[len(name)] == '=' && string(part[:len(name)]) == name {
				val := part[len(name)+1:]
				if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
					val = val[1 : len(val)-1]
				}
				return string(val)
			}
		}
	}
	return ""
}

// handoffConn is a connection given to net/http: reads drain what the fast path buffered first.
type handoffConn struct {
	net.Conn
	r    *bufio.Reader
	tls  *tls.ConnectionState
	cert *connCert
	// remote is the PROXY protocol's source: net/http's Request.RemoteAddr.
	remote net.Addr
}

// RemoteAddr is the client's address: the PROXY protocol's source when the listener reads it.
func (c *handoffConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

func (c *handoffConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite lets net/http end a connection with a lingering close (it looks for the method
// on the connection it serves).
func (c *handoffConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// connQueue is a net.Listener whose connections come from the fast path.
type connQueue struct {
	addr   net.Addr
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), closed: make(chan struct{})}
}

// push hands c to the server accepting from q; false when q is closed (c is then closed).
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.closed:
		_ = c.Close()
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// tlsStateFromConn gives handed-off HTTP/1.1 TLS connections their r.TLS: net/http sets it only
// for a *tls.Conn, and a handed-off connection wraps one; then it applies client auth.
func tlsStateFromConn(next *Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if cs, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = cs
			}
		}
		if next.netHTTPClientCert(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

type tlsStateKey struct{}

func tlsConnContext(ctx context.Context, c net.Conn) context.Context {
	if hc, ok := c.(*handoffConn); ok && hc.tls != nil {
		return withConnCert(context.WithValue(ctx, tlsStateKey{}, hc.tls), hc.cert)
	}
	return ctx
}

// Dates for the Date header, formatted once a second.
type dateCache struct {
	sec int64
	b   []byte
}

var dates atomic.Pointer[dateCache]

func appendDate(b []byte, now time.Time) []byte {
	d := dates.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateCache{sec: now.Unix(), b: now.UTC().AppendFormat(nil, http.TimeFormat)}
		dates.Store(d)
	}
	return append(b, d.b...)
}
