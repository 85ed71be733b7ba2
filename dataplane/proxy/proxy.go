// Package proxy serves HTTP and HTTPS from the routing table in use: each request loads the
// table once, routes by host and path, and forwards to an endpoint address. It imports no
// Kubernetes client: tables arrive through Swap.
package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/route"
)

// AffinityCookie is the default name of the cookie naming the endpoint a client is pinned to
// (portico.dev/session-cookie-name changes it per route).
const AffinityCookie = "portico-affinity"

// Options configure the request path.
type Options struct {
	// HTTPPort and HTTPSPort are the ports clients connect to, sent as X-Forwarded-Port.
	HTTPPort, HTTPSPort int
	// DialTimeout bounds connecting to an endpoint (default 5s).
	DialTimeout time.Duration
	// UpstreamTimeout bounds waiting for a backend's response headers (default 60s); past it the
	// client gets 504.
	UpstreamTimeout time.Duration
	// SendTimeout bounds a pause in sending a request body to a backend that does not read it
	// (default 60s, nginx's proxy_send_timeout); past it the client gets 504.
	SendTimeout time.Duration
	// Retries is how many other endpoints a repeatable request tries after failed connections
	// other than refused ones, which do not count (default 2; see Handler.retry).
	Retries int
	// AccessLog, when set, receives one JSON line per request of the fleets that turn it on
	// (spec.accessLog), or of every request when AccessLogAll (the --access-log flag).
	AccessLog    *AccessLog
	AccessLogAll bool
	// L4Metrics receives the series of TLS passthrough connections (listener
	// "tls-passthrough"); nil keeps none.
	L4Metrics *l4.Metrics
}

// Handler is the proxy's http.Handler.
type Handler struct {
	table   atomic.Pointer[route.Table]
	opts    Options
	metrics *Metrics
	log     logr.Logger
	rp      *httputil.ReverseProxy
	// up holds the HTTP/1.1 upstream connections of every serving path.
	up *upstreams
	// passthrough forwards the TLS connections of ssl-passthrough hosts, unterminated.
	passthrough *l4.TCPForwarder
	idBase      string
	idSeq       atomic.Uint64
	// logSeq counts the requests offered to a sampled access log.
	logSeq atomic.Uint64
	// httpPort and httpsPort are Options' ports as X-Forwarded-Port values.
	httpPort, httpsPort string
	// auth holds the connections to auth services and their cached answers (extauth.go).
	auth authClient
}

// NewHandler returns a Handler answering 404 to everything until the first Swap.
func NewHandler(opts Options, metrics *Metrics, log logr.Logger) *Handler {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.UpstreamTimeout == 0 {
		opts.UpstreamTimeout = 60 * time.Second
	}
	if opts.SendTimeout == 0 {
		opts.SendTimeout = 60 * time.Second
	}
	if opts.Retries == 0 {
		opts.Retries = 2
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	h := &Handler{opts: opts, metrics: metrics, log: log, idBase: hex.EncodeToString(b[:]) + "-",
		httpPort: strconv.Itoa(opts.HTTPPort), httpsPort: strconv.Itoa(opts.HTTPSPort)}
	h.table.Store(&route.Table{})
	h.up = newUpstreams(opts.DialTimeout)
	h.passthrough = l4.NewTCPForwarder(l4.TCPConfig{Name: "tls-passthrough", DialTimeout: opts.DialTimeout, Metrics: opts.L4Metrics,
		Log: log.WithName("passthrough")})
	tr := newTransport(opts, h)
	h.rp = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      tr,
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.errorHandler,
		BufferPool:     bufferPool{},
		ErrorLog:       stdlog.New(logWriter{log}, "", 0), // through logr, at V(1)
	}
	return h
}

// Swap publishes a new routing table. In-flight requests finish on the table they loaded.
func (h *Handler) Swap(t *route.Table, problems int) {
	h.table.Store(t)
	h.metrics.observeTable(t, problems)
}

// backendFor routes a host and decoded path through the table in use now (for retries).
func (h *Handler) backendFor(host, path string) *route.Backend {
	t := h.table.Load()
	if rule := t.Match(host, path, nil); rule != nil && rule.Backend != nil {
		return rule.Backend
	}
	return t.DefaultBackend
}

