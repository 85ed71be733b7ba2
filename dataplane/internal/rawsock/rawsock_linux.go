// Package rawsock is what the data plane's event loops share on Linux (the HTTP loops of
// dataplane/proxy, the TCP loops of dataplane/l4): non-blocking socket calls made as raw system
// calls, and a Waiter that parks an idle loop in the runtime's poller.
//
// A raw system call keeps the goroutine's P: no runtime bookkeeping around it, and no hand-off
// of the P to another thread when the call outlasts the system monitor's 20 µs tick, as a
// loopback write or connect often does (it runs the receiving side's network stack too). The
// calls here never block (the sockets are non-blocking), so holding the P through them is
// safe.
package rawsock

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

// Read reads from fd into p (not empty), retrying on EINTR; n is 0 when e is not.
func Read(fd int, p []byte) (n int, e syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// Write writes p (not empty) to fd, retrying on EINTR; n is 0 when e is not.
func Write(fd int, p []byte) (n int, e syscall.Errno) {
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(r), 0
	}
}

// Close closes fd (its epoll registrations end with it, unless it was duplicated).
func Close(fd int) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

// SetNoDelay sets TCP_NODELAY on fd.
func SetNoDelay(fd int) {
	one := int32(1)
	_, _, _ = syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

// ShutdownWrite shuts fd's sending side (its peer reads an end of stream).
func ShutdownWrite(fd int) syscall.Errno {
	_, _, e := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), syscall.SHUT_WR, 0)
	return e
}

// EpollAdd adds fd to the epoll set ep.
func EpollAdd(ep, fd int, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(ep), syscall.EPOLL_CTL_ADD, uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}

// WaitNow takes the events of ep ready now, without waiting (EINTR: none).
func WaitNow(ep int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, uintptr(ep), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		if e == syscall.EINTR {
			return 0, nil
		}
		return 0, e
	}
	return int(n), nil
}

// Waiter waits for an epoll set's events. A loop with events takes them with one raw call; an
// idle loop's goroutine parks in the runtime's poller, which watches the set's descriptor
// (readable when the set has events), so that no thread sits blocked in epoll_wait. A thread
// blocked in a system call is what the runtime's monitor (sysmon) looks for every 20 µs, and
// it takes that thread's P; with loops that block and wake thousands of times a second it never
// backed off to its 10 ms period, and its wake-ups cost 8% of the proxy's CPU on short TCP
// connections (perf, the tcpconn benchmark row), with the context switches of the P hand-offs
// on top.
type Waiter struct {
	ep     int
	f      *os.File // ep, in the runtime's poller
	rc     syscall.RawConn
	ready  func(uintptr) bool
	events []syscall.EpollEvent
	n      int
	err    error
	until  time.Time // the deadline set on f
}

// NewWaiter returns a Waiter of the epoll set ep, which it owns from then on (Close closes
// it), taking up to len(events) events at a time into events.
func NewWaiter(ep int, events []syscall.EpollEvent) (*Waiter, error) {
	w := &Waiter{ep: ep, events: events}
	w.ready = w.take
	if err := syscall.SetNonblock(ep, true); err != nil {
		return nil, err
	}
	w.f = os.NewFile(uintptr(ep), "epoll")
	rc, err := w.f.SyscallConn()
	if err != nil {
		return nil, err
	}
	w.rc = rc
	return w, nil
}

// Wait returns the number of events taken into the events slice: those ready now, else the
// first to come by until (0 and no error when none came). A caller passes the same until
// while it has not passed (a loop's next tick), so that the deadline is set once, not at
// every wait; a wait that returned at until must be followed by one with a later until.
//
// The poller's first call looks at the set (the poller forgets a readiness it saw before the
// wait, so it must): one epoll_wait when events are there, and one for nothing before parking
// when none are, where a look of its own before the poller's made that two.
func (w *Waiter) Wait(until time.Time) (int, error) {
	if !until.Equal(w.until) {
		w.until = until
		_ = w.f.SetReadDeadline(until)
	}
	w.n, w.err = 0, nil
	if err := w.rc.Read(w.ready); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, nil
		}
		return 0, err
	}
	return w.n, w.err
}

