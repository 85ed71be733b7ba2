package access

import (
	"math/rand/v2"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var (
	t0      = time.Unix(1_700_000_000, 0)
	client  = netip.MustParseAddr("192.0.2.1")
	client6 = netip.MustParseAddr("2001:db8::1")
)

type step struct {
	at   time.Duration // since t0
	want bool
}

// Sequences worked out by hand from ngx_http_limit_req_lookup: excess in thousandths of a
// request, elapsed in ms, rate*elapsed/1000 truncated, the clamp after the +1000.
func TestRateNginxArithmetic(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name      string
		perSecond float64
		burst     int
		steps     []step
	}{
		{"1 r/s burst 5: six at once, then one a second", 1, 5, []step{
			{0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, false},
			{999 * ms, false}, // 5000 - 999 + 1000 = 5001 > 5000
			{1000 * ms, true}, {1000 * ms, false},
			{3000 * ms, true}, {3000 * ms, true}, {3000 * ms, false},
		}},
		{"1 r/s burst 0: the clamp comes after the +1", 1, 0, []step{
			{0, true}, {0, false},
			{1000 * ms, true}, // 0 - 1000 + 1000 = 0; max(0-1000, 0) + 1000 would refuse
			{1500 * ms, false},
			{2000 * ms, true},
		}},
		{"6 r/m burst 2", 6.0 / 60, 2, []step{
			{0, true}, {0, true}, {0, true}, {0, false},
			{9999 * ms, false}, // 2000 - 999 + 1000 = 2001
			{10 * time.Second, true}, {10 * time.Second, false},
			{20 * time.Second, true},
		}},
		{"1 r/m is 16 thousandths a second, as in nginx", 1.0 / 60, 0, []step{
			{0, true},
			{60 * time.Second, false}, // 0 - 960 + 1000 = 40
			{62500 * ms, true},
		}},
		{"1000 r/s: nothing drains within a millisecond", 1000, 0, []step{
			{0, true}, {ms / 2, false}, {ms, true}, {ms, false},
		}},
		{"the clock going back drains nothing", 1, 0, []step{
			{10 * time.Second, true}, {9 * time.Second, false}, {-60 * time.Second, false},
			{11 * time.Second, true},
		}},
	} {
		z := NewRateZone(tc.perSecond, tc.burst, 64)
		for i, s := range tc.steps {
			if got := z.Allow(client, t0.Add(s.at)); got != s.want {
				t.Errorf("%s: request %d at %v: Allow = %v, want %v", tc.name, i+1, s.at, got, s.want)
			}
		}
	}
}

// Addresses have limits of their own; an IPv4 address and its IPv4-mapped IPv6 form are one.
func TestRateKeys(t *testing.T) {
	z := NewRateZone(1, 0, 1024)
	if !z.Allow(client, t0) || z.Allow(client, t0) {
		t.Fatal("192.0.2.1 is not limited to one request")
	}
	if z.Allow(netip.MustParseAddr("::ffff:192.0.2.1"), t0) {
		t.Error("::ffff:192.0.2.1 is not 192.0.2.1")
	}
	for _, other := range []string{"192.0.2.2", "2001:db8::1", "2001:db8::2", "::192.0.2.1", "fe80::1%eth0"} {
		if !z.Allow(netip.MustParseAddr(other), t0) {
			t.Errorf("%s is limited by another address's requests", other)
		}
	}
	if z.Allow(netip.MustParseAddr("fe80::1%eth1"), t0) {
		t.Error("the IPv6 zone is part of the key")
	}
}

