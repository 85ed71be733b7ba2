package l4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// udpEcho answers each datagram with "echo:" and the datagram, and records the source
// addresses it saw.
type udpEcho struct {
	addr    string
	mu      sync.Mutex
	sources map[string]int
}

func newUDPEcho(t *testing.T) *udpEcho {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEcho{addr: pc.LocalAddr().String(), sources: map[string]int{}}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := pc.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.mu.Lock()
			e.sources[from.String()]++
			e.mu.Unlock()
			_, _ = pc.WriteToUDPAddrPort(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	return e
}

func (e *udpEcho) sourceCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.sources)
}

// startUDP serves a forwarder on laddr (127.0.0.1:0 when empty); the test's end closes it.
func startUDP(t *testing.T, laddr string, cfg UDPConfig) (*UDPForwarder, *net.UDPAddr) {
	t.Helper()
	if laddr == "" {
		laddr = "127.0.0.1:0"
	}
	ua, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "udp/test"
	}
	f := NewUDPForwarder(cfg)
	done := make(chan error, 1)
	go func() { done <- f.Serve(pc) }()
	t.Cleanup(func() {
		_ = f.Close()
		if err := <-done; err != ErrClosed {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	return f, pc.LocalAddr().(*net.UDPAddr)
}

// udpClient is a connected socket: it receives only what comes from the address it sends to.
func udpClient(t *testing.T, to *net.UDPAddr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends msg and returns the answer, or an error after wait.
func exchange(c *net.UDPConn, msg []byte, wait time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, maxDatagram)
	n, err := c.Read(buf)
	return buf[:n], err
}

func TestUDPEcho(t *testing.T) {
	be := newUDPEcho(t)
	m := NewMetrics(nil)
	p := newPicker(t, be.addr)
	f, addr := startUDP(t, "", UDPConfig{Picker: p, Metrics: m})
	const clients, each = 5, 3
	for i := 0; i < clients; i++ {
		c := udpClient(t, addr)
		for j := 0; j < each; j++ {
			msg := fmt.Sprintf("client %d message %d", i, j)
			got, err := exchange(c, []byte(msg), 5*time.Second)
			if err != nil || string(got) != "echo:"+msg {
				t.Fatalf("got %q, %v", got, err)
			}
		}
	}
	if f.Flows() != clients || be.sourceCount() != clients {
		t.Errorf("%d flows, the backend saw %d sources; want %d each (a socket per flow)", f.Flows(), be.sourceCount(), clients)
	}
	for dir, want := range map[string]float64{DirectionIn: clients * each, DirectionOut: clients * each} {
		if got := testutil.ToFloat64(m.Datagrams.WithLabelValues("udp/test", dir)); got != want {
			t.Errorf("datagrams %s: %v, want %v", dir, got, want)
		}
	}
	if got := testutil.ToFloat64(m.Connections.WithLabelValues("udp/test")); got != clients {
		t.Errorf("flows created: %v", got)
	}
	// A datagram as large as UDP carries.
	big := bytes.Repeat([]byte("x"), maxDatagram-28-len("echo:"))
	if got, err := exchange(udpClient(t, addr), big, 5*time.Second); err != nil || !bytes.Equal(got, append([]byte("echo:"), big...)) {
		t.Errorf("a %d-byte datagram: %d bytes back, %v", len(big), len(got), err)
	}
}

func TestUDPIdleExpiry(t *testing.T) {
	be := newUDPEcho(t)
	p := newPicker(t, be.addr)
	const idle = 300 * time.Millisecond
	f, addr := startUDP(t, "", UDPConfig{Picker: p, IdleTimeout: idle})
	quiet, busy := udpClient(t, addr), udpClient(t, addr)
	for _, c := range []*net.UDPConn{quiet, busy} {
		if _, err := exchange(c, []byte("hi"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	for time.Since(start) < 3*idle { // the busy client keeps its flow
		if _, err := exchange(busy, []byte("tick"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(idle / 4)
	}
	if f.Flows() != 1 {
		t.Errorf("%d flows after %v; want the busy one only", f.Flows(), 3*idle)
	}
	eventually(t, "the busy flow expired", func() bool { return f.Flows() == 0 })
	if got := time.Since(start); got < 3*idle {
		t.Errorf("expired after %v", got)
	}
	eventually(t, "both leases closed", func() bool { return p.openLeases() == 0 && len(p.events()) == 4 })
	if ev := p.events(); !hasEvent(ev, "closed "+be.addr+": ok") {
		t.Errorf("lease events %v", ev)
	}
	// The quiet client comes back: a new flow.
	if _, err := exchange(quiet, []byte("again"), 5*time.Second); err != nil || f.Flows() != 1 {
		t.Errorf("a client back after its flow expired: %v, %d flows", err, f.Flows())
	}
}

func TestUDPFlowLimit(t *testing.T) {
	be := newUDPEcho(t)
	m := NewMetrics(nil)
	f, addr := startUDP(t, "", UDPConfig{Picker: newPicker(t, be.addr), Metrics: m, MaxFlows: 2, IdleTimeout: time.Minute})
	a, b, c := udpClient(t, addr), udpClient(t, addr), udpClient(t, addr)
	for _, cl := range []*net.UDPConn{a, b} {
		if _, err := exchange(cl, []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exchange(c, []byte("x"), 300*time.Millisecond); err == nil {
		t.Fatal("a third flow beyond MaxFlows was answered")
	}
	if got := failures(m, "udp/test", ReasonLimit); got != 1 || f.Flows() != 2 {
		t.Errorf("limit %d, flows %d", got, f.Flows())
	}
	if _, err := exchange(a, []byte("y"), 5*time.Second); err != nil {
		t.Errorf("an existing flow at the limit: %v", err)
	}
}

// On a socket bound to 0.0.0.0, answers leave from the address the client sent to: a client
// sending to 127.0.0.2 (its socket connected, so it takes answers from there only) is answered.
func TestUDPAnswersFromTheAddressAsked(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("IP_PKTINFO: Linux only")
	}
	be := newUDPEcho(t)
	_, addr := startUDP(t, "0.0.0.0:0", UDPConfig{Picker: newPicker(t, be.addr)})
	for _, ip := range []string{"127.0.0.2", "127.0.0.1", "127.0.0.3"} {
		c := udpClient(t, &net.UDPAddr{IP: net.ParseIP(ip), Port: addr.Port})
		if got, err := exchange(c, []byte(ip), 2*time.Second); err != nil || string(got) != "echo:"+ip {
			t.Errorf("sent to %s: %q, %v", ip, got, err)
		}
	}
	t.Run("dual stack", func(t *testing.T) {
		_, addr := startUDP(t, "[::]:0", UDPConfig{Picker: newPicker(t, be.addr)})
		c := udpClient(t, &net.UDPAddr{IP: net.ParseIP("127.0.0.2"), Port: addr.Port})
		if got, err := exchange(c, []byte("v4 to ::"), 2*time.Second); err != nil || string(got) != "echo:v4 to ::" {
			t.Errorf("%q, %v", got, err)
		}
	})
}

// An endpoint where nothing listens answers "port unreachable": the flow ends, the lease says
// refused, and the next datagram starts a flow to the next endpoint.
func TestUDPRefused(t *testing.T) {
	be := newUDPEcho(t)
	dead := closedUDPAddr(t)
	m := NewMetrics(nil)
	p := newPicker(t, dead, be.addr)
	f, addr := startUDP(t, "", UDPConfig{Picker: p, Metrics: m})
	c := udpClient(t, addr)
	if _, err := exchange(c, []byte("x"), 300*time.Millisecond); err == nil {
		t.Fatal("an answer from nowhere")
	}
	eventually(t, "the refused flow ended", func() bool { return f.Flows() == 0 })
	if !hasEvent(p.events(), "closed "+dead+": refused") || failures(m, "udp/test", ReasonRefused) != 1 {
		t.Errorf("lease events %v, refused %d", p.events(), failures(m, "udp/test", ReasonRefused))
	}
	if got, err := exchange(c, []byte("y"), 5*time.Second); err != nil || string(got) != "echo:y" {
		t.Errorf("the next datagram: %q, %v", got, err)
	}
}

// closedUDPAddr is a loopback UDP port nothing is bound to (bound a moment ago).
func closedUDPAddr(t *testing.T) string {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

func TestUDPDrain(t *testing.T) {
	be := newUDPEcho(t)
	m := NewMetrics(nil)
	const idle = 300 * time.Millisecond
	f, addr := startUDP(t, "", UDPConfig{Picker: newPicker(t, be.addr), Metrics: m, IdleTimeout: idle})
	old := udpClient(t, addr)
	if _, err := exchange(old, []byte("x"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	drained := make(chan error, 1)
	go func() { drained <- f.Drain(context.Background()) }()
	eventually(t, "draining", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.draining
	})
	if _, err := exchange(old, []byte("y"), 5*time.Second); err != nil {
		t.Errorf("an open flow while draining: %v", err)
	}
	if _, err := exchange(udpClient(t, addr), []byte("new"), 200*time.Millisecond); err == nil {
		t.Error("a new client was answered while draining")
	}
	if got := failures(m, "udp/test", ReasonDraining); got != 1 {
		t.Errorf("draining: %d", got)
	}
	select {
	case err := <-drained:
		if err != nil {
			t.Errorf("Drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return once the flows expired")
	}

	t.Run("until a deadline", func(t *testing.T) {
		f, addr := startUDP(t, "", UDPConfig{Picker: newPicker(t, be.addr), IdleTimeout: time.Minute})
		if _, err := exchange(udpClient(t, addr), []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := f.Drain(ctx); !errors.Is(err, context.DeadlineExceeded) || f.Flows() != 0 {
			t.Errorf("Drain: %v, %d flows left", err, f.Flows())
		}
	})
}
