// Package load runs a steady request loop for tests that must lose no request while something
// changes underneath.
package load

import (
	"sync"
	"sync/atomic"
)

// Loop is a running request loop.
type Loop struct {
	stop          chan struct{}
	wg            sync.WaitGroup
	total, failed atomic.Int64
	mu            sync.Mutex
	failures      []string
}

// Start runs do on workers goroutines, back to back, until Stop. do returns "" for a
// successful request, else what went wrong.
func Start(workers int, do func() string) *Loop {
	l := &Loop{stop: make(chan struct{})}
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				l.total.Add(1)
				if msg := do(); msg != "" {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.failures) < 5 {
						l.failures = append(l.failures, msg)
					}
					l.mu.Unlock()
				}
			}
		}()
	}
	return l
}

// Stop ends the loop and returns how many requests ran, how many failed, and the first few
// failures.
func (l *Loop) Stop() (total, failed int64, failures []string) {
	close(l.stop)
	l.wg.Wait()
	return l.total.Load(), l.failed.Load(), l.failures
}
