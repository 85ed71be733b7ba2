package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2 sends a fuzzed sequence of HTTP/2 frames on one connection (h2c with prior knowledge,
// then h2 over TLS), to the backend of FuzzDesync, whose answers the fuzzer also chooses. The
// input is a program (see h2Program): frames of every type on new, open, closed, idle, even and
// huge stream ids, header blocks built from a dictionary of hostile fields (connection-specific
// fields, content-lengths that disagree with the data, values with CR, LF and NUL, pseudo-fields
// out of place, split across CONTINUATION frames or never ended), data carrying HTTP/1.1
// requests, settings and windows at their limits, raw bytes. It checks, after each connection:
//   - the backend received only well-formed HTTP/1.1 requests, each the request of one stream
//     the client opened, none twice: a stream's bytes never frame a second request upstream;
//   - each request's body is a prefix of the data the client sent on its stream, and whole
//     unless the client gave its length as content-length: a body cut short upstream is never
//     framed as a complete one;
//   - each answer the client gets from the backend answers the request of its own stream;
//   - every goroutine of the connection and its streams ends once the client has gone;
//   - another client, after, gets its own answer.
//
// Seeds run with go test; go test -run XXX -fuzz FuzzH2 ./dataplane/proxy/ searches.
func FuzzH2(f *testing.F) {
	for _, s := range h2Seeds {
		f.Add(s, uint64(0))
		f.Add(s, uint64(0x876543210))
	}
	backend := &fuzzBackend{}
	type target struct {
		name string
		h    *harness
		tls  bool
	}
	var targets []target
	for _, p := range []struct {
		name string
		so   ServerOptions
		tls  bool
	}{{"h2c/goroutines", ServerOptions{EventLoops: -1}, false}, {"h2/loops", ServerOptions{EventLoops: 1}, true}} {
		targets = append(targets, target{p.name, backend.harness(f, p.so), p.tls})
	}
	stacks := make([]byte, 1<<22)
	var victims int
	f.Fuzz(func(t *testing.T, program []byte, modes uint64) {
		if len(program) > 2048 {
			return
		}
		for _, tg := range targets {
			if !h2GoroutinesEnd(stacks, 3*time.Second) {
				t.Fatalf("%s: goroutines of HTTP/2 connections left before the input", tg.name)
			}
			backend.reset(modes)
			conn, err := h2Dial(tg.h, tg.tls)
			if err != nil {
				t.Fatal(err)
			}
			cl := runH2Program(conn, program)
			if !h2GoroutinesEnd(stacks, 3*time.Second) {
				t.Fatalf("%s: program %q modes %x: goroutines of the connection or its streams left 3s after the client's end", tg.name, program, modes)
			}
			if !backend.settle(2 * time.Second) {
				t.Fatalf("%s: program %q modes %x: the backend was still busy 2s after the connection ended", tg.name, program, modes)
			}
			if msg := cl.check(backend); msg != "" {
				t.Fatalf("%s: program %q modes %x: %s", tg.name, program, modes, msg)
			}

			victims++
			path := "/victim-" + strconv.Itoa(victims)
			vc, err := h2Dial(tg.h, tg.tls)
			if err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			status, body, err := h2Get(vc, path)
			vc.Close()
			if err != nil || body != "GET "+path {
				t.Fatalf("%s: program %q modes %x: the next client got %d %q (%v) after %v, want its own answer",
					tg.name, program, modes, status, body, err, time.Since(sent).Round(time.Millisecond))
			}
		}
	})
}

// h2Seeds are programs (see h2Program) for the cases the tests of h2_test.go hold, and a few
// the fuzzer grows from: plain requests, bodies with and without content-length, lengths that
// disagree with the data, hostile fields, resets, windows, CONTINUATION.
var h2Seeds = [][]byte{
	{opHeaders, 0, 0x05, 0x00, 0},                              // GET, END_STREAM
	{opHeaders, 0, 0x05, 0x00, 0, opHeaders, 0, 0x05, 0x00, 0}, // two GETs
	{opHeaders, 0, 0x04, 0x01, 0, opData, 2, 0x01, 20, 0},      // POST, chunked upstream
	{opHeaders, 0, 0x04, 0x01, 1, 2, opData, 2, 0x01, 3, 0},    // POST, content-length 3
	{opHeaders, 0, 0x04, 0x01, 1, 2, opData, 2, 0x01, 8, 0},    // more data than its length
	{opHeaders, 0, 0x04, 0x01, 1, 2, opData, 2, 0x00, 3, 0, opData, 2, 0x01, 5, 0},
	{opHeaders, 0, 0x04, 0x01, 1, 3, opData, 2, 0x01, 2, 0},                                // less data than its length
	{opHeaders, 0, 0x05, 0x01, 1, 2},                                                       // a length END_STREAM denies
	{opHeaders, 0, 0x05, 0x02, 1, 4},                                                       // HEAD, content-length 0
	{opHeaders, 0, 0x05, 0x00, 1, 8},                                                       // connection: close
	{opHeaders, 0, 0x05, 0x00, 1, 12},                                                      // a value with CR LF
	{opHeaders, 0, 0x05, 0x20, 0},                                                          // a path with CR LF
	{opHeaders, 0, 0x04, 0x01, 0, opData, 2, 0x00, 40, 5, opRST, 2, 8},                     // a body cut by a reset
	{opHeaders, 0, 0x01, 0x00, 0, opContinuation, 2, 0x04},                                 // a block in CONTINUATION
	{opHeaders, 0, 0x01, 0x00, 0, opHeaders, 0, 0x05, 0x00, 0},                             // a block never ended
	{opSettings, 0, opHeaders, 0, 0x05, 0x00, 0, opPause, opWindow, 2, 2},                  // initial window 0
	{opHeaders, 0, 0x04, 0x01, 0, opData, 2, 0x00, 10, 0, opHeaders, 2, 0x05, 0x40, 1, 16}, // trailers
	{opHeaders, 0, 0x05, 0x00, 0, opRST, 2, 8, opHeaders, 0, 0x05, 0x00, 0},
	{opHeaders, 0, 0x04, 0x01, 0, opHeaders, 0, 0x04, 0x01, 1, 2, opData, 4, 0x00, 10, 0, opData, 2, 0x01, 3, 7, opData, 4, 0x01, 5, 20},
	{opRaw, 9, 0, 0, 4, 4, 0, 0, 0, 0, 0, opHeaders, 0, 0x05, 0x00, 0},
}

// The program's operations: each is a byte (taken modulo opCount), then its own bytes.
const (
	// id, flags (HEADERS's, and 0x02: no :scheme), variant (bits 0-2 the method, 3-5 the
	// target's tail, 6 a trailer block, 7 GET whatever bits 0-2), count, fields: a header block
	opHeaders      = iota
	opData         // id, flags, length, offset: DATA
	opContinuation // id, flags: the rest of the last block split off
	opRST          // id, code
	opWindow       // id, increment
	opSettings     // setting
	opPing         // flags
	opPriority     // id, dependency
	opGoAway       // code
	opRaw          // length, bytes: as they are
	opPause        // sends what is written and waits 2 ms
	opCount
)

// h2Fields are the regular fields a header block picks from.
var h2Fields = [][2]string{
	{"accept", "*/*"},
	{"cookie", "a=1"},
	{"content-length", "3"},
	{"content-length", "5"},
	{"content-length", "0"},
	{"content-length", "3, 3"},
	{"content-length", "-1"},
	{"content-length", " 3"},
	{"connection", "close"},
	{"transfer-encoding", "chunked"},
	{"te", "trailers"},
	{"te", "gzip"},
	{"x-a", "1\r\nGET /smuggled HTTP/1.1"},
	{"x-b", "v\x00w"},
	{"x-c", "v\nw"},
	{"x_d", "underscore"},
	{"x-trailer", "t"},
	{"X-Upper", "1"},
	{"host", "h"},
	{"host", "other"},
	{"keep-alive", "1"},
	{"upgrade", "websocket"},
	{":path", "/dup"},
	{":status", "200"},
	{"expect", "100-continue"},
	{"content-type", "text/plain"},
	{"x-long", strings.Repeat("l", 300)},
	{"x-sp", " lead"},
	{"x-sp", "trail\t"},
	{"proxy-connection", "keep-alive"},
	{"", "empty name"},
	{"x-h", "GET / HTTP/1.1"},
}

var h2Methods = []string{"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS", "G ET", "GET\r\n"}
var h2PathTails = []string{"", "?q=1", "/a/../b", "%0d%0aGET%20/smuggled", "\r\nGET /smuggled HTTP/1.1", " HTTP/1.1", "#f", "\x00"}

// h2Payload is where a DATA frame's bytes come from: an HTTP/1.1 request and a chunked body's
// end among them.
const h2Payload = "0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: h\r\ncontent-length: 5\r\n\r\nxxxxxGET /smuggled2 HTTP/1.1\r\nhost: h\r\n\r\n"

// h2Client is what the client of one program did and saw.
type h2ClientState struct {
	mu sync.Mutex
	// opened: the streams the client began with a request's header block, by the tag of the
	// target it gave (h2Tag); length, the content-length it gave (-1 none); data, what it sent on them
	// before it ended them; ended, whether it ended them (END_STREAM).
	opened map[string]uint32
	length map[uint32]int64
	data   map[uint32][]byte
	ended  map[uint32]bool
	// answers: the X-Seq of the backend's answer each stream got (the proxy's own have none).
	answers map[uint32][]int
	// done: streams the proxy ended (END_STREAM or RST_STREAM); over: the connection ended.
	done map[uint32]bool
	over bool
}

// runH2Program runs program on c, reads what the proxy sends until c ends, and returns what
// the client did and saw. After the program, it waits (up to 200 ms) for the answers to the
// streams the client ended, then closes c.
func runH2Program(c net.Conn, program []byte) *h2ClientState {
	cl := &h2ClientState{opened: map[string]uint32{}, length: map[uint32]int64{}, data: map[uint32][]byte{},
		ended: map[uint32]bool{}, answers: map[uint32][]int{}, done: map[uint32]bool{}}
	var out bytes.Buffer
	var wmu sync.Mutex // c's write side: the program's and the reader's SETTINGS and PING acks
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	flush := func() {
		wmu.Lock()
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Write(out.Bytes())
		out.Reset()
		wmu.Unlock()
	}
	out.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	flush()

	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		rfr := http2.NewFramer(io.Discard, c)
		rfr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		rfr.MaxHeaderListSize = 1 << 20
		var acks bytes.Buffer
		afr := http2.NewFramer(&acks, nil)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			f, err := rfr.ReadFrame()
			if err != nil {
				if _, ok := err.(http2.StreamError); ok {
					continue
				}
				cl.mu.Lock()
				cl.over = true
				cl.mu.Unlock()
				return
			}
			id := f.Header().StreamID
			cl.mu.Lock()
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					_ = afr.WriteSettingsAck()
				}
			case *http2.PingFrame:
				if !f.IsAck() {
					_ = afr.WritePing(true, f.Data)
				}
			case *http2.MetaHeadersFrame:
				for _, hf := range f.RegularFields() {
					if hf.Name == "x-seq" {
						n, _ := strconv.Atoi(hf.Value)
						cl.answers[id] = append(cl.answers[id], n)
					}
				}
				if f.StreamEnded() {
					cl.done[id] = true
				}
			case *http2.DataFrame:
				if f.StreamEnded() {
					cl.done[id] = true
				}
				if n := len(f.Data()); n > 0 { // keep the proxy's answers flowing
					_ = afr.WriteWindowUpdate(0, uint32(n))
					_ = afr.WriteWindowUpdate(id, uint32(n))
				}
			case *http2.RSTStreamFrame:
				cl.done[id] = true
			case *http2.GoAwayFrame:
				cl.over = true
			}
			cl.mu.Unlock()
			if acks.Len() > 0 {
				wmu.Lock()
				_, _ = c.Write(acks.Bytes())
				wmu.Unlock()
				acks.Reset()
			}
		}
	}()

	p := h2Program{b: program}
	var last, next uint32 = 0, 1
	var lastBlock []byte // what a CONTINUATION sends: the rest of the last block
	pauses := 0
	cl.mu.Lock()
	for ops := 0; p.more() && ops < 64; ops++ {
		op := p.byte() % opCount
		switch op {
		case opHeaders, opData, opContinuation, opRST, opWindow, opPriority:
			id := p.streamID(&last, &next)
			switch op {
			case opHeaders:
				flags := p.byte()
				variant := p.byte()
				n := int(p.byte() % 5)
				hbuf.Reset()
				request := variant&0x40 == 0 // else a trailer block
				path := ""
				if request {
					method := h2Methods[variant&7]
					if variant&0x80 != 0 {
						method = h2Methods[0]
					}
					path = "/s" + strconv.Itoa(int(id)) + "-" + strconv.Itoa(p.at) + h2PathTails[variant>>3&7]
					_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: method})
					if flags&0x02 == 0 { // a flag HEADERS does not define
						_ = enc.WriteField(hpack.HeaderField{Name: ":scheme", Value: "http"})
					}
					_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: "h"})
					_ = enc.WriteField(hpack.HeaderField{Name: ":path", Value: path})
				}
				length := int64(-1)
				for range n {
					fld := h2Fields[int(p.byte())%len(h2Fields)]
					_ = enc.WriteField(hpack.HeaderField{Name: fld[0], Value: fld[1]})
					if fld[0] == "content-length" {
						// Repeated with the same value, one length (RFC 9110 §8.6, as net/http
						// takes it); invalid or different, the proxy must refuse the stream.
						if v, err := strconv.ParseInt(fld[1], 10, 64); err == nil && v >= 0 && (length == -1 || length == v) {
							length = v
						} else {
							length = -2
						}
					}
				}
				block := append([]byte(nil), hbuf.Bytes()...)
				endHeaders := flags&0x04 != 0
				split := len(block)
				if !endHeaders {
					split = len(block) / 2
				}
				lastBlock = block[split:]
				pad := []byte(nil)
				if flags&0x08 != 0 {
					pad = make([]byte, int(flags>>4))
				}
				_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:split], EndStream: flags&0x01 != 0,
					EndHeaders: endHeaders, PadLength: uint8(len(pad)), Priority: http2.PriorityParam{StreamDep: uint32(flags>>6) * 2, Weight: flags}})
				if request && path != "" {
					if _, seen := cl.length[id]; !seen && !cl.ended[id] {
						cl.opened[h2Tag(path)] = id
						cl.length[id] = length
					}
				}
				if flags&0x01 != 0 {
					cl.ended[id] = true
				}
			case opData:
				flags := p.byte()
				n := int(p.byte()) % 70
				off := int(p.byte()) % len(h2Payload)
				data := []byte(strings.Repeat(h2Payload, 2)[off : off+n%len(h2Payload)])
				if flags&0x08 != 0 {
					_ = fr.WriteDataPadded(id, flags&0x01 != 0, data, make([]byte, int(flags>>4)))
				} else {
					_ = fr.WriteData(id, flags&0x01 != 0, data)
				}
				if !cl.ended[id] {
					cl.data[id] = append(cl.data[id], data...)
				}
				if flags&0x01 != 0 {
					cl.ended[id] = true
				}
			case opContinuation:
				flags := p.byte()
				_ = fr.WriteContinuation(id, flags&0x04 != 0, lastBlock)
				lastBlock = nil
			case opRST:
				_ = fr.WriteRSTStream(id, http2.ErrCode(p.byte()%14))
				cl.done[id] = true // no answer to wait for
			case opWindow:
				_ = fr.WriteWindowUpdate(id, []uint32{0, 1, 65535, 1<<31 - 1}[p.byte()%4])
			case opPriority:
				_ = fr.WritePriority(id, http2.PriorityParam{StreamDep: uint32(p.byte() % 8), Weight: 16})
			}
		case opSettings:
			s := []http2.Setting{
				{ID: http2.SettingInitialWindowSize, Val: 0},
				{ID: http2.SettingInitialWindowSize, Val: 1},
				{ID: http2.SettingInitialWindowSize, Val: 1 << 31},
				{ID: http2.SettingMaxFrameSize, Val: 16383},
				{ID: http2.SettingMaxFrameSize, Val: 1<<24 - 1},
				{ID: http2.SettingHeaderTableSize, Val: 0},
				{ID: http2.SettingEnablePush, Val: 2},
				{ID: http2.SettingMaxConcurrentStreams, Val: 0},
				{ID: http2.SettingMaxHeaderListSize, Val: 10},
			}
			if k := int(p.byte()); k < len(s) {
				_ = fr.WriteSettings(s[k])
			} else if k%2 == 0 {
				_ = fr.WriteSettingsAck()
			}
		case opPing:
			_ = fr.WritePing(p.byte()&1 != 0, [8]byte{1})
		case opGoAway:
			_ = fr.WriteGoAway(last, http2.ErrCode(p.byte()%14), nil)
		case opRaw:
			n := int(p.byte()) % 32
			for range n {
				out.WriteByte(p.byte())
			}
		case opPause:
			if pauses < 4 {
				pauses++
				cl.mu.Unlock()
				flush()
				time.Sleep(2 * time.Millisecond)
				cl.mu.Lock()
			}
		}
	}
	// Room for the answers, whatever windows the program left (an answer waiting for a window
	// update would hold the wait below to its end).
	_ = fr.WriteWindowUpdate(0, 1<<16)
	for _, id := range cl.opened {
		_ = fr.WriteWindowUpdate(id, 1<<16)
	}
	cl.mu.Unlock()
	flush()

	// Wait for the streams the client ended to be answered (or the connection's end): the
	// backend answers at once, and a stream still waiting for its header block's end or for
	// more window than it got is not waited for long.
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); time.Sleep(200 * time.Microsecond) {
		cl.mu.Lock()
		waiting := false
		for _, id := range cl.opened {
			if cl.ended[id] && !cl.done[id] {
				waiting = true
			}
		}
		over := cl.over
		cl.mu.Unlock()
		if !waiting || over {
			break
		}
	}
	c.Close()
	<-readerDone
	return cl
}

