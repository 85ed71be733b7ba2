package l4

import "github.com/prometheus/client_golang/prometheus"

// Failure reasons, the reason label of portico_l4_failures_total.
const (
	// ReasonLimit: a TCP connection closed at once because its listener holds MaxConns, or a
	// UDP datagram of a new client dropped because the flow table holds MaxFlows.
	ReasonLimit = "limit"
	// ReasonNoEndpoint: a connection or flow with no endpoint to go to (none to pick, or
	// every attempt failed); the client's connection is reset, its datagram dropped.
	ReasonNoEndpoint = "no_endpoint"
	// ReasonRefused: one connection attempt refused (the next endpoint is tried), or a UDP
	// endpoint answering "port unreachable" (the flow ends).
	ReasonRefused = "refused"
	// ReasonConnect: one connection attempt failed otherwise: a timeout, no route (for UDP,
	// connecting the flow's socket failed).
	ReasonConnect = "connect"
	// ReasonReset: an established TCP connection ended by an error on either side (a reset,
	// a broken pipe); both sides are then reset.
	ReasonReset = "reset"
	// ReasonIdle: a TCP connection closed after IdleTimeout without a byte either way.
	ReasonIdle = "idle"
	// ReasonDrain: a TCP connection still open when Drain's deadline passed, closed.
	ReasonDrain = "drain"
	// ReasonDraining: a UDP datagram of a new client dropped while the listener drains.
	ReasonDraining = "draining"
)

// Directions, the direction label of portico_l4_bytes_total and portico_l4_datagrams_total.
const (
	// DirectionIn is from clients to backends.
	DirectionIn = "in"
	// DirectionOut is from backends to clients.
	DirectionOut = "out"
)

// Metrics are the forwarders' Prometheus series, shared by all of them: each forwarder's
// series carry its Name as the listener label ("tcp/5432", "udp/53"). The vectors are
// exported for the wiring's tests; forwarders write to them, nothing else should.
type Metrics struct {
	// Connections counts TCP connections accepted (those then refused at the limit
	// included) and UDP flows created.
	Connections *prometheus.CounterVec
	// Active is the TCP connections and UDP flows open now.
	Active *prometheus.GaugeVec
	// Bytes counts payload bytes forwarded, by direction (in: from clients).
	Bytes *prometheus.CounterVec
	// Datagrams counts UDP datagrams forwarded, by direction.
	Datagrams *prometheus.CounterVec
	// Failures counts what went wrong, by reason (the Reason constants).
	Failures *prometheus.CounterVec
}

// NewMetrics returns the forwarders' series, registered with reg unless reg is nil.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_l4_connections_total", Help: "TCP connections accepted and UDP flows created, by listener (tcp/PORT, udp/PORT).",
		}, []string{"listener"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_l4_active_connections", Help: "TCP connections and UDP flows open, by listener.",
		}, []string{"listener"}),
		Bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_l4_bytes_total", Help: "Payload bytes forwarded, by listener and direction (in: from clients, out: to clients).",
		}, []string{"listener", "direction"}),
		Datagrams: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_l4_datagrams_total", Help: "UDP datagrams forwarded, by listener and direction (in: from clients, out: to clients).",
		}, []string{"listener", "direction"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_l4_failures_total", Help: "TCP and UDP forwarding failures, by listener and reason (limit, no_endpoint, refused, connect, reset, idle, drain, draining).",
		}, []string{"listener", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.Active, m.Bytes, m.Datagrams, m.Failures)
	}
	return m
}

// Forget deletes the series of a listener that is gone (after its forwarder drained).
func (m *Metrics) Forget(listener string) {
	l := prometheus.Labels{"listener": listener}
	m.Connections.DeletePartialMatch(l)
	m.Active.DeletePartialMatch(l)
	m.Bytes.DeletePartialMatch(l)
	m.Datagrams.DeletePartialMatch(l)
	m.Failures.DeletePartialMatch(l)
}

// listenerMetrics are one listener's series, looked up once: the forwarders touch them per
// connection and per chunk or datagram.
type listenerMetrics struct {
	conns                     prometheus.Counter
	active                    prometheus.Gauge
	bytesIn, bytesOut         prometheus.Counter
	datagramsIn, datagramsOut prometheus.Counter
	limit, noEndpoint         prometheus.Counter
	refused, connect          prometheus.Counter
	reset, idle, drain        prometheus.Counter
	draining                  prometheus.Counter
}

// listener returns the series of a TCP listener, or of a UDP one: only those that apply to
// the protocol exist (the others are nil), so a listener shows no series it can never move.
func (m *Metrics) listener(name string, udp bool) *listenerMetrics {
	if m == nil {
		m = NewMetrics(nil)
	}
	f := func(reason string) prometheus.Counter { return m.Failures.WithLabelValues(name, reason) }
	l := &listenerMetrics{
		conns:      m.Connections.WithLabelValues(name),
		active:     m.Active.WithLabelValues(name),
		bytesIn:    m.Bytes.WithLabelValues(name, DirectionIn),
		bytesOut:   m.Bytes.WithLabelValues(name, DirectionOut),
		limit:      f(ReasonLimit),
		noEndpoint: f(ReasonNoEndpoint),
		refused:    f(ReasonRefused),
		connect:    f(ReasonConnect),
	}
	if udp {
		l.datagramsIn = m.Datagrams.WithLabelValues(name, DirectionIn)
		l.datagramsOut = m.Datagrams.WithLabelValues(name, DirectionOut)
		l.draining = f(ReasonDraining)
	} else {
		l.reset, l.idle, l.drain = f(ReasonReset), f(ReasonIdle), f(ReasonDrain)
	}
	return l
}
