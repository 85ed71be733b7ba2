package proxy

import (
	"bufio"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// unread is the number of bytes waiting in c's socket (a TCP connection), 0 if unknown.
func unread(c net.Conn) int {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) { n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n
}

// unaccepted is the number of connections in the accept queue of ln (a TCP listener), 0 if
// unknown: a listening socket's TCP_INFO gives it as tcpi_unacked.
func unaccepted(ln net.Listener) int {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return 0
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	_ = rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			n = int(info.Unacked)
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
