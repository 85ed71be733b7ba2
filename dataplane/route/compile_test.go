package route

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"

	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// Thin wrappers over routetest: every test object lives in namespace "ns".

func class(name string, isDefault bool) *networkingv1.IngressClass {
	return rt.Class(name, "ingress", "edge", isDefault)
}

type ingOpt = rt.IngressOpt

func ing(name string, age int, opts ...ingOpt) *networkingv1.Ingress {
	return rt.Ingress("ns", name, age, opts...)
}

var (
	rule           = rt.Rule
	defaultBackend = rt.DefaultBackend
	classOf        = rt.ClassOf
	withTLS        = rt.TLS
)

func svc(name string, ports ...corev1.ServicePort) *corev1.Service {
	return rt.Service("ns", name, ports...)
}

const (
	ready              = rt.Ready
	terminatingServing = rt.TerminatingServing
	notReady           = rt.NotReady
)

func slice(svcName, portName string, port int32, state rt.EndpointState, addrs ...string) *discoveryv1.EndpointSlice {
	return rt.Slice("ns", svcName, portName, port, state, addrs...)
}

func selfSigned(_ testing.TB, hosts ...string) (crt, key []byte) { return rt.SelfSigned(hosts...) }

func tlsSecret(_ testing.TB, name string, hosts ...string) *corev1.Secret {
	return rt.TLSSecret("ns", name, hosts...)
}

func baseInput(ings ...*networkingv1.Ingress) Input {
	in := Input{
		Config:  proxyconfig.Config{FleetNamespace: "ingress", FleetName: "edge"},
		Classes: []*networkingv1.IngressClass{class("portico", false)},
		Services: []*corev1.Service{svc("a"), svc("b"), svc("c"), svc("d"),
			svc("grpc", corev1.ServicePort{Name: "grpc", Port: 9000, AppProtocol: ptr.To("grpc")})},
		EndpointSlices: []*discoveryv1.EndpointSlice{
			slice("a", "http", 8080, ready, "10.0.0.1"), slice("b", "http", 8080, ready, "10.0.0.2"),
			slice("c", "http", 8080, ready, "10.0.0.3"), slice("d", "http", 8080, ready, "10.0.0.4"),
			slice("grpc", "grpc", 9000, ready, "10.0.0.9"),
		},
		Ingresses: ings,
	}
	return in
}

// routeTo returns the service a request goes to, "default" for the default backend.
func routeTo(t *Table, host, p string) string {
	r := t.Match(host, p, nil)
	if r == nil {
		if t.DefaultBackend == nil {
			return "default"
		}
		return "default:" + t.DefaultBackend.Service.Name
	}
	return r.Backend.Service.Name
}

const (
	pfx   = rt.Prefix
	exact = rt.Exact
	impl  = rt.ImplementationSpecific
)

func TestHosts(t *testing.T) {
	tb, probs := Compile(baseInput(
		ing("precise", 1, rule("foo.bar.com", "/", pfx, "a", 80)),
		ing("wild", 2, rule("*.bar.com", "/", pfx, "b", 80)),
		ing("any", 3, rule("", "/", pfx, "c", 80)),
		ing("pathonly", 4, rule("only.example.com", "/x", pfx, "d", 80)),
	))
	if len(probs) != 0 {
		t.Fatalf("problems: %v", probs)
	}
	for _, tc := range []struct{ host, want string }{
		{"foo.bar.com", "a"},            // 9: precise beats wildcard
		{"FOO.Bar.COM", "a"},            // 7: case-insensitive
		{"foo.bar.com:8443", "a"},       // 7: port removed
		{"foo.bar.com.", "a"},           // 7: trailing dot removed
		{"baz.bar.com", "b"},            // 8: one extra label
		{"x.baz.bar.com", "c"},          // 8: not two labels: falls to the empty host
		{"bar.com", "c"},                // 8: not the bare domain
		{"other.org", "c"},              // 6: empty host matches everything
		{"only.example.com", "default"}, // 10: host matched, no path: default backend, not the empty host
		{"127.0.0.1:80", "c"},
		{"[::1]:80", "c"},
	} {
		p := "/"
		if got := routeTo(tb, tc.host, p); got != tc.want {
			t.Errorf("host %q: got %s, want %s", tc.host, got, tc.want)
		}
	}
}

