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
// st.acc.answerHeaders; what a forwarded request carries besides (CORS headers on the answer,
// the Authorization header taken out) is in st.acc.respSet and st.acc.upstreamDrop (st.acc,
// reqAccess, exists only for routes with access control).

// Messages of the access refusals (the answer's body says which rule refused).
const (
	msgDenied       = "access denied: the client's address is not allowed"
	msgUnauthorized = "authentication required"
	msgRateLimited  = "too many requests from this client address"
	msgConnLimited  = "too many requests in progress from this client address"
)

// limitSlot is a request's hold on a connection limit (limit-connections): the zone and the
// address to give the slot back to (releaseLimits).
type limitSlot struct {
	zone *access.ConnZone
	addr netip.Addr // the client the slot was taken for
}

// carriedLimits is what an event loop hands over with a request it routed: its limits were
// checked (reqState.admitted: not counted twice), and the slot it holds, if any.
type carriedLimits struct {
	slot *limitSlot
}

// checkAccess applies a route's access control to a request. It returns 0 when the request goes
// on, else the status and message of the proxy's answer (its headers in st.acc.answerHeaders).
func (h *Handler) checkAccess(a *route.Access, req reqView, st *reqState) (int, string) {
	if c := a.CORS; c != nil {
		origin, has := req.Header("Origin")
		if allow := c.AllowOrigin(origin, has); allow != "" {
			st.access().respSet = corsHeaders(c, allow) // on the backend's answer or the proxy's
			if req.Method() == http.MethodOptions {
				// The preflight: answered here, before limits and authentication, as
				// ingress-nginx does (browsers send no credentials with it).
				return http.StatusNoContent, ""
			}
		}
	}
	if l := a.Limit; l != nil && !st.admitted && !l.Exempts(st.client) {
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
			st.access().slot = &limitSlot{zone: l.Conns, addr: st.client}
		}
	}
	st.admitted = true
	if a.Basic != nil {
		st.access().upstreamDrop = true // as ingress-nginx: credentials never reach the backend
	}
	ranged := a.RangesAllow(st.client)
	if a.SatisfyAny && ranged && len(a.Allow) > 0 {
		// satisfy any: the allow list lets the client in without credentials (an address no
		// range names, with a deny list alone, is nginx's "declined": authentication decides).
		// The auth service is not asked: the client's copies of its headers are removed.
		if ea := a.External; ea != nil {
			st.access().upstreamSet = ea.ClearedHeaders()
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
			acc := st.access()
			acc.answerHeaders = append(acc.answerHeaders, [2]string{"WWW-Authenticate", b.Challenge})
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
			acc := st.access()
			acc.answerHeaders = append(acc.answerHeaders, res.response...)
			st.location = res.location
			return res.status, authMessage(res.status)
		}
		acc := st.access()
		acc.upstreamSet = res.upstream
		if len(res.response) > 0 {
			acc.auth = &res
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
func (st *reqState) releaseLimits() {
	if a := st.acc; a != nil && a.slot != nil {
		a.slot.release()
		a.slot = nil
	}
}

// release gives the slot back, once (nil: no slot).
func (s *limitSlot) release() {
	if s != nil && s.zone != nil {
		s.zone.Release(s.addr)
		s.zone = nil
	}
}

// keepForAccess reports whether a request header line goes to the backend as far as access
// control says: not the Authorization of basic auth, nor the client's copy of a header the
// external auth service sets.
func keepForAccess(a *reqAccess, l *headerLine, buf []byte) bool {
	if a.upstreamDrop && l.kind == hAuthorization {
		return false
	}
	return a.upstreamSet == nil || !namedIn(a.upstreamSet, buf[l.start:l.nameEnd])
}

// upstreamSet is the headers external auth sets on the request to the backend.
func (st *reqState) upstreamSet() [][2]string {
	if st.acc == nil {
		return nil
	}
	return st.acc.upstreamSet
}
