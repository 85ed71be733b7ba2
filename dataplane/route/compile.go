package route

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	proxyconfig "portico.dev/portico/dataplane/config"
)

// Annotations Portico reads on an Ingress.
const (
	// LegacyClassAnnotation is the deprecated kubernetes.io/ingress.class.
	LegacyClassAnnotation = "kubernetes.io/ingress.class"
	// DefaultClassAnnotation marks the cluster's default IngressClass.
	DefaultClassAnnotation = "ingressclass.kubernetes.io/is-default-class"
	// AffinityAnnotation "cookie" pins each client to one endpoint per backend.
	AffinityAnnotation = "portico.dev/affinity"
	// BalancingAnnotation "least-request" picks the less busy of two endpoints; the default is
	// round robin.
	BalancingAnnotation = "portico.dev/load-balancing"
)

// Input is everything a Table is compiled from. Compile does not modify it.
type Input struct {
	Config         proxyconfig.Config
	Classes        []*networkingv1.IngressClass
	Ingresses      []*networkingv1.Ingress
	Services       []*corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Secrets        []*corev1.Secret
	// FallbackCertificate is served when the fleet has no default certificate Secret, or it is
	// unusable (a self-signed one generated at start).
	FallbackCertificate *tls.Certificate
	// Certs caches parsed key pairs across compiles; may be nil.
	Certs *CertCache
	// Access keeps the limit zones and parsed credentials across compiles; may be nil.
	Access *AccessCache
	// Stats keeps endpoint counters across compiles; may be nil.
	Stats *StatsRegistry
	// Backends reuses the Backends of Services whose Service and EndpointSlices did not change
	// since the last compile (by resourceVersion); may be nil.
	Backends *BackendCache
}

// Problem is something wrong with one Ingress (or with the fleet's settings, when Ingress is
// empty). The rest of the Table is compiled regardless.
type Problem struct {
	Ingress types.NamespacedName
	Message string
}

func (p Problem) String() string {
	if p.Ingress.Name == "" {
		return p.Message
	}
	return p.Ingress.String() + ": " + p.Message
}

// ServedIngresses returns the Ingresses the fleet serves, oldest first (creationTimestamp, then
// namespace/name): the order in which conflicts are settled.
func ServedIngresses(in *Input) []*networkingv1.Ingress {
	served := servingFilter(in)
	var out []*networkingv1.Ingress
	for _, ing := range in.Ingresses {
		if served(ing) {
			out = append(out, ing)
		}
	}
	sort.Slice(out, func(i, j int) bool { return olderIngress(out[i], out[j]) })
	return out
}

// servingFilter returns whether the fleet serves an Ingress, by the classes and settings of in.
func servingFilter(in *Input) func(*networkingv1.Ingress) bool {
	fleet := types.NamespacedName{Namespace: in.Config.FleetNamespace, Name: in.Config.FleetName}
	ours := map[string]bool{}
	defaultClass := false
	for _, c := range in.Classes {
		if !IsOurs(c) {
			continue
		}
		if nn, err := FleetForClass(c); err == nil && nn == fleet {
			ours[c.Name] = true
			if c.Annotations[DefaultClassAnnotation] == "true" {
				defaultClass = true
			}
		}
	}
	watch := map[string]bool{}
	for _, ns := range in.Config.WatchNamespaces {
		watch[ns] = true
	}
	viaDefault := defaultClass && !in.Config.IgnoreDefaultClass
	return func(ing *networkingv1.Ingress) bool {
		if len(watch) > 0 && !watch[ing.Namespace] {
			return false
		}
		if !ing.DeletionTimestamp.IsZero() {
			return false
		}
		return serves(ing, ours, viaDefault)
	}
}

// ClassOf returns the class an Ingress asks for: spec.ingressClassName, else the legacy
// annotation; ok is false for a class-less Ingress.
func ClassOf(ing *networkingv1.Ingress) (name string, ok bool) {
	if ing.Spec.IngressClassName != nil {
		return *ing.Spec.IngressClassName, true
	}
	name, ok = ing.Annotations[LegacyClassAnnotation]
	return name, ok
}

// FleetServing returns the fleet that serves an Ingress, by the same rules as ServedIngresses:
// its class (field, else annotation) is one of ours pointing at the fleet, or it has no class and
// a class of ours pointing at the fleet is the default and the fleet does not ignore it
// (ignoresDefault), and the fleet watches its namespace (watches). When several fleets could
// serve a class-less Ingress, the first in namespace/name order wins.
func FleetServing(ing *networkingv1.Ingress, classes []networkingv1.IngressClass,
	watches func(fleet types.NamespacedName, ns string) bool, ignoresDefault func(types.NamespacedName) bool) (types.NamespacedName, bool) {
	want, hasClass := ClassOf(ing)
	var best types.NamespacedName
	found := false
	for i := range classes {
		c := &classes[i]
		if !IsOurs(c) {
			continue
		}
		fleet, err := FleetForClass(c)
		if err != nil || !watches(fleet, ing.Namespace) {
			continue
		}
		match := hasClass && c.Name == want
		if !hasClass && c.Annotations[DefaultClassAnnotation] == "true" && !ignoresDefault(fleet) {
			match = true
		}
		if match && (!found || fleet.String() < best.String()) {
			best, found = fleet, true
		}
	}
	return best, found
}

// serves applies the class rules: spec.ingressClassName wins over the legacy annotation; a
// class-less Ingress is served through a default class of ours.
func serves(ing *networkingv1.Ingress, ours map[string]bool, viaDefault bool) bool {
	if c, ok := ClassOf(ing); ok {
		return ours[c]
	}
	return viaDefault
}

func olderIngress(a, b *networkingv1.Ingress) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// backendKey identifies a shared Backend within one compile.
type backendKey struct {
	svc       types.NamespacedName
	port      networkingv1.ServiceBackendPort
	affinity  bool
	balancing Balancing
	protocol  int8            // backend-protocol: -1 for the Service port's appProtocol
	tls       string          // UpstreamTLS.Key; "" for cleartext
	hashed    bool            // a route hashes to it: it has a ring
	l4        corev1.Protocol // a TCP or UDP listener's: the Service port of that protocol
}

