package route

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Compiler compiles Inputs into Tables and keeps what it needs to apply a change of Ingresses,
// Services or EndpointSlices by rebuilding only the hosts the change touches: with 10,000
// Ingresses, a new Ingress or a pod coming or going costs its hosts, not a full compile. Not safe
// for concurrent use.
//
// Its tables equal those Compile builds from the same objects (TestCompilerUpdateEqualsCompile),
// with two differences: Stats.Backends counts the Backends the table's rules and default backend
// use and Stats.Endpoints their endpoints (an address in two Backends counts twice), and
// problems come sorted by Ingress, then message.
type Compiler struct {
	st *compilerState
}

type compilerState struct {
	at     time.Time // of the last full compile
	c      *compiler // the indexes of the last full compile, and its per-host records
	table  *Table
	serves func(*networkingv1.Ingress) bool
	served map[types.NamespacedName]*networkingv1.Ingress
	// refs counts the uses of each Backend by rules and the default backend; endpoints sums
	// the endpoints of the Backends in use.
	refs      map[*Backend]int
	endpoints int
}

// Compile compiles in from scratch, as the package's Compile does, and keeps its state.
func (cs *Compiler) Compile(in Input) (*Table, []Problem) {
	c := newCompiler(&in, true)
	t := c.run()
	st := &compilerState{at: time.Now(), c: c, table: t, serves: servingFilter(c.in),
		served: make(map[types.NamespacedName]*networkingv1.Ingress, len(c.served)),
		refs:   map[*Backend]int{}}
	for _, ing := range c.served {
		st.served[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}] = ing
	}
	for _, h := range t.allHosts() {
		for i := range h.Rules {
			st.refRule(&h.Rules[i])
		}
	}
	st.ref(t.DefaultBackend)
	for _, l := range t.Listeners {
		st.ref(l.Backend)
	}
	t.Stats.Backends, t.Stats.Endpoints = len(st.refs), st.endpoints
	cs.st = st
	return t, st.problems()
}

// Changes are the objects changed since the last compile, each object once, in its last state:
// added and updated objects as they are now, deleted ones as they were last (their keys and
// labels are used).
type Changes struct {
	Ingresses        []*networkingv1.Ingress
	DeletedIngresses []types.NamespacedName
	Services         []*corev1.Service
	DeletedServices  []*corev1.Service
	Slices           []*discoveryv1.EndpointSlice
	DeletedSlices    []*discoveryv1.EndpointSlice
	Secrets          []*corev1.Secret
	DeletedSecrets   []*corev1.Secret
}

// maxIncrementalAge bounds the time between full compiles, which also forget the endpoint
// counters and cached Backends nothing uses any more.
const maxIncrementalAge = time.Minute

