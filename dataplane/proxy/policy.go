package proxy

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"portico.dev/portico/dataplane/route"
)

// The application of a route's policy (route.Policy), shared by every serving path: decide
// routes and settles the proxy's own answers (redirects, refusals); the limits and timeouts
// below read the route's overrides; requestHead and parseResponseHead (the HTTP/1.1 core, which
// the event loops, the goroutine path and HTTP/2 streams share) and the net/http path's rewrite
// and modifyResponse apply the header modifiers, the rewrite and the upstream host, each from
// the same route.Policy methods.

// reqView is what decide reads of a request: route.Request, for conditions and canaries, and
// what redirects need.
type reqView interface {
	route.Request
	clientView
	// headerFields calls yield with each header field the client sent (that the proxy
	// forwards), in order, until it returns false.
	headerFields(yield func(name, value string) bool)
	// overTLS reports whether the request came over HTTPS.
	overTLS() bool
}

// pickEndpoint chooses the request's endpoint of b: the one its affinity cookie names (when
// not ejected), else the route's consistent hash's (upstream-hash-by), else the balancer's.
// Every serving path calls it once per request. path is the request's decoded path.
func pickEndpoint(st *reqState, b *route.Backend, req reqView, path string) {
	if b.Affinity {
		if key, ok := req.Cookie(affinityCookie(st).Name); ok && key != "" {
			if e := b.ByKey(key); e != nil && !e.Stats.Ejected(st.start) {
				st.endpoint, st.pinned = e, true
				return
			}
		}
	}
	if p := st.policy(); p != nil && p.Hash != nil {
		st.endpoint = b.PickHash(p.Hash.Sum(req, route.CleanPath(path)), st.start)
		return
	}
	st.endpoint = b.Pick(st.start, nil)
}

// retryPolicy is the route's proxy-next-upstream, nil for the proxy's own rules.
func (st *reqState) retryPolicy() *route.RetryPolicy {
	if p := st.policy(); p != nil {
		return p.Retry
	}
	return nil
}

// replayable reports whether a request may be sent again (to the same endpoint on a new
// connection, or to another): no body, and an idempotent method, or any with the route's
// non_idempotent.
func (st *reqState) replayable(method string, hasBody bool) bool {
	if hasBody {
		return false
	}
	if idempotent(method) {
		return true
	}
	rp := st.retryPolicy()
	return rp != nil && rp.On&route.RetryNonIdempotent != 0
}

// retriesTimeouts: the route sends a request on after a timeout (proxy-next-upstream timeout).
func (st *reqState) retriesTimeouts() bool {
	rp := st.retryPolicy()
	return rp != nil && rp.On&route.RetryTimeout != 0
}

// affinityCookie is the request's route's affinity cookie.
func affinityCookie(st *reqState) *route.AffinityCookie {
	if p := st.policy(); p != nil && p.Affinity != nil {
		return p.Affinity
	}
	return route.DefaultAffinityCookie
}

// policy is the policy of the request's route, nil for none.
func (st *reqState) policy() *route.Policy {
	if st.rule == nil {
		return nil
	}
	return st.rule.Policy
}

// maxBody is the request body limit that applies to the request (0: none): the route's, else
// the fleet's.
func (st *reqState) maxBody() int64 {
	if p := st.policy(); p != nil && p.HasMaxBody {
		return p.MaxBodyBytes
	}
	return st.table.Limits.MaxRequestBodyBytes
}

// bodyTooLarge: a request body of n bytes (-1: unknown, chunked) is over the limit that applies
// to the request, which is answered 413 without reading it.
func bodyTooLarge(st *reqState, n int64) bool {
	max := st.maxBody()
	return max > 0 && n > max
}

// dialTimeout bounds connecting to the request's endpoint, sendTimeout a pause in sending the
// request body to a backend that does not read it, upstreamTimeout waiting for the backend's
// response head: each the route's, else the fleet's, else the proxy's.
func (st *reqState) dialTimeout(o *Options) time.Duration {
	return st.timeout(func(p *route.Policy) time.Duration { return p.ConnectTimeout }, st.table.Limits.ConnectTimeout, o.DialTimeout)
}

func (st *reqState) sendTimeout(o *Options) time.Duration {
	return st.timeout(func(p *route.Policy) time.Duration { return p.SendTimeout }, st.table.Limits.SendTimeout, o.SendTimeout)
}

func (st *reqState) upstreamTimeout(o *Options) time.Duration {
	return st.timeout(func(p *route.Policy) time.Duration { return p.ReadTimeout }, st.table.Limits.ReadTimeout, o.UpstreamTimeout)
}

