package l4

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestTCPLoopKillAfterExit: Drain's deadline wakes the loops to end their connections; a loop
// that had ended already (no connection left when the forwarder closed) has closed its pipe,
// and nothing is written to whatever descriptor took that number since (a review finding:
// the byte went into an unrelated socket).
func TestTCPLoopKillAfterExit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := NewTCPForwarder(TCPConfig{Name: "tcp/test", Picker: newPicker(t, backend(t, echo)), EventLoops: 2})
	done := make(chan error, 1)
	go func() { done <- f.Serve(ln) }()
	c := dial(t, ln.Addr().String())
	_, _ = c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the loops serving", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.loops) == 1
	})
	f.mu.Lock()
	ls := f.loops[0]
	f.mu.Unlock()
	pipes := []int{ls.workers[0].wakeW, ls.workers[1].wakeW}
	_ = f.Close() // the loop without a connection ends, closing its pipe
	var closed []int
	eventually(t, "a loop ended", func() bool {
		closed = closed[:0]
		for _, fd := range pipes {
			if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); e == syscall.EBADF {
				closed = append(closed, fd)
			}
		}
		return len(closed) > 0
	})
	// Descriptors opened since: one of them takes the closed pipe's number.
	var victim, peer int = -1, -1
	for range 64 {
		sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Close(sp[0]); syscall.Close(sp[1]) })
		for i, fd := range sp {
			if fd == closed[0] {
				victim, peer = fd, sp[1-i]
			}
		}
		if victim >= 0 {
			break
		}
	}
	if victim < 0 {
		t.Skip("the closed pipe's number was not taken again")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = f.Drain(ctx) // its deadline passes: the loops are told to end their connections
	<-done
	var b [16]byte
	if n, _ := syscall.Read(peer, b[:]); n > 0 {
		t.Errorf("Drain wrote %q into descriptor %d, a loop's pipe before it ended", b[:n], victim)
	}
}