// A flood of a million new addresses leaves the table at its size and allocates nothing, and
// does not evict steady clients. The zone allows 100 r/s, burst 5. A steady client over its
// rate (a request every 3 ms) is answered exactly as by a zone that never saw the flood: it is
// never evicted, which would give it a fresh burst. In the first flood, 100,000 addresses a
// second into 65536 entries, a light client within its rate (every 20 ms) stays too, by
// recency (8 new addresses in its bucket between two of its requests: about 1e-10). The second flood, a million a second into 1024 entries, puts 23 new addresses in a
// bucket between two requests: it would evict the steady client under any LRU, and keeps it
// because it is over its rate.
func TestRateFlood(t *testing.T) {
	for _, tc := range []struct {
		name    string
		size    int
		spacing time.Duration
		light   bool
	}{
		{"100k addresses a second, 65536 entries", 65536, 10 * time.Microsecond, true},
		{"1M addresses a second, 1024 entries", 1024, time.Microsecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const perSecond = 100
			flooded, quiet := NewRateZone(perSecond, 5, tc.size), NewRateZone(perSecond, 5, tc.size)
			steady, light := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::99")
			rng := rand.New(rand.NewPCG(1, 2))
			steadyEvery := int(3 * time.Millisecond / tc.spacing)
			lightEvery := int(20 * time.Millisecond / tc.spacing)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			// The steady client starts with its burst, all at once: from then on it is over
			// its rate.
			allowed := 0
			for range 6 {
				if !flooded.Allow(steady, t0) || !quiet.Allow(steady, t0) {
					t.Fatal("the burst is refused")
				}
				allowed++
			}
			const flood = 1_000_000
			for i := range flood {
				now := t0.Add(time.Duration(i) * tc.spacing)
				if i%steadyEvery == 0 {
					got, want := flooded.Allow(steady, now), quiet.Allow(steady, now)
					if got != want {
						t.Fatalf("at %v the flooded zone answers %v, the quiet one %v", now.Sub(t0), got, want)
					}
					if got {
						allowed++
					}
				}
				if tc.light && i%lightEvery == 0 {
					if i > 0 && !rateHolds(flooded, light) {
						t.Fatalf("at %v the light client was evicted", now.Sub(t0))
					}
					if !flooded.Allow(light, now) {
						t.Fatalf("at %v the light client was refused", now.Sub(t0))
					}
				}
				flooded.Allow(randomAddr(rng), now)
			}
			runtime.ReadMemStats(&after)

			// The steady client was limited all along: its burst and the rate, no more.
			seconds := time.Duration(flood) * tc.spacing / time.Second
			if most := 6 + perSecond*int(seconds); allowed > most || allowed < most/2 {
				t.Errorf("the steady client got %d requests through in %ds, want at most %d", allowed, seconds, most)
			}
			if got := rateEntries(flooded); got != tc.size {
				t.Errorf("%d entries after the flood, want the table's %d", got, tc.size)
			}
			if !rateHolds(flooded, steady) {
				t.Error("the steady client was evicted")
			}
			if grew := after.TotalAlloc - before.TotalAlloc; !raceEnabled && grew > 64<<10 {
				t.Errorf("the flood allocated %d bytes", grew)
			}
		})
	}
}

