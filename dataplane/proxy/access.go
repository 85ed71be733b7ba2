package proxy

import (
	"context"
	"net/http"
	"net/netip"

	"portico.dev/portico/dataplane/access"
	"portico.dev/portico/dataplane/route"
)

// Access control (route.Access, docs/access-control.md), applied by applyPolicy on every serving
// path in ingress-nginx's phase order: a CORS preflight is answered first (nginx's rewrite
// phase, where ingress-nginx's CORS block sits), then the rate and connection limits (its
// preaccess phase), then the source ranges and the authentication (its access phase, where
// satisfy any lets either pass). Each refusal is the proxy's own answer, with its headers in
// st.answerHeaders; what a forwarded request carries besides (CORS headers on the answer, the
// Authorization header taken out) is in st.respSet and st.upstreamDrop.

// Messages of the access refusals (the answer's body says which rule refused).
const (
	msgDenied       = "access denied: the client's address is not allowed"
	msgUnauthorized = "authentication required"
	msgRateLimited  = "too many requests from this client address"
	msgConnLimited  = "too many requests in progress from this client address"
)

// limitState is what a request holds of a connection limit (limit-connections): the zone and
// address to give its slot back to (releaseLimits), and whether the limits were checked for it
// already (a request an event loop handed to the goroutine path is not counted twice).
type limitState struct {
	zone     *access.ConnZone
	addr     netip.Addr // the client the slot was taken for
	admitted bool
}

// checkAccess applies a route's access control to a request. It returns 0 when the request goes
// on, else the status and message of the proxy's answer (its headers in st.answerHeaders).
func (h *Handler) checkAccess(a *route.Access, req reqView, st *reqState) (int, string) {
	if c := a.CORS; c != nil {
		origin, has := req.Header("Origin")
		if allow := c.AllowOrigin(origin, has); allow != "" {
			st.respSet = corsHeaders(c, allow) // on the backend's answer or the proxy's
			if req.Method() == http.MethodOptions {
				// The preflight: answered here, before limits and authentication, as
				// ingress-nginx does (browsers send no credentials with it).
				return http.StatusNoContent, ""
			}
		}
	}
	if l := a.Limit; l != nil && !st.limits.admitted && !l.Exempts(st.client) {
		now := st.start
		if (l.RPS != nil && !l.RPS.Allow(st.client, now)) || (l.RPM != nil && !l.RPM.Allow(st.client, now)) {
			h.metrics.AccessDenied.WithLabelValues("rate-limit").Inc()
			return st.table.Limits.LimitStatus, msgRateLimited
		}
		if l.Conns != nil {
			if !l.Conns.Acquire(st.client) {
				h.metrics.AccessDenied.WithLabelValues("connection-limit").Inc()
				return st.table.Limits.LimitStatus, msgConnLimited
			}
			st.limits.zone, st.limits.addr = l.Conns, st.client
		}
	}
	st.limits.admitted = true
	if a.Basic != nil {
		st.upstreamDrop = true // as ingress-nginx: credentials never reach the backend
	}
	ranged := a.RangesAllow(st.client)
	if a.SatisfyAny && ranged && len(a.Allow) > 0 {
		// satisfy any: the allow list lets the client in without credentials (an address no
		// range names, with a deny list alone, is nginx's "declined": authentication decides).
		// The auth service is not asked: the client's copies of its headers are removed.
		if ea := a.External; ea != nil {
			st.upstreamSet = ea.ClearedHeaders()
		}
		return 0, ""
	}
	if !ranged && !(a.SatisfyAny && (a.Basic != nil || a.External != nil)) {
		h.metrics.AccessDenied.WithLabelValues("source-range").Inc()
		return http.StatusForbidden, msgDenied
	}
	if b := a.Basic; b != nil {
		authz, _ := req.Header("Authorization")
		user, pass, ok := access.ParseBasic(authz)
		if !ok || !b.Users.Verify(user, pass) {
			h.metrics.AccessDenied.WithLabelValues("basic-auth").Inc()
			st.answerHeaders = append(st.answerHeaders, [2]string{"WWW-Authenticate", b.Challenge})
			return http.StatusUnauthorized, msgUnauthorized
		}
	}
	if ea := a.External; ea != nil {
		if st.onLoop {
			return codeHandoff, "external-auth" // the sub-request waits: the goroutine path's
		}
		res := h.authorize(context.Background(), ea, authInputOf(req, st))
		if !res.allow {
			h.metrics.AccessDenied.WithLabelValues("external-auth").Inc()
			st.answerHeaders = append(st.answerHeaders, res.response...)
			st.location = res.location
			return res.status, authMessage(res.status)
		}
		st.upstreamSet = res.upstream
		if len(res.response) > 0 {
			st.auth = &res
		}
	}
	return 0, ""
}

// codeHandoff is checkAccess's answer on an event loop for a request the goroutine path must
// serve (external authentication waits for its sub-request).
const codeHandoff = -1

// authMessage is the body's message of an external-auth refusal.
func authMessage(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return msgUnauthorized
	case http.StatusForbidden:
		return "access denied by the authentication service"
	case http.StatusFound:
		return "authentication required: redirecting to sign in"
	}
	return "the authentication service could not decide"
}

// authInputOf is the sub-request's input: the client's request as received, with the client's
// address and scheme as the proxy settled them.
func authInputOf(req reqView, st *reqState) *authInput {
	scheme := "http"
	if req.overTLS() {
		scheme = "https"
	}
	id, _ := req.Header("X-Request-Id")
	route := req.Host()
	if st.rule != nil {
		route += " " + st.rule.Path
	}
	return &authInput{method: req.Method(), scheme: scheme, host: req.Host(), target: req.Target(),
		clientIP: st.clientText, requestID: id, header: req.headerFields, route: route}
}

// corsHeaders are the CORS headers of an answer: Access-Control-Allow-Origin, then the route's.
func corsHeaders(c *route.CORS, allow string) [][2]string {
	if allow == "*" && c.Star != nil {
		return c.Star // built once
	}
	out := make([][2]string, 0, len(c.Headers)+1)
	out = append(out, [2]string{"Access-Control-Allow-Origin", allow})
	return append(out, c.Headers...)
}

// releaseLimits gives back the request's connection-limit slot, once; every end of a request
// (its answer, a new request's state, the connection's end) calls it.
func (st *reqState) releaseLimits() { st.limits.release() }

// release gives the slot back, once.
func (l *limitState) release() {
	if z := l.zone; z != nil {
		z.Release(l.addr)
		l.zone = nil
	}
}
