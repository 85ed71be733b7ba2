// Command localcluster runs the local cluster in the foreground until SIGTERM: the control
// plane, one agent per simulated node, and the service proxy. hack/cluster.sh starts it inside
// the cluster's network namespace.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/go-logr/logr"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"portico.dev/portico/test/cluster"
)

type labelFlags []string

func (l *labelFlags) String() string     { return strings.Join(*l, ",") }
func (l *labelFlags) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	dir := flag.String("dir", ".local", "state directory")
	binDir := flag.String("k8s-bin", "", "directory of the control plane binaries")
	nodes := flag.Int("nodes", 3, "number of nodes")
	portico := flag.String("portico", "bin/portico", "binary run for the Portico image")
	echoBin := flag.String("echo", "bin/echo-server", "binary run for the echo image")
	var labels labelFlags
	flag.Var(&labels, "label", "N:key=value: a label of node N (0-based); repeatable")
	flag.Parse()
	log := zap.New(zap.UseDevMode(false), zap.Level(zapcore.InfoLevel))

	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, abs(*dir), abs(*binDir), *nodes, labels, cluster.Images{
		"portico.dev/portico": abs(*portico),
		"portico.dev/echo":    abs(*echoBin),
	}, log); err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dir, binDir string, n int, labels []string, images cluster.Images, log logr.Logger) error {
	_ = os.Remove(filepath.Join(dir, "ready"))
	cp, err := cluster.StartControlPlane(ctx, dir, binDir, log.WithName("control-plane"))
	if err != nil {
		return err
	}
	defer cp.Stop()
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	nodeLabels := make([]map[string]string, n)
	for i := range nodeLabels {
		nodeLabels[i] = map[string]string{}
	}
	for _, l := range labels {
		idx, kv, ok := strings.Cut(l, ":")
		k, v, ok2 := strings.Cut(kv, "=")
		var i int
		if _, err := fmt.Sscan(idx, &i); err != nil || !ok || !ok2 || i < 0 || i >= n {
			return fmt.Errorf("--label %q: want N:key=value with 0 <= N < %d", l, n)
		}
		nodeLabels[i][k] = v
	}
	actx, cancelAgents := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ips := map[string]string{}
	for i := 0; i < n; i++ {
		a := &cluster.Agent{Name: fmt.Sprintf("node-%d", i+1), Index: i, Labels: nodeLabels[i], Client: cs, Images: images,
			Dir: filepath.Join(dir, "nodes", fmt.Sprintf("node-%d", i+1)), CACert: cp.CACert, Log: log.WithName(fmt.Sprintf("node-%d", i+1))}
		ips[a.Name] = a.IP()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.Run(actx); err != nil {
				log.Error(err, "Node agent", "node", a.Name)
			}
		}()
	}
	sp := &cluster.ServiceProxy{Client: cs, Nodes: ips, Log: log.WithName("service-proxy")}
	wg.Add(1)
	go func() { defer wg.Done(); sp.Run(actx) }()
	if err := os.WriteFile(filepath.Join(dir, "ready"), []byte("ok\n"), 0o644); err != nil {
		cancelAgents()
		return err
	}
	log.Info("Local cluster ready", "kubeconfig", cp.Kubeconfig, "nodes", n)
	<-ctx.Done()
	log.Info("Stopping the local cluster")
	cancelAgents()
	wg.Wait()
	_ = os.Remove(filepath.Join(dir, "ready"))
	return nil
}
