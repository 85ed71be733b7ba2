//go:build linux

package proxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

	"portico.dev/portico/dataplane/internal/rawsock"
)

// HTTPS on the event loops. A TLS connection's handshake runs on its goroutine (h1Conn.serve):
// crypto/tls's handshake blocks, and its CPU (a signature, a key exchange: about a millisecond)
// would hold up every other connection of a loop. Once the handshake chose HTTP/1.1, the
// connection moves to a loop of the cleartext listener's (toLoop), which serves its requests as
// it serves cleartext ones, through the same code: crypto/tls decrypts what the loop reads and
// encrypts what it writes, over a loopConn, which reads the socket without waiting (a temporary
// error when there is nothing, which crypto/tls keeps the connection through, part of a record
// included) and collects what crypto/tls writes for the loop to send. A connection the loop
// does not serve goes back to a goroutine as cleartext ones do (evConn.handoff), its TLS state
// with it. HTTP/2 stays on its goroutines (h2.go). docs/data-plane.md has the measurements.

// loopConn is the transport under a TLS connection that may move to a loop: before the move
// (and after a hand back) it is the goroutine's connection; while a loop serves it, reads are
// the loop's non-blocking reads of its socket, and writes collect in out.
type loopConn struct {
	net.Conn
	// c is the loop's connection while a loop serves it.
	c *evConn
	// out[off:] is what crypto/tls wrote that the socket has not taken yet: the loop sends it
	// (evConn.flushTLS), or the goroutine, before anything else, after a hand back.
	out []byte
	off int
	// wmu is held while a goroutine writes out after a hand back (writePending), which runs
	// outside crypto/tls's own write lock: a tls.Conn.Close from Shutdown meanwhile does not
	// write at the same time (Write gives up, and Close closes the socket under the writer).
	wmu sync.Mutex
}

func (l *loopConn) Read(p []byte) (int, error) {
	c := l.c
	if c == nil {
		return l.Conn.Read(p)
	}
	if !c.readable {
		return 0, errWouldBlock
	}
	n, e := rawsock.Read(c.fd, p)
	switch {
	case e == syscall.EAGAIN:
		c.readable = false
		return 0, errWouldBlock
	case e != 0:
		c.readable = false
		return 0, os.NewSyscallError("read", e)
	case n == 0:
		c.readable = false
		return 0, io.EOF
	}
	if n < len(p) && !c.hup {
		c.readable = false // a short read emptied the socket; the next input brings an edge
	}
	return n, nil
}

func (l *loopConn) Write(p []byte) (int, error) {
	if l.c == nil {
		if !l.wmu.TryLock() {
			return 0, net.ErrClosed
		}
		defer l.wmu.Unlock()
		if err := l.writePendingLocked(); err != nil {
			return 0, err
		}
		return l.Conn.Write(p)
	}
	if l.out == nil {
		l.out = l.c.w.buf()
	}
	l.out = append(l.out, p...)
	return len(p), nil
}

// writePending sends, on a goroutine, what a loop had not sent when it handed the connection
// back.
func (l *loopConn) writePending() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.writePendingLocked()
}

func (l *loopConn) writePendingLocked() error {
	if l.off == len(l.out) {
		return nil
	}
	_, err := l.Conn.Write(l.out[l.off:])
	l.out, l.off = nil, 0
	return err
}

// A loop keeps its connections' deadlines itself (evConn.deadline).
func (l *loopConn) SetDeadline(t time.Time) error {
	if l.c != nil {
		return nil
	}
	return l.Conn.SetDeadline(t)
}

func (l *loopConn) SetReadDeadline(t time.Time) error {
	if l.c != nil {
		return nil
	}
	return l.Conn.SetReadDeadline(t)
}

func (l *loopConn) SetWriteDeadline(t time.Time) error {
	if l.c != nil {
		return nil
	}
	return l.Conn.SetWriteDeadline(t)
}

// tlsHandover is an HTTPS connection on its way from its goroutine to a loop.
type tlsHandover struct {
	s      *h1Server // the HTTPS listener's
	tc     *tls.Conn
	lc     *loopConn
	cs     *tls.ConnectionState
	cert   *connCert
	ip     netip.Addr
	client string
	remote net.Addr
	peer   netip.AddrPort
}

// release ends a handed-over connection no loop took (its socket is closed by the caller).
func (t *tlsHandover) release() {
	t.s.wg.Done() // toLoop's count
}

// loopTransport wraps conn, a TLS connection's transport before its handshake, when the
// connection may move to a loop afterwards: the cleartext listener's loops run.
func (s *h1Server) loopTransport(conn net.Conn) (net.Conn, *loopConn) {
	if s.loopsOf == nil || s.loopsOf.runningLoops() == nil {
		return conn, nil
	}
	lc := &loopConn{Conn: conn}
	return lc, lc
}

// runningLoops is s's event loops, nil when none run (or they stop).
func (s *h1Server) runningLoops() *loops {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return nil
	}
	return s.loops
}

