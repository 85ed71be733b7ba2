package route

import (
	"fmt"
	"testing"
	"time"
)

// TestRingConsistency: with ten endpoints, keys spread over all of them within ±40% of an even
// share, and when one goes only its keys move, spread over the others.
func TestRingConsistency(t *testing.T) {
	ring := func(n int) *Backend {
		b := &Backend{}
		for i := 0; i < n; i++ {
			b.Endpoints = append(b.Endpoints, &Endpoint{Addr: fmt.Sprintf("10.0.0.%d:8080", i+1), Stats: &EndpointStats{}})
		}
		b.buildRing()
		return b
	}
	k, err := ParseHashKey("$http_x_user$request_uri")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	owners := func(b *Backend) map[int]string {
		m := map[int]string{}
		for u := 0; u < 5000; u++ {
			m[u] = b.PickHash(k.Sum(ringReq{user: fmt.Sprint("user-", u)}, "/"), now).Addr
		}
		return m
	}
	ten, nine := ring(10), ring(9) // nine: the same minus 10.0.0.10
	before, after := owners(ten), owners(nine)
	share := map[string]int{}
	for _, a := range before {
		share[a]++
	}
	for a, n := range share {
		if n < 300 || n > 700 {
			t.Errorf("%s has %d of 5000 keys, want about 500", a, n)
		}
	}
	moved := 0
	for u, a := range before {
		if after[u] != a {
			moved++
			if a != "10.0.0.10:8080" {
				t.Fatalf("key %d moved from %s, which is still there", u, a)
			}
		}
	}
	if moved != share["10.0.0.10:8080"] {
		t.Errorf("%d keys moved, want the %d of the endpoint that went", moved, share["10.0.0.10:8080"])
	}
	// An ejected endpoint's keys go to the next point's endpoint, the others stay.
	ten.Endpoints[0].Stats.Eject(now)
	for u, a := range owners(ten) {
		if before[u] != a && before[u] != ten.Endpoints[0].Addr {
			t.Fatalf("key %d moved from %s on an ejection of another endpoint", u, before[u])
		}
		if a == ten.Endpoints[0].Addr {
			t.Fatalf("key %d still goes to the ejected endpoint", u)
		}
	}
}

func TestParseHashKey(t *testing.T) {
	for _, v := range []string{"$remote_addr", "$request_uri", "$host$uri", "$http_x_tenant", "$cookie_session", "$arg_id", "user-$arg_id"} {
		if _, err := ParseHashKey(v); err != nil {
			t.Errorf("%q: %v", v, err)
		}
	}
	for _, v := range []string{"", "$upstream_addr", "$http_"} {
		if _, err := ParseHashKey(v); err == nil {
			t.Errorf("%q accepted", v)
		}
	}
}

type ringReq struct{ user string }

func (r ringReq) Method() string   { return "GET" }
func (r ringReq) Target() string   { return "/x?y=1" }
func (r ringReq) Host() string     { return "h" }
func (r ringReq) ClientIP() string { return "10.1.1.1" }
func (r ringReq) Header(name string) (string, bool) {
	if name == "x-user" {
		return r.user, true
	}
	return "", false
}
func (r ringReq) Cookie(string) (string, bool) { return "", false }
