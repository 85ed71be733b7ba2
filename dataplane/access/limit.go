package access

import (
	"fmt"
	"hash/maphash"
	"math"
	"math/bits"
	"net/netip"
	"sync"
	"time"
)

// Both zones keep per-address state in a fixed table allocated up front: a key hashes (with a
// random per-zone seed, so that no one can aim addresses at one bucket) to a bucket of 8 slots
// with a mutex of its own, so two cores collide only when they serve addresses of one bucket.
// However many addresses arrive (a spoofing flood, forwarded-for headers), a zone holds at most
// its size rounded up to a multiple of 8, and a call allocates nothing.

// bucketSlots is the associativity of both tables.
const bucketSlots = 8

// tableKey is an address as a table key: 16 bytes, IPv4 in its IPv4-mapped IPv6 form, so that
// a client seen as 192.0.2.1 and as ::ffff:192.0.2.1 (a dual-stack listener) is one client.
// An IPv6 zone is not part of the key; the zero Addr is a key of its own (that of ::).
func tableKey(addr netip.Addr) [16]byte { return addr.As16() }

// bucketOf maps a key to one of n buckets by a seeded hash.
func bucketOf(seed maphash.Seed, key *[16]byte, n int) int {
	hi, _ := bits.Mul64(maphash.Bytes(seed, key[:]), uint64(n))
	return int(hi)
}

// RateZone holds one rate limit's state per client address in a fixed-size table: nginx's
// limit_req zone as ingress-nginx configures it (limit-rps, limit-rpm: rate, burst of rate
// times limit-burst-multiplier, nodelay). An Ingress that sets both limit-rps and limit-rpm
// has two zones, and a request must pass both.
//
// Allow is nginx's ngx_http_limit_req_module arithmetic, in its units (milliseconds and
// thousandths of a request, integer, truncating as nginx does): per address,
//
//	excess = max(excess - rate*elapsed + 1, 0)
//
// and the request is refused, the state left as it was, when excess > burst. A new address
// starts at excess 0. With rate r/s and burst b, b+1 requests pass at once, then one per 1/r
// seconds. (The clamp comes after the +1: an address idle long enough stands where a new one
// does, which is what lets a table forget it.)
//
// When an address's bucket is full, one slot is taken over, and the address it held starts
// afresh if it comes back: a burst's worth of requests again. The slot chosen is the least
// recently seen among those whose excess has drained (the client is within its rate: a new
// entry treats it the same but for one request; nginx's expiry too frees only such entries);
// only when all eight addresses of the bucket are over their rate, the least recently seen of
// them. A flood of new addresses (each drained at once) therefore churns among drained
// entries and does not lift the limit of a client that is being limited.
type RateZone struct {
	seed    maphash.Seed
	epoch   time.Time
	rate    int64 // thousandths of a request per second (nginx's ctx->rate)
	burst   int64 // thousandths of a request (nginx's limit->burst)
	drainMs int64 // milliseconds after which any excess has drained: elapsed is capped there
	buckets []rateBucket
}

type rateBucket struct {
	mu    sync.Mutex
	slots [bucketSlots]rateSlot
}

type rateSlot struct {
	key    [16]byte
	last   int64 // ms since the zone's epoch of the last accepted request that moved time (lr->last)
	excess int64 // thousandths of a request (lr->excess)
	seen   int64 // ms since the zone's epoch of the last request, accepted or not: the LRU order
	used   bool
}

// NewRateZone returns a zone allowing perSecond requests a second per address (fractional for
// a per-minute limit: rpm/60) plus burst requests beyond the rate (nginx's burst), keeping at
// most size addresses (rounded up to a multiple of 8; 48 bytes each). As in nginx the rate is
// kept in whole thousandths of a request per second, truncated: 1 r/m is 0.016 r/s.
//
// perSecond must be between 0.001 and 1e9, burst between 0 and 1e9, and size at least 1; the
// caller validates annotations, and NewRateZone panics on anything else.
func NewRateZone(perSecond float64, burst int, size int) *RateZone {
	rate := math.Floor(perSecond*1000 + 1e-6) // 7 r/m: 116, as nginx's 7*1000/60
	if math.IsNaN(perSecond) || rate < 1 || rate > 1e12 {
		panic(fmt.Sprintf("access: NewRateZone: rate %v per second outside 0.001..1e9", perSecond))
	}
	if burst < 0 || burst > 1e9 {
		panic(fmt.Sprintf("access: NewRateZone: burst %d outside 0..1e9", burst))
	}
	if size < 1 {
		panic(fmt.Sprintf("access: NewRateZone: size %d below 1", size))
	}
	// The epoch is a whole millisecond of wall time (keeping its monotonic reading), so that
	// for times without one, as tests write them, millisecond boundaries are the Unix ones.
	epoch := time.Now()
	epoch = epoch.Add(-time.Duration(epoch.UnixNano() % int64(time.Millisecond)))
	z := &RateZone{
		seed:    maphash.MakeSeed(),
		epoch:   epoch,
		rate:    int64(rate),
		burst:   int64(burst) * 1000,
		buckets: make([]rateBucket, (size+bucketSlots-1)/bucketSlots),
	}
	// Past drainMs, rate*elapsed/1000 >= burst+1000 > any stored excess: the answer no longer
	// depends on elapsed, and capping it keeps rate*elapsed far from overflowing.
	z.drainMs = ((z.burst+1000)*1000 + z.rate - 1) / z.rate
	return z
}

