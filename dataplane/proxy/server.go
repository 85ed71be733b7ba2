package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerOptions are the listeners and their limits.
type ServerOptions struct {
	HTTPAddr, HTTPSAddr, HealthAddr string
	// DrainPeriod: after SIGTERM, /readyz fails and the proxy keeps serving this long so that
	// balancers stop sending, then it shuts down, waiting up to ShutdownTimeout for requests.
	DrainPeriod, ShutdownTimeout   time.Duration
	ReadHeaderTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                 int
	// EventLoops is how many event loops serve the cleartext listener (Linux): 0 for one per CPU
	// (procs.Loops: GOMAXPROCS before the spare P), negative for none (a goroutine per
	// connection, as on HTTPS).
	EventLoops int
	// NetHTTPOnly hands every connection to net/http at its first request (after the checks of
	// h1core.go), with keep-alives off as for every handed-off connection: the serving path
	// without the fast path, for measurements and tests. Event loops are off with it.
	NetHTTPOnly bool
}

// Server runs the HTTP, HTTPS and health listeners around a Handler.
type Server struct {
	opts    ServerOptions
	handler *Handler
	reg     *prometheus.Registry
	log     logr.Logger
	ready   atomic.Bool
	drain   atomic.Bool
	// Bound is closed once every listener is bound and the cleartext one's event loops run.
	Bound chan struct{}
	addrs [3]net.Addr
}

// NewServer returns a Server. Readiness stays false until SetReady(true).
func NewServer(opts ServerOptions, h *Handler, reg *prometheus.Registry, log logr.Logger) *Server {
	if opts.ReadHeaderTimeout == 0 {
		opts.ReadHeaderTimeout = 10 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = 120 * time.Second
	}
	if opts.MaxHeaderBytes == 0 {
		opts.MaxHeaderBytes = 64 << 10
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	return &Server{opts: opts, handler: h, reg: reg, log: log, Bound: make(chan struct{})}
}

// SetReady sets what /readyz answers (ready after the first full sync).
func (s *Server) SetReady(ok bool) { s.ready.Store(ok) }

// Addrs returns the bound HTTP, HTTPS and health addresses (after Bound is closed).
func (s *Server) Addrs() (http, https, health net.Addr) { return s.addrs[0], s.addrs[1], s.addrs[2] }

// TLSConfig chooses certificates by SNI from the table in use, so a rotated Secret takes effect
// with the next table and no restart; it offers HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2 and later;
// it requests a client certificate for the names whose host has client auth (clientcert.go).
func (s *Server) TLSConfig() *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if c := s.handler.Table().Certificate(hello.ServerName); c != nil {
				return c, nil
			}
			return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
		},
	}
	// A name whose host verifies client certificates gets a configuration that asks for one.
	cfg.GetConfigForClient = clientAuthTLS(s.handler, cfg.Clone())
	return cfg
}

// canceled is a context that has ended, for shutting down at once.
func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// logWriter sends net/http's own messages (TLS handshake failures, client resets) to the log at
// debug level: every client can cause them, so they are not errors of the proxy.
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info(strings.TrimSpace(string(p)))
	return len(p), nil
}

// Run serves until ctx ends, then drains and shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	health := http.NewServeMux()
	health.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	health.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() || s.drain.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	health.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))

	mk := func(h http.Handler) *http.Server {
		return &http.Server{Handler: h, ReadHeaderTimeout: s.opts.ReadHeaderTimeout, IdleTimeout: s.opts.IdleTimeout,
			MaxHeaderBytes: s.opts.MaxHeaderBytes, ErrorLog: stdlog.New(logWriter{s.log}, "", 0)}
	}
	// The fast path takes each listener and serves HTTP/1.1 and HTTP/2 (h2 by ALPN, h2c with
	// prior knowledge: h2.go); net/http serves the requests it hands off, on cleartext (plain)
	// and TLS (secureH1) connections and HTTP/2 streams, as HTTP/1. net/http parses at most one
	// request per connection: plain and secureH1 close the connection after their answer
	// (WebSocket tunnels excepted), so that every later request head is read by the fast path's
	// parser (see h1core.go).
	plain, secureH1, hs := mk(withoutClientCertHeaders(s.handler)), mk(tlsStateFromConn(s.handler)), mk(health)
	plain.Protocols = new(http.Protocols)
	plain.Protocols.SetHTTP1(true)
	plain.SetKeepAlivesEnabled(false)
	secureH1.Protocols = new(http.Protocols)
	secureH1.Protocols.SetHTTP1(true)
	secureH1.ConnContext = tlsConnContext
	secureH1.SetKeepAlivesEnabled(false)

	var lns [3]net.Listener
	for i, addr := range []string{s.opts.HTTPAddr, s.opts.HTTPSAddr, s.opts.HealthAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns[:i] {
				_ = l.Close()
			}
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		lns[i] = ln
		s.addrs[i] = ln.Addr()
	}
	up := s.handler.up
	defer up.close()
	fastPlain := &h1Server{h: s.handler, opts: s.opts, up: up, plain: newConnQueue(lns[0].Addr()), started: make(chan struct{})}
	fastTLS := &h1Server{h: s.handler, opts: s.opts, up: up, tlsConfig: s.TLSConfig(),
		tlsH1: newConnQueue(lns[1].Addr()), loopsOf: fastPlain}
	errc := make(chan error, 5)
	serve := func(f func() error) {
		go func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	serve(func() error { return fastPlain.Serve(lns[0]) })
	// Bound waits for the cleartext listener's loops: an HTTPS connection accepted before them
	// would stay on its goroutine.
	<-fastPlain.started
	close(s.Bound)
	serve(func() error { return plain.Serve(fastPlain.plain) })
	serve(func() error { return fastTLS.Serve(lns[1]) })
	serve(func() error { return secureH1.Serve(fastTLS.tlsH1) })
	serve(func() error { return hs.Serve(lns[2]) })
	s.log.Info("Proxy serving", "http", lns[0].Addr().String(), "https", lns[1].Addr().String(), "health", lns[2].Addr().String())

	select {
	case err := <-errc:
		_ = errors.Join(fastPlain.Shutdown(canceled()), fastTLS.Shutdown(canceled()))
		_ = errors.Join(plain.Close(), secureH1.Close(), hs.Close())
		return err
	case <-ctx.Done():
	}
	s.drain.Store(true)
	s.log.Info("Draining: readiness is false, still serving", "period", s.opts.DrainPeriod.String())
	time.Sleep(s.opts.DrainPeriod)
	shutdown, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	// The fast path first: it stops handing connections to net/http. Both listeners at once:
	// the cleartext listener's loops serve HTTPS connections too, which the HTTPS server waits
	// for (evtls_linux.go).
	tlsDone := make(chan error, 1)
	go func() { tlsDone <- fastTLS.Shutdown(shutdown) }()
	err := errors.Join(fastPlain.Shutdown(shutdown), <-tlsDone)
	err = errors.Join(err, plain.Shutdown(shutdown), secureH1.Shutdown(shutdown))
	_ = hs.Close()
	s.log.Info("Proxy stopped")
	return err
}
