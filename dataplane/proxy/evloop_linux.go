//go:build linux

package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"portico.dev/portico/dataplane/internal/rawsock"
	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/route"
)

// Event loops for the cleartext listener, on Linux, which also serve the HTTPS listener's
// HTTP/1.1 connections once their handshake is done (evtls_linux.go). Each loop is a goroutine
// locked to its OS thread, with its own epoll instance; it accepts connections from the shared
// listening socket (EPOLLEXCLUSIVE wakes one loop per connection), and owns them and the
// upstream connections they use: one thread runs a request from its first byte to its last,
// with no goroutine switch, no channel and no lock, as nginx's and HAProxy's workers do. There
// are as many loops as Ps.
//
// A loop serves the common exchange: an HTTP/1.1 request the fast path parses
// (parseRequestHead) with no body or a Content-Length body up to maxLoopBody (read whole, then
// sent with the head in one write), forwarded to an HTTP/1.1 backend, whatever the answer
// (informational answers, bodies of any length, chunked or ended by close). Every other request
// (a longer or chunked body, Expect, Upgrade/WebSocket, an h2c backend, the HTTP/2 preface,
// HTTP/1.0, a head larger than the buffer, anything the parser leaves to net/http) hands its
// connection, unread bytes included and before anything of the request is consumed, to the
// goroutine fast path (h1Conn), which serves it from then on as it serves every connection where
// loops are off.
//
// Timers are coarse: each loop checks its connections' deadlines every loopTick (request-head,
// idle, connect and upstream timeouts fire up to that late).

const (
	// deferAccept: a connection that sends nothing is handed to a loop after this anyway.
	deferAccept = 10 * time.Second
	loopTick    = 100 * time.Millisecond
	// unwatchedWait: how long an accepted connection waiting for its backend may stay out of
	// the loop's epoll set (see watchPending).
	unwatchedWait = 100 * time.Millisecond
	// loopOutHigh: a loop writes to a client once it holds this much of a streamed body.
	loopOutHigh = 64 << 10
	// loopBuffer is the size of the buffers a loop lends its connections (client input,
	// client output, upstream input).
	loopBuffer = 8 << 10
	// maxLoopBody is the longest request body a loop reads whole before forwarding it with the
	// head in one write (nginx buffers bodies too); a longer one goes to the goroutine path,
	// which streams it. At 128 KiB, 128 KiB uploads measured 8-17% more requests per second, at
	// 12-20% less CPU per request, than streamed on the goroutine path.
	maxLoopBody = 128 << 10
	// bodyBuffer is the size of the buffers that hold a request with its body; a loop keeps up
	// to maxFreeBodyBuffers of them for reuse (2.2 MiB).
	bodyBuffer         = maxLoopBody + loopBuffer
	maxFreeBodyBuffers = 16
	// maxFreeBuffers bounds the buffers a loop keeps for reuse (2 MiB).
	maxFreeBuffers = 256

	epollET        = 1 << 31
	epollExclusive = 1 << 28
	epollIn        = syscall.EPOLLIN
	epollOut       = syscall.EPOLLOUT
	epollRdHup     = syscall.EPOLLRDHUP
	epollHupErr    = syscall.EPOLLHUP | syscall.EPOLLERR
)

// loops are the event loops serving one listener.
type loops struct {
	s       *h1Server
	lnfd    int // the listening socket's duplicate (rawsock.DupListener), outside Go's poller
	workers []*worker
	live    atomic.Int32 // loops still running; the last closes the listening socket
	stopped chan struct{}
	once    sync.Once
	// noDelay: accepted connections inherit TCP_NODELAY from the listening socket (those
	// queued before it was set excepted: see rawsock.NoDelay).
	noDelay rawsock.NoDelay
}

// serveLoops serves ln with event loops until Shutdown. It reports false when it cannot (ln is
// not a TCP listener, or a loop could not be set up), and the caller serves ln itself.
func (s *h1Server) serveLoops(ln net.Listener, n int) (bool, error) {
	tl, ok := ln.(*net.TCPListener)
	if !ok || n <= 0 {
		return false, nil
	}
	lnfd, err := rawsock.DupListener(tl) // ln's own descriptor stays with Go's poller until closed
	if err != nil {
		return false, nil
	}
	ls := &loops{s: s, lnfd: lnfd, stopped: make(chan struct{})}
	// The kernel hands a connection over once its first bytes came (nginx's listen deferred,
	// HAProxy's defer-accept): the loop reads the request at its first event, and a client
	// that connects and sends nothing costs the loops nothing.
	_ = syscall.SetsockoptInt(lnfd, syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, int(deferAccept/time.Second))
	// Accepted connections inherit TCP_NODELAY from the listening socket: one system call, not
	// one each.
	ls.noDelay = rawsock.SetListenerNoDelay(lnfd)
	for i := range n {
		w, err := newWorker(ls, i)
		if err != nil {
			ls.discard()
			return false, nil
		}
		ls.workers = append(ls.workers, w)
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ls.discard()
		return true, http.ErrServerClosed
	}
	s.ln, s.loops = ln, ls
	s.wg.Add(n)
	ls.live.Store(int32(n))
	s.mu.Unlock()
	s.markStarted()
	// The loops accept from the duplicate; Go's poller must not watch the listener too.
	_ = ln.Close()
	for _, w := range ls.workers {
		go w.run()
	}
	<-ls.stopped
	return true, http.ErrServerClosed
}

// discard releases loops that never ran.
func (ls *loops) discard() {
	for _, w := range ls.workers {
		w.closeFDs()
	}
	rawsock.Close(ls.lnfd)
}

// stop stops accepting: the listening socket stops listening, and the loops are woken to close
// their idle connections and finish the others (Shutdown waits for them through s.wg).
func (ls *loops) stop() {
	ls.once.Do(func() {
		for _, w := range ls.workers {
			_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, ls.lnfd, nil)
		}
		// The socket stops listening (connections still queued are reset, as a close does);
		// its descriptor is closed by the last loop, so that no loop's accept meets a number
		// reused meanwhile.
		_ = syscall.Shutdown(ls.lnfd, syscall.SHUT_RDWR)
		for _, w := range ls.workers {
			w.wake(wakeStop)
		}
		close(ls.stopped)
	})
}

// kill ends every connection at once (Shutdown's deadline passed).
func (ls *loops) kill() {
	ls.stop()
	for _, w := range ls.workers {
		w.wake(wakeKill)
	}
}

// fdOwner is what a descriptor of a loop belongs to; gen tells a stale event (of a descriptor
// closed and reused within one batch of events) from a current one.
type fdOwner struct {
	c   *evConn
	u   *evUp
	gen uint32
}

type worker struct {
	ls           *loops
	s            *h1Server
	h            *Handler
	ep           int
	events       []syscall.EpollEvent
	wakeR, wakeW int
	fds          []fdOwner
	gen          uint32
	clients      []*evConn
	pools        map[string]*evPool
	scratch      []byte
	free         [][]byte // buffers to lend
	freeBodies   [][]byte // bodyBuffer-sized buffers to lend
	now          time.Time
	lastTick     time.Time
	lastSweep    time.Time
	closing      bool
	acceptPaused bool
	// count is how many connections the loop has (read by the others to balance them); inbox
	// holds connections other loops accepted for this one.
	count   atomic.Int32
	inboxMu sync.Mutex
	inbox   []accepted
	exited  bool
	gauge   prometheus.Gauge
	limit   int // the longest request head a loop reads
	// dead holds the connections closed while the current batch of events is handled; spare
	// holds them afterwards for the next accepted connections, with their head buffers and
	// metric series (a short connection would otherwise grow them anew).
	dead, spare []*evConn
	// unwatched are the accepted connections not yet in the loop's epoll set (see adopt).
	unwatched []*evConn
}

