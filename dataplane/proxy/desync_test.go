package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// The differential table: each case is the raw bytes a client sends on one connection and the
// raw answers the backend gives, run against every serving path. It asserts what the backend
// receives (each request as a strict parser reads it, canonicalized: method, target, headers
// sorted, body), what the client receives (each answer's status, framing and body, then
// whether the connection is closed), and that a later client, on another connection, gets
// its own answer and nothing of this exchange.

// servingPath is one way the proxy serves a connection.
type servingPath struct {
	name string
	so   ServerOptions
	tls  bool
	// single: the path answers one request per connection (net/http closes after it).
	single bool
	// h2: the client speaks HTTP/2 (each row's requests sent as streams, see runH2).
	h2 bool
}

var servingPaths = []servingPath{
	{name: "loops", so: ServerOptions{EventLoops: 1}},
	{name: "goroutines", so: ServerOptions{EventLoops: -1}},
	{name: "net/http", so: ServerOptions{NetHTTPOnly: true}, single: true},
	{name: "https/loops", so: ServerOptions{EventLoops: 1}, tls: true},
	{name: "https/goroutines", so: ServerOptions{EventLoops: -1}, tls: true},
	{name: "http2", tls: true, h2: true},
}

type desyncCase struct {
	name string
	// client is what the client sends, all at once.
	client string
	// answers are the backend's raw answers by request target; other requests get an echo:
	// 200, Content-Length, the body "METHOD target".
	answers map[string]string
	// backend is what the backend must receive, canonicalized (see canonRequest).
	backend []string
	// responses are what the client must receive, canonicalized (see canonResponse).
	responses []string
	// closed: the proxy closes the connection after the responses; otherwise a follow-up
	// request on it is answered as its own.
	closed bool
	// head: the client's requests are HEAD (for reading the answers).
	head bool
	// firstBackend is how many of backend's requests the client's first request makes (0: one;
	// -1: none): a path that answers one request per connection expects those only.
	firstBackend int
}

const desyncBodyLimit = 1000

