// Package l4 forwards TCP connections and UDP datagrams to backend endpoints, and reads the
// bytes that start a connection where routing needs them: a TLS ClientHello (SNI, for TLS
// passthrough) and a PROXY protocol header.
//
// It knows nothing of Kubernetes or of the routing table: a forwarder asks a Picker for an
// endpoint address per connection (TCP) or per client flow (UDP) and reports back through the
// Lease it gets, so the caller's balancing and ejection apply. Listeners are the caller's too:
// a forwarder serves the net.Listener or *net.UDPConn it is given, and ServeConn takes a
// connection another listener accepted (a TLS passthrough connection, with the ClientHello
// bytes already read).
//
// Decisions (timeouts, limits, defaults) are listed in docs/data-plane.md, "TCP, UDP and TLS
// passthrough".
package l4
