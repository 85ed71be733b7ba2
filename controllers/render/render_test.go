package render_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
		{"absent", nil, proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute}},
		{"empty", &porticov1alpha1.HTTPSettings{}, proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute}},
		{"no limit", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("0"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 0, ClientBodyTimeout: time.Minute}},
		{"decimal size", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("8M"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 8_000_000, ClientBodyTimeout: time.Minute}},
		{"fraction of a decimal unit", &porticov1alpha1.HTTPSettings{MaxRequestBodySize: ptr.To(resource.MustParse("1.5M"))},
			proxyconfig.Limits{MaxRequestBodyBytes: 1_500_000, ClientBodyTimeout: time.Minute}},
		{"timeout only", &porticov1alpha1.HTTPSettings{ClientBodyTimeout: &metav1.Duration{Duration: 150 * time.Second}},
			proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: 150 * time.Second}},
		{"underscores", &porticov1alpha1.HTTPSettings{AllowUnderscoresInHeaders: true},
			proxyconfig.Limits{MaxRequestBodyBytes: 1 << 20, ClientBodyTimeout: time.Minute, AllowUnderscoresInHeaders: true}},
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
