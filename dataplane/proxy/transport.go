package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"portico.dev/portico/dataplane/route"
)

// transport sends a request to the endpoint chosen for it, over HTTP/1.1 or h2c as the backend
// says. HTTP/1.1 goes over the fast path's upstream connections (upstreams), under the rules
// of h1core.go: a connection is reused only at a clean message boundary, and checked before
// reuse after a bodiless answer, as on every other path. When the connection fails before any
// answer (refused, or closed or reset unanswered), Handler.retry decides whether the request
// goes on to another endpoint; a reused connection the backend had closed is retried once on
// a new one.
type transport struct {
	up  *upstreams
	h2c *http.Transport
	h   *Handler // retry decides
	// h2tls holds an HTTP/2 transport per upstream TLS settings (UpstreamTLS.Key), and base
	// makes them.
	h2tls sync.Map
	base  func() *http.Transport
}

// h2Transport is the transport of HTTP/2 requests to backends with the TLS settings ut (h2c
// when nil). A request's URL keeps the "http" scheme: the TLS is the dialer's.
func (t *transport) h2Transport(ut *route.UpstreamTLS) *http.Transport {
	if ut == nil {
		return t.h2c
	}
	if v, ok := t.h2tls.Load(ut.Key); ok {
		return v.(*http.Transport)
	}
	tr := t.base()
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true) // over the TLS connection dialUpstream makes
	dialer := t.up.dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialUpstream(&dialer, addr, 0, ut)
	}
	v, _ := t.h2tls.LoadOrStore(ut.Key, tr)
	return v.(*http.Transport)
}

func newTransport(o Options, h *Handler) *transport {
	dialer := &net.Dialer{Timeout: o.DialTimeout, KeepAlive: 30 * time.Second}
	base := func() *http.Transport {
		return &http.Transport{
			DialContext:           dialer.DialContext,
			MaxIdleConns:          0, // no global cap: bounded per host below
			MaxIdleConnsPerHost:   256,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: o.UpstreamTimeout,
			ExpectContinueTimeout: time.Second,
			DisableCompression:    true, // bodies pass through as the backend sent them
			ForceAttemptHTTP2:     false,
		}
	}
	h2c := base()
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	return &transport{up: h.up, h2c: h2c, h: h, base: base}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	h2c := st.backend.Protocol == route.H2C
	for stale := false; ; {
		req.URL.Host = st.endpoint.Addr
		stats := st.endpoint.Stats
		stats.InFlight.Add(1)
		var resp *http.Response
		var err error
		reused := false
		if h2c {
			resp, err = t.h2Transport(st.backend.TLS).RoundTrip(req)
		} else {
			resp, reused, err = t.roundTripH1(req, st, stale)
		}
		stats.InFlight.Add(-1)
		replay := st.replayable(req.Method, req.Body != nil && req.Body != http.NoBody)
		if err != nil && reused && !stale && resendable(replay, false, err, st.retriesTimeouts()) && req.Context().Err() == nil {
			stale = true // the backend had closed the pooled connection: once more, on a new one
			continue
		}
		stale = false
		if err == nil {
			stats.Succeeded()
			if t.h.retryStatus(st, resp.StatusCode, replay, req.Host, req.URL.Path) {
				_ = resp.Body.Close() // its answer is not read: the connection is closed
				continue
			}
			if eb := errorPageBackend(st, resp.StatusCode); eb != nil && !h2c {
				// custom-http-errors: the error backend answers instead.
				_ = resp.Body.Close()
				toErrorPage(st, eb, resp.StatusCode)
				req = errorPageRequest(req, st)
				continue
			}
			return resp, nil
		}
		if !isDialError(err) && (!isClosedConn(err) && !(st.retriesTimeouts() && isTimeout(err)) || req.Context().Err() != nil) {
			return nil, err
		}
		if !t.h.retry(st, err, replay, req.Host, req.URL.Path) {
			return nil, err
		}
	}
}

