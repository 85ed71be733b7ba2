package proxy

import (
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