// check compares what the backend received with what the client sent and saw; "" if they
// agree.
func (cl *h2ClientState) check(b *fuzzBackend) string {
	b.mu.Lock()
	reqs, bad := append([]fuzzRequest(nil), b.reqs...), append([]string(nil), b.bad...)
	b.mu.Unlock()
	if len(bad) > 0 {
		return fmt.Sprintf("the backend received malformed requests: %q", bad)
	}
	streamOf := make([]uint32, len(reqs))
	seen := map[uint32]bool{}
	for i, r := range reqs {
		id, ok := cl.opened[h2Tag(r.target)]
		if !ok {
			return fmt.Sprintf("the backend received %q, which no stream asked for (streams %v)", r.target, cl.opened)
		}
		if seen[id] {
			return fmt.Sprintf("the backend received stream %d's request twice", id)
		}
		seen[id], streamOf[i] = true, id
		sent := cl.data[id]
		if !bytes.HasPrefix(sent, []byte(r.body)) {
			return fmt.Sprintf("stream %d: the backend received the body %q, the client sent %q", id, r.body, sent)
		}
		whole := cl.ended[id] && len(r.body) == len(sent)
		if !whole && (r.length < 0 || cl.length[id] != r.length) {
			return fmt.Sprintf("stream %d: the backend received a complete body %q (length %d) where the client sent %q (content-length %d, ended %v)",
				id, r.body, r.length, sent, cl.length[id], cl.ended[id])
		}
	}
	for id, seqs := range cl.answers {
		if len(seqs) > 1 {
			return fmt.Sprintf("stream %d got answers %v", id, seqs)
		}
		if seqs[0] >= len(reqs) || streamOf[seqs[0]] != id {
			return fmt.Sprintf("stream %d got the answer to request %d of %d (%v)", id, seqs[0], len(reqs), reqs)
		}
	}
	return ""
}