var desyncCases = []desyncCase{
	{
		name:      "plain request",
		client:    "GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Custom: 1\r\n\r\n",
		backend:   []string{"GET /a?b=c\nhost: h\nx-custom: 1\n"},
		responses: []string{`200 length "GET /a?b=c"`},
	},
	{
		name:      "pipelined requests",
		client:    "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc",
		backend:   []string{"GET /1\nhost: h\n", "POST /2\ncontent-length: 3\nhost: h\n\nabc"},
		responses: []string{`200 length "GET /1"`, `200 length "POST /2"`},
	},
	{
		name:      "TE: trailers is sent on (as net/http's ReverseProxy does)",
		client:    "GET /te HTTP/1.1\r\nHost: h\r\nTE: trailers\r\n\r\n",
		backend:   []string{"GET /te\nhost: h\nte: trailers\n"},
		responses: []string{`200 length "GET /te"`},
	},
	{
		name:      "Connection: close",
		client:    "GET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
		backend:   []string{"GET /c\nhost: h\n"},
		responses: []string{`200 length "GET /c"`},
		closed:    true,
	},
	{
		name:      "Connection names Content-Length: the body stays a body",
		client:    "POST /p HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 35\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
		backend:   []string{"POST /p\ncontent-length: 35\nhost: h\n\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"},
		responses: []string{`200 length "POST /p"`},
	},
	{
		name:      "Connection names Host: the backend still gets it",
		client:    "GET /h HTTP/1.1\r\nHost: h\r\nConnection: Host\r\n\r\n",
		backend:   []string{"GET /h\nhost: h\n"},
		responses: []string{`200 length "GET /h"`},
	},
	{
		name:      "Connection names X-Request-Id: it is kept",
		client:    "GET /r HTTP/1.1\r\nHost: h\r\nConnection: X-Request-Id, X-Hop\r\nX-Request-Id: abc\r\nX-Hop: 1\r\n\r\n",
		backend:   []string{"GET /r\nhost: h\nx-request-id: abc\n"},
		responses: []string{`200 length "GET /r"`},
	},
	{
		name:      "Content-Length with Transfer-Encoding: 400, closed",
		client:    "POST /te HTTP/1.1\r\nHost: h\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
		responses: []string{`400 length`},
		closed:    true,
	},
	{
		name:      "Transfer-Encoding on HTTP/1.0: 400, closed",
		client:    "POST /te10 HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n",
		responses: []string{`400 length`},
		closed:    true,
	},
	{
		name:      "Transfer-Encoding after Content-Length, lower case: 400, closed",
		client:    "POST /te2 HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
		responses: []string{`400 length`},
		closed:    true,
	},
	{
		name:      "HEAD answered with a body: the stray bytes reach nobody",
		client:    "HEAD /head HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/head": "HTTP/1.1 200 OK\r\nContent-Length: 37\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"HEAD /head\nhost: h\n"},
		responses: []string{`200 length ""`},
		head:      true,
	},
	{
		name:      "204 with a body",
		client:    "GET /204 HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/204": "HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /204\nhost: h\n"},
		responses: []string{`204 none ""`},
	},
	{
		name:      "304 with a body",
		client:    "GET /304 HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/304": "HTTP/1.1 304 Not Modified\r\nContent-Length: 37\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /304\nhost: h\n"},
		responses: []string{`304 none ""`},
	},
	{
		name:      "a body longer than its Content-Length",
		client:    "GET /long HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/long": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /long\nhost: h\n"},
		responses: []string{`200 length "ok"`},
	},
	{
		name:      "an answer with Content-Length and Transfer-Encoding: chunked wins, the connection is not reused",
		client:    "GET /clte HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/clte": "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /clte\nhost: h\n"},
		responses: []string{`200 chunked "hello"`},
	},
	{
		name:      "HEAD answered with a body that comes late",
		client:    "HEAD /head-late HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/head-late": "HTTP/1.1 200 OK\r\nContent-Length: 37\r\n\r\n" + later + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"HEAD /head-late\nhost: h\n"},
		responses: []string{`200 length ""`},
		head:      true,
	},
	{
		name:      "HEAD answered with a body that comes after the next request",
		client:    "HEAD /head-much-later HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/head-much-later": "HTTP/1.1 200 OK\r\nContent-Length: 37\r\n\r\n" + muchLater + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"HEAD /head-much-later\nhost: h\n"},
		responses: []string{`200 length ""`},
		head:      true,
	},
	{
		name:      "204 with a body that comes late",
		client:    "GET /204-late HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/204-late": "HTTP/1.1 204 No Content\r\n\r\n" + later + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /204-late\nhost: h\n"},
		responses: []string{`204 none ""`},
	},
	{
		name:      "an answer with Content-Length and Transfer-Encoding, stray bytes late",
		client:    "GET /clte-late HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/clte-late": "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + later + "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned"},
		backend:   []string{"GET /clte-late\nhost: h\n"},
		responses: []string{`200 chunked "hello"`},
	},
	{
		name:      "an answer whose Connection names Content-Length keeps its framing",
		client:    "GET /cl HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/cl": "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 5\r\n\r\nhello"},
		backend:   []string{"GET /cl\nhost: h\n"},
		responses: []string{`200 length "hello"`},
	},
	{
		name:      "an informational answer goes on before the final one",
		client:    "GET /103 HTTP/1.1\r\nHost: h\r\n\r\n",
		answers:   map[string]string{"/103": "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		backend:   []string{"GET /103\nhost: h\n"},
		responses: []string{`103 length ""`, `200 length "ok"`},
	},
	{
		name:      "Expect: 100-continue is answered by the proxy, not forwarded",
		client:    "PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\nok",
		backend:   []string{"PUT /x\ncontent-length: 2\nhost: h\n\nok"},
		responses: []string{`100 length ""`, `200 length "PUT /x"`},
	},
	{
		name:      "Expect: 100-continue with a body over the limit: 413 without 100, closed",
		client:    fmt.Sprintf("PUT /big-expect HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", desyncBodyLimit+1),
		responses: []string{`413 length`},
		closed:    true,
	},
	{
		name:      "Expect: 100-continue for no route: 404 without 100, closed",
		client:    "PUT /x HTTP/1.1\r\nHost: nowhere\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
		responses: []string{`404 length`},
		closed:    true,
	},
	{
		name:      "header names with underscores are dropped",
		client:    "GET /u HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX-Ok: 1\r\n\r\n",
		backend:   []string{"GET /u\nhost: h\nx-ok: 1\n"},
		responses: []string{`200 length "GET /u"`},
	},
	{
		name: "the client's forwarding headers never reach the backend (no trusted proxies)",
		client: "GET /f HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7\r\n" +
			"Forwarded: for=6.6.6.6\r\nX-Forwarded-Host: evil\r\n\r\n",
		backend:   []string{"GET /f\nhost: h\n"},
		responses: []string{`200 length "GET /f"`},
	},
	{
		name:      "empty lines before a request are ignored",
		client:    "\r\n\r\nGET /e HTTP/1.1\r\nHost: h\r\n\r\n",
		backend:   []string{"GET /e\nhost: h\n"},
		responses: []string{`200 length "GET /e"`},
	},
	{
		name:      "a short HTTP/1.0 request is answered at once",
		client:    "GET / HTTP/1.0\r\nHost: h\r\n\r\n",
		backend:   []string{"GET /\nhost: h\n"},
		responses: []string{`200 length "GET /"`},
		closed:    true, // HTTP/1.0 without keep-alive
	},
	// Route policy (the Ingresses of newDesyncHarness for hosts p, r and deny): applied the
	// same on every path.
	{
		name:   "policy: regex rewrite with captures, upstream host, header modifiers both ways",
		client: "GET /old/x?q=1 HTTP/1.1\r\nHost: p\r\nX-P-Drop: 1\r\nX-P-Set: client\r\nX-P-Keep: k\r\n\r\n",
		answers: map[string]string{
			"/new/x": "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-P-Secret: s\r\nX-P-Resp: backend\r\n\r\nok",
		},
		backend:   []string{"GET /new/x?q=1\nhost: internal.svc\nx-forwarded-prefix: /old\nx-p-add: a\nx-p-keep: k\nx-p-set: 1\n"},
		responses: []string{`200 length "ok"|x-p-resp=policy`},
	},
	{
		name:      "policy: an empty capture, a rewrite target escaped",
		client:    "GET /OLD HTTP/1.1\r\nHost: p\r\n\r\nGET /old/a%3Fb HTTP/1.1\r\nHost: p\r\n\r\n",
		backend:   []string{"GET /new/\nhost: internal.svc\nx-forwarded-prefix: /old\nx-p-add: a\nx-p-set: 1\n", "GET /new/a%3Fb\nhost: internal.svc\nx-forwarded-prefix: /old\nx-p-add: a\nx-p-set: 1\n"},
		responses: []string{`200 length "GET /new/"|x-p-resp=policy`, `200 length "GET /new/a%3Fb"|x-p-resp=policy`},
	},
	{
		name:      "policy: a route's own body limit: 413, closed",
		client:    "POST /old/b HTTP/1.1\r\nHost: p\r\nContent-Length: 10\r\n\r\n0123456789",
		responses: []string{`413 length`},
		closed:    true,
	},
	{
		name:      "policy: a fixed redirect, nothing forwarded",
		client:    "GET /any?x=1 HTTP/1.1\r\nHost: r\r\n\r\n",
		responses: []string{`308 length|location=https://example.org/moved`},
	},
	{
		name:      "policy: a source range refuses (403)",
		client:    "GET / HTTP/1.1\r\nHost: deny\r\n\r\n",
		responses: []string{`403 length`},
	},
	{
		// The proxy's own 204 has no body: the next request on the connection is read whole.
		name:         "policy: a CORS preflight is answered 204 without a body, then the next request is served",
		client:       "OPTIONS /pre HTTP/1.1\r\nHost: cors\r\nOrigin: https://x.test\r\n\r\nGET /after HTTP/1.1\r\nHost: cors\r\nOrigin: https://x.test\r\n\r\n",
		backend:      []string{"GET /after\nhost: cors\norigin: https://x.test\n"},
		responses:    []string{`204 none ""`, `200 length "GET /after"`},
		firstBackend: -1, // net/http serves the preflight alone: nothing reaches the backend
	},
	{
		name:      "policy: basic auth's credentials do not reach the backend; a wrong one is 401",
		client:    "GET /in HTTP/1.1\r\nHost: basic\r\nAuthorization: Basic YWxpY2U6d29uZGVybGFuZA==\r\n\r\nGET /out HTTP/1.1\r\nHost: basic\r\nAuthorization: Basic YWxpY2U6bm8=\r\n\r\n",
		backend:   []string{"GET /in\nhost: basic\n"},
		responses: []string{`200 length "GET /in"`, `401 length`},
	},
	{
		// The intercepted answer's body is never read: its connection is closed, and nothing of
		// it reaches this client or the next one (the victims below).
		name:   "policy: custom-http-errors: an intercepted 404 replaced by the error backend's answer to GET /",
		client: "GET /e404?x=1 HTTP/1.1\r\nHost: e\r\n\r\n",
		answers: map[string]string{
			"/e404": "HTTP/1.1 404 Not Found\r\nContent-Length: 20\r\n\r\nthe backend's 404 ..",
		},
		backend: []string{"GET /e404?x=1\nhost: e\n",
			"GET /?x=1\nhost: e\nx-code: 404\nx-ingress-name: e\nx-namespace: ns\nx-original-uri: /e404?x=1\nx-service-name: raw\nx-service-port: 80\n"},
		responses:    []string{`200 length "GET /?x=1"`},
		firstBackend: 2,
	},
	{
		name:      "a body over the size limit: 413, closed",
		client:    fmt.Sprintf("POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s", desyncBodyLimit+1, strings.Repeat("x", desyncBodyLimit+1)),
		responses: []string{`413 length`},
		closed:    true,
	},
	{
		name:      "a chunked body over the size limit: 413, closed",
		client:    "POST /bigc HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", desyncBodyLimit+1, strings.Repeat("x", desyncBodyLimit+1)),
		responses: []string{`413 length`},
		closed:    true,
	},
	{
		name:      "a chunked body within the limit",
		client:    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
		backend:   []string{"POST /c\nhost: h\ntransfer-encoding: chunked\n\nabc"},
		responses: []string{`200 length "POST /c"`},
	},
	{
		name:      "a malformed chunked body: 400, closed",
		client:    "POST /badc HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
		responses: []string{`400 length`},
		closed:    true,
	},
	{
		name:      "Transfer-Encoding other than chunked: refused, closed",
		client:    "POST /gz HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		responses: []string{`501 close`}, // net/http's own answer
		closed:    true,
	},
	{
		name:      "a stalled body: 408, closed",
		client:    "POST /stall HTTP/1.1\r\nHost: h\r\nContent-Length: 20\r\n\r\nhalf",
		responses: []string{`408 length`},
		closed:    true,
	},
	{
		name:      "a stalled long body: 408, closed",
		client:    "POST /stall-long HTTP/1.1\r\nHost: h\r\nContent-Length: 900\r\n\r\nhalf",
		responses: []string{`408 length`},
		closed:    true,
	},
	{
		name:      "a stalled chunked body: 408, closed",
		client:    "POST /stall-chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nhalf",
		responses: []string{`408 length`},
		closed:    true,
	},
}