// compiler holds the indexes of one compile.
type compiler struct {
	in       *Input
	services map[types.NamespacedName]*corev1.Service
	slices   map[types.NamespacedName][]*discoveryv1.EndpointSlice
	secrets  map[types.NamespacedName]*corev1.Secret
	backends map[backendKey]*Backend
	problems []Problem
	// gen marks the EndpointStats this compile uses; endpoints counts them.
	gen       uint64
	endpoints int
	// cached counts the Backends of this compile that are in in.Backends.
	cached int

	// byHost lists the served Ingresses with rules for each host (and those redirecting to it
	// from its www. counterpart), oldest first; policies caches each one's annotations.
	byHost   map[string][]*networkingv1.Ingress
	policies map[*networkingv1.Ingress]*ingressPolicy
	// tlsConfigs holds the upstream TLS settings built in this compile, by key.
	tlsConfigs map[string]*UpstreamTLS
	// l4proto is the protocol of the listener whose backend is being built ("" for routes).
	l4proto corev1.Protocol

	// For a Compiler (nil for Compile): problems by host (of the rules of that host) and the
	// others.
	hostProbs map[string][]Problem
	other     []Problem
	bucket    string // the host whose rules are being compiled; "\x00" for none
	served    []*networkingv1.Ingress
	// svcHosts records the hosts whose rules name each Service, otherSvcs the Services named
	// elsewhere (default backends), for a Compiler.
	svcHosts  map[types.NamespacedName]map[string]bool
	otherSvcs map[types.NamespacedName]bool
	// byTLS holds the served Ingresses whose spec.tls lists each name, oldest first;
	// tlsFromCerts is set when some spec.tls lists no hosts (its certificate's names count).
	byTLS        map[string][]*networkingv1.Ingress
	tlsFromCerts bool
	// clientAuths caches each Ingress's auth-tls-* settings, parsed with its annotations.
	clientAuths map[*networkingv1.Ingress]clientAuthResult
}

const noBucket = "\x00"

// add records a problem.
func (c *compiler) add(p Problem) {
	c.problems = append(c.problems, p)
	switch {
	case c.hostProbs == nil:
	case c.bucket != noBucket:
		c.hostProbs[c.bucket] = append(c.hostProbs[c.bucket], p)
	default:
		c.other = append(c.other, p)
	}
}

// Compile builds a Table. It never fails as a whole: each Ingress that cannot be served in full
// is reported as a Problem, and what can be served of it is.
func Compile(in Input) (*Table, []Problem) {
	c := newCompiler(&in, false)
	return c.run(), c.problems
}

// newCompiler indexes the objects of in. tracking keeps what a Compiler needs to update the
// table later.
func newCompiler(inp *Input, tracking bool) *compiler {
	in := *inp
	c := &compiler{
		bucket:     noBucket,
		in:         &in,
		services:   make(map[types.NamespacedName]*corev1.Service, len(in.Services)),
		slices:     make(map[types.NamespacedName][]*discoveryv1.EndpointSlice, len(in.Services)),
		secrets:    make(map[types.NamespacedName]*corev1.Secret, len(in.Secrets)),
		backends:   make(map[backendKey]*Backend, len(in.Services)),
		byHost:     map[string][]*networkingv1.Ingress{},
		policies:   make(map[*networkingv1.Ingress]*ingressPolicy, len(in.Ingresses)),
		tlsConfigs: map[string]*UpstreamTLS{},
	}
	if in.Stats == nil {
		in.Stats = NewStatsRegistry() // this compile's own
	}
	c.gen = in.Stats.nextGeneration()
	for _, s := range in.Services {
		c.services[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	for _, es := range in.EndpointSlices {
		if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
			k := types.NamespacedName{Namespace: es.Namespace, Name: svc}
			c.slices[k] = append(c.slices[k], es)
		}
	}
	for _, list := range c.slices {
		if len(list) > 1 { // a stable order: endpoints and the Backend cache depend on it
			sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		}
	}
	for _, s := range in.Secrets {
		c.secrets[types.NamespacedName{Namespace: s.Namespace, Name: s.Name}] = s
	}
	if tracking {
		c.hostProbs = map[string][]Problem{}
		c.svcHosts = map[types.NamespacedName]map[string]bool{}
		c.otherSvcs = map[types.NamespacedName]bool{}
		c.byTLS = map[string][]*networkingv1.Ingress{}
	}
	return c
}

// clientAddressing is the fleet's spec.clientAddress (validated by config.Parse).
func clientAddressing(cfg proxyconfig.Config) ClientAddressing {
	var ca ClientAddressing
	if c := cfg.ClientAddress; c != nil {
		ca.ProxyProtocol = c.ProxyProtocol
		ca.Trusted, _ = cfg.TrustedProxies()
	}
	return ca
}

// run compiles every served Ingress into a new Table.
func (c *compiler) run() *Table {
	in := c.in
	t := &Table{
		exact:        make(map[string]*Host, len(in.Ingresses)),
		wildcard:     map[string]*Host{},
		certExact:    map[string]*tls.Certificate{},
		certWildcard: map[string]*tls.Certificate{},
		Limits:       in.Config.Limits(),
		AccessLog:    in.Config.AccessLogPolicy(),
		HSTS:         in.Config.HSTSValue(),
		Clients:      clientAddressing(in.Config),
	}
	served := ServedIngresses(in)
	c.served = served
	t.Stats.Ingresses = len(served)
	for _, ing := range served {
		c.compileIngress(t, ing)
	}
	hosts := make([]string, 0, len(c.byHost))
	for h := range c.byHost {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		c.bucket = h
		host := c.compileHost(t, h, c.byHost[h])
		c.bucket = noBucket
		if host != nil {
			t.setHostByKey(h, host)
			t.Stats.Rules += len(host.Rules)
			if host.Passthrough != nil {
				t.passthroughHosts++
			}
		}
	}
	t.Stats.Hosts = len(t.exact) + len(t.wildcard)
	if t.catchAll != nil {
		t.Stats.Hosts++
	}

	if t.DefaultBackend == nil && in.Config.DefaultBackend != nil {
		ref := in.Config.DefaultBackend
		t.DefaultBackend = c.backend(types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name},
			networkingv1.ServiceBackendPort{Number: ref.Port}, types.NamespacedName{}, nil, -1, nil, false, fieldPath{})
	}
	t.DefaultCertificate = in.FallbackCertificate
	if ref := in.Config.DefaultCertificate; ref != "" {
		ns, name, _ := strings.Cut(ref, "/")
		cert, err := c.certificate(types.NamespacedName{Namespace: ns, Name: name})
		if err != nil {
			c.add(Problem{Message: "default certificate: " + err.Error()})
		}
		if cert != nil {
			t.DefaultCertificate = cert
		}
	}
	c.compileListeners(t)
	t.Stats.Backends = len(c.backends)
	t.Stats.Endpoints = c.endpoints
	in.Stats.retain(c.gen, c.endpoints)
	if in.Certs != nil {
		in.Certs.retain(c.secrets)
	}
	in.Access.retain()
	in.Backends.retain(c.backends, c.cached)
	return t
}

