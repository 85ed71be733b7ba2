package run_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/echo"
	"portico.dev/portico/test/testnet"
)

// BenchmarkScale loads a real API server with N Ingresses (own host each), N Services and 3N
// endpoints (N=10000 unless PORTICO_SCALE says otherwise), runs the `portico proxy` binary
// against it with the fleet's own RBAC, and reports: the time to the first ready table, the
// proxy's resident memory, and the time from creating one more Ingress to its first 200 through
// the proxy (100 samples). Run it with -benchtime=1x (make bench-scale).
func BenchmarkScale(b *testing.B) {
	testnet.Require(b)
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(porticov1alpha1.AddToScheme(scheme))
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("PORTICO_SCALE")); err == nil {
		n = v
	}
	env := &envtest.Environment{}
	testnet.ConfigureAPIServer(func(k, v string) { env.ControlPlane.GetAPIServer().Configure().Set(k, v) })
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16") // room for 10,000 Services
	cfg, err := env.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	cfg.RateLimiter = flowcontrol.NewFakeAlwaysRateLimiter()
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	ns := "scale"
	must := func(err error) {
		if err != nil {
			b.Helper()
			b.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	fleet := &porticov1alpha1.IngressDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "edge"},
		Spec: porticov1alpha1.IngressDeploymentSpec{Topology: porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort}}}
	objs, _ := render.Render(render.Input{Fleet: fleet, Image: "unused"})
	for _, o := range objs {
		switch o.(type) {
		case *corev1.ServiceAccount, *corev1.ConfigMap, *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *rbacv1.Role, *rbacv1.RoleBinding:
			o.SetOwnerReferences(nil)
			must(c.Create(ctx, o))
		}
	}
	must(c.Create(ctx, rt.Class("portico", ns, "edge", false)))

	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				name := "svc-" + strconv.Itoa(i)
				es := rt.Slice(ns, name, "http", 8080, rt.Ready, testnet.IP(), testnet.IP(), testnet.IP())
				es.Name = name
				ing := rt.Ingress(ns, "ing-"+strconv.Itoa(i), 0, rt.ClassOf(ptr.To("portico"), ""),
					rt.Rule("host-"+strconv.Itoa(i)+".example.com", "/", rt.Prefix, name, 80))
				ing.UID, ing.CreationTimestamp = "", metav1.Time{}
				for _, o := range []client.Object{rt.Service(ns, name), es, ing} {
					if err := c.Create(ctx, o); err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	must(firstErr)
	b.Logf("created %d Ingresses, %d Services, %d endpoints in %s", n, n, 3*n, time.Since(start).Round(time.Millisecond))

	// The proxy binary, as its ServiceAccount.
	dir := b.TempDir()
	bin := filepath.Join(dir, "portico")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	cs, _ := kubernetes.NewForConfig(cfg)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, "edge-proxy", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}, metav1.CreateOptions{})
	must(err)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	must(writeKubeconfig(kubeconfig, cfg, tr.Status.Token))
	httpPort, healthPort := freePortB(b), freePortB(b)
	proc := exec.Command(bin, "proxy", "--fleet="+ns+"/edge", "--bind-address=127.0.0.1",
		"--http-port="+strconv.Itoa(httpPort), "--https-port="+strconv.Itoa(freePortB(b)), "--health-port="+strconv.Itoa(healthPort), "--drain-seconds=0")
	proc.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "GOMAXPROCS=2")
	proc.Stdout, proc.Stderr = nil, nil
	started := time.Now()
	must(proc.Start())
	defer func() { _ = proc.Process.Kill(); _, _ = proc.Process.Wait() }()
	for {
		r, err := http.Get("http://127.0.0.1:" + strconv.Itoa(healthPort) + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				break
			}
		}
		if time.Since(started) > 5*time.Minute {
			b.Fatal("proxy not ready after 5 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	readyIn := time.Since(started)
	time.Sleep(2 * time.Second)
	rss := rssMiB(proc.Process.Pid)

	// Propagation: a real backend, then Ingresses created one at a time.
	ip := testnet.IP()
	ln, err := net.Listen("tcp", ip+":8080")
	must(err)
	srv := &http.Server{Handler: echo.Handler("probe", "probe")}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	must(c.Create(ctx, rt.Service(ns, "probe")))
	pes := rt.Slice(ns, "probe", "http", 8080, rt.Ready, ip)
	pes.Name = "probe"
	must(c.Create(ctx, pes))
	time.Sleep(500 * time.Millisecond)
	hc := &http.Client{Timeout: time.Second}
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		host := "probe-" + strconv.Itoa(i) + ".example.com"
		ing := rt.Ingress(ns, "probe-"+strconv.Itoa(i), 0, rt.ClassOf(ptr.To("portico"), ""), rt.Rule(host, "/", rt.Prefix, "probe", 80))
		ing.UID, ing.CreationTimestamp = "", metav1.Time{}
		t0 := time.Now()
		must(c.Create(ctx, ing))
		for {
			req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(httpPort)+"/", nil)
			req.Host = host
			resp, err := hc.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("Ingress %s not served after 30s", host)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(readyIn.Seconds(), "s-to-ready")
	b.ReportMetric(rss, "MiB-rss")
	b.ReportMetric(q(0.5), "ms-p50-propagation")
	b.ReportMetric(q(0.99), "ms-p99-propagation")
	b.ReportMetric(q(1), "ms-max-propagation")
	b.Logf("%d Ingresses: ready in %s, RSS %.1f MiB, propagation p50 %.1f ms p99 %.1f ms max %.1f ms (%d samples)",
		n, readyIn.Round(time.Millisecond), rss, q(0.5), q(0.99), q(1), len(lat))
}

func freePortB(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func rssMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.Atoi(strings.Fields(line)[1])
			return float64(kb) / 1024
		}
	}
	return -1
}

func writeKubeconfig(path string, cfg *rest.Config, token string) error {
	doc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: %q, certificate-authority-data: %q}
users:
- name: u
  user: {token: %q}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`, cfg.Host, b64(cfg.CAData), token)
	return os.WriteFile(path, []byte(doc), 0o600)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