// h2Tag is the part of a request's target that names its stream ("/s<id>-<n>"), what follows
// it being the proxy's to normalize; "" if there is none.
func h2Tag(target string) string {
	n := strings.IndexByte(target, '-')
	if !strings.HasPrefix(target, "/s") || n < 0 {
		return ""
	}
	end := n + 1
	for end < len(target) && '0' <= target[end] && target[end] <= '9' {
		end++
	}
	return target[:end]
}

// h2Program reads a program's bytes; past its end every byte is 0.
type h2Program struct {
	b  []byte
	at int
}

func (p *h2Program) more() bool { return p.at < len(p.b) }

func (p *h2Program) byte() byte {
	if p.at >= len(p.b) {
		p.at++
		return 0
	}
	p.at++
	return p.b[p.at-1]
}

// streamID picks the stream an operation goes to: a new one (the next odd id), the last
// opened, the first, one skipped ahead, 0, an even one, the largest.
func (p *h2Program) streamID(last, next *uint32) uint32 {
	switch p.byte() % 8 {
	case 0, 1:
		if *next > 1<<31-2 {
			return *last
		}
		*last = *next
		*next += 2
		return *last
	case 2, 3:
		return *last
	case 4:
		return 1
	case 5:
		*last = *next + 4
		*next += 6
		return *last
	case 6:
		return 0
	default:
		return []uint32{2, 1<<31 - 1}[p.at%2]
	}
}