func (t *Table) allHosts() []*Host {
	var out []*Host
	for _, h := range t.exact {
		out = append(out, h)
	}
	for _, h := range t.wildcard {
		out = append(out, h)
	}
	if t.catchAll != nil {
		out = append(out, t.catchAll)
	}
	return out
}

// sortRules orders rules most specific first: longer path, then Exact before Prefix.
func sortRules(rules []Rule) {
	if len(rules) < 2 {
		return
	}
	slices.SortStableFunc(rules, func(a, b Rule) int {
		if len(a.Path) != len(b.Path) {
			return len(b.Path) - len(a.Path)
		}
		switch {
		case a.Type == Exact && b.Type != Exact:
			return -1
		case b.Type == Exact && a.Type != Exact:
			return 1
		}
		return 0
	})
}

func (c *compiler) problem(ing types.NamespacedName, format string, args ...any) {
	c.add(Problem{Ingress: ing, Message: fmt.Sprintf(format, args...)})
}

// compileIngress adds what of an Ingress is not per host to t: its default backend, its
// certificates and its annotations' problems; and indexes it by the hosts of its rules. Ingresses
// come oldest first: the first to claim a name keeps it. Its rules are compiled per host, by
// compileHost, once every certificate is known.
func (c *compiler) compileIngress(t *Table, ing *networkingv1.Ingress) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	keyName := key.String()
	c.bucket = annBucket(key)
	ip := c.policyOf(ing, true)
	c.bucket = noBucket
	if db := ing.Spec.DefaultBackend; db != nil {
		b := c.ingressBackend(ing, ip, key, *db, fieldPath{rule: -1})
		if t.DefaultBackend == nil {
			t.DefaultBackend, t.DefaultIngress, t.DefaultIngressName = b, key, keyName
		} else {
			c.problem(key, "spec.defaultBackend ignored: Ingress %s is older and already sets the fleet's default backend", t.DefaultIngress)
		}
	}
	forHosts(ing, c.in.Config.IngressNginxCompatibility, func(host string) {
		if l := c.byHost[host]; len(l) == 0 || l[len(l)-1] != ing {
			c.byHost[host] = append(l, ing)
		}
	})
	if c.byTLS != nil && len(ing.Spec.TLS) > 0 {
		c.bucket = tlsBucket(key)
		c.tlsFromCerts = c.tlsFromCerts || !tlsListsHosts(ing)
		forTLSNames(ing, func(n string) {
			if l := c.byTLS[n]; len(l) == 0 || l[len(l)-1] != ing {
				c.byTLS[n] = append(l, ing)
			}
		})
	}
	for i, tl := range ing.Spec.TLS {
		cert, hosts := c.tlsSection(key, ing, i, tl, true)
		for _, h := range hosts {
			t.setCertificate(NormalizeHost(h), cert)
		}
	}
	c.bucket = noBucket
}

// policyOf returns the parsed annotations of an Ingress, parsing them on first use; report
// adds their problems (in the current bucket).
func (c *compiler) policyOf(ing *networkingv1.Ingress, report bool) *ingressPolicy {
	if ip := c.policies[ing]; ip != nil {
		return ip
	}
	ip, probs := parseAnnotations(ing, c.in.Config.SSLRedirect(), c.in.Config.IngressNginxCompatibility)
	// auth-tls-*, parsed again with the rest (its Secret may have changed); a canary's are
	// ignored, as parseAnnotations reports.
	delete(c.clientAuths, ing)
	if ip.canary == nil {
		_, caProbs := c.clientAuthOf(ing)
		probs = append(probs, caProbs...)
	}
	c.policies[ing] = ip
	if ip.access != nil {
		c.bindAccess(ing, ip, func(p string) { probs = append(probs, p) })
	}
	if report {
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		for _, p := range probs {
			c.add(Problem{Ingress: key, Message: p})
		}
	}
	return ip
}

// annBucket keys the problems of an Ingress's annotations among the per-host problems.
func annBucket(key types.NamespacedName) string { return "\x02annotations " + key.String() }

