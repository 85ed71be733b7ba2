package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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

// FuzzH2Upstream sends requests of several clients at once through the proxy to an HTTP/2
// backend (h2c), whose streams they share, and the backend misbehaves as the fuzzer chooses:
// answers on other streams, resets (REFUSED_STREAM: sent again), GOAWAY below open streams,
// informational answers, bodies shorter or longer than their content-length, DATA before
// HEADERS, trailers without END_STREAM, PUSH_PROMISE, windows overflowed, connection-specific
// fields, the connection closed mid-answer. The backend tags each answer with the connection
// and stream it writes it on (X-Stream, and the body), and records the request it read on
// each. It checks:
//   - an answer a client gets from the backend was written on a stream that carried that
//     client's request: no client receives another's answer;
//   - a complete 200 carries exactly the body the backend wrote for it, and an answer the
//     backend wrote malformed (RFC 9113 §8.1) never reaches a client as complete;
//   - every request body the backend receives whole is the one its client sent;
//   - another client, after, gets its own answer.
//
// Seeds run with go test; go test -run '^$' -fuzz FuzzH2Upstream ./dataplane/proxy/ searches.
func FuzzH2Upstream(f *testing.F) {
	for _, s := range [][]byte{{}, {0, 0, 0}, {1, 1}, {2, 0}, {3, 0}, {4}, {5, 0}, {6}, {7}, {8}, {10}, {11}, {12}, {13, 0}, {14}, {15}, {16}, {17}, {18}, {19}} {
		f.Add(s, uint8(3))
	}
	h := newHarnessWith(f, Options{UpstreamTimeout: 300 * time.Millisecond}, ServerOptions{EventLoops: -1})
	be := &h2FuzzBackend{}
	h.tcpBackendAs("h2b", "h2c", be.serve)
	h.compile(rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "h2b", 80)))
	var inputs int
	f.Fuzz(func(t *testing.T, program []byte, clients uint8) {
		if len(program) > 64 {
			return
		}
		inputs++
		be.reset(program)
		type result struct {
			path, body string
			status     int
			key, got   string
			complete   bool
			injected   bool // a field the backend gave in another's value
		}
		n := 1 + int(clients%4)
		results := make([]result, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				r := &results[i]
				r.path = fmt.Sprintf("/c%d-%d", i, inputs)
				req := "GET " + r.path + " HTTP/1.1\r\nHost: h\r\n\r\n"
				if i%2 == 0 {
					r.body = "body of " + r.path
					req = fmt.Sprintf("POST %s HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", r.path, len(r.body), r.body)
				}
				c, err := net.Dial("tcp", h.http)
				if err != nil {
					return
				}
				defer c.Close()
				// An answer that never ends (action 9) holds its client until then: bodies
				// stream as long as they take (docs/data-plane.md).
				_ = c.SetDeadline(time.Now().Add(time.Second))
				if _, err := io.WriteString(c, req); err != nil {
					return
				}
				br := bufio.NewReader(c)
				for {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return
					}
					if resp.StatusCode >= 100 && resp.StatusCode < 200 {
						continue
					}
					r.status, r.key = resp.StatusCode, resp.Header.Get("X-Stream")
					r.injected = resp.Header.Get("X-Injected") != ""
					b, err := io.ReadAll(resp.Body)
					r.got, r.complete = string(b), err == nil
					return
				}
			})
		}
		wg.Wait()
		paths, bodies := be.seen()
		sent := map[string]string{}
		for _, r := range results {
			sent[r.path] = r.body
		}
		for _, r := range results {
			if r.injected {
				t.Fatalf("program %x, %d clients: %s got a field the backend wrote inside another's value (CR LF)", program, n, r.path)
			}
			if r.key == "" {
				continue
			}
			if paths[r.key] != r.path {
				t.Fatalf("program %x, %d clients: %s got the answer written on stream %s, which carried %q (results %+v)", program, n, r.path, r.key, paths[r.key], results)
			}
			if r.complete && r.status == 200 && r.got != r.key {
				t.Fatalf("program %x, %d clients: %s got a complete 200 with the body %q, the backend wrote %q", program, n, r.path, r.got, r.key)
			}
			if r.complete && be.isMalformed(r.key) {
				t.Fatalf("program %x, %d clients: %s got a malformed answer as a complete %d %q", program, n, r.path, r.status, r.got)
			}
		}
		for key, b := range bodies {
			if want, ok := sent[paths[key]]; ok && b != want {
				t.Fatalf("program %x, %d clients: the backend received %q whole on stream %s for %s, its client sent %q", program, n, b, key, paths[key], want)
			}
		}

		// Another client gets its own answer: at once, or once the proxy has seen the end of a
		// connection the backend has just closed.
		path := "/victim-" + strconv.Itoa(inputs)
		var last string
		for try := range 2 {
			if try > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			status, key, body, err := h1Get(h.http, path)
			if key != "" && be.path(key) != path {
				t.Fatalf("program %x, %d clients: the next client got the answer written on stream %s, which carried %q", program, n, key, be.path(key))
			}
			if err == nil && status == 200 && body == key {
				last = ""
				break
			}
			last = fmt.Sprintf("%d %q (%v)", status, body, err)
		}
		if last != "" {
			t.Fatalf("program %x, %d clients: the next client got %s, want its own answer", program, n, last)
		}
	})
}