// retry records that the connection to st.endpoint failed before any answer and decides
// whether the request goes on to another endpoint, which it picks. A refused connection means
// nothing listens there (a pod that is gone, while the table still lists it): its endpoint is
// ejected at once, and since nothing was sent, any request goes on, without using up a retry,
// at most once per endpoint. Other failures (a connection closed or reset unanswered, a dial
// timeout) count towards ejection and let a repeatable request (idempotent, no body) go on
// while opts.Retries last. The next endpoint comes from the request's backend, else from the
// backend host and path map to in the table in use now (the request's table may predate a
// replacement of every endpoint). Both serving paths call it.
func (h *Handler) retry(st *reqState, err error, repeatable bool, host, path string) bool {
	now := time.Now()
	refused := errors.Is(err, syscall.ECONNREFUSED)
	if refused {
		st.endpoint.Stats.Eject(now)
	} else {
		st.endpoint.Stats.Failed(now)
	}
	reason := "failed"
	rp := st.retryPolicy()
	switch {
	case refused && st.refusals < len(st.backend.Endpoints):
		st.refusals++
		reason = "refused"
	case rp != nil: // proxy-next-upstream
		kind := route.RetryError
		if isTimeout(err) {
			kind = route.RetryTimeout
		}
		if !repeatable || rp.On&kind == 0 || !rp.More(st.retries+1) || !rp.Within(st.start, now) {
			return false
		}
		st.retries++
	case repeatable && st.retries < h.opts.Retries:
		st.retries++
	default:
		return false
	}
	return h.next(st, now, host, path, reason)
}

// retryStatus decides whether a request whose answer has this status goes on to another
// endpoint (proxy-next-upstream http_<status>), which it picks: only a repeatable request
// (replayable) whose answer has not begun to reach the client, while the route's tries last.
// The endpoint is not counted as failing. Every HTTP/1.1 path calls it when an answer's head
// came.
func (h *Handler) retryStatus(st *reqState, status int, repeatable bool, host, path string) bool {
	rp := st.retryPolicy()
	if rp == nil || !repeatable || !rp.OnStatus(status) || !rp.More(st.retries+1) || len(st.backend.Endpoints) < 2 ||
		!rp.Within(st.start, time.Now()) {
		return false
	}
	st.retries++
	return h.next(st, time.Now(), host, path, "status")
}

// next moves the request to another endpoint than st.endpoint, counting the retry by reason.
func (h *Handler) next(st *reqState, now time.Time, host, path, reason string) bool {
	next := st.backend.Pick(now, st.endpoint)
	if next == nil {
		b := h.backendFor(host, path)
		if b == nil || b == st.backend || b.Protocol != st.backend.Protocol {
			return false
		}
		st.backend = b
		if next = b.Pick(now, st.endpoint); next == nil {
			return false
		}
	}
	h.metrics.UpstreamRetries.WithLabelValues(st.service, reason).Inc()
	st.endpoint, st.pinned = next, false
	return true
}

// Table returns the table in use.
func (h *Handler) Table() *route.Table { return h.table.Load() }

type ctxKey struct{}

// reqState travels with a request from ServeHTTP through the transport and back.
type reqState struct {
	// table is the routing table the request was routed by (its limits apply to it).
	table    *route.Table
	backend  *route.Backend
	endpoint *route.Endpoint
	// rule is the route the request matched (nil: the default backend); its Policy applies.
	rule *route.Rule
	// location is the Location of the proxy's own redirect.
	location string
	// tls: the request came over HTTPS. pinned: the client's affinity cookie named the
	// endpoint. logging: the request goes to the access log (before sampling, see
	// Handler.sampled). trusted: the request came from a trusted proxy, whose X-Forwarded-*
	// are passed on. onLoop: an event loop routes the request (it cannot wait for an auth
	// sub-request). (The flags sit together: the state is part of every connection.)
	tls, pinned, logging, trusted, onLoop bool
	// admitted: the request's limits were checked (limitState).
	admitted bool
	// errorCode is the intercepted status the request is at the error backend for
	// (custom-http-errors), errorService the service that answered it.
	errorCode    int
	errorService string
	// target is the client's request target (the net/http path's; the fast path reads its head).
	target  string
	ingress string
	service string
	port    string // X-Forwarded-Port
	// attempt is when the current attempt at an endpoint began (the response head's timeout
	// runs from it).
	attempt time.Time
	// retries and refusals count the request's moves to another endpoint (see Handler.retry).
	retries, refusals int
	start             time.Time
	status            int
	// requestID is the X-Request-Id sent upstream (for the access log).
	requestID string
	// bytes is the response body's length as sent, upstreamTime the time to the backend's
	// response head (both for the access log).
	bytes        int64
	upstreamTime time.Duration
	// bodyErr is the error reading the client's body failed with (net/http path).
	bodyErr error
	// client is the request's client (clientaddr.go), clientText it as text.
	client     netip.Addr
	clientText string
	// acc is what access control adds to the request, nil for a route without it.
	acc *reqAccess
}

