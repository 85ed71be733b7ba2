package route

import (
	"fmt"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// LargeInput is n Ingresses, each with its own host, two paths and its own Service with three
// ready endpoints: n Ingresses, n Services, 3n endpoints.
func LargeInput(n int) Input {
	in := baseInput()
	in.Ingresses = make([]*networkingv1.Ingress, 0, n)
	in.Services = make([]*corev1.Service, 0, n)
	in.EndpointSlices = make([]*discoveryv1.EndpointSlice, 0, n)
	for i := 0; i < n; i++ {
		name := "svc-" + strconv.Itoa(i)
		host := "host-" + strconv.Itoa(i) + ".example.com"
		in.Ingresses = append(in.Ingresses, ing("ing-"+strconv.Itoa(i), i,
			rule(host, "/", pfx, name, 80), rule(host, "/api/v1", exact, name, 80)))
		in.Services = append(in.Services, svc(name))
		a, b := i/250, i%250
		in.EndpointSlices = append(in.EndpointSlices, slice(name, "http", 8080, ready,
			fmt.Sprintf("10.1.%d.%d", a, b), fmt.Sprintf("10.2.%d.%d", a, b), fmt.Sprintf("10.3.%d.%d", a, b)))
	}
	return in
}

// cachedLargeInput is LargeInput as the watcher hands it over: Services and EndpointSlices with
// resourceVersions, endpoint counters and a Backend cache kept between compiles.
func cachedLargeInput(n int) Input {
	in := LargeInput(n)
	for _, s := range in.Services {
		s.ResourceVersion = "1"
	}
	for _, es := range in.EndpointSlices {
		es.ResourceVersion = "1"
	}
	in.Stats, in.Backends = NewStatsRegistry(), NewBackendCache()
	return in
}

func BenchmarkMatch(b *testing.B) {
	tb, _ := Compile(LargeInput(10000))
	hosts := make([]string, 1024)
	for i := range hosts {
		hosts[i] = "host-" + strconv.Itoa(i*7%10000) + ".example.com"
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if tb.Match(hosts[i&1023], "/api/v1/users", nil) == nil {
			b.Fatal("no match")
		}
	}
}

func BenchmarkMatchUnnormalized(b *testing.B) {
	tb, _ := Compile(LargeInput(1000))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if tb.Match("HOST-7.Example.com:443", "/api//v1/../v1", nil) == nil {
			b.Fatal("no match")
		}
	}
}

func BenchmarkCompile10k(b *testing.B) {
	in := LargeInput(10000)
	in.Stats = NewStatsRegistry()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if t, _ := Compile(in); t.Stats.Ingresses != 10000 || t.Stats.Endpoints != 30000 {
			b.Fatalf("compiled %+v", t.Stats)
		}
	}
}

// BenchmarkCompile10kOneIngressChanged is the compile after one Ingress changed: Services and
// EndpointSlices carry resourceVersions, so their Backends come from the cache.
func BenchmarkCompile10kOneIngressChanged(b *testing.B) {
	in := cachedLargeInput(10000)
	Compile(in)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if t, _ := Compile(in); t.Stats.Endpoints != 30000 {
			b.Fatalf("compiled %+v", t.Stats)
		}
	}
}

// BenchmarkCompilerUpdate10kOneIngress is the incremental path the proxy takes when only an
// Ingress changed: the table of 10,000 Ingresses with one more host.
func BenchmarkCompilerUpdate10kOneIngress(b *testing.B) {
	in := cachedLargeInput(10000)
	var cs Compiler
	cs.Compile(in)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ing := ing("extra-"+strconv.Itoa(i%2), 20000, rule("extra.example.com", "/", pfx, "svc-1", 80))
		if t, _, ok := cs.Update(Changes{Ingresses: []*networkingv1.Ingress{ing}}); !ok || t.Match("extra.example.com", "/", nil) == nil {
			b.Fatal("not applied")
		}
	}
}

// BenchmarkCompilerUpdate10kEndpoints is the incremental path after a pod of one Service came
// or went: the EndpointSlice changed.
func BenchmarkCompilerUpdate10kEndpoints(b *testing.B) {
	in := cachedLargeInput(10000)
	var cs Compiler
	cs.Compile(in)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		es := slice("svc-7", "http", 8080, ready, "10.9.0."+strconv.Itoa(1+i%2), "10.9.1.1")
		es.Name, es.ResourceVersion = in.EndpointSlices[7].Name, strconv.Itoa(2+i) // replaces svc-7's slice
		if t, _, ok := cs.Update(Changes{Slices: []*discoveryv1.EndpointSlice{es}}); !ok || t.Stats.Endpoints != 29999 {
			b.Fatal("not applied")
		}
	}
}

// tlsLargeInput is cachedLargeInput with a spec.tls on every Ingress, each naming a Secret of
// its own (one key pair shared by all, to keep the set-up short), and a certificate cache.
func tlsLargeInput(n int) Input {
	in := cachedLargeInput(n)
	crt, key := rt.SelfSigned("*.example.com")
	for i, ing := range in.Ingresses {
		name := "tls-" + strconv.Itoa(i)
		ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{ing.Spec.Rules[0].Host}, SecretName: name}}
		in.Secrets = append(in.Secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name), ResourceVersion: "1"},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}})
	}
	in.Certs = NewCertCache()
	return in
}

// renewed returns a renewal of in's Secret i: the same Secret with another key pair, one of two.
func renewed(in Input, i, round int, pairs [2][2][]byte) *corev1.Secret {
	s := in.Secrets[i].DeepCopy()
	s.ResourceVersion = strconv.Itoa(2 + round)
	s.Data = map[string][]byte{corev1.TLSCertKey: pairs[round%2][0], corev1.TLSPrivateKeyKey: pairs[round%2][1]}
	return s
}

func twoKeyPairs() (p [2][2][]byte) {
	for i := range p {
		p[i][0], p[i][1] = rt.SelfSigned("host-7.example.com")
	}
	return p
}

// BenchmarkCompilerUpdate10kSecret is the incremental path after a certificate was renewed (a
// Secret named by one Ingress of 10,000, each with TLS): the key pair parsed, its Ingress's
// host and certificate rebuilt.
func BenchmarkCompilerUpdate10kSecret(b *testing.B) {
	in := tlsLargeInput(10000)
	pairs := twoKeyPairs()
	var cs Compiler
	t, _ := cs.Compile(in)
	last := t.Certificate("host-7.example.com")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := renewed(in, 7, i, pairs)
		t, _, ok := cs.Update(Changes{Secrets: []*corev1.Secret{s}})
		if !ok || t.Certificate("host-7.example.com") == last {
			b.Fatal("not applied")
		}
		last = t.Certificate("host-7.example.com")
	}
}

// BenchmarkCompile10kTLSOneSecretChanged is the same renewal by a full compile (the path before
// Update took Secrets): every other key pair comes from the certificate cache.
func BenchmarkCompile10kTLSOneSecretChanged(b *testing.B) {
	in := tlsLargeInput(10000)
	pairs := twoKeyPairs()
	t, _ := Compile(in)
	last := t.Certificate("host-7.example.com")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in.Secrets[7] = renewed(in, 7, i, pairs)
		t, _ := Compile(in)
		if t.Certificate("host-7.example.com") == last {
			b.Fatal("not applied")
		}
		last = t.Certificate("host-7.example.com")
	}
}