// compileHost builds the rules of one normalized host from the Ingresses listed for it, oldest
// first: the main Ingresses' paths (the first to claim a path keeps it), then the canary
// Ingresses' backends on the paths they share with a main Ingress. When any main Ingress of the
// host asks for regular expressions (use-regex, rewrite-target), every path of the host is one,
// as in ingress-nginx. A host with no rules of its own that an Ingress of its www. counterpart
// asks for (from-to-www-redirect) redirects there. It returns nil for a host with no rules.
func (c *compiler) compileHost(t *Table, host string, ings []*networkingv1.Ingress) *Host {
	regex := false
	for _, ing := range ings {
		if ip := c.policyOf(ing, false); ip.canary == nil && (ip.useRegex || ip.rewrite != "") && hasRulesFor(ing, host) {
			regex = true
		}
	}
	tlsHost := t.hostHasTLS(host)
	h := &Host{}
	for pass := 0; pass < 2; pass++ {
		for _, ing := range ings {
			ip := c.policyOf(ing, false)
			if (ip.canary != nil) != (pass == 1) {
				continue
			}
			key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
			for i, rule := range ing.Spec.Rules {
				if rule.HTTP == nil || len(rule.HTTP.Paths) == 0 || NormalizeHost(rule.Host) != host {
					continue
				}
				if pass == 0 {
					c.addPaths(h, ing, ip, key, i, rule, regex, tlsHost)
				} else {
					c.addCanary(h, ing, ip, key, i, rule, regex)
				}
			}
		}
	}
	for _, ing := range ings {
		if ip := c.policyOf(ing, false); ip.passthrough && ip.canary == nil && h.Passthrough == nil && hasRulesFor(ing, host) {
			key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
			if host == "" {
				c.problem(key, "annotation %s%s: a rule without a host cannot be passed through (TLS is routed by name); ignored", AnnotationPrefix, annSSLPassthrough)
				continue
			}
			if r := h.claimant(Prefix, "/"); r != nil && r.Ingress == key {
				h.Passthrough = r.Backend
			} else if r := h.claimant(Regex, "/"); r != nil && r.Ingress == key {
				h.Passthrough = r.Backend
			} else {
				c.problem(key, "annotation %s%s: host %q has no path / of this Ingress to pass TLS connections to; ignored", AnnotationPrefix, annSSLPassthrough, host)
			}
		}
	}
	if len(h.Rules) == 0 {
		to := wwwCounterpart(host)
		for _, ing := range ings {
			if ip := c.policyOf(ing, false); to != "" && ip.fromToWWW && ip.canary == nil && hasRulesFor(ing, to) {
				key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
				return &Host{Rules: []Rule{{Path: "/", Type: Prefix, Policy: &Policy{HostRedirect: to},
					Ingress: key, IngressName: key.String()}}}
			}
		}
		return nil
	}
	c.applyClientAuth(h, host, ings)
	sortRules(h.Rules)
	return h
}

// hasRulesFor: ing has paths for the normalized host.
func hasRulesFor(ing *networkingv1.Ingress, host string) bool {
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP != nil && len(rule.HTTP.Paths) > 0 && NormalizeHost(rule.Host) == host {
			return true
		}
	}
	return false
}

// wwwCounterpart is the host from-to-www-redirect pairs with host: without its "www." or with
// one; "" for wildcard and empty hosts.
func wwwCounterpart(host string) string {
	switch {
	case host == "" || strings.HasPrefix(host, "*."):
		return ""
	case strings.HasPrefix(host, "www."):
		return host[4:]
	}
	return "www." + host
}

// hostHasTLS: some Ingress's spec.tls configures a certificate for the normalized host (the
// fleet's default certificate does not count), which turns on ssl-redirect for its rules.
func (t *Table) hostHasTLS(host string) bool {
	switch {
	case host == "":
		return false
	case strings.HasPrefix(host, "*."):
		return t.certWildcard[host[2:]] != nil
	}
	return lookup(t.certExact, t.certWildcard, host) != nil
}

// tlsSection resolves spec.tls[i] of an Ingress: its certificate (nil: skip the section) and
// the names it serves (spec.tls[].hosts, else the certificate's DNS names). report adds its
// problems.
func (c *compiler) tlsSection(key types.NamespacedName, ing *networkingv1.Ingress, i int, tl networkingv1.IngressTLS, report bool) (*tls.Certificate, []string) {
	field := tlsField(i)
	problem := func(format string, args ...any) {
		if report {
			c.problem(key, format, args...)
		}
	}
	if tl.SecretName == "" {
		problem("%s.secretName is empty", field)
		return nil, nil
	}
	cert, err := c.certificate(types.NamespacedName{Namespace: ing.Namespace, Name: tl.SecretName})
	if err != nil {
		if cert == nil {
			problem("%s: %v", field, err)
			return nil, nil
		}
		problem("%s: %v; serving the last good certificate", field, err)
	}
	hosts := tl.Hosts
	if len(hosts) == 0 && cert.Leaf != nil {
		hosts = cert.Leaf.DNSNames
	}
	return cert, hosts
}

// setCertificate gives a normalized name its certificate, unless an older Ingress did.
func (t *Table) setCertificate(name string, cert *tls.Certificate) {
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		if _, taken := t.certWildcard[rest]; !taken {
			t.certWildcard[rest] = cert
		}
	} else if _, taken := t.certExact[name]; !taken {
		t.certExact[name] = cert
	}
}

// tlsBucket keys the problems of an Ingress's spec.tls among the per-host problems (a name no
// host can have).
func tlsBucket(key types.NamespacedName) string { return "\x01tls " + key.String() }

// tlsListsHosts: every spec.tls of ing lists its hosts.
func tlsListsHosts(ing *networkingv1.Ingress) bool {
	for _, tl := range ing.Spec.TLS {
		if len(tl.Hosts) == 0 {
			return false
		}
	}
	return true
}

// forTLSNames calls fn with each normalized name an Ingress's spec.tls lists.
func forTLSNames(ing *networkingv1.Ingress, fn func(string)) {
	if ing == nil {
		return
	}
	for _, tl := range ing.Spec.TLS {
		for _, h := range tl.Hosts {
			fn(NormalizeHost(h))
		}
	}
}

// fieldPath names a backend's place in an Ingress in problems, formatted only when printed:
// spec.defaultBackend (rule -1), spec.rules[rule].http.paths[path], with ".backend" if set.
type fieldPath struct {
	rule, path int
	backend    bool
}

func (f fieldPath) String() string {
	if f.rule == -2 {
		return "annotation " + AnnotationPrefix + annDefaultBackend
	}
	if f.rule == -3 {
		return "annotation " + AnnotationPrefix + annMirrorTarget
	}
	if f.rule < 0 {
		return "spec.defaultBackend"
	}
	s := fmt.Sprintf("spec.rules[%d].http.paths[%d]", f.rule, f.path)
	if f.backend {
		s += ".backend"
	}
	return s
}

