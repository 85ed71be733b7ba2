package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"portico.dev/portico/dataplane/route"
)

// Upstream connections of the fast path: HTTP/1.1 keep-alive connections per endpoint address,
// used by one request at a time on the request's own goroutine (no reader or writer goroutine
// per connection, no channel hand-offs).

const (
	// maxIdlePerEndpoint bounds the idle connections kept per endpoint address (per event loop
	// on the loops; docs/data-plane.md says why 1,024).
	maxIdlePerEndpoint = 1024
	// upstreamIdleTimeout closes connections idle this long (backends close theirs too).
	upstreamIdleTimeout = 90 * time.Second
	// probeAfter: a connection idle longer than this is checked for a close by the backend
	// before it is used (one non-blocking peek). Younger ones are used directly by requests that
	// can be repeated (one that meets a closed connection is retried on a new one) and checked
	// for the others (a POST must not meet a connection the backend has closed).
	probeAfter = time.Second
	// maxResponseHead bounds a backend's response head.
	maxResponseHead = 1 << 20
)

type upConn struct {
	// key is the pool the connection belongs to: its endpoint address, and its TLS settings'
	// key when it speaks TLS (tls).
	key       string
	tls       bool
	c         net.Conn
	r         *bufio.Reader
	w         *bufio.Writer
	idleSince time.Time
	rd        readDeadline
	// reused is false on a connection's first exchange.
	reused bool
	// suspect: its last answer was bodiless by rule (see mustProbe).
	suspect bool
}

type upPool struct {
	mu      sync.Mutex
	idle    []*upConn
	lastUse time.Time
}

// upstreams holds the idle connections of every endpoint address.
type upstreams struct {
	dialer net.Dialer
	pools  sync.Map    // address -> *upPool
	h2     h2Upstreams // HTTP/2 connections (h2up.go)
	stop   chan struct{}
	once   sync.Once
}

func newUpstreams(dialTimeout time.Duration) *upstreams {
	u := &upstreams{dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}, stop: make(chan struct{})}
	u.h2 = h2Upstreams{conns: map[string][]*h2UpConn{}, dialer: &u.dialer}
	go u.janitor()
	return u
}

// get returns an idle connection to addr, or dials one within dialTimeout (always when fresh
// is set), over TLS when ut is set (pooled apart, per ut.Key). probe checks an idle connection
// for a close by the backend however young it is. Dial errors are returned as is; a failed TLS
// handshake as a dial error too (nothing of the request was sent).
func (u *upstreams) get(addr string, now time.Time, fresh, probe bool, dialTimeout time.Duration, ut *route.UpstreamTLS) (*upConn, error) {
	key := addr
	if ut != nil {
		key = addr + "\x00" + ut.Key
	}
	v, ok := u.pools.Load(key)
	if !ok {
		v, _ = u.pools.LoadOrStore(key, &upPool{})
	}
	p := v.(*upPool)
	for !fresh {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		uc := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.lastUse = now
		p.mu.Unlock()
		if !mustProbe(now.Sub(uc.idleSince), !probe, uc.suspect) {
			return uc, nil
		}
		uc.rd.none(uc.c) // the last response head's deadline may have passed
		if uc.alive() {
			return uc, nil
		}
		_ = uc.c.Close()
	}
	c, err := dialUpstream(&u.dialer, addr, dialTimeout, ut)
	if err != nil {
		return nil, err
	}
	rw := newRawConn(c)
	return &upConn{key: key, tls: ut != nil, c: c, r: bufio.NewReaderSize(rw, 8<<10), w: bufio.NewWriterSize(rw, 4<<10)}, nil
}

// alive reports whether an idle connection is still open with nothing to read. A TLS
// connection is read with a deadline already passed: records with no data (a TLS 1.3 session
// ticket) are consumed, data or the end means it is not reusable, the timeout that it is (a
// read timeout leaves a tls.Conn usable).
func (uc *upConn) alive() bool {
	if !uc.tls {
		return alive(uc.c)
	}
	uc.rd.exactly(uc.c, time.Unix(1, 0))
	_, err := uc.r.Peek(1)
	uc.rd.none(uc.c)
	return err != nil && isTimeout(err)
}

