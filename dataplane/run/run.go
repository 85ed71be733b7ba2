// Package run is `portico proxy`: flags, the Kubernetes client, and the watcher and server
// wired together.
package run

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/procs"
	"portico.dev/portico/dataplane/proxy"
	"portico.dev/portico/dataplane/watch"
)

// Flags of `portico proxy`.
type Flags struct {
	Fleet                           string
	ConfigMap                       string
	BindAddress                     string
	HTTPPort, HTTPSPort, HealthPort int
	DrainSeconds                    int
	UpstreamTimeout                 time.Duration
	AccessLog                       bool
	EventLoops                      int
	// SpareProcs is how many Ps Main gives the Go runtime beyond the event loops; see procs.
	SpareProcs int
	// GCPercent is the garbage collector's target (GOGC) Main sets; see proxy.GCPercent.
	GCPercent         int
	Holdoff, MaxDelay time.Duration
	// Log is the logger's settings (--zap-log-level, --zap-encoder, --zap-devel, ...).
	Log zap.Options
}

// Logger builds the logger the flags ask for (JSON, info level unless --zap-log-level says
// otherwise; --zap-log-level=debug shows the V(1) lines: upstream errors, TLS failures).
func (f *Flags) Logger() logr.Logger {
	return zap.New(zap.UseFlagOptions(&f.Log))
}

