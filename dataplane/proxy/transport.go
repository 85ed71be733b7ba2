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
// says, and moves an idempotent request without a body to another endpoint when the connection
// fails (nothing was sent, so nothing is repeated). When the request's table has no other
// endpoint, the retry routes through the table in use now: a request that loaded a table just
// before its endpoints were replaced still reaches a new one.
type transport struct {
	h1, h2c *http.Transport
	retries int
	// reroute returns the backend the request maps to in the current table, or nil.
	reroute func(*http.Request) *route.Backend
}

func newTransport(o Options) *transport {
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
	return &transport{h1: h1, h2c: h2c, retries: o.Retries}
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	st := req.Context().Value(ctxKey{}).(*reqState)
	rt := t.h1
	if st.backend.Protocol == route.H2C {
		rt = t.h2c
	}
	for attempt := 0; ; attempt++ {
		req.URL.Host = st.endpoint.Addr
		stats := st.endpoint.Stats
		stats.InFlight.Add(1)
		resp, err := rt.RoundTrip(req)
		stats.InFlight.Add(-1)
		if err == nil {
			stats.Succeeded()
			return resp, nil
		}
		if !isDialError(err) {
			return nil, err
		}
		now := time.Now()
		stats.Failed(now)
		if attempt >= t.retries || !replayable(req) {
			return nil, err
		}
		next := st.backend.Pick(now, st.endpoint)
		if next == nil && t.reroute != nil {
			if b := t.reroute(req); b != nil && b != st.backend && b.Protocol == st.backend.Protocol {
				st.backend = b
				next = b.Pick(now, st.endpoint)
			}
		}
		if next == nil {
			return nil, err
		}
		st.endpoint, st.pinned = next, false
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
