package proxy

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// h2Backend answers by path, for the HTTP/2 tests: what it received (method, framing, body
// digest, selected headers), large and streamed bodies, trailers, answers cut short.
func h2Backend(seen *atomic.Int64, active *atomic.Int64, maxActive *atomic.Int64, release chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		n := active.Add(1)
		defer active.Add(-1)
		for {
			m := maxActive.Load()
			if n <= m || maxActive.CompareAndSwap(m, n) {
				break
			}
		}
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			_, _ = io.WriteString(w, "slow\n")
		case "/big":
			w.Header().Set("Content-Length", strconv.Itoa(3<<20))
			_, _ = w.Write(bytes.Repeat([]byte("b"), 3<<20))
		case "/stream":
			for i := range 5 {
				fmt.Fprintf(w, "part %d\n", i)
				w.(http.Flusher).Flush()
			}
		case "/trailers":
			w.Header().Set("Trailer", "X-Checksum")
			_, _ = io.WriteString(w, "body")
			w.Header().Set("X-Checksum", "abc")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/close", "/cut":
			conn, bw, _ := http.NewResponseController(w).Hijack()
			if r.URL.Path == "/close" {
				_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
			} else {
				_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
			}
			_ = bw.Flush()
			_ = conn.Close()
		default:
			body, err := io.ReadAll(r.Body)
			sum := sha256.Sum256(body)
			w.Header().Set("X-Got-Length", strconv.Itoa(len(body)))
			w.Header().Set("X-Got-CL", strconv.FormatInt(r.ContentLength, 10))
			w.Header().Set("X-Got-TE", strings.Join(r.TransferEncoding, ","))
			w.Header().Set("X-Got-Sum", hex.EncodeToString(sum[:]))
			w.Header().Set("X-Got-Proto", r.Header.Get("X-Forwarded-Proto"))
			w.Header().Set("X-Got-Cookie", r.Header.Get("Cookie"))
			w.Header().Set("X-Got-Trailer", r.Trailer.Get("X-Req-Trailer"))
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
			}
			_, _ = io.WriteString(w, r.Method+" "+r.URL.RequestURI()+"\n")
		}
	})
}

type h2Fixture struct {
	*harness
	seen, active, maxActive atomic.Int64
	release                 chan struct{}
}

func newH2Fixture(t *testing.T) *h2Fixture {
	f := &h2Fixture{harness: newHarness(t, Options{}), release: make(chan struct{})}
	f.backend("b", h2Backend(&f.seen, &f.active, &f.maxActive, f.release), "")
	f.unlimitedBodies()
	f.in.Secrets = append(f.in.Secrets, rt.TLSSecret("ns", "tls", "h2.example.com"))
	if p := f.compile(rt.Ingress("ns", "i", 1, rt.Rule("h2.example.com", "/", rt.Prefix, "b", 80), rt.TLS("tls", "h2.example.com"),
		rt.Annotation("portico.dev/ssl-redirect", "false"))); len(p) != 0 {
		t.Fatal(p)
	}
	t.Cleanup(func() {
		select {
		case <-f.release:
		default:
			close(f.release)
		}
	})
	return f
}

// clients are Go's HTTP/2 client over TLS (h2 by ALPN) and in cleartext with prior knowledge.
func (f *h2Fixture) clients() map[string]*http.Client {
	return map[string]*http.Client{
		"https://" + f.https: h2Client(&tls.Config{InsecureSkipVerify: true, ServerName: "h2.example.com"}),
		"http://" + f.http:   h2Client(nil),
	}
}

// h2Client is Go's client speaking HTTP/2 only: over TLS with tc, else h2c with prior knowledge.
func h2Client(tc *tls.Config) *http.Client {
	p := new(http.Protocols)
	if tc != nil {
		p.SetHTTP2(true)
	} else {
		p.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Protocols: p, DisableCompression: true}}
}

