// Command staticproxy runs Portico's proxy (the same Handler and Server as `portico proxy`) on a
// routing table compiled from fixed objects instead of a cluster, for hack/bench-proxy.sh: one
// host, Prefix "/", to one backend address.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/l4"
	"portico.dev/portico/dataplane/procs"
	"portico.dev/portico/dataplane/proxy"
	"portico.dev/portico/dataplane/route"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// benchUsers is the access row's htpasswd file: user bench, password bench ({SHA}, which nginx
// reads too).
const benchUsers = "bench:{SHA}5cicUp3MubQnFvTZEY1hB5yIPZ4=\n"

func main() {
	httpAddr := flag.String("http", "127.0.0.1:18083", "HTTP listen address")
	httpsAddr := flag.String("https", "127.0.0.1:18443", "HTTPS listen address")
	health := flag.String("health", "127.0.0.1:18254", "health listen address")
	backend := flag.String("backend", "127.0.0.1:18000", "backend address")
	host := flag.String("host", "bench.example.com", "routed host")
	grpcBackend := flag.String("grpc-backend", "127.0.0.1:18010", "gRPC (h2c) backend address, routed for grpc.<host>")
	tcpListen := flag.String("tcp-listen", "127.0.0.1:18093", "the TCP service's listen address (the tcpbulk and tcpconn rows)")
	tcpBackend := flag.String("tcp-backend", "127.0.0.1:18020", "the TCP service's backend address")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	memprofile := flag.String("memprofile", "", "write a heap profile to this file at the end of the run (before the listeners close)")
	loops := flag.Int("event-loops", 0, "event loops for cleartext HTTP (0: one per CPU, -1: none)")
	spare := flag.Int("spare-procs", procs.Spare, "Ps the Go runtime gets beyond the event loops, as portico proxy's --spare-procs")
	runFor := flag.Duration("run-for", 0, "exit after this long (for profilers that cannot take a signal, such as callgrind)")
	netHTTP := flag.Bool("net-http", false, "serve both listeners with net/http's own server and the proxy's Handler, keep-alive on (no fast path, no event loops): what the fast path is measured against")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (heap profiles of idle connections, execution traces)")
	flag.Parse()
	debug.SetGCPercent(proxy.DefaultGCPercent()) // as portico proxy runs
	procs.AddSpare(*spare)
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/trace", httppprof.Trace) // execution traces: which goroutines run, and why
		go func() { _ = http.ListenAndServe(*pprofAddr, mux) }()
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	bhost, bport, err := net.SplitHostPort(*backend)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	port, _ := strconv.Atoi(bport)
	ghost, gport, err := net.SplitHostPort(*grpcBackend)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	grpcPort, _ := strconv.Atoi(gport)
	grpcName := "grpc." + *host
	secret := rt.TLSSecret("bench", "bench-tls", *host, grpcName)
	cert, _ := tls.X509KeyPair(secret.Data["tls.crt"], secret.Data["tls.key"])
	in := route.Input{
		Config:  proxyconfig.Config{FleetNamespace: "bench", FleetName: "bench"},
		Classes: []*networkingv1.IngressClass{rt.Class("portico", "bench", "bench", false)},
		Ingresses: []*networkingv1.Ingress{rt.Ingress("bench", "bench", 0, rt.Rule(*host, "/", rt.Prefix, "backend", 80),
			rt.Rule(grpcName, "/", rt.Prefix, "grpc", 80), rt.TLS("bench-tls", *host, grpcName),
			// Plain HTTP is proxied, as by the peers (no HTTPS redirect: the rows would measure 308s).
			rt.Annotation("portico.dev/ssl-redirect", "false")),
			// The policy row's route: a rewrite and header modifiers both ways.
			rt.Ingress("bench", "policy", 1, rt.Rule("policy."+*host, "/policy/(.*)", rt.Prefix, "backend", 80),
				rt.Annotation("portico.dev/use-regex", "true"), rt.Annotation("portico.dev/rewrite-target", "/$1"),
				rt.Annotation("portico.dev/request-headers-set", "X-Bench: policy"),
				rt.Annotation("portico.dev/response-headers-set", "X-Served-By: proxy")),
			// The access row's route: basic auth (user bench, password bench) and a rate limit
			// that the load does not reach.
			rt.Ingress("bench", "access", 2, rt.Rule("access."+*host, "/", rt.Prefix, "backend", 80),
				rt.Annotation("portico.dev/auth-type", "basic"), rt.Annotation("portico.dev/auth-secret", "bench-users"),
				rt.Annotation("portico.dev/limit-rps", "1000000"), rt.Annotation("portico.dev/ssl-redirect", "false"))},
		Services: []*corev1.Service{rt.Service("bench", "backend"),
			rt.Service("bench", "grpc", corev1.ServicePort{Name: "http", Port: 80, AppProtocol: ptr.To("grpc")})},
		EndpointSlices: []*discoveryv1.EndpointSlice{rt.Slice("bench", "backend", "http", int32(port), rt.Ready, bhost),
			rt.Slice("bench", "grpc", "http", int32(grpcPort), rt.Ready, ghost)},
		Secrets: []*corev1.Secret{secret, {ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: "bench-users"}, Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{"auth": []byte(benchUsers)}}},
		FallbackCertificate: &cert,
		Stats:               route.NewStatsRegistry(),
	}
	thost, tport, err := net.SplitHostPort(*tcpBackend)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tp, _ := strconv.Atoi(tport)
	in.Services = append(in.Services, rt.Service("bench", "tcpbackend", corev1.ServicePort{Name: "tcp", Port: 80, Protocol: corev1.ProtocolTCP}))
	in.EndpointSlices = append(in.EndpointSlices, rt.Slice("bench", "tcpbackend", "tcp", int32(tp), rt.Ready, thost))
	in.Config.TCP = []proxyconfig.L4Service{{Port: 18093, ListenPort: 18093, Service: proxyconfig.ServiceRef{Namespace: "bench", Name: "tcpbackend", Port: 80}}}
	t, problems := route.Compile(in)
	if len(problems) > 0 {
		fmt.Fprintln(os.Stderr, problems)
		os.Exit(1)
	}
	reg := prometheus.NewRegistry()
	// The Go runtime's own series (heap, stacks, goroutines) on /metrics, for looking into
	// the memory rows.
	reg.MustRegister(collectors.NewGoCollector())
	h := proxy.NewHandler(proxy.Options{HTTPPort: 80, HTTPSPort: 443}, proxy.NewMetrics(reg), logr.Discard())
	h.Swap(t, 0)
	srv := proxy.NewServer(proxy.ServerOptions{HTTPAddr: *httpAddr, HTTPSAddr: *httpsAddr, HealthAddr: *health, EventLoops: *loops}, h, reg, logr.Discard())
	srv.SetReady(true)
	// The TCP service, as dataplane/run serves the table's listeners.
	tln, err := (&net.ListenConfig{KeepAlive: -1}).Listen(context.Background(), "tcp", *tcpListen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fwd := l4.NewTCPForwarder(l4.TCPConfig{Name: t.Listeners[0].Name, Picker: proxy.NewBackendPicker(t.Listeners[0].Backend)})
	go func() { _ = fwd.Serve(tln) }()
	defer fwd.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}
	if *netHTTP {
		serveNetHTTP(ctx, h, srv.TLSConfig(), *httpAddr, *httpsAddr)
		return
	}
	profiled := make(chan struct{})
	if *memprofile == "" {
		close(profiled)
	} else {
		go func() {
			defer close(profiled)
			<-ctx.Done()
			f, err := os.Create(*memprofile)
			if err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				_ = f.Close()
			}
		}()
	}
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	<-profiled
}

// serveNetHTTP serves the Handler with net/http alone, as the proxy did before its fast path.
func serveNetHTTP(ctx context.Context, h http.Handler, tc *tls.Config, httpAddr, httpsAddr string) {
	plain := &http.Server{Addr: httpAddr, Handler: h}
	secure := &http.Server{Addr: httpsAddr, Handler: h, TLSConfig: tc}
	go func() { _ = plain.ListenAndServe() }()
	go func() { _ = secure.ListenAndServeTLS("", "") }()
	<-ctx.Done()
	_ = plain.Close()
	_ = secure.Close()
}
