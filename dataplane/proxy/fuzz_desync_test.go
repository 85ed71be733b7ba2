package proxy

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"
	"k8s.io/utils/ptr"

	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// FuzzDesync sends a fuzzed request stream on one connection, through the event loops, the
// goroutine path and HTTPS on the loops in turn, to a backend whose answers are chosen by the
// fuzzer among framings a misbehaving backend sends (bodies after HEAD, 204 and 304, bodies
// longer than their length, Connection naming Content-Length, Content-Length with
// Transfer-Encoding, informational answers, bodies ended by the close). It checks the invariants of h1core.go:
//   - every answer the client gets from the backend answers a request the backend received on
//     that client's behalf, in order, none twice;
//   - the backend receives at most one request more than the client got answers for (the one
//     whose answer a failure or close cut short): no request is smuggled past the proxy's
//     framing;
//   - another client, after, gets its own answer: no byte of the fuzzed exchange reaches it.
//
// Seeds run with go test; go test -fuzz FuzzDesync ./dataplane/proxy/ searches.
func FuzzDesync(f *testing.F) {
	for _, tc := range desyncCases {
		f.Add([]byte(tc.client), uint64(0))
	}
	for _, s := range []string{
		"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nGET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: h\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: h\r\n\r\n",
	} {
		for modes := uint64(0); modes < 9; modes++ {
			f.Add([]byte(s), modes|modes<<4|modes<<8)
		}
	}
	backend := &fuzzBackend{}
	var harnesses []*harness
	var tlsOn []bool
	var names []string
	for _, p := range servingPaths[:4] { // loops, goroutines, https/loops
		if p.single {
			continue
		}
		tlsOn = append(tlsOn, p.tls)
		names = append(names, p.name)
		harnesses = append(harnesses, backend.harness(f, p.so))
	}
	var victims int
	f.Fuzz(func(t *testing.T, stream []byte, modes uint64) {
		if len(stream) > 4096 {
			return
		}
		for i, h := range harnesses {
			dial := func() (net.Conn, error) {
				if tlsOn[i] {
					return tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}})
				}
				return net.Dial("tcp", h.http)
			}
			backend.reset(modes)
			conn, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = conn.Write(stream)
			_ = conn.(interface{ CloseWrite() error }).CloseWrite() // a TLS client's close_notify
			got := readSeqs(bufio.NewReader(conn))
			conn.Close()

			// Wait until the backend has read and counted all the proxy sent for the stream (a
			// cut request may still be arriving).
			if !backend.settle(2 * time.Second) {
				t.Fatalf("%s: stream %q modes %x: the backend was still busy 2s after the client's connection ended", names[i], stream, modes)
			}
			received := backend.received()
			if bad := backend.malformed(); len(bad) > 0 {
				t.Fatalf("%s: stream %q modes %x: the backend received malformed requests: %q", names[i], stream, modes, bad)
			}
			last := -1
			for _, seq := range got {
				if seq <= last || seq >= len(received) {
					t.Fatalf("%s: stream %q modes %x: client got answers %v, backend received %d requests", names[i], stream, modes, got, len(received))
				}
				last = seq
			}
			if len(received) > len(got)+1 {
				t.Fatalf("%s: stream %q modes %x: backend received %d requests %q, the client got %d answers from it: a request was smuggled",
					names[i], stream, modes, len(received), received, len(got))
			}

			victims++
			path := "/victim-" + strconv.Itoa(victims)
			vc, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			_ = vc.SetDeadline(sent.Add(10 * time.Second))
			fmt.Fprintf(vc, "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(vc), nil)
			if err != nil {
				vc.Close()
				t.Fatalf("%s: stream %q modes %x: the next client got no answer: %v", names[i], stream, modes, err)
			}
			body, _ := io.ReadAll(resp.Body)
			vc.Close()
			if string(body) != "GET "+path {
				t.Fatalf("%s: stream %q modes %x: the next client got %d %q after %v, want its own answer",
					names[i], stream, modes, resp.StatusCode, body, time.Since(sent).Round(time.Millisecond))
			}
		}
	})
}