// TestHTTP2Exchanges: requests over HTTP/2 (TLS and h2c) go through the core to an HTTP/1.1
// backend and come back whole: bodies with and without content-length both ways (flow control
// past the windows), streamed answers, trailers, bodiless answers, bodies ended by close, and an
// answer cut short, which must reach the client as a failure and not as a whole answer.
func TestHTTP2Exchanges(t *testing.T) {
	f := newH2Fixture(t)
	upload := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB
	sum := sha256.Sum256(upload)
	for base, c := range f.clients() {
		proto := "https"
		if strings.HasPrefix(base, "http:") {
			proto = "http"
		}
		do := func(method, path string, body io.Reader, length int64, hdr ...string) (*http.Response, string, error) {
			req, _ := http.NewRequest(method, base+path, body)
			req.Host = "h2.example.com"
			if length >= 0 {
				req.ContentLength = length
			}
			for i := 0; i+1 < len(hdr); i += 2 {
				req.Header.Add(hdr[i], hdr[i+1])
			}
			resp, err := c.Do(req)
			if err != nil {
				return nil, "", err
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			return resp, string(b), err
		}
		t.Run(proto, func(t *testing.T) {
			resp, body, err := do("GET", "/x?q=1", nil, -1, "Cookie", "a=1", "Cookie", "b=2")
			if err != nil || resp.StatusCode != 200 || body != "GET /x?q=1\n" || resp.ProtoMajor != 2 {
				t.Fatalf("GET: %v %v %q", err, resp, body)
			}
			if got := resp.Header.Get("X-Got-Proto"); got != proto {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, proto)
			}
			if got := resp.Header.Get("X-Got-Cookie"); got != "a=1; b=2" {
				t.Errorf("cookies reached the backend as %q, want them joined", got)
			}
			for _, tc := range []struct {
				name   string
				length int64
				te, cl string
			}{{"content-length", int64(len(upload)), "", strconv.Itoa(len(upload))}, {"no length", -1, "chunked", "-1"}} {
				var body io.Reader = bytes.NewReader(upload)
				if tc.length < 0 {
					body = io.MultiReader(bytes.NewReader(upload)) // no length known to the client
				}
				resp, _, err := do("POST", "/up", body, tc.length)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("upload (%s): %v %v", tc.name, err, resp)
				}
				if resp.Header.Get("X-Got-Sum") != hex.EncodeToString(sum[:]) || resp.Header.Get("X-Got-TE") != tc.te || resp.Header.Get("X-Got-CL") != tc.cl {
					t.Errorf("upload (%s): the backend got length %s, TE %q, CL %s", tc.name, resp.Header.Get("X-Got-Length"), resp.Header.Get("X-Got-TE"), resp.Header.Get("X-Got-CL"))
				}
			}
			resp, body, err = do("GET", "/big", nil, -1)
			if err != nil || len(body) != 3<<20 || resp.ContentLength != 3<<20 {
				t.Errorf("3 MiB answer: %v, %d bytes, length %d", err, len(body), resp.ContentLength)
			}
			_, body, err = do("GET", "/stream", nil, -1)
			if err != nil || body != "part 0\npart 1\npart 2\npart 3\npart 4\n" {
				t.Errorf("streamed answer: %v %q", err, body)
			}
			resp, body, err = do("GET", "/trailers", nil, -1)
			if err != nil || body != "body" || resp.Trailer.Get("X-Checksum") != "abc" {
				t.Errorf("trailers: %v %q %v", err, body, resp.Trailer)
			}
			resp, body, err = do("GET", "/nocontent", nil, -1)
			if err != nil || resp.StatusCode != 204 || body != "" {
				t.Errorf("204: %v %v %q", err, resp, body)
			}
			resp, body, err = do("HEAD", "/big", nil, -1)
			if err != nil || resp.StatusCode != 200 || body != "" {
				t.Errorf("HEAD: %v %v %q", err, resp, body)
			}
			_, body, err = do("GET", "/close", nil, -1)
			if err != nil || body != "until the end" {
				t.Errorf("body ended by close: %v %q", err, body)
			}
			_, body, err = do("GET", "/cut", nil, -1)
			if err == nil {
				t.Errorf("an answer cut short reached the client as whole: %q", body)
			}
			resp, body, err = do("GET", "/after", nil, -1)
			if err != nil || resp.StatusCode != 200 || body != "GET /after\n" {
				t.Errorf("the connection after a cut answer: %v %v %q", err, resp, body)
			}
		})
	}
}

// rawH2 is a client that writes frames as given, for the tests of malformed and hostile input.
type rawH2 struct {
	t      *testing.T
	c      net.Conn
	fr     *http2.Framer
	enc    *hpack.Encoder
	hbuf   bytes.Buffer
	frames chan h2Got
	mu     sync.Mutex // the Framer's write side
}

// h2Got is what a test looks at in a frame the proxy sent (the Framer reuses its frames).
type h2Got struct {
	stream uint32
	kind   http2.FrameType
	code   http2.ErrCode // RST_STREAM, GOAWAY
	status string        // HEADERS
	end    bool          // DATA, HEADERS: END_STREAM
}