// later in a backend answer: what follows is sent 50 ms after what precedes it; muchLater:
// 400 ms after, when the next client's request has gone out.
const (
	later     = "\x00later\x00"
	muchLater = "\x00muchlater\x00"
)

// desyncBodyTimeout is the fleet's body timeout in the differential test.
const desyncBodyTimeout = 500 * time.Millisecond

// rawRecordingBackend reads requests with net/http's strict parser and answers each from
// answers by target, else with an echo; it records every request it read whole.
type rawRecordingBackend struct {
	mu      sync.Mutex
	got     []string
	answers map[string]string
}

func (b *rawRecordingBackend) serve(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		r, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		b.mu.Lock()
		b.got = append(b.got, canonRequest(r, body))
		answer, ok := b.answers[r.URL.Path]
		b.mu.Unlock()
		if !ok {
			echo := r.Method + " " + r.RequestURI
			answer = fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(echo), echo)
		}
		delay := 50 * time.Millisecond
		now, rest, late := strings.Cut(answer, later)
		if !late {
			now, rest, late = strings.Cut(answer, muchLater)
			delay = 400 * time.Millisecond
		}
		if _, err := io.WriteString(c, now); err != nil {
			return
		}
		if late {
			time.Sleep(delay)
			if _, err := io.WriteString(c, rest); err != nil {
				return
			}
		}
	}
}

