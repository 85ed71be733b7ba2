package controllers_test

import (
	"context"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/testnet"
)

// writeCounter counts the requests that write (anything but GET, LIST and WATCH).
type writeCounter struct {
	next   http.RoundTripper
	writes atomic.Int64
}

func (w *writeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodGet {
		w.writes.Add(1)
	}
	return w.next.RoundTrip(r)
}

// BenchmarkStatusWriteback creates N Ingresses of one class (N=10000 unless PORTICO_SCALE says
// otherwise) before the operator starts, then reports the time from the operator's start until
// every Ingress carries the fleet's address, and the operator's API writes over the following
// minute at rest. Run with -benchtime=1x (make bench-status).
func BenchmarkStatusWriteback(b *testing.B) {
	testnet.Require(b)
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel))) // the operator's errors only
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("PORTICO_SCALE")); err == nil {
		n = v
	}
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(porticov1alpha1.AddToScheme(s))
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	testnet.ConfigureAPIServer(func(k, v string) { env.ControlPlane.GetAPIServer().Configure().Set(k, v) })
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	admin := *cfg
	admin.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	c, err := client.New(&admin, client.Options{Scheme: s})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	must := func(err error) {
		if err != nil {
			b.Helper()
			b.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale"}}))
	must(c.Create(ctx, &porticov1alpha1.IngressDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: "scale", Name: "edge"},
		Spec: porticov1alpha1.IngressDeploymentSpec{Topology: porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort},
			StatusAddress: &porticov1alpha1.StatusAddress{Addresses: []string{"192.0.2.10"}}}}))
	must(c.Create(ctx, rt.Class("portico", "scale", "edge", false)))
	// The Service the Ingresses name: without it each Ingress draws a Warning Event (a route
	// problem), which is not what this measures.
	must(c.Create(ctx, rt.Service("scale", "svc")))
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ing := rt.Ingress("scale", "ing-"+strconv.Itoa(i), 0, rt.ClassOf(ptr.To("portico"), ""),
					rt.Rule("host-"+strconv.Itoa(i)+".example.com", "/", rt.Prefix, "svc", 80))
				ing.UID, ing.CreationTimestamp = "", metav1.Time{}
				if err := c.Create(ctx, ing); err != nil {
					b.Error(err)
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()

	counter := &writeCounter{}
	opCfg := *cfg
	opCfg.QPS, opCfg.Burst = 500, 1000 // the operator's defaults (main.go)
	opCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { counter.next = rt; return counter }
	mgr, err := ctrl.NewManager(&opCfg, ctrl.Options{Scheme: s, Cache: controllers.CacheOptions(),
		Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	must(err)
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	must(controllers.Setup(mctx, mgr, "portico.dev/portico:bench"))
	start := time.Now()
	go func() { _ = mgr.Start(mctx) }()
	for {
		list := &networkingv1.IngressList{}
		must(c.List(ctx, list, client.InNamespace("scale")))
		done := 0
		for _, i := range list.Items {
			if len(i.Status.LoadBalancer.Ingress) == 1 && i.Status.LoadBalancer.Ingress[0].IP == "192.0.2.10" {
				done++
			}
		}
		if done == n {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d of %d Ingresses carry the address after 10 minutes", done, n)
		}
		time.Sleep(250 * time.Millisecond)
	}
	allIn := time.Since(start)
	time.Sleep(5 * time.Second) // the last writes' own events settle

	// Then one Ingress at a time: from its creation to its address.
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		ing := rt.Ingress("scale", "late-"+strconv.Itoa(i), 0, rt.ClassOf(ptr.To("portico"), ""),
			rt.Rule("late-"+strconv.Itoa(i)+".example.com", "/", rt.Prefix, "svc", 80))
		ing.UID, ing.CreationTimestamp = "", metav1.Time{}
		t0 := time.Now()
		must(c.Create(ctx, ing))
		for {
			got := &networkingv1.Ingress{}
			must(c.Get(ctx, client.ObjectKeyFromObject(ing), got))
			if len(got.Status.LoadBalancer.Ingress) == 1 {
				break
			}
			if time.Since(t0) > time.Minute {
				b.Fatalf("Ingress %s not addressed after a minute", ing.Name)
			}
			time.Sleep(5 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	time.Sleep(5 * time.Second)
	before := counter.writes.Load()
	time.Sleep(time.Minute)
	atRest := counter.writes.Load() - before
	b.ReportMetric(allIn.Seconds(), "s-until-all-addressed")
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "ms-p50-new-ingress-addressed")
	b.ReportMetric(float64(lat[len(lat)-1].Milliseconds()), "ms-max-new-ingress-addressed")
	b.ReportMetric(float64(atRest), "writes-per-minute-at-rest")
	b.Logf("%d Ingresses: all carry the address %s after the operator started; then a new Ingress is addressed in p50 %s, max %s (20 samples); %d API writes in the following minute at rest",
		n, allIn.Round(time.Millisecond), lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), atRest)
}