// maxSpareConns bounds the closed connections a loop keeps for reuse.
const maxSpareConns = 64

// newConn returns a connection object for an accepted connection: a spare one, or a new one.
func (w *worker) newConn() *evConn {
	if n := len(w.spare); n > 0 {
		c := w.spare[n-1]
		w.spare[n-1] = nil
		w.spare = w.spare[:n-1]
		return c
	}
	c := &evConn{w: w}
	c.h1Req = &c.req
	return c
}

// recycleDead makes the connections closed during the last batch spare, once nothing of the
// batch can still look at them (their closed flag, their fds' generations).
func (w *worker) recycleDead() {
	for i, c := range w.dead {
		w.dead[i] = nil
		if len(w.spare) >= maxSpareConns {
			continue
		}
		hc := &c.h1Conn
		if cap(hc.head.buf) > 2<<10 || cap(hc.out) > 2<<10 || cap(hc.raw) > 2<<10 {
			continue // grown by an unusual request: not worth keeping
		}
		*c = evConn{w: w, h1Conn: h1Conn{client: hc.client, ip: hc.ip}, req: h1Req{
			head:    reqHead{buf: hc.head.buf[:0], lines: hc.head.lines[:0], decoded: hc.head.decoded[:0]},
			out:     hc.out[:0],
			raw:     hc.raw[:0],
			hl:      hc.hl[:0],
			metrics: hc.metrics,
		}, clientAddr: c.clientAddr}
		c.h1Req = &c.req
		w.spare = append(w.spare, c)
	}
	w.dead = w.dead[:0]
}

func newWorker(ls *loops, i int) (*worker, error) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		_ = syscall.Close(ep)
		return nil, err
	}
	w := &worker{ls: ls, s: ls.s, h: ls.s.h, ep: ep, wakeR: p[0], wakeW: p[1], pools: map[string]*evPool{},
		scratch: make([]byte, loopBuffer), limit: min(loopBuffer, ls.s.opts.MaxHeaderBytes),
		gauge: ls.s.h.metrics.LoopConnections.WithLabelValues(strconv.Itoa(i)), events: make([]syscall.EpollEvent, 256)}
	err = errors.Join(
		syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, w.wakeR, &syscall.EpollEvent{Events: epollIn, Fd: int32(w.wakeR)}),
		syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, ls.lnfd, &syscall.EpollEvent{Events: epollIn | epollExclusive, Fd: int32(ls.lnfd)}))
	if err != nil {
		w.closeFDs()
		return nil, err
	}
	return w, nil
}

func (w *worker) closeFDs() {
	_ = syscall.Close(w.ep)
	_ = syscall.Close(w.wakeR)
	_ = syscall.Close(w.wakeW)
}

// Messages to a loop.
const (
	wakeStop  byte = 1 // Shutdown: close idle connections, finish the others, end
	wakeKill  byte = 2 // close everything now
	wakeInbox byte = 3 // connections wait in the inbox
)

// wake writes b to the loop's pipe, unless the loop has ended (its pipe is closed, and the
// descriptor's number may belong to anything by then).
func (w *worker) wake(b byte) {
	w.inboxMu.Lock()
	defer w.inboxMu.Unlock()
	if !w.exited {
		_, _ = syscall.Write(w.wakeW, []byte{b})
	}
}

func (w *worker) buf() []byte {
	if n := len(w.free); n > 0 {
		b := w.free[n-1]
		w.free = w.free[:n-1]
		return b[:0]
	}
	return make([]byte, 0, loopBuffer)
}

func (w *worker) putBuf(b []byte) {
	switch {
	case b == nil:
	case cap(b) == loopBuffer && len(w.free) < maxFreeBuffers:
		w.free = append(w.free, b)
	case cap(b) == bodyBuffer && len(w.freeBodies) < maxFreeBodyBuffers:
		w.freeBodies = append(w.freeBodies, b)
	}
}

// bufFor lends a buffer for n bytes of input: a body buffer when n is more than loopBuffer.
func (w *worker) bufFor(n int) []byte {
	if n <= loopBuffer {
		return w.buf()
	}
	if k := len(w.freeBodies); k > 0 {
		b := w.freeBodies[k-1]
		w.freeBodies = w.freeBodies[:k-1]
		return b[:0]
	}
	return make([]byte, 0, bodyBuffer)
}

func (w *worker) register(fd int, c *evConn, u *evUp) error {
	for fd >= len(w.fds) {
		w.fds = append(w.fds, make([]fdOwner, len(w.fds)+64)...)
	}
	w.gen++
	w.fds[fd] = fdOwner{c: c, u: u, gen: w.gen}
	ev := syscall.EpollEvent{Events: epollIn | epollOut | epollRdHup | epollET, Fd: int32(fd), Pad: int32(w.gen)}
	if e := rawsock.EpollAdd(w.ep, fd, &ev); e != 0 {
		w.fds[fd] = fdOwner{}
		return e
	}
	return nil
}

// forgetFD drops fd from the loop (the caller closes it or gives it away).
func (w *worker) forgetFD(fd int) {
	if fd < len(w.fds) { // a connection never watched may have no entry
		w.fds[fd] = fdOwner{}
	}
}

// watchPending adds to the epoll set the connections accepted unwatched that now wait for their
// client: for more input, for output space, for the next request, while lingering. One waiting
// for its backend alone (its request whole, nothing to write) stays unwatched for up to
// unwatchedWait: a connection served in one go, such as a request with Connection: close, is then
// never added (nor removed). Adding reports what is already readable or closed, so nothing that
// came meanwhile is missed: a client that leaves while its backend is slow is noticed within
// unwatchedWait and a loop tick (TestEventLoopNoticesAClientThatLeavesAtOnce).
func (w *worker) watchPending() {
	keep := w.unwatched[:0]
	for _, c := range w.unwatched {
		switch {
		case c.closed: // closed or handed off
		case c.phase == pUpstream && c.pending() == 0 && w.now.Sub(c.accepted) < unwatchedWait:
			keep = append(keep, c)
		default:
			if err := w.register(c.fd, c, nil); err != nil {
				c.close()
			}
		}
	}
	clear(w.unwatched[len(keep):])
	w.unwatched = keep
}

