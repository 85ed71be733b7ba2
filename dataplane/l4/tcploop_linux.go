//go:build linux

package l4

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"portico.dev/portico/dataplane/internal/rawsock"
	"portico.dev/portico/dataplane/procs"
)

// The TCP forwarder's event loops (Linux). A goroutine per connection and per direction, on
// net.Conn, costs a new connection more than the forwarding does: two goroutines and their
// wake-ups, and the net package's system calls around each socket (getsockname and
// getpeername on both, an epoll_ctl to forget each, a read that finds nothing before each
// wait). Measured on the tcpconn row (connect, 2 bytes from the backend, close): 27 system
// calls per connection and 0.75-0.81x nginx's stream module, which makes 17. A loop is one
// goroutine owning its connections, in edge-triggered epoll, with raw system calls: accept4,
// socket, setsockopt, connect, one getsockopt for the connect's outcome, the reads and writes,
// a shutdown for the half-close, two closes (16); idle, it parks in the runtime's poller
// (rawsock.Waiter). It copies through one buffer of its own; a connection whose
// read fills that buffer is bulk, and is handed to the goroutine path, which splices it in
// the kernel (zero copy: the tcpbulk row). docs/data-plane.md has the measurements.

const (
	// loopBuffer is what a loop reads at once, into the buffer all its connections share.
	loopBuffer = 16 << 10
	// loopTick bounds a loop's wait for events: dial timeouts and the idle check are looked
	// at this often.
	loopTick = 250 * time.Millisecond
)

// tcpLoops are the loops serving one listener.
type tcpLoops struct {
	f       *TCPForwarder
	lnfd    int // the listening socket's duplicate (rawsock.DupListener), outside Go's poller
	noDelay rawsock.NoDelay
	workers []*tcpWorker
	// accepting counts the loops that may still accept: the last to stop closes the listening
	// socket, so that new connections are refused as soon as the forwarder is closed.
	accepting atomic.Int32
	stopOnce  sync.Once
	stopped   chan struct{} // closed when the forwarder is closed: the loops stop accepting
}

// tcpWorker is one loop.
type tcpWorker struct {
	ls *tcpLoops
	f  *TCPForwarder
	ep int
	// waiter takes ep's events, parking the loop's goroutine while there are none.
	waiter       *rawsock.Waiter
	events       []syscall.EpollEvent
	wakeR, wakeW int
	buf          []byte
	fds          []loopFD // by descriptor
	conns        []*loopConn
	spare        []*loopConn
	now          time.Time
	lastTick     time.Time
	closing      bool
	acceptPaused bool
	// mu guards exited: once the loop has ended (and closed its pipe), wake writes nothing (the
	// pipe's descriptor number may belong to anything by then).
	mu     sync.Mutex
	exited bool
}

// loopFD is what a descriptor is to its loop: a side of a connection, with a generation that
// tells an event for this descriptor from one for an earlier use of its number.
type loopFD struct {
	c   *loopConn
	gen uint32
}

// Messages to a loop (one byte each on its pipe).
const (
	loopStop byte = 1 // stop accepting; end when the last connection has
	loopKill byte = 2 // end every connection now (a drain's deadline)
)

