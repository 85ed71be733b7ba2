package l4

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testEventLoops: PORTICO_TEST_EVENT_LOOPS=-1 runs the tests with Serve's goroutine path
// (no event loops), as the proxy package's tests do.
var testEventLoops, _ = strconv.Atoi(os.Getenv("PORTICO_TEST_EVENT_LOOPS"))

// startTCP serves a forwarder on a loopback listener; the test's end drains it.
func startTCP(t *testing.T, cfg TCPConfig) (*TCPForwarder, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name == "" {
		cfg.Name = "tcp/test"
	}
	if cfg.EventLoops == 0 {
		cfg.EventLoops = testEventLoops
	}
	f := NewTCPForwarder(cfg)
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.Drain(ctx)
		if err := <-done; err != ErrClosed {
			t.Errorf("Serve returned %v, want ErrClosed", err)
		}
	})
	return f, ln.Addr().String()
}

// backend serves each connection with handle on a loopback listener.
func backend(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().String()
}

// echo sends back what it reads; at the client's end of stream it ends its own.
func echo(c *net.TCPConn) {
	_, _ = io.Copy(c, c)
	_ = c.CloseWrite()
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

func TestTCPEcho(t *testing.T) {
	m := NewMetrics(nil)
	p := newPicker(t, backend(t, echo))
	_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m})
	c := dial(t, addr)
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello and an end of stream", got, err)
	}
	eventually(t, "the lease closed", func() bool { return p.openLeases() == 0 && len(p.events()) == 2 })
	if ev := p.events(); ev[0] != "dialed "+p.addrs[0]+": ok" || ev[1] != "closed "+p.addrs[0]+": ok" {
		t.Errorf("lease events %v", ev)
	}
	for dir, want := range map[string]float64{DirectionIn: 5, DirectionOut: 5} {
		if got := testutil.ToFloat64(m.Bytes.WithLabelValues("tcp/test", dir)); got != want {
			t.Errorf("bytes %s: %v, want %v", dir, got, want)
		}
	}
	if got := testutil.ToFloat64(m.Connections.WithLabelValues("tcp/test")); got != 1 {
		t.Errorf("connections: %v", got)
	}
	eventually(t, "no active connection", func() bool { return testutil.ToFloat64(m.Active.WithLabelValues("tcp/test")) == 0 })
	if n := testutil.CollectAndCount(m.Failures); n != 7 {
		t.Errorf("%d failure series for a TCP listener, want 7 (no UDP-only reason)", n)
	}
}

// Half-close both ways: each side's end of stream reaches the other, which goes on sending.
func TestTCPHalfClose(t *testing.T) {
	t.Run("client ends first", func(t *testing.T) {
		// The backend answers only after the client's end of stream.
		p := newPicker(t, backend(t, func(c *net.TCPConn) {
			n, _ := io.Copy(io.Discard, c)
			_, _ = fmt.Fprintf(c, "got %d bytes", n)
		}))
		_, addr := startTCP(t, TCPConfig{Picker: p})
		c := dial(t, addr)
		_, _ = c.Write(bytes.Repeat([]byte("x"), 1000))
		_ = c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "got 1000 bytes" {
			t.Fatalf("read %q, %v", got, err)
		}
	})
	t.Run("backend ends first", func(t *testing.T) {
		received := make(chan string, 1)
		p := newPicker(t, backend(t, func(c *net.TCPConn) {
			_, _ = c.Write([]byte("banner"))
			_ = c.CloseWrite()
			b, _ := io.ReadAll(c)
			received <- string(b)
		}))
		_, addr := startTCP(t, TCPConfig{Picker: p})
		c := dial(t, addr)
		got, err := io.ReadAll(c) // the banner, then the backend's end of stream
		if err != nil || string(got) != "banner" {
			t.Fatalf("read %q, %v", got, err)
		}
		_, _ = c.Write([]byte("after the backend's end"))
		_ = c.CloseWrite()
		select {
		case r := <-received:
			if r != "after the backend's end" {
				t.Errorf("backend received %q", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the backend never received the client's bytes and end of stream")
		}
	})
}

// 48 MiB each way at once, checked by hash.
func TestTCPLargeTransfer(t *testing.T) {
	p := newPicker(t, backend(t, echo))
	m := NewMetrics(nil)
	_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m})
	c := dial(t, addr)
	const size = 48 << 20
	src := mrand.New(mrand.NewPCG(7, 8))
	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 256<<10)
		for n := 0; n < size; n += len(buf) {
			for i := range buf {
				buf[i] = byte(src.Uint32())
			}
			sent.Write(buf)
			if _, err := c.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- c.CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, c)
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatal("the bytes echoed differ from the bytes sent")
	}
	if in := testutil.ToFloat64(m.Bytes.WithLabelValues("tcp/test", DirectionIn)); in != size {
		t.Errorf("bytes in: %v", in)
	}
}