// TestPathExamples is the table of examples in the Kubernetes Ingress documentation, plus the
// checklist's rows.
func TestPathExamples(t *testing.T) {
	type pr struct {
		pt networkingv1.PathType
		p  string
	}
	for _, tc := range []struct {
		rules []pr
		req   string
		match string // the rule path that must win, "" for none
	}{
		{[]pr{{pfx, "/"}}, "/anything", "/"},
		{[]pr{{exact, "/foo"}}, "/foo", "/foo"},
		{[]pr{{exact, "/foo"}}, "/bar", ""},
		{[]pr{{exact, "/foo"}}, "/foo/", ""},
		{[]pr{{exact, "/foo/"}}, "/foo", ""},
		{[]pr{{exact, "/foo"}}, "/FOO", ""},
		{[]pr{{pfx, "/foo"}}, "/foo", "/foo"},
		{[]pr{{pfx, "/foo"}}, "/foo/", "/foo"},
		{[]pr{{pfx, "/foo/"}}, "/foo", "/foo/"},
		{[]pr{{pfx, "/foo/"}}, "/foo/", "/foo/"},
		{[]pr{{pfx, "/foo/"}}, "/foo/x", "/foo/"},
		{[]pr{{pfx, "/aaa/bb"}}, "/aaa/bbb", ""},
		{[]pr{{pfx, "/aaa/bbb"}}, "/aaa/bbb", "/aaa/bbb"},
		{[]pr{{pfx, "/aaa/bbb/"}}, "/aaa/bbb", "/aaa/bbb/"},
		{[]pr{{pfx, "/aaa/bbb"}}, "/aaa/bbb/", "/aaa/bbb"},
		{[]pr{{pfx, "/aaa/bbb"}}, "/aaa/bbb/ccc", "/aaa/bbb"},
		{[]pr{{pfx, "/aaa/bbb"}}, "/aaa/bbbxyz", ""},
		{[]pr{{pfx, "/"}, {pfx, "/aaa"}}, "/aaa/ccc", "/aaa"},
		{[]pr{{pfx, "/aaa"}, {pfx, "/"}}, "/ccc", "/"},
		{[]pr{{pfx, "/aaa"}}, "/ccc", ""},
		{[]pr{{pfx, "/"}, {pfx, "/aaa"}, {pfx, "/aaa/bbb"}}, "/aaa/bbb", "/aaa/bbb"},
		{[]pr{{exact, "/foo"}, {pfx, "/foo"}}, "/foo", "/foo#exact"},
		{[]pr{{pfx, "/foo"}, {exact, "/foo"}}, "/foo", "/foo#exact"}, // order in YAML does not matter
		{[]pr{{exact, "/foo"}, {pfx, "/foo"}}, "/foo/x", "/foo"},
		{[]pr{{impl, "/foo"}}, "/foo/bar", "/foo"},     // 20: ImplementationSpecific is Prefix
		{[]pr{{pfx, ""}}, "/x", ""},                    // 20: empty path means "/"
		{[]pr{{pfx, "/foo"}}, "/foo?x=1", ""},          // the path given to Match has no query; see proxy tests
		{[]pr{{pfx, "/a/b"}}, "/a/./b/../b/c", "/a/b"}, // 21: matched after cleaning
		{[]pr{{exact, "/a/b"}}, "//a//b", "/a/b"},
	} {
		var opts []ingOpt
		svcs := []string{"a", "b", "c", "d"}
		for i, r := range tc.rules {
			opts = append(opts, rule("h", r.p, r.pt, svcs[i], 80))
		}
		tb, _ := Compile(baseInput(ing("i", 1, opts...)))
		got := ""
		if r := tb.Match("h", tc.req, nil); r != nil {
			for i, rr := range tc.rules {
				if svcs[i] == r.Backend.Service.Name {
					got = rr.p
					if rr.pt == exact && strings.HasSuffix(tc.match, "#exact") {
						got += "#exact"
					}
					if got == "" {
						got = "/"
					}
				}
			}
		}
		want := tc.match
		if tc.req == "/x" && tc.rules[0].p == "" {
			want = "/" // the empty path matched as "/"
		}
		if got != want {
			t.Errorf("rules %v, request %s: matched %q, want %q", tc.rules, tc.req, got, want)
		}
	}
}

