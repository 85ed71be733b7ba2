package render_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
	proxyconfig "portico.dev/portico/dataplane/config"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func fleet(mut func(*porticov1alpha1.IngressDeployment)) *porticov1alpha1.IngressDeployment {
	f := &porticov1alpha1.IngressDeployment{
		ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "ingress", UID: "11111111-2222-3333-4444-555555555555", Generation: 1},
		Spec:       porticov1alpha1.IngressDeploymentSpec{Topology: porticov1alpha1.Topology{Type: porticov1alpha1.TopologyHostNetwork}},
	}
	if mut != nil {
		mut(f)
	}
	return f
}

func l4Ref(ns, name string, port intstr.IntOrString) porticov1alpha1.L4ServiceReference {
	return porticov1alpha1.L4ServiceReference{Namespace: ns, Name: name, Port: port}
}

func TestRenderGolden(t *testing.T) {
	local := corev1.ServiceExternalTrafficPolicyLocal
	cases := map[string]*porticov1alpha1.IngressDeployment{
		"hostnetwork-defaults": fleet(nil),
		"hostnetwork-custom": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology.HostNetwork = &porticov1alpha1.HostNetworkTopology{HTTPPort: 8000, HTTPSPort: 8443, HealthPort: 9000}
			f.Spec.NodePlacement = &porticov1alpha1.NodePlacement{
				NodeSelector: map[string]string{"node-role.kubernetes.io/edge": ""},
				Tolerations:  []corev1.Toleration{{Key: "edge", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			}
			f.Spec.WatchNamespaces = []string{"shop", "blog"}
			f.Spec.DefaultCertificate = &porticov1alpha1.DefaultCertificate{SecretName: "wildcard-tls"}
			f.Spec.DefaultBackend = &porticov1alpha1.DefaultBackend{Type: porticov1alpha1.DefaultBackendService,
				Service: &porticov1alpha1.ServiceReference{Name: "my-404", Port: 80}}
			f.Spec.HTTP = &porticov1alpha1.HTTPSettings{
				MaxRequestBodySize:        ptr.To(resource.MustParse("8Mi")),
				ClientBodyTimeout:         &metav1.Duration{Duration: 90 * time.Second},
				AllowUnderscoresInHeaders: true,
				SSLRedirect:               ptr.To(false),
				ProxyReadTimeout:          &metav1.Duration{Duration: 2 * time.Minute},
				HSTS:                      &porticov1alpha1.HSTSSettings{MaxAgeSeconds: ptr.To[int64](600), Preload: true},
			}
			f.Spec.AccessLog = &porticov1alpha1.AccessLogSettings{Enabled: true, OneIn: ptr.To[int32](100)}
			f.Spec.ClientAddress = &porticov1alpha1.ClientAddressSettings{ProxyProtocol: true, TrustedProxies: []string{"192.0.2.0/24", "10.0.0.0/8"}}
		}),
		"nodeport": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort,
				NodePort:              &porticov1alpha1.NodePortTopology{HTTPNodePort: ptr.To[int32](30080), HTTPSNodePort: ptr.To[int32](30443)},
				ExternalTrafficPolicy: &local}
			f.Spec.Replicas = ptr.To[int32](3)
			f.Spec.DefaultBackend = &porticov1alpha1.DefaultBackend{Type: porticov1alpha1.DefaultBackendManaged,
				Managed: &porticov1alpha1.ManagedDefaultBackend{StatusCode: 503}}
		}),
		"loadbalancer": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyLoadBalancer,
				LoadBalancer: &porticov1alpha1.LoadBalancerTopology{
					LoadBalancerClass:        ptr.To("example.com/lb"),
					Annotations:              map[string]string{"b.example.com/x": "2", "a.example.com/y": "1"},
					LoadBalancerSourceRanges: []string{"192.0.2.0/24", "10.0.0.0/8"},
				}}
		}),
		// spec.tcp and spec.udp: Services in other namespaces (Roles there, as the fleet watches
		// only "shop"), a privileged TCP port (NET_BIND_SERVICE though the HTTP ports are not).
		"hostnetwork-l4": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology.HostNetwork = &porticov1alpha1.HostNetworkTopology{HTTPPort: 8000, HTTPSPort: 8443, HealthPort: 9000}
			f.Spec.WatchNamespaces = []string{"shop"}
			f.Spec.TCP = []porticov1alpha1.TCPService{
				{Port: 5432, Service: l4Ref("db", "postgres", intstr.FromInt32(5432)), ProxyProtocol: porticov1alpha1.ProxyProtocolV2},
				{Port: 22, Service: l4Ref("", "git", intstr.FromString("ssh")), ProxyProtocol: porticov1alpha1.ProxyProtocolNone},
				{Port: 53, Service: l4Ref("dns", "resolver", intstr.FromString("dns-tcp"))},
			}
			f.Spec.UDP = []porticov1alpha1.UDPService{{Port: 53, Service: l4Ref("dns", "resolver", intstr.FromString("dns"))}}
		}),
		// Pinned node ports; 8080 and 53 moved off the pod's own and privileged ports (53 to
		// 10054, since UDP 10053 is a port of the fleet too).
		"nodeport-l4": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort}
			f.Spec.TCP = []porticov1alpha1.TCPService{
				{Port: 8080, Service: l4Ref("", "web", intstr.FromInt32(80))},
				{Port: 5432, NodePort: ptr.To[int32](30432), Service: l4Ref("db", "postgres", intstr.FromInt32(5432)), ProxyProtocol: porticov1alpha1.ProxyProtocolV1},
			}
			f.Spec.UDP = []porticov1alpha1.UDPService{
				{Port: 53, NodePort: ptr.To[int32](30053), Service: l4Ref("dns", "resolver", intstr.FromInt32(53))},
				{Port: 10053, Service: l4Ref("dns", "resolver", intstr.FromInt32(5353))},
			}
		}),
		"loadbalancer-l4": fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyLoadBalancer}
			f.Spec.TCP = []porticov1alpha1.TCPService{{Port: 53, Service: l4Ref("dns", "resolver", intstr.FromString("dns-tcp"))}}
			f.Spec.UDP = []porticov1alpha1.UDPService{{Port: 53, Service: l4Ref("dns", "resolver", intstr.FromString("dns"))}}
		}),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			objs, err := render.Render(render.Input{Fleet: f, Image: "portico.dev/portico:test"})
			if err != nil {
				t.Fatal(err)
			}
			got := marshalAll(t, objs)
			golden := filepath.Join("testdata", name+".yaml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("render %s differs from %s; run `go test ./controllers/render -update` and review the diff", name, golden)
			}
			// Deterministic: a second render is byte-identical.
			again, _ := render.Render(render.Input{Fleet: f, Image: "portico.dev/portico:test"})
			if !bytes.Equal(got, marshalAll(t, again)) {
				t.Error("two renders of the same input differ")
			}
		})
	}
}