// randomAddr returns an IPv4 address one time in four, else an IPv6 one.
func randomAddr(rng *rand.Rand) netip.Addr {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	if b[0]&3 == 0 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func rateEntries(z *RateZone) (n int) {
	for i := range z.buckets {
		for _, s := range z.buckets[i].slots {
			if s.used {
				n++
			}
		}
	}
	return n
}

func rateHolds(z *RateZone, addr netip.Addr) bool {
	key := tableKey(addr)
	for _, s := range z.buckets[bucketOf(z.seed, &key, len(z.buckets))].slots {
		if s.used && s.key == key {
			return true
		}
	}
	return false
}

// In a table of one bucket: a drained entry goes before older ones still over their rate;
// when all are over their rate the least recently seen goes; an evicted client starts afresh.
func TestRateEviction(t *testing.T) {
	z := NewRateZone(1, 2, bucketSlots)
	addrs := make([]netip.Addr, bucketSlots+2)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})
	}
	// 0..6 use their burst (over their rate for the next seconds); 7, seen last, sends one
	// request and is drained at once.
	for i := range bucketSlots - 1 {
		for range 3 {
			z.Allow(addrs[i], t0.Add(time.Duration(i)*time.Millisecond))
		}
	}
	z.Allow(addrs[7], t0.Add(10*time.Millisecond))
	z.Allow(addrs[8], t0.Add(11*time.Millisecond))
	if rateHolds(z, addrs[7]) || !rateHolds(z, addrs[0]) {
		t.Fatal("the drained entry was not the one replaced")
	}
	// Now 8 has a request in hand too: over its rate once it uses its burst. All eight are
	// over their rate; 0 was seen longest ago.
	z.Allow(addrs[8], t0.Add(12*time.Millisecond))
	z.Allow(addrs[8], t0.Add(12*time.Millisecond))
	z.Allow(addrs[9], t0.Add(13*time.Millisecond))
	if rateHolds(z, addrs[0]) || !rateHolds(z, addrs[1]) || !rateHolds(z, addrs[8]) {
		t.Fatal("the least recently seen entry was not the one replaced")
	}
	// 0 starts afresh: its burst again, where it had none left.
	for i := range 3 {
		if !z.Allow(addrs[0], t0.Add(14*time.Millisecond)) {
			t.Errorf("evicted client refused on request %d of its new burst", i+1)
		}
	}
	if z.Allow(addrs[0], t0.Add(14*time.Millisecond)) {
		t.Error("evicted client allowed beyond its new burst")
	}
}

// Many goroutines on one address at one instant: exactly burst+1 pass, no update lost; other
// goroutines on other addresses meanwhile.
func TestRateConcurrent(t *testing.T) {
	const burst, workers, each = 99, 8, 500
	z := NewRateZone(1, burst, 4096)
	var passed atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0))
			for range each {
				if z.Allow(client6, t0) {
					passed.Add(1)
				}
				z.Allow(randomAddr(rng), t0.Add(time.Duration(rng.IntN(1000))*time.Millisecond))
			}
		})
	}
	wg.Wait()
	if got := passed.Load(); got != burst+1 {
		t.Errorf("%d requests passed, want %d", got, burst+1)
	}
}

func TestConnZone(t *testing.T) {
	z := NewConnZone(2, 1024)
	if !z.Acquire(client) || !z.Acquire(netip.MustParseAddr("::ffff:192.0.2.1")) {
		t.Fatal("two connections refused")
	}
	if z.Acquire(client) {
		t.Fatal("a third connection allowed")
	}
	if !z.Acquire(client6) {
		t.Fatal("another address refused")
	}
	z.Release(client)
	if !z.Acquire(client) {
		t.Fatal("a connection refused after a release")
	}
	// Releases without an Acquire (a caller's bug) do not underflow into extra connections.
	for range 5 {
		z.Release(client)
	}
	z.Release(netip.MustParseAddr("192.0.2.99"))
	first, second, third := z.Acquire(client), z.Acquire(client), z.Acquire(client)
	if !first || !second || third {
		t.Error("the count went wrong after extra releases")
	}
	z.Release(client)
	z.Release(client)
	z.Release(client6)
	if n := connEntries(z); n != 0 {
		t.Errorf("%d entries with nothing open", n)
	}
}

// A bucket of open connections refuses new addresses (fails closed) but not its own addresses,
// and takes new ones again once a slot is free.
func TestConnZoneFull(t *testing.T) {
	z := NewConnZone(3, bucketSlots) // one bucket
	for i := range bucketSlots {
		if !z.Acquire(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})) {
			t.Fatalf("address %d refused with free slots", i)
		}
	}
	newcomer := netip.MustParseAddr("10.0.0.200")
	if z.Acquire(newcomer) {
		t.Fatal("a ninth address got in: a count was evicted")
	}
	if !z.Acquire(netip.AddrFrom4([4]byte{10, 0, 0, 3})) {
		t.Error("an address already counted was refused its second connection")
	}
	z.Release(netip.AddrFrom4([4]byte{10, 0, 0, 5}))
	if !z.Acquire(newcomer) {
		t.Error("the newcomer was refused after a slot was freed")
	}
}

