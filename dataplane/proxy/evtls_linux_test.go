//go:build linux

package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"portico.dev/portico/dataplane/route/routetest"
)

// TestEventLoopsServeHTTPS: an HTTPS connection whose handshake chose HTTP/1.1 is served by an
// event loop (the loop's connection gauge counts it, and its requests need no handoff):
// keep-alive and pipelined requests, a body larger than every buffer to a client that reads
// slowly (the loop holds encrypted output until the client reads), X-Forwarded-Proto https. A
// body longer than a loop holds gives the connection back to a goroutine, TLS state and all,
// and the connection goes on serving. Connection: close ends it after the answer. HTTP/2 stays
// on goroutines.
func TestEventLoopsServeHTTPS(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i*13 + i>>11)
	}
	want := sha256.Sum256(big)
	got := make(chan string, 16)
	h.rawBackend("svc", func(r *http.Request, body []byte, w *bufio.Writer, _ net.Conn) bool {
		if r.URL.Path == "/big" {
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(big))
			_, _ = w.Write(big)
			return true
		}
		got <- r.Method + " " + r.URL.Path + " " + r.Header.Get("X-Forwarded-Proto") + " " + string(body)
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		return true
	})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	loopHandoffs := func(reason string) float64 {
		return testutil.ToFloat64(h.handler.metrics.LoopHandoffs.WithLabelValues(reason))
	}
	onLoop := func() float64 {
		return testutil.ToFloat64(h.handler.metrics.LoopConnections.WithLabelValues("0"))
	}

	// A small receive buffer, set before connecting (window scaling is agreed then).
	d := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		return rc.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10) })
	}}
	dial := func(protos ...string) *tls.Conn {
		t.Helper()
		c, err := tls.DialWithDialer(d, "tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: protos})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		return c
	}
	conn := dial("http/1.1")
	br := bufio.NewReader(conn)
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(conn, s); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(body string) *http.Response {
		t.Helper()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != body {
			t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, b, body)
		}
		return resp
	}
	backendSaw := func(want string) { t.Helper(); backendGot(t, got, want) }

	send("GET /one HTTP/1.1\r\nHost: h\r\n\r\n")
	answer("")
	backendSaw("GET /one https ")
	for end := time.Now().Add(2 * time.Second); onLoop() != 1 && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond) // the gauge follows within a loop tick
	}
	if n := onLoop(); n != 1 {
		t.Fatalf("the loop holds %v connections, want the HTTPS one", n)
	}
	// Pipelined, with a body.
	send("POST /two HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /three HTTP/1.1\r\nHost: h\r\n\r\n")
	answer("abc")
	answer("")
	backendSaw("POST /two https abc")
	backendSaw("GET /three https ")
	// A large answer to a slow reader.
	send("GET /big HTTP/1.1\r\nHost: h\r\n\r\n")
	time.Sleep(300 * time.Millisecond) // the proxy fills the socket and must wait
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	hash := sha256.New()
	n, err := io.Copy(hash, slowly{resp.Body})
	resp.Body.Close()
	if err != nil || n != int64(len(big)) || !bytes.Equal(hash.Sum(nil), want[:]) {
		t.Fatalf("/big: %d bytes (%v), want %d intact", n, err, len(big))
	}
	if n := loopHandoffs("body") + loopHandoffs("request") + loopHandoffs("head") + handoffs(h); n != 0 {
		t.Fatalf("%v handoffs for requests a loop holds", n)
	}

	// A body longer than a loop holds: a goroutine takes the connection, and serves it on.
	body := strings.Repeat("b", maxLoopBody+1)
	send(fmt.Sprintf("POST /four HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
	answer(body)
	backendSaw("POST /four https " + body)
	if loopHandoffs("body") != 1 {
		t.Errorf("body handoffs %v, want 1", loopHandoffs("body"))
	}
	send("GET /five HTTP/1.1\r\nHost: h\r\n\r\n")
	answer("")
	backendSaw("GET /five https ")

	// Connection: close on a loop: the answer, then the end of the connection.
	closing := dial("http/1.1")
	if _, err := io.WriteString(closing, "GET /six HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	cbr := bufio.NewReader(closing)
	if resp, err := http.ReadResponse(cbr, nil); err != nil || !resp.Close {
		t.Fatalf("Connection: close: %v %v", resp, err)
	}
	backendSaw("GET /six https ")
	if rest, err := io.ReadAll(cbr); err != nil || len(rest) != 0 {
		t.Errorf("after the answer: %q, %v; want the connection's clean end", rest, err)
	}

	// HTTP/2 is not the loops'.
	h2c := dial("h2")
	if p := h2c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN chose %q", p)
	}
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true, ServerName: "h"}}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+h.https+"/seven", nil)
	req.Host = "h"
	resp, err = tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("HTTP/2: %s %d", resp.Proto, resp.StatusCode)
	}
	backendSaw("GET /seven https ")
}