func marshalAll(t *testing.T, objs []client.Object) []byte {
	t.Helper()
	var parts []string
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, string(b))
	}
	return []byte(strings.Join(parts, "---\n"))
}

func kinds(objs []client.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetNamespace()+"/"+o.GetName())
	}
	return out
}

func TestRenderTopologyObjects(t *testing.T) {
	for _, tc := range []struct {
		topology porticov1alpha1.TopologyType
		want     []string
		absent   []string
	}{
		{porticov1alpha1.TopologyHostNetwork, []string{"DaemonSet/ingress/edge-proxy"}, []string{"Deployment/ingress/edge-proxy", "Service/ingress/edge-proxy", "PodDisruptionBudget/ingress/edge-proxy"}},
		{porticov1alpha1.TopologyNodePort, []string{"Deployment/ingress/edge-proxy", "Service/ingress/edge-proxy", "PodDisruptionBudget/ingress/edge-proxy"}, []string{"DaemonSet/ingress/edge-proxy"}},
		{porticov1alpha1.TopologyLoadBalancer, []string{"Deployment/ingress/edge-proxy", "Service/ingress/edge-proxy"}, []string{"DaemonSet/ingress/edge-proxy"}},
	} {
		objs, err := render.Render(render.Input{Fleet: fleet(func(f *porticov1alpha1.IngressDeployment) { f.Spec.Topology.Type = tc.topology }), Image: "img"})
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(kinds(objs), " ")
		for _, w := range append(tc.want, "ServiceAccount/ingress/edge-proxy", "ClusterRole//portico-proxy:ingress:edge", "ConfigMap/ingress/edge-proxy", "Deployment/ingress/edge-default-backend") {
			if !strings.Contains(got, w) {
				t.Errorf("%s: missing %s in %s", tc.topology, w, got)
			}
		}
		for _, a := range tc.absent {
			if strings.Contains(got, a) {
				t.Errorf("%s: unexpected %s", tc.topology, a)
			}
		}
	}
}

