package l4

import (
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// pktinfo makes answers leave from the address a client sent to, on a socket bound to an
// unspecified address (otherwise the kernel picks the source by route, which on a node with
// several addresses may not be the one the client knows, and the client drops the answer).
type pktinfo struct {
	on bool // the socket is bound to an unspecified address and reports destinations
	v6 bool // the socket is IPv6 (dual stack included)
}

func newPktinfo(pc *net.UDPConn) pktinfo {
	la, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok || !la.IP.IsUnspecified() {
		return pktinfo{}
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		return pktinfo{}
	}
	var p pktinfo
	_ = rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			return
		}
		switch sa.(type) {
		case *unix.SockaddrInet4:
			p.on = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1) == nil
		case *unix.SockaddrInet6:
			p.on = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1) == nil
			p.v6 = true
		}
	})
	return p
}

// dst is the destination address of a datagram from its control messages; the zero Addr when
// they do not say.
func (p pktinfo) dst(oob []byte) netip.Addr {
	for p.on && len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return netip.Addr{}
		}
		oob = rest
		switch {
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
			return netip.AddrFrom4([4]byte(data[8:12]))
		case h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_PKTINFO && len(data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { in6_addr addr; int ifindex; }
			return netip.AddrFrom16([16]byte(data[:16]))
		}
	}
	return netip.Addr{}
}

// oob is the control message that sends a datagram from local; nil when local is unknown.
func (p pktinfo) oob(local netip.Addr) []byte {
	if !p.on || !local.IsValid() {
		return nil
	}
	if p.v6 {
		return unix.PktInfo6(&unix.Inet6Pktinfo{Addr: as16(local).As16()})
	}
	if !local.Is4() {
		return nil
	}
	return unix.PktInfo4(&unix.Inet4Pktinfo{Spec_dst: local.As4()})
}

// datagramPool holds the buffers answers are read into: a flow holds one only while a
// datagram is in hand, not while it waits, so idle flows cost no 64 KiB buffer each.
var datagramPool = sync.Pool{New: func() any { b := make([]byte, maxDatagram); return &b }}

// datagramReader waits for datagrams on one connected socket and hands each to handle, which
// must not keep it. It allocates nothing per datagram.
type datagramReader struct {
	rc     syscall.RawConn
	handle func([]byte)
	read   func(fd uintptr) bool // r.readOnce, bound once
	err    error                 // the last read's error
}

func newDatagramReader(c *net.UDPConn, handle func([]byte)) (*datagramReader, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	r := &datagramReader{rc: rc, handle: handle}
	r.read = r.readOnce
	return r, nil
}

// wait reads one datagram, waiting for it until the socket's read deadline.
func (r *datagramReader) wait() error {
	r.err = nil
	if err := r.rc.Read(r.read); err != nil {
		return err
	}
	return r.err
}

func (r *datagramReader) readOnce(fd uintptr) bool {
	bp := datagramPool.Get().(*[]byte)
	defer datagramPool.Put(bp)
	for {
		n, err := syscall.Read(int(fd), *bp)
		switch err {
		case nil:
			r.handle((*bp)[:n])
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.err = err
			return true
		}
	}
}