// readSeqs reads answers until the connection ends, and returns the X-Seq of those that came
// from the backend (the proxy's own answers have none).
func readSeqs(br *bufio.Reader) []int {
	var seqs []int
	for {
		req := &http.Request{Method: answerMethod(br)}
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			return seqs
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return seqs
		}
		if s := resp.Header.Get("X-Seq"); s != "" {
			n, _ := strconv.Atoi(s)
			seqs = append(seqs, n)
		}
	}
}

// answerMethod tells, from the answer at the start of br, whether it answers a HEAD (the
// fuzzed stream's methods are not known here): the backend marks its answers to HEAD with
// X-Head, and the proxy's own answers (no X-Seq) carry their status as the body's first bytes
// unless they answer a HEAD.
func answerMethod(br *bufio.Reader) string {
	for n := 64; n <= 1<<16; n *= 2 {
		buf, err := br.Peek(n)
		end := strings.Index(string(buf), "\r\n\r\n")
		if end < 0 {
			if err != nil {
				return http.MethodGet
			}
			continue
		}
		head := string(buf[:end+2])
		switch {
		case strings.Contains(head, "\r\nX-Head: 1\r\n"):
			return http.MethodHead
		case strings.Contains(head, "\r\nX-Seq: "), !strings.Contains(head, "\r\nContent-Length: "),
			strings.Contains(head, "\r\nContent-Length: 0\r\n"):
			return http.MethodGet
		}
		code := head[9:12]
		body, _ := br.Peek(end + 4 + 3)
		if len(body) == end+7 && string(body[end+4:]) == code {
			return http.MethodGet
		}
		return http.MethodHead
	}
	return http.MethodGet
}

// fuzzBackend answers the n-th request it reads (since reset) in the framing the n-th nibble
// of modes chooses; the victims' requests always get a plain echo.
type fuzzBackend struct {
	mu    sync.Mutex
	modes uint64
	got   []string
	// reqs are got's requests as read (FuzzH2 checks their bodies); bad, the requests whose
	// head no HTTP/1.1 parser should take (a field name or value that breaks the syntax).
	reqs []fuzzRequest
	bad  []string
	// lns: the backend's listeners; conns: the connections accepted from them and open, and
	// busy of them those that have begun a request and not yet answered it (see settle).
	lns   []net.Listener
	conns map[net.Conn]bool
}

// harness is a proxy served as so says, whose host "h" routes to b (Service "raw"), with the
// fuzzers' limits: short header and body timeouts, 64 KiB bodies.
func (b *fuzzBackend) harness(f *testing.F, so ServerOptions) *harness {
	so.ReadHeaderTimeout = 200 * time.Millisecond
	// The backend always answers at once: a timeout is a stuck connection, not a slow
	// backend, and 5 s keeps a loaded machine's stalls from passing for one. (A victim's 504
	// that first looked like such a stall was a pooled connection with its deadlines passed,
	// which the elapsed time in the failure message then showed: 1 ms.)
	h := newHarnessWith(f, Options{UpstreamTimeout: 5 * time.Second}, so)
	h.in.Config.HTTP = &proxyconfig.HTTP{MaxRequestBodyBytes: ptr.To[int64](1 << 16), ClientBodyTimeout: "200ms"}
	b.listen(h, "raw")
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "raw", 80)))
	return h
}

// listen declares Service name on h, served by b on a listener of its own.
func (b *fuzzBackend) listen(h *harness, name string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	b.mu.Lock()
	b.lns = append(b.lns, ln)
	b.mu.Unlock()
	h.tcpBackendOn(fuzzListener{ln, b}, name, "", b.serve)
}

// fuzzListener counts a connection among the backend's from its accept on, before its
// goroutine starts.
type fuzzListener struct {
	net.Listener
	b *fuzzBackend
}

func (l fuzzListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.b.setBusy(c, false, true)
	}
	return c, err
}

// settle waits, up to limit, until no connection waits in the backend's accept queues and
// every accepted one stands between requests with nothing to read, and reports whether it
// did. The proxy ends a client's connection after its last write to the backend on its behalf
// (a request cut short by the client included), so once the client has seen the end, what the
// proxy sent is in the backend's sockets, queued connections' included, or read: settled, the
// backend has counted it. (A fixed sleep did this before, 20 ms three times an input: slower
// than everything else the input does, and a guess.)
func (b *fuzzBackend) settle(limit time.Duration) bool {
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Microsecond) {
		b.mu.Lock()
		settled := true
		for _, ln := range b.lns {
			if unaccepted(ln) > 0 {
				settled = false
			}
		}
		for c, busy := range b.conns {
			if busy || unread(c) > 0 {
				settled = false
				break
			}
		}
		b.mu.Unlock()
		if settled {
			return true
		}
	}
	return false
}