func TestRenderRBACIsReadOnly(t *testing.T) {
	for _, watch := range [][]string{nil, {"a", "b"}} {
		objs, err := render.Render(render.Input{Fleet: fleet(func(f *porticov1alpha1.IngressDeployment) { f.Spec.WatchNamespaces = watch }), Image: "img"})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			b, _ := yaml.Marshal(o)
			kind := o.GetObjectKind().GroupVersionKind().Kind
			if kind != "Role" && kind != "ClusterRole" {
				continue
			}
			for _, verb := range []string{"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate", "\"*\""} {
				if strings.Contains(string(b), "- "+verb+"\n") {
					t.Errorf("%s %s grants %s:\n%s", kind, o.GetName(), verb, b)
				}
			}
		}
	}
}

func TestRenderExcludedNodes(t *testing.T) {
	f := fleet(func(f *porticov1alpha1.IngressDeployment) {
		f.Spec.NodePlacement = &porticov1alpha1.NodePlacement{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{
				{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}}},
				{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"b"}}}},
			}}}}}
	})
	objs, err := render.Render(render.Input{Fleet: f, Image: "img", ExcludedNodes: []string{"n2", "n1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetObjectKind().GroupVersionKind().Kind != "DaemonSet" {
			continue
		}
		b, _ := yaml.Marshal(o)
		if n := strings.Count(string(b), "key: metadata.name"); n != 4 {
			t.Errorf("want one requirement per excluded node in both node selector terms (4), found %d:\n%s", n, b)
		}
		if !strings.Contains(string(b), "- n1\n") || strings.Index(string(b), "- n1\n") > strings.Index(string(b), "- n2\n") {
			t.Errorf("excluded nodes missing or unsorted:\n%s", b)
		}
	}
	if f.Spec.NodePlacement.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields != nil {
		t.Error("Render modified the IngressDeployment's spec")
	}
}

// spec.http reaches the proxy as its settings: what the proxy parses from the rendered ConfigMap
// value, with its defaults applied, is what the spec says.
func TestProxyConfigHTTP(t *testing.T) {
	for _, tc := range []struct {
		name string
		http *porticov1alpha1.HTTPSettings
		want proxyconfig.Limits
	}{
		{"absent", nil, proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute, LimitStatus: 429}},
		{"empty", &porticov1alpha1.HTTPSettings{}, proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute, LimitStatus: 429}},
		{"no limit", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("0"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 0, ClientBodyTimeout: time.Minute, LimitStatus: 429}},
		{"decimal size", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("8M"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 8_000_000, ClientBodyTimeout: time.Minute, LimitStatus: 429}},
		{"fraction of a decimal unit", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("1.5M"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 1_500_000, ClientBodyTimeout: time.Minute, LimitStatus: 429}},
		{"timeout only", &porticov1alpha1.HTTPSettings{ClientBodyTimeout: &metav1.Duration{Duration: 150 * time.Second}},
			proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: 150 * time.Second, LimitStatus: 429}},
		{"underscores", &porticov1alpha1.HTTPSettings{AllowUnderscoresInHeaders: true},
			proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute, AllowUnderscoresInHeaders: true, LimitStatus: 429}},
		{"ingress-nginx's limit status", &porticov1alpha1.HTTPSettings{LimitStatusCode: ptr.To[int32](503)},
			proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute, LimitStatus: 503}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := render.ProxyConfig(fleet(func(f *porticov1alpha1.IngressDeployment) { f.Spec.HTTP = tc.http }))
			if (tc.http == nil) != (c.HTTP == nil) {
				t.Errorf("spec.http %v rendered as http %v; want both absent or both present", tc.http, c.HTTP)
			}
			s, err := c.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			parsed, err := proxyconfig.Parse(s)
			if err != nil {
				t.Fatalf("the proxy rejects the rendered config: %v\n%s", err, s)
			}
			if got := parsed.Limits(); got != tc.want {
				t.Errorf("limits %+v, want %+v\n%s", got, tc.want, s)
			}
		})
	}
}