// reqAccess is what a route's access control adds to a request (allocated only then: the
// request state is part of every connection, and an idle one should cost no more for it).
type reqAccess struct {
	// answerHeaders are added to the proxy's own answer (WWW-Authenticate); respSet to every
	// answer, the backend's (replacing its headers of the same names) or the proxy's (CORS).
	answerHeaders, respSet [][2]string
	// upstreamSet replaces the client's headers of these names on the request to the backend
	// (external auth's auth-response-headers; an empty value removes it).
	upstreamSet [][2]string
	// auth is the external auth's verdict, whose cookies go on the answer (authResult.responseFor).
	auth *authResult
	// slot is the request's hold on a connection limit, nil for none.
	slot *limitSlot
	// upstreamDrop: the request's Authorization header does not reach the backend (basic auth).
	upstreamDrop bool
}

// access returns the request's reqAccess, made on first use.
func (st *reqState) access() *reqAccess {
	if st.acc == nil {
		st.acc = &reqAccess{}
	}
	return st.acc
}

// ServeHTTP routes one request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := &reqState{start: time.Now(), port: h.httpPort, tls: r.TLS != nil, target: r.RequestURI}
	defer st.releaseLimits() // also when ReverseProxy panics (http.ErrAbortHandler) mid-body
	if st.tls {
		st.port = h.httpsPort
	}
	b, code, msg := h.decide(h.table.Load(), r.Host, r.URL.Path, httpReq{r, st}, st)
	st.logging = h.logs(st)
	if bodyTooLarge(st, r.ContentLength) {
		w.Header().Set("Connection", "close")
		code, msg, b = http.StatusRequestEntityTooLarge, msgBodyTooLarge, nil
	}
	if b == nil { // the body is not read
		noContinue(w, r)
		h.answer(w, r, st, code, msg)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		// The body may not pause longer than the body timeout, nor (chunked) outgrow the limit.
		body := r.Body
		if max := st.maxBody(); max > 0 && r.ContentLength < 0 {
			body = http.MaxBytesReader(w, body, max)
		}
		r.Body = &pacedBody{ReadCloser: body, rc: http.NewResponseController(w), timeout: bodyTimeout(st.table), st: st}
	}
	st.backend, st.service = b, b.Name()
	pickEndpoint(st, b, httpReq{r, st}, r.URL.Path)
	rec := &statusRecorder{ResponseWriter: w}
	h.rp.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), ctxKey{}, st)))
	gone := rec.status == 0 && st.status == 499 // errorHandler: the client went away, nothing written
	if !gone {
		st.status = rec.status
	}
	st.bytes = rec.bytes
	h.done(r, st)
	if gone {
		// net/http would answer for the handler, 200 with an empty body, when it returns
		// having written nothing: a client that half-closed its connection after its request
		// (net/http takes the end of its input for its going away) would read a success for a
		// request the backend may never have seen. The connection closes without an answer,
		// as nginx's does (499 in its log).
		panic(http.ErrAbortHandler)
	}
}

