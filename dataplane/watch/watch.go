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
	access   *route.AccessCache
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
		access:   route.NewAccessCache(),
		stats:    route.NewStatsRegistry(),
		backends: route.NewBackendCache(),
		cfg:      proxyconfig.Config{FleetNamespace: opts.Fleet.Namespace, FleetName: opts.Fleet.Name},
	}
}

// changes are the events since the last compile: the last state of each Ingress, Service,
// EndpointSlice and Secret that changed (deleted ones as last known), and whether anything else
// changed.
type changes struct {
	mu        sync.Mutex
	ingresses map[types.NamespacedName]change[*networkingv1.Ingress]
	services  map[types.NamespacedName]change[*corev1.Service]
	slices    map[types.NamespacedName]change[*discoveryv1.EndpointSlice]
	secrets   map[types.NamespacedName]change[*corev1.Secret]
	other     bool
}

type change[T any] struct {
	obj     T
	deleted bool
}

func record[T any](c *changes, m *map[types.NamespacedName]change[T], key types.NamespacedName, obj T, deleted bool) {
	c.mu.Lock()
	if *m == nil {
		*m = map[types.NamespacedName]change[T]{}
	}
	(*m)[key] = change[T]{obj, deleted}
	c.mu.Unlock()
}

func (c *changes) setOther() {
	c.mu.Lock()
	c.other = true
	c.mu.Unlock()
}

// take returns the changes as route.Changes and clears them; other reports changes of anything
// else.
func (c *changes) take() (chg route.Changes, other bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, ch := range c.ingresses {
		if ch.deleted {
			chg.DeletedIngresses = append(chg.DeletedIngresses, key)
		} else {
			chg.Ingresses = append(chg.Ingresses, ch.obj)
		}
	}
	for _, ch := range c.services {
		if ch.deleted {
			chg.DeletedServices = append(chg.DeletedServices, ch.obj)
		} else {
			chg.Services = append(chg.Services, ch.obj)
		}
	}
	for _, ch := range c.slices {
		if ch.deleted {
			chg.DeletedSlices = append(chg.DeletedSlices, ch.obj)
		} else {
			chg.Slices = append(chg.Slices, ch.obj)
		}
	}
	for _, ch := range c.secrets {
		if ch.deleted {
			chg.DeletedSecrets = append(chg.DeletedSecrets, ch.obj)
		} else {
			chg.Secrets = append(chg.Secrets, ch.obj)
		}
	}
	other = c.other
	c.ingresses, c.services, c.slices, c.secrets, c.other = nil, nil, nil, nil, false
	return chg, other
}

// recordingHandler records the events of Ingresses, Services, EndpointSlices and Secrets for the
// incremental compile; anything else (or a slice moving to another Service) means a full one.
func (w *Watcher) recordingHandler() cache.ResourceEventHandler {
	on := func(oldObj, obj any, deleted bool) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj, deleted = t.Obj, true
		}
		switch o := obj.(type) {
		case *networkingv1.Ingress:
			record(&w.pending, &w.pending.ingresses, types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, o, deleted)
		case *corev1.Service:
			record(&w.pending, &w.pending.services, types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, o, deleted)
		case *corev1.Secret:
			record(&w.pending, &w.pending.secrets, types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, o, deleted)
		case *discoveryv1.EndpointSlice:
			if old, ok := oldObj.(*discoveryv1.EndpointSlice); ok &&
				old.Labels[discoveryv1.LabelServiceName] != o.Labels[discoveryv1.LabelServiceName] {
				w.pending.setOther()
			}
			record(&w.pending, &w.pending.slices, types.NamespacedName{Namespace: o.Namespace, Name: o.Name}, o, deleted)
		default:
			w.pending.setOther()
		}
		w.kick()
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { on(nil, obj, false) },
		UpdateFunc: func(oldObj, obj any) {
			// A resync or a relist repeats objects unchanged: nothing to rebuild.
			if o, ok := oldObj.(metav1.Object); ok {
				if n, ok := obj.(metav1.Object); ok && o.GetResourceVersion() != "" && o.GetResourceVersion() == n.GetResourceVersion() {
					return
				}
			}
			on(oldObj, obj, false)
		},
		DeleteFunc: func(obj any) { on(nil, obj, true) },
	}
}

// session is the set of informers for one list of watched namespaces.
type session struct {
	namespaces []string
	extra      []string // see l4Namespaces
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
	extra := l4Namespaces(w.cfg)
	s := &session{namespaces: namespaces, extra: extra, stop: make(chan struct{})}
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
	recorded := func(inf cache.SharedIndexInformer) cache.SharedIndexInformer {
		_ = inf.SetTransform(stripForCache)
		_, _ = inf.AddEventHandler(w.recordingHandler())
		return inf
	}
	for _, ns := range nsList {
		f := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns))
		secrets := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeTLS)).String()
			}))
		s.ingresses = append(s.ingresses, recorded(f.Networking().V1().Ingresses().Informer()))
		s.services = append(s.services, recorded(f.Core().V1().Services().Informer()))
		s.slices = append(s.slices, recorded(f.Discovery().V1().EndpointSlices().Informer()))
		// Opaque Secrets hold basic-auth credentials (auth-secret) and client CA bundles
		// (auth-tls-secret); docs/access-control.md says why the proxy reads them.
		opaque := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeOpaque)).String()
			}))
		s.secrets = append(s.secrets, recorded(secrets.Core().V1().Secrets().Informer()),
			recorded(opaque.Core().V1().Secrets().Informer()))
		s.factories = append(s.factories, f, secrets, opaque)
	}
	for _, ns := range extra { // the Services of TCP and UDP listeners outside the watched namespaces
		f := informers.NewSharedInformerFactoryWithOptions(w.client, w.opts.Resync, informers.WithNamespace(ns))
		s.services = append(s.services, recorded(f.Core().V1().Services().Informer()))
		s.slices = append(s.slices, recorded(f.Discovery().V1().EndpointSlices().Informer()))
		s.factories = append(s.factories, f)
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
	changed := !slices.Equal(cfg.WatchNamespaces, w.cfg.WatchNamespaces) || !slices.Equal(l4Namespaces(cfg), l4Namespaces(w.cfg))
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

// compile builds and publishes a table: from the last one when only Ingresses, Services,
// EndpointSlices and Secrets changed (route.Compiler.Update says when it can), else from the informers'
// caches.
func (w *Watcher) compile() {
	start := time.Now()
	chg, other := w.pending.take()
	if !other && reflect.DeepEqual(w.cfg, w.compiled) {
		if t, probs, ok := w.compiler.Update(chg); ok {
			w.publish(t, probs, start, "hosts of the changes")
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
		Access:              w.access,
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

// l4Namespaces are the namespaces of the fleet's TCP and UDP Services its watched namespaces
// do not cover, sorted (none when it watches every namespace): their Services and
// EndpointSlices are watched too (the operator grants the proxy that much there).
func l4Namespaces(cfg proxyconfig.Config) []string {
	if len(cfg.WatchNamespaces) == 0 {
		return nil
	}
	var out []string
	for _, list := range [][]proxyconfig.L4Service{cfg.TCP, cfg.UDP} {
		for _, s := range list {
			if ns := s.Service.Namespace; !slices.Contains(cfg.WatchNamespaces, ns) && !slices.Contains(out, ns) {
				out = append(out, ns)
			}
		}
	}
	slices.Sort(out)
	return out
}