// toLoop moves an HTTPS connection whose handshake chose HTTP/1.1 to a loop. It reports false,
// and the goroutine serves the connection, when no loop runs or the connection holds bytes
// read before its handshake that crypto/tls did not take (a PROXY header's or ClientHello's
// replay, not all read: not seen from a client that waits for the handshake, as clients do).
func (c *h1Conn) toLoop(sock net.Conn, tc *tls.Conn, lc *loopConn) bool {
	if lc == nil || c.s.closing.Load() {
		return false
	}
	for under := lc.Conn; ; {
		p, ok := under.(*prefixedConn)
		if !ok {
			break
		}
		if len(p.pre) > 0 {
			return false
		}
		under = p.Conn
	}
	ls := c.s.loopsOf.runningLoops()
	sc, ok := sock.(syscall.Conn)
	if ls == nil || !ok {
		return false
	}
	fd, err := rawsock.Dup(sc)
	if err != nil {
		return false
	}
	// The HTTPS server counts the connection while a loop has it, until it closes or comes back
	// to a goroutine (Shutdown waits for it), and no longer holds it as its goroutine's: a
	// Shutdown does not close it under the loop.
	s := c.s
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		rawsock.Close(fd)
		return false
	}
	delete(s.conns, c)
	s.wg.Add(1)
	s.mu.Unlock()
	var peer netip.AddrPort
	if ta, ok := sock.RemoteAddr().(*net.TCPAddr); ok {
		peer = ta.AddrPort()
	}
	_ = sock.Close() // its descriptor leaves Go's poller; fd holds the socket
	t := &tlsHandover{s: s, tc: tc, lc: lc, cs: c.tls, cert: c.cert, ip: c.ip, client: c.client, remote: c.remote, peer: peer}
	ls.pick().post(accepted{fd: fd, tls: t})
	return true
}

// pick is the loop with the fewest connections.
func (ls *loops) pick() *worker {
	best := ls.workers[0]
	for _, w := range ls.workers[1:] {
		if w.count.Load() < best.count.Load() {
			best = w
		}
	}
	return best
}

// adoptTLS makes an HTTPS connection the loop's (adopt's counterpart): its first request is
// read at once, from what crypto/tls holds and the socket.
func (w *worker) adoptTLS(fd int, t *tlsHandover) {
	c := w.newConn()
	c.fd = fd
	c.s, c.proto, c.port = t.s, "https", w.h.httpsPort
	c.tc, c.lc, c.tls, c.cert, c.tlsMore = t.tc, t.lc, t.cs, t.cert, true
	t.lc.c = c
	c.clientAddr, c.ip, c.client, c.remote, c.loop = t.ip, t.ip, t.client, t.remote, true
	c.peer = t.peer
	c.needProxy = false // read before the handshake
	w.admit(c)
}

// readTLS reads decrypted input into p (the tail of c.in), as read does from the socket.
func (c *evConn) readTLS(p []byte) (ok, eof bool) {
	n, err := c.tc.Read(p)
	if n > 0 {
		c.in = c.in[:len(c.in)+n]
		c.tlsMore = true // a record may hold more, or more records may be buffered
		return true, false
	}
	c.tlsMore = false
	if err == errWouldBlock {
		return false, false
	}
	c.readable = false
	return false, true // the client's close_notify or end, or a TLS error (an alert is queued)
}

// flushTLS encrypts the output held and writes it, as flush does on cleartext.
func (c *evConn) flushTLS() bool {
	l := c.lc
	if c.woff < len(c.wout) {
		if _, err := c.tc.Write(c.wout[c.woff:]); err != nil {
			c.writeFailed(err) // crypto/tls sent an alert after a bad record, or close_notify
			return false
		}
	}
	c.woff = 0
	c.wout = c.spent(c.wout)
	if !c.writeHeld(l.out, &l.off) {
		return false
	}
	l.off = 0
	l.out = c.spent(l.out)
	return true
}

// tlsNotified sends close_notify before a lingering close's write shutdown (as the goroutine
// path's CloseWrite does); false while it waits for the client to read.
func (c *evConn) tlsNotified() bool {
	_ = c.tc.CloseWrite() // once: crypto/tls remembers
	return c.flush()
}

// tlsGoodbye sends close_notify, and what else crypto/tls has queued (an alert after a bad
// record), once and without waiting, as a connection closes: tls.Conn.Close's, on the
// goroutine path. The HTTPS server stops counting the connection (toLoop).
func (c *evConn) tlsGoodbye() {
	_ = c.tc.CloseWrite()
	if l := c.lc; l.off < len(l.out) {
		_, _ = rawsock.Write(c.fd, l.out[l.off:])
	}
	c.lc.c = nil
	c.s.wg.Done()
}

// tlsHandback readies an HTTPS connection for a goroutine (handoff): the output held is
// encrypted, and what is not sent moves out of the loop's buffers.
func (c *evConn) tlsHandback() {
	l := c.lc
	if c.woff < len(c.wout) {
		_, _ = c.tc.Write(c.wout[c.woff:])
		c.woff = len(c.wout)
	}
	pending := bytes.Clone(l.out[l.off:])
	c.w.putBuf(l.out)
	l.out, l.off, l.c = pending, 0, nil
	c.tc, c.lc, c.tlsMore = nil, nil, false
}