func TestL4ListenPorts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		topology porticov1alpha1.TopologyType
		tcp, udp []int32
		want     []string // protocol/port:listenPort, in L4Ports order
	}{
		{"host network binds every port itself", porticov1alpha1.TopologyHostNetwork, []int32{22, 8080, 5432}, []int32{53},
			[]string{"TCP/22:22", "TCP/5432:5432", "TCP/8080:8080", "UDP/53:53"}},
		{"unprivileged ports are bound as they are", porticov1alpha1.TopologyLoadBalancer, []int32{5432, 3306}, []int32{5353},
			[]string{"TCP/3306:3306", "TCP/5432:5432", "UDP/5353:5353"}},
		{"privileged ports move up by 10000", porticov1alpha1.TopologyNodePort, []int32{22}, []int32{53},
			[]string{"TCP/22:10022", "UDP/53:10053"}},
		{"the pod's own TCP ports move, not UDP ones", porticov1alpha1.TopologyNodePort, []int32{8080, 8443, 10254}, []int32{8080, 10254},
			[]string{"TCP/8080:18080", "TCP/8443:18443", "TCP/10254:20254", "UDP/8080:8080", "UDP/10254:10254"}},
		{"a moved port skips ports in use", porticov1alpha1.TopologyNodePort, []int32{22, 10022, 10023, 8080, 18080}, nil,
			[]string{"TCP/22:10024", "TCP/8080:18081", "TCP/10022:10022", "TCP/10023:10023", "TCP/18080:18080"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fleet(func(f *porticov1alpha1.IngressDeployment) {
				f.Spec.Topology.Type = tc.topology
				for _, p := range tc.tcp {
					f.Spec.TCP = append(f.Spec.TCP, porticov1alpha1.TCPService{Port: p, Service: l4Ref("", "s", intstr.FromInt32(1))})
				}
				for _, p := range tc.udp {
					f.Spec.UDP = append(f.Spec.UDP, porticov1alpha1.UDPService{Port: p, Service: l4Ref("", "s", intstr.FromInt32(1))})
				}
			})
			var got []string
			for _, p := range render.L4Ports(f) {
				got = append(got, fmt.Sprintf("%s/%d:%d", p.Protocol, p.Port, p.ListenPort))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// The fleet's objects agree about every TCP and UDP port, in every topology: the Service
// targets, by name, a container port of the same protocol; the proxy's configuration listens on
// that container port; no two container ports of a protocol collide; a Deployment-topology pod
// binds nothing privileged.
func TestRenderL4Consistency(t *testing.T) {
	for _, topology := range []porticov1alpha1.TopologyType{porticov1alpha1.TopologyHostNetwork, porticov1alpha1.TopologyNodePort, porticov1alpha1.TopologyLoadBalancer} {
		t.Run(string(topology), func(t *testing.T) {
			f := fleet(func(f *porticov1alpha1.IngressDeployment) {
				f.Spec.Topology.Type = topology
				for _, p := range []int32{22, 53, 5432, 8080, 8443, 10022, 10254} {
					f.Spec.TCP = append(f.Spec.TCP, porticov1alpha1.TCPService{Port: p, Service: l4Ref("db", "s", intstr.FromInt32(p))})
				}
				for _, p := range []int32{53, 443, 8080, 10053} {
					f.Spec.UDP = append(f.Spec.UDP, porticov1alpha1.UDPService{Port: p, Service: l4Ref("", "s", intstr.FromString("dns"))})
				}
				if topology == porticov1alpha1.TopologyHostNetwork { // CEL keeps TCP ports off these
					f.Spec.Topology.HostNetwork = &porticov1alpha1.HostNetworkTopology{HTTPPort: 80, HTTPSPort: 443, HealthPort: 9000}
				}
			})
			objs, err := render.Render(render.Input{Fleet: f, Image: "img"})
			if err != nil {
				t.Fatal(err)
			}
			var pod corev1.PodSpec
			var svc *corev1.Service
			var cfg proxyconfig.Config
			for _, o := range objs {
				switch o := o.(type) {
				case *appsv1.DaemonSet:
					pod = o.Spec.Template.Spec
				case *appsv1.Deployment:
					if o.Name == "edge-proxy" {
						pod = o.Spec.Template.Spec
					}
				case *corev1.Service:
					if o.Name == "edge-proxy" {
						svc = o
					}
				case *corev1.ConfigMap:
					if cfg, err = proxyconfig.Parse(o.Data[proxyconfig.ConfigKey]); err != nil {
						t.Fatalf("the proxy refuses its configuration: %v", err)
					}
				}
			}
			byName := map[string]corev1.ContainerPort{}
			seen := map[string]bool{}
			for _, cp := range pod.Containers[0].Ports {
				byName[cp.Name] = cp
				key := fmt.Sprintf("%s/%d", cp.Protocol, cp.ContainerPort)
				if seen[key] {
					t.Errorf("container port %s twice", key)
				}
				seen[key] = true
				if topology != porticov1alpha1.TopologyHostNetwork && cp.ContainerPort < 1024 {
					t.Errorf("a %s pod binds privileged port %s", topology, key)
				}
				if (cp.HostPort != 0) != (topology == porticov1alpha1.TopologyHostNetwork) || (cp.HostPort != 0 && cp.HostPort != cp.ContainerPort) {
					t.Errorf("container port %s has host port %d", key, cp.HostPort)
				}
			}
			if len(byName) != 3+7+4 {
				t.Errorf("%d container ports, want 14: %v", len(byName), pod.Containers[0].Ports)
			}
			for _, l := range []struct {
				proto    corev1.Protocol
				services []proxyconfig.L4Service
			}{{corev1.ProtocolTCP, cfg.TCP}, {corev1.ProtocolUDP, cfg.UDP}} {
				for _, s := range l.services {
					name := strings.ToLower(string(l.proto)) + "-" + fmt.Sprint(s.Port)
					cp, ok := byName[name]
					if !ok || cp.Protocol != l.proto || cp.ContainerPort != s.ListenPort {
						t.Errorf("configuration listens on %s %d for port %d; container port %s is %+v", l.proto, s.ListenPort, s.Port, name, cp)
					}
					if s.Service.Namespace == "" {
						t.Errorf("port %d: no Service namespace in the configuration", s.Port)
					}
				}
			}
			if len(cfg.TCP) != 7 || len(cfg.UDP) != 4 {
				t.Errorf("configuration has %d TCP and %d UDP services, want 7 and 4", len(cfg.TCP), len(cfg.UDP))
			}
			if topology == porticov1alpha1.TopologyHostNetwork {
				if svc != nil {
					t.Error("a HostNetwork fleet has a Service")
				}
				return
			}
			if len(svc.Spec.Ports) != 2+7+4 {
				t.Errorf("%d Service ports, want 13", len(svc.Spec.Ports))
			}
			for _, sp := range svc.Spec.Ports {
				cp, ok := byName[sp.TargetPort.StrVal]
				if !ok || cp.Protocol != sp.Protocol {
					t.Errorf("Service port %s targets %q, which is no %s container port", sp.Name, sp.TargetPort.String(), sp.Protocol)
				}
			}
		})
	}
}

func TestRenderL4RBAC(t *testing.T) {
	l4 := func(watch []string) []client.Object {
		objs, err := render.Render(render.Input{Fleet: fleet(func(f *porticov1alpha1.IngressDeployment) {
			f.Spec.WatchNamespaces = watch
			f.Spec.TCP = []porticov1alpha1.TCPService{{Port: 5432, Service: l4Ref("db", "pg", intstr.FromInt32(5432))}, {Port: 6379, Service: l4Ref("shop", "redis", intstr.FromInt32(6379))}}
			f.Spec.UDP = []porticov1alpha1.UDPService{{Port: 53, Service: l4Ref("", "dns", intstr.FromInt32(53))}}
		}), Image: "img"})
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	roles := func(objs []client.Object) map[string][]string {
		out := map[string][]string{}
		for _, o := range objs {
			if r, ok := o.(*rbacv1.Role); ok && r.Name == "portico-proxy:ingress:edge" {
				for _, rule := range r.Rules {
					out[r.Namespace] = append(out[r.Namespace], rule.Resources...)
				}
			}
		}
		return out
	}
	if got := roles(l4(nil)); len(got) != 0 {
		t.Errorf("every namespace is readable through the ClusterRole, yet Roles: %v", got)
	}
	got := roles(l4([]string{"shop"}))
	want := map[string]string{
		"shop":    "secrets services endpointslices ingresses", // watched: the full set
		"db":      "services endpointslices",                   // a TCP service's namespace
		"ingress": "services endpointslices",                   // the fleet's own, where "dns" defaults to
	}
	if len(got) != len(want) {
		t.Errorf("Roles in %v, want %v", got, want)
	}
	for ns, resources := range want {
		if strings.Join(got[ns], " ") != resources {
			t.Errorf("Role in %s grants %v, want %s", ns, got[ns], resources)
		}
	}
}
