package proxy

import (
	"bufio"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unread is the number of bytes waiting in c's socket (a TCP connection), 0 if unknown.
func unread(c net.Conn) int {
	return sockInt(c, func(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.SIOCINQ) })
}

// unaccepted is the number of connections in the accept queue of ln (a TCP listener), 0 if
// unknown: a listening socket's TCP_INFO gives it as tcpi_unacked.
func unaccepted(ln net.Listener) int {
	return sockInt(ln, func(fd int) (int, error) {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, err
		}
		return int(info.Unacked), nil
	})
}

// sockInt is get of the socket under x (a syscall.Conn), 0 if unknown.
func sockInt(x any, get func(fd int) (int, error)) int {
	sc, ok := x.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		if v, err := get(int(fd)); err == nil {
			n = v
		}
	})
	return n
}

// waitData waits until c (a TCP connection) has bytes to read, or its end, without reading
// them (MSG_PEEK).
func waitData(c net.Conn, _ *bufio.Reader) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
}
