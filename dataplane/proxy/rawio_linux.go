//go:build linux

package proxy

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"portico.dev/portico/dataplane/internal/rawsock"
)

// rawConn reads and writes a TCP connection with raw system calls: the goroutine keeps its P
// for the microseconds a non-blocking socket call takes. The socket is non-blocking, so a call
// never waits: EAGAIN parks the goroutine on the poller, as net.Conn does, and deadlines apply
// as on the connection. What it saves is the runtime's system-call bookkeeping, and above all
// the P hand-offs the system monitor makes when a call outlasts its 20 µs tick (a loopback
// write runs the receiver's network stack too, and often does): each wakes another thread, and
// at high request rates those context switches cost more than the calls themselves.
type rawConn struct {
	net.Conn
	rc syscall.RawConn
	// The calls' arguments and results live here, so that the functions given to rc are made
	// once (a closure per call would be an allocation per call).
	rbuf, wbuf     []byte
	rn, wn         int
	rerrno, werrno syscall.Errno
	readFn         func(uintptr) bool
	writeFn        func(uintptr) bool
	// nowait: Read returns errWouldBlock rather than wait when there is nothing to read (see
	// idleReader). peek: the read function only looks whether there is (waitReadable): 1
	// before its first call, 2 after it (a call after a wait-up finds the socket readable).
	nowait bool
	peek   uint8
	peeked byte
}

// newRawConn wraps a TCP connection; any other connection is returned as is.
func newRawConn(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	r := &rawConn{Conn: c, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	return r
}

func (r *rawConn) read(fd uintptr) bool {
	switch r.peek {
	case 1: // waitReadable's first look
		for {
			_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&r.peeked)), 1,
				syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if e != syscall.EINTR {
				r.peek = 2
				return e != syscall.EAGAIN // else wait for the poller
			}
		}
	case 2: // woken by the poller: readable
		return true
	}
	n, e := rawsock.Read(int(fd), r.rbuf)
	if e == syscall.EAGAIN && !r.nowait {
		return false // wait for the poller
	}
	r.rn, r.rerrno = n, e
	return true
}

// setNowait makes the next reads return errWouldBlock rather than wait (see idleReader).
func (r *rawConn) setNowait(on bool) { r.nowait = on }

// waitReadable waits until the connection has something to read, an end of stream or an
// error included, or until its read deadline (its error is returned then, as Read's).
func (r *rawConn) waitReadable() error {
	r.peek = 1
	err := r.rc.Read(r.readFn)
	r.peek = 0
	if err != nil {
		return r.opError("read", err)
	}
	return nil
}

func (r *rawConn) write(fd uintptr) bool {
	for {
		n, e := rawsock.Write(int(fd), r.wbuf[r.wn:])
		switch e {
		case syscall.EAGAIN:
			return false
		case 0:
			if r.wn += n; r.wn < len(r.wbuf) {
				continue // a partial write: the rest may fit now, else EAGAIN
			}
		}
		r.werrno = e
		return true
	}
}

func (r *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	switch {
	case err != nil:
		return 0, r.opError("read", err)
	case r.rerrno == syscall.EAGAIN:
		return 0, errWouldBlock
	case r.rerrno != 0:
		return 0, r.opError("read", os.NewSyscallError("read", r.rerrno))
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawConn) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wbuf, r.wn, r.werrno = p, 0, 0
	err := r.rc.Write(r.writeFn)
	r.wbuf = nil
	switch {
	case err != nil:
		return r.wn, r.opError("write", err)
	case r.werrno != 0:
		return r.wn, r.opError("write", os.NewSyscallError("write", r.werrno))
	}
	return r.wn, nil
}

func (r *rawConn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: r.LocalAddr(), Addr: r.RemoteAddr(), Err: err}
}