// tlsField names spec.tls[i] in problems, formatted only when printed.
type tlsField int

func (f tlsField) String() string { return fmt.Sprintf("spec.tls[%d]", int(f)) }

// addPaths adds the paths of rule i of ing to h, its host. A path some rule of h already has
// stays with that rule: Ingresses come oldest first. regex makes every path a regular
// expression; tlsHost says an Ingress configures TLS for the host (ssl-redirect).
func (c *compiler) addPaths(h *Host, ing *networkingv1.Ingress, ip *ingressPolicy, key types.NamespacedName, i int, rule networkingv1.IngressRule, regex, tlsHost bool) {
	keyName := key.String()
	for j, p := range rule.HTTP.Paths {
		field := fieldPath{rule: i, path: j}
		r := Rule{Ingress: key, IngressName: keyName}
		if !c.rulePath(&r, key, field, p, regex) {
			continue
		}
		if first := h.claimant(r.Type, r.Path); first != nil {
			if first.Ingress != key {
				c.problem(key, "%s: host %q path %q is already claimed by the older Ingress %s", field, rule.Host, p.Path, first.Ingress)
			}
			continue // else the same Ingress repeating itself: its first rule wins
		}
		r.Backend = c.ingressBackend(ing, ip, key, p.Backend, fieldPath{rule: i, path: j, backend: true})
		r.Policy = ip.bind(&r, tlsHost)
		if r.Policy != nil && r.Policy.Access != nil && r.Policy.Access.External != nil && r.Policy.Access.External.HostVaries &&
			(rule.Host == "" || strings.HasPrefix(rule.Host, "*.")) && r.Policy.Refuse == "" {
			// auth-url's host would be the client's choice: the auth service must be fixed.
			c.problem(key, "%s: annotation %sauth-url takes its host from the request, and host %q is any client's choice; the route answers 503", field, AnnotationPrefix, rule.Host)
			p := *r.Policy
			p.Refuse = "route refused: auth-url takes its host from the request on a rule for any host"
			r.Policy = &p
		}
		if ip.errorSvc != "" && r.Policy != nil {
			r.Policy.ErrorBackend = c.errorBackend(ing, key, ip.errorSvc)
		}
		if ms := ip.mirror; ms != nil && r.Policy != nil {
			r.Policy.Mirror = c.backend(types.NamespacedName{Namespace: ms.namespace, Name: ms.name},
				networkingv1.ServiceBackendPort{Number: ms.port}, key, nil, -1, nil, false, fieldPath{rule: -3})
		}
		h.Rules = append(h.Rules, r)
	}
}

// rulePath sets the path and type of r from an Ingress path; false (with a problem) when the
// path cannot be served.
func (c *compiler) rulePath(r *Rule, key types.NamespacedName, field fieldPath, p networkingv1.HTTPIngressPath, regex bool) bool {
	r.Path, r.Type = p.Path, Prefix
	if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
		r.Type = Exact
	}
	if r.Path == "" {
		r.Path = "/"
	}
	if regex {
		r.Type = Regex
		if regexp.QuoteMeta(r.Path) != r.Path {
			re, err := regexp.Compile("(?i)^(?:" + r.Path + ")")
			if err != nil {
				c.problem(key, "%s: path %q is not a regular expression (RE2; use-regex or rewrite-target makes every path of the host one): %v", field, p.Path, err)
				return false
			}
			r.re = re
		}
		return true
	}
	if r.Type == Prefix && r.Path != "/" {
		r.Path = strings.TrimRight(r.Path, "/")
		if r.Path == "" {
			r.Path = "/"
		}
	}
	return true
}

// bind returns the policy of one rule of the Ingress: its annotations' with the HTTPS
// redirect of its host and its rewrite; nil when the rule has none.
func (ip *ingressPolicy) bind(r *Rule, tlsHost bool) *Policy {
	ssl := ip.forceSSL || (ip.sslRedirect && tlsHost)
	rewrite := ip.rewrite != "" && ip.rewrite != r.Path // ingress-nginx: a target equal to the path does nothing
	if ip.empty && !ssl && ip.refuse == "" {
		return nil
	}
	p := ip.base
	p.SSLRedirect, p.ForceSSL = ssl, ip.forceSSL
	p.Refuse = ip.refuse
	if rewrite {
		p.Rewrite = &Rewrite{Template: ip.rewrite}
	} else {
		p.ForwardedPrefix = ""
	}
	if p.String() == "" && ip.errorSvc == "" && ip.mirror == nil {
		return nil // a rewrite equal to the path, and nothing else
	}
	return &p
}

// addCanary gives the rules of h that the paths of a canary Ingress's rule i name the canary's
// backend. A path no main Ingress has, or whose rule already has an (older) canary, is reported.
func (c *compiler) addCanary(h *Host, ing *networkingv1.Ingress, ip *ingressPolicy, key types.NamespacedName, i int, rule networkingv1.IngressRule, regex bool) {
	for j, p := range rule.HTTP.Paths {
		field := fieldPath{rule: i, path: j}
		var probe Rule
		if !c.rulePath(&probe, key, field, p, regex) {
			continue
		}
		main := h.claimant(probe.Type, probe.Path)
		switch {
		case main == nil:
			c.problem(key, "%s: canary for host %q path %q, which no main Ingress serves; ignored", field, rule.Host, p.Path)
			continue
		case main.Policy != nil && main.Policy.Canary != nil:
			c.problem(key, "%s: host %q path %q already has the canary of an older Ingress; ignored", field, rule.Host, p.Path)
			continue
		}
		cs := ip.canary
		np := Policy{}
		if main.Policy != nil {
			np = *main.Policy
		}
		np.Canary = &Canary{Backend: c.ingressBackend(ing, ip, key, p.Backend, fieldPath{rule: i, path: j, backend: true}),
			IngressName: key.String(), Header: cs.header, HeaderValue: cs.value, HeaderPattern: cs.pattern,
			Cookie: cs.cookie, Weight: cs.weight, WeightTotal: cs.total}
		main.Policy = &np
	}
}