func dialRawH2(t *testing.T, addr string) *rawH2 {
	t.Helper()
	return dialRawH2With(t, addr, nil)
}

// dialRawH2With is dialRawH2 with the TCP connection under TLS wrapped by wrap, if not nil.
func dialRawH2With(t *testing.T, addr string, wrap func(net.Conn) net.Conn) *rawH2 {
	t.Helper()
	tcp, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		tcp = wrap(tcp)
	}
	c := tls.Client(tcp, &tls.Config{InsecureSkipVerify: true, ServerName: "h2.example.com", NextProtos: []string{"h2"}})
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Fatal("h2 not negotiated")
	}
	return startRawH2(t, c)
}

// dialRawH2C is dialRawH2 in cleartext (h2c with prior knowledge).
func dialRawH2C(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return startRawH2(t, c)
}

// startRawH2 starts the client's side of HTTP/2 on c: the preface, SETTINGS, and a reader that
// acknowledges SETTINGS and passes on the other frames but WINDOW_UPDATE and PING.
func startRawH2(t *testing.T, c net.Conn) *rawH2 {
	r := &rawH2{t: t, c: c, frames: make(chan h2Got, 1<<16)}
	r.enc = hpack.NewEncoder(&r.hbuf)
	r.fr = http2.NewFramer(c, c)
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	_, _ = io.WriteString(c, http2.ClientPreface)
	_ = r.fr.WriteSettings()
	go func() {
		defer close(r.frames)
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					r.mu.Lock()
					_ = r.fr.WriteSettingsAck()
					r.mu.Unlock()
				}
				continue
			case *http2.WindowUpdateFrame, *http2.PingFrame:
				continue
			}
			g := h2Got{stream: f.Header().StreamID, kind: f.Header().Type}
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				g.code = f.ErrCode
			case *http2.GoAwayFrame:
				g.code = f.ErrCode
			case *http2.MetaHeadersFrame:
				g.status, g.end = f.PseudoValue("status"), f.StreamEnded()
			case *http2.DataFrame:
				g.end = f.StreamEnded()
			}
			r.frames <- g
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
	return r
}