// decide routes a request by host and decoded path through t, filling st's rule, ingress and
// service, and applies what the route's policy answers itself (applyPolicy). It returns the
// backend to forward to, or nil with the status and message of the proxy's own answer: 404
// when nothing matches and there is no default backend to send to, 503 when the backend has no
// endpoint, a redirect (st.location), a refusal. Every serving path calls it, once per request.
func (h *Handler) decide(t *route.Table, host, path string, req reqView, st *reqState) (*route.Backend, int, string) {
	st.table = t
	st.setClient(&t.Clients, req)
	b := t.DefaultBackend
	fleetDefault := t.DefaultIngress.Name == ""
	if rule := t.Match(host, path, req); rule != nil {
		b, fleetDefault = rule.PickBackend(), false
		st.ingress, st.rule = rule.IngressName, rule
		if rule.Policy != nil {
			var code int
			var msg string
			if b, code, msg = h.applyPolicy(rule.Policy, host, path, req, b, st); b == nil {
				st.service = "default"
				if rule.Backend != nil {
					st.service = rule.Backend.Name()
				}
				return nil, code, msg
			}
		}
	} else if !fleetDefault {
		st.ingress = t.DefaultIngressName
	}
	switch {
	case b == nil || (fleetDefault && len(b.Endpoints) == 0):
		// No default backend, or the fleet's is down: answer for it.
		st.service = "default"
		return nil, http.StatusNotFound, "no Ingress rule matches this request"
	case len(b.Endpoints) == 0:
		st.service = b.Name()
		return nil, http.StatusServiceUnavailable, b.Problem
	}
	return b, 0, ""
}

// rewrite builds the outbound request: the endpoint as target, the client's Host kept, the
// X-Forwarded-* headers set by the proxy (client-sent ones are replaced), X-Request-Id kept or
// added. httputil.ReverseProxy strips hop-by-hop headers and handles Upgrade.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := pr.In.Context().Value(ctxKey{}).(*reqState)
	out := pr.Out
	out.URL.Scheme = "http"
	out.URL.Host = st.endpoint.Addr
	out.Host = pr.In.Host
	// Expect: 100-continue is the proxy's to answer: net/http sends the client its 100 Continue
	// when the body is first read. Forwarded, the backend's 100 would race that one and the
	// client could get two (as nginx does, it is not passed on).
	out.Header.Del("Expect")
	if out.Body != nil && out.Body != http.NoBody {
		// The Transport closes the body when a connection fails; a request whose connection was
		// refused keeps it for the next endpoint (the server closes it after the handler).
		out.Body = keptBody{out.Body}
	}
	setForwarding(out.Header, pr.In, st, true)
	if a := st.acc; a != nil {
		if a.upstreamDrop {
			out.Header.Del("Authorization") // basic auth's credentials stay with the proxy
		}
		for _, kv := range a.upstreamSet { // external auth's auth-response-headers
			out.Header.Del(kv[0])
			if kv[1] != "" {
				out.Header.Set(kv[0], kv[1])
			}
		}
	}
	if p := st.policy(); p != nil {
		if p.Rewrite != nil {
			t := rewrittenTarget(nil, st.rule, pr.In.URL.Path, pr.In.RequestURI)
			path, query, _ := strings.Cut(string(t), "?")
			out.URL.RawPath, out.URL.RawQuery = path, query
			out.URL.Path, _ = url.PathUnescape(path)
		}
		if p.UpstreamHost != "" {
			out.Host = p.UpstreamHost
		}
		if p.ForwardedPrefix != "" {
			out.Header.Set("X-Forwarded-Prefix", p.ForwardedPrefix)
		}
		p.RequestHeaders.Apply(out.Header)
	}
	if mb := st.mirrors(out.Body != nil && out.Body != http.NoBody); mb != nil {
		defer func() { // once the request id is set
			var buf bytes.Buffer
			m := out.Clone(out.Context())
			m.Body, m.ContentLength = nil, 0
			if _, ok := m.Header["User-Agent"]; !ok {
				m.Header.Set("User-Agent", "") // none rather than Go's, as the client sent none
			}
			if m.Write(&buf) == nil {
				h.mirror(mb, buf.Bytes())
			}
		}()
	}
	if !st.table.Limits.AllowUnderscoresInHeaders {
		for k := range out.Header {
			if strings.IndexByte(k, '_') >= 0 {
				delete(out.Header, k) // see forwardHeader
			}
		}
	}
	// The request id stays even when Connection names it (see keptDespiteConnection):
	// ReverseProxy removed the names Connection lists before calling Rewrite.
	if id := pr.In.Header.Get("X-Request-Id"); id != "" {
		out.Header.Set("X-Request-Id", id)
	}
	if id := out.Header.Get("X-Request-Id"); id != "" {
		st.requestID = id
	} else {
		st.requestID = h.idBase + strconv.FormatUint(h.idSeq.Add(1), 16)
		out.Header.Set("X-Request-Id", st.requestID)
	}
}