func (w *worker) run() {
	runtime.LockOSThread()
	defer func() {
		for _, p := range w.pools {
			for _, u := range p.idle {
				u.close()
			}
		}
		w.inboxMu.Lock()
		w.exited = true
		for _, a := range w.inbox {
			a.discard()
		}
		w.inbox = nil
		w.closeFDs()
		w.inboxMu.Unlock()
		if w.ls.live.Add(-1) == 0 {
			rawsock.Close(w.ls.lnfd)
		}
		w.s.wg.Done()
	}()
	events := w.events
	w.now = time.Now()
	w.lastTick, w.lastSweep = w.now, w.now
	for {
		// A busy loop finds events without blocking: a raw call keeps the thread's P. Only an
		// idle loop blocks, through the runtime (which may then lend the P to other goroutines).
		// (The TCP loops park in the runtime's poller instead, rawsock.Waiter: measured here,
		// that tripled the keep-alive row's p99, 2.5 to 8-10 ms, for a woken loop can wait for
		// a P until the system monitor preempts a busy one, 10 ms.)
		n, err := rawsock.WaitNow(w.ep, events)
		if n == 0 && err == nil {
			n, err = syscall.EpollWait(w.ep, events, int(loopTick/time.Millisecond))
		}
		if err != nil && err != syscall.EINTR {
			w.s.h.log.Error(err, "epoll_wait failed")
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
			case fd == w.ls.lnfd:
				w.accept()
			case fd < len(w.fds) && w.fds[fd].gen == uint32(ev.Pad):
				o := w.fds[fd]
				if o.c != nil {
					o.c.onEvent(ev.Events)
				} else if o.u != nil {
					o.u.onEvent(ev.Events)
				}
			}
		}
		if w.now.Sub(w.lastTick) >= loopTick {
			w.tick()
		}
		if len(w.unwatched) > 0 {
			w.watchPending()
		}
		if len(w.dead) > 0 {
			w.recycleDead()
		}
		if w.closing && len(w.clients) == 0 {
			return
		}
	}
}

// onWake handles the loop's messages; it reports whether the loop ends now.
func (w *worker) onWake() bool {
	var b [64]byte
	n, _ := syscall.Read(w.wakeR, b[:])
	msgs := b[:max(n, 0)]
	if bytes.IndexByte(msgs, wakeInbox) >= 0 {
		w.takeInbox()
	}
	kill := bytes.IndexByte(msgs, wakeKill) >= 0
	if !kill && bytes.IndexByte(msgs, wakeStop) < 0 {
		return false
	}
	w.closing = true
	// Closing c removes it alone, swapping in the last connection, which was seen already.
	for i := len(w.clients) - 1; i >= 0; i-- {
		c := w.clients[i]
		if kill || (c.phase == pIdle && len(c.in) == 0 && c.pending() == 0) {
			c.close()
		}
	}
	return kill
}

// accept takes the connections waiting on the listening socket, keeping each or giving it to
// the loop with the fewest connections: the loop the kernel wakes would otherwise take a burst
// of connections alone (measured: 41 against 23 of wrk's 64), and one loop's connections share
// one core.
func (w *worker) accept() {
	for !w.closing {
		nfd, sa, err := rawAccept4(w.ls.lnfd)
		if err != nil {
			if err == syscall.EINTR || err == syscall.ECONNABORTED {
				continue
			}
			switch err {
			case syscall.EAGAIN, syscall.EINVAL: // none left; the socket stopped listening
			case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM:
				// Out of descriptors or memory: this loop stops accepting for a while (the
				// listening socket would wake it at once again), as net/http backs off.
				w.h.log.Error(err, "Accept failed, retrying", "in", loopTick.String())
				_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, w.ls.lnfd, nil)
				w.acceptPaused = true
			default:
				w.h.log.Error(err, "Accept failed")
			}
			return
		}
		w.ls.noDelay.Accepted(nfd, w.now)
		if to := w.ls.leastLoaded(w); to != w {
			to.post(accepted{fd: nfd, sa: sa})
			continue
		}
		w.adopt(nfd, sa)
	}
}

// leastLoaded is the loop with the fewest connections, or w when no loop has fewer by more
// than an eighth of w's (and one): a connection given to another loop costs that loop a
// wake-up, which short connections (one request each) would pay for every request, to even
// out counts that their churn evens out anyway.
func (ls *loops) leastLoaded(w *worker) *worker {
	best, n := w, w.count.Load()
	limit := n - n/8 - 1
	for _, o := range ls.workers {
		if m := o.count.Load(); m < limit && m < n {
			best, n = o, m
		}
	}
	return best
}

// post gives an accepted connection to w (from another loop's thread, or an HTTPS
// connection's goroutine).
func (w *worker) post(a accepted) {
	w.count.Add(1) // counted now, so that the next connections go elsewhere
	w.inboxMu.Lock()
	if w.exited {
		w.inboxMu.Unlock()
		a.discard()
		return
	}
	w.inbox = append(w.inbox, a)
	w.inboxMu.Unlock()
	w.wake(wakeInbox)
}

// takeInbox adopts the connections other loops gave this one.
func (w *worker) takeInbox() {
	w.inboxMu.Lock()
	in := w.inbox
	w.inbox = nil
	w.inboxMu.Unlock()
	for _, a := range in {
		w.count.Add(-1) // adopt counts it again
		if w.closing {
			a.discard()
			continue
		}
		if a.tls != nil {
			w.adoptTLS(a.fd, a.tls)
			continue
		}
		w.adopt(a.fd, a.sa)
	}
}

// adopt makes an accepted connection the loop's.
func (w *worker) adopt(nfd int, sa syscall.Sockaddr) {
	c := w.newConn()
	c.fd = nfd
	c.s, c.proto, c.port = w.s, "http", w.h.httpPort
	ap := rawsock.SockaddrAddrPort(sa)
	if a := ap.Addr().Unmap(); a != c.clientAddr || c.client == "" {
		c.clientAddr, c.client = a, a.String() // a spare connection may have it already
	}
	c.ip, c.remote, c.loop = c.clientAddr, nil, true
	c.peer = ap
	c.needProxy = w.h.table.Load().Clients.ProxyProtocol
	w.admit(c)
}

// admit makes a new connection the loop's.
func (w *worker) admit(c *evConn) {
	c.idx = len(w.clients)
	w.clients = append(w.clients, c)
	w.count.Add(1)
	c.now = w.now
	c.deadline = w.now.Add(w.s.opts.ReadHeaderTimeout)
	// The connection is read at once, before it joins the epoll set (watchPending adds it at
	// the end of the batch if it then waits for its client): a client's request is mostly there
	// when its connection is accepted, as HAProxy reads it. A connection served whole meanwhile
	// costs no epoll_ctl, and no event.
	c.accepted = w.now
	w.unwatched = append(w.unwatched, c)
	c.onEvent(epollIn)
}

type accepted struct {
	fd  int
	sa  syscall.Sockaddr
	tls *tlsHandover // an HTTPS connection after its handshake (evtls_linux.go)
}

// discard closes a connection no loop will serve.
func (a accepted) discard() {
	_ = syscall.Close(a.fd)
	if a.tls != nil {
		a.tls.release()
	}
}

