package l4

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Defaults of UDPConfig.
const (
	// DefaultUDPIdleTimeout ends a flow without a datagram either way for this long: longer
	// than a DNS exchange or a game's keep-alive interval, shorter than the 120 s the kernel's
	// connection tracking keeps an answered UDP flow, and each flow holds a socket.
	DefaultUDPIdleTimeout = 60 * time.Second
	// DefaultMaxFlows is the flows one listener holds at most (each holds a socket and a
	// goroutine), as DefaultMaxConns.
	DefaultMaxFlows = 16384
)

// maxDatagram is the largest UDP payload (65,535 bytes less the IP and UDP headers).
const maxDatagram = 65535

// UDPConfig configures a UDPForwarder. The zero value of each field but Picker takes its
// default.
type UDPConfig struct {
	// Name names the listener in metrics and logs: "udp/53".
	Name string
	// Picker chooses the endpoint of each new flow.
	Picker Picker
	// IdleTimeout ends a flow that carried no datagram either way for this long (default
	// DefaultUDPIdleTimeout).
	IdleTimeout time.Duration
	// MaxFlows is the flows held at once (default DefaultMaxFlows; negative: no limit); a
	// datagram from a new client beyond it is dropped.
	MaxFlows int
	// MaxAttempts is the endpoints tried when connecting a new flow's socket fails (default
	// DefaultMaxAttempts).
	MaxAttempts int
	// Metrics receives the listener's series; nil: none are kept.
	Metrics *Metrics
	// Log receives read errors of the listening socket; the zero Logger discards them.
	Log logr.Logger
}

// UDPForwarder forwards the datagrams arriving on one UDP socket, per client address (a
// flow), to an endpoint: each flow has a socket of its own connected to its endpoint, and the
// endpoint's answers go back to the client from the listening socket, from the address the
// client sent to. Its methods may be called from any goroutine.
type UDPForwarder struct {
	cfg UDPConfig
	m   *listenerMetrics

	mu       sync.Mutex
	pc       *net.UDPConn
	pi       pktinfo
	flows    map[netip.AddrPort]*udpFlow
	closed   bool
	draining bool
	wg       sync.WaitGroup // one per flow's reply goroutine
	idle     chan struct{}  // signalled (not closed) when a flow ends while draining
}

// NewUDPForwarder returns a forwarder with cfg, defaults applied.
func NewUDPForwarder(cfg UDPConfig) *UDPForwarder {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultUDPIdleTimeout
	}
	if cfg.MaxFlows == 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	return &UDPForwarder{cfg: cfg, m: cfg.Metrics.listener(cfg.Name, true), flows: map[netip.AddrPort]*udpFlow{},
		idle: make(chan struct{}, 1)}
}

// Serve reads datagrams from pc and forwards them until the forwarder is closed (it returns
// ErrClosed and has closed pc) or pc fails for good (it returns that error). A forwarder
// serves one socket. When pc is bound to an unspecified address (0.0.0.0, ::), answers are
// sent from the address each client sent to (IP_PKTINFO on Linux), so a client on a node
// with several addresses gets its answer from the one it asked.
func (f *UDPForwarder) Serve(pc *net.UDPConn) error {
	f.mu.Lock()
	if f.closed || f.pc != nil {
		f.mu.Unlock()
		_ = pc.Close()
		if f.closed {
			return ErrClosed
		}
		return errors.New("l4: a UDP forwarder serves one socket")
	}
	f.pc = pc
	f.pi = newPktinfo(pc)
	f.mu.Unlock()
	buf := make([]byte, maxDatagram)
	oob := make([]byte, 128)
	var backoff time.Duration
	for {
		n, oobn, _, from, err := pc.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if f.isClosed() {
				return ErrClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			f.cfg.Log.Error(err, "Read failed, retrying", "listener", f.cfg.Name, "in", backoff.String())
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		fl := f.flow(from, oob[:oobn])
		if fl == nil {
			continue
		}
		fl.last.Store(time.Now().UnixNano())
		f.m.datagramsIn.Inc()
		f.m.bytesIn.Add(float64(n))
		if _, err := fl.up.Write(buf[:n]); errors.Is(err, syscall.ECONNREFUSED) {
			fl.end(syscall.ECONNREFUSED)
		}
	}
}

// flow returns the flow of a client, creating it; nil when the datagram is to be dropped.
// Only Serve's goroutine calls it.
func (f *UDPForwarder) flow(client netip.AddrPort, oob []byte) *udpFlow {
	local := f.pi.dst(oob)
	f.mu.Lock()
	fl := f.flows[client]
	switch {
	case fl != nil:
		f.mu.Unlock()
		if local != fl.local {
			fl.local = local
			fl.oob.Store(ptrTo(f.pi.oob(local)))
		}
		return fl
	case f.closed:
		f.mu.Unlock()
		return nil
	case f.draining:
		f.mu.Unlock()
		f.m.draining.Inc()
		return nil
	case f.cfg.MaxFlows > 0 && len(f.flows) >= f.cfg.MaxFlows:
		f.mu.Unlock()
		f.m.limit.Inc()
		return nil
	}
	f.mu.Unlock()

	up, lease := f.connect()
	if up == nil {
		f.m.noEndpoint.Inc()
		return nil
	}
	fl = &udpFlow{f: f, client: client, up: up, lease: lease, local: local}
	fl.oob.Store(ptrTo(f.pi.oob(local)))
	fl.last.Store(time.Now().UnixNano())
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		_ = up.Close()
		if lease != nil {
			lease.Closed(nil)
		}
		return nil
	}
	f.flows[client] = fl
	f.wg.Add(1)
	f.mu.Unlock()
	f.m.conns.Inc()
	f.m.active.Inc()
	go fl.replies()
	return fl
}

