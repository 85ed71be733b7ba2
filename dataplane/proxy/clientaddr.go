package proxy

import (
	"bytes"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/route"
)

// The client's address (docs/access-control.md, "The client's address"). A connection's peer is
// the address it came from, or, on listeners that read the PROXY protocol (the fleet's
// spec.clientAddress.proxyProtocol), the source its header names. A request's client is its
// connection's peer, or, when the peer is a trusted proxy (spec.clientAddress.trustedProxies),
// the rightmost address of X-Forwarded-For that is not trusted: the address the nearest
// untrusted party connected from. Allow lists, rate limits, consistent hashing,
// X-Forwarded-For, X-Real-IP and the access log all use that one address (reqState.client),
// which decide settles once per request on every serving path.

// clientView is what a request's client is learnt from.
type clientView interface {
	// peerIP is the connection's peer (after the PROXY protocol), as an address and as text.
	peerIP() (netip.Addr, string)
	// forwardedFor calls yield with each X-Forwarded-For field value, in order, until it
	// returns false.
	forwardedFor(yield func(string) bool)
}

// setClient settles st's client: the peer, or behind trusted proxies the rightmost untrusted
// address of X-Forwarded-For (st.trusted is then set: the request's X-Forwarded-* come from a
// proxy the fleet trusts and are passed on).
func (st *reqState) setClient(ca *route.ClientAddressing, req clientView) {
	st.client, st.clientText = req.peerIP()
	st.trusted = false
	if len(ca.Trusted) == 0 || !ca.TrustedPeer(st.client) {
		return
	}
	st.trusted = true
	// The last maxHops entries, in a ring: the right end is what the trusted proxies wrote.
	var ring [maxHops]string
	n := 0
	req.forwardedFor(func(v string) bool {
		for v != "" {
			var hop string
			hop, v, _ = strings.Cut(v, ",")
			if hop = strings.TrimSpace(hop); hop != "" {
				ring[n%maxHops] = hop
				n++
			}
		}
		return true
	})
	var hops [maxHops]string
	k := min(n, maxHops)
	for i := range k {
		hops[i] = ring[(n-k+i)%maxHops]
	}
	if a, ok := clientOf(ca, hops[:k]); ok {
		st.client, st.clientText = a, a.String()
	}
}

// maxHops bounds the X-Forwarded-For entries read: of a longer chain, the last maxHops (the
// right end, which the trusted proxies wrote) are walked, and the walk stops at the leftmost
// kept.
const maxHops = 32

// clientOf walks hops (X-Forwarded-For, leftmost first) from the right through trusted
// proxies: the first untrusted address is the client. When every hop is trusted, the leftmost
// is. An entry that is no address ends the walk at the hop before it, which is trusted and
// reported the garbage: ok is false when that is the peer itself.
func clientOf(ca *route.ClientAddressing, hops []string) (netip.Addr, bool) {
	var last netip.Addr
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHop(hops[i])
		if err != nil {
			return last, last.IsValid()
		}
		last = a
		if !ca.TrustedPeer(a) {
			return a, true
		}
	}
	return last, last.IsValid()
}

// parseHop reads one X-Forwarded-For entry: an address, with or without a port
// ("192.0.2.1:4711", "[2001:db8::1]:4711"), as balancers write them.
func parseHop(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		var ap netip.AddrPort
		if ap, err = netip.ParseAddrPort(s); err != nil {
			return netip.Addr{}, err
		}
		a = ap.Addr()
	}
	return a.Unmap(), nil
}

// proxyHeader reads the PROXY protocol header a listener that reads it expects before
// anything else, by deadline. The header's source becomes the connection's peer (a LOCAL
// header, a balancer's health check, keeps the connection's own); it returns the bytes read
// past the header, which come before the connection's. ok is false, the connection to be
// closed, on a missing or malformed header or a client that sends none in time.
func (c *h1Conn) proxyHeader(deadline time.Time) (rest []byte, ok bool) {
	h, rest, err := l4.ReadProxyHeader(c.c, deadline)
	if err != nil {
		c.s.h.metrics.ProxyProtocolErrors.Inc()
		c.s.h.log.V(1).Info("PROXY protocol header refused", "peer", c.client, "error", err.Error())
		return nil, false
	}
	if !h.Local {
		c.setProxySource(h.Source)
	}
	return rest, true
}

// setProxySource makes a PROXY protocol header's source the connection's peer.
func (c *h1Conn) setProxySource(src netip.AddrPort) {
	c.ip = src.Addr().Unmap()
	c.client = c.ip.String()
	c.remote = net.TCPAddrFromAddrPort(src)
}

// peerIP and forwardedFor make an h1Conn a clientView.
func (c *h1Conn) peerIP() (netip.Addr, string) { return c.ip, c.client }

func (c *h1Conn) forwardedFor(yield func(string) bool) {
	hd := &c.head
	for i := range hd.lines {
		if l := &hd.lines[i]; l.kind == hXForwardedFor && !yield(bytesView(hd.buf[l.vs:l.ve])) {
			return
		}
	}
}