// Update applies changes of Ingresses, Services, EndpointSlices and Secrets to the last
// compiled table; every other object is as the last Compile saw it. It rebuilds only the hosts
// whose Ingresses changed or whose rules name a changed Service, and the certificates of the
// Ingresses that name a changed Secret (a renewal costs its Ingresses, not a full compile). It
// returns false, and changes nothing, when it cannot: no Compile yet, the last full one is older
// than maxIncrementalAge, an Ingress involved (before or after the change) has a default backend
// or a spec.tls without hosts (names from a certificate), a default backend names a changed
// Service, or a changed Secret is the fleet's default certificate. The caller then compiles in
// full.
func (cs *Compiler) Update(chg Changes) (*Table, []Problem, bool) {
	st := cs.st
	if st == nil || time.Since(st.at) > maxIncrementalAge {
		return nil, nil, false
	}
	changes := map[types.NamespacedName]ingressChange{}
	simple := func(ing *networkingv1.Ingress) bool {
		return ing == nil || (ing.Spec.DefaultBackend == nil && tlsListsHosts(ing))
	}
	for _, ing := range chg.Ingresses {
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		ch := ingressChange{old: st.served[key]}
		if st.serves(ing) {
			ch.new = ing
		}
		changes[key] = ch
	}
	for _, key := range chg.DeletedIngresses {
		changes[key] = ingressChange{old: st.served[key]}
	}
	// A changed Secret changes the certificates of the Ingresses that name it, as they stand.
	secrets := map[types.NamespacedName]bool{}
	for _, list := range [][]*corev1.Secret{chg.Secrets, chg.DeletedSecrets} {
		for _, o := range list {
			secrets[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = true
		}
	}
	if len(secrets) > 0 {
		if ref := st.c.in.Config.DefaultCertificate; ref != "" {
			ns, name, _ := strings.Cut(ref, "/")
			if secrets[types.NamespacedName{Namespace: ns, Name: name}] {
				return nil, nil, false
			}
		}
		for key, ing := range st.served {
			if _, ok := changes[key]; ok {
				continue
			}
			named := false
			for _, name := range AnnotationSecrets(ing, st.c.in.Config.IngressNginxCompatibility) { // backend TLS, credentials, client CAs
				named = named || secrets[types.NamespacedName{Namespace: ing.Namespace, Name: name}]
			}
			if named {
				changes[key] = ingressChange{old: ing, new: ing}
				continue
			}
			for _, tl := range ing.Spec.TLS {
				if secrets[types.NamespacedName{Namespace: ing.Namespace, Name: tl.SecretName}] {
					changes[key] = ingressChange{old: ing, new: ing}
					break
				}
			}
		}
	}
	affected, affectedTLS := map[string]bool{}, map[string]bool{}
	for _, ch := range changes {
		if !simple(ch.old) || !simple(ch.new) {
			return nil, nil, false
		}
		for _, ing := range []*networkingv1.Ingress{ch.old, ch.new} {
			forHosts(ing, st.c.in.Config.IngressNginxCompatibility, func(h string) { affected[h] = true })
			forTLSNames(ing, func(n string) { affectedTLS[n] = true })
		}
	}
	if len(affectedTLS) > 0 && st.c.tlsFromCerts {
		return nil, nil, false // names that come from certificates are not indexed
	}
	svcs := map[types.NamespacedName]bool{}
	for _, o := range chg.Services {
		svcs[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = true
	}
	for _, o := range chg.DeletedServices {
		svcs[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = true
	}
	for _, list := range [][]*discoveryv1.EndpointSlice{chg.Slices, chg.DeletedSlices} {
		for _, es := range list {
			if svc := es.Labels[discoveryv1.LabelServiceName]; svc != "" {
				svcs[types.NamespacedName{Namespace: es.Namespace, Name: svc}] = true
			}
		}
	}
	c := st.c
	for key := range svcs {
		if c.otherSvcs[key] {
			return nil, nil, false // a default backend (the fleet's, or an Ingress's) names it
		}
	}
	for key := range svcs {
		for h := range c.svcHosts[key] {
			affected[h] = true
		}
	}

	// The indexes of Secrets, Services and EndpointSlices, and the Backends built from changed
	// Services.
	for _, o := range chg.Secrets {
		c.secrets[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = o
	}
	for _, o := range chg.DeletedSecrets {
		delete(c.secrets, types.NamespacedName{Namespace: o.Namespace, Name: o.Name})
	}
	for _, o := range chg.Services {
		c.services[types.NamespacedName{Namespace: o.Namespace, Name: o.Name}] = o
	}
	for _, o := range chg.DeletedServices {
		delete(c.services, types.NamespacedName{Namespace: o.Namespace, Name: o.Name})
	}
	for _, es := range chg.DeletedSlices {
		c.replaceSlice(es, false)
	}
	for _, es := range chg.Slices {
		c.replaceSlice(es, true)
	}
	if len(svcs) > 0 {
		for k := range c.backends {
			if svcs[k.svc] {
				delete(c.backends, k)
			}
		}
	}

	// The Ingresses of each affected host, oldest first.
	for key, ch := range changes {
		if ch.new != nil {
			st.served[key] = ch.new
		} else {
			delete(st.served, key)
		}
	}
	compat := st.c.in.Config.IngressNginxCompatibility
	reindex(c.byHost, affected, changes, func(ing *networkingv1.Ingress, fn func(string)) { forHosts(ing, compat, fn) })
	reindex(c.byTLS, affectedTLS, changes, forTLSNames)

	// A new table sharing every untouched host with the last one.
	old := st.table
	t := *old
	t.exact, t.wildcard = maps.Clone(old.exact), maps.Clone(old.wildcard)
	if len(affectedTLS) > 0 {
		t.certExact, t.certWildcard = maps.Clone(old.certExact), maps.Clone(old.certWildcard)
		for n := range affectedTLS {
			c.rebuildCertificate(&t, n)
		}
		for key, ch := range changes {
			delete(c.hostProbs, tlsBucket(key))
			if ch.new == nil || len(ch.new.Spec.TLS) == 0 {
				continue
			}
			c.bucket = tlsBucket(key)
			for i, tl := range ch.new.Spec.TLS {
				c.tlsSection(key, ch.new, i, tl, true)
			}
			c.bucket = noBucket
		}
	}
	// The annotations of the changed Ingresses.
	for key, ch := range changes {
		delete(c.policies, ch.old)
		delete(c.clientAuths, ch.old)
		delete(c.hostProbs, annBucket(key))
		if ch.new != nil {
			c.bucket = annBucket(key)
			c.policyOf(ch.new, true)
			c.bucket = noBucket
		}
	}
	// A host whose TLS changed changes its HTTPS redirect.
	for n := range affectedTLS {
		affected[n] = true
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			for h := range c.byHost {
				if i := strings.IndexByte(h, '.'); i > 0 && h[i+1:] == rest {
					affected[h] = true
				}
			}
		}
	}
	for h := range affected {
		if prev := old.hostByKey(h); prev != nil {
			for i := range prev.Rules {
				st.unrefRule(&prev.Rules[i])
			}
			t.Stats.Rules -= len(prev.Rules)
			if prev.Passthrough != nil {
				t.passthroughHosts--
			}
		}
		delete(c.hostProbs, h)
		c.bucket = h
		nh := c.compileHost(&t, h, c.byHost[h])
		c.bucket = noBucket
		if nh != nil {
			for i := range nh.Rules {
				st.refRule(&nh.Rules[i])
			}
			t.Stats.Rules += len(nh.Rules)
			if nh.Passthrough != nil {
				t.passthroughHosts++
			}
		}
		t.setHostByKey(h, nh)
	}
	c.problems = nil // kept per host and in c.other
	t.Stats.Ingresses = len(st.served)
	t.Stats.Hosts = len(t.exact) + len(t.wildcard)
	if t.catchAll != nil {
		t.Stats.Hosts++
	}
	t.Stats.Backends, t.Stats.Endpoints = len(st.refs), st.endpoints
	st.table = &t
	return &t, st.problems(), true
}

// rebuildCertificate sets the certificate of a normalized name in t from the Ingresses that
// list it, oldest first: the first section with a usable certificate wins, as in a full compile.
func (c *compiler) rebuildCertificate(t *Table, n string) {
	if rest, ok := strings.CutPrefix(n, "*."); ok {
		delete(t.certWildcard, rest)
	} else {
		delete(t.certExact, n)
	}
	for _, ing := range c.byTLS[n] {
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		for i, tl := range ing.Spec.TLS {
			if !slices.ContainsFunc(tl.Hosts, func(h string) bool { return NormalizeHost(h) == n }) {
				continue
			}
			if cert, _ := c.tlsSection(key, ing, i, tl, false); cert != nil {
				t.setCertificate(n, cert)
				return
			}
		}
	}
}

// replaceSlice puts an EndpointSlice into the index of its Service (keep) or takes it out,
// keeping the index's order by name.
func (c *compiler) replaceSlice(es *discoveryv1.EndpointSlice, keep bool) {
	svc := es.Labels[discoveryv1.LabelServiceName]
	if svc == "" {
		return
	}
	k := types.NamespacedName{Namespace: es.Namespace, Name: svc}
	list := slices.DeleteFunc(slices.Clone(c.slices[k]), func(x *discoveryv1.EndpointSlice) bool { return x.Name == es.Name })
	if keep {
		list = append(list, es)
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	}
	if len(list) == 0 {
		delete(c.slices, k)
	} else {
		c.slices[k] = list
	}
}

// ingressChange is an Ingress before (nil: not served) and after (nil: deleted or not served).
type ingressChange struct{ old, new *networkingv1.Ingress }

// reindex brings the entries of index for the given names (hosts, or TLS names) up to date with
// the changes: the changed Ingresses leave them, their new versions that name them join, oldest
// first. names lists the names an Ingress has.
func reindex(index map[string][]*networkingv1.Ingress, keys map[string]bool,
	changes map[types.NamespacedName]ingressChange, names func(*networkingv1.Ingress, func(string))) {
	for k := range keys {
		var list []*networkingv1.Ingress
		for _, ing := range index[k] {
			if _, ok := changes[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}]; !ok {
				list = append(list, ing)
			}
		}
		for _, ch := range changes {
			named := false
			names(ch.new, func(x string) { named = named || x == k })
			if named {
				list = append(list, ch.new)
			}
		}
		sort.SliceStable(list, func(i, j int) bool { return olderIngress(list[i], list[j]) })
		if len(list) == 0 {
			delete(index, k)
		} else {
			index[k] = list
		}
	}
}

// forHosts calls fn with each normalized host ing has paths for (repeats included), and with
// their www. counterparts when it asks for from-to-www-redirect.
func forHosts(ing *networkingv1.Ingress, compat bool, fn func(string)) {
	if ing == nil {
		return
	}
	v, _, _ := viewOf(ing, compat).get(annFromToWWW)
	www := v == "true"
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP != nil && len(rule.HTTP.Paths) > 0 {
			h := NormalizeHost(rule.Host)
			fn(h)
			if to := wwwCounterpart(h); www && to != "" {
				fn(to)
			}
		}
	}
}

// hostByKey finds a host by its normalized name ("" for rules without a host).
func (t *Table) hostByKey(h string) *Host {
	switch {
	case h == "":
		return t.catchAll
	case strings.HasPrefix(h, "*."):
		return t.wildcard[h[2:]]
	}
	return t.exact[h]
}

// setHostByKey sets or (nil) removes a host of a table under construction.
func (t *Table) setHostByKey(h string, host *Host) {
	switch {
	case h == "":
		t.catchAll = host
	case strings.HasPrefix(h, "*."):
		if host == nil {
			delete(t.wildcard, h[2:])
		} else {
			t.wildcard[h[2:]] = host
		}
	case host == nil:
		delete(t.exact, h)
	default:
		t.exact[h] = host
	}
}

// refRule counts the Backends a rule uses (its own, its canary's).
func (st *compilerState) refRule(r *Rule) {
	for _, b := range ruleBackends(r) {
		st.ref(b)
	}
}

func (st *compilerState) unrefRule(r *Rule) {
	for _, b := range ruleBackends(r) {
		st.unref(b)
	}
}

// ruleBackends lists the Backends a rule may send to: its own, its weighted ones, its canary's
// and its error backend.
func ruleBackends(r *Rule) []*Backend {
	out := []*Backend{r.Backend}
	for _, wb := range r.Backends {
		if wb.Backend != r.Backend {
			out = append(out, wb.Backend)
		}
	}
	if p := r.Policy; p != nil {
		if p.Canary != nil {
			out = append(out, p.Canary.Backend)
		}
		if p.ErrorBackend != nil {
			out = append(out, p.ErrorBackend)
		}
		if p.Mirror != nil {
			out = append(out, p.Mirror)
		}
	}
	return out
}

func (st *compilerState) ref(b *Backend) {
	if b == nil {
		return
	}
	st.refs[b]++
	if st.refs[b] == 1 {
		st.endpoints += len(b.Endpoints)
	}
}

func (st *compilerState) unref(b *Backend) {
	if b == nil {
		return
	}
	st.refs[b]--
	if st.refs[b] > 0 {
		return
	}
	delete(st.refs, b)
	st.endpoints -= len(b.Endpoints)
}

// problems lists the problems of the table: those of every host, and the others.
func (st *compilerState) problems() []Problem {
	out := append([]Problem(nil), st.c.other...)
	for _, ps := range st.c.hostProbs {
		out = append(out, ps...)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Ingress != b.Ingress {
			if a.Ingress.Namespace != b.Ingress.Namespace {
				return a.Ingress.Namespace < b.Ingress.Namespace
			}
			return a.Ingress.Name < b.Ingress.Name
		}
		return a.Message < b.Message
	})
	return out
}