// h2Dial opens an HTTP/2 connection to h: h2 over TLS, or cleartext.
func h2Dial(h *harness, tlsOn bool) (net.Conn, error) {
	if tlsOn {
		return tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"h2"}})
	}
	return net.Dial("tcp", h.http)
}

// h2Get asks for path on a new HTTP/2 connection c, and returns the answer's status and body.
func h2Get(c net.Conn, path string) (int, string, error) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var out bytes.Buffer
	fr := http2.NewFramer(&out, bufio.NewReader(c))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	for _, hf := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "h"}, {":path", path}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	out.WriteString(http2.ClientPreface)
	_ = fr.WriteSettings()
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hbuf.Bytes(), EndStream: true, EndHeaders: true})
	if _, err := c.Write(out.Bytes()); err != nil {
		return 0, "", err
	}
	status, body := 0, ""
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return status, body, err
		}
		if f.Header().StreamID != 1 {
			if g, ok := f.(*http2.GoAwayFrame); ok {
				return status, body, fmt.Errorf("GOAWAY %v", g.ErrCode)
			}
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status, _ = strconv.Atoi(f.PseudoValue("status"))
			if f.StreamEnded() {
				return status, body, nil
			}
		case *http2.DataFrame:
			body += string(f.Data())
			if f.StreamEnded() {
				return status, body, nil
			}
		case *http2.RSTStreamFrame:
			return status, body, fmt.Errorf("RST_STREAM %v", f.ErrCode)
		}
	}
}

// h2GoroutinesEnd waits, up to limit, until no goroutine serves an HTTP/2 connection or
// stream (streamGoroutines, with stacks as its buffer), and reports whether that came.
func h2GoroutinesEnd(stacks []byte, limit time.Duration) bool {
	for end := time.Now().Add(limit); ; time.Sleep(200 * time.Microsecond) {
		n := 0
		for g := range strings.SplitSeq(string(stacks[:runtime.Stack(stacks, true)]), "\n\n") {
			if strings.Contains(g, "proxy.(*h2Stream)") || strings.Contains(g, "proxy.(*h2Conn)") || strings.Contains(g, "proxy.(*h1Conn).serveH2") {
				n++
			}
		}
		if n == 0 {
			return true
		}
		if time.Now().After(end) {
			return false
		}
	}
}