// On Linux two TCP sockets are spliced (in the kernel) and their progress read from the
// kernel; a connection of another kind goes through a buffer.
func TestSpliceable(t *testing.T) {
	a, b := dialPair(t)
	_, tcp := spliceable(a, b)
	_, wrapped := spliceable(a, struct{ net.Conn }{b})
	if tcp != (runtime.GOOS == "linux") || wrapped {
		t.Errorf("spliceable: two TCP sockets %v, a wrapped one %v", tcp, wrapped)
	}
	if runtime.GOOS != "linux" {
		return
	}
	before := socketProgress(b)
	_, _ = a.Write([]byte("12345"))
	eventually(t, "the bytes counted", func() bool { return socketProgress(b) == before+5 })
	if socketProgress(struct{ net.Conn }{b}) != 0 {
		t.Error("progress of a wrapped connection")
	}
}

func dialPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a := dial(t, ln.Addr().String())
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b.(*net.TCPConn)
}

func TestTCPRefusedEndpointsSkipped(t *testing.T) {
	dead1, dead2 := deadAddr(t), deadAddr(t)
	live := backend(t, echo)
	m := NewMetrics(nil)
	p := newPicker(t, dead1, dead2, live)
	_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m})
	c := dial(t, addr)
	_, _ = c.Write([]byte("ping"))
	_ = c.CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v", got, err)
	}
	eventually(t, "the lease closed", func() bool { return p.openLeases() == 0 })
	want := []string{"dialed " + dead1 + ": refused", "dialed " + dead2 + ": refused", "dialed " + live + ": ok", "closed " + live + ": ok"}
	if ev := p.events(); !slices.Equal(ev, want) {
		t.Errorf("lease events %v, want %v", ev, want)
	}
	if p.tried[2][0] != dead1 || p.tried[2][1] != dead2 {
		t.Errorf("Pick was told %v", p.tried)
	}
	if got := failures(m, "tcp/test", ReasonRefused); got != 2 {
		t.Errorf("refused: %d, want 2", got)
	}

	t.Run("every attempt refused", func(t *testing.T) {
		m := NewMetrics(nil)
		p := newPicker(t, deadAddr(t), deadAddr(t), deadAddr(t), live)
		_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m, MaxAttempts: 3})
		if err := dialAndRead(addr); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the client read %v, want a reset", err)
		}
		if got := failures(m, "tcp/test", ReasonNoEndpoint); got != 1 || failures(m, "tcp/test", ReasonRefused) != 3 {
			t.Errorf("no_endpoint %d, refused %d; want 1 and 3 (MaxAttempts)", got, failures(m, "tcp/test", ReasonRefused))
		}
	})
	t.Run("no endpoint", func(t *testing.T) {
		m := NewMetrics(nil)
		_, addr := startTCP(t, TCPConfig{Picker: newPicker(t), Metrics: m})
		if err := dialAndRead(addr); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("the client read %v, want a reset", err)
		}
		if got := failures(m, "tcp/test", ReasonNoEndpoint); got != 1 {
			t.Errorf("no_endpoint %d", got)
		}
	})
}

// dialAndRead connects to addr and reads until an error: the connection's end (io.EOF) or
// failure, which may come as early as the connect (a reset that quick on loopback).
func dialAndRead(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(c)
	if err == nil {
		err = io.EOF
	}
	return err
}

