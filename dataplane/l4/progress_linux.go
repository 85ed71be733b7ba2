package l4

import (
	"net"

	"golang.org/x/sys/unix"
)

// spliceable reports whether dst.ReadFrom(src) moves the bytes in the kernel: between two TCP
// sockets, net.TCPConn.ReadFrom uses splice(2) (through a pipe, no copy to user space), also
// when src is wrapped in an io.LimitedReader.
func spliceable(dst, src net.Conn) (*net.TCPConn, bool) {
	d, ok := dst.(*net.TCPConn)
	if !ok {
		return nil, false
	}
	_, ok = src.(*net.TCPConn)
	return d, ok
}

// socketProgress is a number that grows whenever a TCP socket receives data or its peer
// acknowledges data sent (the kernel's tcpi_bytes_received and tcpi_bytes_acked, Linux 4.1),
// so the idle check sees bytes move while a splice is in progress; 0 for other connections.
func socketProgress(c net.Conn) uint64 {
	t, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := t.SyscallConn()
	if err != nil {
		return 0
	}
	var n uint64
	_ = rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = info.Bytes_received + info.Bytes_acked
		}
	})
	return n
}