func TestClassSelection(t *testing.T) {
	other := class("nginx", false)
	other.Spec.Controller = "k8s.io/ingress-nginx"
	in := baseInput(
		ing("by-field", 1, rule("field", "/", pfx, "a", 80)),
		ing("by-annotation", 2, classOf(nil, "portico"), rule("annotation", "/", pfx, "a", 80)),
		ing("field-wins", 3, classOf(ptr.To("nginx"), "portico"), rule("fieldwins", "/", pfx, "a", 80)),
		ing("classless", 4, classOf(nil, ""), rule("classless", "/", pfx, "a", 80)),
		ing("unknown", 5, classOf(ptr.To("ghost"), ""), rule("unknown", "/", pfx, "a", 80)),
		ing("not-ours", 6, classOf(ptr.To("nginx"), ""), rule("notours", "/", pfx, "a", 80)),
	)
	in.Classes = append(in.Classes, other)
	served := func(in Input) string {
		var names []string
		for _, i := range ServedIngresses(&in) {
			names = append(names, i.Name)
		}
		return strings.Join(names, ",")
	}
	if got := served(in); got != "by-field,by-annotation" {
		t.Errorf("served %s", got)
	}
	in.Classes[0] = class("portico", true)
	if got := served(in); got != "by-field,by-annotation,classless" {
		t.Errorf("with a default class: served %s", got)
	}
	in.Config.IgnoreDefaultClass = true
	if got := served(in); got != "by-field,by-annotation" {
		t.Errorf("default class ignored: served %s", got)
	}
	in.Config.IgnoreDefaultClass = false
	in.Config.WatchNamespaces = []string{"elsewhere"}
	if got := served(in); got != "" {
		t.Errorf("outside watched namespaces: served %s", got)
	}
	// A class pointing at another fleet is not ours to serve.
	in = baseInput(ing("x", 1, rule("x", "/", pfx, "a", 80)))
	in.Classes[0].Spec.Parameters.Name = "other-fleet"
	if got := served(in); got != "" {
		t.Errorf("class of another fleet: served %s", got)
	}
}

func TestConflictsAndDefaultBackends(t *testing.T) {
	in := baseInput(
		ing("young", 10, rule("h", "/x", pfx, "b", 80), defaultBackend("d", 80)),
		ing("old", 1, rule("h", "/x", pfx, "a", 80), rule("h", "/x", exact, "c", 80), defaultBackend("c", 80)),
	)
	in.Config.DefaultBackend = &proxyconfig.ServiceRef{Namespace: "ns", Name: "a", Port: 80}
	tb, probs := Compile(in)
	if got := routeTo(tb, "h", "/x/y"); got != "a" {
		t.Errorf("22: older Ingress must win, got %s", got)
	}
	if got := routeTo(tb, "h", "/x"); got != "c" {
		t.Errorf("Exact /x of the older Ingress: got %s", got)
	}
	if got := routeTo(tb, "nohost", "/"); got != "default:c" {
		t.Errorf("26: oldest Ingress default backend wins over the fleet's, got %s", got)
	}
	joined := ""
	for _, p := range probs {
		joined += p.String() + "\n"
	}
	for _, want := range []string{
		`ns/young: spec.rules[0].http.paths[0]: host "h" path "/x" is already claimed by the older Ingress ns/old`,
		"ns/young: spec.defaultBackend ignored: Ingress ns/old is older",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing problem %q in:\n%s", want, joined)
		}
	}
	// Only the fleet's default backend: 27.
	in = baseInput(ing("i", 1, rule("h", "/x", pfx, "a", 80)))
	in.Config.DefaultBackend = &proxyconfig.ServiceRef{Namespace: "ns", Name: "d", Port: 80}
	tb, _ = Compile(in)
	if got := routeTo(tb, "h", "/nope"); got != "default:d" {
		t.Errorf("27: got %s", got)
	}
	// 26: an Ingress with only a default backend takes all traffic.
	tb, _ = Compile(baseInput(ing("only-default", 1, defaultBackend("b", 80))))
	if got := routeTo(tb, "any", "/any"); got != "default:b" {
		t.Errorf("26: got %s", got)
	}
}

