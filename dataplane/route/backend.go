package route

import (
	"cmp"
	"crypto/tls"
	"hash/fnv"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

// Protocol is how the proxy speaks to a backend.
type Protocol uint8

const (
	// HTTP1 is HTTP/1.1, the default.
	HTTP1 Protocol = iota
	// H2C is HTTP/2: with prior knowledge over cleartext, chosen by the Service port's
	// appProtocol (kubernetes.io/h2c, h2c, grpc) or backend-protocol H2C or GRPC; over TLS
	// (ALPN h2) when the Backend has TLS (backend-protocol GRPCS).
	H2C
)

// UpstreamTLS is how the proxy speaks TLS to a backend (backend-protocol HTTPS or GRPCS, with
// the proxy-ssl-* annotations). Shared by the Backends with the same settings; must not be
// modified.
type UpstreamTLS struct {
	// Config is the client configuration: the server name sent (SNI), the verification (done
	// in VerifyConnection, against Name), the client certificate.
	Config *tls.Config
	// Name is the name the backend's certificate is verified against; Verify says whether it is.
	Name   string
	Verify bool
	// Key identifies the settings: upstream connections are pooled per endpoint and Key.
	Key string
}

// Balancing is how a backend picks an endpoint per request.
type Balancing uint8

const (
	// RoundRobin takes endpoints in turn.
	RoundRobin Balancing = iota
	// LeastRequest takes the less busy of two endpoints picked at random.
	LeastRequest
)

// Backend is a Service port and its endpoints. Within one Table, every rule naming the same
// Service port shares one Backend.
type Backend struct {
	Service types.NamespacedName
	// Port is the Service port as the Ingress named it ("80" or "http").
	Port      string
	Protocol  Protocol
	Balancing Balancing
	// Affinity pins a client to an endpoint with a cookie.
	Affinity bool
	// TLS, when set, encrypts the connections to the endpoints.
	TLS *UpstreamTLS
	// Endpoints are the addresses to send to: ready ones, else serving-but-terminating ones.
	Endpoints []*Endpoint
	// Problem says why there is no endpoint to send to (service not found, resource backend,
	// no ready endpoint); the proxy answers 503 with it.
	Problem string

	name string // "namespace/service:port", set by the compiler
	next atomic.Uint32
	// ring is the consistent-hash ring of a Backend some route hashes to (upstream-hash-by),
	// ordered by hash.
	ring []ringPoint
}

type ringPoint struct {
	h uint64
	e *Endpoint
}

// ringPoints is how many points each endpoint has on a ring: with n endpoints, one coming or
// going moves about 1/n of the keys, spread evenly over the others.
const ringPoints = 160

// buildRing places the Backend's endpoints on its ring.
func (b *Backend) buildRing() {
	b.ring = make([]ringPoint, 0, len(b.Endpoints)*ringPoints)
	for _, e := range b.Endpoints {
		for i := 0; i < ringPoints; i++ {
			h := fnv.New64a()
			_, _ = h.Write([]byte(e.Addr))
			_, _ = h.Write([]byte{'#', byte(i), byte(i >> 8)})
			b.ring = append(b.ring, ringPoint{h: mix64(h.Sum64()), e: e})
		}
	}
	slices.SortFunc(b.ring, func(x, y ringPoint) int { return cmp.Compare(x.h, y.h) })
}

// mix64 spreads a hash over all 64 bits (MurmurHash3's finalizer): FNV-1a of strings that
// differ in their last bytes differs mostly in its low bits, which would put every point of a
// ring, and every key, in a few narrow arcs.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// PickHash returns the endpoint a hash falls to on the ring: the first point at or after it,
// skipping ejected endpoints (unless all are); the balancer's pick when the Backend has no ring.
func (b *Backend) PickHash(h uint64, now time.Time) *Endpoint {
	n := len(b.ring)
	if n == 0 {
		return b.Pick(now, nil)
	}
	i, _ := slices.BinarySearchFunc(b.ring, h, func(p ringPoint, h uint64) int { return cmp.Compare(p.h, h) })
	for j := 0; j < n; j++ {
		if e := b.ring[(i+j)%n].e; !e.Stats.Ejected(now) {
			return e
		}
	}
	return b.ring[i%n].e
}

// Name is "namespace/service:port". Compiled backends carry it ready; called per request.
func (b *Backend) Name() string {
	if b.name != "" {
		return b.name
	}
	return b.Service.String() + ":" + b.Port
}

// Endpoint is one address ("ip:port") with counters that outlive Tables.
type Endpoint struct {
	Addr string
	// Key names the endpoint in a session-affinity cookie without revealing its address.
	Key   string
	Stats *EndpointStats
}

// EndpointKey is the affinity key of an address.
func EndpointKey(addr string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(addr))
	return strconv.FormatUint(h.Sum64(), 36)
}