// Allow reports whether a request from addr at now is within the limit, and records it (a
// refused request changes only the address's recency, as in nginx). now comes from the
// caller's clock, one time.Now per request or event-loop tick; millisecond resolution is
// nginx's too. Allow takes the bucket's lock and does not allocate.
func (z *RateZone) Allow(addr netip.Addr, now time.Time) bool {
	key := tableKey(addr)
	ms := z.millis(now)
	b := &z.buckets[bucketOf(z.seed, &key, len(z.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.slots {
		s := &b.slots[i]
		if !s.used || s.key != key {
			continue
		}
		s.seen = ms
		elapsed := z.elapsed(s, ms)
		excess := max(s.excess-z.rate*min(elapsed, z.drainMs)/1000+1000, 0)
		if excess > z.burst {
			return false
		}
		s.excess = excess
		if elapsed != 0 {
			s.last = ms
		}
		return true
	}
	*z.victim(b, ms) = rateSlot{key: key, last: ms, seen: ms, used: true}
	return true
}

// millis returns now in whole milliseconds since the zone's epoch, rounded down.
func (z *RateZone) millis(now time.Time) int64 {
	d := now.Sub(z.epoch)
	ms := int64(d / time.Millisecond)
	if d < 0 && d%time.Millisecond != 0 {
		ms--
	}
	return ms
}

// elapsed is nginx's ms: the time since the last accepted request, a clock that went back up
// to a minute counted as none, further back as 1 ms.
func (z *RateZone) elapsed(s *rateSlot, ms int64) int64 {
	d := ms - s.last
	switch {
	case d < -60000:
		return 1
	case d < 0:
		return 0
	}
	return d
}

// victim picks the slot a new address takes: an empty one, else the least recently seen whose
// excess has drained, else the least recently seen.
func (z *RateZone) victim(b *rateBucket, ms int64) *rateSlot {
	var drained, oldest *rateSlot
	for i := range b.slots {
		s := &b.slots[i]
		if !s.used {
			return s
		}
		if oldest == nil || s.seen < oldest.seen {
			oldest = s
		}
		if s.excess-z.rate*min(z.elapsed(s, ms), z.drainMs)/1000 <= 0 && (drained == nil || s.seen < drained.seen) {
			drained = s
		}
	}
	if drained != nil {
		return drained
	}
	return oldest
}

// ConnZone counts a client address's open connections (or requests in progress): nginx's
// limit_conn, as ingress-nginx's limit-connections configures it.
//
// An address holds a slot only while its count is above zero, so no count is ever evicted:
// Release always finds what Acquire counted, and cannot underflow or touch another address.
// The price is that when all eight slots of an address's bucket hold open connections of other
// addresses, Acquire refuses: the zone fails closed, as nginx's does when its shared memory is
// full. Size the zone well above the number of addresses expected to hold connections at once
// (the bucket of a new address is full with a probability that grows as the table fills).
type ConnZone struct {
	seed    maphash.Seed
	max     int32
	buckets []connBucket
}

type connBucket struct {
	mu    sync.Mutex
	slots [bucketSlots]connSlot
}

type connSlot struct {
	key [16]byte
	n   int32 // open connections; 0: the slot is free
}

// NewConnZone returns a zone allowing max connections per address, tracking at most size
// addresses at once (rounded up to a multiple of 8; 20 bytes each). max must be between 1 and
// 2^31-1 and size at least 1; NewConnZone panics otherwise (the caller validates annotations).
func NewConnZone(max int, size int) *ConnZone {
	if max < 1 || max > math.MaxInt32 {
		panic(fmt.Sprintf("access: NewConnZone: max %d outside 1..2^31-1", max))
	}
	if size < 1 {
		panic(fmt.Sprintf("access: NewConnZone: size %d below 1", size))
	}
	return &ConnZone{
		seed:    maphash.MakeSeed(),
		max:     int32(max),
		buckets: make([]connBucket, (size+bucketSlots-1)/bucketSlots),
	}
}

// Acquire reports whether addr may open one more connection, and counts it if so. Each true
// must be followed by exactly one Release of the same address; a false must not be. It is
// false when addr already has max, or when addr has none and its bucket has no free slot.
// Acquire takes the bucket's lock and does not allocate.
func (z *ConnZone) Acquire(addr netip.Addr) bool {
	key := tableKey(addr)
	b := &z.buckets[bucketOf(z.seed, &key, len(z.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	var free *connSlot
	for i := range b.slots {
		s := &b.slots[i]
		if s.n == 0 {
			if free == nil {
				free = s
			}
			continue
		}
		if s.key == key {
			if s.n >= z.max {
				return false
			}
			s.n++
			return true
		}
	}
	if free == nil {
		return false
	}
	free.key, free.n = key, 1
	return true
}

// Release gives back one connection counted by Acquire. Releasing an address with no counted
// connection (a caller's bug) changes nothing. Release does not allocate.
func (z *ConnZone) Release(addr netip.Addr) {
	key := tableKey(addr)
	b := &z.buckets[bucketOf(z.seed, &key, len(z.buckets))]
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.slots {
		if s := &b.slots[i]; s.n > 0 && s.key == key {
			s.n--
			return
		}
	}
}
