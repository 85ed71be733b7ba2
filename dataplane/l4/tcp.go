package l4

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of TCPConfig.
const (
	// DefaultDialTimeout bounds one connection attempt to an endpoint, as the HTTP proxy's.
	DefaultDialTimeout = 5 * time.Second
	// DefaultTCPIdleTimeout closes a connection without a byte either way for this long:
	// ingress-nginx's proxy-stream-timeout (nginx's proxy_timeout) of 600s.
	DefaultTCPIdleTimeout = 10 * time.Minute
	// DefaultMaxConns is the connections one listener holds at most: ingress-nginx's
	// max-worker-connections. Each takes two file descriptors.
	DefaultMaxConns = 16384
	// DefaultMaxAttempts is the endpoints tried for one connection: ingress-nginx's
	// proxy-stream-next-upstream-tries.
	DefaultMaxAttempts = 3
)

// copyChunk is the most one copy call moves before the byte counters and metrics are updated.
const copyChunk = 1 << 20

// ErrClosed is returned by Serve and ServeConn once the forwarder is closed.
var ErrClosed = errors.New("l4: forwarder closed")

// TCPConfig configures a TCPForwarder. The zero value of each field but Picker takes its
// default.
type TCPConfig struct {
	// Name names the listener in metrics and logs: "tcp/5432".
	Name string
	// Picker chooses the endpoint of each connection Serve accepts.
	Picker Picker
	// ProxyProtocol, when ProxyV1 or ProxyV2, starts every connection to a backend with a
	// PROXY protocol header naming the client's address and the address it connected to.
	// SetProxyProtocol changes it later.
	ProxyProtocol ProxyVersion
	// DialTimeout bounds each connection attempt (default DefaultDialTimeout).
	DialTimeout time.Duration
	// IdleTimeout closes a connection that moved no byte either way for this long (default
	// DefaultTCPIdleTimeout; negative: never). It is checked every eighth of it, so it
	// fires up to an eighth late.
	IdleTimeout time.Duration
	// MaxConns is the connections held at once (default DefaultMaxConns; negative: no
	// limit); a connection beyond it is closed as soon as it is accepted.
	MaxConns int
	// MaxAttempts is the endpoints tried per connection (default DefaultMaxAttempts): an
	// attempt that fails (refused, timed out) moves on to the next, as nothing was sent yet.
	MaxAttempts int
	// EventLoops is how many event loops serve the connections Serve accepts, on Linux: 0 for
	// one per CPU (procs.Loops: GOMAXPROCS before the spare P), negative for none (a goroutine
	// per connection, as ServeConn's).
	EventLoops int
	// Metrics receives the listener's series; nil: none are kept.
	Metrics *Metrics
	// Log receives accept errors; the zero Logger discards them.
	Log logr.Logger
}

// TCPForwarder forwards each connection it is given to an endpoint, byte for byte in both
// directions. Its methods may be called from any goroutine.
type TCPForwarder struct {
	cfg     TCPConfig
	m       *listenerMetrics
	dialer  net.Dialer
	kill    context.Context // cancelled when Drain's deadline passes: dials stop
	killNow context.CancelFunc
	proxyV  atomic.Uint32 // the PROXY protocol version, cfg.ProxyProtocol at first

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*tcpConn]struct{}
	loops     []*tcpLoops    // serving listeners (Linux)
	loopConns int            // the connections the loops hold
	wg        sync.WaitGroup // one per entry of conns, and per connection of the loops
}

// NewTCPForwarder returns a forwarder with cfg, defaults applied.
func NewTCPForwarder(cfg TCPConfig) *TCPForwarder {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultTCPIdleTimeout
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	f := &TCPForwarder{
		cfg: cfg,
		m:   cfg.Metrics.listener(cfg.Name, false),
		// No TCP keep-alive probes (as nginx's stream and HAProxy's defaults): the idle timeout
		// ends silent connections, and the setsockopt calls cost a new connection's time.
		dialer:    net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*tcpConn]struct{}{},
	}
	f.kill, f.killNow = context.WithCancel(context.Background())
	f.proxyV.Store(uint32(cfg.ProxyProtocol))
	return f
}

// SetProxyProtocol changes the PROXY protocol header sent to backends (ProxyNone: none) for
// the connections that connect from then on, so a configuration change needs no new
// listener.
func (f *TCPForwarder) SetProxyProtocol(v ProxyVersion) { f.proxyV.Store(uint32(v)) }