// TestEventLoopsSurviveAClientGoneWhileForwarding: a client whose connection fails while a
// loop flushes the answers it held for pipelining, right before forwarding the next request,
// costs that connection alone: the request is not sent on for a connection that is closed
// (whose object the loop then reuses for the next client). Cleartext: a pipelined 404 and a
// forwarded request, then a reset. HTTPS: the same, then a bogus alert record in the same
// flight, which breaks crypto/tls's write side as it looks past the data for a close_notify.
// Each time, the next client is answered (the proxy once panicked here).
func TestEventLoopsSurviveAClientGoneWhileForwarding(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	h.rawBackend("svc", func(_ *http.Request, _ []byte, w *bufio.Writer, _ net.Conn) bool {
		fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	const pair = "GET /a HTTP/1.1\r\nHost: nobody.example\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}}
	next := func(round int) {
		t.Helper()
		c, err := tls.Dial("tcp", h.https, cfg)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, "GET /c HTTP/1.1\r\nHost: h\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("round %d: the next client got %v, %v", round, resp, err)
		}
	}
	for round := range 100 {
		c, err := net.Dial("tcp", h.http)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.(*net.TCPConn).SetLinger(0)
		_, _ = io.WriteString(c, pair)
		c.Close()
		if round%20 == 0 {
			next(round)
		}
	}
	for round := range 3 {
		raw, err := net.Dial("tcp", h.https)
		if err != nil {
			t.Fatal(err)
		}
		held := &heldWrites{Conn: raw}
		c := tls.Client(held, cfg)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.Handshake(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // a loop has it
		held.hold = true
		_, _ = io.WriteString(c, pair) // one record, held
		_, _ = raw.Write(append(held.buf, 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28))
		time.Sleep(100 * time.Millisecond)
		c.Close()
		next(round)
	}
}

// heldWrites keeps what is written while hold is set.
type heldWrites struct {
	net.Conn
	hold bool
	buf  []byte
}

func (c *heldWrites) Write(p []byte) (int, error) {
	if c.hold {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// TestEventLoopsAnswerConnectionCloseInShutdown: an answer a loop gives while the proxy shuts
// down says Connection: close, and the connection ends after it, on cleartext and HTTPS (whose
// server's own shutdown may start after the loops'), as on the goroutine path.
func TestEventLoopsAnswerConnectionCloseInShutdown(t *testing.T) {
	for _, p := range []struct {
		name  string
		loops int
		tls   bool
	}{{"http/loops", 1, false}, {"https/loops", 1, true}, {"https/goroutines", -1, true}} {
		t.Run(p.name, func(t *testing.T) {
			h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: p.loops})
			h.rawBackend("svc", func(r *http.Request, _ []byte, w *bufio.Writer, _ net.Conn) bool {
				if r.URL.Path == "/slow" {
					time.Sleep(time.Second)
				}
				fmt.Fprint(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				return true
			})
			h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
			var c net.Conn
			var err error
			if p.tls {
				c, err = tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}})
			} else {
				c, err = net.Dial("tcp", h.http)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			br := bufio.NewReader(c)
			for _, path := range []string{"/fast", "/slow"} {
				fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path)
				if path == "/slow" {
					time.Sleep(100 * time.Millisecond)
					h.cancel()
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				if path == "/slow" && !resp.Close {
					t.Errorf("the answer given during the shutdown has no Connection: close")
				}
			}
			if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
				t.Errorf("after the last answer: %q, %v; want the connection's end", rest, err)
			}
		})
	}
}

// TestEventLoopsHoldLittleForAClientThatDoesNotRead: a client that pipelines requests the proxy
// answers itself (404s, 4.5 MiB of them) and reads nothing is read no further once a loop holds
// 64 KiB of answers for it: the proxy's memory does not grow with what the client sends, on
// cleartext and HTTPS.
func TestEventLoopsHoldLittleForAClientThatDoesNotRead(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{EventLoops: 1})
	h.compile(routetest.Ingress("ns", "i", 1, routetest.Rule("h", "/", routetest.Prefix, "svc", 80)))
	req := []byte(strings.Repeat("GET / HTTP/1.1\r\nHost: nobody\r\n\r\n", 1000))
	for _, useTLS := range []bool{false, true} {
		var c net.Conn
		var err error
		if useTLS {
			c, err = tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}})
		} else {
			c, err = net.Dial("tcp", h.http)
		}
		if err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		sent := 0
		for range 150 {
			n, err := c.Write(req)
			sent += n
			if err != nil {
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
		runtime.GC()
		runtime.ReadMemStats(&after)
		c.Close()
		grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("TLS %v: %d KiB of requests sent, the heap grew %d KiB", useTLS, sent>>10, grew>>10)
		if grew > 2<<20 {
			t.Errorf("TLS %v: the heap grew %d KiB for a client that reads nothing, want the loop's 64 KiB and little more", useTLS, grew>>10)
		}
	}
}
