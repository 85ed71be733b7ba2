package proxy

import (
	"bytes"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// parkedH2 returns the stack of a goroutine waiting on a parked HTTP/2 connection (see
// h2Conn.serveFrames) with nothing of a frame read on its stack, or "" when there is none. (A
// goroutine park started goes on serving the connection when it wakes: it is not parked then.)
func parkedH2() string {
	buf := make([]byte, 1<<22)
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		stack, _, _ := strings.Cut(g, "\ncreated by ")
		if strings.Contains(stack, "proxy.(*h2Conn).park") && !strings.Contains(stack, "serveFrames") && !strings.Contains(stack, "crypto/tls") {
			return g
		}
	}
	return ""
}

// awaitParked waits until an HTTP/2 connection is parked (the answer's end may come after its
// head: the connection is busy until then).
func awaitParked(t *testing.T, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for parkedH2() == "" {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the idle connection was not parked", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// splitWrites writes each write in two parts, 30 ms apart, once split is set: a TLS record
// header then arrives in two pieces.
type splitWrites struct {
	net.Conn
	split atomic.Bool
}

func (c *splitWrites) Write(p []byte) (int, error) {
	if !c.split.Load() || len(p) < 4 {
		return c.Conn.Write(p)
	}
	n, err := c.Conn.Write(p[:3])
	if err != nil {
		return n, err
	}
	time.Sleep(30 * time.Millisecond)
	m, err := c.Conn.Write(p[3:])
	return n + m, err
}

// TestHTTP2IdleConnectionParks: once its last stream has ended, an HTTP/2 connection over TLS
// waits for its next frame on a new goroutine with nothing of a read on its stack (parked, so
// that an idle connection holds a small stack), and goes on serving: a request after each
// park, a HEADERS frame split across two TLS records, a TLS record split across two packets
// (crypto/tls is left holding part of a record when the connection parks), a stream that waits
// for its body while the connection is busy; then a graceful shutdown ends a parked connection.
func TestHTTP2IdleConnectionParks(t *testing.T) {
	f := newH2Fixture(t)
	var sw *splitWrites
	r := dialRawH2With(t, f.https, func(c net.Conn) net.Conn { sw = &splitWrites{Conn: c}; return sw })
	id := uint32(1)
	next := func() uint32 { id += 2; return id - 2 }

	for i := range 3 {
		s := next()
		if err := r.request(s, true, "/x"); err != nil {
			t.Fatal(err)
		}
		r.await(s, "a request on a parked connection", hasStatus("200"))
		awaitParked(t, "after request "+string(rune('1'+i)))
	}

	// A HEADERS frame in two TLS records: its first bytes wake the parked connection, the rest
	// is waited for as any frame's.
	s := next()
	var fb bytes.Buffer
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "h2.example.com"}, {":path", "/split-frame"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	if err := http2.NewFramer(&fb, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: s, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	_, err := r.c.Write(fb.Bytes()[:4])
	if err == nil {
		time.Sleep(50 * time.Millisecond)
		_, err = r.c.Write(fb.Bytes()[4:])
	}
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r.await(s, "a HEADERS frame in two TLS records", hasStatus("200"))
	awaitParked(t, "after the split frame")

	// A TLS record whose header comes in two packets.
	sw.split.Store(true)
	s = next()
	if err := r.request(s, true, "/split-record"); err != nil {
		t.Fatal(err)
	}
	r.await(s, "a TLS record in two packets", hasStatus("200"))
	sw.split.Store(false)
	awaitParked(t, "after the split record")

	// A stream open without its body yet: the connection is busy, not parked; the body comes
	// later and the answer with it.
	s = next()
	if err := r.headers(s, false, ":method", "POST", ":scheme", "https", ":authority", "h2.example.com", ":path", "/echo", "content-length", "5"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if g := parkedH2(); g != "" {
		t.Fatalf("a connection with a stream open was parked:\n%s", g)
	}
	r.mu.Lock()
	err = r.fr.WriteData(s, true, []byte("hello"))
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r.await(s, "a body sent while the connection was busy", hasStatus("200"))
	awaitParked(t, "after the body")

	f.cancel() // the drain period, then the shutdown: GOAWAY, and the idle connection ends
	r.await(0, "GOAWAY", func(g h2Got) bool { return g.kind == http2.FrameGoAway && g.code == http2.ErrCodeNo })
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-r.frames:
		case <-timeout:
			t.Fatal("the parked connection outlived the shutdown")
		}
	}
	// The client sees the close before the parked goroutine has returned (it closes the
	// socket, then leaves the server's books): give it the time to return.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		g := parkedH2()
		if g == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine still waits on the closed connection:\n%s", g)
		}
	}
}

// TestHTTP2IdleTimeoutNotExtendedByTrickle: bytes that make no whole frame do not extend an
// idle connection's timeout (a review finding: a client sending a TLS record header, then a
// byte every so often, woke the parked connection each time, which set its deadline anew and
// parked again, open for ever).
func TestHTTP2IdleTimeoutNotExtendedByTrickle(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{IdleTimeout: 400 * time.Millisecond})
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "h2.example.com"))
	h.compile()
	var raw net.Conn
	r := dialRawH2With(t, h.https, func(c net.Conn) net.Conn { raw = c; return c })
	awaitParked(t, "the idle connection")
	start := time.Now()
	// A TLS application-data record header announcing 16 KiB, then a byte every 150 ms.
	if _, err := raw.Write([]byte{0x17, 0x03, 0x03, 0x40, 0x00}); err != nil {
		t.Fatal(err)
	}
	tick := time.NewTicker(150 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case _, open := <-r.frames:
			if !open {
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("closed after %v, with an idle timeout of 400ms", d)
				}
				return
			}
		case <-tick.C:
			if time.Since(start) > 3*time.Second {
				t.Fatal("the connection outlived its 400ms idle timeout by 3s, kept open by a byte every 150ms")
			}
			_, _ = raw.Write([]byte{0})
		}
	}
}