// claimant returns the rule of h that already has this path, if any (hosts have few rules).
func (h *Host) claimant(typ PathType, path string) *Rule {
	for i := range h.Rules {
		if r := &h.Rules[i]; r.Type == typ && r.Path == path {
			return r
		}
	}
	return nil
}

// ingressBackend resolves one IngressBackend of an Ingress.
// field names the backend's place in the Ingress; it is only called to report a problem.
func (c *compiler) ingressBackend(ing *networkingv1.Ingress, ip *ingressPolicy, key types.NamespacedName, b networkingv1.IngressBackend, field fieldPath) *Backend {
	if b.Resource != nil {
		c.problem(key, "%s: resource backends (%s %s) cannot be proxied; answering 503", field, b.Resource.Kind, b.Resource.Name)
		return &Backend{Service: types.NamespacedName{Namespace: ing.Namespace, Name: b.Resource.Name}, Port: b.Resource.Kind,
			Problem: "resource backend " + b.Resource.Kind + "/" + b.Resource.Name + " cannot be proxied"}
	}
	if b.Service == nil {
		c.problem(key, "%s: no service", field)
		return &Backend{Service: key, Problem: "no backend"}
	}
	return c.backend(types.NamespacedName{Namespace: ing.Namespace, Name: b.Service.Name}, b.Service.Port, key,
		viewOf(ing, c.in.Config.IngressNginxCompatibility).merged(), ip.protocol, ip.upTLS, ip.base.Hash != nil, field)
}

// backend returns the shared Backend of a Service port, building it on first use. ing is the
// Ingress reporting problems (empty for the fleet's own default backend).
func (c *compiler) backend(svcKey types.NamespacedName, port networkingv1.ServiceBackendPort, ing types.NamespacedName, annotations map[string]string, protocol int8, upTLS *upstreamTLSSpec, hashed bool, field fieldPath) *Backend {
	switch {
	case c.svcHosts == nil:
	case c.bucket == noBucket:
		c.otherSvcs[svcKey] = true
	default:
		hs := c.svcHosts[svcKey]
		if hs == nil {
			hs = map[string]bool{}
			c.svcHosts[svcKey] = hs
		}
		hs[c.bucket] = true
	}
	portName := port.Name
	if portName == "" {
		portName = strconv.Itoa(int(port.Number))
	}
	affinity := annotations[AffinityAnnotation] == "cookie"
	balancing := RoundRobin
	if annotations[BalancingAnnotation] == "least-request" || annotations[AnnotationPrefix+annLoadBalance] == "ewma" {
		balancing = LeastRequest
	}
	tlsKey := ""
	if upTLS != nil {
		tlsKey = c.upstreamTLSKey(upTLS, svcKey, protocol == int8(H2C))
	}
	hashed = hashed && !affinity
	k := backendKey{svcKey, port, affinity, balancing, protocol, tlsKey, hashed, c.l4proto}
	if b, ok := c.backends[k]; ok {
		if b.Problem != "" && ing.Name != "" && !noReadyEndpoint(b) {
			c.problem(ing, "%s: %s", field, b.Problem)
		}
		return b
	}
	if cached := c.in.Backends.lookup(k, c.services[svcKey], c.slices[svcKey]); cached != nil {
		c.backends[k] = cached
		c.cached++
		c.mark(cached.Endpoints)
		if cached.Problem != "" && !noReadyEndpoint(cached) {
			switch {
			case ing.Name != "":
				c.problem(ing, "%s: %s", field, cached.Problem)
			case c.l4proto == "":
				c.add(Problem{Message: "default backend: " + cached.Problem})
			}
		}
		return cached
	}
	b := &Backend{Service: svcKey, Port: portName, Affinity: affinity, Balancing: balancing, name: svcKey.String() + ":" + portName}
	c.backends[k] = b
	defer func() {
		if c.in.Backends.store(k, c.services[svcKey], c.slices[svcKey], b) {
			c.cached++
		}
	}()
	report := func(format string, args ...any) {
		b.Problem = fmt.Sprintf(format, args...)
		switch {
		case ing.Name != "":
			c.problem(ing, "%s: %s", field, b.Problem)
		case c.l4proto == "": // a listener's is reported by compileListeners
			c.add(Problem{Message: "default backend: " + b.Problem})
		}
	}
	svc := c.services[svcKey]
	if svc == nil {
		report("service %s not found", svcKey)
		return b
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if c.l4proto != "" && p.Protocol != c.l4proto && !(p.Protocol == "" && c.l4proto == corev1.ProtocolTCP) {
			continue // a listener's: the port of its protocol (dns 53/TCP and 53/UDP)
		}
		if (port.Name != "" && p.Name == port.Name) || (port.Name == "" && p.Port == port.Number) {
			sp = p
			break
		}
	}
	if sp == nil {
		report("service %s has no port %s", svcKey, portName)
		return b
	}
	if ap := sp.AppProtocol; ap != nil {
		switch *ap {
		case "kubernetes.io/h2c", "h2c", "grpc":
			b.Protocol = H2C
		}
	}
	if protocol >= 0 {
		b.Protocol = Protocol(protocol) // backend-protocol wins over appProtocol
	}
	if upTLS != nil {
		ut, err := c.upstreamTLS(upTLS, svcKey, tlsKey, b.Protocol == H2C)
		if err != nil {
			report("backend TLS: %v; answering 503 rather than connect unverified", err)
			return b
		}
		b.TLS = ut
	}
	var ready, terminating []*Endpoint
	seen := map[string]bool{}
	for _, es := range c.slices[svcKey] {
		var target int32 = -1
		for _, p := range es.Ports {
			if ptrString(p.Name) == sp.Name && p.Port != nil {
				target = *p.Port
				break
			}
		}
		if target < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			cond := ep.Conditions
			isReady := cond.Ready == nil || *cond.Ready
			isServingTerminating := cond.Serving != nil && *cond.Serving && cond.Terminating != nil && *cond.Terminating
			if !isReady && !isServingTerminating {
				continue
			}
			for _, a := range ep.Addresses {
				addr := net.JoinHostPort(a, strconv.Itoa(int(target)))
				if seen[addr] {
					continue
				}
				seen[addr] = true
				st := c.stats(addr)
				e := &Endpoint{Addr: addr, Key: st.key, Stats: st}
				if isReady {
					ready = append(ready, e)
				} else {
					terminating = append(terminating, e)
				}
			}
		}
	}
	b.Endpoints = ready
	if len(ready) == 0 {
		b.Endpoints = terminating
	}
	sort.Slice(b.Endpoints, func(i, j int) bool { return b.Endpoints[i].Addr < b.Endpoints[j].Addr })
	c.mark(b.Endpoints)
	if len(b.Endpoints) == 0 {
		b.Problem = "no ready endpoint for service " + svcKey.String() + " port " + portName
	}
	if hashed {
		b.buildRing()
	}
	return b
}