// Serve accepts connections on ln and forwards each to an endpoint of cfg.Picker (on Linux in
// event loops, see cfg.EventLoops; else on a goroutine of its own), until the forwarder is closed (it returns ErrClosed and has closed
// ln) or ln fails for good (it returns that error). Accept errors such as running out of file
// descriptors are logged and retried after a pause (5 ms doubling to 1 s), as net/http does.
func (f *TCPForwarder) Serve(ln net.Listener) error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	f.mu.Unlock()
	if ok, err := f.serveLoops(ln); ok {
		return err
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = ln.Close()
		return ErrClosed
	}
	f.listeners[ln] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.listeners, ln)
		f.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if f.isClosed() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.cfg.Log.Error(err, "Accept failed, retrying", "listener", f.cfg.Name, "in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		f.m.conns.Inc()
		tc, err := f.admit(c)
		if err != nil {
			continue
		}
		go f.forward(tc, nil, f.cfg.Picker)
	}
}

// ServeConn forwards c, a connection accepted elsewhere, to an endpoint of p, writing head to
// the endpoint first (after the PROXY protocol header, if any): the bytes already read from c,
// such as the ClientHello of a TLS passthrough connection. It returns when the connection is
// over, having closed c; it counts against MaxConns and Drain waits for it. Once the forwarder
// is closed it closes c at once and returns ErrClosed.
func (f *TCPForwarder) ServeConn(c net.Conn, head []byte, p Picker) error {
	f.m.conns.Inc()
	tc, err := f.admit(c)
	if err != nil {
		return err
	}
	f.forward(tc, head, p)
	return nil
}

// errLimit is admit's refusal at MaxConns.
var errLimit = errors.New("l4: connection limit")

// admit registers c, or closes it when the forwarder is closed or full.
func (f *TCPForwarder) admit(c net.Conn) (*tcpConn, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = c.Close()
		return nil, ErrClosed
	}
	if f.cfg.MaxConns > 0 && len(f.conns) >= f.cfg.MaxConns {
		f.mu.Unlock()
		f.m.limit.Inc()
		_ = c.Close()
		return nil, errLimit
	}
	tc := &tcpConn{f: f, client: c}
	f.conns[tc] = struct{}{}
	f.wg.Add(1)
	f.mu.Unlock()
	f.m.active.Inc()
	return tc, nil
}

func (f *TCPForwarder) release(tc *tcpConn) {
	f.mu.Lock()
	delete(f.conns, tc)
	f.mu.Unlock()
	f.m.active.Dec()
	f.wg.Done()
}

func (f *TCPForwarder) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Conns is the number of connections being forwarded (or connecting) now.
func (f *TCPForwarder) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.conns) + f.loopConns
}

// Close stops accepting: it closes the listeners Serve is serving and refuses connections from
// then on. Established connections go on; Drain waits for them.
func (f *TCPForwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	lns := make([]net.Listener, 0, len(f.listeners))
	for ln := range f.listeners {
		lns = append(lns, ln)
	}
	loops := f.loops
	f.mu.Unlock()
	for _, ls := range loops {
		ls.stop()
	}
	var err error
	for _, ln := range lns {
		if e := ln.Close(); e != nil && !errors.Is(e, net.ErrClosed) {
			err = e
		}
	}
	return err
}

// Drain closes the forwarder (as Close does) and waits until every connection has ended, or
// until ctx ends: then it closes those left (counted as drain failures), waits for them to be
// released and returns ctx's error.
func (f *TCPForwarder) Drain(ctx context.Context) error {
	err := f.Close()
	done := make(chan struct{})
	go func() { f.wg.Wait(); close(done) }()
	select {
	case <-done:
		return err
	case <-ctx.Done():
	}
	f.killNow()
	f.mu.Lock()
	left := make([]*tcpConn, 0, len(f.conns))
	for tc := range f.conns {
		left = append(left, tc)
	}
	loops := f.loops
	f.mu.Unlock()
	for _, ls := range loops {
		ls.kill()
	}
	for _, tc := range left {
		tc.end(endDrain)
	}
	<-done
	return ctx.Err()
}

// How a connection ended, first cause first: the later causes see errors the first caused.
const (
	endNone int32 = iota
	endIdle
	endDrain
	endReset
	endDone // both directions ended with an end of stream: nothing to count
)

