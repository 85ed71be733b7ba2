package route

import (
	"fmt"
	"maps"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// TestCompilerUpdateEqualsCompile applies random changes of Ingresses (rules, TLS), Services,
// EndpointSlices and Secrets with Update and checks each table against a full compile of the same objects:
// hosts, rules in order, backends and their endpoints, certificates by name, stats, default
// backend and problems. Changes Update refuses are compiled in full, as the watcher does.
func TestCompilerUpdateEqualsCompile(t *testing.T) {
	hosts := []string{"a.example.com", "B.example.com", "*.example.com", "x.y.example.com", "", "c.example.org:80", "www.a.example.com"}
	paths := []string{"/", "/api", "/api/", "/api/v1", "/b", "", "/api/(.*)"}
	services := []string{"a", "b", "c", "d", "missing", "grpc"}
	updates, refused, backendUpdates, tlsUpdates, secretUpdates := 0, 0, 0, 0, 0
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
				if r.Intn(6) == 0 { // rare: a default backend names a Service, whose changes then compile in full
					opts = append(opts, rt.DefaultBackend(services[r.Intn(len(services))], 80))
				}
			case 2, 4, 5:
				secret := []string{"tls-a", "tls-w", "missing-tls"}[r.Intn(3)]
				var names []string
				for n := r.Intn(3); n > 0; n-- {
					names = append(names, hosts[r.Intn(len(hosts))])
				}
				if len(names) == 0 && r.Intn(4) != 0 {
					names = []string{hosts[r.Intn(len(hosts))]}
				}
				opts = append(opts, rt.TLS(secret, names...)) // no names (rarely): the certificate's
			case 3:
				opts = append(opts, rt.Annotation(AffinityAnnotation, "cookie"))
			}
			// Policy: host-wide effects (regex paths, canaries, www. redirects, the HTTPS
			// redirect of TLS hosts) and per-rule ones.
			switch r.Intn(10) {
			case 0:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"use-regex", "true"))
			case 1:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"rewrite-target", "/x/$1"))
			case 2:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"canary", "true"), rt.Annotation(AnnotationPrefix+"canary-weight", "10"))
			case 3:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"from-to-www-redirect", "true"))
			case 4:
				// Client certificates, their CA from a Secret that changes (and from another
				// namespace for the Ingresses of ns1: refused).
				opts = append(opts, rt.Annotation(AnnotationPrefix+"ssl-redirect", "false"), rt.Annotation(AnnotationPrefix+"auth-tls-secret", "ns/tls-w"))
			case 5:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"response-headers-set", "X-A: 1"), rt.Annotation(AnnotationPrefix+"bad-key", "1"))
			case 6:
				// Backends over TLS, their settings from a Secret that changes.
				opts = append(opts, rt.Annotation(AnnotationPrefix+"backend-protocol", "HTTPS"),
					rt.Annotation(AnnotationPrefix+"proxy-ssl-secret", "tls-a"), rt.Annotation(AnnotationPrefix+"proxy-ssl-verify", "on"))
			case 8:
				opts = append(opts, rt.Annotation(AnnotationPrefix+"ssl-passthrough", "true"))
			case 9:
				// A mirror, whose Service changes too.
				opts = append(opts, rt.Annotation(AnnotationPrefix+"mirror-target", "http://"+services[r.Intn(len(services)-1)]+".ns.svc"))
			case 7:
				// An error backend, whose Service changes too.
				opts = append(opts, rt.Annotation(AnnotationPrefix+"default-backend", services[r.Intn(len(services)-1)]),
					rt.Annotation(AnnotationPrefix+"custom-http-errors", "404"))
			}
			return rt.Ingress([]string{"ns", "ns", "ns1"}[r.Intn(3)], name, r.Intn(5), opts...) // the Services live in ns
		}
		in := baseInput()
		for i := 0; i < 30; i++ {
			in.Ingresses = append(in.Ingresses, randomIngress("i"+strconv.Itoa(i)))
		}
		in.Stats, in.Backends, in.Certs = NewStatsRegistry(), NewBackendCache(), NewCertCache()
		in.Secrets = append(in.Secrets, rt.TLSSecret("ns", "tls-a", "a.example.com"), rt.TLSSecret("ns", "tls-w", "*.example.com", "x.y.example.com"))
		for _, sec := range in.Secrets {
			sec.UID, sec.ResourceVersion = types.UID(sec.Name), "1"
			sec.Data["ca.crt"] = sec.Data[corev1.TLSCertKey] // a CA of client certificates too
		}
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
			chg := Changes{Ingresses: changed, DeletedIngresses: deleted}
			// Services and EndpointSlices change too: pods come and go, ports move, a Service goes.
			// As the watcher does, only the last change of an object counts.
			type last[T any] struct {
				obj     T
				deleted bool
			}
			svcChanges := map[string]last[*corev1.Service]{}
			sliceChanges := map[string]last[*discoveryv1.EndpointSlice]{}
			for n := r.Intn(3); n > 0; n-- {
				svc := services[r.Intn(len(services)-1)] // not "grpc"
				rv := strconv.Itoa(step*10 + n + 100)
				switch r.Intn(5) {
				case 0: // a Service deleted
					for i, s := range in.Services {
						if s.Name == svc {
							in.Services = append(in.Services[:i:i], in.Services[i+1:]...)
							svcChanges[s.Name] = last[*corev1.Service]{s, true}
							break
						}
					}
				case 1: // a Service (re)created, port 80 or 81
					s := rt.Service("ns", svc, corev1.ServicePort{Name: "http", Port: int32(80 + r.Intn(2))})
					s.ResourceVersion = rv
					for i := range in.Services {
						if in.Services[i].Name == svc {
							in.Services = append(in.Services[:i:i], in.Services[i+1:]...)
							break
						}
					}
					in.Services = append(in.Services, s)
					svcChanges[s.Name] = last[*corev1.Service]{s, false}
				case 2: // its EndpointSlice deleted
					for i, es := range in.EndpointSlices {
						if es.Labels[discoveryv1.LabelServiceName] == svc {
							in.EndpointSlices = append(in.EndpointSlices[:i:i], in.EndpointSlices[i+1:]...)
							sliceChanges[es.Name] = last[*discoveryv1.EndpointSlice]{es, true}
							break
						}
					}
				default: // its EndpointSlice replaced: other addresses, some not ready
					state := rt.Ready
					if r.Intn(3) == 0 {
						state = rt.NotReady
					}
					es := rt.Slice("ns", svc, "http", 8080, state, "10.5."+strconv.Itoa(r.Intn(3))+".1", "10.6.0."+strconv.Itoa(r.Intn(3)))
					es.Name, es.ResourceVersion = svc+"-slice", rv
					for i := range in.EndpointSlices {
						if in.EndpointSlices[i].Name == es.Name {
							in.EndpointSlices = append(in.EndpointSlices[:i:i], in.EndpointSlices[i+1:]...)
							break
						}
					}
					in.EndpointSlices = append(in.EndpointSlices, es)
					sliceChanges[es.Name] = last[*discoveryv1.EndpointSlice]{es, false}
				}
			}
			for _, c := range svcChanges {
				if c.deleted {
					chg.DeletedServices = append(chg.DeletedServices, c.obj)
				} else {
					chg.Services = append(chg.Services, c.obj)
				}
			}
			for _, c := range sliceChanges {
				if c.deleted {
					chg.DeletedSlices = append(chg.DeletedSlices, c.obj)
				} else {
					chg.Slices = append(chg.Slices, c.obj)
				}
			}
			// Secrets change: a certificate renewed for other names, broken, deleted, created.
			if r.Intn(3) == 0 {
				name := []string{"tls-a", "tls-w", "missing-tls"}[r.Intn(3)]
				i := slices.IndexFunc(in.Secrets, func(s *corev1.Secret) bool { return s.Name == name })
				switch k := r.Intn(4); {
				case k == 0 && i >= 0: // deleted
					chg.DeletedSecrets = append(chg.DeletedSecrets, in.Secrets[i])
					in.Secrets = slices.Delete(slices.Clone(in.Secrets), i, i+1)
				default:
					var sec *corev1.Secret
					if k == 1 { // broken: the last good certificate stays, with a problem
						sec = rt.TLSSecret("ns", name, "broken.example.com")
						sec.Data[corev1.TLSCertKey] = []byte("not a certificate")
					} else { // renewed (or created) for one or two names
						sec = rt.TLSSecret("ns", name, hosts[r.Intn(4)], hosts[r.Intn(4)])
					}
					sec.UID, sec.ResourceVersion = types.UID(name), strconv.Itoa(step*10+1000)
					sec.Data["ca.crt"] = sec.Data[corev1.TLSCertKey]
					if i >= 0 {
						in.Secrets = slices.Delete(slices.Clone(in.Secrets), i, i+1)
					}
					in.Secrets = append(in.Secrets, sec)
					chg.Secrets = append(chg.Secrets, sec)
				}
			}
			got, gotProbs, ok := cs.Update(chg)
			var full Compiler
			want, wantProbs := full.Compile(in)
			if !ok {
				refused++
				cs.Compile(in) // as the watcher does
				continue
			}
			updates++
			if len(chg.Services)+len(chg.DeletedServices)+len(chg.Slices)+len(chg.DeletedSlices) > 0 {
				backendUpdates++
			}
			if len(chg.Secrets)+len(chg.DeletedSecrets) > 0 {
				secretUpdates++
			}
			for _, ing := range chg.Ingresses {
				if len(ing.Spec.TLS) > 0 {
					tlsUpdates++
					break
				}
			}
			where := fmt.Sprintf("seed %d step %d", seed, step)
			if d := diffTables(got, want); d != "" {
				t.Fatalf("%s: %s", where, d)
			}
			if !reflect.DeepEqual(gotProbs, wantProbs) {
				t.Fatalf("%s: problems\n got %v\nwant %v", where, gotProbs, wantProbs)
			}
		}
	}
	t.Logf("%d updates applied and checked (%d with Services or EndpointSlices, %d with TLS, %d with Secrets), %d refused",
		updates, backendUpdates, tlsUpdates, secretUpdates, refused)
	if updates < 500 || backendUpdates < 200 || tlsUpdates < 100 || secretUpdates < 100 || refused == 0 {
		t.Errorf("%d updates (%d with Services or EndpointSlices, %d with TLS, %d with Secrets), %d refused: the generator no longer exercises them all",
			updates, backendUpdates, tlsUpdates, secretUpdates, refused)
	}
}