// headers writes a HEADERS frame with the given fields (pairs), as they are.
func (r *rawH2) headers(id uint32, end bool, fields ...string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

func (r *rawH2) request(id uint32, end bool, path string, extra ...string) error {
	return r.headers(id, end, append([]string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", path}, extra...)...)
}

// await returns the first frame on stream id that satisfies ok, or fails after a while.
func (r *rawH2) await(id uint32, what string, ok func(h2Got) bool) h2Got {
	r.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, open := <-r.frames:
			if !open {
				r.t.Fatalf("%s: the connection ended", what)
			}
			if f.stream == id && ok(f) {
				return f
			}
		case <-timeout:
			r.t.Fatalf("%s: nothing came", what)
		}
	}
}

func isRST(code http2.ErrCode) func(h2Got) bool {
	return func(f h2Got) bool { return f.kind == http2.FrameRSTStream && f.code == code }
}

func hasStatus(code string) func(h2Got) bool {
	return func(f h2Got) bool { return f.kind == http2.FrameHeaders && f.status == code }
}

// TestHTTP2MalformedRequests: requests that are malformed in HTTP/2 (RFC 9113 §8.1.1, §8.2)
// are reset with PROTOCOL_ERROR and reach no backend, in particular those that would frame or
// route the HTTP/1.1 request the core builds differently from what the client meant; the
// connection goes on serving.
func TestHTTP2MalformedRequests(t *testing.T) {
	f := newH2Fixture(t)
	r := dialRawH2(t, f.https)
	id := uint32(1)
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"Connection", []string{"connection", "close"}},
		{"Transfer-Encoding", []string{"transfer-encoding", "chunked"}},
		{"TE other than trailers", []string{"te", "gzip"}},
		{"Upgrade", []string{"upgrade", "websocket"}},
		{"Keep-Alive", []string{"keep-alive", "timeout=5"}},
		{"two content-lengths", []string{"content-length", "1", "content-length", "2"}},
		{"a value with leading space", []string{"x-a", " v"}},
		{"upper-case name", []string{"X-Upper", "v"}},
		{"value with a line feed", []string{"x-a", "a\nb"}},
	} {
		if err := r.request(id, true, "/m", tc.fields...); err != nil {
			t.Fatal(err)
		}
		r.await(id, tc.name, isRST(http2.ErrCodeProtocol))
		id += 2
	}
	for _, path := range []string{"/a b", "/a\tb", "a", "/a HTTP/1.1"} {
		if err := r.headers(id, true, ":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", path); err != nil {
			t.Fatal(err)
		}
		r.await(id, ":path "+strconv.Quote(path), isRST(http2.ErrCodeProtocol))
		id += 2
	}
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"a pseudo-field after a regular one", []string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", "x-a", "b", ":authority", "other.example.com"}},
		{"a pseudo-field twice", []string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", ":path", "/x"}},
		{"an unknown pseudo-field", []string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", ":foo", "x"}},
		{"a response pseudo-field", []string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", ":status", "200"}},
		// 17 x 4,035 bytes of header list (one field, then its index in the table): past 64 KiB.
		{"a response pseudo-field and a header list too long", append([]string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", ":status", "200"},
			strings.Split(strings.Repeat("x-a,"+strings.Repeat("a", 4000)+",", 17), ",")[:34]...)},
		{"an empty name", []string{":method", "GET", ":scheme", "https", ":authority", "h2.example.com", ":path", "/", "", "x"}},
	} {
		if err := r.headers(id, true, tc.fields...); err != nil {
			t.Fatal(err)
		}
		r.await(id, tc.name, isRST(http2.ErrCodeProtocol))
		id += 2
	}
	if err := r.headers(id, true, ":method", "G T", ":scheme", "https", ":authority", "h2.example.com", ":path", "/"); err != nil {
		t.Fatal(err)
	}
	r.await(id, "a method with a space", isRST(http2.ErrCodeProtocol))
	id += 2
	if err := r.headers(id, true, ":method", "GET", ":scheme", "https", ":authority", "h2.example.com evil", ":path", "/"); err != nil {
		t.Fatal(err)
	}
	r.await(id, "an authority with a space", isRST(http2.ErrCodeProtocol))
	id += 2
	if n := f.seen.Load(); n != 0 {
		t.Errorf("%d malformed requests reached the backend", n)
	}
	// A body longer than its content-length: the backend may have the head, never the body.
	if err := r.headers(id, false, ":method", "POST", ":scheme", "https", ":authority", "h2.example.com", ":path", "/cl", "content-length", "3"); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	_ = r.fr.WriteData(id, true, []byte("abcdef"))
	r.mu.Unlock()
	r.await(id, "a body longer than its content-length", isRST(http2.ErrCodeProtocol))
	id += 2
	if err := r.headers(id, true, ":method", "CONNECT", ":authority", "h2.example.com:443"); err != nil {
		t.Fatal(err)
	}
	r.await(id, "CONNECT", hasStatus("405"))
	id += 2
	if err := r.request(id, true, "/fine"); err != nil {
		t.Fatal(err)
	}
	r.await(id, "a well-formed request after them", hasStatus("200"))
}

// TestHTTP2HeaderListTooLong: a header list past SETTINGS_MAX_HEADER_LIST_SIZE (MaxHeaderBytes,
// 64 KiB) in a block of several frames is answered 431 and reaches no backend; the block is
// decoded to its end all the same, so the connection's HPACK state stays in step and the next
// request on it is served.
func TestHTTP2HeaderListTooLong(t *testing.T) {
	f := newH2Fixture(t)
	r := dialRawH2(t, f.https)
	r.mu.Lock()
	r.hbuf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "h2.example.com"}, {":path", "/big"}} {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	for i := range 10 { // 10 x 7,036 bytes of header list: the tenth goes past 65,536
		_ = r.enc.WriteField(hpack.HeaderField{Name: fmt.Sprintf("x-f%d", i), Value: strings.Repeat("a", 7000)})
	}
	block := r.hbuf.Bytes()
	if len(block) <= 32<<10 {
		t.Fatalf("the block is %d bytes, meant to take three frames", len(block))
	}
	err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:16<<10], EndStream: true})
	for rest := block[16<<10:]; err == nil && len(rest) > 0; {
		n := min(len(rest), 16<<10)
		err = r.fr.WriteContinuation(1, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	r.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r.await(1, "a header list of 70 KB", hasStatus("431"))
	if err := r.request(3, true, "/after"); err != nil {
		t.Fatal(err)
	}
	r.await(3, "the next request on the connection", hasStatus("200"))
	if n := f.seen.Load(); n != 1 {
		t.Errorf("the backend saw %d requests, want 1 (the second)", n)
	}
}

// TestHTTP2ConcurrencyLimit: streams past SETTINGS_MAX_CONCURRENT_STREAMS are refused.
func TestHTTP2ConcurrencyLimit(t *testing.T) {
	f := newH2Fixture(t)
	r := dialRawH2(t, f.https)
	for i := range h2MaxStreams + 1 {
		if err := r.request(uint32(2*i+1), true, "/slow"); err != nil {
			t.Fatal(err)
		}
	}
	r.await(2*h2MaxStreams+1, "the stream past the limit", isRST(http2.ErrCodeRefusedStream))
	close(f.release)
	r.await(1, "the first stream", hasStatus("200"))
}

// TestHTTP2RapidReset: a client that opens streams and resets them at once, as fast as it can
// (CVE-2023-44487), starts no more backend requests at a time than the concurrency limit, is
// sent away (GOAWAY ENHANCE_YOUR_CALM), and the proxy goes on serving others with its
// goroutines back to where they were.
func TestHTTP2RapidReset(t *testing.T) {
	f := newH2Fixture(t)
	r := dialRawH2(t, f.https)
	var err error
	id := uint32(1)
	for ; id < 200_000 && err == nil; id += 2 {
		if err = r.request(id, true, "/slow"); err == nil {
			r.mu.Lock()
			err = r.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			r.mu.Unlock()
		}
	}
	away := false
	for fr := range r.frames {
		if fr.kind == http2.FrameGoAway && fr.code == http2.ErrCodeEnhanceYourCalm {
			away = true
		}
	}
	if !away {
		t.Errorf("no GOAWAY ENHANCE_YOUR_CALM after %d streams reset", id/2)
	}
	if m := f.maxActive.Load(); m > h2MaxStreams {
		t.Errorf("%d backend requests at a time, more than the limit of %d", m, h2MaxStreams)
	}
	close(f.release)
	c := f.clients()["https://"+f.https]
	req, _ := http.NewRequest("GET", "https://"+f.https+"/after", nil)
	req.Host = "h2.example.com"
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client after the attack: %v %v", err, resp)
	}
	_ = resp.Body.Close()
	c.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for streamGoroutines() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := streamGoroutines(); n > 0 {
		t.Errorf("%d goroutines of HTTP/2 streams and connections left after the attack", n)
	}
}