// replayable: idempotent and nothing to send but headers.
func replayable(r *http.Request) bool {
	return idempotent(r.Method) && (r.Body == nil || r.Body == http.NoBody)
}

// idempotent methods may be sent again when a connection fails (with no body to resend).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return false
}

// isDialError reports a failure to connect: no byte of the request left the proxy.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// rewakeIfGone sets the wake-up of a request whose client went away (its context's AfterFunc
// in roundTripH1) again, after a deadline of the exchange's own that may have replaced it: the
// AfterFunc runs once the context ended, so a deadline set before this check is followed by its
// wake-up or by this one.
func rewakeIfGone(ctx context.Context, c net.Conn) {
	if ctx.Err() != nil {
		_ = c.SetDeadline(time.Unix(1, 0))
	}
}

// roundTripH1 sends req on a connection of the pool (a new one when fresh) and reads the
// answer's head with net/http's parser; the body is read from the connection by the caller,
// and the connection goes back to the pool at its end when reusable (h1core.go). It reports
// whether the connection was reused (for the stale retry).
func (t *transport) roundTripH1(req *http.Request, st *reqState, fresh bool) (*http.Response, bool, error) {
	now := time.Now()
	uc, err := t.up.get(st.endpoint.Addr, now, fresh, !replayable(req), st.dialTimeout(&t.h.opts), st.backend.TLS)
	if err != nil {
		return nil, false, err
	}
	reused := uc.reused
	// The client going away (the request's context ending) ends the exchange.
	stop := context.AfterFunc(req.Context(), func() { _ = uc.c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, bool, error) {
		stop()
		_ = uc.c.Close()
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, reused, ctxErr
		}
		return nil, reused, err
	}
	uc.rd.none(uc.c)
	var paced *sendPacedBody
	if req.Body != nil && req.Body != http.NoBody {
		paced = &sendPacedBody{ReadCloser: req.Body, c: uc.c, timeout: st.sendTimeout(&t.h.opts), last: now}
		_ = uc.c.SetWriteDeadline(now.Add(paced.timeout))
		req.Body = paced
	}
	rewakeIfGone(req.Context(), uc.c)
	werr := req.Write(uc.w)
	if werr == nil {
		werr = uc.w.Flush()
	}
	if werr != nil && paced != nil && time.Since(paced.last) >= paced.timeout {
		// req.Write does not keep the write's error in its chain: the deadline tells.
		werr = answerCut{err: os.ErrDeadlineExceeded}
	}
	_ = uc.c.SetWriteDeadline(time.Time{})
	rewakeIfGone(req.Context(), uc.c)
	if werr != nil && (st.bodyErr != nil || isTimeout(werr)) {
		// The client's body failed (errorHandler answers 408 or 413), or the backend stopped
		// reading it for the send timeout (504, without waiting for an answer).
		return fail(werr)
	}
	// Even when the request could not be sent in full, the backend may have answered (413).
	uc.rd.exactly(uc.c, now.Add(st.upstreamTimeout(&t.h.opts))) // each attempt has the whole timeout
	rewakeIfGone(req.Context(), uc.c)
	var resp *http.Response
	inDoubt := false
	for {
		if _, err := uc.r.Peek(1); err != nil {
			if werr != nil {
				err = werr
			}
			return fail(err)
		}
		inDoubt = responseFramingInDoubt(uc.r)
		resp, err = http.ReadResponse(uc.r, req)
		if err != nil {
			return fail(answerCut{err}) // part of an answer came: not sent again (resendable)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		// Informational answers (103 Early Hints) go on to the client through ReverseProxy's
		// trace hook, as net/http's Transport passes them; a 100 Continue does not (the proxy
		// answers Expect itself, see rewrite).
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil &&
			resp.StatusCode != http.StatusContinue {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				return fail(err)
			}
		}
	}
	uc.rd.none(uc.c)
	rewakeIfGone(req.Context(), uc.c)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// The connection becomes the tunnel ReverseProxy copies both ways.
		stop()
		resp.Body = &upgradedConn{Conn: uc.c, r: uc.r}
		return resp, reused, nil
	}
	keep := werr == nil && !resp.Close && !inDoubt && !closeAfterHead([]byte(req.Method))
	bodiless := noBodyByRule([]byte(req.Method), resp.StatusCode)
	body := &pooledBody{t: t, uc: uc, st: st, rc: resp.Body, keep: keep, stop: stop, ctx: req.Context(), suspect: bodiless}
	if bodiless || resp.ContentLength == 0 || resp.Body == http.NoBody {
		body.finish(true) // the exchange ends with the head
		return resp, reused, nil
	}
	resp.Body = body
	return resp, reused, nil
}

