package proxy

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"portico.dev/portico/dataplane/route"
)

// TestPooledBodyOfACancelledRequestIsNotPooled: a request whose context has ended does not give
// its connection back to the pool, even when stop still prevented the context's AfterFunc (the
// context's error is set before its AfterFunc starts, and rewakeIfGone may have set the
// connection's deadlines in that window). Pooled, the connection failed the next request's
// write at once: a 504 after 1 ms, found by FuzzDesync.
func TestPooledBodyOfACancelledRequestIsNotPooled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	proxyEnd, backendEnd := net.Pipe()
	defer backendEnd.Close()
	u := newUpstreams(time.Second)
	defer u.close()
	addr := "10.0.0.1:80"
	u.pools.Store(addr, &upPool{})
	uc := &upConn{key: addr, c: proxyEnd, r: bufio.NewReader(proxyEnd), w: bufio.NewWriter(proxyEnd)}
	b := &pooledBody{t: &transport{up: u}, uc: uc, st: &reqState{endpoint: &route.Endpoint{Addr: addr}}, keep: true, stop: func() bool { return true }, ctx: ctx}
	b.finish(true)
	v, _ := u.pools.Load(addr)
	if n := len(v.(*upPool).idle); n != 0 {
		t.Fatalf("%d connections pooled from a cancelled request", n)
	}
	if _, err := proxyEnd.Write([]byte("x")); err == nil {
		t.Fatal("the connection is still open")
	}
}