func (b *rawRecordingBackend) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	got := b.got
	b.got = nil
	return got
}

// canonRequest is a request as the backend read it: "METHOD target", then the headers as
// "name: value" lines, lower case and sorted, then a blank line and the body when there is
// one. The proxy's own headers (X-Forwarded-*; X-Forwarded-For and X-Real-IP when they name
// the peer, 127.0.0.1) and a generated X-Request-Id are left out.
func canonRequest(r *http.Request, body []byte) string {
	lines := []string{"host: " + r.Host}
	for k, vs := range r.Header {
		k = strings.ToLower(k)
		if (strings.HasPrefix(k, "x-forwarded-") && k != "x-forwarded-prefix" && k != "x-forwarded-for") || (k == "x-request-id" && strings.Contains(vs[0], "-")) {
			continue
		}
		if (k == "x-real-ip" || k == "x-forwarded-for") && len(vs) == 1 && vs[0] == "127.0.0.1" {
			continue // the proxy's own: the client is the peer (anything else would be shown)
		}
		for _, v := range vs {
			lines = append(lines, k+": "+v)
		}
	}
	if len(r.TransferEncoding) > 0 {
		lines = append(lines, "transfer-encoding: "+strings.Join(r.TransferEncoding, ","))
	}
	sort.Strings(lines)
	s := r.Method + " " + r.RequestURI + "\n" + strings.Join(lines, "\n") + "\n"
	if len(body) > 0 {
		s += "\n" + string(body)
	}
	return s
}