// tick fires the deadlines that passed and, now and then, closes idle upstream connections.
func (w *worker) tick() {
	w.lastTick = w.now
	w.gauge.Set(float64(len(w.clients)))
	if w.acceptPaused && !w.closing {
		w.acceptPaused = false
		_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_ADD, w.ls.lnfd, &syscall.EpollEvent{Events: epollIn | epollExclusive, Fd: int32(w.ls.lnfd)})
	}
	// Closing c removes it alone, swapping in the last connection, which was seen already.
	for i := len(w.clients) - 1; i >= 0; i-- {
		c := w.clients[i]
		if !c.deadline.IsZero() && !w.now.Before(c.deadline) {
			c.timeout()
		}
	}
	if w.now.Sub(w.lastSweep) >= upstreamIdleTimeout/6 {
		w.lastSweep = w.now
		for addr, p := range w.pools {
			keep := p.idle[:0]
			for _, u := range p.idle {
				if w.now.Sub(u.idleSince) >= upstreamIdleTimeout {
					u.close()
				} else {
					keep = append(keep, u)
				}
			}
			clear(p.idle[len(keep):])
			p.idle = keep
			if len(keep) == 0 && w.now.Sub(p.lastUse) >= upstreamIdleTimeout {
				delete(w.pools, addr)
				p.gone = true // a connection still in use closes instead of coming back
			}
		}
	}
}

// Raw non-blocking system calls of the HTTP loops alone (package rawsock has the others, and
// says why they are raw).

// rawAccept4 accepts a connection, non-blocking and close-on-exec, with its peer's address.
func rawAccept4(lnfd int) (int, syscall.Sockaddr, error) {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	for {
		fd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lnfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)),
			syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return -1, nil, e
		}
		switch rsa.Addr.Family {
		case syscall.AF_INET:
			p := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&rsa))
			port := (*[2]byte)(unsafe.Pointer(&p.Port))
			return int(fd), &syscall.SockaddrInet4{Port: int(port[0])<<8 | int(port[1]), Addr: p.Addr}, nil
		case syscall.AF_INET6:
			p := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&rsa))
			port := (*[2]byte)(unsafe.Pointer(&p.Port))
			return int(fd), &syscall.SockaddrInet6{Port: int(port[0])<<8 | int(port[1]), ZoneId: p.Scope_id, Addr: p.Addr}, nil
		}
		return int(fd), nil, nil
	}
}

// testUpstreamSendBuffer, when set by a test, is the send buffer of the loops' connections to
// backends: small, it makes writes of request bodies partial on loopback.
var testUpstreamSendBuffer int

// rawWritev writes a then b in one system call.
func rawWritev(fd int, a, b []byte) (int, syscall.Errno) {
	iov := [2]syscall.Iovec{{Base: &a[0]}, {Base: &b[0]}}
	iov[0].SetLen(len(a))
	iov[1].SetLen(len(b))
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), 2)
		if e != syscall.EINTR {
			return int(n), e
		}
	}
}

// client connection phases.
const (
	pIdle     uint8 = iota // waiting for a request (deadline: ReadHeaderTimeout or IdleTimeout)
	pHead                  // part of a head came (deadline: ReadHeaderTimeout)
	pUpstream              // waiting for the backend: connect and response head
	pBody                  // passing the response body on
	pLinger                // answered with Connection: close; reading what the client still sends
)

// evConn is a client connection served by a loop. The embedded h1Conn holds the request's state
// and builds heads as on the goroutine fast path; its net.Conn and buffers are unused.
type evConn struct {
	h1Conn
	req   h1Req // h1Conn.h1Req
	w     *worker
	fd    int
	idx   int
	phase uint8
	// in holds input not yet consumed; it may be the loop's scratch buffer while an event is
	// handled (inScratch), and is moved to a buffer of its own before the handler returns.
	in        []byte
	inScratch bool
	want      int // input the request in c.in needs, head and body, beyond the loop's limit
	// reqBody is the body of the request being forwarded, in reqBuf (a buffer of the loop's),
	// until it is written to the backend.
	reqBody, reqBuf []byte
	wout            []byte // output not yet written (wout[woff:])
	woff            int
	// readable: an input edge came and reads have not met EAGAIN since. hup: the client
	// closed its side. blocked: output waits for the client to read.
	readable, hup, blocked bool
	// tc is an HTTPS connection's TLS (nil on cleartext), which the loop reads requests from
	// and writes answers to, over lc (evtls_linux.go). tlsMore: tc may hold input not yet read
	// (decrypted, or whole records), whatever the socket's edge says.
	tc        *tls.Conn
	lc        *loopConn
	tlsMore   bool
	deadline  time.Time
	lingerEnd time.Time
	closed    bool
	// clientAddr is the client's address, whose text is h1Conn.client.
	clientAddr netip.Addr
	// needProxy: the listener reads the PROXY protocol and its header has not come yet.
	needProxy bool
	// accepted is when the connection was accepted (see watchPending).
	accepted time.Time

	// The exchange in progress.
	up        *evUp
	rh        respHead
	replay    bool // the request can be sent again (idempotent, no body)
	stale     bool // sent again on a new connection after a reused one failed
	inFlight  bool // counted in the endpoint's InFlight
	remaining int64
	// rb, rcode and rmsg are the request's route (see h1Conn.route), decided when its head
	// came.
	rb    *route.Backend
	rcode int
	rmsg  string
	chunk chunkState
}

// pending is how much output waits to be written.
func (c *evConn) pending() int {
	if c.lc != nil {
		return len(c.wout) - c.woff + len(c.lc.out) - c.lc.off
	}
	return len(c.wout) - c.woff
}

// emit adds b to the output, in a buffer of the loop's.
func (c *evConn) emit(b []byte) {
	if c.wout == nil {
		c.wout = c.w.buf()
	}
	c.wout = append(c.wout, b...)
}

// consumeIn drops n bytes of input; a buffer of the connection's own keeps the rest at its
// start, and goes back to the loop when empty.
func (c *evConn) consumeIn(n int) {
	if c.inScratch {
		c.in = c.in[n:]
		return
	}
	c.in = c.in[:copy(c.in, c.in[n:])]
	if len(c.in) == 0 {
		c.w.putBuf(c.in)
		c.in = nil
	}
}

func (c *evConn) onEvent(ev uint32) {
	if ev&(epollIn|epollRdHup|epollHupErr) != 0 {
		c.readable = true
		if ev&(epollRdHup|epollHupErr) != 0 {
			c.hup = true
		}
	}
	if ev&epollOut != 0 && c.blocked {
		c.blocked = false
		if !c.flush() {
			c.settle()
			return
		}
		if c.phase == pBody && c.up != nil {
			c.relay()
			c.settle()
			return
		}
	}
	c.drive()
	c.settle()
}

// drive moves the connection on after input or output.
func (c *evConn) drive() {
	switch c.phase {
	case pIdle, pHead:
		c.serveInput()
	case pUpstream, pBody:
		if (c.readable || c.tlsMore) && !c.keepInput() {
			c.clientGone()
		} else if c.phase == pBody && !c.blocked && c.pending() == 0 && c.up != nil {
			c.relay()
		}
	case pLinger:
		c.linger()
	}
}

// settle moves input held in the scratch buffer to a buffer of the connection's own.
func (c *evConn) settle() {
	if !c.inScratch || c.closed {
		return
	}
	c.inScratch = false
	if len(c.in) == 0 {
		c.in = nil
		return
	}
	b := c.w.bufFor(c.want)
	c.in = append(b, c.in...)
}

