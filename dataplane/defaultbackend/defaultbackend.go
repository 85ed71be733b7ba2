// Package defaultbackend is `portico default-backend`: the server that answers requests matching
// no Ingress rule, with a fixed status code and a short body saying so.
package defaultbackend

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Options configure the server.
type Options struct {
	StatusCode int
	Addr       string // serving address, e.g. ":8080"
	HealthAddr string // /healthz and /readyz
}

// Handler answers every request with the status code and a one-line body; a request with
// X-Code 400-599 (an error page the proxy asks for, custom-http-errors) with that status.
func Handler(code int) http.Handler {
	body := []byte(fmt.Sprintf("%d %s: no Ingress rule matches this request (portico default backend)\n", code, http.StatusText(code)))
	clen := strconv.Itoa(len(body))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("Server", "portico")
		// An error page the proxy asks for (custom-http-errors) carries the status in X-Code,
		// as ingress-nginx's custom error pages read it: answered with that status.
		if x, err := strconv.Atoi(r.Header.Get("X-Code")); err == nil && x >= 400 && x <= 599 {
			page := fmt.Sprintf("%d %s\n", x, http.StatusText(x))
			h.Set("Content-Length", strconv.Itoa(len(page)))
			w.WriteHeader(x)
			_, _ = w.Write([]byte(page))
			return
		}
		h.Set("Content-Length", clen)
		w.WriteHeader(code)
		_, _ = w.Write(body)
	})
}

// Main parses args and serves until SIGTERM or SIGINT.
func Main(args []string) error {
	fs := flag.NewFlagSet("default-backend", flag.ContinueOnError)
	zopts := zap.Options{TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	zopts.BindFlags(fs)
	var o Options
	var port, healthPort int
	fs.IntVar(&o.StatusCode, "status-code", 404, "HTTP status code of every answer (200-599)")
	fs.IntVar(&port, "port", 8080, "port serving the answers")
	fs.IntVar(&healthPort, "health-port", 10254, "port serving /healthz and /readyz")
	bind := fs.String("bind-address", os.Getenv("PORTICO_BIND_ADDRESS"), "address to bind (default all; $PORTICO_BIND_ADDRESS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zopts)).WithName("default-backend")
	if o.StatusCode < 200 || o.StatusCode > 599 {
		return fmt.Errorf("--status-code %d: must be within 200-599", o.StatusCode)
	}
	o.Addr = net.JoinHostPort(*bind, strconv.Itoa(port))
	o.HealthAddr = net.JoinHostPort(*bind, strconv.Itoa(healthPort))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Serve(ctx, o, log)
}

// Serve runs the server until ctx ends, then shuts down gracefully.
func Serve(ctx context.Context, o Options, log logr.Logger) error {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	health := http.NewServeMux()
	health.Handle("/healthz", ok)
	health.Handle("/readyz", ok)
	servers := []*http.Server{
		{Addr: o.Addr, Handler: Handler(o.StatusCode), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second},
		{Addr: o.HealthAddr, Handler: health, ReadHeaderTimeout: 10 * time.Second},
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		ln, err := net.Listen("tcp", s.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", s.Addr, err)
		}
		go func() { errc <- s.Serve(ln) }()
	}
	log.Info("Default backend serving", "addr", o.Addr, "health", o.HealthAddr, "statusCode", o.StatusCode)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Shutdown(shutdown))
	}
	return errors.Join(errs...)
}