// canonResponse is an answer as the client read it: status, framing (length, chunked, close,
// none), and the body, left out of the proxy's own error answers (status >= 400 with no body
// wanted).
func canonResponse(resp *http.Response, body []byte, withBody bool) string {
	framing := "close"
	switch {
	case resp.StatusCode == 204 || resp.StatusCode == 304:
		framing = "none"
	case len(resp.TransferEncoding) > 0:
		framing = "chunked"
	case resp.ContentLength >= 0 || resp.Request.Method == http.MethodHead:
		framing = "length"
	}
	if !withBody {
		return fmt.Sprintf("%d %s", resp.StatusCode, framing) + canonHeaders(resp.Header)
	}
	return fmt.Sprintf("%d %s %q", resp.StatusCode, framing, body) + canonHeaders(resp.Header)
}

// canonHeaders is what the policy rows check of an answer's headers: Location and the X-P-
// headers, as "|name=value", sorted.
func canonHeaders(h http.Header) string {
	var out []string
	for k, vs := range h {
		if k == "Location" || strings.HasPrefix(k, "X-P-") {
			for _, v := range vs {
				out = append(out, "|"+strings.ToLower(k)+"="+v)
			}
		}
	}
	sort.Strings(out)
	return strings.Join(out, "")
}

// desyncHarness is a proxy on one serving path in front of a recording backend.
type desyncHarness struct {
	*harness
	path    servingPath
	backend *rawRecordingBackend
}

func newDesyncHarness(t *testing.T, p servingPath) *desyncHarness {
	h := &desyncHarness{harness: newHarnessWith(t, Options{}, p.so), path: p, backend: &rawRecordingBackend{}}
	h.in.Config.HTTP = &proxyconfig.HTTP{MaxRequestBodyBytes: ptr.To[int64](desyncBodyLimit), ClientBodyTimeout: desyncBodyTimeout.String()}
	h.tcpBackend("raw", h.backend.serve)
	h.in.Secrets = append(h.in.Secrets, htpasswdSecret(t, "users", shaLine("alice", "wonderland")))
	h.compile(append([]*networkingv1.Ingress{rt.Ingress("ns", "i", 1, rt.Rule("h", "/", rt.Prefix, "raw", 80))}, policyIngresses("raw")...)...)
	return h
}

// policyIngresses are the Ingresses of the differential table's policy rows (hosts p, r, deny,
// e), in front of svc.
func policyIngresses(svc string) []*networkingv1.Ingress {
	a := func(k, v string) rt.IngressOpt { return rt.Annotation("portico.dev/"+k, v) }
	return []*networkingv1.Ingress{
		rt.Ingress("ns", "p", 2, rt.Rule("p", "/old(/|$)(.*)", rt.Prefix, svc, 80),
			a("use-regex", "true"), a("rewrite-target", "/new/$2"), a("x-forwarded-prefix", "/old"),
			a("upstream-vhost", "internal.svc"), a("proxy-body-size", "8"),
			a("request-headers-set", "X-P-Set: 1"), a("request-headers-add", "X-P-Add: a"), a("request-headers-remove", "X-P-Drop"),
			a("response-headers-set", "X-P-Resp: policy"), a("response-headers-remove", "X-P-Secret")),
		rt.Ingress("ns", "r", 3, rt.Rule("r", "/", rt.Prefix, svc, 80),
			a("permanent-redirect", "https://example.org/moved"), a("permanent-redirect-code", "308")),
		rt.Ingress("ns", "deny", 4, rt.Rule("deny", "/", rt.Prefix, svc, 80), a("whitelist-source-range", "10.0.0.0/8")),
		rt.Ingress("ns", "e", 5, rt.Rule("e", "/", rt.Prefix, svc, 80), a("custom-http-errors", "404"), a("default-backend", svc)),
		rt.Ingress("ns", "cors", 6, rt.Rule("cors", "/", rt.Prefix, svc, 80), a("enable-cors", "true")),
		rt.Ingress("ns", "basic", 7, rt.Rule("basic", "/", rt.Prefix, svc, 80), a("auth-type", "basic"), a("auth-secret", "users")),
	}
}