// serveLoops serves ln with event loops until the forwarder is closed; it reports false when
// loops cannot serve it (not a TCP listener, no loops wanted, a system call failed), and
// Serve's goroutine path serves it then.
func (f *TCPForwarder) serveLoops(ln net.Listener) (bool, error) {
	n := f.cfg.EventLoops
	if n == 0 {
		n = procs.Loops()
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok || n < 0 {
		return false, nil
	}
	lnfd, err := rawsock.DupListener(tl) // ln's own descriptor stays with Go's poller until closed
	if err != nil {
		return false, nil
	}
	ls := &tcpLoops{f: f, lnfd: lnfd, stopped: make(chan struct{})}
	// TCP_NODELAY towards clients: without it, an answer written in two parts waits for the
	// client's delayed ACK (Nagle), 40 ms.
	ls.noDelay = rawsock.SetListenerNoDelay(ls.lnfd)
	for range n {
		w, err := newTCPWorker(ls)
		if err != nil {
			for _, w := range ls.workers {
				w.closeFDs()
			}
			rawsock.Close(ls.lnfd)
			return false, nil
		}
		ls.workers = append(ls.workers, w)
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		for _, w := range ls.workers {
			w.closeFDs()
		}
		rawsock.Close(ls.lnfd)
		_ = ln.Close()
		return true, ErrClosed
	}
	f.loops = append(f.loops, ls)
	f.mu.Unlock()
	// The loops accept from the duplicate; Go's poller must not watch the listener too.
	_ = ln.Close()
	ls.accepting.Store(int32(n))
	for _, w := range ls.workers {
		go w.run()
	}
	<-ls.stopped
	return true, ErrClosed
}

// stop has the loops stop accepting (Close).
func (ls *tcpLoops) stop() {
	ls.stopOnce.Do(func() {
		for _, w := range ls.workers {
			w.wake(loopStop)
		}
		close(ls.stopped)
	})
}

// kill has the loops end every connection now (Drain's deadline).
func (ls *tcpLoops) kill() {
	for _, w := range ls.workers {
		w.wake(loopKill)
	}
}

func newTCPWorker(ls *tcpLoops) (*tcpWorker, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		_ = syscall.Close(ep)
		return nil, err
	}
	w := &tcpWorker{ls: ls, f: ls.f, ep: ep, wakeR: p[0], wakeW: p[1], buf: make([]byte, loopBuffer),
		events: make([]syscall.EpollEvent, 128)}
	if w.waiter, err = rawsock.NewWaiter(ep, w.events); err != nil {
		w.closeFDs()
		return nil, err
	}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, w.wakeR, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(w.wakeR)}); err != nil {
		w.closeFDs()
		return nil, err
	}
	// EPOLLEXCLUSIVE: a new connection wakes one loop, not all.
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, ls.lnfd, &syscall.EpollEvent{Events: syscall.EPOLLIN | epollExclusive, Fd: int32(ls.lnfd)}); err != nil {
		w.closeFDs()
		return nil, err
	}
	return w, nil
}

// epollExclusive is EPOLLEXCLUSIVE (Linux 4.5), which package syscall does not name.
const epollExclusive = 1 << 28

func (w *tcpWorker) closeFDs() {
	if w.waiter != nil {
		_ = w.waiter.Close()
	} else {
		_ = syscall.Close(w.ep)
	}
	_ = syscall.Close(w.wakeR)
	_ = syscall.Close(w.wakeW)
}

func (w *tcpWorker) wake(b byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.exited {
		_, _ = syscall.Write(w.wakeW, []byte{b})
	}
}

func (w *tcpWorker) run() {
	defer func() {
		w.stopAccepting()
		w.mu.Lock()
		w.exited = true
		w.closeFDs()
		w.mu.Unlock()
	}()
	events := w.events
	w.now = time.Now()
	w.lastTick = w.now
	for {
		n, err := w.waiter.Wait(w.lastTick.Add(loopTick))
		if err != nil && err != syscall.EINTR {
			w.f.cfg.Log.Error(err, "epoll_wait failed", "listener", w.f.cfg.Name)
			w.endAll(endReset)
			return
		}
		w.now = time.Now()
		for _, ev := range events[:max(n, 0)] {
			fd := int(ev.Fd)
			switch {
			case fd == w.wakeR:
				if w.onWake() {
					return
				}
			case fd == w.ls.lnfd && !w.closing: // once closing, the number may be reused
				w.accept()
			case fd < len(w.fds) && w.fds[fd].c != nil && w.fds[fd].gen == uint32(ev.Pad):
				w.fds[fd].c.onEvent(fd, ev.Events)
			}
		}
		if w.now.Sub(w.lastTick) >= loopTick {
			w.tick()
		}
		if w.closing && len(w.conns) == 0 {
			return
		}
	}
}

// onWake handles the loop's messages; it reports whether the loop ends now.
func (w *tcpWorker) onWake() bool {
	var b [16]byte
	n, _ := syscall.Read(w.wakeR, b[:])
	for _, m := range b[:max(n, 0)] {
		switch m {
		case loopStop:
			w.stopAccepting()
		case loopKill:
			w.stopAccepting()
			w.endAll(endDrain)
			return true
		}
	}
	return false
}

// stopAccepting has the loop accept no more (once); the last loop to stop closes the listening
// socket.
func (w *tcpWorker) stopAccepting() {
	if w.closing {
		return
	}
	w.closing = true
	_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, w.ls.lnfd, nil)
	if w.ls.accepting.Add(-1) == 0 {
		rawsock.Close(w.ls.lnfd)
	}
}