// tcpConn is one forwarded connection.
type tcpConn struct {
	f      *TCPForwarder
	client net.Conn

	mu      sync.Mutex
	backend net.Conn // set once connected
	// halves counts the directions whose source ended: the second needs no half-close, both
	// sockets are closed next.
	halves atomic.Int32
	ended  int32 // endNone until end
	// moved counts the bytes copied through a buffer (not spliced), as they are written: the
	// idle check's progress where the kernel's counters are not available.
	moved atomic.Int64

	// Used by the idle check only (one timer callback at a time).
	timer        *time.Timer
	lastProgress uint64
	lastActive   time.Time
}

// end closes both sides once, for the first cause: a reset (an error on either side) resets
// both, an idle timeout or a drain closes them.
func (tc *tcpConn) end(cause int32) {
	tc.mu.Lock()
	if tc.ended != endNone {
		tc.mu.Unlock()
		return
	}
	tc.ended = cause
	b := tc.backend
	tc.mu.Unlock()
	switch cause {
	case endIdle:
		tc.f.m.idle.Inc()
	case endDrain:
		tc.f.m.drain.Inc()
	case endReset:
		tc.f.m.reset.Inc()
		resetConn(tc.client)
		resetConn(b)
	}
	_ = tc.client.Close()
	if b != nil {
		_ = b.Close()
	}
}

// resetConn makes Close send a reset (SO_LINGER 0) rather than a FIN.
func resetConn(c net.Conn) {
	if t, ok := c.(*net.TCPConn); ok {
		_ = t.SetLinger(0)
	}
}

// setBackend records the connected backend; false (and b closed) when the connection ended
// meanwhile (a drain).
func (tc *tcpConn) setBackend(b net.Conn) bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.ended != endNone {
		_ = b.Close()
		return false
	}
	tc.backend = b
	return true
}

func (tc *tcpConn) endedBy() int32 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.ended
}

// forward connects tc to an endpoint of p and relays until both directions are done.
func (f *TCPForwarder) forward(tc *tcpConn, head []byte, p Picker) {
	defer f.release(tc)
	backend, lease := f.connect(tc, p)
	if backend == nil {
		if tc.endedBy() == endNone && f.kill.Err() == nil {
			f.m.noEndpoint.Inc()
			resetConn(tc.client)
		}
		_ = tc.client.Close()
		return
	}
	if !tc.setBackend(backend) {
		_ = tc.client.Close()
		if lease != nil {
			lease.Closed(nil)
		}
		return
	}
	if lease != nil {
		defer lease.Closed(nil)
	}
	if v := ProxyVersion(f.proxyV.Load()); v != ProxyNone || len(head) > 0 {
		first := AppendProxyHeader(make([]byte, 0, 64+len(head)), v, addrPort(tc.client.RemoteAddr()), addrPort(tc.client.LocalAddr()))
		first = append(first, head...)
		if _, err := backend.Write(first); err != nil {
			tc.end(endReset)
			return
		}
		f.m.bytesIn.Add(float64(len(head)))
	}
	f.relayBoth(tc, backend)
}

// relayBoth relays tc both ways (its backend connected) until both directions are done, then
// closes both sides.
func (f *TCPForwarder) relayBoth(tc *tcpConn, backend net.Conn) {
	if f.cfg.IdleTimeout > 0 {
		tc.lastActive = time.Now()
		tc.timer = time.AfterFunc(time.Hour, tc.checkIdle)
		tc.timer.Reset(f.idleStep())
		defer tc.timer.Stop()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tc.relay(backend, tc.client, f.m.bytesIn)
	}()
	tc.relay(tc.client, backend, f.m.bytesOut)
	wg.Wait()
	tc.mu.Lock()
	if tc.ended == endNone {
		tc.ended = endDone
	}
	tc.mu.Unlock()
	_ = tc.client.Close()
	_ = backend.Close()
}

// connect tries up to MaxAttempts endpoints; nil when none could be reached.
func (f *TCPForwarder) connect(tc *tcpConn, p Picker) (net.Conn, Lease) {
	var tried []string
	for attempt := 0; attempt < f.cfg.MaxAttempts && p != nil; attempt++ {
		addr, lease, ok := p.Pick(tried)
		if !ok {
			return nil, nil
		}
		c, err := f.dialer.DialContext(f.kill, "tcp", addr)
		if lease != nil {
			lease.Dialed(err)
		}
		if err == nil {
			return c, lease
		}
		if f.kill.Err() != nil {
			return nil, nil
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			f.m.refused.Inc()
		} else {
			f.m.connect.Inc()
		}
		tried = append(tried, addr)
	}
	return nil, nil
}