// take is Wait's function for the poller: done when the set has events.
func (w *Waiter) take(uintptr) bool {
	w.n, w.err = WaitNow(w.ep, w.events)
	return w.n > 0 || w.err != nil
}

// Close closes the epoll set.
func (w *Waiter) Close() error { return w.f.Close() }

// NoDelay is TCP_NODELAY on a listening socket, which Linux copies into each connection it
// accepts (the listener's TCP options are cloned as a handshake completes): one system call
// for all, where Go's net package makes one per connection. The connections that completed
// their handshake before it was set, still queued, do not have it: Accepted says which need
// their own call.
type NoDelay struct {
	set bool
	at  time.Time
}

// queuedGrace is how long after the listener's option was set an accepted connection may have
// been queued before it: such connections set it themselves.
const queuedGrace = time.Second

// SetListenerNoDelay sets TCP_NODELAY on the listening socket lnfd.
func SetListenerNoDelay(lnfd int) NoDelay {
	return NoDelay{set: syscall.SetsockoptInt(lnfd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1) == nil, at: time.Now()}
}

// Accepted sets TCP_NODELAY on fd, accepted now, unless it has it from the listener.
func (nd NoDelay) Accepted(fd int, now time.Time) {
	if !nd.set || now.Sub(nd.at) < queuedGrace {
		SetNoDelay(fd)
	}
}

// DupListener duplicates ln's descriptor for event loops to accept from: non-blocking,
// close-on-exec, and outside the runtime's poller. (*net.TCPListener).File would not do: its
// duplicate shares the listener's non-blocking flag, so package os registers it with the
// runtime's poller, edge-triggered, and it stays there after Fd makes it blocking; every
// connection the kernel then queues wakes an idle thread of the runtime (netpoll in
// findRunnable) that finds nothing to run: about 3,000 wake-ups a second and a tenth of the
// proxy's CPU on new connections, measured. The caller closes fd (Close) once done, after
// closing ln, whose own descriptor Go's poller does watch.
func DupListener(ln *net.TCPListener) (fd int, err error) { return Dup(ln) }

// Dup returns a non-blocking, close-on-exec duplicate of c's descriptor, outside Go's poller
// (an os.File or net.FileConn of it would join the poller). The caller owns it; c stays open,
// and closing c removes its own descriptor from the poller.
func Dup(c syscall.Conn) (fd int, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd = -1
	var errno syscall.Errno
	if cerr := rc.Control(func(s uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, s, syscall.F_DUPFD_CLOEXEC, 0)
		fd, errno = int(r), e
	}); cerr != nil {
		return -1, cerr
	}
	if errno != 0 {
		return -1, os.NewSyscallError("fcntl", errno)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		Close(fd)
		return -1, err
	}
	return fd, nil
}

// ListenerWatchers returns this process's epoll sets (their descriptors) that watch the
// listening socket bound to addr, from /proc/self: a diagnostic for tests (which sets see a
// listener's connections).
func ListenerWatchers(addr netip.AddrPort) ([]int, error) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, err
	}
	var inos []string
	var sets []int
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		switch {
		case err != nil:
		case target == "anon_inode:[eventpoll]":
			sets = append(sets, fd)
		case strings.HasPrefix(target, "socket:["):
			if on, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || on == 0 {
				continue
			}
			if sa, err := syscall.Getsockname(fd); err == nil && SockaddrAddrPort(sa) == addr {
				ino, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
				inos = append(inos, "ino:"+strconv.FormatUint(ino, 16))
			}
		}
	}
	if len(inos) == 0 {
		return nil, fmt.Errorf("no listening socket bound to %s", addr)
	}
	var watching []int
	for _, set := range sets {
		info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(set))
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(info)) {
			if strings.HasPrefix(line, "tfd:") && slices.ContainsFunc(strings.Fields(line), func(f string) bool { return slices.Contains(inos, f) }) {
				watching = append(watching, set)
				break
			}
		}
	}
	return watching, nil
}

// SockaddrAddrPort is sa's address and port (the zero AddrPort for other families).
func SockaddrAddrPort(sa syscall.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *syscall.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}