// timeout is the route's setting (of), else the fleet's, else the proxy's: the first set.
func (st *reqState) timeout(of func(*route.Policy) time.Duration, fleet, proxy time.Duration) time.Duration {
	if p := st.policy(); p != nil {
		if d := of(p); d > 0 {
			return d
		}
	}
	if fleet > 0 {
		return fleet
	}
	return proxy
}

// ownAnswer settles what a route's policy answers itself (fail-closed refusal, redirects) and
// takes the canary's share: it returns the status and message of the proxy's answer (the
// Location in st.location for a redirect), or 0 with the backend to forward to.
func (h *Handler) applyPolicy(p *route.Policy, host, path string, req reqView, b *route.Backend, st *reqState) (*route.Backend, int, string) {
	if p.Refuse != "" {
		return nil, http.StatusServiceUnavailable, p.Refuse
	}
	if ca := p.ClientAuth; ca != nil && !st.tls {
		if code, msg := plainClientCertVerdict(ca); code != 0 {
			return nil, code, msg
		}
	}
	// An HTTPS request of a route whose only redirect is to HTTPS (the default on TLS hosts)
	// builds nothing.
	if p.HostRedirect != "" || (p.SSLRedirect && !req.overTLS()) || p.AppRoot != "" || p.Redirect != nil {
		u := route.RequestURI{Host: host, Path: route.CleanPath(path), Target: req.Target(), TLS: req.overTLS(),
			HTTPSPort: h.httpsPort, Rule: st.rule}
		if code, loc := p.RedirectFor(&u); code != 0 {
			st.location = loc
			return nil, code, "redirecting to " + loc
		}
	}
	if a := p.Access; a != nil {
		if code, msg := h.checkAccess(a, req, st); code != 0 {
			return nil, code, msg
		}
	}
	if c := p.Canary; c != nil && len(c.Backend.Endpoints) > 0 && c.Takes(req) {
		b = c.Backend
	}
	if eb := p.ErrorBackend; eb != nil && len(b.Endpoints) == 0 && len(eb.Endpoints) > 0 {
		b = eb // default-backend: it answers while the route's backend has no endpoint
	}
	return b, 0, ""
}

// errorPageBackend is the backend that answers in place of an answer with status code the
// request's route intercepts (custom-http-errors): the route's default-backend, else the
// fleet's default backend; nil when the answer goes to the client as it is (not intercepted,
// an error page already, no error backend with an endpoint).
func errorPageBackend(st *reqState, code int) *route.Backend {
	p := st.policy()
	if p == nil || st.errorCode != 0 || !p.Intercepts(code) {
		return nil
	}
	eb := p.ErrorBackend
	if eb == nil {
		eb = st.table.DefaultBackend
	}
	if eb == nil || len(eb.Endpoints) == 0 {
		return nil
	}
	return eb
}

// toErrorPage moves a request to the error backend eb for an intercepted answer with status
// code: it is sent there as a GET (HEAD stays HEAD) without a body, with ingress-nginx's
// headers (errorPageHead).
func toErrorPage(st *reqState, eb *route.Backend, code int) {
	st.errorCode, st.errorService = code, st.service
	st.backend, st.service = eb, eb.Name()
	st.endpoint = eb.Pick(time.Now(), nil)
	st.pinned = true // no affinity cookie for an error page
}

// errorPageHeaders are the headers an error backend reads (ingress-nginx's custom error
// pages): X-Code, X-Format (the client's Accept), X-Original-URI, X-Namespace, X-Ingress-Name,
// X-Service-Name, X-Service-Port, X-Request-ID; empty values are left out by the callers.
func errorPageHeaders(st *reqState, accept, target, requestID string) [8][2]string {
	ns, name, _ := strings.Cut(st.ingress, "/")
	svc, port, _ := strings.Cut(st.errorService, ":")
	_, svc, _ = strings.Cut(svc, "/")
	return [...][2]string{{"X-Code", strconv.Itoa(st.errorCode)}, {"X-Format", accept}, {"X-Original-URI", target},
		{"X-Namespace", ns}, {"X-Ingress-Name", name}, {"X-Service-Name", svc}, {"X-Service-Port", port}, {"X-Request-ID", requestID}}
}