// dial opens a client connection on the harness's serving path.
func (h *desyncHarness) dial(t *testing.T) net.Conn {
	t.Helper()
	var conn net.Conn
	var err error
	if h.path.tls {
		conn, err = tls.Dial("tcp", h.https, &tls.Config{InsecureSkipVerify: true, ServerName: "h", NextProtos: []string{"http/1.1"}})
	} else {
		conn, err = net.Dial("tcp", h.http)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	return conn
}

// readAnswers reads n answers from br; withBody says which to canonicalize with their body.
func readAnswers(br *bufio.Reader, n int, method string, want []string) ([]string, error) {
	var got []string
	for i := 0; i < n; i++ {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return got, fmt.Errorf("answer %d: %w", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return got, fmt.Errorf("answer %d body: %w", i+1, err)
		}
		withBody := i >= len(want) || strings.Count(want[i], " ") > 1
		got = append(got, canonResponse(resp, body, withBody))
	}
	return got, nil
}

// connClosed reports whether the proxy closed conn (no byte comes before it does), waiting up
// to wait; extra holds any byte that came instead.
func connClosed(conn net.Conn, br *bufio.Reader, wait time.Duration) (closed bool, extra []byte) {
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := br.Peek(br.Buffered())
		return false, append([]byte{b}, rest...)
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout()), nil
}

func TestDesyncDifferential(t *testing.T) {
	for _, p := range servingPaths {
		t.Run(p.name, func(t *testing.T) {
			h := newDesyncHarness(t, p)
			for _, tc := range desyncCases {
				t.Run(tc.name, func(t *testing.T) { h.run(t, tc) })
			}
		})
	}
}

func (h *desyncHarness) run(t *testing.T, tc desyncCase) {
	if h.path.h2 {
		h.runH2(t, tc)
		return
	}
	h.backend.mu.Lock()
	h.backend.answers = tc.answers
	h.backend.mu.Unlock()
	h.backend.take()
	wantBackend, wantResponses, wantClosed := slices.Clone(tc.backend), tc.responses, tc.closed
	if h.path.single { // net/http answers the first request only, then closes
		first := 0 // its final answer, after any informational ones
		for first < len(wantResponses)-1 && wantResponses[first][0] == '1' {
			first++
		}
		wantResponses, wantClosed = wantResponses[:first+1], true
		n := tc.firstBackend
		if n == 0 {
			n = 1
		}
		if n = max(n, 0); len(wantBackend) > n {
			wantBackend = wantBackend[:n]
		}
	}
	method := http.MethodGet
	if tc.head {
		method = http.MethodHead
	}

	conn := h.dial(t)
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, tc.client); err != nil {
		t.Fatal(err)
	}
	got, err := readAnswers(br, len(wantResponses), method, wantResponses)
	if err != nil || !slices.Equal(got, wantResponses) {
		t.Fatalf("client got %q (%v), want %q", got, err, wantResponses)
	}
	closed, extra := connClosed(conn, br, 200*time.Millisecond)
	if len(extra) > 0 {
		t.Fatalf("client got bytes past its answers: %q", extra)
	}
	if closed != wantClosed {
		t.Fatalf("connection closed: %v, want %v", closed, wantClosed)
	}
	if !closed { // the connection still frames requests as the client does
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(conn, "GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
		got, err := readAnswers(br, 1, http.MethodGet, nil)
		if err != nil || got[0] != `200 length "GET /after"` {
			t.Fatalf("follow-up on the same connection: %q %v", got, err)
		}
		wantBackend = append(wantBackend, "GET /after\nhost: h\n")
	}

	// Another client, on a connection of its own, gets its own answer (on the loops path the
	// same loop serves it, and on every path the same upstream pool). It comes after the
	// backend's late bytes (see later): bytes that come after the next request went out cannot
	// be told from its answer.
	time.Sleep(100 * time.Millisecond)
	victim := h.dial(t)
	vbr := bufio.NewReader(victim)
	victims := 2
	if h.path.single {
		victims = 1
	}
	for i := 0; i < victims; i++ {
		_, _ = io.WriteString(victim, "GET /victim HTTP/1.1\r\nHost: h\r\n\r\n")
		got, err := readAnswers(vbr, 1, http.MethodGet, nil)
		if err != nil || got[0] != `200 length "GET /victim"` {
			t.Fatalf("another client got %q %v, want its own answer", got, err)
		}
		wantBackend = append(wantBackend, "GET /victim\nhost: h\n")
	}
	if gotBackend := h.backend.take(); !slices.Equal(gotBackend, wantBackend) {
		t.Fatalf("backend received:\n%s\nwant:\n%s", strings.Join(gotBackend, "--\n"), strings.Join(wantBackend, "--\n"))
	}
}