// noReadyEndpoint: the Backend's only problem is that no endpoint is ready now, which the proxy
// answers with 503 and which is not a problem of the Ingress (every user of the Backend is
// treated alike, whichever resolved it first).
func noReadyEndpoint(b *Backend) bool {
	return strings.HasPrefix(b.Problem, "no ready endpoint")
}

func (c *compiler) stats(addr string) *EndpointStats {
	return c.in.Stats.Get(addr)
}

// mark counts the endpoints this compile uses, each address once.
func (c *compiler) mark(eps []*Endpoint) {
	for _, e := range eps {
		if e.Stats.gen.Swap(c.gen) != c.gen {
			c.endpoints++
		}
	}
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// certificate returns the parsed key pair of a kubernetes.io/tls Secret. When the Secret is
// broken but an earlier version of it parsed, that last good key pair comes back with the error.
func (c *compiler) certificate(key types.NamespacedName) (*tls.Certificate, error) {
	s := c.secrets[key]
	if s == nil {
		return nil, fmt.Errorf("secret %s not found", key)
	}
	if c.in.Certs != nil {
		return c.in.Certs.get(s)
	}
	return parseTLSSecret(s)
}

func parseTLSSecret(s *corev1.Secret) (*tls.Certificate, error) {
	if s.Type != corev1.SecretTypeTLS {
		return nil, fmt.Errorf("secret %s/%s is of type %s, want kubernetes.io/tls", s.Namespace, s.Name, s.Type)
	}
	cert, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	if cert.Leaf == nil && len(cert.Certificate) > 0 {
		cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	}
	return &cert, nil
}

// CertCache keeps parsed key pairs by Secret UID and resourceVersion, so a recompile parses only
// the Secrets that changed. Safe for one compiler at a time.
type CertCache struct {
	mu sync.Mutex
	m  map[types.UID]certEntry
}

type certEntry struct {
	version string
	cert    *tls.Certificate // the last good key pair, even when the current version is broken
	err     error
}

// NewCertCache returns an empty cache.
func NewCertCache() *CertCache { return &CertCache{m: map[types.UID]certEntry{}} }

func (cc *CertCache) get(s *corev1.Secret) (*tls.Certificate, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if e, ok := cc.m[s.UID]; ok && e.version == s.ResourceVersion && s.ResourceVersion != "" {
		return e.cert, e.err
	}
	cert, err := parseTLSSecret(s)
	if err != nil {
		cert = cc.m[s.UID].cert
	}
	cc.m[s.UID] = certEntry{version: s.ResourceVersion, cert: cert, err: err}
	return cert, err
}

func (cc *CertCache) retain(secrets map[types.NamespacedName]*corev1.Secret) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	keep := make(map[types.UID]bool, len(secrets))
	for _, s := range secrets {
		keep[s.UID] = true
	}
	for uid := range cc.m {
		if !keep[uid] {
			delete(cc.m, uid)
		}
	}
}

// BackendCache keeps each Backend with the resourceVersions it was built from. Safe for one
// compiler at a time; a nil *BackendCache caches nothing.
type BackendCache struct {
	mu sync.Mutex
	m  map[backendKey]cachedBackend
}

type cachedBackend struct {
	svcVersion    string
	sliceVersions []string // in the order of the compiler's slice index
	backend       *Backend
}

// NewBackendCache returns an empty cache.
func NewBackendCache() *BackendCache { return &BackendCache{m: map[backendKey]cachedBackend{}} }

