//go:build !linux

package l4

import (
	"net"
	"net/netip"
	"sync"
)

// pktinfo is off outside Linux: answers leave from the address the kernel picks by route.
type pktinfo struct{}

func newPktinfo(*net.UDPConn) pktinfo { return pktinfo{} }
func (pktinfo) dst([]byte) netip.Addr { return netip.Addr{} }
func (pktinfo) oob(netip.Addr) []byte { return nil }

// datagramPool holds the buffers answers are read into.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// datagramReader waits for datagrams on one connected socket and hands each to handle, which
// must not keep it. Off Linux a flow holds a buffer while it waits.
type datagramReader struct {
	c      *net.UDPConn
	handle func([]byte)
}

func newDatagramReader(c *net.UDPConn, handle func([]byte)) (*datagramReader, error) {
	return &datagramReader{c: c, handle: handle}, nil
}

// wait reads one datagram, waiting for it until the socket's read deadline.
func (r *datagramReader) wait() error {
	bp := datagramPool.Get().(*[]byte)
	defer datagramPool.Put(bp)
	n, err := r.c.Read(*bp)
	if err != nil {
		return err
	}
	r.handle((*bp)[:n])
	return nil
}
