// Package watch feeds the proxy: informers (read-only, scoped to the fleet's watched namespaces)
// trigger a debounced compile of a new routing table, which is handed to the proxy whole.
package watch

import (
	"context"
	"crypto/tls"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	proxyconfig "portico.dev/portico/dataplane/config"
	"portico.dev/portico/dataplane/route"
)

// Publisher receives each new table.
type Publisher interface {
	Swap(t *route.Table, problems int)
}

// Options configure a Watcher.
type Options struct {
	Fleet types.NamespacedName
	// ConfigMap is the name of the fleet's settings ConfigMap, in the fleet's namespace.
	ConfigMap string
	// Holdoff is how long events are gathered after the first one before compiling (default
	// 10ms); MaxDelay bounds the wait under a steady stream of events (default 200ms).
	Holdoff, MaxDelay time.Duration
	// Fallback is the certificate served when the fleet names none (self-signed).
	Fallback *tls.Certificate
	// Resync is the informers' resync period (default none).
	Resync time.Duration
}

// Watcher keeps the proxy's table in step with the cluster.
type Watcher struct {
	client   kubernetes.Interface
	pub      Publisher
	opts     Options
	log      logr.Logger
	trigger  chan struct{}
	certs    *route.CertCache
	stats    *route.StatsRegistry
	backends *route.BackendCache

	cfg       proxyconfig.Config
	cfgLister func() (*corev1.ConfigMap, bool)
	// compiler keeps the last compile, so that a change of Ingresses alone rebuilds only the
	// hosts it touches; pending gathers the changes since the last compile.
	compiler  route.Compiler
	compiled  proxyconfig.Config // the settings of the last full compile
	pending   changes
	session   *session
	lastProbs []route.Problem
	lastStats route.Stats
	// Problems, when set, is called with the problems of each compile that differ from the
	// previous compile's.
	Problems func([]route.Problem)
}

// New returns a Watcher; Run starts it.
func New(client kubernetes.Interface, pub Publisher, opts Options, log logr.Logger) *Watcher {
	if opts.Holdoff == 0 {
		opts.Holdoff = 10 * time.Millisecond
	}
	if opts.MaxDelay == 0 {
		opts.MaxDelay = 200 * time.Millisecond
	}
	return &Watcher{
		client: client, pub: pub, opts: opts, log: log,
		trigger:  make(chan struct{}, 1),
		certs:    route.NewCertCache(),
		stats:    route.NewStatsRegistry(),
		backends: route.NewBackendCache(),
		cfg:      proxyconfig.Config{FleetNamespace: opts.Fleet.Namespace, FleetName: opts.Fleet.Name},
	}
}

// changes are the events since the last compile: Ingresses added, updated (the new object) or
// deleted (nil), and whether anything else changed.
type changes struct {
	mu        sync.Mutex
	ingresses map[types.NamespacedName]*networkingv1.Ingress
	other     bool
}

func (c *changes) ingress(key types.NamespacedName, ing *networkingv1.Ingress) {
	c.mu.Lock()
	if c.ingresses == nil {
		c.ingresses = map[types.NamespacedName]*networkingv1.Ingress{}
	}
	c.ingresses[key] = ing
	c.mu.Unlock()
}

func (c *changes) setOther() {
	c.mu.Lock()
	c.other = true
	c.mu.Unlock()
}

// take returns and clears the changes.
func (c *changes) take() (map[types.NamespacedName]*networkingv1.Ingress, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ings, other := c.ingresses, c.other
	c.ingresses, c.other = nil, false
	return ings, other
}

// ingressHandler records Ingress events for the incremental compile.
func (w *Watcher) ingressHandler() cache.ResourceEventHandler {
	record := func(obj any, deleted bool) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj, deleted = t.Obj, true
		}
		ing, ok := obj.(*networkingv1.Ingress)
		if !ok {
			w.pending.setOther()
		} else if key := (types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}); deleted {
			w.pending.ingress(key, nil)
		} else {
			w.pending.ingress(key, ing)
		}
		w.kick()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { record(obj, false) },
		UpdateFunc: func(_, obj any) { record(obj, false) },
		DeleteFunc: func(obj any) { record(obj, true) },
	}
}

