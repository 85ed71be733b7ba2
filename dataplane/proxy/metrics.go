package proxy

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"portico.dev/portico/dataplane/route"
)

// Metrics are the proxy's Prometheus series.
type Metrics struct {
	Requests       *prometheus.CounterVec
	Duration       *prometheus.HistogramVec
	UpstreamErrors *prometheus.CounterVec
	// UpstreamRetries counts requests moved to another endpoint after a failed connection, by
	// Service port and reason: "refused" (nothing listened) or "failed" (any other failure
	// before an answer).
	UpstreamRetries *prometheus.CounterVec
	TableSize       *prometheus.GaugeVec
	LastSync        prometheus.Gauge
	Generation      prometheus.Gauge
	Problems        prometheus.Gauge
	// Handoffs counts connections (and HTTP/2 streams) the fast path gave to net/http: reason
	// "request" (a request outside the fast path's subset, or for an h2c backend).
	Handoffs *prometheus.CounterVec
	// H2Connections counts HTTP/2 connections (h2 by ALPN, h2c with prior knowledge).
	H2Connections prometheus.Counter
	// H2Refused counts streams refused past SETTINGS_MAX_CONCURRENT_STREAMS; H2Calmed connections
	// ended with ENHANCE_YOUR_CALM (streams reset faster than they are served).
	H2Refused, H2Calmed prometheus.Counter
	// LoopConnections is how many client connections each event loop holds (Linux: HTTP/1.1,
	// cleartext and HTTPS), updated every loop tick.
	LoopConnections *prometheus.GaugeVec
	// ProxyProtocolErrors counts connections refused for their PROXY protocol header.
	ProxyProtocolErrors prometheus.Counter
	// AccessDenied counts requests refused by access policy, by reason.
	AccessDenied *prometheus.CounterVec
	// LoopHandoffs counts connections an event loop gave to the goroutine path, by reason:
	// "body" (a request body longer than a loop holds), "head" (a head longer than a loop
	// holds), "h2c" (an h2c backend), "backend-tls" (a backend spoken to over TLS), "custom-errors"
	// (a route whose error answers another backend replaces), "request"
	// (a request outside the fast path's subset).
	LoopHandoffs *prometheus.CounterVec
}

// NewMetrics registers the proxy's series with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_requests_total", Help: "Requests answered, by Ingress (namespace/name), Service port and status code.",
		}, []string{"ingress", "service", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "portico_request_duration_seconds", Help: "Time from request to the end of the response headers, by Service port.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"service"}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_upstream_errors_total", Help: "Failed exchanges with backends, by Service port and kind (connect, timeout, other, mirror-dropped: a mirrored copy dropped at the in-flight bound).",
		}, []string{"service", "kind"}),
		UpstreamRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_upstream_retries_total", Help: "Requests moved to another endpoint after a failed connection, by Service port and reason (refused, failed).",
		}, []string{"service", "reason"}),
		TableSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_routing_table_size", Help: "Size of the routing table in use, by what is counted.",
		}, []string{"kind"}),
		LastSync: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_last_sync_timestamp_seconds", Help: "When the routing table in use was published.",
		}),
		Generation: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_config_generation", Help: "Number of routing tables published since start.",
		}),
		Problems: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "portico_ingress_problems", Help: "Problems found by the last compile (invalid backends, TLS Secrets, conflicts).",
		}),
		Handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_http_handoffs_total", Help: "Connections and HTTP/2 streams the fast path handed to net/http, by reason (request).",
		}, []string{"reason"}),
		H2Connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portico_http2_connections_total", Help: "HTTP/2 connections accepted (h2 by ALPN, h2c with prior knowledge).",
		}),
		H2Refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portico_http2_refused_streams_total", Help: "HTTP/2 streams refused past the concurrent stream limit (REFUSED_STREAM).",
		}),
		H2Calmed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portico_http2_enhance_your_calm_total", Help: "HTTP/2 connections closed for opening streams faster than they are served (rapid reset).",
		}),
		LoopConnections: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "portico_event_loop_connections", Help: "HTTP/1.1 client connections (cleartext and HTTPS) held by each event loop.",
		}, []string{"loop"}),
		ProxyProtocolErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "portico_proxy_protocol_errors_total", Help: "Connections closed on a listener that reads the PROXY protocol for a missing, malformed or late header.",
		}),
		AccessDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_access_denied_total", Help: "Requests the proxy refused by access policy, by reason (source-range, basic-auth, external-auth, client-certificate, rate-limit, connection-limit).",
		}, []string{"reason"}),
		LoopHandoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "portico_event_loop_handoffs_total", Help: "Connections an event loop handed to the goroutine path, by reason (body, chunked, expect, head, h2c, request).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Requests, m.Duration, m.UpstreamErrors, m.UpstreamRetries, m.TableSize, m.LastSync, m.Generation, m.Problems, m.Handoffs,
		m.H2Connections, m.H2Refused, m.H2Calmed, m.LoopConnections, m.LoopHandoffs, m.ProxyProtocolErrors, m.AccessDenied)
	return m
}

func (m *Metrics) observeTable(t *route.Table, problems int) {
	m.TableSize.WithLabelValues("ingresses").Set(float64(t.Stats.Ingresses))
	m.TableSize.WithLabelValues("hosts").Set(float64(t.Stats.Hosts))
	m.TableSize.WithLabelValues("rules").Set(float64(t.Stats.Rules))
	m.TableSize.WithLabelValues("backends").Set(float64(t.Stats.Backends))
	m.TableSize.WithLabelValues("endpoints").Set(float64(t.Stats.Endpoints))
	m.Problems.Set(float64(problems))
	m.Generation.Inc()
	m.LastSync.SetToCurrentTime()
}

var statusCodes [600]string

func init() {
	for i := range statusCodes {
		statusCodes[i] = strconv.Itoa(i)
	}
}

func codeString(c int) string {
	if c >= 0 && c < len(statusCodes) {
		return statusCodes[c]
	}
	return strconv.Itoa(c)
}