func TestBackends(t *testing.T) {
	named := func(i *networkingv1.Ingress) {
		i.Spec.Rules = append(i.Spec.Rules, networkingv1.IngressRule{Host: "named", IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(pfx),
				Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "multi", Port: networkingv1.ServiceBackendPort{Name: "admin"}}}}}}}})
	}
	resource := func(i *networkingv1.Ingress) {
		i.Spec.Rules = append(i.Spec.Rules, networkingv1.IngressRule{Host: "res", IngressRuleValue: networkingv1.IngressRuleValue{
			HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: ptr.To(pfx),
				Backend: networkingv1.IngressBackend{Resource: &corev1.TypedLocalObjectReference{Kind: "Bucket", Name: "b1"}}}}}}})
	}
	in := baseInput(ing("i", 1,
		named, resource,
		rule("grpc", "/", pfx, "grpc", 9000),
		rule("term", "/", pfx, "term", 80),
		rule("none", "/", pfx, "none", 80),
		rule("missing", "/", pfx, "ghost", 80),
		rule("badport", "/", pfx, "a", 81),
	))
	in.Services = append(in.Services,
		svc("multi", corev1.ServicePort{Name: "web", Port: 80}, corev1.ServicePort{Name: "admin", Port: 9090}),
		svc("term"), svc("none"))
	in.EndpointSlices = append(in.EndpointSlices,
		slice("multi", "web", 8080, ready, "10.1.0.1"), slice("multi", "admin", 9091, ready, "10.1.0.1"),
		slice("term", "http", 8080, terminatingServing, "10.2.0.1"), slice("term", "http", 8080, notReady, "10.2.0.2"),
		slice("none", "http", 8080, notReady, "10.3.0.1"))
	tb, probs := Compile(in)
	check := func(host, wantAddrs, wantProblem string) {
		t.Helper()
		b := tb.Match(host, "/", nil).Backend
		var addrs []string
		for _, e := range b.Endpoints {
			addrs = append(addrs, e.Addr)
		}
		if strings.Join(addrs, ",") != wantAddrs || !strings.Contains(b.Problem, wantProblem) || (wantProblem == "" && b.Problem != "") {
			t.Errorf("%s: endpoints %v problem %q; want %s %q", host, addrs, b.Problem, wantAddrs, wantProblem)
		}
	}
	check("named", "10.1.0.1:9091", "")                        // 23: named port via the slice port of that name
	check("grpc", "10.0.0.9:9000", "")                         // 35
	check("term", "10.2.0.1:8080", "")                         // 25: serving-terminating fallback
	check("none", "", "no ready endpoint for service ns/none") // 25: 503
	check("missing", "", "service ns/ghost not found")
	check("badport", "", "service ns/a has no port 81")
	check("res", "", "resource backend Bucket/b1 cannot be proxied") // 28
	if tb.Match("grpc", "/", nil).Backend.Protocol != H2C || tb.Match("named", "/", nil).Backend.Protocol != HTTP1 {
		t.Error("35: appProtocol grpc must select h2c, others HTTP/1.1")
	}
	all := ""
	for _, p := range probs {
		all += p.String() + "\n"
	}
	for _, want := range []string{"service ns/ghost not found", "has no port 81", "resource backends (Bucket b1) cannot be proxied"} {
		if !strings.Contains(all, want) {
			t.Errorf("problem %q not reported in:\n%s", want, all)
		}
	}
	// No ready endpoint is transient (a rollout, a scale to zero): answered with 503, not
	// reported as a problem of the Ingress.
	if strings.Contains(all, "no ready endpoint") {
		t.Errorf("no ready endpoint reported as a problem:\n%s", all)
	}
}

func TestCertificates(t *testing.T) {
	fallback, err := tls.X509KeyPair(selfSigned(t, "fallback"))
	if err != nil {
		t.Fatal(err)
	}
	in := baseInput(ing("i", 1, rule("a.example.com", "/", pfx, "a", 80),
		withTLS("a-tls", "a.example.com"), withTLS("wild-tls", "*.example.com"), withTLS("missing", "m.example.com"), withTLS("opaque", "o.example.com")))
	opaque := tlsSecret(t, "opaque", "o.example.com")
	opaque.Type = corev1.SecretTypeOpaque
	in.Secrets = []*corev1.Secret{tlsSecret(t, "a-tls", "a.example.com"), tlsSecret(t, "wild-tls", "*.example.com"), opaque}
	in.FallbackCertificate = &fallback
	in.Certs = NewCertCache()
	tb, probs := Compile(in)
	cn := func(name string) string { return tb.Certificate(name).Leaf.Subject.CommonName }
	for name, want := range map[string]string{
		"a.example.com": "a.example.com", "A.Example.COM": "a.example.com", "b.example.com": "*.example.com",
		"x.b.example.com": "fallback", "": "fallback", "unknown.org": "fallback",
	} {
		if tb.Certificate(name).Leaf == nil {
			leaf, _ := x509.ParseCertificate(tb.Certificate(name).Certificate[0])
			tb.Certificate(name).Leaf = leaf
		}
		if got := cn(name); got != want {
			t.Errorf("31: SNI %q got certificate %s, want %s", name, got, want)
		}
	}
	all := ""
	for _, p := range probs {
		all += p.String() + "\n"
	}
	if !strings.Contains(all, "spec.tls[2]: secret ns/missing not found") || !strings.Contains(all, "spec.tls[3]: secret ns/opaque is of type Opaque") {
		t.Errorf("29: TLS problems not reported:\n%s", all)
	}

	// 32: a broken rotation keeps the last good certificate and is reported.
	broken := in.Secrets[0].DeepCopy()
	broken.ResourceVersion = "2"
	broken.Data[corev1.TLSCertKey] = []byte("garbage")
	in.Secrets[0] = broken
	tb2, probs := Compile(in)
	if tb2.Certificate("a.example.com").Leaf.Subject.CommonName != "a.example.com" {
		t.Error("32: broken Secret must keep the last good certificate")
	}
	all = ""
	for _, p := range probs {
		all += p.String() + "\n"
	}
	if !strings.Contains(all, "serving the last good certificate") {
		t.Errorf("32: broken Secret not reported:\n%s", all)
	}
}