// answerCut is a failure after part of an answer came; it does not unwrap, so that the
// request is not sent again (see resendable).
type answerCut struct{ err error }

func (e answerCut) Error() string { return "upstream answer cut short: " + e.err.Error() }

// Timeout keeps a deadline that passed mid-head a timeout (504).
func (e answerCut) Timeout() bool { return isTimeout(e.err) }

// Temporary is net.Error's.
func (e answerCut) Temporary() bool { return false }

// pooledBody is a response body read from a pooled connection: at its end the connection goes
// back to the pool when reusable (h1core.go), else it is closed.
type pooledBody struct {
	t       *transport
	uc      *upConn
	st      *reqState
	rc      io.ReadCloser
	keep    bool
	suspect bool
	stop    func() bool
	ctx     context.Context // the request's
	done    bool
}

func (b *pooledBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *pooledBody) Close() error {
	b.finish(false)
	return nil
}

// finish ends the exchange: whole says the body was read to its end.
func (b *pooledBody) finish(whole bool) {
	if b.done {
		return
	}
	b.done = true
	uc := b.uc
	// The client went away: the connection's deadlines have passed, or may have. stop is not
	// enough: the context's error is set before its AfterFunc starts, so rewakeIfGone may have
	// set them (read and write: SetDeadline) while stop still prevents the AfterFunc; a
	// connection pooled so failed the next request's write at once (a 504 after 1 ms, found
	// by FuzzDesync: a client half-closing after a request net/http serves).
	if !b.stop() || b.ctx.Err() != nil {
		_ = uc.c.Close()
		return
	}
	rh := respHead{}
	if !b.keep {
		rh.upClose = true
	}
	var err error
	if !whole {
		err = io.ErrUnexpectedEOF
	}
	if !reusable(&rh, err, uc.r.Buffered()) {
		_ = uc.c.Close()
		return
	}
	uc.suspect = b.suspect
	b.t.up.put(b.st.endpoint.Addr, uc, time.Now())
}

// upgradedConn is a connection after 101 Switching Protocols: reads drain what was buffered.
type upgradedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *upgradedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// errorPageRequest is the request an error backend gets for an intercepted answer
// (custom-http-errors), as errorPageHead builds it on the fast path: GET (HEAD stays HEAD), no
// body, ingress-nginx's X-Code and companions.
func errorPageRequest(req *http.Request, st *reqState) *http.Request {
	out := req.Clone(req.Context())
	if out.Method != http.MethodHead {
		out.Method = http.MethodGet
	}
	_, q, _ := strings.Cut(st.target, "?")
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = "/", "", q
	out.Body, out.ContentLength, out.GetBody = nil, 0, nil
	out.Header = http.Header{"User-Agent": {""}} // none, as on the fast path (not Go's default)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"} {
		if v := req.Header.Get(k); v != "" {
			out.Header.Set(k, v)
		}
	}
	for _, h := range errorPageHeaders(st, req.Header.Get("Accept"), st.target, st.requestID) {
		if h[1] != "" {
			out.Header.Set(h[0], h[1])
		}
	}
	return out
}