// endAll ends every connection of the loop for cause.
func (w *tcpWorker) endAll(cause int32) {
	for len(w.conns) > 0 {
		w.conns[len(w.conns)-1].end(cause)
	}
}

// tick times out dials and idle connections, and resumes accepting after a pause.
func (w *tcpWorker) tick() {
	w.lastTick = w.now
	if w.acceptPaused && !w.closing {
		w.acceptPaused = false
		_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_ADD, w.ls.lnfd, &syscall.EpollEvent{Events: syscall.EPOLLIN | epollExclusive, Fd: int32(w.ls.lnfd)})
		w.accept()
	}
	idle := w.f.cfg.IdleTimeout
	// Ending a connection swaps the last one into its place: walk from the end.
	for i := len(w.conns) - 1; i >= 0; i-- {
		if i >= len(w.conns) {
			continue
		}
		c := w.conns[i]
		switch {
		case c.bfd >= 0 && !c.connected && w.now.After(c.dialBy):
			c.dialFailed(os.ErrDeadlineExceeded)
		case c.connected && idle > 0 && w.now.Sub(c.active) >= idle:
			c.end(endIdle)
		}
	}
}

// accept takes a connection waiting on the listening socket: one per event, as nginx does by
// default (multi_accept off); the listener is level-triggered, so the next wait reports the
// others, and no accept4 is spent finding the queue empty.
func (w *tcpWorker) accept() {
	f := w.f
	if w.closing {
		return
	}
	nfd, peer, errno := rawAccept4(w.ls.lnfd)
	switch errno {
	case 0:
	case syscall.EAGAIN, syscall.EINTR, syscall.ECONNABORTED, syscall.EINVAL:
		return // none left, another loop took it, or the socket stopped listening
	case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
		// Out of descriptors or memory: this loop stops accepting until its next tick (the
		// listening socket would wake it at once again), as Serve backs off.
		f.cfg.Log.Error(errno, "Accept failed, retrying", "listener", f.cfg.Name, "in", loopTick.String())
		_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, w.ls.lnfd, nil)
		w.acceptPaused = true
		return
	default:
		f.cfg.Log.Error(errno, "Accept failed", "listener", f.cfg.Name)
		return
	}
	f.m.conns.Inc()
	if !f.admitLoop() {
		rawsock.Close(nfd)
		return
	}
	w.ls.noDelay.Accepted(nfd, w.now)
	c := w.newConn()
	c.cfd, c.peer, c.p = nfd, peer, f.cfg.Picker
	c.active = w.now
	if !w.register(nfd, c) {
		c.cfd = -1
		rawsock.Close(nfd)
		c.end(endReset)
		return
	}
	c.dial()
}

func (w *tcpWorker) newConn() *loopConn {
	var c *loopConn
	if n := len(w.spare); n > 0 {
		c = w.spare[n-1]
		w.spare = w.spare[:n-1]
	} else {
		c = &loopConn{}
	}
	c.w, c.cfd, c.bfd, c.idx = w, -1, -1, len(w.conns)
	w.conns = append(w.conns, c)
	return c
}

// register adds fd, a side of c, to the loop's epoll set (edge-triggered, both directions).
func (w *tcpWorker) register(fd int, c *loopConn) bool {
	for fd >= len(w.fds) {
		w.fds = append(w.fds, loopFD{})
	}
	e := &w.fds[fd]
	e.gen++
	e.c = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLPRI | syscall.EPOLLOUT | syscall.EPOLLRDHUP | epollET, Fd: int32(fd), Pad: int32(e.gen)}
	if err := rawsock.EpollAdd(w.ep, fd, &ev); err != 0 {
		e.c = nil
		return false
	}
	return true
}

// epollET is EPOLLET as the unsigned event mask.
const epollET = 1 << 31

// forget drops fd from the loop's table (its epoll registration ends with its close).
func (w *tcpWorker) forget(fd int) {
	if fd >= 0 && fd < len(w.fds) {
		w.fds[fd].c = nil
	}
}

// admitLoop counts a loop's new connection, or refuses it when the forwarder is closed or full.
func (f *TCPForwarder) admitLoop() bool {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return false
	}
	if f.cfg.MaxConns > 0 && len(f.conns)+f.loopConns >= f.cfg.MaxConns {
		f.mu.Unlock()
		f.m.limit.Inc()
		return false
	}
	f.loopConns++
	f.wg.Add(1)
	f.mu.Unlock()
	f.m.active.Inc()
	return true
}

