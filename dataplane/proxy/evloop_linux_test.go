//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/internal/rawsock"
	"portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
)

// TestEventLoopsHoldIdleConnectionsWithoutGoroutines: on the event loops a keep-alive
// connection is a descriptor in an epoll set and a small struct, not a goroutine with buffers;
// each still answers its next request.
func TestEventLoopsHoldIdleConnectionsWithoutGoroutines(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 2})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	inUse := heapAndStacksInUse
	const n = 1000
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	request := func(c net.Conn) { t.Helper(); getOn(t, c, bufio.NewReaderSize(c, 16)) }
	request(dialed(t, h.http, &conns)) // warm
	goroutines, before := runtime.NumGoroutine(), inUse()
	for i := 1; i < n; i++ {
		request(dialed(t, h.http, &conns))
	}
	grown := runtime.NumGoroutine() - goroutines
	per := (inUse() - before) / (n - 1)
	t.Logf("%d idle keep-alive connections: %d more goroutines, %d bytes each (the client's side included)", n-1, grown, per)
	// The test's client side costs a net.Conn each; the backend's connections are pooled.
	if grown > 20 {
		t.Errorf("%d goroutines for %d idle connections, want none per connection", grown, n-1)
	}
	if per > 4<<10 {
		t.Errorf("an idle connection costs %d bytes, want under %d", per, 4<<10)
	}
	for _, c := range conns {
		request(c)
	}
}

// TestEventLoopPassesLargeBodiesToASlowReader: bodies of every framing, larger than every
// buffer on the way, reach a client that reads slowly (its receive buffer small, and it starts
// late) byte for byte: the loop holds what the client cannot take yet and waits for it.
func TestEventLoopPassesLargeBodiesToASlowReader(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	body := make([]byte, 6<<20+123)
	for i := range body {
		body[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(body)
	h.rawBackend("big", func(r *http.Request, _ []byte, w *bufio.Writer, _ net.Conn) bool {
		switch r.URL.Path {
		case "/length":
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			_, _ = w.Write(body)
		case "/chunked":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
			for rest := body; len(rest) > 0; {
				k := min(len(rest), 10000+len(rest)%5000)
				fmt.Fprintf(w, "%x;ext=1\r\n", k)
				_, _ = w.Write(rest[:k])
				fmt.Fprint(w, "\r\n")
				rest = rest[k:]
			}
			fmt.Fprint(w, "0\r\nX-Trailer: done\r\n\r\n")
		case "/close":
			fmt.Fprint(w, "HTTP/1.1 200 OK\r\n\r\n")
			_, _ = w.Write(body)
			return false
		}
		return true
	})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "big", 80)))

	// A small receive buffer, set before connecting (window scaling is agreed then).
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	}}
	conn, err := d.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(conn, 4<<10)
	for _, path := range []string{"/length", "/chunked", "/length", "/close"} {
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path)
		time.Sleep(300 * time.Millisecond) // the proxy fills the socket and must wait
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		hash := sha256.New()
		n, err := io.Copy(hash, slowly{resp.Body})
		resp.Body.Close()
		if err != nil || n != int64(len(body)) || !bytes.Equal(hash.Sum(nil), want[:]) {
			t.Fatalf("%s: %d bytes (%v), want %d intact", path, n, err, len(body))
		}
		if path == "/chunked" && resp.Trailer.Get("X-Trailer") != "done" {
			t.Errorf("chunked: trailer %v", resp.Trailer)
		}
		if path == "/close" && !resp.Close {
			t.Errorf("a body ended by close: the client's connection must close too")
		}
	}
}

// slowly reads in small pieces.
type slowly struct{ r io.Reader }

func (s slowly) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), 1500)])
}

// TestEventLoopsShareConnections: connections are spread evenly over the loops, whichever loop
// the kernel wakes for them (it tends to wake the same one for a burst).
func TestEventLoopsShareConnections(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 2})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	const n = 40
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		getOn(t, dialed(t, h.http, &conns), bufio.NewReaderSize(conns[len(conns)-1], 16))
	}
	gauge := func(loop string) float64 {
		return testutil.ToFloat64(h.handler.metrics.LoopConnections.WithLabelValues(loop))
	}
	deadline := time.Now().Add(5 * time.Second)
	for gauge("0")+gauge("1") != n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // the gauges follow within a loop tick
	}
	a, b := gauge("0"), gauge("1")
	t.Logf("loop 0: %v connections, loop 1: %v", a, b)
	// Balanced to within an eighth and one (leastLoaded's margin), the burst notwithstanding.
	if a+b != n || min(a, b) < n/2-n/16-2 {
		t.Errorf("loops hold %v and %v of %d connections, want about half each", a, b, n)
	}
}