// h2Request is a row's request as an HTTP/2 client sends it.
type h2Request struct {
	method, target, host string
	header               http.Header
	body                 []byte
	length               int64 // -1: no content-length
	stalls               bool  // the body stops short and waits
}

// h2Requests reads a row's client bytes as the requests an HTTP/2 client would send, or says
// why the row has no HTTP/2 form: connection-specific fields, HTTP/1.0, Expect, bytes that do
// not parse as requests, bodies that are malformed rather than short.
func h2Requests(raw string) ([]h2Request, string) {
	br := bufio.NewReader(strings.NewReader(raw))
	var reqs []h2Request
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return reqs, ""
		}
		head, _ := br.Peek(br.Buffered())
		if end := bytes.Index(head, []byte("\r\n\r\n")); end > 0 {
			h := strings.ToLower(string(head[:end]))
			if strings.Contains(h, "\ncontent-length:") && strings.Contains(h, "\ntransfer-encoding:") {
				return nil, "Content-Length with Transfer-Encoding is an HTTP/1.1 framing conflict"
			}
		}
		r, err := http.ReadRequest(br)
		if err != nil {
			return nil, "does not parse: " + err.Error()
		}
		if r.ProtoMinor == 0 {
			return nil, "HTTP/1.0"
		}
		for _, k := range []string{"Connection", "Transfer-Encoding", "Te", "Upgrade", "Keep-Alive", "Proxy-Connection", "Expect"} {
			if k == "Te" && r.Header.Get("Te") == "trailers" {
				continue // the one TE HTTP/2 allows
			}
			if _, ok := r.Header[k]; ok {
				return nil, k + " is connection-specific in HTTP/2"
			}
		}
		body, err := io.ReadAll(r.Body)
		stalls := false
		if err != nil {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, "malformed body: " + err.Error()
			}
			stalls = true
		}
		length := r.ContentLength
		if len(r.TransferEncoding) > 0 {
			length = -1
		}
		reqs = append(reqs, h2Request{method: r.Method, target: r.RequestURI, host: r.Host, header: r.Header, body: body, length: length, stalls: stalls})
	}
}

// stallingBody gives its bytes, then waits until released, as a client whose body stops.
type stallingBody struct {
	r       io.Reader
	release chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if n, err := b.r.Read(p); err != io.EOF {
		return n, err
	}
	<-b.release
	return 0, io.ErrUnexpectedEOF
}