// read reads what the client sent: into the scratch buffer when nothing is held, else after
// what is held, up to the loop's limit (or c.want, for a body). It returns false when nothing
// more can be read now; eof reports the client's end (or an error).
func (c *evConn) read() (ok, eof bool) {
	if !c.readable && !c.tlsMore {
		return false, false
	}
	var p []byte
	if len(c.in) == 0 {
		if !c.inScratch && c.in != nil {
			c.w.putBuf(c.in)
		}
		c.in, c.inScratch = c.w.scratch[:0], true
		p = c.w.scratch[:c.w.limit]
	} else {
		if c.inScratch {
			c.settle()
		}
		limit := max(c.w.limit, c.want)
		if len(c.in) >= limit {
			return false, false
		}
		if cap(c.in) < limit {
			held := c.in
			c.in = append(c.w.bufFor(limit), held...)
			c.w.putBuf(held)
		}
		p = c.in[len(c.in):limit]
	}
	if c.tc != nil {
		return c.readTLS(p)
	}
	n, e := rawsock.Read(c.fd, p)
	switch {
	case e == syscall.EAGAIN:
		c.readable = false
		return false, false
	case e != 0 || n == 0:
		c.readable = false
		return false, true
	}
	c.in = c.in[:len(c.in)+n]
	if n < len(p) && !c.hup {
		c.readable = false // a short read emptied the socket; the next input brings an edge
	}
	return true, false
}

// keepInput reads what the client sends while its request is served (a pipelined request, or
// the end of the connection). It returns false when the client has gone.
func (c *evConn) keepInput() bool {
	for {
		ok, eof := c.read()
		if eof {
			return false
		}
		if !ok {
			return true
		}
	}
}

// serveInput serves the requests the input holds, and reads more while it can.
func (c *evConn) serveInput() {
	w := c.w
	progressed := false // input came for a request whose head is whole
	for !c.closed {
		if w.closing && c.phase == pIdle && len(c.in) == 0 {
			if c.flush() {
				c.close()
			}
			return
		}
		if c.pending() >= loopOutHigh && !c.flush() {
			// A client that sends requests without reading their answers (the proxy's own, say:
			// pipelined 404s) is read no further until it reads: what a loop holds for a
			// client stays bounded, as a goroutine's blocked write bounds it.
			return
		}
		if c.needProxy && !c.proxyHeader() {
			return
		}
		// A whole request: a head the fast path takes, and its body when it has one (up to
		// maxLoopBody, read whole before the request is forwarded). c.want > 0: the head is
		// parsed and c.want bytes, head and body, make the request.
		if c.want == 0 {
			if k := emptyLines(c.in); k > 0 {
				c.consumeIn(k)
			}
			switch n := headEnd(c.in); {
			case n < 0:
				c.handoff("request")
				return
			case n > 0:
				c.head.buf = append(c.head.buf[:0], c.in[:n]...)
				if !parseRequestHead(c.head.buf, &c.head) {
					if fault := framingFault(c.head.buf); fault != "" {
						c.refuse(fault)
						return
					}
					c.handoff("request")
					return
				}
				// Routed once the head is whole: the route's limits apply to the body.
				c.rb, c.rcode, c.rmsg = c.route()
				c.closeAfter = c.closeAfter || w.closing // an HTTPS connection's server may not be closing yet
				if c.rcode == codeHandoff {
					c.handoff(c.rmsg) // external auth: the goroutine path waits for the sub-request
					return
				}
				if c.head.contentLength > 0 && bodyTooLarge(&c.st, c.head.contentLength) {
					c.consumeIn(n) // the body is not read: the lingering close drops it
					c.bodyRead = false
					c.closeAfter = true
					c.answerOwn(http.StatusRequestEntityTooLarge, msgBodyTooLarge)
					c.answered()
					return
				}
				if c.head.contentLength > maxLoopBody {
					c.handoff("body")
					return
				}
				if c.head.expect && c.head.contentLength > 0 {
					c.handoff("expect") // the goroutine path answers 100 Continue
					return
				}
				if c.head.chunked {
					c.handoff("chunked") // the goroutine path relays chunked bodies
					return
				}
				c.want = n + int(c.head.contentLength)
			case len(c.in) >= w.limit:
				c.handoff("head")
				return
			}
		}
		if c.want == 0 || len(c.in) < c.want {
			ok, eof := c.read()
			if eof {
				if c.flush() {
					c.close()
				}
				return
			}
			if ok {
				progressed = progressed || c.want > 0
				continue
			}
			// Wait for more, answers held back for pipelining sent first: the head within the
			// header timeout, the body with no pause longer than the body timeout (nginx's
			// client_body_timeout).
			if len(c.in) > 0 && c.phase == pIdle {
				c.phase = pHead
				c.deadline = w.now.Add(w.s.opts.ReadHeaderTimeout)
				if c.want > 0 {
					c.deadline = w.now.Add(bodyTimeout(w.h.table.Load()))
				}
			} else if progressed {
				c.deadline = w.now.Add(bodyTimeout(w.h.table.Load()))
			}
			c.flush()
			return
		}
		n := c.want - int(c.head.contentLength) // the head's length
		c.want = 0
		b, code, msg := c.rb, c.rcode, c.rmsg
		c.rb = nil
		if b != nil && b.Protocol == route.H2C {
			c.handoff("h2c") // HTTP/2 backends are served on the goroutine path
			return
		}
		if b != nil && b.TLS != nil {
			c.handoff("backend-tls") // and so are TLS backends
			return
		}
		if p := c.st.policy(); b != nil && p != nil && len(p.InterceptErrors) > 0 {
			c.handoff("custom-errors") // and routes whose error answers another backend replaces
			return
		}
		c.bodyRead = true // a loop reads a body whole before it serves the request
		if b != nil && c.head.contentLength > 0 {
			c.takeBody(n, int(c.head.contentLength))
		} else {
			c.consumeIn(n + int(c.head.contentLength)) // a body not forwarded is dropped
		}
		if b == nil {
			c.answerOwn(code, msg)
			if !c.answered() {
				return
			}
			continue
		}
		c.forward()
		return
	}
}

// proxyHeader reads the PROXY protocol header that starts the connection on a listener that
// reads it (h1Conn.proxyHeader on the goroutine path). It returns false while the header is
// incomplete (more is read; the header timeout runs) and when the connection was closed for a
// malformed or missing header.
func (c *evConn) proxyHeader() bool {
	for {
		h, n, err := l4.ParseProxyHeader(c.in)
		switch {
		case err == nil:
			c.needProxy = false
			if !h.Local {
				c.setProxySource(h.Source)
				c.clientAddr = c.ip
			}
			c.consumeIn(n)
			return true
		case err == l4.ErrIncomplete && len(c.in) < l4.MaxProxyV2Len:
			ok, eof := c.read()
			if eof {
				c.w.h.metrics.ProxyProtocolErrors.Inc()
				c.close()
				return false
			}
			if !ok {
				return false // the deadline set at accept bounds the wait; then it is closed
			}
		default:
			c.w.h.metrics.ProxyProtocolErrors.Inc()
			c.close()
			return false
		}
	}
}

// answered ends an exchange: the connection closes after a Connection: close answer, or waits
// for the next request. It reports whether the next request may be read now.
func (c *evConn) answered() bool {
	w := c.w
	if c.closeAfter || w.closing {
		c.phase = pLinger
		c.lingerEnd = time.Time{}
		c.linger()
		return false
	}
	c.phase = pIdle
	c.deadline = w.now.Add(w.s.opts.IdleTimeout)
	c.dropBody() // not sent: the exchange failed before
	return true
}