// h1Get asks host h for path over HTTP/1.1 on a new connection to addr, and returns the
// answer's status, X-Stream and body.
func h1Get(addr, path string) (int, string, string, error) {
	return h1GetHost(addr, "h", path)
}

// h1GetHost is h1Get of another host.
func h1GetHost(addr, host, path string) (int, string, string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return 0, "", "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", "", err
	}
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Stream"), string(b), err
}

// h2FuzzBackend is an HTTP/2 server that answers each request (at its END_STREAM) as the next
// byte of the program says, and records what it read on each stream.
type h2FuzzBackend struct {
	mu      sync.Mutex
	program []byte
	at      int
	paths   map[string]string // "conn/stream" -> the request's target
	bodies  map[string]string // "conn/stream" -> the request's body, read whole
	// malformed: the streams answered in a way RFC 9113 §8.1 calls malformed, which no
	// client may get as a complete answer; answered, those given a whole answer before their
	// request ended (action 2), which stands.
	malformed, answered map[string]bool
	conns               atomic.Int64
}

func (b *h2FuzzBackend) reset(program []byte) {
	b.mu.Lock()
	b.program, b.at = program, 0
	b.paths, b.bodies, b.malformed, b.answered = map[string]string{}, map[string]string{}, map[string]bool{}, map[string]bool{}
	b.mu.Unlock()
}

func (b *h2FuzzBackend) seen() (map[string]string, map[string]string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	paths, bodies := map[string]string{}, map[string]string{}
	for k, v := range b.paths {
		paths[k] = v
	}
	for k, v := range b.bodies {
		bodies[k] = v
	}
	return paths, bodies
}

func (b *h2FuzzBackend) isMalformed(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.malformed[key]
}

func (b *h2FuzzBackend) path(key string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.paths[key]
}

// next is the action for a request to path: the program's next byte, 0 (a plain answer) past
// its end and for the victims.
func (b *h2FuzzBackend) next(path string) byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if strings.HasPrefix(path, "/victim-") || b.at >= len(b.program) {
		return 0
	}
	b.at++
	return b.program[b.at-1]
}

