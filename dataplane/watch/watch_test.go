package watch

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
)

func meta(ns, name, rv string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: rv}
}

func slice(name, service, rv string) *discoveryv1.EndpointSlice {
	m := meta("ns", name, rv)
	m.Labels = map[string]string{discoveryv1.LabelServiceName: service}
	return &discoveryv1.EndpointSlice{ObjectMeta: m}
}

// TestRecordingHandler: the events an incremental compile needs are gathered per object, the
// last state winning (deletes as deleted, tombstones included); resyncs of unchanged objects
// are ignored; anything else, or a slice moving to another Service, asks for a full compile;
// take hands them over once.
func TestRecordingHandler(t *testing.T) {
	w := New(nil, nil, Options{}, logr.Discard())
	h := w.recordingHandler()
	ing1 := &networkingv1.Ingress{ObjectMeta: meta("ns", "a", "1")}
	ing2 := &networkingv1.Ingress{ObjectMeta: meta("ns", "a", "2")}
	svc := &corev1.Service{ObjectMeta: meta("ns", "s", "1")}
	sec := &corev1.Secret{ObjectMeta: meta("ns", "tls", "1")}

	h.OnAdd(ing1, false)
	h.OnUpdate(ing1, ing2)
	h.OnUpdate(ing2, ing2) // a resync: the same resourceVersion
	h.OnAdd(svc, false)
	h.OnDelete(cache.DeletedFinalStateUnknown{Key: "ns/tls", Obj: sec})
	h.OnAdd(slice("s-1", "s", "1"), false)
	select {
	case <-w.trigger:
	default:
		t.Fatal("events did not trigger a compile")
	}

	chg, other := w.pending.take()
	if other {
		t.Error("a full compile asked for by Ingress, Service, Secret and slice events")
	}
	if len(chg.Ingresses) != 1 || chg.Ingresses[0] != ing2 || len(chg.DeletedIngresses) != 0 {
		t.Errorf("Ingresses: %+v deleted %v, want the last state only", chg.Ingresses, chg.DeletedIngresses)
	}
	if len(chg.Services) != 1 || len(chg.DeletedSecrets) != 1 || chg.DeletedSecrets[0] != sec || len(chg.Slices) != 1 {
		t.Errorf("changes: %+v", chg)
	}
	if chg, other := w.pending.take(); other || len(chg.Ingresses)+len(chg.Services)+len(chg.Slices)+len(chg.DeletedSecrets) != 0 {
		t.Errorf("take did not clear: %+v %v", chg, other)
	}

	h.OnDelete(ing2)
	if chg, _ := w.pending.take(); len(chg.DeletedIngresses) != 1 || chg.DeletedIngresses[0] != (types.NamespacedName{Namespace: "ns", Name: "a"}) {
		t.Errorf("a deleted Ingress: %+v", chg)
	}

	h.OnUpdate(slice("s-1", "s", "1"), slice("s-1", "t", "2"))
	if _, other := w.pending.take(); !other {
		t.Error("a slice that moved to another Service did not ask for a full compile")
	}
	h.OnAdd(&networkingv1.IngressClass{ObjectMeta: meta("", "c", "1")}, false)
	if _, other := w.pending.take(); !other {
		t.Error("an IngressClass event did not ask for a full compile")
	}
}

// TestStripForCache: what the proxy never reads is dropped before objects are cached; what it
// reads (Ingress and IngressClass annotations carry settings) stays.
func TestStripForCache(t *testing.T) {
	mf := []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}
	ann := map[string]string{corev1.LastAppliedConfigAnnotation: "{}", "portico.dev/affinity": "cookie"}
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{ManagedFields: mf, Annotations: map[string]string{}}}
	for k, v := range ann {
		ing.Annotations[k] = v
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{ManagedFields: mf, Annotations: map[string]string{"a": "b"}}}
	for _, o := range []any{ing, svc} {
		if _, err := stripForCache(o); err != nil {
			t.Fatal(err)
		}
	}
	if ing.ManagedFields != nil || ing.Annotations[corev1.LastAppliedConfigAnnotation] != "" || ing.Annotations["portico.dev/affinity"] != "cookie" {
		t.Errorf("Ingress: %+v", ing.ObjectMeta)
	}
	if svc.ManagedFields != nil || svc.Annotations != nil {
		t.Errorf("Service: %+v", svc.ObjectMeta)
	}
}

// TestDebounce: a burst of events is compiled once, after the hold-off, and a steady stream is
// compiled at least every MaxDelay.
func TestDebounce(t *testing.T) {
	w := New(nil, nil, Options{Holdoff: 20 * time.Millisecond, MaxDelay: 100 * time.Millisecond}, logr.Discard())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.kick()
	start := time.Now()
	if !w.debounce(ctx) {
		t.Fatal("debounce ended")
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 90*time.Millisecond {
		t.Errorf("one event compiled after %v, want the 20ms hold-off", d)
	}
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				w.kick()
			}
		}
	}()
	defer close(stop)
	start = time.Now()
	if !w.debounce(ctx) {
		t.Fatal("debounce ended")
	}
	if d := time.Since(start); d > 180*time.Millisecond {
		t.Errorf("a steady stream of events waited %v, want at most about MaxDelay (100ms)", d)
	}
	cancel()
	if w.debounce(ctx) {
		t.Error("debounce went on after the context ended")
	}
}