// flush writes the output held. It returns false when some remains (the client reads slowly:
// the loop waits for its edge) or the client has gone (the connection is then closed).
func (c *evConn) flush() bool {
	if c.tc != nil {
		return c.flushTLS()
	}
	if !c.writeHeld(c.wout, &c.woff) {
		return false
	}
	c.woff = 0
	c.wout = c.spent(c.wout)
	return true
}

// writeHeld writes b[*off:] to the client. It returns false when the client's socket is full
// (c.blocked: the loop waits for its edge) or the client has gone (writeFailed).
func (c *evConn) writeHeld(b []byte, off *int) bool {
	for *off < len(b) {
		n, e := rawsock.Write(c.fd, b[*off:])
		if e == syscall.EAGAIN {
			c.blocked = true
			return false
		}
		if e != 0 {
			c.writeFailed(os.NewSyscallError("write", e))
			return false
		}
		*off += n
	}
	return true
}

// spent empties an output buffer whose bytes are written: it goes back to the loop between
// requests, and is kept while an exchange goes on.
func (c *evConn) spent(b []byte) []byte {
	if b != nil && (c.phase == pIdle || c.phase == pHead) {
		c.w.putBuf(b)
		return nil
	}
	return b[:0]
}

// writeFailed: the client is gone while its answer was written.
func (c *evConn) writeFailed(err error) {
	if c.phase == pBody && c.up != nil {
		c.endBody(clientError{err})
		return
	}
	c.close()
}

// clientGone ends a request whose client closed the connection before its answer was whole.
func (c *evConn) clientGone() {
	if c.up != nil {
		c.dropUpstream()
	}
	c.st.status = 499
	c.closeAfter = true
	c.done()
	c.close()
}

func (c *evConn) timeout() {
	switch c.phase {
	case pUpstream:
		u := c.up
		if u != nil && u.connecting {
			c.upstreamError(&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded})
		} else {
			c.upstreamError(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded})
		}
		c.settle()
	case pHead:
		if c.want > 0 { // the head came, its body stalled
			c.refuseStalled()
			return
		}
		c.close() // a head that did not come: nothing to answer
	default:
		c.close() // nothing to answer: an idle or lingering client
	}
}

// refuse answers a request whose framing is in doubt with 400 and closes the connection (see
// framingFault).
func (c *evConn) refuse(fault string) {
	c.consumeIn(len(c.in)) // nothing more is read as a request
	c.answerOwn(c.refusal(fault))
	c.answered()
}

// refuseStalled answers 408 to a request whose body paused longer than the body timeout, and
// closes the connection.
func (c *evConn) refuseStalled() {
	c.want = 0 // the request was routed when its head came: its state stands (bodyRead false)
	c.consumeIn(len(c.in))
	c.closeAfter = true
	c.answerOwn(http.StatusRequestTimeout, msgBodyStalled)
	c.answered()
}

// linger ends a connection after Connection: close: once the answer is out, the write side is
// shut and what the client still sends is read and dropped until it stops for lingerIdle or
// lingerTime has passed (see h1Conn.closeWrite).
func (c *evConn) linger() {
	if !c.flush() {
		return
	}
	w := c.w
	if c.lingerEnd.IsZero() {
		if !lingers(c.bodyRead, len(c.in)) {
			c.close()
			return
		}
		if c.tc != nil && !c.tlsNotified() {
			return // close_notify waits for the client to read
		}
		c.lingerEnd = w.now.Add(lingerTime)
		if err := syscall.Shutdown(c.fd, syscall.SHUT_WR); err != nil {
			c.close()
			return
		}
		c.readable = true
	}
	for c.readable {
		n, e := rawsock.Read(c.fd, w.scratch)
		if e == syscall.EAGAIN {
			c.readable = false
			break
		}
		if e != 0 || n == 0 {
			c.close()
			return
		}
	}
	c.deadline = w.now.Add(lingerIdle)
	if c.deadline.After(c.lingerEnd) {
		c.deadline = c.lingerEnd
	}
}

func (c *evConn) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.st.releaseLimits()
	w := c.w
	if c.up != nil {
		c.dropUpstream()
	}
	if c.tc != nil {
		c.tlsGoodbye()
	}
	w.forgetFD(c.fd)
	rawsock.Close(c.fd)
	c.release()
	w.drop(c)
	w.dead = append(w.dead, c)
}

// drop removes c from the loop's connections.
func (w *worker) drop(c *evConn) {
	last := len(w.clients) - 1
	w.clients[c.idx] = w.clients[last]
	w.clients[c.idx].idx = c.idx
	w.clients[last] = nil
	w.clients = w.clients[:last]
	w.count.Add(-1)
}

// takeBody moves the body of n bytes after a head of h bytes out of the input, without copying
// it when it fills a buffer of its own (the input then ends with it: read stops at c.want).
func (c *evConn) takeBody(h, n int) {
	if c.inScratch { // the next event reuses the scratch buffer
		c.reqBuf = append(c.w.bufFor(n), c.in[h:h+n]...)
		c.reqBody = c.reqBuf
		c.in = c.in[h+n:]
		return
	}
	buf, rest := c.in, c.in[h+n:]
	c.reqBuf, c.reqBody, c.in = buf, buf[h:h+n], nil
	if len(rest) > 0 {
		c.in = append(c.w.buf(), rest...)
	}
}

// dropBody gives the request body's buffer back to the loop.
func (c *evConn) dropBody() {
	c.w.putBuf(c.reqBuf)
	c.reqBuf, c.reqBody = nil, nil
}

// release gives the connection's buffers back to the loop.
func (c *evConn) release() {
	c.dropBody()
	if !c.inScratch && c.in != nil {
		c.w.putBuf(c.in)
	}
	c.in, c.inScratch = nil, false
	c.w.putBuf(c.wout)
	c.wout = nil
	if l := c.lc; l != nil {
		c.w.putBuf(l.out)
		l.out, l.off = nil, 0
	}
}

// handoff gives the connection to the goroutine fast path, unread input and unwritten output
// included.
func (c *evConn) handoff(reason string) {
	w := c.w
	w.h.metrics.LoopHandoffs.WithLabelValues(reason).Inc()
	w.forgetFD(c.fd)
	_ = syscall.EpollCtl(w.ep, syscall.EPOLL_CTL_DEL, c.fd, nil)
	tc, lc := c.tc, c.lc
	if tc != nil {
		c.tlsHandback() // the output held goes with lc, encrypted
		// The HTTPS server's count of it while a loop had it (toLoop), released once a goroutine
		// has it (counted below), or it is gone.
		defer c.s.wg.Done()
	}
	in := bytes.Clone(c.in)
	out := bytes.Clone(c.wout[c.woff:])
	fd := c.fd
	c.fd = -1
	c.closed = true
	c.release()
	w.drop(c)

	var carried *carriedLimits
	if reason != "request" && reason != "head" { // routed here: its limits were checked, its slot is held
		carried = &carriedLimits{}
		if a := c.st.acc; a != nil {
			carried.slot, a.slot = a.slot, nil
		}
	} else {
		c.st.releaseLimits()
	}
	f := os.NewFile(uintptr(fd), "client")
	nc, err := net.FileConn(f) // a duplicate, on Go's poller
	_ = f.Close()
	if err != nil {
		if carried != nil {
			carried.slot.release()
		}
		return
	}
	s := c.s // the HTTPS server's, for a TLS connection
	hc := newH1Conn()
	hc.s, hc.c, hc.client, hc.ip, hc.remote, hc.proto, hc.port, hc.carried = s, nc, c.client, c.ip, c.remote, c.proto, c.port, carried
	if tc != nil {
		lc.Conn = newRawConn(nc)
		hc.c, hc.tls, hc.cert = tc, c.tls, c.cert
	}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = map[*h1Conn]struct{}{}
	}
	s.conns[hc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go hc.serveFromLoop(in, out)
}

