package l4

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"portico.dev/portico/dataplane/internal/rawsock"
)

// TestTCPLoopKillAfterExit: Drain's deadline wakes the loops to end their connections; a loop
// that had ended already (no connection left when the forwarder closed) has closed its pipe,
// and nothing is written to whatever descriptor took that number since (a review finding:
// the byte went into an unrelated socket).
func TestTCPLoopKillAfterExit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := NewTCPForwarder(TCPConfig{Name: "tcp/test", Picker: newPicker(t, backend(t, echo)), EventLoops: 2})
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	_, _ = c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the loops serving", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.loops) == 1
	})
	f.mu.Lock()
	ls := f.loops[0]
	f.mu.Unlock()
	pipes := []int{ls.workers[0].wakeW, ls.workers[1].wakeW}
	_ = f.Close() // the loop without a connection ends, closing its pipe
	var closed []int
	eventually(t, "a loop ended", func() bool {
		closed = closed[:0]
		for _, fd := range pipes {
			if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); e == syscall.EBADF {
				closed = append(closed, fd)
			}
		}
		return len(closed) > 0
	})
	// Descriptors opened since: one of them takes the closed pipe's number.
	var victim, peer int = -1, -1
	for range 64 {
		sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(sp[0]); syscall.Close(sp[1]) })
		for i, fd := range sp {
			if fd == closed[0] {
				victim, peer = fd, sp[1-i]
			}
		}
		if victim >= 0 {
			break
		}
	}
	if victim < 0 {
		t.Skip("the closed pipe's number was not taken again")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = f.Drain(ctx) // its deadline passes: the loops are told to end their connections
	<-done
	var b [16]byte
	if n, _ := syscall.Read(peer, b[:]); n > 0 {
		t.Errorf("Drain wrote %q into descriptor %d, a loop's pipe before it ended", b[:n], victim)
	}
}

// queuedPicker gives first an address whose listener never accepts (its connections wait in
// the queue), then live; picked is closed once the first is given.
type queuedPicker struct {
	queued, live string
	picked       chan struct{}
	mu           sync.Mutex
	leases       []*recLease
}

// recLease records what its connection reported.
type recLease struct {
	mu             *sync.Mutex
	dialed, closed []error
}

func (l *recLease) Dialed(err error) { l.mu.Lock(); l.dialed = append(l.dialed, err); l.mu.Unlock() }
func (l *recLease) Closed(err error) { l.mu.Lock(); l.closed = append(l.closed, err); l.mu.Unlock() }

func (p *queuedPicker) Pick([]string) (string, Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := &recLease{mu: &p.mu}
	p.leases = append(p.leases, l)
	if len(p.leases) == 1 {
		close(p.picked)
		return p.queued, l, true
	}
	return p.live, l, true
}

// report is what the leases were told, by lease: "dialed/closed" errors.
func (p *queuedPicker) report() (n int, first, second [2][]error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n = len(p.leases)
	if n > 0 {
		first = [2][]error{slices.Clone(p.leases[0].dialed), slices.Clone(p.leases[0].closed)}
	}
	if n > 1 {
		second = [2][]error{slices.Clone(p.leases[1].dialed), slices.Clone(p.leases[1].closed)}
	}
	return n, first, second
}

// TestTCPLoopQueuedEndpointReset: an endpoint whose listener closes with the connection still
// in its queue (the handshake done by the kernel; a stopping pod) resets it before a byte
// passed: the loop goes on to another endpoint, and reports the first as refusing (Closed with
// ECONNREFUSED, so it is ejected). Here the server speaks first, as in the churn test of
// dataplane/run, where such resets failed 1 connection in 10,000; once the client's bytes went
// to the endpoint the reset is relayed (nobody can tell whether they were read). The goroutine
// path relays the reset in both cases (see loopConn.failed).
func TestTCPLoopQueuedEndpointReset(t *testing.T) {
	for _, clientFirst := range []bool{false, true} {
		queued, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		live := backend(t, func(c *net.TCPConn) { _, _ = c.Write([]byte("hi\n")) })
		p := &queuedPicker{queued: queued.Addr().String(), live: live, picked: make(chan struct{})}
		_, addr := startTCP(t, TCPConfig{Picker: p, EventLoops: 1})
		c := dial(t, addr)
		if clientFirst {
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
		}
		<-p.picked
		time.Sleep(100 * time.Millisecond) // the connect completes into the queue
		_ = queued.Close()                 // the kernel resets what waits in the queue
		got, err := io.ReadAll(c)
		_ = c.Close()
		if clientFirst {
			if n, _, _ := p.report(); err == nil || n != 1 {
				t.Errorf("client first: got %q, %v after %d endpoints; want the reset relayed", got, err, n)
			}
			continue
		}
		if err != nil || string(got) != "hi\n" {
			t.Fatalf("the client got %q, %v; want the next endpoint's greeting", got, err)
		}
		eventually(t, "the leases reported", func() bool { n, _, second := p.report(); return n == 2 && len(second[1]) == 1 })
		_, first, _ := p.report()
		if len(first[0]) != 1 || first[0][0] != nil || len(first[1]) != 1 || !errors.Is(first[1][0], syscall.ECONNREFUSED) {
			t.Errorf("the queued endpoint's lease: Dialed %v, Closed %v; want Dialed(nil), Closed(ECONNREFUSED)", first[0], first[1])
		}
	}
}

// TestTCPLoopsListenerOutsideThePoller: once the loops serve the listener, only their own epoll
// sets watch it, not the runtime's poller too (see rawsock.DupListener).
func TestTCPLoopsListenerOutsideThePoller(t *testing.T) {
	_, addr := startTCP(t, TCPConfig{Picker: newPicker(t, backend(t, echo)), EventLoops: 2})
	c := dial(t, addr)
	_, _ = c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	sets, err := rawsock.ListenerWatchers(netip.MustParseAddrPort(addr))
	if err != nil || len(sets) != 2 {
		t.Fatalf("the listener is watched by the epoll sets %v (%v), want the two loops' alone", sets, err)
	}
}