// EndpointStats are the live counters of one address. They are kept across Tables, so a
// recompile neither forgets an ejection nor resets in-flight counts.
type EndpointStats struct {
	key          string        // EndpointKey of the address
	gen          atomic.Uint64 // the last compile that used the address
	InFlight     atomic.Int64
	failures     atomic.Int32
	ejectedUntil atomic.Int64 // unix nanoseconds
}

// Ejection policy: after EjectAfter consecutive connection failures an endpoint is skipped for
// EjectFor, unless every endpoint is ejected.
const (
	EjectAfter = 3
	EjectFor   = 10 * time.Second
)

// Failed records a connection failure.
func (s *EndpointStats) Failed(now time.Time) {
	if s.failures.Add(1) >= EjectAfter {
		s.ejectedUntil.Store(now.Add(EjectFor).UnixNano())
		s.failures.Store(0)
	}
}

// Eject skips the endpoint from now on for EjectFor: nothing listens there (a connection was
// refused), so there is no point in waiting for more failures.
func (s *EndpointStats) Eject(now time.Time) {
	s.ejectedUntil.Store(now.Add(EjectFor).UnixNano())
	s.failures.Store(0)
}

// Succeeded records a successful exchange.
func (s *EndpointStats) Succeeded() {
	if s.failures.Load() != 0 {
		s.failures.Store(0)
	}
}

// Ejected reports whether the endpoint is being skipped.
func (s *EndpointStats) Ejected(now time.Time) bool {
	return s.ejectedUntil.Load() > now.UnixNano()
}

// Pick returns an endpoint other than the excluded one (nil for none): round robin or least
// request, skipping ejected endpoints unless all are. It returns nil when there is none.
func (b *Backend) Pick(now time.Time, exclude *Endpoint) *Endpoint {
	n := len(b.Endpoints)
	if n == 0 || (n == 1 && b.Endpoints[0] == exclude) {
		return nil
	}
	if b.Balancing == LeastRequest && n > 1 {
		if e := b.pickP2C(now, exclude); e != nil {
			return e
		}
	}
	return b.pickRoundRobin(now, exclude)
}

// pickRoundRobin takes the next endpoint that is not excluded or ejected, else the first one
// that is only ejected.
func (b *Backend) pickRoundRobin(now time.Time, exclude *Endpoint) *Endpoint {
	n := len(b.Endpoints)
	start := int(b.next.Add(1))
	var fallback *Endpoint
	for i := 0; i < n; i++ {
		e := b.Endpoints[(start+i)%n]
		if e == exclude {
			continue
		}
		if !e.Stats.Ejected(now) {
			return e
		}
		if fallback == nil {
			fallback = e
		}
	}
	return fallback
}

func (b *Backend) pickP2C(now time.Time, exclude *Endpoint) *Endpoint {
	n := uint32(len(b.Endpoints))
	x := b.next.Add(0x9e3779b9) * 2654435761
	a, c := b.Endpoints[x%n], b.Endpoints[(x>>16)%n]
	if a == c {
		c = b.Endpoints[(x%n+1)%n]
	}
	ok := func(e *Endpoint) bool { return e != exclude && !e.Stats.Ejected(now) }
	switch {
	case ok(a) && ok(c):
		if c.Stats.InFlight.Load() < a.Stats.InFlight.Load() {
			return c
		}
		return a
	case ok(a):
		return a
	case ok(c):
		return c
	}
	return nil // both unusable: Pick scans in turn
}

// ByKey finds an endpoint by its affinity key.
func (b *Backend) ByKey(key string) *Endpoint {
	for _, e := range b.Endpoints {
		if e.Key == key {
			return e
		}
	}
	return nil
}

// StatsRegistry hands out the EndpointStats of each address, shared by every Table.
type StatsRegistry struct {
	mu  sync.Mutex
	m   map[string]*EndpointStats
	gen uint64
}

// NewStatsRegistry returns an empty registry.
func NewStatsRegistry() *StatsRegistry { return &StatsRegistry{m: map[string]*EndpointStats{}} }

// Get returns the stats of addr, creating them.
func (r *StatsRegistry) Get(addr string) *EndpointStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.m[addr]
	if s == nil {
		s = &EndpointStats{key: EndpointKey(addr)}
		r.m[addr] = s
	}
	return s
}

// nextGeneration starts a compile: the stats it uses are marked with the number returned.
func (r *StatsRegistry) nextGeneration() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	return r.gen
}

// retain forgets every address the compile of generation gen did not use (so the registry does
// not grow without bound as pods come and go). used counts them: when it equals the registry's
// size there is nothing to forget.
func (r *StatsRegistry) retain(gen uint64, used int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.m) == used {
		return
	}
	for a, s := range r.m {
		if s.gen.Load() != gen {
			delete(r.m, a)
		}
	}
}