// forward sends the request to c.st.endpoint.
func (c *evConn) forward() {
	c.requestHead()
	if mb := c.st.mirrors(c.head.contentLength != 0); mb != nil {
		c.w.h.mirror(mb, c.h1Conn.out)
	}
	c.replay = c.st.replayable(bytesView(c.head.method), c.head.contentLength != 0) // as on the goroutine path
	c.stale = false
	c.rh = respHead{}
	c.phase = pUpstream
	if !c.flush() && c.closed { // answers held back for pipelining go out before the wait
		return // the client is gone
	}
	c.send(false)
}

// send sends the request head (in c.h1Conn.out) to the endpoint, on a new connection when
// fresh is set.
func (c *evConn) send(fresh bool) {
	st := &c.st
	u, err := c.w.upstream(st.endpoint.Addr, fresh, !c.replay)
	if err != nil {
		c.upstreamError(err)
		return
	}
	c.up, u.client = u, c
	st.endpoint.Stats.InFlight.Add(1)
	c.inFlight = true
	if u.connecting {
		c.deadline = c.w.now.Add(st.dialTimeout(&c.w.h.opts))
		return
	}
	c.sendHead()
}

func (c *evConn) sendHead() {
	u := c.up
	c.deadline = c.w.now.Add(c.st.upstreamTimeout(&c.w.h.opts)) // each attempt has the whole timeout
	head, body := c.h1Conn.out, c.reqBody
	var n int
	var e syscall.Errno
	if len(body) > 0 {
		n, e = rawWritev(u.fd, head, body) // head and body in one write
	} else {
		n, e = rawsock.Write(u.fd, head)
	}
	if e == syscall.EAGAIN {
		n, e = 0, 0
	}
	if e != 0 {
		c.dropBody()
		c.upstreamError(os.NewSyscallError("write", e))
		return
	}
	if n < len(head)+len(body) {
		u.pending = u.pending[:0]
		if n < len(head) {
			u.pending = append(u.pending, head[n:]...)
			n = len(head)
		}
		u.pending = append(u.pending, body[n-len(head):]...)
	}
	c.dropBody() // sent or held in u.pending: a request with a body is not sent again
	if u.readable {
		c.readHead()
	}
}

// upstreamError handles a failure before the answer's head: the request goes to another
// endpoint, or a new connection, when Handler.retry (or a reused connection the backend had
// closed) allows, else the client gets 502 or 504.
func (c *evConn) upstreamError(err error) {
	u := c.up
	answerBegun := u != nil && len(u.in) > 0
	reused := u != nil && u.reused
	if u != nil {
		c.dropUpstream()
	}
	switch {
	case isDialError(err):
		if c.retry(err, c.replay) {
			c.send(false)
			return
		}
	case resendable(c.replay, answerBegun || c.rh.informed, err, c.st.retriesTimeouts()):
		if reused && !c.stale {
			c.stale = true
			c.send(true)
			return
		}
		if c.retry(err, c.replay) {
			c.stale = false
			c.send(false)
			return
		}
	}
	c.fail(err)
}

// fail answers a failed exchange (502, 504) and goes on to the next request.
func (c *evConn) fail(err error) {
	c.answerOwn(c.w.h.upstreamFailed(&c.st, err))
	if c.answered() {
		c.serveInput()
	}
}

// answerOwn adds the proxy's own answer to the output and accounts for the request.
func (c *evConn) answerOwn(code int, msg string) {
	c.answerHead(code, msg)
	c.emit(c.h1Conn.out)
	c.done()
}

// dropUpstream closes the exchange's upstream connection.
func (c *evConn) dropUpstream() {
	u := c.up
	c.up = nil
	if c.inFlight {
		c.st.endpoint.Stats.InFlight.Add(-1)
		c.inFlight = false
	}
	u.client = nil
	u.close()
}

// readHead reads and parses the answer's head; informational answers go on to the client.
func (c *evConn) readHead() {
	u := c.up
	for {
		end := responseHeadEnd(u.in)
		if end == 0 {
			if len(u.in) >= maxResponseHead {
				c.badResponse(errBadResponse)
				return
			}
			ok, err := u.read()
			if err != nil {
				c.upstreamError(err)
				return
			}
			if !ok {
				return
			}
			continue
		}
		if end < 0 {
			c.badResponse(errBadResponse)
			return
		}
		c.raw = append(c.raw[:0], u.in[:end]...)
		u.consume(end)
		informational, err := c.parseResponseHead(&c.rh)
		if err != nil {
			c.badResponse(err)
			return
		}
		if !informational {
			break
		}
		c.rh.informed = true
		c.emit(c.h1Conn.out)
		if !c.flush() && c.closed {
			return
		}
	}
	if !c.rh.informed && c.w.h.retryStatus(&c.st, c.rh.status, c.replay, string(c.head.host), string(c.head.route)) {
		c.dropUpstream() // its answer is not read
		c.requestHead()  // c.out holds the answer's head now
		c.send(false)
		return
	}
	c.inFlight = false
	c.st.endpoint.Stats.InFlight.Add(-1)
	c.startBody()
}

// badResponse answers a malformed response head with 502 (no retry: the backend answered).
func (c *evConn) badResponse(err error) {
	c.dropUpstream()
	c.fail(err)
}

func (c *evConn) startBody() {
	rh := &c.rh
	c.closeAfter = c.closeAfter || c.w.closing // as in serveInput
	c.finishHead(rh)
	c.emit(c.h1Conn.out)
	c.phase = pBody
	c.deadline = time.Time{} // bodies stream as long as they take
	c.remaining = rh.length
	c.chunk = chunkState{}
	c.relay()
}

// relay passes the body on as it comes, holding up to loopOutHigh for a slow client.
func (c *evConn) relay() {
	u := c.up
	for {
		var done bool
		var err error
		switch c.rh.body {
		case bodyNone:
			done = true
		case bodyLength:
			k := min(int64(len(u.in)), c.remaining)
			c.wout = append(c.wout, u.in[:k]...)
			u.consume(int(k))
			c.remaining -= k
			c.st.bytes += k
			done = c.remaining == 0
		case bodyUntilClose:
			c.wout = append(c.wout, u.in...)
			c.st.bytes += int64(len(u.in))
			u.consume(len(u.in))
		case bodyChunked:
			var n int
			n, c.wout, done, err = c.chunk.step(u.in, c.wout, loopBuffer)
			c.st.bytes = c.chunk.data
			u.consume(n)
		}
		if err != nil {
			c.endBody(err)
			return
		}
		if done {
			c.endBody(nil)
			return
		}
		if c.pending() >= loopOutHigh && !c.flush() {
			return // the client's edge resumes the relay
		}
		ok, rerr := u.read()
		if rerr != nil {
			if c.rh.body == bodyUntilClose && errors.Is(rerr, io.EOF) {
				c.endBody(nil)
				return
			}
			c.endBody(unexpectedEOF(rerr))
			return
		}
		if !ok {
			c.flush() // what came so far goes on while the backend sends more
			return
		}
	}
}