// streamGoroutines counts the goroutines serving HTTP/2 connections and streams.
func streamGoroutines() int {
	buf := make([]byte, 1<<22)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "proxy.(*h2Stream)") || strings.Contains(g, "proxy.(*h2Conn)") || strings.Contains(g, "proxy.(*h1Conn).serveH2") {
			n++
		}
	}
	return n
}

// TestHTTP2ContinuationFlood: a header block that never ends (CONTINUATION frames, empty or
// not, without END_HEADERS) ends its connection after a bounded read, and others are served.
func TestHTTP2ContinuationFlood(t *testing.T) {
	f := newH2Fixture(t)
	for _, size := range []int{0, 16 << 10} {
		r := dialRawH2(t, f.https)
		r.mu.Lock()
		r.hbuf.Reset()
		_ = r.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
		if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.hbuf.Bytes()}); err != nil {
			t.Fatal(err)
		}
		junk := bytes.Repeat([]byte{0x40}, size) // literal fields with incremental indexing, names cut
		sent := 0
		var err error
		for sent < 64<<20 && err == nil {
			err = r.fr.WriteContinuation(1, false, junk)
			sent += 9 + size
		}
		r.mu.Unlock()
		if err == nil {
			t.Errorf("CONTINUATION frames of %d bytes: the connection still took them after %d MiB", size, sent>>20)
		}
		for range r.frames {
		}
	}
	c := f.clients()["https://"+f.https]
	req, _ := http.NewRequest("GET", "https://"+f.https+"/after", nil)
	req.Host = "h2.example.com"
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("another client after the flood: %v %v", err, resp)
	}
	_ = resp.Body.Close()
}

// TestHTTP2GracefulShutdown: at shutdown an HTTP/2 connection is sent GOAWAY (NO_ERROR), the
// stream in flight is answered, and the connection then ends.
func TestHTTP2GracefulShutdown(t *testing.T) {
	f := newH2Fixture(t)
	r := dialRawH2(t, f.https)
	if err := r.request(1, true, "/slow"); err != nil {
		t.Fatal(err)
	}
	for f.active.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	f.cancel() // the drain period (300 ms), then the shutdown
	r.await(0, "GOAWAY", func(g h2Got) bool { return g.kind == http2.FrameGoAway && g.code == http2.ErrCodeNo })
	close(f.release)
	r.await(1, "the stream in flight", hasStatus("200"))
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-r.frames:
		case <-timeout:
			t.Fatal("the connection outlived its last stream")
		}
	}
}

