package proxy

import (
	"net"
	"syscall"
)

// alive reports whether an idle upstream connection is still open: a non-blocking peek finds
// nothing to read (EAGAIN). End of file, an error or unexpected bytes mean it is not reusable.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, rerr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = rerr == syscall.EAGAIN
		return true
	})
	return err == nil && ok
}

// waitReadable waits, without reading, until c has something to read (or its end, an error,
// or its read deadline): the idle wait of a keep-alive connection that gave its buffers back.
// It reports false when c cannot be waited on so.
func waitReadable(c net.Conn) (supported bool, err error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false, nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	// The peek runs after the poller was reset for this wait, so bytes that came before it are
	// seen by the peek and bytes that come after it wake the wait.
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return perr != syscall.EAGAIN
	})
	return true, err
}