// setBusy records whether c is in the middle of an exchange; open false forgets it.
func (b *fuzzBackend) setBusy(c net.Conn, busy, open bool) {
	b.mu.Lock()
	if b.conns == nil {
		b.conns = map[net.Conn]bool{}
	}
	if open {
		b.conns[c] = busy
	} else {
		delete(b.conns, c)
	}
	b.mu.Unlock()
}

func (b *fuzzBackend) reset(modes uint64) {
	b.mu.Lock()
	b.modes, b.got, b.reqs, b.bad = modes, nil, nil, nil
	b.mu.Unlock()
}

// fuzzRequest is a request the backend read: its target, its body, and its framing.
type fuzzRequest struct {
	target string
	body   string
	length int64 // its Content-Length, -1 chunked
}

// malformed is what in r no HTTP/1.1 server should have been sent, or "".
func malformed(r *http.Request) string {
	for name, values := range r.Header {
		if !httpguts.ValidHeaderFieldName(name) {
			return fmt.Sprintf("field name %q", name)
		}
		for _, v := range values {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Sprintf("field %s: %q", name, v)
			}
		}
	}
	for _, c := range []byte(r.RequestURI) {
		if c <= ' ' || c == 0x7f {
			return fmt.Sprintf("target %q", r.RequestURI)
		}
	}
	return ""
}

func (b *fuzzBackend) malformed() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.bad...)
}

func (b *fuzzBackend) received() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got...)
}

func (b *fuzzBackend) serve(c net.Conn) {
	defer b.setBusy(c, false, false)
	br := bufio.NewReader(c)
	for {
		b.setBusy(c, br.Buffered() > 0, true)
		if br.Buffered() == 0 {
			// Wait for the next request with its bytes left in the socket, where settle sees
			// them, until the connection is marked busy: a read would take them out of its
			// sight before the mark.
			if err := waitData(c, br); err != nil {
				return
			}
		}
		b.setBusy(c, true, true)
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		echo := r.Method + " " + r.RequestURI
		if strings.HasPrefix(r.URL.Path, "/victim-") {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(echo), echo)
			continue
		}
		b.mu.Lock()
		seq := len(b.got)
		b.got = append(b.got, echo)
		b.reqs = append(b.reqs, fuzzRequest{r.RequestURI, string(body), r.ContentLength})
		if m := malformed(r); m != "" {
			b.bad = append(b.bad, echo+": "+m)
		}
		mode := (b.modes >> (4 * (seq % 16))) & 0xf
		b.mu.Unlock()
		stray := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"
		head := ""
		if r.Method == http.MethodHead {
			head = "X-Head: 1\r\n"
		}
		var answer string
		switch mode % 9 {
		case 0:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sContent-Length: %d\r\n\r\n%s", seq, head, len(echo), echo)
		case 1:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sTransfer-Encoding: chunked\r\n\r\n%x;e=1\r\n%s\r\n0\r\nT: 1\r\n\r\n", seq, head, len(echo), echo)
		case 2: // a body whatever the request (HEAD) and however long
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sContent-Length: %d\r\n\r\n%s", seq, head, len(stray), stray)
		case 3:
			answer = fmt.Sprintf("HTTP/1.1 204 No Content\r\nX-Seq: %d\r\n%s\r\n%s", seq, head, stray)
		case 4:
			answer = fmt.Sprintf("HTTP/1.1 304 Not Modified\r\nX-Seq: %d\r\n%sContent-Length: 5\r\n\r\n%s", seq, head, stray)
		case 5:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sContent-Length: 2\r\n\r\nok%s", seq, head, stray)
		case 6:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok", seq, head)
		case 7:
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Seq: %d\r\n%sContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n%s", seq, head, stray)
		case 8: // informational first, then a body ended by the close
			fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nX-Seq: %d\r\n%s\r\n%s", seq, head, echo)
			return
		}
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
	}
}
