package l4

import (
	"context"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Regressions from the review of the TCP event loops (tenth session); they run on both paths
// (PORTICO_TEST_EVENT_LOOPS=-1: the goroutine path), whose behaviour is the reference.

// TestTCPNoNagleTowardsClients: an answer the backend writes in two parts reaches the client
// without waiting for its delayed ACK (TCP_NODELAY on the client's side too; 40 ms otherwise).
func TestTCPNoNagleTowardsClients(t *testing.T) {
	be := backend(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			_, _ = c.Write([]byte("a"))
			time.Sleep(2 * time.Millisecond)
			_, _ = c.Write([]byte("b"))
		}
	})
	_, addr := startTCP(t, TCPConfig{Picker: newPicker(t, be)})
	c := dial(t, addr)
	var total time.Duration
	const n = 20
	for range n {
		start := time.Now()
		_, _ = c.Write([]byte("q"))
		if _, err := io.ReadFull(c, make([]byte, 2)); err != nil {
			t.Fatal(err)
		}
		total += time.Since(start)
	}
	if mean := total / n; mean > 15*time.Millisecond {
		t.Errorf("a two-part answer took %v on average: its second part waited for the client's delayed ACK (Nagle)", mean)
	}
}

// slowPicker picks addr after a pause, so that the client's bytes are all there before the
// connection's first read.
type slowPicker struct{ addr string }

func (p slowPicker) Pick([]string) (string, Lease, bool) {
	time.Sleep(150 * time.Millisecond)
	return p.addr, nil, true
}

// TestTCPUrgentDataPassesOn: urgent data (MSG_OOB) makes a read stop short at the urgent mark
// with bytes still queued behind it; they are forwarded all the same (the urgent byte itself is
// out of band, and dropped, as a splice or a copy through net.Conn drops it).
func TestTCPUrgentDataPassesOn(t *testing.T) {
	got := make(chan string, 1)
	be := backend(t, func(c *net.TCPConn) {
		var sb strings.Builder
		b := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for sb.Len() < 8 {
			n, err := c.Read(b)
			sb.Write(b[:n])
			if err != nil {
				break
			}
		}
		got <- sb.String()
	})
	_, addr := startTCP(t, TCPConfig{Picker: slowPicker{be}})
	c := dial(t, addr)
	_, _ = c.Write([]byte("AAAA"))
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Write(func(fd uintptr) bool {
		_ = syscall.Sendto(int(fd), []byte("B"), syscall.MSG_OOB, nil)
		return true
	})
	_, _ = c.Write([]byte("CCCC"))
	if s := <-got; s != "AAAACCCC" {
		t.Errorf("the backend received %q, want %q", s, "AAAACCCC")
	}
}

// closingPicker closes the forwarder at its first pick (a listener retired while a connection
// connects), and gives a refused address then a live one.
type closingPicker struct {
	f     *TCPForwarder
	addrs []string
	n     int
}

func (p *closingPicker) Pick([]string) (string, Lease, bool) {
	if p.n >= len(p.addrs) {
		return "", nil, false
	}
	a := p.addrs[p.n]
	p.n++
	if p.n == 1 {
		_ = p.f.Close()
	}
	return a, nil, true
}

// TestTCPRetryAfterClose: a connection still connecting when its listener is closed goes on to
// its next endpoint, even when the new socket gets the closed listener's descriptor number.
func TestTCPRetryAfterClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &closingPicker{addrs: []string{deadAddr(t), backend(t, echo)}}
	loops := testEventLoops
	if loops == 0 {
		loops = 1
	}
	f := NewTCPForwarder(TCPConfig{Name: "tcp/test", Picker: p, EventLoops: loops, DialTimeout: 1500 * time.Millisecond})
	p.f = f
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	start := time.Now()
	_, _ = c.Write([]byte("hello"))
	if _, err := io.ReadFull(c, make([]byte, 5)); err != nil || time.Since(start) > time.Second {
		t.Errorf("the second endpoint: %v after %v", err, time.Since(start).Round(time.Millisecond))
	}
	_ = c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = f.Drain(ctx)
	<-done
}