// releaseLoop uncounts a loop's connection that ended.
func (f *TCPForwarder) releaseLoop() {
	f.mu.Lock()
	f.loopConns--
	f.mu.Unlock()
	f.m.active.Dec()
	f.wg.Done()
}

// loopConn is a connection a loop forwards.
type loopConn struct {
	w        *tcpWorker
	idx      int // in w.conns
	cfd, bfd int // the client's socket; the backend's (-1: none yet)
	peer     netip.AddrPort
	// Connecting: the endpoints tried, the attempt under way.
	p         Picker
	tried     []string
	attempts  int
	lease     Lease
	dialBy    time.Time
	connected bool
	// fresh: connected, and no byte has passed to or from the backend yet but the PROXY
	// header's first hdr bytes (see retry).
	fresh bool
	hdr   int
	// Readiness, as edge-triggered epoll reported it and EAGAIN (or a short read) took it
	// back; cHup, bHup: the peer's end, an error or urgent data was reported, so reads go on
	// to EAGAIN.
	cIn, cOut, bIn, bOut bool
	cHup, bHup           bool
	up, down             loopFlow // client to backend, backend to client
	active               time.Time
	ended                bool
}

// loopFlow is one direction of a connection.
type loopFlow struct {
	pend []byte // read, not written yet
	keep []byte // pend's buffer, kept for the next time
	eof  bool   // the source ended
	done bool   // and its end was passed on
}