// appendForwarding appends the forwarding headers of the request to a backend: X-Forwarded-For
// (the peer; behind trusted proxies the chain they sent, then the peer), X-Forwarded-Host,
// X-Forwarded-Port (when port is set), X-Forwarded-Proto (each the trusted proxy's when it sent
// one, else the proxy's own view), and X-Real-IP, the client (ingress-nginx sends it too).
// Client-sent versions of these headers never pass otherwise: the parser drops them.
func (c *h1Conn) appendForwarding(o []byte, port bool) []byte {
	hd, st := &c.head, &c.st
	o = append(o, "X-Forwarded-For: "...)
	if st.trusted {
		n := len(o)
		c.forwardedFor(func(v string) bool {
			if v = strings.TrimSpace(v); v != "" {
				if len(o) > n {
					o = append(o, ", "...)
				}
				o = append(o, v...)
			}
			return true
		})
		if len(o) > n {
			o = append(o, ", "...)
		}
	}
	o = append(o, c.client...)
	o = append(o, "\r\nX-Forwarded-Host: "...)
	if v, ok := c.trustedValue(hXForwardedHost); ok {
		o = append(o, v...)
	} else {
		o = append(o, hd.host...)
	}
	if port {
		o = append(o, "\r\nX-Forwarded-Port: "...)
		if v, ok := c.trustedValue(hXForwardedPort); ok {
			o = append(o, v...)
		} else {
			o = append(o, c.port...)
		}
	}
	o = append(o, "\r\nX-Forwarded-Proto: "...)
	if v, ok := c.trustedValue(hXForwardedProto); ok {
		o = append(o, v...)
	} else {
		o = append(o, c.proto...)
	}
	o = append(o, "\r\nX-Real-IP: "...)
	o = append(o, st.clientText...)
	return append(o, "\r\n"...)
}

// trustedValue is the value a trusted proxy sent in the first header of kind k.
func (c *h1Conn) trustedValue(k hkind) ([]byte, bool) {
	if !c.st.trusted {
		return nil, false
	}
	hd := &c.head
	for i := range hd.lines {
		if l := &hd.lines[i]; l.kind == k {
			if v := bytes.TrimSpace(hd.buf[l.vs:l.ve]); len(v) > 0 && validForwardedValue(v) {
				return v, true
			}
		}
	}
	return nil, false
}

// validForwardedValue: a forwarded host, port or proto is passed on only when it is a plain
// token (letters, digits and . - : [ ] _), so a trusted proxy's header cannot carry more than it
// should.
func validForwardedValue(v []byte) bool {
	for _, b := range v {
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '.' || b == '-' || b == ':' || b == '[' || b == ']' || b == '_') {
			return false
		}
	}
	return true
}

// forwardedProto is the scheme the client used: the trusted proxy's X-Forwarded-Proto, else
// the connection's.
func (c *h1Conn) forwardedProto() string {
	if v, ok := c.trustedValue(hXForwardedProto); ok {
		return string(v)
	}
	return c.proto
}

// setForwarding sets the forwarding headers on the net/http path's outbound request, as
// appendForwarding writes them on the fast path (httputil.ReverseProxy has removed the
// client's X-Forwarded-For, -Host and -Proto before Rewrite runs; the others are replaced
// here). The client's Forwarded header is dropped, as the fast path does.
func setForwarding(h http.Header, in *http.Request, st *reqState, port bool) {
	_, peer := httpReq{in, st}.peerIP()
	xff := peer
	if st.trusted {
		var b strings.Builder
		for _, v := range in.Header["X-Forwarded-For"] {
			if v = strings.TrimSpace(v); v != "" {
				b.WriteString(v)
				b.WriteString(", ")
			}
		}
		b.WriteString(peer)
		xff = b.String()
	}
	trustedValue := func(name, own string) string {
		if st.trusted {
			if v := strings.TrimSpace(in.Header.Get(name)); v != "" && validForwardedValue([]byte(v)) {
				return v
			}
		}
		return own
	}
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	h.Set("X-Forwarded-For", xff)
	h.Set("X-Forwarded-Host", trustedValue("X-Forwarded-Host", in.Host))
	if port {
		h.Set("X-Forwarded-Port", trustedValue("X-Forwarded-Port", st.port))
	} else {
		h.Del("X-Forwarded-Port")
	}
	h.Set("X-Forwarded-Proto", trustedValue("X-Forwarded-Proto", proto))
	h.Set("X-Real-Ip", st.clientText)
	for _, k := range [...]string{"Forwarded", "X-Forwarded-Scheme", "X-Scheme", "X-Forwarded-Ssl", "X-Forwarded-Prefix", "X-Original-Forwarded-For"} {
		h.Del(k) // the client's: scheme and prefix hints backends would believe
	}
}

// clientForLog is the access log's client: the peer's address and port, or, behind a trusted
// proxy, the client's address as settled for the request (its port is the proxy's business).
func clientForLog(st *reqState, peer string) string {
	if st.trusted && st.clientText != "" {
		return st.clientText
	}
	return peer
}