// relay copies src to dst until src ends, then half-closes dst (its peer reads an end of
// stream and may go on sending the other way). An error on either side resets both.
func (tc *tcpConn) relay(dst, src net.Conn, bytes prometheus.Counter) {
	// Short exchanges (a greeting, a request and its answer, a TLS handshake) go through a
	// small buffer: a splice costs a pipe and two system calls per chunk, more than copying a
	// few bytes does (new connections per second: 0.79x nginx's spliced, 1.0x and more copied).
	// Once a read fills the buffer the stream is bulk, and the rest is spliced.
	if done := tc.relayShort(dst, src, bytes); done {
		return
	}
	lr := io.LimitedReader{R: src}
	var buf []byte
	for {
		lr.N = copyChunk
		n, err := tc.copyOnce(dst, src, &lr, &buf)
		if n > 0 {
			bytes.Add(float64(n))
		}
		if err != nil {
			if tc.endedBy() == endNone {
				tc.end(endReset)
			}
			return
		}
		if lr.N > 0 { // src ended
			tc.halfClose(dst)
			return
		}
	}
}

// halfClose passes the end of one direction on (dst's peer reads an end of stream and may go
// on sending the other way), unless the other direction has ended already: both sockets are
// closed next, which says as much (a shutdown less per connection).
func (tc *tcpConn) halfClose(dst net.Conn) {
	if tc.halves.Add(1) == 2 {
		return
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// shortBuffer is the buffer the start of each direction of a connection moves through.
const shortBuffer = 16 << 10

var shortBuffers = sync.Pool{New: func() any { b := make([]byte, shortBuffer); return &b }}

// relayShort copies src to dst through a small buffer until a read fills it (it returns false:
// the caller goes on, spliced) or src ends (it half-closes dst, or resets both on an error, and
// returns true).
func (tc *tcpConn) relayShort(dst, src net.Conn, bytes prometheus.Counter) (done bool) {
	bp := shortBuffers.Get().(*[]byte)
	defer shortBuffers.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			tc.moved.Add(int64(m))
			bytes.Add(float64(m))
			if werr != nil {
				err = werr
			} else if n == len(buf) && err == nil {
				return false // bulk: spliced from here
			}
		}
		switch {
		case err == io.EOF:
			tc.halfClose(dst)
			return true
		case err != nil:
			if tc.endedBy() == endNone {
				tc.end(endReset)
			}
			return true
		}
	}
}

// copyOnce moves up to lr.N bytes of src (lr's reader) to dst: in the kernel (splice) between
// two TCP sockets on Linux, else through buf (allocated on first use), counting each write in
// tc.moved.
func (tc *tcpConn) copyOnce(dst, src net.Conn, lr *io.LimitedReader, buf *[]byte) (int64, error) {
	if d, ok := spliceable(dst, src); ok {
		return d.ReadFrom(lr)
	}
	if *buf == nil {
		*buf = make([]byte, 32<<10)
	}
	return io.CopyBuffer(countingWriter{dst, &tc.moved}, lr, *buf)
}

// countingWriter counts what it writes; it has no ReadFrom, so io.CopyBuffer uses the buffer
// it is given.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

// checkIdle runs every eighth of the idle timeout: the connection ends when neither side's
// socket moved a byte for the whole timeout.
func (tc *tcpConn) checkIdle() {
	if tc.endedBy() != endNone {
		return
	}
	p := uint64(tc.moved.Load()) + socketProgress(tc.client)
	tc.mu.Lock()
	b := tc.backend
	tc.mu.Unlock()
	if b != nil {
		p += socketProgress(b)
	}
	now := time.Now()
	if p != tc.lastProgress {
		tc.lastProgress, tc.lastActive = p, now
	} else if now.Sub(tc.lastActive) >= tc.f.cfg.IdleTimeout {
		tc.end(endIdle)
		return
	}
	tc.timer.Reset(tc.f.idleStep())
}

// idleStep is how often the idle check runs: an eighth of the timeout, at least 1 ms.
func (f *TCPForwarder) idleStep() time.Duration {
	return max(f.cfg.IdleTimeout/8, time.Millisecond)
}

// addrPort is a TCP address as a netip.AddrPort, IPv4 unmapped; the zero AddrPort for any
// other address.
func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