// TestEventLoopNoticesAClientThatLeavesAtOnce: a client that closes its connection while its
// request waits for the backend ends the request at once on a loop (its close is an edge), not
// after the goroutine path's watch delay: the backend's request is cancelled, 499 counted.
func TestEventLoopNoticesAClientThatLeavesAtOnce(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	cancelled := h.slowBackend("slow", 3*time.Second)
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "slow", 80)))
	conn, err := net.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	conn.Close()
	select {
	case d := <-cancelled:
		if d >= watchClientAfter {
			t.Errorf("the backend's request ended %v after it began, the client left at 100 ms", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the backend was not told that the client left")
	}
	gone := func() float64 {
		return testutil.ToFloat64(h.handler.metrics.Requests.WithLabelValues("ns/i", "ns/slow:80", "499"))
	}
	for end := time.Now().Add(2 * time.Second); gone() != 1 && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := gone(); n != 1 {
		t.Errorf("requests counted 499: %v, want 1", n)
	}
}

// TestEventLoopServesBodies: a request with a Content-Length body up to maxLoopBody stays on
// the loop, whether its body comes with the head or after it, in parts, pipelined or answered by
// the proxy itself (the body then dropped, the next request read right after it). A body may
// take longer than the header timeout as long as it does not pause for that long. A longer body
// hands the connection to the goroutine path, which serves it as before.
func TestEventLoopServesBodies(t *testing.T) {
	const headerTimeout = 600 * time.Millisecond
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1, ReadHeaderTimeout: headerTimeout})
	const bodyTimeout = 900 * time.Millisecond
	h.in.Config.HTTP = &proxyconfig.HTTP{ClientBodyTimeout: bodyTimeout.String()}
	got := make(chan string, 16)
	h.rawBackend("svc", func(r *http.Request, body []byte, w *bufio.Writer, _ net.Conn) bool {
		got <- r.Method + " " + r.URL.Path + " " + string(body)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	loopHandoffs := func(reason string) float64 {
		return testutil.ToFloat64(h.handler.metrics.LoopHandoffs.WithLabelValues(reason))
	}

	conn, br := clientConn(t, h.http)
	answer := func(want int, body string) {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want || (want == 200 && string(b) != body) {
			t.Fatalf("got %d %q, want %d %q", resp.StatusCode, b, want, body)
		}
	}
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(conn, s); err != nil {
			t.Fatal(err)
		}
	}
	backendSaw := func(want string) { t.Helper(); backendGot(t, got, want) }

	// Head and body in one write.
	send("POST /one HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
	answer(200, "hello")
	backendSaw("POST /one hello")
	// The body after the head, in two parts.
	send("PUT /two HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
	time.Sleep(150 * time.Millisecond)
	send("hello ")
	time.Sleep(150 * time.Millisecond)
	send("world")
	answer(200, "hello world")
	backendSaw("PUT /two hello world")
	// Pipelined: a body, a request without one, a body for the proxy's own 404, then a GET.
	send("POST /three HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" +
		"GET /four HTTP/1.1\r\nHost: h\r\n\r\n" +
		"POST /x HTTP/1.1\r\nHost: nowhere\r\nContent-Length: 9\r\n\r\nGET /bad " +
		"GET /five HTTP/1.1\r\nHost: h\r\n\r\n")
	answer(200, "abc")
	answer(200, "")
	answer(404, "")
	answer(200, "")
	backendSaw("POST /three abc")
	backendSaw("GET /four ")
	backendSaw("GET /five ")
	if n := loopHandoffs("body") + loopHandoffs("request") + loopHandoffs("head") + handoffs(h); n != 0 {
		t.Fatalf("%v handoffs for requests a loop holds", n)
	}

	// The largest body a loop holds, in parts over twice the header timeout, no pause as long.
	body := strings.Repeat("b", maxLoopBody)
	send(fmt.Sprintf("POST /six HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", len(body)))
	for part := range 8 {
		time.Sleep(headerTimeout / 4)
		send(body[part*len(body)/8 : (part+1)*len(body)/8])
	}
	answer(200, body)
	backendSaw("POST /six " + body)
	if n := loopHandoffs("body") + loopHandoffs("request") + loopHandoffs("head") + handoffs(h); n != 0 {
		t.Fatalf("%v handoffs for requests a loop holds", n)
	}

	// A longer body: the goroutine path takes the connection.
	body += "b"
	send(fmt.Sprintf("POST /seven HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	answer(200, body)
	backendSaw("POST /seven " + body)
	if loopHandoffs("body") != 1 {
		t.Errorf("body handoffs %v, want 1", loopHandoffs("body"))
	}

	// A body that stops coming: 408 after the body timeout, and the connection closed.
	stalled, err := net.Dial("tcp", h.http)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	start := time.Now()
	_, _ = io.WriteString(stalled, "POST /eight HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nhalf")
	_ = stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	sbr := bufio.NewReader(stalled)
	if resp, err := http.ReadResponse(sbr, nil); err != nil || resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("stalled body: %v %v; want 408 with Connection: close", resp, err)
	}
	if took := time.Since(start); took < bodyTimeout || took > bodyTimeout+time.Second {
		t.Errorf("stalled body answered after %v, want the body timeout (%v)", took, bodyTimeout)
	}
	_, _ = io.Copy(io.Discard, sbr)
	select {
	case s := <-got:
		t.Errorf("backend got %q from a stalled body", s)
	default:
	}
}

// TestEventLoopSendsBodiesToASlowBackend: a request body the backend's socket cannot take at once
// (4 KiB socket buffers on both sides, and a backend that reads late) is held by the loop and
// sent as the backend reads, byte for byte, for requests one after the other on one connection.
func TestEventLoopSendsBodiesToASlowBackend(t *testing.T) {
	testUpstreamSendBuffer = 4 << 10
	t.Cleanup(func() { testUpstreamSendBuffer = 0 })
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	ln, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.tcpBackendOn(ln, "slow", "", func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			time.Sleep(200 * time.Millisecond) // the proxy's write meets a full window
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			b, _ := io.ReadAll(r.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n%x", sha256.Sum256(b))
		}
	})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "slow", 80)))

	conn, br := clientConn(t, h.http)
	for i, size := range []int{maxLoopBody, 3000, maxLoopBody - 1} {
		body := bytes.Repeat([]byte{byte('a' + i)}, size)
		if _, err := fmt.Fprintf(conn, "PUT /%d HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", i, size, body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		if want := fmt.Sprintf("%x", sha256.Sum256(body)); resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("body %d (%d bytes): %d %s, want 200 %s", i, size, resp.StatusCode, got, want)
		}
	}
	if n := testutil.ToFloat64(h.handler.metrics.LoopHandoffs.WithLabelValues("body")); n != 0 {
		t.Errorf("%v body handoffs, want none", n)
	}
}

