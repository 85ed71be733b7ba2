//go:build linux

package rawsock

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// TestWaiter: an idle set's Wait parks until its timeout (no events, no error); an event that
// comes while it waits ends the wait; one already there is taken without waiting.
func TestWaiter(t *testing.T) {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	events := make([]syscall.EpollEvent, 8)
	w, err := NewWaiter(ep, events)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer Close(p[0])
	defer Close(p[1])
	if e := EpollAdd(ep, p[0], &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}); e != 0 {
		t.Fatal(e)
	}

	start := time.Now()
	if n, err := w.Wait(start.Add(50 * time.Millisecond)); n != 0 || err != nil {
		t.Fatalf("idle: %d events, %v", n, err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 2*time.Second {
		t.Errorf("idle: waited %v for a 50ms timeout", d)
	}

	go func() {
		time.Sleep(30 * time.Millisecond)
		_, _ = Write(p[1], []byte("x"))
	}()
	start = time.Now()
	until := start.Add(5 * time.Second)
	n, err := w.Wait(until)
	if n != 1 || err != nil || events[0].Fd != int32(p[0]) {
		t.Fatalf("an event while waiting: %d events (%v), %v", n, events[:max(n, 0)], err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("an event after 30ms ended a wait after %v", d)
	}

	// Level-triggered and unread: it is there at once (the same until: the deadline is kept).
	start = time.Now()
	if n, err := w.Wait(until); n != 1 || err != nil || time.Since(start) > time.Second {
		t.Fatalf("a pending event: %d events, %v, after %v", n, err, time.Since(start))
	}
	var b [1]byte
	if n, e := Read(p[0], b[:]); n != 1 || e != 0 {
		t.Fatalf("Read: %d, %v", n, e)
	}
	if _, e := Read(p[0], b[:]); e != syscall.EAGAIN {
		t.Fatalf("Read of an empty pipe: %v, want EAGAIN", e)
	}
}

// TestDupListenerOutsideThePoller: the duplicate is watched by the loop's own epoll set alone
// once the listener is closed, not by the runtime's poller too (which (*net.TCPListener).File's
// duplicate would be: every queued connection then woke an idle runtime thread for nothing).
// While the listener is open, ListenerWatchers sees the runtime's poller watch it: what the
// check below would see of a duplicate left there.
func TestDupListenerOutsideThePoller(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	if sets, err := ListenerWatchers(addr); err != nil || len(sets) != 1 {
		t.Fatalf("an open Go listener is watched by %v (%v), want the runtime's poller alone", sets, err)
	}
	fd, err := DupListener(ln.(*net.TCPListener))
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(ep)
	if e := EpollAdd(ep, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); e != 0 {
		t.Fatal(e)
	}
	_ = ln.Close()
	sets, err := ListenerWatchers(addr)
	if err != nil || len(sets) != 1 || sets[0] != ep {
		t.Fatalf("the duplicate is watched by %v (%v), want the loop's set %d alone", sets, err, ep)
	}
	if fl, err := fcntl(fd, syscall.F_GETFL); err != nil || fl&syscall.O_NONBLOCK == 0 {
		t.Fatalf("the duplicate's flags %#x (%v): want non-blocking", fl, err)
	}
	if fl, err := fcntl(fd, syscall.F_GETFD); err != nil || fl&syscall.FD_CLOEXEC == 0 {
		t.Fatalf("the duplicate's descriptor flags %#x (%v): want close-on-exec", fl, err)
	}
	c, err := net.Dial("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	events := make([]syscall.EpollEvent, 1)
	if n, err := syscall.EpollWait(ep, events, 5000); err != nil || n != 1 {
		t.Fatalf("the loop's set saw %d events (%v), want the connection", n, err)
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