func (bc *BackendCache) lookup(k backendKey, svc *corev1.Service, slices []*discoveryv1.EndpointSlice) *Backend {
	if bc == nil || svc == nil || svc.ResourceVersion == "" {
		return nil
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	e, ok := bc.m[k]
	if !ok || e.svcVersion != svc.ResourceVersion || len(e.sliceVersions) != len(slices) {
		return nil
	}
	for i, es := range slices {
		if es.ResourceVersion == "" || e.sliceVersions[i] != es.ResourceVersion {
			return nil
		}
	}
	return e.backend
}

// store caches b; false when it cannot be (no cache, or no resourceVersion to check it by).
func (bc *BackendCache) store(k backendKey, svc *corev1.Service, slices []*discoveryv1.EndpointSlice, b *Backend) bool {
	if bc == nil || svc == nil || svc.ResourceVersion == "" {
		return false
	}
	versions := make([]string, len(slices))
	for i, es := range slices {
		versions[i] = es.ResourceVersion
	}
	bc.mu.Lock()
	bc.m[k] = cachedBackend{svcVersion: svc.ResourceVersion, sliceVersions: versions, backend: b}
	bc.mu.Unlock()
	return true
}

// retain drops the Backends the last compile did not use; cached of them are in the cache, so
// when that is its size there is nothing to drop.
func (bc *BackendCache) retain(used map[backendKey]*Backend, cached int) {
	if bc == nil {
		return
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	if len(bc.m) == cached {
		return
	}
	for k := range bc.m {
		if _, ok := used[k]; !ok {
			delete(bc.m, k)
		}
	}
}

// upstreamTLSKey identifies the TLS settings of the backends of svcKey under spec (the Secret's
// version included, so that a renewed Secret builds new settings).
func (c *compiler) upstreamTLSKey(spec *upstreamTLSSpec, svcKey types.NamespacedName, h2 bool) string {
	name := spec.name
	if name == "" {
		name = svcKey.Name + "." + svcKey.Namespace + ".svc"
	}
	version := ""
	if spec.secret != "" {
		if s := c.secrets[types.NamespacedName{Namespace: svcKey.Namespace, Name: spec.secret}]; s != nil {
			version = string(s.UID) + "@" + s.ResourceVersion
		}
	}
	return fmt.Sprintf("%s@%s|verify=%t|name=%s|sni=%t|h2=%t", spec.secret, version, spec.verify, name, spec.sni, h2)
}

// upstreamTLS builds (once per compile and key) the TLS client settings of backends: the
// Secret's ca.crt verifies the backend's certificate against the name (proxy-ssl-name, else
// the Service's DNS name <service>.<namespace>.svc) when proxy-ssl-verify is on (the system's
// roots without a ca.crt); its tls.crt and tls.key, when present, are the client certificate;
// the name is sent as SNI when proxy-ssl-server-name is on. Without verification the backend's
// certificate is not checked, as ingress-nginx's default (proxy-ssl-verify off).
func (c *compiler) upstreamTLS(spec *upstreamTLSSpec, svcKey types.NamespacedName, key string, h2 bool) (*UpstreamTLS, error) {
	if ut := c.tlsConfigs[key]; ut != nil {
		return ut, nil
	}
	name := spec.name
	if name == "" {
		name = svcKey.Name + "." + svcKey.Namespace + ".svc"
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} // verified below, against name
	if spec.sni {
		cfg.ServerName = name
	}
	cfg.NextProtos = []string{"http/1.1"}
	if h2 {
		cfg.NextProtos = []string{"h2"}
	}
	var roots *x509.CertPool
	if spec.secret != "" {
		sk := types.NamespacedName{Namespace: svcKey.Namespace, Name: spec.secret}
		s := c.secrets[sk]
		switch {
		case s == nil:
			return nil, fmt.Errorf("secret %s not found (the proxies read Secrets of type kubernetes.io/tls)", sk)
		case s.Type != corev1.SecretTypeTLS:
			return nil, fmt.Errorf("secret %s is of type %s, want kubernetes.io/tls", sk, s.Type)
		}
		if ca := s.Data["ca.crt"]; len(ca) > 0 {
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(ca) {
				return nil, fmt.Errorf("secret %s: ca.crt holds no PEM certificate", sk)
			}
		}
		if crt, k := s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]; len(crt) > 0 && len(k) > 0 {
			pair, err := tls.X509KeyPair(crt, k)
			if err != nil {
				return nil, fmt.Errorf("secret %s: client certificate: %w", sk, err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
	}
	if spec.verify {
		if roots == nil {
			var err error
			if roots, err = x509.SystemCertPool(); err != nil {
				return nil, fmt.Errorf("no ca.crt in %s and no system roots: %w", AnnotationPrefix+annProxySSLSecret, err)
			}
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("backend %s presented no certificate", name)
			}
			opts := x509.VerifyOptions{Roots: roots, DNSName: name, Intermediates: x509.NewCertPool()}
			for _, ic := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(ic)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		}
	}
	ut := &UpstreamTLS{Config: cfg, Name: name, Verify: spec.verify, Key: key}
	c.tlsConfigs[key] = ut
	return ut, nil
}

// errorBackend resolves an Ingress's default-backend annotation: the first port of a Service of
// its namespace, as ingress-nginx takes it.
func (c *compiler) errorBackend(ing *networkingv1.Ingress, key types.NamespacedName, name string) *Backend {
	svcKey := types.NamespacedName{Namespace: ing.Namespace, Name: name}
	port := networkingv1.ServiceBackendPort{Number: 80}
	if svc := c.services[svcKey]; svc != nil && len(svc.Spec.Ports) > 0 {
		port.Number = svc.Spec.Ports[0].Port
	}
	return c.backend(svcKey, port, key, nil, -1, nil, false, fieldPath{rule: -2})
}

// compileListeners adds the fleet's TCP and UDP services to t. A Service or port that does not
// exist is a problem of the fleet's (the operator reports it on the IngressDeployment too); the
// listener is bound and refuses connections until it does.
func (c *compiler) compileListeners(t *Table) {
	for _, x := range []struct {
		list []proxyconfig.L4Service
		udp  bool
	}{{c.in.Config.TCP, false}, {c.in.Config.UDP, true}} {
		proto, prefix := corev1.ProtocolTCP, "tcp/"
		if x.udp {
			proto, prefix = corev1.ProtocolUDP, "udp/"
		}
		for _, s := range x.list {
			ref := s.Service
			port := networkingv1.ServiceBackendPort{Number: ref.Port, Name: ref.PortName}
			b := c.l4Backend(types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, port, proto)
			name := prefix + strconv.Itoa(int(s.Port))
			if b.Problem != "" && !noReadyEndpoint(b) {
				c.add(Problem{Message: name + ": " + b.Problem})
			}
			t.Listeners = append(t.Listeners, Listener{Name: name, UDP: x.udp, Port: s.ListenPort, ProxyProtocol: s.ProxyProtocol, Backend: b})
		}
	}
	slices.SortFunc(t.Listeners, func(a, b Listener) int { return strings.Compare(a.Name, b.Name) })
}

// l4Backend is backend for a listener: the Service port of the given protocol.
func (c *compiler) l4Backend(svcKey types.NamespacedName, port networkingv1.ServiceBackendPort, proto corev1.Protocol) *Backend {
	c.l4proto = proto
	defer func() { c.l4proto = "" }()
	return c.backend(svcKey, port, types.NamespacedName{}, nil, -1, nil, false, fieldPath{})
}