// TestEventLoopsDeferAccept: a connection that has sent nothing is held by the kernel
// (TCP_DEFER_ACCEPT), not by a loop; its first request is then served at once.
func TestEventLoopsDeferAccept(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	first, fbr := clientConn(t, h.http)
	getOn(t, first, fbr) // the loops run (they set the option on the listening socket)
	conn, br := clientConn(t, h.http)
	time.Sleep(300 * time.Millisecond) // three loop ticks: the gauge would show an accepted one
	if n := testutil.ToFloat64(h.handler.metrics.LoopConnections.WithLabelValues("0")); n != 1 {
		t.Fatalf("the loop holds %v connections, want 1: the one that has sent nothing is not its yet", n)
	}
	getOn(t, conn, br)
}

// TestEventLoopsListenerOutsideThePoller: once the loops serve the cleartext listener, only
// their own epoll sets watch it. A duplicate left in the runtime's poller (what
// (*net.TCPListener).File gives) woke an idle runtime thread for every queued connection, a
// tenth of the proxy's CPU on new connections (docs/data-plane.md, "The listener's duplicate").
func TestEventLoopsListenerOutsideThePoller(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 2})
	h.backend("svc", echo.Handler("e", "svc"), "")
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	conn, br := clientConn(t, h.http)
	getOn(t, conn, br) // the loops run
	sets, err := rawsock.ListenerWatchers(netip.MustParseAddrPort(h.http))
	if err != nil || len(sets) != 2 {
		t.Fatalf("the listener is watched by the epoll sets %v (%v), want the two loops' alone", sets, err)
	}
}

// backendGot checks the next request a test backend reported (within 5 s).
func backendGot(t *testing.T, got <-chan string, want string) {
	t.Helper()
	select {
	case s := <-got:
		if s != want {
			t.Fatalf("backend got %q, want %q", s, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("backend got nothing, want %q", want)
	}
}