// session is the set of informers for one list of watched namespaces.
type session struct {
	namespaces []string
	stop       chan struct{}
	factories  []informers.SharedInformerFactory
	ingresses  []cache.SharedIndexInformer
	services   []cache.SharedIndexInformer
	slices     []cache.SharedIndexInformer
	secrets    []cache.SharedIndexInformer
	classes    cache.SharedIndexInformer
}

func (w *Watcher) kick() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

var handler = func(kick func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}
}

// stripForCache drops what the proxy never reads, so 10,000 objects stay small in memory:
// managed fields everywhere, and annotations of everything but Ingresses and IngressClasses
// (which carry settings) minus kubectl's last-applied copy.
func stripForCache(obj any) (any, error) {
	switch o := obj.(type) {
	case *networkingv1.Ingress:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
	case *networkingv1.IngressClass:
		o.ManagedFields = nil
		delete(o.Annotations, corev1.LastAppliedConfigAnnotation)
	case *corev1.Service:
		o.ManagedFields, o.Annotations = nil, nil
	case *discoveryv1.EndpointSlice:
		o.ManagedFields, o.Annotations = nil, nil
	case *corev1.Secret:
		o.ManagedFields, o.Annotations = nil, nil
	}
	return obj, nil
}

func (w *Watcher) startSession(namespaces []string) *session {
	s := &session{namespaces: namespaces, stop: make(chan struct{})}
	nsList := namespaces
	if len(nsList) == 0 {
		nsList = []string{corev1.NamespaceAll}
	}
	w.pending.setOther()
	h := handler(func() { w.pending.setOther(); w.kick() })
	add := func(inf cache.SharedIndexInformer) cache.SharedIndexInformer {
		_ = inf.SetTransform(stripForCache)
		_, _ = inf.AddEventHandler(h)
		return inf
	}
	addIngresses := func(inf cache.SharedIndexInformer) cache.SharedIndexInformer {
		_ = inf.SetTransform(stripForCache)
		_, _ = inf.AddEventHandler(w.ingressHandler())
		return inf
	}
	for _, ns := range nsList {
		f := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns))
		secrets := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
			}))
		s.ingresses = append(s.ingresses, addIngresses(f.Networking().V1().Ingresses().Informer()))
		s.services = append(s.services, add(f.Core().V1().Services().Informer()))
		s.slices = append(s.slices, add(f.Discovery().V1().EndpointSlices().Informer()))
		s.secrets = append(s.secrets, add(secrets.Core().V1().Secrets().Informer()))
		s.factories = append(s.factories, f, secrets)
	}
	cf := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync)
	s.classes = add(cf.Networking().V1().IngressClasses().Informer())
	s.factories = append(s.factories, cf)
	for _, f := range s.factories {
		f.Start(s.stop)
	}
	return s
}

func (s *session) close() { close(s.stop) }

func (s *session) waitForSync(ctx context.Context) bool {
	for _, f := range s.factories {
		for _, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return false
			}
		}
	}
	return true
}

// Run starts the informers, publishes a first table once they are synced (then calls ready),
// and keeps publishing until ctx ends.
func (w *Watcher) Run(ctx context.Context, ready func()) error {
	cmStop := make(chan struct{})
	defer close(cmStop)
	cmf := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync,
		informers.WithNamespace(w.opts.Fleet.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.opts.ConfigMap).String()
		}))
	cmInf := cmf.Core().V1().ConfigMaps()
	_, _ = cmInf.Informer().AddEventHandler(handler(w.kick))
	cmf.Start(cmStop)
	if !cache.WaitForCacheSync(ctx.Done(), cmInf.Informer().HasSynced) {
		return ctx.Err()
	}
	w.cfgLister = func() (*corev1.ConfigMap, bool) {
		cm, err := cmInf.Lister().ConfigMaps(w.opts.Fleet.Namespace).Get(w.opts.ConfigMap)
		return cm, err == nil
	}
	w.readConfig()
	w.session = w.startSession(w.cfg.WatchNamespaces)
	defer func() { w.session.close() }()
	if !w.session.waitForSync(ctx) {
		return ctx.Err()
	}
	w.compile()
	w.log.Info("Routing table ready", "ingresses", w.lastStats.Ingresses)
	if ready != nil {
		ready()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.trigger:
		}
		if !w.debounce(ctx) {
			return nil
		}
		if w.readConfig() {
			w.log.Info("Watched namespaces changed; restarting informers", "namespaces", w.cfg.WatchNamespaces)
			old := w.session
			w.session = w.startSession(w.cfg.WatchNamespaces)
			if !w.session.waitForSync(ctx) {
				old.close()
				return nil
			}
			old.close()
		}
		w.compile()
	}
}