func (h *Handler) modifyResponse(resp *http.Response) error {
	st := resp.Request.Context().Value(ctxKey{}).(*reqState)
	if resp.Header.Get("Server") == "" {
		resp.Header.Set("Server", "portico")
	}
	if st.backend.Affinity && !st.pinned {
		resp.Header.Add("Set-Cookie", string(affinityCookie(st).AppendSetCookie(nil, st.endpoint.Key, time.Now())))
	}
	if a := st.acc; a != nil {
		for _, kv := range a.respSet {
			resp.Header.Set(kv[0], kv[1])
		}
		if a.auth != nil {
			for _, kv := range a.auth.responseFor(resp.StatusCode) {
				resp.Header.Add(kv[0], kv[1])
			}
		}
	}
	if ops, hsts := responseOps(st, st.tls); ops != nil || hsts != "" {
		if hsts != "" {
			resp.Header.Set(hstsName, hsts)
		}
		if ops != nil {
			ops.Apply(resp.Header)
		}
	}
	st.upstreamTime = time.Since(st.start)
	h.metrics.Duration.WithLabelValues(st.service).Observe(st.upstreamTime.Seconds())
	return nil
}

func (h *Handler) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	st := r.Context().Value(ctxKey{}).(*reqState)
	// The body's failures first: net/http cancels the request's context when a read of the
	// body fails, the body timeout's included.
	if code, msg := bodyFailure(st.bodyErr); code != 0 {
		w.Header().Set("Connection", "close")
		writeError(w, code, msg)
		return
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer.
		st.status = 499
		return
	}
	code, msg := h.upstreamFailed(st, err)
	ownHeaders(w, r, st)
	writeError(w, code, msg)
}

// noContinue prepares the proxy's own answer to a request whose body it does not read: when
// the client waits for 100 Continue, none goes out, so the body does not come, and net/http
// would wait for it after the answer to discard it; its read deadline passes at once instead
// (the connection then closes, as on the fast path).
func noContinue(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 && strings.EqualFold(r.Header.Get("Expect"), "100-continue") {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
}

// pacedBody is a request body on the net/http path: before each read the connection's (or
// stream's) read deadline moves to the body timeout from now, and a read error is kept for
// errorHandler (408 for a stall, 413 past the size limit).
type pacedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	st      *reqState
}

func (b *pacedBody) Read(p []byte) (int, error) {
	_ = b.rc.SetReadDeadline(time.Now().Add(b.timeout))
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && b.st.bodyErr == nil {
		b.st.bodyErr = err
	}
	return n, err
}

// upstreamFailed counts and logs a failed exchange with st's endpoint, and returns the answer
// the client gets: 502 for a failed connection or exchange, 504 for a timeout. Both serving
// paths call it.
func (h *Handler) upstreamFailed(st *reqState, err error) (code int, msg string) {
	kind, code, msg := "other", http.StatusBadGateway, "upstream "+st.service+" failed"
	switch {
	case isDialError(err):
		kind, msg = "connect", "cannot connect to upstream "+st.service
	case isTimeout(err), errors.Is(err, context.DeadlineExceeded):
		kind, code, msg = "timeout", http.StatusGatewayTimeout, "upstream "+st.service+" did not answer in time"
	}
	h.metrics.UpstreamErrors.WithLabelValues(st.service, kind).Inc()
	h.log.V(1).Info("Upstream error", "service", st.service, "endpoint", st.endpoint.Addr, "error", err.Error())
	return code, msg
}

