package l4

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// testPicker picks its addresses in turn, skipping those tried, and keeps an account of its
// leases that fails the test when the Lease contract is broken.
type testPicker struct {
	t     testing.TB
	mu    sync.Mutex
	addrs []string
	next  int
	tried [][]string // the tried argument of every Pick
	log   []string   // "dialed ADDR: ERR", "closed ADDR: ERR"
	open  int        // leases dialed and not closed
}

func newPicker(t testing.TB, addrs ...string) *testPicker { return &testPicker{t: t, addrs: addrs} }

func (p *testPicker) Pick(tried []string) (string, Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tried = append(p.tried, slices.Clone(tried))
	for range p.addrs {
		a := p.addrs[p.next%len(p.addrs)]
		p.next++
		if !slices.Contains(tried, a) {
			return a, &testLease{p: p, addr: a}, true
		}
	}
	return "", nil, false
}

func (p *testPicker) events() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.log)
}

func (p *testPicker) openLeases() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

type testLease struct {
	p              *testPicker
	addr           string
	dialed, closed bool
}

func errText(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	}
	return err.Error()
}

func (l *testLease) Dialed(err error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if l.dialed {
		l.p.t.Errorf("lease on %s: Dialed twice", l.addr)
	}
	l.dialed = true
	if err == nil {
		l.p.open++
	}
	l.p.log = append(l.p.log, "dialed "+l.addr+": "+errText(err))
}

func (l *testLease) Closed(err error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	if !l.dialed || l.closed {
		l.p.t.Errorf("lease on %s: Closed without Dialed(nil) or twice", l.addr)
	}
	l.closed = true
	l.p.open--
	l.p.log = append(l.p.log, "closed "+l.addr+": "+errText(err))
}

// deadAddr is a TCP address on 127.0.0.1 where connections are refused for the whole test: a
// socket is bound there and never listens, so no other test can take the port meanwhile.
func deadAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// eventually polls cond every 10 ms for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// failures reads a listener's failure counter.
func failures(m *Metrics, listener, reason string) int {
	return int(testutil.ToFloat64(m.Failures.WithLabelValues(listener, reason)))
}

func hasEvent(events []string, prefix string) bool {
	for _, e := range events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}