// runH2 runs a row over HTTP/2: its requests as streams of one connection, one after another;
// what the backend receives and what the client gets must be what the HTTP/1.1 paths give
// (framing aside: HTTP/2 has none to compare, and no informational answers reach Go's client),
// and a follow-up stream on the connection, then another client, get their own answers.
func (h *desyncHarness) runH2(t *testing.T, tc desyncCase) {
	reqs, why := h2Requests(tc.client)
	if why != "" {
		t.Skip("no HTTP/2 form: " + why)
	}
	h.backend.mu.Lock()
	h.backend.answers = tc.answers
	h.backend.mu.Unlock()
	h.backend.take()
	release := make(chan struct{})
	defer close(release)
	newClient := func() *http.Client {
		c := h2Client(&tls.Config{InsecureSkipVerify: true, ServerName: "h"})
		c.Timeout = 5 * time.Second
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		return c
	}
	do := func(c *http.Client, r h2Request) (string, error) {
		var body io.Reader
		if len(r.body) > 0 || r.stalls {
			body = bytes.NewReader(r.body)
			if r.stalls {
				body = &stallingBody{r: body, release: release}
			}
		}
		req, err := http.NewRequest(r.method, "https://"+h.https+r.target, body)
		if err != nil {
			return "", err
		}
		req.Host, req.ContentLength = r.host, r.length
		for k, vs := range r.header {
			req.Header[k] = vs
		}
		req.Header.Set("User-Agent", "") // Go's client sends none then
		resp, err := c.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d\x00%q", resp.StatusCode, b) + canonHeaders(resp.Header), nil
	}
	var want []string // the HTTP/1.1 answers without their framing or informational ones
	for _, w := range tc.responses {
		if w[0] == '1' {
			continue
		}
		f := strings.SplitN(w, " ", 3)
		if len(f) == 3 {
			want = append(want, f[0]+" "+f[2])
		} else {
			_, hdrs, _ := strings.Cut(f[1], "|")
			if hdrs != "" {
				hdrs = "|" + hdrs
			}
			want = append(want, f[0]+hdrs)
		}
	}
	c := newClient()
	var got []string
	for i, r := range reqs {
		g, err := do(c, r)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		status, rest, _ := strings.Cut(g, "\x00")
		if i < len(want) && !strings.Contains(want[i], " ") {
			// the proxy's own answer: its status and headers
			g = status
			if j := strings.Index(rest, "\"|"); j >= 0 {
				g += rest[j+1:]
			}
		} else {
			g = status + " " + rest
		}
		got = append(got, g)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("client got %q, want %q", got, want)
	}
	wantBackend := slices.Clone(tc.backend)
	time.Sleep(200 * time.Millisecond) // as the HTTP/1.1 paths wait to see the connection close
	for _, c := range []*http.Client{c, newClient(), newClient()} {
		target := "/victim"
		if len(wantBackend) == len(tc.backend) {
			target = "/after" // on the same connection
		}
		g, err := do(c, h2Request{method: "GET", target: target, host: "h", length: -1})
		if want := fmt.Sprintf("200\x00%q", "GET "+target); err != nil || g != want {
			t.Fatalf("%s: got %q %v, want %q", target, g, err, want)
		}
		wantBackend = append(wantBackend, "GET "+target+"\nhost: h\n")
	}
	if gotBackend := h.backend.take(); !slices.Equal(gotBackend, wantBackend) {
		t.Fatalf("backend received:\n%s\nwant:\n%s", strings.Join(gotBackend, "--\n"), strings.Join(wantBackend, "--\n"))
	}
}

// TestHalfClosedClientGetsNoInventedAnswer: a client that shuts its side after its request
// gets the backend's answer or none (the connection closes, as nginx closes it: 499), never
// an answer no backend gave. The fast paths serve HTTP/1.1 so; net/http (HTTP/1.0 on every
// path) takes the end of the client's input for its going away and cancels the request, and
// the proxy then answered 200 with an empty body, net/http's answer for a handler that wrote
// nothing: a success for a request the backend had not seen.
func TestHalfClosedClientGetsNoInventedAnswer(t *testing.T) {
	for _, p := range servingPaths {
		if p.h2 {
			continue // a stream's END_STREAM is no half-close
		}
		t.Run(p.name, func(t *testing.T) {
			h := newDesyncHarness(t, p)
			for _, version := range []string{"HTTP/1.0", "HTTP/1.1"} {
				h.backend.take()
				conn := h.dial(t)
				fmt.Fprintf(conn, "GET /hc HTTP/%s\r\nHost: h\r\n\r\n", version[5:])
				if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatal(err)
				}
				all, err := io.ReadAll(conn)
				if err != nil {
					t.Fatalf("%s: %v", version, err)
				}
				if len(all) == 0 {
					continue // closed without an answer
				}
				got, err := readAnswers(bufio.NewReader(bytes.NewReader(all)), 1, http.MethodGet, nil)
				if err != nil || got[0] != `200 length "GET /hc"` {
					t.Fatalf("%s: the client got %q (%v), want the backend's answer or none", version, all, err)
				}
				if received := h.backend.take(); len(received) != 1 {
					t.Fatalf("%s: the client got the backend's answer, the backend received %q", version, received)
				}
			}
		})
	}
}