// Goroutines opening and closing connections for a few addresses: never more than max open
// per address as the zone counts them, and every count back to zero at the end.
func TestConnZoneConcurrent(t *testing.T) {
	const maxConns, workers, each = 3, 8, 2000
	z := NewConnZone(maxConns, 64)
	addrs := []netip.Addr{client, client6, netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::2")}
	var open [4]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				a := (w + i) % len(addrs)
				if !z.Acquire(addrs[a]) {
					continue
				}
				if n := open[a].Add(1); n > maxConns {
					t.Errorf("%v has %d connections open", addrs[a], n)
				}
				runtime.Gosched()
				open[a].Add(-1)
				z.Release(addrs[a])
			}
		})
	}
	wg.Wait()
	if n := connEntries(z); n != 0 {
		t.Errorf("%d entries left with every connection closed", n)
	}
}

func connEntries(z *ConnZone) (n int) {
	for i := range z.buckets {
		for _, s := range z.buckets[i].slots {
			if s.n != 0 {
				n++
			}
		}
	}
	return n
}

func TestZoneArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"zero rate", func() { NewRateZone(0, 1, 8) }},
		{"rate below a thousandth", func() { NewRateZone(0.0009, 1, 8) }},
		{"NaN rate", func() { NewRateZone(nan(), 1, 8) }},
		{"negative burst", func() { NewRateZone(1, -1, 8) }},
		{"zero size", func() { NewRateZone(1, 1, 0) }},
		{"zero connections", func() { NewConnZone(0, 8) }},
		{"zero conn size", func() { NewConnZone(1, 0) }},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", tc.name)
				}
			}()
			tc.f()
		}()
	}
	if got := len(NewRateZone(1, 1, 9).buckets) * bucketSlots; got != 16 {
		t.Errorf("size 9 holds %d entries, want 16", got)
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestLimitAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector are its own")
	}
	rz := NewRateZone(10, 5, 1024)
	cz := NewConnZone(10, 1024)
	rng := rand.New(rand.NewPCG(3, 4))
	addrs := make([]netip.Addr, 256)
	for i := range addrs {
		addrs[i] = randomAddr(rng)
	}
	i := 0
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"Allow", func() { i++; rz.Allow(addrs[i%len(addrs)], t0.Add(time.Duration(i)*time.Millisecond)) }},
		{"Acquire and Release", func() {
			i++
			a := addrs[i%len(addrs)]
			if cz.Acquire(a) {
				cz.Release(a)
			}
		}},
	} {
		if got := testing.AllocsPerRun(1000, tc.f); got != 0 {
			t.Errorf("%s: %v allocations, want 0", tc.name, got)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	z := NewRateZone(100, 500, 65536)
	now := time.Now()
	b.Run("one address", func(b *testing.B) {
		for b.Loop() {
			z.Allow(client, now)
		}
	})
	b.Run("many addresses", func(b *testing.B) {
		addrs := benchAddrs(100_000)
		i := 0
		for b.Loop() {
			z.Allow(addrs[i%len(addrs)], now)
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		addrs := benchAddrs(100_000)
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(1)) * 7919
			for pb.Next() {
				z.Allow(addrs[i%len(addrs)], now)
				i++
			}
		})
	})
}

func BenchmarkAcquireRelease(b *testing.B) {
	z := NewConnZone(100, 65536)
	b.Run("one address", func(b *testing.B) {
		for b.Loop() {
			z.Acquire(client)
			z.Release(client)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		addrs := benchAddrs(10_000)
		var seq atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seq.Add(1)) * 7919
			for pb.Next() {
				a := addrs[i%len(addrs)]
				if z.Acquire(a) {
					z.Release(a)
				}
				i++
			}
		})
	})
}

func benchAddrs(n int) []netip.Addr {
	rng := rand.New(rand.NewPCG(5, 6))
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = randomAddr(rng)
	}
	return addrs
}
