package proxy

import (
	"errors"
	"net"
	"net/http"
	"syscall"
	"time"

	"portico.dev/portico/dataplane/route"
)

// transport sends a request to the endpoint chosen for it, over HTTP/1.1 or h2c as the backend
// says. When the connection fails before any answer (refused, or closed or reset unanswered),
// Handler.retry decides whether the request goes on to another endpoint; the Transport itself
// retries a reused connection the backend had closed.
type transport struct {
	h1, h2c *http.Transport
	h       *Handler // retry decides
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
	h1 := base()
	h2c := base()
	h2c.Protocols = new(http.Protocols)
	h2c.Protocols.SetUnencryptedHTTP2(true)
	return &transport{h1: h1, h2c: h2c, h: h}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	rt := t.h1
	if st.backend.Protocol == route.H2C {
		rt = t.h2c
	}
	for {
		req.URL.Host = st.endpoint.Addr
		stats := st.endpoint.Stats
		stats.InFlight.Add(1)
		resp, err := rt.RoundTrip(req)
		stats.InFlight.Add(-1)
		if err == nil {
			stats.Succeeded()
			return resp, nil
		}
		if !isDialError(err) && (!isClosedConn(err) || req.Context().Err() != nil) {
			return nil, err
		}
		if !t.h.retry(st, err, replayable(req), req.Host, req.URL.Path) {
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