// appendErrorPageHeaders appends errorPageHeaders as header lines.
func appendErrorPageHeaders(o []byte, st *reqState, accept, target, requestID string) []byte {
	for _, h := range errorPageHeaders(st, accept, target, requestID) {
		if h[1] == "" {
			continue
		}
		o = append(o, h[0]...)
		o = append(o, ": "...)
		o = append(o, h[1]...)
		o = append(o, "\r\n"...)
	}
	return o
}

// appendRequestPolicy ends a request head for the backend under construction in o with the
// route's request policy: the upstream host, X-Forwarded-Prefix and the header modifiers'
// lines. The client's Host line and the lines the modifiers take out are left out by
// dropsRequestLine.
func appendRequestPolicy(o []byte, p *route.Policy) []byte {
	if p.UpstreamHost != "" {
		o = append(o, "Host: "...)
		o = append(o, p.UpstreamHost...)
		o = append(o, "\r\n"...)
	}
	if p.ForwardedPrefix != "" {
		o = append(o, "X-Forwarded-Prefix: "...)
		o = append(o, p.ForwardedPrefix...)
		o = append(o, "\r\n"...)
	}
	return p.RequestHeaders.AppendLines(o)
}

// dropsRequestLine: the route's policy takes a client's header line out of the request the
// backend gets (its Host when the upstream host replaces it, what the modifiers remove or set).
func dropsRequestLine(p *route.Policy, l *headerLine, buf []byte) bool {
	if l.kind == hHost {
		return p.UpstreamHost != ""
	}
	return p.RequestHeaders.Drops(buf[l.start:l.nameEnd])
}

// namedIn reports whether a header named name is among kvs.
func namedIn(kvs [][2]string, name []byte) bool {
	for _, kv := range kvs {
		if strings.EqualFold(bytesView(name), kv[0]) {
			return true
		}
	}
	return false
}

// hstsName is the header HSTS sets.
const hstsName = "Strict-Transport-Security"

// responseOps reports whether an answer's head is changed on its way to the client: by the
// route's response header modifiers, or by HSTS (answers over HTTPS).
func responseOps(st *reqState, tls bool) (ops *route.HeaderOps, hsts string) {
	if p := st.policy(); p != nil && !p.ResponseHeaders.Empty() {
		ops = &p.ResponseHeaders
	}
	if tls {
		hsts = st.table.HSTS
	}
	return ops, hsts
}

// dropsResponseLine: a backend's header line named name is replaced by the proxy's (HSTS) or
// taken out by the route's modifiers.
func dropsResponseLine(ops *route.HeaderOps, hsts string, name []byte) bool {
	if hsts != "" && asciiEqualFold(name, "strict-transport-security") {
		return true
	}
	return ops != nil && ops.Drops(name)
}

// appendResponsePolicy appends the HSTS line and the modifiers' lines to a client's head.
func appendResponsePolicy(o []byte, ops *route.HeaderOps, hsts string) []byte {
	if hsts != "" {
		o = append(o, hstsName+": "...)
		o = append(o, hsts...)
		o = append(o, "\r\n"...)
	}
	if ops != nil {
		o = ops.AppendLines(o)
	}
	return o
}

// rewrittenTarget appends the request target the backend gets when the route rewrites it.
func rewrittenTarget(dst []byte, r *route.Rule, path, target string) []byte {
	_, query, _ := strings.Cut(target, "?")
	return r.Policy.Rewrite.AppendTarget(dst, r, route.CleanPath(path), query)
}