func (c *loopConn) onEvent(fd int, ev uint32) {
	in := ev&(syscall.EPOLLIN|syscall.EPOLLPRI|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
	out := ev&(syscall.EPOLLOUT|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
	// Urgent data (EPOLLPRI) counts as an end: a read stops short at the urgent mark with data
	// still queued after it, so the socket is read until EAGAIN from then on.
	hup := ev&(syscall.EPOLLPRI|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
	if fd == c.cfd {
		c.cIn, c.cOut, c.cHup = c.cIn || in, c.cOut || out, c.cHup || hup
	} else {
		c.bIn, c.bOut, c.bHup = c.bIn || in, c.bOut || out, c.bHup || hup
	}
	c.drive()
}

// drive moves what it can both ways.
func (c *loopConn) drive() {
	if !c.connected {
		if c.bfd < 0 || !c.bOut || !c.connectDone() {
			return
		}
	}
	f := c.w.f
	if !c.pump(&c.up, &c.down, c.cfd, c.bfd, &c.cIn, &c.bOut, c.cHup, f.m.bytesIn) ||
		!c.pump(&c.down, &c.up, c.bfd, c.cfd, &c.bIn, &c.cOut, c.bHup, f.m.bytesOut) {
		return
	}
	if c.up.done && c.down.done {
		c.end(endDone)
	}
}

// pump moves fl's bytes from src to dst until one side would block; at src's end it passes
// the end on (half-closes dst) unless the other direction has ended too. It reports false when
// the connection ended (an error on either side resets both) or was handed over. A read shorter
// than the buffer took all there was (as nginx reads): the next bytes bring an edge of their
// own, so src is not read again until then, unless its end was reported (srcHup), which only
// a read returns.
func (c *loopConn) pump(fl, other *loopFlow, src, dst int, srcIn, dstOut *bool, srcHup bool, bytes prometheus.Counter) bool {
	w := c.w
	for {
		if len(fl.pend) > 0 {
			if !*dstOut {
				return true
			}
			n, e := rawsock.Write(dst, fl.pend)
			if e == syscall.EAGAIN {
				*dstOut = false
				return true
			}
			if e != 0 {
				c.failed(dst, e)
				return false
			}
			if c.fresh && dst == c.bfd {
				header := min(n, c.hdr)
				c.hdr -= header
				c.fresh = n == header
			}
			fl.pend = fl.pend[n:]
			c.active = w.now
			continue
		}
		if fl.done {
			return true
		}
		if fl.eof {
			fl.done = true
			if !other.done {
				_ = rawsock.ShutdownWrite(dst)
			}
			return true
		}
		if !*srcIn {
			return true
		}
		n, e := rawsock.Read(src, w.buf)
		switch {
		case e == syscall.EAGAIN:
			*srcIn = false
			return true
		case e != 0:
			c.failed(src, e)
			return false
		case n == 0:
			fl.eof = true
			continue
		}
		if src == c.bfd {
			c.fresh = false
		}
		c.active = w.now
		bytes.Add(float64(n))
		if n < len(w.buf) && !srcHup {
			*srcIn = false
		}
		m := 0
		if *dstOut {
			var e syscall.Errno
			m, e = rawsock.Write(dst, w.buf[:n])
			switch {
			case e == syscall.EAGAIN:
				m, *dstOut = 0, false
			case e != 0:
				if c.fresh && dst == c.bfd {
					fl.pend = append(fl.keep[:0], w.buf[:n]...) // for the next endpoint
					fl.keep = fl.pend
				}
				c.failed(dst, e)
				return false
			case m > 0 && dst == c.bfd:
				c.fresh = false
			}
		}
		if m < n {
			fl.pend = append(fl.keep[:0], w.buf[m:n]...)
			fl.keep = fl.pend
			continue
		}
		if n == len(w.buf) && !other.eof && len(other.pend) == 0 {
			// A read filled the buffer: bulk. The goroutine path splices it in the kernel.
			c.handOver()
			return false
		}
	}
}

// failed ends the connection after an error on fd, resetting both sides; unless fd is the
// backend's, reset (or its pipe broken) before a byte passed either way but the PROXY header:
// its listener was closed with the connection still queued, as a pod that stops does (the
// kernel completed the handshake; nothing reads there any more). Nothing of the client's was
// delivered, so the connection goes on to another endpoint as after a refusal, with what the
// client sent so far, and the endpoint is ejected as a refusing one (Lease.Closed with
// ECONNREFUSED). The goroutine path has no such retry: it relays the reset.
func (c *loopConn) failed(fd int, e syscall.Errno) {
	if !c.fresh || fd != c.bfd || (e != syscall.ECONNRESET && e != syscall.EPIPE) {
		c.end(endReset)
		return
	}
	if c.lease != nil {
		c.lease.Closed(syscall.ECONNREFUSED)
		c.lease = nil
	}
	c.w.f.m.refused.Inc()
	c.w.forget(c.bfd)
	rawsock.Close(c.bfd)
	c.bfd, c.bIn, c.bOut, c.bHup = -1, false, false, false
	c.connected, c.fresh = false, false
	c.up.pend = c.up.pend[c.hdr:] // the client's bytes; a new header comes with the next connect
	c.hdr = 0
	c.up.done = false // an end of stream passed on goes to the next endpoint too
	c.down = loopFlow{keep: c.down.keep[:0]}
	c.dial()
}

// dial starts a connection to the next endpoint; when none is left the client is reset.
func (c *loopConn) dial() {
	w, f := c.w, c.w.f
	for c.attempts < f.cfg.MaxAttempts && c.p != nil {
		addr, lease, ok := c.p.Pick(c.tried)
		if !ok {
			break
		}
		c.attempts++
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			// A name, not an address (an FQDN EndpointSlice): the goroutine path dials it
			// through the resolver, which a loop cannot wait for. It picks again.
			if lease != nil {
				lease.Dialed(context.Canceled) // no fault of the endpoint
			}
			c.handOverToDial()
			return
		}
		fd, e := rawConnect(ap)
		if e != 0 && e != syscall.EINPROGRESS {
			if fd >= 0 {
				rawsock.Close(fd)
			}
			if lease != nil {
				lease.Dialed(e)
			}
			c.countDialFailure(e)
			c.tried = append(c.tried, addr)
			continue
		}
		if !w.register(fd, c) {
			rawsock.Close(fd)
			if lease != nil {
				lease.Dialed(syscall.ENOMEM)
			}
			f.m.connect.Inc()
			break
		}
		c.bfd, c.lease, c.dialBy = fd, lease, w.now.Add(f.cfg.DialTimeout)
		c.bIn, c.bOut, c.bHup = false, e == 0, false
		c.tried = append(c.tried, addr)
		if e == 0 {
			c.drive()
		}
		return
	}
	if f.kill.Err() == nil {
		f.m.noEndpoint.Inc()
	}
	c.end(endReset)
}

func (c *loopConn) countDialFailure(e error) {
	if e == syscall.ECONNREFUSED {
		c.w.f.m.refused.Inc()
	} else {
		c.w.f.m.connect.Inc()
	}
}

// connectDone looks at the outcome of the connect under way (its socket turned writable): on
// success the connection relays from then on (true); a failure moves on to the next endpoint.
func (c *loopConn) connectDone() bool {
	v, e := rawGetsockoptInt(c.bfd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	if e == 0 && v != 0 {
		e = syscall.Errno(v)
	}
	if e != 0 {
		c.dialFailed(e)
		return false
	}
	c.connected, c.fresh, c.active = true, true, c.w.now
	if c.lease != nil {
		c.lease.Dialed(nil)
	}
	if v := ProxyVersion(c.w.f.proxyV.Load()); v != ProxyNone {
		local, _ := rawSockname(c.cfd)
		h := AppendProxyHeader(make([]byte, 0, 64+len(c.up.pend)), v, c.peer, local)
		c.hdr = len(h)
		c.up.pend = append(h, c.up.pend...) // after the header: what a reset attempt kept
		c.up.keep = c.up.pend
	}
	return true
}

// dialFailed gives up the connect under way (refused, failed, timed out) and tries the next
// endpoint.
func (c *loopConn) dialFailed(err error) {
	if c.lease != nil {
		c.lease.Dialed(err)
		c.lease = nil
	}
	c.countDialFailure(err)
	c.w.forget(c.bfd)
	rawsock.Close(c.bfd)
	c.bfd, c.bIn, c.bOut, c.bHup = -1, false, false, false
	c.dial()
}

// end closes both sides once, for cause (see TCPForwarder's end causes): a reset resets both.
func (c *loopConn) end(cause int32) {
	if c.ended {
		return
	}
	c.ended = true
	f := c.w.f
	switch cause {
	case endIdle:
		f.m.idle.Inc()
	case endDrain:
		f.m.drain.Inc()
	case endReset:
		if c.connected {
			f.m.reset.Inc()
		}
		rawLingerZero(c.cfd)
		rawLingerZero(c.bfd)
	}
	c.closeSides()
	if c.lease != nil {
		if c.connected {
			c.lease.Closed(nil)
		} else {
			c.lease.Dialed(context.Canceled) // a drain cut the connect short
		}
	}
	c.detach()
	f.releaseLoop()
	c.recycle()
}

// closeSides closes both descriptors (which ends their epoll registrations).
func (c *loopConn) closeSides() {
	w := c.w
	for _, fd := range [2]int{c.cfd, c.bfd} {
		if fd >= 0 {
			w.forget(fd)
			rawsock.Close(fd)
		}
	}
	c.cfd, c.bfd = -1, -1
}

// detach removes c from its loop's list.
func (c *loopConn) detach() {
	w := c.w
	last := w.conns[len(w.conns)-1]
	w.conns[c.idx] = last
	last.idx = c.idx
	w.conns[len(w.conns)-1] = nil
	w.conns = w.conns[:len(w.conns)-1]
}

// recycle keeps c for the loop's next connection (its flows' buffers with it, unless large).
func (c *loopConn) recycle() {
	w := c.w
	if len(w.spare) >= 64 {
		return
	}
	up, down := c.up.keep, c.down.keep
	if cap(up) > loopBuffer {
		up = nil
	}
	if cap(down) > loopBuffer {
		down = nil
	}
	*c = loopConn{tried: c.tried[:0], up: loopFlow{keep: up[:0]}, down: loopFlow{keep: down[:0]}}
	w.spare = append(w.spare, c)
}

// leave takes c out of its loop for the goroutine path: its descriptors out of the epoll set
// and the loop's table, c recycled, the descriptors made net.Conns (duplicates: the loop's are
// closed; backend nil when c has none). When that fails both are closed and c's count
// released (ok false).
func (c *loopConn) leave() (client, backend net.Conn, ok bool) {
	w, f := c.w, c.w.f
	cfd, bfd := c.cfd, c.bfd
	for _, fd := range [2]int{cfd, bfd} {
		if fd >= 0 {
			_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, fd, nil)
			w.forget(fd)
		}
	}
	c.cfd, c.bfd, c.ended = -1, -1, true
	c.detach()
	c.recycle()
	client, err := fdConn(cfd)
	if bfd >= 0 {
		if err != nil {
			rawsock.Close(bfd)
		} else if backend, err = fdConn(bfd); err != nil {
			_ = client.Close()
		}
	}
	if err != nil {
		f.m.reset.Inc()
		f.releaseLoop()
		return nil, nil, false
	}
	return client, backend, true
}

// handOver gives a bulk connection to the goroutine path, which splices it: both descriptors
// leave the loop as net.Conns, its count and lease with them.
func (c *loopConn) handOver() {
	f, lease := c.w.f, c.lease
	c.lease = nil
	client, backend, ok := c.leave()
	if ok {
		tc := &tcpConn{f: f, client: client, backend: backend}
		if f.adoptFromLoop(tc) {
			go func() {
				defer f.release(tc)
				if lease != nil {
					defer lease.Closed(nil)
				}
				f.relayBoth(tc, backend)
			}()
			return
		}
		_ = backend.Close()
	}
	if lease != nil {
		lease.Closed(nil)
	}
}

// handOverToDial gives a connection not connected yet to the goroutine path, which connects
// it (forward).
func (c *loopConn) handOverToDial() {
	f, p := c.w.f, c.p
	if client, _, ok := c.leave(); ok {
		if tc := (&tcpConn{f: f, client: client}); f.adoptFromLoop(tc) {
			go f.forward(tc, nil, p)
		}
	}
}

// adoptFromLoop moves tc's count from the loops to the goroutine path's connections (its
// wait-group slot with it). When Drain's deadline has passed (it ended the connections it knew,
// and would not see this one), tc's client is closed and counted as drained instead, and false
// is returned.
func (f *TCPForwarder) adoptFromLoop(tc *tcpConn) bool {
	f.mu.Lock()
	if f.kill.Err() != nil {
		f.mu.Unlock()
		_ = tc.client.Close()
		f.m.drain.Inc()
		f.releaseLoop()
		return false
	}
	f.loopConns--
	f.conns[tc] = struct{}{}
	f.mu.Unlock()
	return true
}

// fdConn makes a net.Conn of a socket descriptor, which it closes (net.FileConn duplicates it).
func fdConn(fd int) (net.Conn, error) {
	file := os.NewFile(uintptr(fd), "")
	c, err := net.FileConn(file)
	_ = file.Close()
	return c, err
}

// Raw system calls of the TCP loops alone (the others are package rawsock's, which says why).

func rawAccept4(lnfd int) (int, netip.AddrPort, syscall.Errno) {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	fd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lnfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)),
		syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	return int(fd), rawAddrPort(&rsa), 0
}

