package route

import (
	"fmt"
	"math/rand"
	"reflect"
	"sort"
	"strconv"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// TestCompilerUpdateEqualsCompile applies random changes of Ingresses with Update and checks
// each table against a full compile of the same objects: hosts, rules in order, backends and
// their endpoints, stats, default backend and problems. Changes touching TLS or default backends
// must be refused (and are then compiled in full, as the watcher does).
func TestCompilerUpdateEqualsCompile(t *testing.T) {
	hosts := []string{"a.example.com", "B.example.com", "*.example.com", "x.y.example.com", "", "c.example.org:80"}
	paths := []string{"/", "/api", "/api/", "/api/v1", "/b", ""}
	services := []string{"a", "b", "c", "d", "missing", "grpc"}
	updates, refused := 0, 0
	for seed := int64(0); seed < 60; seed++ {
		r := rand.New(rand.NewSource(seed))
		randomIngress := func(name string) *networkingv1.Ingress {
			var opts []rt.IngressOpt
			for n := r.Intn(4); n > 0; n-- {
				pt := []networkingv1.PathType{rt.Prefix, rt.Exact, networkingv1.PathTypeImplementationSpecific}[r.Intn(3)]
				opts = append(opts, rt.Rule(hosts[r.Intn(len(hosts))], paths[r.Intn(len(paths))], pt, services[r.Intn(len(services))], 80))
			}
			switch r.Intn(12) {
			case 0:
				opts = append(opts, rt.ClassOf(ptr.To("other"), ""))
			case 1:
				opts = append(opts, rt.DefaultBackend(services[r.Intn(len(services))], 80))
			case 2:
				opts = append(opts, rt.TLS("tls", hosts[0]))
			case 3:
				opts = append(opts, rt.Annotation(AffinityAnnotation, "cookie"))
			}
			return rt.Ingress("ns"+strconv.Itoa(r.Intn(2)), name, r.Intn(5), opts...)
		}
		in := baseInput()
		for i := 0; i < 30; i++ {
			in.Ingresses = append(in.Ingresses, randomIngress("i"+strconv.Itoa(i)))
		}
		in.Stats, in.Backends = NewStatsRegistry(), NewBackendCache()
		var cs Compiler
		cs.Compile(in)
		for step := 0; step < 25; step++ {
			var changed []*networkingv1.Ingress
			var deleted []types.NamespacedName
			for n := 1 + r.Intn(3); n > 0; n-- {
				i := r.Intn(len(in.Ingresses) + 1)
				switch {
				case i == len(in.Ingresses): // a new one
					ing := randomIngress("new" + strconv.Itoa(step) + "-" + strconv.Itoa(n))
					in.Ingresses = append(in.Ingresses, ing)
					changed = append(changed, ing)
				case r.Intn(4) == 0: // deleted
					ing := in.Ingresses[i]
					in.Ingresses = append(in.Ingresses[:i:i], in.Ingresses[i+1:]...)
					deleted = append(deleted, types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
				default: // updated in place: same name, namespace and age, new spec
					old := in.Ingresses[i]
					ing := randomIngress(old.Name)
					ing.Namespace, ing.CreationTimestamp = old.Namespace, old.CreationTimestamp
					in.Ingresses = append(in.Ingresses[:i:i], append([]*networkingv1.Ingress{ing}, in.Ingresses[i+1:]...)...)
					changed = append(changed, ing)
				}
			}
			got, gotProbs, ok := cs.Update(changed, deleted)
			var full Compiler
			want, wantProbs := full.Compile(in)
			if !ok {
				refused++
				cs.Compile(in) // as the watcher does
				continue
			}
			updates++
			where := fmt.Sprintf("seed %d step %d", seed, step)
			if d := diffTables(got, want); d != "" {
				t.Fatalf("%s: %s", where, d)
			}
			if !reflect.DeepEqual(gotProbs, wantProbs) {
				t.Fatalf("%s: problems\n got %v\nwant %v", where, gotProbs, wantProbs)
			}
		}
	}
	t.Logf("%d updates applied and checked, %d refused (TLS or default backend)", updates, refused)
	if updates < 500 || refused == 0 {
		t.Errorf("%d updates, %d refused: the generator no longer exercises both", updates, refused)
	}
}

// diffTables describes how two tables differ in what the proxy uses, or returns "".
func diffTables(a, b *Table) string {
	host := func(h *Host) string {
		if h == nil {
			return "<none>"
		}
		s := ""
		for _, r := range h.Rules {
			s += fmt.Sprintf("[%s %d %s %s %s]", r.Path, r.Type, r.IngressName, backendString(r.Backend), r.Ingress)
		}
		return s
	}
	keys := map[string]bool{"": true}
	for k := range a.exact {
		keys[k] = true
	}
	for k := range b.exact {
		keys[k] = true
	}
	for k := range a.wildcard {
		keys["*."+k] = true
	}
	for k := range b.wildcard {
		keys["*."+k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if x, y := host(a.hostByKey(k)), host(b.hostByKey(k)); x != y {
			return fmt.Sprintf("host %q:\n got %s\nwant %s", k, x, y)
		}
	}
	if a.Stats != b.Stats {
		return fmt.Sprintf("stats %+v, want %+v", a.Stats, b.Stats)
	}
	if backendString(a.DefaultBackend) != backendString(b.DefaultBackend) || a.DefaultIngressName != b.DefaultIngressName {
		return "default backend differs"
	}
	return ""
}

func backendString(b *Backend) string {
	if b == nil {
		return "<nil>"
	}
	s := b.Name() + " " + b.Problem
	for _, e := range b.Endpoints {
		s += " " + e.Addr
	}
	return s
}