// bytesView is b as a string without a copy, for the duration of a call that does not keep it.
func bytesView(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// The fast path's request as a reqView (h1Conn).

func (c *h1Conn) Method() string { return bytesView(c.head.method) }

func (c *h1Conn) Header(name string) (string, bool) {
	hd := &c.head
	for i := range hd.lines {
		l := &hd.lines[i]
		if strings.EqualFold(bytesView(hd.buf[l.start:l.nameEnd]), name) {
			return bytesView(hd.buf[l.vs:l.ve]), true
		}
	}
	return "", false
}

func (c *h1Conn) Cookie(name string) (string, bool) {
	v := cookieValue(&c.head, name)
	return v, v != ""
}

func (c *h1Conn) Target() string { return bytesView(c.head.target) }

func (c *h1Conn) Host() string { return bytesView(c.head.host) }

func (c *h1Conn) ClientIP() string { return c.st.clientText }

func (c *h1Conn) headerFields(yield func(name, value string) bool) {
	hd, t := &c.head, c.st.table
	for i := range hd.lines {
		l := &hd.lines[i]
		if forwardHeader(l, t) && !yield(bytesView(hd.buf[l.start:l.nameEnd]), bytesView(hd.buf[l.vs:l.ve])) {
			return
		}
	}
}

func (c *h1Conn) overTLS() bool {
	if c.st.trusted {
		return c.forwardedProto() == "https"
	}
	return c.proto == "https"
}

// httpReq is the net/http path's request as a reqView.
type httpReq struct {
	r  *http.Request
	st *reqState
}

func (q httpReq) Method() string { return q.r.Method }

func (q httpReq) Header(name string) (string, bool) {
	v := q.r.Header.Values(name)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

func (q httpReq) Cookie(name string) (string, bool) {
	c, err := q.r.Cookie(name)
	if err != nil {
		return "", false
	}
	return c.Value, true
}

func (q httpReq) Target() string { return q.r.RequestURI }

func (q httpReq) Host() string { return q.r.Host }

func (q httpReq) ClientIP() string { return q.st.clientText }

// peerIP is RemoteAddr's address: the PROXY protocol's source when the listener reads it
// (handoffConn.RemoteAddr).
func (q httpReq) peerIP() (netip.Addr, string) {
	host, _, err := net.SplitHostPort(q.r.RemoteAddr) // host is part of RemoteAddr: no copy
	if err != nil {
		return netip.Addr{}, q.r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, host
	}
	if a.Is4In6() {
		a = a.Unmap()
		return a, a.String()
	}
	return a, host
}

func (q httpReq) headerFields(yield func(name, value string) bool) {
	for name, vs := range q.r.Header {
		for _, v := range vs {
			if !yield(name, v) {
				return
			}
		}
	}
}

func (q httpReq) forwardedFor(yield func(string) bool) {
	for _, v := range q.r.Header["X-Forwarded-For"] {
		if !yield(v) {
			return
		}
	}
}

func (q httpReq) overTLS() bool {
	if q.st.trusted {
		if v := strings.TrimSpace(q.r.Header.Get("X-Forwarded-Proto")); v != "" && validForwardedValue([]byte(v)) {
			return v == "https"
		}
	}
	return q.r.TLS != nil
}

// dialWithin dials addr with the dialer's settings and the given timeout.
func dialWithin(d *net.Dialer, addr string, timeout time.Duration) (net.Conn, error) {
	if timeout == d.Timeout || timeout <= 0 {
		return d.Dial("tcp", addr)
	}
	dd := *d
	dd.Timeout = timeout
	return dd.Dial("tcp", addr)
}

// sendPacedBody is a request body on its way to a backend on the net/http path: before each
// read of it, the backend connection's write deadline moves to the send timeout from now.
type sendPacedBody struct {
	io.ReadCloser
	c       net.Conn
	timeout time.Duration
	last    time.Time // when the deadline last moved
}

func (b *sendPacedBody) Read(p []byte) (int, error) {
	b.last = time.Now()
	_ = b.c.SetWriteDeadline(b.last.Add(b.timeout))
	return b.ReadCloser.Read(p)
}

// mirrorSlots bounds the mirrored copies in flight (all routes); beyond it a copy is dropped:
// a slow mirror must not grow the proxy's memory or goroutines without bound.
var mirrorSlots = make(chan struct{}, 64)

// mirror sends a copy of a request without a body (head: its complete head, as its backend
// gets it) to an endpoint of b on a connection of its own, and drops the answer. The request
// does not wait for it. Every serving path calls it once per mirrored request.
func (h *Handler) mirror(b *route.Backend, head []byte) {
	if len(b.Endpoints) == 0 {
		return
	}
	select {
	case mirrorSlots <- struct{}{}:
	default:
		h.metrics.UpstreamErrors.WithLabelValues(b.Name(), "mirror-dropped").Inc()
		return
	}
	cp := append([]byte(nil), head...)
	go func() {
		defer func() { <-mirrorSlots }()
		e := b.Pick(time.Now(), nil)
		c, err := dialUpstream(&h.up.dialer, e.Addr, h.opts.DialTimeout, b.TLS)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(h.opts.UpstreamTimeout))
		if _, err := c.Write(cp); err != nil {
			return
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite() // one request: the backend closes after its answer
		}
		_, _ = io.Copy(io.Discard, c)
	}()
}

// mirrors reports the mirror of a request without a body, nil for none.
func (st *reqState) mirrors(hasBody bool) *route.Backend {
	if p := st.policy(); p != nil && p.Mirror != nil && !hasBody && st.errorCode == 0 {
		return p.Mirror
	}
	return nil
}
