package migrate

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

const usage = `usage: portico migrate [flags]

Reports what a Portico fleet with spec.ingressNginxCompatibility makes of the Ingresses of
ingress-nginx's classes (annotations honoured, not honoured and why, problems, differences),
and converts ingress-nginx's ConfigMaps. Reads a cluster (read-only) or, with -f, YAML files.
With --emit, writes the IngressDeployment and IngressClass that would take over the class.

flags:
`

// Main runs `portico migrate` with the command line's arguments.
func Main(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	return Run(ctx, args, os.Stdout, os.Stderr)
}

// Run runs `portico migrate`: the report goes to stdout, what --emit wrote to stderr.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	dir := fs.String("f", "", "read the objects from the .yaml, .yml and .json files under this directory (or this one file) instead of a cluster")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig file (default $KUBECONFIG, else ~/.kube/config, else in-cluster)")
	kubecontext := fs.String("context", "", "kubeconfig context (default the current one)")
	output := fs.String("o", "text", "report format: text or json")
	emit := fs.String("emit", "", "write the IngressDeployment and IngressClass that would take over ingress-nginx's class into this directory")
	fleetName := fs.String("fleet-name", "portico", "name of the emitted IngressDeployment")
	fleetNamespace := fs.String("fleet-namespace", "ingress", "namespace of the emitted IngressDeployment")
	className := fs.String("class-name", "", "name of the emitted IngressClass (default: ingress-nginx's default class, else its class nginx, else its first class)")
	topology := fs.String("topology", string(porticov1alpha1.TopologyLoadBalancer), "topology of the emitted fleet: LoadBalancer, NodePort or HostNetwork")
	nginxNS := fs.String("nginx-namespace", "ingress-nginx", "namespace of ingress-nginx's ConfigMaps")
	nginxCM := fs.String("nginx-configmap", "ingress-nginx-controller", "the controller's ConfigMap (name, or namespace/name)")
	tcpCM := fs.String("tcp-services-configmap", "tcp-services", "the TCP services ConfigMap (name, or namespace/name)")
	udpCM := fs.String("udp-services-configmap", "udp-services", "the UDP services ConfigMap (name, or namespace/name)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (flags come first; -f DIR reads files)", fs.Args())
	}

	opts := Options{
		FleetName: *fleetName, FleetNamespace: *fleetNamespace, ClassName: *className,
		Topology: porticov1alpha1.TopologyType(*topology), MatchConfigMapsByName: *dir != "",
	}
	var err error
	if err = checkOptions(opts, *output); err != nil {
		return err
	}
	if opts.ConfigMap, err = configMapName(*nginxCM, *nginxNS); err != nil {
		return fmt.Errorf("--nginx-configmap: %w", err)
	}
	if opts.TCPServices, err = configMapName(*tcpCM, *nginxNS); err != nil {
		return fmt.Errorf("--tcp-services-configmap: %w", err)
	}
	if opts.UDPServices, err = configMapName(*udpCM, *nginxNS); err != nil {
		return fmt.Errorf("--udp-services-configmap: %w", err)
	}

	var objs *Objects
	if *dir != "" {
		if *kubeconfig != "" || *kubecontext != "" {
			return fmt.Errorf("-f reads files: --kubeconfig and --context are for a cluster")
		}
		if objs, err = ReadDir(*dir); err != nil {
			return err
		}
	} else {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		rules.ExplicitPath = *kubeconfig
		cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules,
			&clientcmd.ConfigOverrides{CurrentContext: *kubecontext}).ClientConfig()
		if err != nil {
			return fmt.Errorf("kubeconfig: %w (or read files with -f DIR)", err)
		}
		cfg.Timeout = 30 * time.Second
		if objs, err = ReadCluster(ctx, cfg, ConfigMapNames{opts.ConfigMap, opts.TCPServices, opts.UDPServices}); err != nil {
			return err
		}
	}

	res := Analyze(objs, opts)
	if *emit != "" {
		files, err := Emit(res)
		if err != nil {
			return err
		}
		paths, err := WriteEmitted(*emit, files)
		if err != nil {
			return fmt.Errorf("--emit: %w", err)
		}
		fmt.Fprintf(stderr, "wrote %s\n", strings.Join(paths, ", "))
	}
	if *output == "json" {
		return WriteJSON(stdout, res.Report)
	}
	return WriteText(stdout, res.Report)
}

// checkOptions refuses names the API server would refuse, before anything is read.
func checkOptions(opts Options, output string) error {
	if output != "text" && output != "json" {
		return fmt.Errorf("-o is text or json, not %q", output)
	}
	switch opts.Topology {
	case porticov1alpha1.TopologyLoadBalancer, porticov1alpha1.TopologyNodePort, porticov1alpha1.TopologyHostNetwork:
	default:
		return fmt.Errorf("--topology is LoadBalancer, NodePort or HostNetwork, not %q", opts.Topology)
	}
	if errs := validation.IsDNS1123Label(opts.FleetName); len(errs) > 0 {
		return fmt.Errorf("--fleet-name %q: %s", opts.FleetName, strings.Join(errs, "; "))
	}
	if len(opts.FleetName) > 47 {
		return fmt.Errorf("--fleet-name %q: at most 47 characters (the fleet's Services are named <name>-default-backend)", opts.FleetName)
	}
	if errs := validation.IsDNS1123Label(opts.FleetNamespace); len(errs) > 0 {
		return fmt.Errorf("--fleet-namespace %q: %s", opts.FleetNamespace, strings.Join(errs, "; "))
	}
	if opts.ClassName != "" {
		if errs := validation.IsDNS1123Subdomain(opts.ClassName); len(errs) > 0 {
			return fmt.Errorf("--class-name %q: %s", opts.ClassName, strings.Join(errs, "; "))
		}
	}
	return nil
}

// configMapName reads "name" (in ns) or "namespace/name", as ingress-nginx's flags take it.
func configMapName(s, ns string) (types.NamespacedName, error) {
	if n, name, ok := strings.Cut(s, "/"); ok {
		ns, s = n, name
	}
	if s == "" || ns == "" || strings.Contains(s, "/") {
		return types.NamespacedName{}, fmt.Errorf("%q is not a name or namespace/name", s)
	}
	return types.NamespacedName{Namespace: ns, Name: s}, nil
}