// answer writes the proxy's own short answer.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, st *reqState, code int, msg string) {
	if st.location != "" {
		w.Header().Set("Location", st.location)
	}
	if a := st.acc; a != nil {
		for _, kv := range a.answerHeaders {
			w.Header().Add(kv[0], kv[1])
		}
		for _, kv := range a.respSet {
			w.Header().Set(kv[0], kv[1])
		}
		if a.auth != nil {
			for _, kv := range a.auth.responseFor(code) {
				w.Header().Add(kv[0], kv[1])
			}
		}
	}
	ownHeaders(w, r, st)
	writeError(w, code, msg)
	st.status = code
	h.done(r, st)
}

// errorBody is the text of the proxy's own answers.
func errorBody(code int, msg string) string {
	return fmt.Sprintf("%d %s: %s\n", code, http.StatusText(code), msg)
}

// ownHeaders adds to the proxy's own answers what policy puts on every answer: HSTS over HTTPS.
func ownHeaders(w http.ResponseWriter, r *http.Request, st *reqState) {
	if r.TLS != nil && st.table != nil && st.table.HSTS != "" {
		w.Header().Set(hstsName, st.table.HSTS)
	}
}

func writeError(w http.ResponseWriter, code int, msg string) {
	hd := w.Header()
	if code == http.StatusNoContent { // a CORS preflight's: no body
		hd.Set("Server", "portico")
		w.WriteHeader(code)
		return
	}
	body := errorBody(code, msg)
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Server", "portico")
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

func (h *Handler) done(r *http.Request, st *reqState) {
	st.releaseLimits()
	if st.status == 0 {
		st.status = http.StatusOK
	}
	h.metrics.Requests.WithLabelValues(st.ingress, st.service, codeString(st.status)).Inc()
	if st.logging && h.sampled(st.table, st.status) {
		requestID := st.requestID
		if requestID == "" {
			requestID = r.Header.Get("X-Request-Id")
		}
		h.opts.AccessLog.write(accessEntry{
			Time: time.Now().UTC().Format(time.RFC3339Nano), Client: clientForLog(st, r.RemoteAddr), Method: r.Method, Host: r.Host,
			URI: r.RequestURI, Proto: r.Proto, Status: st.status, Bytes: st.bytes, Duration: time.Since(st.start).Seconds(),
			Ingress: st.ingress, Service: st.service, Upstream: st.upstream(), UpstreamTime: st.upstreamSeconds(),
			RequestID: requestID, UserAgent: r.UserAgent(),
		})
	}
}

// logging reports whether requests routed by t go to the access log (before sampling): when
// the fleet turns it on, or the --access-log flag.
func (h *Handler) logging(t *route.Table) bool {
	return h.opts.AccessLog != nil && (h.opts.AccessLogAll || t.AccessLog.Enabled)
}

// logs is logging for a routed request: off for a route with enable-access-log false.
func (h *Handler) logs(st *reqState) bool {
	if p := st.policy(); p != nil && p.NoAccessLog {
		return false
	}
	return h.logging(st.table)
}

// sampled decides whether one logged request is written: one in every t.AccessLog.Every,
// every 5xx answer, every request under the --access-log flag.
func (h *Handler) sampled(t *route.Table, status int) bool {
	if status >= 500 || t.AccessLog.Every <= 1 || h.opts.AccessLogAll {
		return true
	}
	return h.logSeq.Add(1)%t.AccessLog.Every == 0
}

// upstream is the endpoint's address for the access log ("" when none was chosen).
func (st *reqState) upstream() string {
	if st.endpoint == nil {
		return ""
	}
	return st.endpoint.Addr
}

// upstreamSeconds is the time to the backend's response head, for the access log.
func (st *reqState) upstreamSeconds() float64 { return st.upstreamTime.Seconds() }

// statusRecorder remembers the status code; Unwrap lets http.ResponseController reach the
// connection for flushing and WebSocket hijacking.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 || (s.status >= 100 && s.status < 200) {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush passes streaming flushes through.
func (s *statusRecorder) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }

// keptBody is a request body the Transport cannot close.
type keptBody struct{ io.ReadCloser }

func (keptBody) Close() error { return nil }

// isNetError: err comes from the network (a reset, a closed connection).
func isNetError(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// isTimeout: err is a deadline passing (checked apart so that no caller's error variable is
// moved to the heap on the paths where err is nil).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
