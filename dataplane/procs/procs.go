// Package procs decides how many event loops the proxy runs and how many Ps (GOMAXPROCS) the Go
// runtime gets beside them.
//
// The HTTP event loops block in epoll_wait when idle, each on a thread that holds its P in the
// system-call state meanwhile. When no P is idle, the runtime's monitor (sysmon) takes such a P
// after 20 µs and starts a spinning thread to look for work, which finds none; with one loop per
// P every P is a loop's, so a loop that blocks for longer than 20 µs, thousands of times a second
// under load, set this off each time, and the monitor never backed off to its 10 ms period.
// Measured on the close row of make bench-proxy (a new connection per request, 2 loops on 2
// cores): the monitor's thread took 15% of the proxy's CPU and the spinning threads 6% more
// (per-thread CPU from /proc, perf). With one P beyond the loops there is an idle P, the
// monitor leaves a blocked loop's P alone, and goroutines (HTTPS connections, HTTP/2 streams,
// the TCP loops' wake-ups, the watch) find a P without waiting for a loop's. The loops stay one
// per CPU: the extra P is the runtime's, as nginx's master process is beside its workers.
// docs/data-plane.md records the decision and its measurements.
package procs

import (
	"runtime"
	"sync/atomic"
)

// Spare is how many Ps `portico proxy` adds beyond its event loops by default.
const Spare = 1

var loops atomic.Int64

// Loops is how many event loops a listener gets when its configuration asks for one per CPU:
// GOMAXPROCS as it was before AddSpare added Ps (the runtime's default follows the CPUs the
// process may use, its cgroup's quota included), or GOMAXPROCS when AddSpare was not called.
func Loops() int {
	if n := loops.Load(); n > 0 {
		return int(n)
	}
	return runtime.GOMAXPROCS(0)
}

// AddSpare records GOMAXPROCS as the loop count and raises GOMAXPROCS by spare (none when
// spare is not positive), once per process: it returns the loop count. Setting GOMAXPROCS stops
// the runtime from following later changes of the cgroup's CPU quota; the loops would not follow
// them either.
func AddSpare(spare int) int {
	n := runtime.GOMAXPROCS(0)
	if !loops.CompareAndSwap(0, int64(n)) {
		return Loops()
	}
	if spare > 0 {
		runtime.GOMAXPROCS(n + spare)
	}
	return n
}