func ptrTo(b []byte) *[]byte { return &b }

// connect opens a socket connected to an endpoint, trying up to MaxAttempts of them.
func (f *UDPForwarder) connect() (*net.UDPConn, Lease) {
	var tried []string
	for attempt := 0; attempt < f.cfg.MaxAttempts && f.cfg.Picker != nil; attempt++ {
		addr, lease, ok := f.cfg.Picker.Pick(tried)
		if !ok {
			return nil, nil
		}
		c, err := net.Dial("udp", addr)
		if lease != nil {
			lease.Dialed(err)
		}
		if err == nil {
			return c.(*net.UDPConn), lease
		}
		f.m.connect.Inc()
		tried = append(tried, addr)
	}
	return nil, nil
}

func (f *UDPForwarder) isClosed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

// Flows is the number of flows open now.
func (f *UDPForwarder) Flows() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.flows)
}

// Close ends everything at once: the listening socket (Serve returns ErrClosed) and every
// flow. Answers can only be sent from the listening socket, so no flow outlives it.
func (f *UDPForwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	pc := f.pc
	flows := make([]*udpFlow, 0, len(f.flows))
	for _, fl := range f.flows {
		flows = append(flows, fl)
	}
	f.mu.Unlock()
	var err error
	if pc != nil {
		err = pc.Close()
	}
	for _, fl := range flows {
		fl.end(nil)
	}
	f.wg.Wait()
	return err
}

// Drain stops creating flows (a datagram from a new client is dropped, counted as draining)
// while the flows open go on until they end idle, then closes the forwarder; when ctx ends
// first, it closes the forwarder then and returns ctx's error.
func (f *UDPForwarder) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.draining = true
	f.mu.Unlock()
	for f.Flows() > 0 {
		select {
		case <-f.idle:
		case <-ctx.Done():
			_ = f.Close()
			return ctx.Err()
		}
	}
	return f.Close()
}

// udpFlow is one client's flow.
type udpFlow struct {
	f      *UDPForwarder
	client netip.AddrPort
	up     *net.UDPConn // connected to the endpoint
	lease  Lease
	local  netip.Addr             // the address the client sent to (Serve's goroutine only)
	oob    atomic.Pointer[[]byte] // the control message answers are sent with
	last   atomic.Int64           // unix nanoseconds of the last datagram either way
	ended  atomic.Bool
}

// replies sends the endpoint's datagrams to the client until the flow ends: idle for
// IdleTimeout, refused by the endpoint, or closed.
func (fl *udpFlow) replies() {
	defer fl.f.wg.Done()
	r, err := newDatagramReader(fl.up, fl.answer)
	if err != nil {
		fl.end(nil)
		return
	}
	idle := fl.f.cfg.IdleTimeout
	// The deadline is moved only when it passes: datagrams meanwhile moved fl.last.
	deadline := time.Unix(0, fl.last.Load()).Add(idle)
	set := time.Time{}
	for {
		if !deadline.Equal(set) {
			if err := fl.up.SetReadDeadline(deadline); err != nil {
				fl.end(nil)
				return
			}
			set = deadline
		}
		err := r.wait()
		switch {
		case err == nil:
			fl.last.Store(time.Now().UnixNano())
		case errors.Is(err, os.ErrDeadlineExceeded):
			deadline = time.Unix(0, fl.last.Load()).Add(idle)
			if !time.Now().Before(deadline) {
				fl.end(nil)
				return
			}
		case errors.Is(err, syscall.ECONNREFUSED):
			fl.end(syscall.ECONNREFUSED)
			return
		default:
			fl.end(nil)
			return
		}
	}
}

// answer sends one datagram of the endpoint to the client.
func (fl *udpFlow) answer(b []byte) {
	f := fl.f
	if _, _, err := f.pc.WriteMsgUDPAddrPort(b, *fl.oob.Load(), fl.client); err == nil {
		f.m.datagramsOut.Inc()
		f.m.bytesOut.Add(float64(len(b)))
	}
}

// end removes the flow and closes its socket, once; err is syscall.ECONNREFUSED when the
// endpoint refused.
func (fl *udpFlow) end(err error) {
	if fl.ended.Swap(true) {
		return
	}
	f := fl.f
	f.mu.Lock()
	if f.flows[fl.client] == fl {
		delete(f.flows, fl.client)
	}
	f.mu.Unlock()
	_ = fl.up.Close()
	f.m.active.Dec()
	if err != nil {
		f.m.refused.Inc()
	}
	if fl.lease != nil {
		fl.lease.Closed(err)
	}
	select {
	case f.idle <- struct{}{}:
	default:
	}
}