// debounce gathers events for Holdoff after the last one, at most MaxDelay in all.
func (w *Watcher) debounce(ctx context.Context) bool {
	deadline := time.Now().Add(w.opts.MaxDelay)
	timer := time.NewTimer(w.opts.Holdoff)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-w.trigger:
			d := min(w.opts.Holdoff, time.Until(deadline))
			if d <= 0 {
				return true
			}
			if !timer.Stop() {
				<-timer.C
			}
			timer.Reset(d)
		}
	}
}

// readConfig loads the ConfigMap; a missing or invalid one keeps the last good settings. It
// reports whether the watched namespaces changed.
func (w *Watcher) readConfig() (namespacesChanged bool) {
	cm, ok := w.cfgLister()
	if !ok {
		return false
	}
	cfg, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
	if err != nil {
		w.log.Error(err, "Invalid proxy settings; keeping the last good ones", "configMap", w.opts.ConfigMap)
		return false
	}
	if cfg.FleetNamespace != w.opts.Fleet.Namespace || cfg.FleetName != w.opts.Fleet.Name {
		w.log.Error(fmt.Errorf("settings are for fleet %s/%s", cfg.FleetNamespace, cfg.FleetName), "Ignoring proxy settings", "fleet", w.opts.Fleet)
		return false
	}
	changed := !slices.Equal(cfg.WatchNamespaces, w.cfg.WatchNamespaces)
	if !reflect.DeepEqual(cfg, w.cfg) {
		w.log.Info("Proxy settings changed", "settings", cfg)
	}
	w.cfg = cfg
	return changed && w.session != nil
}

func list[T any](infs []cache.SharedIndexInformer) []*T {
	var out []*T
	for _, inf := range infs {
		for _, o := range inf.GetStore().List() {
			if t, ok := o.(*T); ok {
				out = append(out, t)
			}
		}
	}
	return out
}

// compile builds and publishes a table: from the last one when only Ingresses changed (and none
// of them involves TLS or a default backend), else from the informers' caches.
func (w *Watcher) compile() {
	start := time.Now()
	ings, other := w.pending.take()
	if !other && reflect.DeepEqual(w.cfg, w.compiled) {
		var changed []*networkingv1.Ingress
		var deleted []types.NamespacedName
		for key, ing := range ings {
			if ing == nil {
				deleted = append(deleted, key)
			} else {
				changed = append(changed, ing)
			}
		}
		if t, probs, ok := w.compiler.Update(changed, deleted); ok {
			w.publish(t, probs, start, "hosts of the changed Ingresses")
			return
		}
	}
	s := w.session
	in := route.Input{
		Config:              w.cfg,
		Classes:             list[networkingv1.IngressClass]([]cache.SharedIndexInformer{s.classes}),
		Ingresses:           list[networkingv1.Ingress](s.ingresses),
		Services:            list[corev1.Service](s.services),
		EndpointSlices:      list[discoveryv1.EndpointSlice](s.slices),
		Secrets:             list[corev1.Secret](s.secrets),
		FallbackCertificate: w.opts.Fallback,
		Certs:               w.certs,
		Stats:               w.stats,
		Backends:            w.backends,
	}
	t, probs := w.compiler.Compile(in)
	w.compiled = w.cfg
	w.publish(t, probs, start, "everything")
}

func (w *Watcher) publish(t *route.Table, probs []route.Problem, start time.Time, rebuilt string) {
	w.pub.Swap(t, len(probs))
	w.lastStats = t.Stats
	if !slices.Equal(probs, w.lastProbs) {
		for _, p := range probs {
			w.log.V(1).Info("Ingress problem", "problem", p.String())
		}
		w.lastProbs = probs
	}
	w.log.V(2).Info("Routing table published", "ingresses", t.Stats.Ingresses, "hosts", t.Stats.Hosts,
		"endpoints", t.Stats.Endpoints, "rebuilt", rebuilt, "took", time.Since(start).String())
}