func rawSockname(fd int) (netip.AddrPort, syscall.Errno) {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	_, _, e := syscall.RawSyscall(syscall.SYS_GETSOCKNAME, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)))
	if e != 0 {
		return netip.AddrPort{}, e
	}
	return rawAddrPort(&rsa), 0
}

// rawAddrPort is an IPv4 or IPv6 socket address as an AddrPort, IPv4 unmapped.
func rawAddrPort(rsa *syscall.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), ntohs(sa.Port))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), ntohs(sa.Port))
	}
	return netip.AddrPort{}
}

// ntohs reads a port as the kernel stores it (network order).
func ntohs(p uint16) uint16 {
	var b [2]byte
	*(*uint16)(unsafe.Pointer(&b[0])) = p
	return binary.BigEndian.Uint16(b[:])
}

// rawConnect opens a non-blocking socket with TCP_NODELAY and starts connecting it to ap: the
// descriptor, and 0 or EINPROGRESS (or the failure, the descriptor then -1 or to be closed).
func rawConnect(ap netip.AddrPort) (int, syscall.Errno) {
	family := syscall.AF_INET
	if !ap.Addr().Is4() {
		family = syscall.AF_INET6
	}
	fd, _, e := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	rawsock.SetNoDelay(int(fd))
	var port [2]byte
	binary.BigEndian.PutUint16(port[:], ap.Port())
	if family == syscall.AF_INET {
		sa := syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: *(*uint16)(unsafe.Pointer(&port[0])), Addr: ap.Addr().As4()}
		_, _, e = syscall.RawSyscall(syscall.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	} else {
		sa := syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: *(*uint16)(unsafe.Pointer(&port[0])), Addr: ap.Addr().As16()}
		_, _, e = syscall.RawSyscall(syscall.SYS_CONNECT, fd, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	}
	return int(fd), e
}

func rawGetsockoptInt(fd, level, opt int) (int, syscall.Errno) {
	var v int32
	l := uint32(4)
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	return int(v), e
}

// rawLingerZero makes the descriptor's close send a reset rather than a FIN.
func rawLingerZero(fd int) {
	if fd < 0 {
		return
	}
	l := syscall.Linger{Onoff: 1, Linger: 0}
	_, _, _ = syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, uintptr(unsafe.Pointer(&l)), unsafe.Sizeof(l), 0)
}