func TestStatsSurviveRecompile(t *testing.T) {
	in := baseInput(ing("i", 1, rule("h", "/", pfx, "a", 80)))
	in.Stats = NewStatsRegistry()
	tb, _ := Compile(in)
	tb.Match("h", "/", nil).Backend.Endpoints[0].Stats.InFlight.Add(3)
	tb2, _ := Compile(in)
	if got := tb2.Match("h", "/", nil).Backend.Endpoints[0].Stats.InFlight.Load(); got != 3 {
		t.Errorf("endpoint counters reset by a recompile: %d", got)
	}
	in.EndpointSlices = nil
	Compile(in)
	if len(in.Stats.m) != 0 {
		t.Errorf("stats of vanished endpoints kept: %v", in.Stats.m)
	}
}

func TestPick(t *testing.T) {
	reg := NewStatsRegistry()
	b := &Backend{}
	for _, a := range []string{"a", "b", "c"} {
		b.Endpoints = append(b.Endpoints, &Endpoint{Addr: a, Stats: reg.Get(a)})
	}
	now := time.Now()
	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		counts[b.Pick(now, nil).Addr]++
	}
	if counts["a"] != 100 || counts["b"] != 100 || counts["c"] != 100 {
		t.Errorf("round robin uneven: %v", counts)
	}
	for i := 0; i < EjectAfter; i++ {
		b.Endpoints[1].Stats.Failed(now)
	}
	for i := 0; i < 50; i++ {
		if b.Pick(now, nil).Addr == "b" {
			t.Fatal("ejected endpoint picked")
		}
	}
	if b.Pick(now.Add(EjectFor+time.Second), b.Endpoints[0]) == b.Endpoints[0] {
		t.Error("excluded endpoint picked")
	}
	for _, e := range b.Endpoints {
		for i := 0; i < EjectAfter; i++ {
			e.Stats.Failed(now)
		}
	}
	if b.Pick(now, nil) == nil {
		t.Error("with every endpoint ejected, Pick must still return one")
	}
	lr := &Backend{Balancing: LeastRequest, Endpoints: []*Endpoint{{Addr: "x", Stats: &EndpointStats{}}, {Addr: "y", Stats: &EndpointStats{}}}}
	lr.Endpoints[0].Stats.InFlight.Store(10)
	for i := 0; i < 20; i++ {
		if lr.Pick(now, nil).Addr != "y" {
			t.Fatal("least request picked the busier endpoint")
		}
	}
}

func TestBackendCacheFollowsChanges(t *testing.T) {
	in := baseInput(ing("i", 1, rule("h", "/", pfx, "a", 80)))
	for _, s := range in.Services {
		s.ResourceVersion = "1"
	}
	for _, es := range in.EndpointSlices {
		es.ResourceVersion = "1"
	}
	in.Backends = NewBackendCache()
	t1, _ := Compile(in)
	t2, _ := Compile(in)
	if t1.Match("h", "/", nil).Backend != t2.Match("h", "/", nil).Backend {
		t.Error("an unchanged Service must reuse its Backend")
	}
	in.EndpointSlices[0] = slice("a", "http", 8080, ready, "10.9.9.9")
	in.EndpointSlices[0].ResourceVersion = "2"
	t3, _ := Compile(in)
	if got := t3.Match("h", "/", nil).Backend.Endpoints[0].Addr; got != "10.9.9.9:8080" {
		t.Errorf("changed EndpointSlice not picked up: %s", got)
	}
	in.Services[0].Spec.Ports[0].Port = 81
	in.Services[0].ResourceVersion = "2"
	t4, probs := Compile(in)
	if t4.Match("h", "/", nil).Backend.Problem == "" || len(probs) == 0 {
		t.Error("changed Service not picked up")
	}
	t5, probs := Compile(in)
	if len(probs) == 0 || t5.Match("h", "/", nil).Backend != t4.Match("h", "/", nil).Backend {
		t.Error("a cached Backend with a problem must still report it")
	}
}