// endBody ends the exchange after the body (err: cut short).
func (c *evConn) endBody(err error) {
	u := c.up
	st := &c.st
	if !reusable(&c.rh, err, len(u.in)) {
		c.dropUpstream()
	} else {
		c.up, u.client = nil, nil
		u.suspect = noBodyByRule(c.head.method, c.rh.status)
		c.w.putUpstream(u)
	}
	if err != nil {
		c.closeAfter = true
		if isClientError(err) {
			st.status = 499
		} else {
			c.w.h.metrics.UpstreamErrors.WithLabelValues(st.service, "other").Inc()
			c.w.h.log.V(1).Info("Upstream error in the response body", "service", st.service, "endpoint", st.endpoint.Addr, "error", err.Error())
		}
	}
	c.done()
	if c.closed {
		return
	}
	if c.answered() {
		c.serveInput()
	}
}

// evUp is an upstream connection of a loop.
type evUp struct {
	w         *worker
	pool      *evPool // its endpoint's pool
	fd        int
	in        []byte
	pending   []byte // the part of a request head the socket did not take at once
	client    *evConn
	idleSince time.Time
	// readable: an input edge came and reads have not met EAGAIN (or a short read) since;
	// hup: the backend closed its side (reads go on to its end).
	readable, hup              bool
	eof                        bool
	connecting, reused, closed bool
	// suspect: its last answer was bodiless by rule (see mustProbe).
	suspect bool
}

type evPool struct {
	sa      syscall.Sockaddr
	family  int
	idle    []*evUp
	lastUse time.Time
	gone    bool // no longer in the loop's pools
}

// upstream returns an idle connection to addr or starts a new one (always when fresh). probe
// checks an idle connection for a close by the backend however young it is (see upstreams.get).
func (w *worker) upstream(addr string, fresh, probe bool) (*evUp, error) {
	p := w.pools[addr]
	if p == nil {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return nil, &net.OpError{Op: "dial", Net: "tcp", Err: err}
		}
		p = &evPool{}
		if ap.Addr().Is4() || ap.Addr().Is4In6() {
			p.sa, p.family = &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}, syscall.AF_INET
		} else {
			p.sa, p.family = &syscall.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}, syscall.AF_INET6
		}
		w.pools[addr] = p
	}
	p.lastUse = w.now
	for !fresh && len(p.idle) > 0 {
		u := p.idle[len(p.idle)-1]
		p.idle[len(p.idle)-1] = nil
		p.idle = p.idle[:len(p.idle)-1]
		if mustProbe(w.now.Sub(u.idleSince), !probe, u.suspect) && !u.alive() {
			u.close()
			continue
		}
		return u, nil
	}
	fd, err := syscall.Socket(p.family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", err)}
	}
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 30)
	_ = syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 30)
	if testUpstreamSendBuffer > 0 {
		_ = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_SNDBUF, testUpstreamSendBuffer)
	}
	u := &evUp{w: w, fd: fd, pool: p}
	switch err := syscall.Connect(fd, p.sa); err {
	case nil:
	case syscall.EINPROGRESS:
		u.connecting = true
	default:
		_ = syscall.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	if err := w.register(fd, nil, u); err != nil {
		_ = syscall.Close(fd)
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("epoll_ctl", err)}
	}
	return u, nil
}

func (w *worker) putUpstream(u *evUp) {
	p := u.pool
	if p.gone || len(p.idle) >= maxIdlePerEndpoint || w.closing {
		u.close()
		return
	}
	u.idleSince, u.reused = w.now, true
	if cap(u.pending) > loopBuffer {
		u.pending = nil
	}
	if u.in != nil {
		w.putBuf(u.in)
		u.in = nil
	}
	p.idle = append(p.idle, u)
}

func (u *evUp) alive() bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(u.fd, b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err == syscall.EAGAIN
}

func (u *evUp) close() {
	if u.closed {
		return
	}
	u.closed = true
	u.w.forgetFD(u.fd)
	rawsock.Close(u.fd)
	u.w.putBuf(u.in)
	u.in = nil
	u.client = nil
}

func (u *evUp) consume(n int) {
	u.in = u.in[:copy(u.in, u.in[n:])]
}

// read reads what the backend sent into u.in (growing it for a long head). It returns false
// when nothing more can be read now, and io.EOF or the error at the connection's end.
func (u *evUp) read() (bool, error) {
	if u.eof {
		return false, io.EOF
	}
	if !u.readable {
		return false, nil
	}
	if u.in == nil {
		u.in = u.w.buf()
	}
	if len(u.in) == cap(u.in) {
		u.in = append(u.in, make([]byte, cap(u.in))...)[:len(u.in)]
	}
	p := u.in[len(u.in):cap(u.in)]
	n, e := rawsock.Read(u.fd, p)
	switch {
	case e == syscall.EAGAIN:
		u.readable = false
		return false, nil
	case e != 0:
		u.eof = true
		return false, os.NewSyscallError("read", e)
	case n == 0:
		u.eof = true
		return false, io.EOF
	}
	u.in = u.in[:len(u.in)+n]
	if n < len(p) && !u.hup {
		u.readable = false // a short read emptied the socket; more input brings an edge
	}
	return true, nil
}

func (u *evUp) onEvent(ev uint32) {
	if ev&(epollIn|epollRdHup|epollHupErr) != 0 {
		u.readable = true
		if ev&(epollRdHup|epollHupErr) != 0 {
			u.hup = true
		}
	}
	c := u.client
	if c == nil { // idle in the pool: the backend closed it, or sent what it should not have
		if ev&(epollIn|epollRdHup|epollHupErr) != 0 {
			u.closeIdle()
		}
		return
	}
	if c.closed || c.up != u { // not the exchange's any more (a connection object is reused)
		u.close()
		return
	}
	if u.connecting {
		if ev&(epollOut|epollHupErr) == 0 {
			return
		}
		errno, err := syscall.GetsockoptInt(u.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
		if err == nil && errno != 0 {
			c.upstreamError(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.Errno(errno))})
			c.settle()
			return
		}
		u.connecting = false
		c.sendHead()
		c.settle()
		return
	}
	if len(u.pending) > 0 && ev&epollOut != 0 {
		n, e := rawsock.Write(u.fd, u.pending)
		if e != 0 && e != syscall.EAGAIN {
			c.upstreamError(os.NewSyscallError("write", e))
			c.settle()
			return
		}
		if e == 0 {
			u.pending = u.pending[:copy(u.pending, u.pending[n:])]
		}
	}
	if !u.readable {
		return
	}
	switch c.phase {
	case pUpstream:
		c.readHead()
	case pBody:
		if !c.blocked {
			c.relay()
		}
	}
	c.settle()
}

// closeIdle removes a pooled connection the backend closed.
func (u *evUp) closeIdle() {
	p := u.pool
	if i := slices.Index(p.idle, u); i >= 0 {
		p.idle = slices.Delete(p.idle, i, i+1)
	}
	u.close()
}
