// Command portico is Portico's one binary: `portico operator` manages fleets of ingress
// proxies, `portico proxy` is the data plane every fleet runs, and `portico default-backend`
// answers requests that match no Ingress rule; `portico migrate` reports what moving from
// ingress-nginx changes.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers"
	"portico.dev/portico/controllers/migrate"
	"portico.dev/portico/dataplane/defaultbackend"
	"portico.dev/portico/dataplane/run"
)

const usage = `usage: portico <command> [flags]

commands:
  operator          run the operator (manages IngressDeployments)
  proxy             run the ingress proxy of one fleet
  default-backend   answer every request with a fixed status code
  migrate           report what moving from ingress-nginx changes, and convert its
                    ConfigMaps to a fleet (reads a cluster or YAML files; writes nothing)

Run 'portico <command> -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	// Each command binds the logger's flags (--zap-log-level and friends) to its own.
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "operator":
		err = runOperator(args)
	case "proxy":
		err = run.Main(args)
	case "default-backend":
		err = defaultbackend.Main(args)
	case "migrate":
		err = migrate.Main(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "portico: unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "portico %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// scheme holds the built-in kinds and ingress.portico.dev/v1alpha1.
func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(porticov1alpha1.AddToScheme(s))
	return s
}

func runOperator(args []string) error {
	fs := flag.NewFlagSet("operator", flag.ContinueOnError)
	metricsAddr := fs.String("metrics-bind-address", ":8080", "address of the /metrics endpoint (0 disables it)")
	probeAddr := fs.String("health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	leaderElect := fs.Bool("leader-elect", false, "elect one active operator among replicas (the status writer must be unique)")
	leaderNS := fs.String("leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease (default $POD_NAMESPACE, else the pod's namespace)")
	image := fs.String("image", os.Getenv("PORTICO_IMAGE"), "image of the proxies and default backends (default $PORTICO_IMAGE)")
	qps := fs.Float64("kube-api-qps", 500, "API requests per second the operator may send (status writes to 10,000 Ingresses need hundreds)")
	burst := fs.Int("kube-api-burst", 1000, "API request burst")
	zopts := zap.Options{TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	zopts.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *image == "" {
		return fmt.Errorf("--image (or PORTICO_IMAGE) is required: the image the fleets run")
	}
	// Where pods share one network namespace (the local cluster), each binds its own address.
	if host := os.Getenv("PORTICO_BIND_ADDRESS"); host != "" {
		for _, a := range []*string{metricsAddr, probeAddr} {
			if strings.HasPrefix(*a, ":") {
				*a = host + *a
			}
		}
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zopts)))
	log := ctrl.Log.WithName("operator")

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme(),
		Cache:                         controllers.CacheOptions(),
		Metrics:                       metricsserver.Options{BindAddress: *metricsAddr},
		HealthProbeBindAddress:        *probeAddr,
		LeaderElection:                *leaderElect,
		LeaderElectionID:              "operator.ingress.portico.dev",
		LeaderElectionNamespace:       *leaderNS,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       ptrDuration(30 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}
	ctx := ctrl.SetupSignalHandler()
	if err := controllers.Setup(ctx, mgr, *image); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	log.Info("Starting operator", "image", *image)
	return mgr.Start(ctx)
}

func ptrDuration(d time.Duration) *time.Duration { return &d }