// A reset by the backend reaches the client as a reset, not as an end of stream that could
// pass for a complete answer.
func TestTCPResetPropagates(t *testing.T) {
	p := newPicker(t, backend(t, func(c *net.TCPConn) {
		_, _ = c.Read(make([]byte, 1))
		_, _ = c.Write([]byte("partial"))
		_ = c.SetLinger(0)
	}))
	m := NewMetrics(nil)
	_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m})
	c := dial(t, addr)
	_, _ = c.Write([]byte("go"))
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read %q, %v; want a reset", got, err)
	}
	eventually(t, "the reset counted", func() bool { return failures(m, "tcp/test", ReasonReset) == 1 })
}

func TestTCPIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	// The backend streams a byte every 50 ms when asked to with "s"; otherwise it echoes.
	p := newPicker(t, backend(t, func(c *net.TCPConn) {
		b := make([]byte, 1)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
			if b[0] != 's' {
				_, _ = c.Write(b)
				continue
			}
			for i := 0; i < 20; i++ {
				if _, err := c.Write([]byte{'.'}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			_ = c.CloseWrite()
		}
	}))
	m := NewMetrics(nil)
	_, addr := startTCP(t, TCPConfig{Picker: p, Metrics: m, IdleTimeout: idle})

	t.Run("a silent connection is closed", func(t *testing.T) {
		c := dial(t, addr)
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		took := time.Since(start)
		if err != io.EOF || took < idle || took > idle+idle/8+time.Second {
			t.Errorf("read %v after %v; want an end of stream after %v", err, took, idle)
		}
		if got := failures(m, "tcp/test", ReasonIdle); got != 1 {
			t.Errorf("idle: %d", got)
		}
	})
	t.Run("a client sending now and then is not", func(t *testing.T) {
		c := dial(t, addr)
		b := make([]byte, 1)
		for i := 0; i < 10; i++ { // 1 s, over three idle timeouts
			if _, err := c.Write([]byte{'x'}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(b); err != nil {
				t.Fatalf("after %d round trips: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("a download the client only reads is not", func(t *testing.T) {
		c := dial(t, addr)
		_, _ = c.Write([]byte{'s'}) // the only byte the client sends; then 1 s of download
		got, err := io.ReadAll(c)
		if err != nil || len(got) != 20 {
			t.Errorf("read %d bytes, %v; want 20 and the backend's end", len(got), err)
		}
	})
	if got := failures(m, "tcp/test", ReasonIdle); got != 1 {
		t.Errorf("idle: %d, want 1", got)
	}
}

func TestTCPConnectionLimit(t *testing.T) {
	m := NewMetrics(nil)
	f, addr := startTCP(t, TCPConfig{Picker: newPicker(t, backend(t, echo)), Metrics: m, MaxConns: 2})
	roundTrip := func(c *net.TCPConn) error {
		if _, err := c.Write([]byte("x")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 1))
		return err
	}
	a, b := dial(t, addr), dial(t, addr)
	if roundTrip(a) != nil || roundTrip(b) != nil {
		t.Fatal("the first two connections do not work")
	}
	third := dial(t, addr)
	if err := roundTrip(third); err == nil {
		t.Fatal("a third connection beyond MaxConns works")
	}
	if got := failures(m, "tcp/test", ReasonLimit); got != 1 {
		t.Errorf("limit: %d", got)
	}
	a.Close()
	eventually(t, "a place free", func() bool { return f.Conns() == 1 })
	if err := roundTrip(dial(t, addr)); err != nil {
		t.Errorf("a connection after one ended: %v", err)
	}
}

// The backend reads the PROXY protocol header (with this package's reader) and echoes the
// addresses it names, then the client's bytes.
func TestTCPProxyProtocol(t *testing.T) {
	addrs := backend(t, func(c *net.TCPConn) {
		h, rest, err := ReadProxyHeader(c, time.Now().Add(5*time.Second))
		if err != nil {
			_, _ = fmt.Fprintf(c, "error %v", err)
			return
		}
		_, _ = fmt.Fprintf(c, "v%d %s %s|%s", h.Version, h.Source, h.Destination, rest)
		echo(c)
	})
	f, addr := startTCP(t, TCPConfig{Picker: newPicker(t, addrs), ProxyProtocol: ProxyV1})
	for _, v := range []ProxyVersion{ProxyV1, ProxyV2} {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			f.SetProxyProtocol(v) // a change applies to the next connection
			c := dial(t, addr)
			_, _ = c.Write([]byte("data"))
			_ = c.CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("v%d %s %s|", v, c.LocalAddr(), addr)
			if s := string(got); !strings.HasPrefix(s, want) || !strings.HasSuffix(s, "data") {
				t.Errorf("backend saw %q, want %q then data", s, want)
			}
		})
	}
}

func TestTCPDrain(t *testing.T) {
	m := NewMetrics(nil)
	f, addr := startTCP(t, TCPConfig{Picker: newPicker(t, backend(t, echo)), Metrics: m})
	open := dial(t, addr)
	if _, err := open.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(open, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- f.Drain(ctx) }()
	eventually(t, "the listener closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	// The open connection still works while the drain waits.
	if _, err := open.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(open, make([]byte, 1)); err != nil {
		t.Fatalf("an open connection during the drain: %v", err)
	}
	select {
	case err := <-drained:
		if err != context.DeadlineExceeded {
			t.Errorf("Drain returned %v, want the context's deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Drain did not return after its deadline")
	}
	if _, err := open.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the drain's deadline the connection reads %v, want an end of stream", err)
	}
	if got := failures(m, "tcp/test", ReasonDrain); got != 1 || f.Conns() != 0 {
		t.Errorf("drain: %d, connections left %d", got, f.Conns())
	}
	if err := f.ServeConn(dial(t, addr2(t)), nil, newPicker(t)); err != ErrClosed {
		t.Errorf("ServeConn on a drained forwarder: %v", err)
	}

	t.Run("connections that end in time", func(t *testing.T) {
		f, addr := startTCP(t, TCPConfig{Picker: newPicker(t, backend(t, echo))})
		c := dial(t, addr)
		_, _ = c.Write([]byte("x"))
		_, _ = io.ReadFull(c, make([]byte, 1))
		go func() { time.Sleep(100 * time.Millisecond); _ = c.CloseWrite() }()
		start := time.Now()
		if err := f.Drain(context.Background()); err != nil || time.Since(start) > 5*time.Second {
			t.Errorf("Drain: %v after %v", err, time.Since(start))
		}
	})
}

// addr2 is a listener's address whose connections nobody serves (for a connection to hand over).
func addr2(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TLS passthrough end to end: a listener reads the ClientHello, routes by its name, and hands
// the connection with the bytes read to ServeConn; the client verifies the backend's own
// certificate through it.
func TestTCPServeConnTLSPassthrough(t *testing.T) {
	cert, pool := selfSigned(t, "db.example")
	tlsBackend := backend(t, func(c *net.TCPConn) {
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		if err := s.Handshake(); err != nil {
			return
		}
		_, _ = io.Copy(s, s)
		_ = s.CloseWrite()
	})
	f := NewTCPForwarder(TCPConfig{Name: "https-passthrough"})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				hello, raw, err := ReadClientHello(c, time.Now().Add(5*time.Second))
				if err != nil || hello.ServerName != "db.example" {
					c.Close()
					return
				}
				_ = f.ServeConn(c, raw, newPicker(t, tlsBackend))
			}()
		}
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: "db.example", RootCAs: pool})
	if err != nil {
		t.Fatalf("the client's handshake through the forwarder: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("select 1")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "select 1" {
		t.Fatalf("read %q, %v", got, err)
	}
	c.Close() // tls.Conn's CloseWrite ends the TLS stream, not the TCP one
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.Drain(ctx); err != nil {
		t.Error(err)
	}
}

func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

func TestAddrPort(t *testing.T) {
	if got := addrPort(&net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 80}); got != netip.MustParseAddrPort("192.0.2.1:80") { // 16-byte form, unmapped
		t.Errorf("got %v", got)
	}
	if got := addrPort(&net.UnixAddr{Name: "x"}); got.IsValid() {
		t.Errorf("a Unix address: %v", got)
	}
}
