package migrate

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/dataplane/route"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

const fixture = "testdata/cluster"

// golden compares got with testdata/<name>, or writes it there with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs; run `go test ./controllers/migrate -update` and review the diff:\n%s", path, firstDiff(want, got))
	}
}

// firstDiff shows the first line that differs.
func firstDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return "line " + strconv.Itoa(i+1) + ":\n  want: " + wl + "\n  got:  " + gl
		}
	}
	return ""
}

// run runs `portico migrate` as the command line does, and returns what it printed.
func run(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("portico migrate %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), errOut.String()
}

// The fixture, read as files, gives the golden text and JSON reports and the golden emitted
// IngressDeployment and IngressClass.
func TestGoldenFiles(t *testing.T) {
	text, _ := run(t, "-f", fixture)
	golden(t, "report.txt", []byte(text))

	js, _ := run(t, "-f", fixture, "-o", "json")
	golden(t, "report.json", []byte(js))

	dir := t.TempDir()
	_, msg := run(t, "-f", fixture, "--emit", dir, "--fleet-name", "edge", "--fleet-namespace", "ingress", "--topology", "NodePort")
	if !strings.Contains(msg, filepath.Join(dir, FleetFile)) {
		t.Errorf("stderr %q does not say what was written", msg)
	}
	for _, name := range []string{FleetFile, ClassFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		golden(t, filepath.Join("emit", name), b)
	}
}

// The same input gives the same bytes, whatever the order files and maps are read in.
func TestDeterministic(t *testing.T) {
	first, _ := run(t, "-f", fixture, "-o", "json")
	for i := 0; i < 5; i++ {
		if again, _ := run(t, "-f", fixture, "-o", "json"); again != first {
			t.Fatalf("run %d differs from the first:\n%s", i+2, firstDiff([]byte(first), []byte(again)))
		}
	}
	objs, err := ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions()
	want, _ := Emit(Analyze(objs, opts))
	// Reversed input: the report and the emitted files must not depend on the order.
	rev := *objs
	rev.Ingresses = reversed(objs.Ingresses)
	rev.Classes = reversed(objs.Classes)
	rev.ConfigMaps = reversed(objs.ConfigMaps)
	got, _ := Emit(Analyze(&rev, opts))
	for name := range want {
		if !bytes.Equal(want[name], got[name]) {
			t.Errorf("%s depends on the order of the objects", name)
		}
	}
	if a, b := mustJSON(Analyze(objs, opts).Report), mustJSON(Analyze(&rev, opts).Report); !bytes.Equal(a, b) {
		t.Errorf("the report depends on the order of the objects")
	}
}

func reversed[T any](s []T) []T {
	out := make([]T, len(s))
	for i := range s {
		out[len(s)-1-i] = s[i]
	}
	return out
}

func testOptions() Options {
	opts := Options{FleetName: "edge", FleetNamespace: "ingress", Topology: porticov1alpha1.TopologyHostNetwork, MatchConfigMapsByName: true}
	opts.ConfigMap.Namespace, opts.ConfigMap.Name = "ingress-nginx", "ingress-nginx-controller"
	opts.TCPServices.Namespace, opts.TCPServices.Name = "ingress-nginx", "tcp-services"
	opts.UDPServices.Namespace, opts.UDPServices.Name = "ingress-nginx", "udp-services"
	return opts
}

// The emitted IngressDeployment decodes strictly (no unknown field, no field of the wrong type)
// into the API's types, holds what the ConfigMaps converted to, and keeps to the CRD's rules
// the conversion is responsible for; the IngressClass points at it.
func TestEmittedDecodesStrictly(t *testing.T) {
	for _, topo := range []string{"LoadBalancer", "NodePort", "HostNetwork"} {
		t.Run(topo, func(t *testing.T) {
			dir := t.TempDir()
			run(t, "-f", fixture, "--emit", dir, "--topology", topo)
			b, err := os.ReadFile(filepath.Join(dir, FleetFile))
			if err != nil {
				t.Fatal(err)
			}
			var fleet porticov1alpha1.IngressDeployment
			if err := yaml.UnmarshalStrict(b, &fleet); err != nil {
				t.Fatalf("strict decode of %s: %v\n%s", FleetFile, err, b)
			}
			if fleet.APIVersion != "ingress.portico.dev/v1alpha1" || fleet.Kind != "IngressDeployment" || fleet.Name != "portico" || fleet.Namespace != "ingress" {
				t.Errorf("type and name: %+v %+v", fleet.TypeMeta, fleet.ObjectMeta)
			}
			s := fleet.Spec
			if !s.IngressNginxCompatibility || string(s.Topology.Type) != topo || s.Replicas != nil {
				t.Errorf("spec: compatibility %v, topology %q, replicas %v", s.IngressNginxCompatibility, s.Topology.Type, s.Replicas)
			}
			if s.HTTP == nil || s.HTTP.MaxRequestBodySize == nil || s.HTTP.MaxRequestBodySize.String() != "20Mi" ||
				s.HTTP.LimitStatusCode == nil || *s.HTTP.LimitStatusCode != 429 || s.HTTP.HSTS == nil || !s.HTTP.HSTS.Preload {
				t.Errorf("spec.http: %s", mustJSON(s.HTTP))
			}
			if s.HTTP.MaxRequestBodySize.Value() != 20<<20 {
				t.Errorf("maxRequestBodySize is %d bytes", s.HTTP.MaxRequestBodySize.Value())
			}
			if s.ClientAddress == nil || !s.ClientAddress.ProxyProtocol || len(s.ClientAddress.TrustedProxies) != 3 {
				t.Errorf("spec.clientAddress: %s", mustJSON(s.ClientAddress))
			}
			// The CRD's rules on spec.tcp and spec.udp that depend on the conversion.
			seen := map[int32]bool{}
			for _, p := range s.TCP {
				if p.Port == 80 || p.Port == 443 || p.Port == 10254 || seen[p.Port] || p.NodePort != nil {
					t.Errorf("spec.tcp port %d would be refused", p.Port)
				}
				seen[p.Port] = true
			}
			if len(s.TCP) != 5 || len(s.UDP) != 2 {
				t.Errorf("spec.tcp %s, spec.udp %s", mustJSON(s.TCP), mustJSON(s.UDP))
			}

			b, err = os.ReadFile(filepath.Join(dir, ClassFile))
			if err != nil {
				t.Fatal(err)
			}
			var ic networkingv1.IngressClass
			if err := yaml.UnmarshalStrict(b, &ic); err != nil {
				t.Fatalf("strict decode of %s: %v", ClassFile, err)
			}
			if !route.IsOurs(&ic) || ic.Name != "nginx" || ic.Annotations[route.DefaultClassAnnotation] != "true" {
				t.Errorf("IngressClass %+v", ic)
			}
			if nn, err := route.FleetForClass(&ic); err != nil || nn.Name != fleet.Name || nn.Namespace != fleet.Namespace {
				t.Errorf("IngressClass points at %v (%v), want the fleet", nn, err)
			}
		})
	}
}

// Every annotation key Portico honours is set by some Ingress of the fixture, so that the
// golden report shows what a compatibility fleet makes of each.
func TestFixtureCoversEveryKey(t *testing.T) {
	keys := []string{"affinity", "allowlist-source-range", "app-root", "auth-always-set-cookie", "auth-cache-duration",
		"auth-cache-key", "auth-keepalive", "auth-keepalive-requests", "auth-keepalive-share-vars", "auth-keepalive-timeout",
		"auth-method", "auth-proxy-set-headers", "auth-realm", "auth-request-redirect", "auth-response-headers", "auth-secret",
		"auth-secret-type", "auth-signin", "auth-signin-redirect-param", "auth-snippet", "auth-tls-error-page", "auth-tls-match-cn",
		"auth-tls-pass-certificate-to-upstream", "auth-tls-secret", "auth-tls-verify-client", "auth-tls-verify-depth", "auth-type",
		"auth-url", "backend-protocol", "canary", "canary-by-cookie", "canary-by-header", "canary-by-header-pattern",
		"canary-by-header-value", "canary-weight", "canary-weight-total", "configuration-snippet", "cors-allow-credentials",
		"cors-allow-headers", "cors-allow-methods", "cors-allow-origin", "cors-expose-headers", "cors-max-age", "custom-http-errors",
		"default-backend", "denylist-source-range", "enable-cors", "force-ssl-redirect", "from-to-www-redirect", "limit-allowlist",
		"limit-burst-multiplier", "limit-connections", "limit-rpm", "limit-rps", "limit-whitelist", "load-balance", "load-balancing",
		"mirror-target", "permanent-redirect", "permanent-redirect-code", "preserve-trailing-slash", "proxy-body-size",
		"proxy-connect-timeout", "proxy-next-upstream", "proxy-next-upstream-tries", "proxy-read-timeout", "proxy-send-timeout",
		"proxy-ssl-name", "proxy-ssl-secret", "proxy-ssl-server-name", "proxy-ssl-verify", "request-headers-add",
		"request-headers-remove", "request-headers-set", "response-headers-add", "response-headers-remove", "response-headers-set",
		"rewrite-target", "satisfy", "session-cookie-domain", "session-cookie-expires", "session-cookie-max-age",
		"session-cookie-name", "session-cookie-path", "session-cookie-samesite", "session-cookie-secure", "ssl-passthrough",
		"ssl-redirect", "temporal-redirect", "temporal-redirect-code", "upstream-hash-by", "upstream-vhost", "use-regex",
		"whitelist-source-range", "x-forwarded-prefix"}
	objs, err := ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	prefixes := map[string]bool{}
	for _, ing := range objs.Ingresses {
		for k := range ing.Annotations {
			for _, p := range []string{route.AnnotationPrefix, route.NginxAnnotationPrefix} {
				if rest, ok := strings.CutPrefix(k, p); ok {
					set[rest] = true
					prefixes[p] = true
				}
			}
		}
	}
	var missing []string
	for _, k := range keys {
		if !route.KnownAnnotation(k) {
			t.Errorf("%s: not a key Portico honours", k)
		}
		if !set[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("no Ingress of %s sets %v", fixture, missing)
	}
	if len(prefixes) != 2 {
		t.Errorf("the fixture uses the prefixes %v, want both", prefixes)
	}
}

// Ingresses of another controller's class are left out, whatever their annotations; class-less
// ones and those with the legacy annotation "nginx" are in.
func TestIngressNginxClasses(t *testing.T) {
	objs, err := ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	rep := Analyze(objs, testOptions()).Report
	got := map[string]string{}
	for _, ir := range rep.Ingresses {
		got[ir.Namespace+"/"+ir.Name] = ir.ClassFrom + ":" + ir.Class
	}
	if _, ok := got["other/whoami"]; ok {
		t.Errorf("the traefik Ingress is reported")
	}
	for name, want := range map[string]string{"api/grpc": "default:", "blog/blog": "annotation:nginx",
		"shop/admin": "ingressClassName:nginx", "internal/dashboard": "ingressClassName:nginx-internal", "default/hello": "ingressClassName:nginx"} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}
	if rep.Summary.LeftOut != 1 || rep.Summary.IngressesRead != rep.Summary.IngressNginx+rep.Summary.LeftOut {
		t.Errorf("summary %+v", rep.Summary)
	}
	// Without a default class of ingress-nginx's, a class-less Ingress is not its.
	for i := range objs.Classes {
		delete(objs.Classes[i].Annotations, route.DefaultClassAnnotation)
	}
	for _, ir := range Analyze(objs, testOptions()).Report.Ingresses {
		if ir.ClassFrom == classFromDefault {
			t.Errorf("%s/%s reported without a default class", ir.Namespace, ir.Name)
		}
	}
}

// The limit differences follow what the fleet answers: none when the emitted limitStatusCode is
// ingress-nginx's status.
func TestLimitDifference(t *testing.T) {
	ing := networkingv1.Ingress{}
	ing.Namespace, ing.Name = "a", "b"
	ing.Annotations = map[string]string{route.NginxAnnotationPrefix + "limit-rps": "10", route.NginxAnnotationPrefix + "limit-connections": "5"}
	for _, tc := range []struct {
		data map[string]string
		want []string
	}{
		{map[string]string{}, []string{"limit-rps", "limit-connections"}},
		{map[string]string{"limit-req-status-code": "503"}, nil},
		{map[string]string{"limit-req-status-code": "503", "limit-conn-status-code": "429"}, []string{"limit-connections"}},
		{map[string]string{"limit-req-status-code": "429", "limit-conn-status-code": "429"}, nil},
	} {
		ir := reportIngress(&ing, "nginx", classFromField, ConvertConfigMap(tc.data).Limits)
		var got []string
		for _, d := range ir.Differences {
			if strings.HasPrefix(d.Doc, "docs/access-control.md#rate") {
				got = append(got, d.Annotations...)
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%v: differences for %v, want %v", tc.data, got, tc.want)
		}
	}
}

// Each unsupported annotation carries the fleet's Event for it; with the problems, these are
// every Event ReportAnnotations gives, each once.
func TestUnsupportedEventsAndProblems(t *testing.T) {
	objs, err := ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	rep := Analyze(objs, testOptions()).Report
	byName := map[string]*networkingv1.Ingress{}
	for i := range objs.Ingresses {
		byName[objs.Ingresses[i].Namespace+"/"+objs.Ingresses[i].Name] = &objs.Ingresses[i]
	}
	for _, ir := range rep.Ingresses {
		ar := route.ReportAnnotations(byName[ir.Namespace+"/"+ir.Name], true)
		var events []string
		for _, u := range ir.Unsupported {
			if u.Event == "" || !strings.HasSuffix(u.Event, u.Reason) || !strings.Contains(u.Event, u.Annotation) {
				t.Errorf("%s/%s: %+v", ir.Namespace, ir.Name, u)
			}
			events = append(events, u.Event)
		}
		events = append(events, ir.Problems...)
		want := append([]string(nil), ar.Problems...)
		sort.Strings(events)
		sort.Strings(want)
		if strings.Join(events, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s/%s: events\n%s\nwant\n%s", ir.Namespace, ir.Name, strings.Join(events, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-f", fixture, "-o", "yaml"},
		{"-f", fixture, "--topology", "ClusterIP"},
		{"-f", fixture, "--fleet-name", "Edge"},
		{"-f", fixture, "--fleet-name", strings.Repeat("a", 48)},
		{"-f", fixture, "--fleet-namespace", "a.b"},
		{"-f", fixture, "--class-name", "Nginx"},
		{"-f", fixture, "--nginx-configmap", "a/b/c"},
		{"-f", fixture, "--kubeconfig", "/nonexistent"},
		{"-f", fixture, "extra"},
		{"-f", "testdata/does-not-exist"},
	} {
		var out, errOut bytes.Buffer
		if err := Run(context.Background(), args, &out, &errOut); err == nil {
			t.Errorf("%v: no error", args)
		}
		if out.Len() > 0 {
			t.Errorf("%v: printed a report", args)
		}
	}
}

// Files: ConfigMaps are found by name (the namespace preferred), and a namespace/name flag works.
func TestConfigMapFlags(t *testing.T) {
	js, _ := run(t, "-f", fixture, "-o", "json", "--nginx-namespace", "elsewhere", "--tcp-services-configmap", "ingress-nginx/none")
	var rep Report
	if err := json.Unmarshal([]byte(js), &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.ConfigMap.Found || rep.ConfigMap.Namespace != "ingress-nginx" {
		t.Errorf("the controller ConfigMap is not found by name: %+v", rep.ConfigMap)
	}
	if rep.TCPServices.Found || rep.TCPServices.Name != "none" || len(rep.TCPServices.Settings) != 0 {
		t.Errorf("tcp services: %+v", rep.TCPServices)
	}
}
