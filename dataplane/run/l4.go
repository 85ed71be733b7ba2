package run

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/proxy"
	"portico.dev/portico/dataplane/route"
	"portico.dev/portico/dataplane/watch"
)

// l4Listeners keeps the proxy's TCP and UDP listeners (spec.tcp, spec.udp) in step with the
// routing table. It is the watcher's publisher: each table goes to the Handler first, then
// new listeners are bound, the others pointed at their new backends (and PROXY setting), and
// removed ones drained for the fleet's grace period, then closed: a change takes effect
// without a restart, and established connections on a removed listener finish first.
type l4Listeners struct {
	next    watch.Publisher
	bind    string
	metrics *l4.Metrics
	drain   time.Duration
	log     logr.Logger

	mu     sync.Mutex
	active map[string]*l4Listener // by name and port
	closed bool
}

type l4Listener struct {
	name   string
	picker *proxy.BackendPicker
	tcp    *l4.TCPForwarder
	udp    *l4.UDPForwarder
}

func newL4Listeners(next watch.Publisher, bind string, metrics *l4.Metrics, drain time.Duration, log logr.Logger) *l4Listeners {
	return &l4Listeners{next: next, bind: bind, metrics: metrics, drain: drain, log: log, active: map[string]*l4Listener{}}
}

// Swap publishes t to the Handler, then applies its listeners.
func (m *l4Listeners) Swap(t *route.Table, problems int) {
	m.next.Swap(t, problems)
	m.apply(t.Listeners)
}

func (m *l4Listeners) apply(want []route.Listener) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	keep := map[string]bool{}
	for _, l := range want {
		key := l.Name + "@" + strconv.Itoa(int(l.Port))
		keep[key] = true
		if cur := m.active[key]; cur != nil {
			cur.picker.Store(l.Backend)
			if cur.tcp != nil {
				cur.tcp.SetProxyProtocol(proxyVersion(l.ProxyProtocol))
			}
			continue
		}
		ll, err := m.start(l)
		if err != nil {
			// Tried again with the next table (a port another process holds may be freed).
			m.log.Error(err, "Cannot bind a listener", "listener", l.Name, "port", l.Port)
			continue
		}
		m.active[key] = ll
		m.log.Info("Listener bound", "listener", l.Name, "port", l.Port)
	}
	for key, ll := range m.active {
		if !keep[key] {
			delete(m.active, key)
			go m.retire(ll, m.drain)
		}
	}
}

// start binds a listener and serves it.
func (m *l4Listeners) start(l route.Listener) (*l4Listener, error) {
	addr := net.JoinHostPort(m.bind, strconv.Itoa(int(l.Port)))
	p := proxy.NewBackendPicker(l.Backend)
	ll := &l4Listener{name: l.Name, picker: p}
	log := m.log.WithValues("listener", l.Name)
	if l.UDP {
		ua, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return nil, err
		}
		pc, err := net.ListenUDP("udp", ua)
		if err != nil {
			return nil, err
		}
		ll.udp = l4.NewUDPForwarder(l4.UDPConfig{Name: l.Name, Picker: p, Metrics: m.metrics, Log: log})
		go func() { _ = ll.udp.Serve(pc) }()
		return ll, nil
	}
	// No keep-alive probes on accepted connections either (see l4.TCPForwarder's dialer).
	ln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	ll.tcp = l4.NewTCPForwarder(l4.TCPConfig{Name: l.Name, Picker: p, ProxyProtocol: proxyVersion(l.ProxyProtocol), Metrics: m.metrics, Log: log})
	go func() { _ = ll.tcp.Serve(ln) }()
	return ll, nil
}

// retire drains a listener that left the table for up to d (the fleet's grace period), then
// closes it.
func (m *l4Listeners) retire(ll *l4Listener, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if ll.tcp != nil {
		_ = ll.tcp.Drain(ctx)
		_ = ll.tcp.Close()
	} else {
		_ = ll.udp.Drain(ctx)
		_ = ll.udp.Close()
	}
	m.metrics.Forget(ll.name)
	m.log.Info("Listener closed", "listener", ll.name)
}

// close drains every listener (up to d) and closes it: the proxy is stopping.
func (m *l4Listeners) close(d time.Duration) {
	m.mu.Lock()
	m.closed = true
	all := make([]*l4Listener, 0, len(m.active))
	for _, ll := range m.active {
		all = append(all, ll)
	}
	m.active = map[string]*l4Listener{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, ll := range all {
		wg.Add(1)
		go func() { defer wg.Done(); m.retire(ll, d) }()
	}
	wg.Wait()
}

func proxyVersion(v string) l4.ProxyVersion {
	switch v {
	case proxyconfig.ProxyProtocolV1:
		return l4.ProxyV1
	case proxyconfig.ProxyProtocolV2:
		return l4.ProxyV2
	}
	return l4.ProxyNone
}