// dialUpstream connects to addr within timeout (the dialer's when 0) and, when ut is set,
// completes a TLS handshake within the same time; for HTTP/2 the backend must agree to h2 by
// ALPN. A failed handshake is returned as a dial error.
func dialUpstream(d *net.Dialer, addr string, timeout time.Duration, ut *route.UpstreamTLS) (net.Conn, error) {
	if timeout <= 0 {
		timeout = d.Timeout
	}
	start := time.Now()
	c, err := dialWithin(d, addr, timeout)
	if err != nil || ut == nil {
		return c, err
	}
	tc := tls.Client(c, ut.Config)
	_ = tc.SetDeadline(start.Add(timeout))
	err = tc.Handshake()
	if err == nil && len(ut.Config.NextProtos) > 0 && ut.Config.NextProtos[0] == "h2" && tc.ConnectionState().NegotiatedProtocol != "h2" {
		err = errors.New("the backend did not agree to HTTP/2 (ALPN h2)")
	}
	if err != nil {
		_ = c.Close()
		return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: c.RemoteAddr(), Err: fmt.Errorf("TLS handshake with %s: %w", ut.Name, err)}
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}

// put makes uc available to the next request for addr.
func (u *upstreams) put(addr string, uc *upConn, now time.Time) {
	if uc.key != "" {
		addr = uc.key
	}
	v, ok := u.pools.Load(addr)
	if !ok {
		_ = uc.c.Close()
		return
	}
	p := v.(*upPool)
	uc.idleSince, uc.reused = now, true
	p.mu.Lock()
	if len(p.idle) < maxIdlePerEndpoint {
		p.idle = append(p.idle, uc)
		uc = nil
	}
	p.mu.Unlock()
	if uc != nil {
		_ = uc.c.Close()
	}
}

// janitor closes connections idle past upstreamIdleTimeout and forgets addresses unused that
// long (pods come and go).
func (u *upstreams) janitor() {
	tick := time.NewTicker(upstreamIdleTimeout / 6)
	defer tick.Stop()
	for {
		select {
		case <-u.stop:
			return
		case now := <-tick.C:
			u.sweep(now, upstreamIdleTimeout)
		}
	}
}

func (u *upstreams) sweep(now time.Time, maxIdle time.Duration) {
	u.pools.Range(func(k, v any) bool {
		p := v.(*upPool)
		p.mu.Lock()
		keep := p.idle[:0]
		var expired []*upConn
		for _, uc := range p.idle {
			if now.Sub(uc.idleSince) >= maxIdle {
				expired = append(expired, uc)
			} else {
				keep = append(keep, uc)
			}
		}
		for i := len(keep); i < len(p.idle); i++ {
			p.idle[i] = nil
		}
		p.idle = keep
		if len(keep) == 0 && now.Sub(p.lastUse) >= maxIdle {
			u.pools.Delete(k)
		}
		p.mu.Unlock()
		for _, uc := range expired {
			_ = uc.c.Close()
		}
		return true
	})
}

// close closes every idle connection and stops the janitor.
func (u *upstreams) close() {
	u.once.Do(func() { close(u.stop) })
	u.sweep(time.Now().Add(100*365*24*time.Hour), 0)
	u.h2.closeAll()
}

// readDeadline moves a connection's read deadline lazily. Setting a deadline updates a runtime
// timer; doing it for every request of a keep-alive connection (twice: the client's idle
// timeout, the backend's response timeout) costs more than the rest of the bookkeeping.
type readDeadline struct{ at time.Time } // zero: none set

// within makes reads on c time out d after now, up to d/8 late: a deadline already set between
// now+d and now+d+d/8 is kept, else one is set at now+d+d/16, which the requests of the next
// d/16 keep in turn. A busy connection so moves its deadline a few times per timeout period.
func (rd *readDeadline) within(c net.Conn, now time.Time, d time.Duration) {
	rd.withinLate(c, now, d, d/8)
}

// withinLate is within with the lateness allowed given: up to late after now+d.
func (rd *readDeadline) withinLate(c net.Conn, now time.Time, d, late time.Duration) {
	want := now.Add(d)
	if !rd.at.IsZero() && !rd.at.Before(want) && rd.at.Sub(want) <= late {
		return
	}
	rd.at = want.Add(late / 2)
	_ = c.SetReadDeadline(rd.at)
}

// exactly sets the deadline at t.
func (rd *readDeadline) exactly(c net.Conn, t time.Time) {
	rd.at = t
	_ = c.SetReadDeadline(t)
}

// none lifts the deadline.
func (rd *readDeadline) none(c net.Conn) {
	if !rd.at.IsZero() {
		rd.at = time.Time{}
		_ = c.SetReadDeadline(time.Time{})
	}
}
