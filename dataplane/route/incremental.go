package route

import (
	"maps"
	"sort"
	"strings"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Compiler compiles Inputs into Tables and keeps what it needs to apply a change of Ingresses
// alone by rebuilding only the hosts the change touches: with 10,000 Ingresses, a new Ingress
// costs its hosts, not a full compile. Not safe for concurrent use.
//
// Its tables equal those Compile builds from the same objects (TestCompilerUpdateEqualsCompile),
// with two differences: Stats.Backends counts the Backends the table's rules and default backend
// use and Stats.Endpoints their endpoints (an address in two Backends counts twice), and
// problems come sorted by Ingress, then message.
type Compiler struct {
	st *compilerState
}

type compilerState struct {
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
	st := &compilerState{c: c, table: t, serves: servingFilter(c.in),
		served: make(map[types.NamespacedName]*networkingv1.Ingress, len(c.served)),
		refs:   map[*Backend]int{}}
	for _, ing := range c.served {
		st.served[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}] = ing
	}
	for _, h := range t.allHosts() {
		for i := range h.Rules {
			st.ref(h.Rules[i].Backend)
		}
	}
	st.ref(t.DefaultBackend)
	t.Stats.Backends, t.Stats.Endpoints = len(st.refs), st.endpoints
	cs.st = st
	return t, st.problems()
}

// Update applies a change of Ingresses alone to the last compiled table: changed holds new or
// updated Ingresses, deleted the keys of removed ones; every other object is as the last Compile
// saw it. It returns false, and changes nothing, when it cannot: no Compile yet, or an Ingress
// involved (before or after the change) has TLS or a default backend, which are settled across
// all Ingresses; the caller then compiles in full.
func (cs *Compiler) Update(changed []*networkingv1.Ingress, deleted []types.NamespacedName) (*Table, []Problem, bool) {
	st := cs.st
	if st == nil {
		return nil, nil, false
	}
	type change struct{ old, new *networkingv1.Ingress }
	changes := map[types.NamespacedName]change{}
	simple := func(ing *networkingv1.Ingress) bool {
		return ing == nil || (ing.Spec.DefaultBackend == nil && len(ing.Spec.TLS) == 0)
	}
	for _, ing := range changed {
		key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
		ch := change{old: st.served[key]}
		if st.serves(ing) {
			ch.new = ing
		}
		changes[key] = ch
	}
	for _, key := range deleted {
		changes[key] = change{old: st.served[key]}
	}
	affected := map[string]bool{}
	for _, ch := range changes {
		if !simple(ch.old) || !simple(ch.new) {
			return nil, nil, false
		}
		for _, ing := range []*networkingv1.Ingress{ch.old, ch.new} {
			forHosts(ing, func(h string) { affected[h] = true })
		}
	}

	// The Ingresses of each affected host, oldest first.
	c := st.c
	for key, ch := range changes {
		if ch.new != nil {
			st.served[key] = ch.new
		} else {
			delete(st.served, key)
		}
	}
	for h := range affected {
		var list []*networkingv1.Ingress
		for _, ing := range c.byHost[h] {
			if _, ok := changes[types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}]; !ok {
				list = append(list, ing)
			}
		}
		for _, ch := range changes {
			if ch.new != nil && hasHost(ch.new, h) {
				list = append(list, ch.new)
			}
		}
		sort.SliceStable(list, func(i, j int) bool { return olderIngress(list[i], list[j]) })
		if len(list) == 0 {
			delete(c.byHost, h)
		} else {
			c.byHost[h] = list
		}
	}

	// A new table sharing every untouched host with the last one.
	old := st.table
	t := *old
	t.exact, t.wildcard = maps.Clone(old.exact), maps.Clone(old.wildcard)
	for h := range affected {
		if prev := old.hostByKey(h); prev != nil {
			for i := range prev.Rules {
				st.unref(prev.Rules[i].Backend)
			}
			t.Stats.Rules -= len(prev.Rules)
		}
		nh := &Host{}
		delete(c.hostProbs, h)
		c.bucket = h
		for _, ing := range c.byHost[h] {
			key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
			keyName := key.String()
			for i, rule := range ing.Spec.Rules {
				if rule.HTTP != nil && len(rule.HTTP.Paths) > 0 && NormalizeHost(rule.Host) == h {
					c.addPaths(nh, ing, key, keyName, i, rule)
				}
			}
		}
		c.bucket = noBucket
		sortRules(nh.Rules)
		for i := range nh.Rules {
			st.ref(nh.Rules[i].Backend)
		}
		t.Stats.Rules += len(nh.Rules)
		if len(nh.Rules) == 0 {
			nh = nil
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

// forHosts calls fn with each normalized host ing has paths for (repeats included).
func forHosts(ing *networkingv1.Ingress, fn func(string)) {
	if ing == nil {
		return
	}
	for _, rule := range ing.Spec.Rules {
		if rule.HTTP != nil && len(rule.HTTP.Paths) > 0 {
			fn(NormalizeHost(rule.Host))
		}
	}
}

func hasHost(ing *networkingv1.Ingress, h string) bool {
	found := false
	forHosts(ing, func(x string) { found = found || x == h })
	return found
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