// TestHTTP2IdleTimeout: a connection with no stream is closed after the idle timeout, with
// GOAWAY NO_ERROR.
func TestHTTP2IdleTimeout(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{IdleTimeout: 300 * time.Millisecond})
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "h2.example.com"))
	h.compile()
	r := dialRawH2(t, h.https)
	start := time.Now()
	r.await(0, "GOAWAY", func(g h2Got) bool { return g.kind == http2.FrameGoAway && g.code == http2.ErrCodeNo })
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("closed after %v, with an idle timeout of 300ms", d)
	}
}

// TestHTTP2IdleTimeoutAfterAStream: the idle timeout counts from the last stream's end, over
// TLS and h2c (whose reader waits in its read, not parked: the stream's end sets its deadline).
// Before, an h2c connection lived until the busy connection's PING deadline (30 s), whatever its
// idle timeout.
func TestHTTP2IdleTimeoutAfterAStream(t *testing.T) {
	h := newHarnessWith(t, Options{}, ServerOptions{IdleTimeout: 400 * time.Millisecond})
	// The answer takes a while: the client's last frames (its SETTINGS ACK) come before the
	// stream ends, and the reader then waits through the end.
	h.backend("b", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { time.Sleep(200 * time.Millisecond) }), "")
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "tls", "h2.example.com"))
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h2.example.com", "/", rt.Prefix, "b", 80), rt.TLS("tls", "h2.example.com"),
		rt.Annotation("portico.dev/ssl-redirect", "false")))
	for name, dial := range map[string]func() *rawH2{
		"tls": func() *rawH2 { return dialRawH2(t, h.https) },
		"h2c": func() *rawH2 { return dialRawH2C(t, h.http) },
	} {
		r := dial()
		if err := r.request(1, true, "/"); err != nil {
			t.Fatal(err)
		}
		r.await(1, name+": the answer", hasStatus("200"))
		start := time.Now()
		r.await(0, name+": GOAWAY", func(g h2Got) bool { return g.kind == http2.FrameGoAway && g.code == http2.ErrCodeNo })
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("%s: closed %v after its stream, with an idle timeout of 400ms", name, d)
		}
	}
}

// TestHTTP2StreamWorkersEnd: the goroutines that served streams wait for more, and end once idle
// (a second or two), the reaper with them.
func TestHTTP2StreamWorkersEnd(t *testing.T) {
	f := newH2Fixture(t)
	c := f.clients()["https://"+f.https]
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Go(func() {
			req, _ := http.NewRequest("GET", "https://"+f.https+"/w", nil)
			req.Host = "h2.example.com"
			resp, err := c.Do(req)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != 200 {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if streamIdle.Load() == 0 || !streamReaping.Load() {
		t.Fatalf("after the requests: %d workers waiting, reaper running %v; want workers kept", streamIdle.Load(), streamReaping.Load())
	}
	deadline := time.Now().Add(5 * time.Second)
	for streamWorkers.Load() != 0 || streamReaping.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("5 s after the requests: %d workers, reaper running %v", streamWorkers.Load(), streamReaping.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestHTTP2MetricsOfEachServer: a stream's connection object is pooled across servers, and its
// cached series must be the serving Handler's own: two proxies in turn (as tests and a restart
// within a process run them) each count their own HTTP/2 requests. Before, the second counted
// into the first's registry.
func TestHTTP2MetricsOfEachServer(t *testing.T) {
	for round := range 2 {
		f := newH2Fixture(t)
		close(f.release)
		c := h2Client(&tls.Config{InsecureSkipVerify: true, ServerName: "h2.example.com"})
		for range 5 {
			r, _, _ := get(t, c, "https://"+f.https+"/", "h2.example.com")
			if r.StatusCode != 200 {
				t.Fatalf("round %d: %d", round, r.StatusCode)
			}
		}
		c.CloseIdleConnections()
		if n := testutil.ToFloat64(f.handler.metrics.Requests.WithLabelValues("ns/i", "ns/b:80", "200")); n != 5 {
			t.Fatalf("round %d: this proxy counted %v requests, want 5", round, n)
		}
	}
}