// diffTables describes how two tables differ in what the proxy uses, or returns "".
func diffTables(a, b *Table) string {
	host := func(h *Host) string {
		if h == nil {
			return "<none>"
		}
		s := ""
		if h.Passthrough != nil {
			s += "passthrough:" + backendString(h.Passthrough)
		}
		if ca := h.ClientAuth; ca != nil {
			s += ca.String()
			for _, c := range ca.CAs {
				s += " ca:" + string(c.Raw)
			}
		}
		for _, r := range h.Rules {
			s += fmt.Sprintf("[%s %d %s %s %s {%s}]", r.Path, r.Type, r.IngressName, backendString(r.Backend), r.Ingress, r.Policy)
			if r.Policy != nil && (r.Policy.ClientAuth != h.ClientAuth || r.Policy.Refuse != "") {
				s += fmt.Sprintf("client-auth:%t refuse:%s", r.Policy.ClientAuth != nil, r.Policy.Refuse)
			}
			if r.Policy != nil && r.Policy.Canary != nil {
				s += "canary:" + backendString(r.Policy.Canary.Backend)
			}
			if r.Policy != nil && r.Policy.ErrorBackend != nil {
				s += "errors:" + backendString(r.Policy.ErrorBackend)
			}
			if r.Policy != nil && r.Policy.Mirror != nil {
				s += "mirror:" + backendString(r.Policy.Mirror)
			}
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
	if a.passthroughHosts != b.passthroughHosts {
		return fmt.Sprintf("%d passthrough hosts, want %d", a.passthroughHosts, b.passthroughHosts)
	}
	if a.Stats != b.Stats {
		return fmt.Sprintf("stats %+v, want %+v", a.Stats, b.Stats)
	}
	if backendString(a.DefaultBackend) != backendString(b.DefaultBackend) || a.DefaultIngressName != b.DefaultIngressName {
		return "default backend differs"
	}
	if !maps.Equal(a.certExact, b.certExact) || !maps.Equal(a.certWildcard, b.certWildcard) {
		return fmt.Sprintf("certificates: %v %v, want %v %v", a.certExact, a.certWildcard, b.certExact, b.certWildcard)
	}
	return ""
}

func backendString(b *Backend) string {
	if b == nil {
		return "<nil>"
	}
	s := b.Name() + " " + b.Problem
	if b.TLS != nil {
		s += " tls:" + b.TLS.Key
	}
	for _, e := range b.Endpoints {
		s += " " + e.Addr
	}
	return s
}

// TestCompilerUpdateRefusesTheDefaultCertificate: the fleet's default certificate is not kept
// per Ingress, so a change of its Secret compiles in full; a change of another Secret does not.
func TestCompilerUpdateRefusesTheDefaultCertificate(t *testing.T) {
	in := baseInput(rt.Ingress("ns", "i", 0, rt.Rule("a.example.com", "/", rt.Prefix, "a", 80), rt.TLS("tls-a", "a.example.com")))
	in.Config.DefaultCertificate = "ingress/default-cert"
	in.Secrets = []*corev1.Secret{rt.TLSSecret("ingress", "default-cert", "default.example.com"), rt.TLSSecret("ns", "tls-a", "a.example.com")}
	var cs Compiler
	cs.Compile(in)
	renewed := rt.TLSSecret("ingress", "default-cert", "default.example.com")
	renewed.ResourceVersion = "2"
	if _, _, ok := cs.Update(Changes{Secrets: []*corev1.Secret{renewed}}); ok {
		t.Error("a change of the default certificate's Secret was applied incrementally")
	}
	other := rt.TLSSecret("ns", "tls-a", "a.example.com")
	other.ResourceVersion = "2"
	if _, _, ok := cs.Update(Changes{Secrets: []*corev1.Secret{other}}); !ok {
		t.Error("a change of an Ingress's Secret was refused")
	}
}