func (b *h2FuzzBackend) serve(c net.Conn) {
	conn := b.conns.Add(1)
	pre := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, pre); err != nil {
		return
	}
	var out bytes.Buffer
	fr := http2.NewFramer(&out, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.AllowIllegalWrites = true
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	flush := func() bool {
		_, err := c.Write(out.Bytes())
		out.Reset()
		return err == nil
	}
	_ = fr.WriteSettings()
	flush()
	paths := map[uint32]string{}
	bodies := map[uint32][]byte{}
	headers := func(id uint32, end bool, fields ...string) {
		hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true})
	}
	// answer writes a plain answer on stream id, tagged with it.
	answer := func(id uint32) {
		key := fmt.Sprintf("%d/%d", conn, id)
		headers(id, false, ":status", "200", "x-stream", key, "content-length", strconv.Itoa(len(key)))
		_ = fr.WriteData(id, true, []byte(key))
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		id := f.Header().StreamID
		end := false
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			paths[id] = f.PseudoValue("path")
			end = f.StreamEnded()
			b.mu.Lock() // the stream carries the request from its head on (action 2 may answer it first)
			b.paths[fmt.Sprintf("%d/%d", conn, id)] = paths[id]
			b.mu.Unlock()
		case *http2.DataFrame:
			bodies[id] = append(bodies[id], f.Data()...)
			end = f.StreamEnded()
			if n := len(f.Data()); n > 0 {
				_ = fr.WriteWindowUpdate(0, uint32(n))
			}
		case *http2.GoAwayFrame:
			return
		}
		if end {
			key := fmt.Sprintf("%d/%d", conn, id)
			b.mu.Lock()
			b.bodies[key] = string(bodies[id])
			b.mu.Unlock()
			key2 := fmt.Sprintf("%d/%d", conn, id+2)
			action := b.next(paths[id]) % 20
			switch action {
			case 7, 8, 12, 15, 17, 18: // not 16: connection-specific fields are dropped (docs/data-plane.md)
				b.mu.Lock()
				b.malformed[key] = !b.answered[key]
				b.mu.Unlock()
			case 2:
				b.mu.Lock()
				b.answered[key2] = true
				b.mu.Unlock()
			}
			switch action {
			case 0:
				answer(id)
			case 1: // no length, two DATA frames, trailers
				headers(id, false, ":status", "200", "x-stream", key)
				_ = fr.WriteData(id, false, []byte(key[:1]))
				_ = fr.WriteData(id, false, []byte(key[1:]))
				headers(id, true, "x-trailer", key)
			case 2: // on the next stream, which this connection may not have opened yet
				headers(id+2, false, ":status", "200", "x-stream", key2, "content-length", strconv.Itoa(len(key2)))
				_ = fr.WriteData(id+2, true, []byte(key2))
			case 3:
				_ = fr.WriteRSTStream(id, http2.ErrCodeRefusedStream)
			case 4:
				_ = fr.WriteRSTStream(id, http2.ErrCodeInternal)
			case 5: // this stream not processed, then the end
				_ = fr.WriteGoAway(id-2, http2.ErrCodeNo, nil)
				flush()
				return
			case 6:
				headers(id, false, ":status", "103", "link", "</a>")
				answer(id)
			case 7: // a length the body does not have
				headers(id, true, ":status", "200", "x-stream", key, "content-length", "5")
			case 8: // DATA before HEADERS
				_ = fr.WriteData(id, false, []byte("early"))
				answer(id)
			case 9: // an answer that never ends (the response timeout)
				headers(id, false, ":status", "200", "x-stream", key)
			case 10: // the connection closed mid-answer
				headers(id, false, ":status", "200", "x-stream", key, "content-length", strconv.Itoa(len(key)))
				_ = fr.WriteData(id, false, []byte(key[:1]))
				flush()
				return
			case 11:
				hb.Reset()
				_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
				_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/pushed"})
				_ = fr.WritePushPromise(http2.PushPromiseParam{StreamID: id, PromiseID: 2, BlockFragment: hb.Bytes(), EndHeaders: true})
				answer(id)
			case 12: // more body than its length
				headers(id, false, ":status", "200", "x-stream", key, "content-length", strconv.Itoa(len(key)))
				_ = fr.WriteData(id, true, []byte(key+"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"))
			case 13: // one stream at a time, no window, then the window
				_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
				answer(id)
				_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
			case 14: // the connection's window overflowed
				_ = fr.WriteWindowUpdate(0, 1<<31-1)
				_ = fr.WriteWindowUpdate(0, 1<<31-1)
				answer(id)
			case 15: // trailers without END_STREAM, then more
				headers(id, false, ":status", "200", "x-stream", key)
				headers(id, false, "x-trailer", "1")
				_ = fr.WriteData(id, true, []byte(key))
			case 16: // connection-specific fields in the answer
				headers(id, false, ":status", "200", "x-stream", key, "connection", "close", "transfer-encoding", "chunked", "content-length", strconv.Itoa(len(key)))
				_ = fr.WriteData(id, true, []byte(key))
			case 17: // a status that is not one
				headers(id, true, ":status", "2000", "x-stream", key)
			case 18: // a field value with CR LF
				headers(id, false, ":status", "200", "x-stream", key, "x-split", "a\r\nx-injected: 1", "content-length", strconv.Itoa(len(key)))
				_ = fr.WriteData(id, true, []byte(key))
			case 19: // answered twice
				answer(id)
				answer(id)
			}
		}
		if out.Len() > 0 && !flush() {
			return
		}
	}
}
