package proxy

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/route"
)

// BackendPicker picks the endpoints of TCP connections and UDP flows (dataplane/l4) from a
// Backend, with the HTTP path's balancing and ejection: a refused connection ejects an
// endpoint, other failures count towards it. Store points it at a newer table's Backend.
type BackendPicker struct{ b atomic.Pointer[route.Backend] }

// NewBackendPicker returns a picker of b's endpoints.
func NewBackendPicker(b *route.Backend) *BackendPicker {
	p := &BackendPicker{}
	p.b.Store(b)
	return p
}

// Store points the picker at b.
func (p *BackendPicker) Store(b *route.Backend) { p.b.Store(b) }

// Pick implements l4.Picker.
func (p *BackendPicker) Pick(tried []string) (string, l4.Lease, bool) {
	b := p.b.Load()
	if b == nil || len(b.Endpoints) == 0 {
		return "", nil, false
	}
	now := time.Now()
	for range b.Endpoints { // the balancer's choice, unless already tried
		if e := b.Pick(now, nil); e != nil && !slices.Contains(tried, e.Addr) {
			return e.Addr, &endpointLease{e: e}, true
		}
	}
	for _, e := range b.Endpoints {
		if !slices.Contains(tried, e.Addr) {
			return e.Addr, &endpointLease{e: e}, true
		}
	}
	e := b.Pick(now, nil) // every one tried: as a balancer does when all are ejected
	return e.Addr, &endpointLease{e: e}, true
}

// endpointLease accounts one connection or flow to an endpoint.
type endpointLease struct {
	e      *route.Endpoint
	dialed bool
}

func (l *endpointLease) Dialed(err error) {
	now := time.Now()
	switch {
	case err == nil:
		l.dialed = true
		l.e.Stats.InFlight.Add(1)
		l.e.Stats.Succeeded()
	case errors.Is(err, syscall.ECONNREFUSED):
		l.e.Stats.Eject(now)
	case errors.Is(err, context.Canceled):
	default:
		l.e.Stats.Failed(now)
	}
}

func (l *endpointLease) Closed(err error) {
	if l.dialed {
		l.e.Stats.InFlight.Add(-1)
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		l.e.Stats.Eject(time.Now())
	}
}