// ParseFlags parses the command line of `portico proxy`.
func ParseFlags(args []string) (Flags, error) {
	var f Flags
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.StringVar(&f.Fleet, "fleet", "", "the IngressDeployment served, as namespace/name (required)")
	fs.StringVar(&f.ConfigMap, "config-map", "", "the fleet's settings ConfigMap in the fleet's namespace (default <name>-proxy)")
	fs.StringVar(&f.BindAddress, "bind-address", os.Getenv("PORTICO_BIND_ADDRESS"), "address to listen on (default all; $PORTICO_BIND_ADDRESS)")
	fs.IntVar(&f.HTTPPort, "http-port", 80, "HTTP port")
	fs.IntVar(&f.HTTPSPort, "https-port", 443, "HTTPS port")
	fs.IntVar(&f.HealthPort, "health-port", 10254, "port of /healthz, /readyz and /metrics")
	fs.IntVar(&f.DrainSeconds, "drain-seconds", 15, "after SIGTERM, seconds to keep serving with readiness false")
	fs.DurationVar(&f.UpstreamTimeout, "upstream-timeout", 60*time.Second, "wait for a backend's response headers before answering 504")
	fs.BoolVar(&f.AccessLog, "access-log", false, "write a JSON access log line for every request to stdout, whatever the fleet's spec.accessLog says")
	fs.IntVar(&f.EventLoops, "event-loops", 0, "event loops serving cleartext HTTP on Linux: 0 for one per CPU the process may use, -1 for a goroutine per connection")
	fs.IntVar(&f.SpareProcs, "spare-procs", procs.Spare, "Ps (GOMAXPROCS) the Go runtime gets beyond the event loops, which are one per CPU the process may use: with none, an idle loop's thread hands its P over every time it waits (docs/data-plane.md); 0 keeps GOMAXPROCS at the CPU count")
	fs.IntVar(&f.GCPercent, "gc-percent", proxy.DefaultGCPercent(), "the garbage collector's target, as GOGC: the heap grows this many percent over what is live before a collection (default $GOGC when set, else 50: less memory per connection for a little CPU; -1 turns collection off)")
	fs.DurationVar(&f.Holdoff, "holdoff", 10*time.Millisecond, "gather changes this long before recompiling the routing table")
	fs.DurationVar(&f.MaxDelay, "max-delay", 200*time.Millisecond, "never delay a recompile longer than this")
	f.Log = zap.Options{TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	f.Log.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	ns, name, ok := strings.Cut(f.Fleet, "/")
	if !ok || ns == "" || name == "" {
		return f, fmt.Errorf("--fleet %q: want namespace/name", f.Fleet)
	}
	if f.ConfigMap == "" {
		f.ConfigMap = name + "-proxy"
	}
	if f.SpareProcs < 0 {
		return f, fmt.Errorf("--spare-procs %d: must not be negative", f.SpareProcs)
	}
	for _, p := range []struct {
		name string
		v    int
	}{{"--http-port", f.HTTPPort}, {"--https-port", f.HTTPSPort}, {"--health-port", f.HealthPort}} {
		if p.v < 0 || p.v > 65535 {
			return f, fmt.Errorf("%s %d: must be within 0-65535", p.name, p.v)
		}
	}
	return f, nil
}

// Main runs `portico proxy` until SIGTERM or SIGINT.
func Main(args []string) error {
	f, err := ParseFlags(args)
	if err != nil {
		return err
	}
	log := f.Logger().WithName("proxy")
	debug.SetGCPercent(f.GCPercent)
	procs.AddSpare(f.SpareProcs)
	cfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return Run(ctx, cfg, f, log)
}

// Run serves until ctx ends, then drains.
func Run(ctx context.Context, cfg *rest.Config, f Flags, log logr.Logger) error {
	ns, name, _ := strings.Cut(f.Fleet, "/")
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "portico-proxy"
	cfg.QPS, cfg.Burst = 20, 40
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	fallback, err := SelfSignedCertificate()
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	metrics, l4Metrics := registerMetrics(reg)
	opts := proxy.Options{HTTPPort: f.HTTPPort, HTTPSPort: f.HTTPSPort, UpstreamTimeout: f.UpstreamTimeout, L4Metrics: l4Metrics}
	// The fleet's spec.accessLog turns the log on and off with the table (no restart); the flag
	// logs every request whatever it says.
	opts.AccessLog, opts.AccessLogAll = proxy.NewAccessLog(os.Stdout), f.AccessLog
	h := proxy.NewHandler(opts, metrics, log.WithName("proxy"))
	addr := func(p int) string { return net.JoinHostPort(f.BindAddress, strconv.Itoa(p)) }
	srv := proxy.NewServer(proxy.ServerOptions{
		HTTPAddr: addr(f.HTTPPort), HTTPSAddr: addr(f.HTTPSPort), HealthAddr: addr(f.HealthPort),
		DrainPeriod: time.Duration(f.DrainSeconds) * time.Second, EventLoops: f.EventLoops,
	}, h, reg, log.WithName("server"))
	listeners := newL4Listeners(h, f.BindAddress, l4Metrics, time.Duration(f.DrainSeconds)*time.Second, log.WithName("l4"))
	w := watch.New(cs, listeners, watch.Options{
		Fleet: types.NamespacedName{Namespace: ns, Name: name}, ConfigMap: f.ConfigMap,
		Holdoff: f.Holdoff, MaxDelay: f.MaxDelay, Fallback: fallback,
	}, log.WithName("watch"))

	watchCtx, cancelWatch := context.WithCancel(context.Background())
	defer cancelWatch()
	werr := make(chan error, 1)
	go func() { werr <- w.Run(watchCtx, func() { srv.SetReady(true) }) }()
	serr := srv.Run(ctx) // returns after ctx ends and the drain completes
	cancelWatch()
	listeners.close(l4CloseGrace) // the TCP and UDP listeners served through the drain too
	return errors.Join(serr, <-werr)
}

// SelfSignedCertificate is the certificate served when the fleet names none: generated at start,
// valid for ten years, for the name "portico-default".
func SelfSignedCertificate() (*tls.Certificate, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "portico-default", Organization: []string{"Portico"}},
		DNSNames: []string{"portico-default"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k, Leaf: leaf}, nil
}

// registerMetrics registers every series the proxy serves on /metrics: its own, the Go
// runtime's and the process's (docs/operations.md lists them).
func registerMetrics(reg prometheus.Registerer) (*proxy.Metrics, *l4.Metrics) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return proxy.NewMetrics(reg), l4.NewMetrics(reg)
}

// l4CloseGrace bounds the wait for the TCP connections and UDP flows still open when the
// proxy stops, after the drain period.
const l4CloseGrace = 5 * time.Second
