package migrate

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/test/testnet"
)

// Against a real kube-apiserver with the CRD: the fixture's objects, read from the cluster,
// give the report the files give; the emitted IngressDeployment of every topology passes the
// CRD's schema and CEL rules; and the reader cannot write.
func TestAgainstAPIServer(t *testing.T) {
	testnet.RequireControlPlane(t)
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	testnet.ConfigureAPIServer(func(k, v string) { env.ControlPlane.GetAPIServer().Configure().Set(k, v) })
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(porticov1alpha1.AddToScheme(scheme))
	k8s, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// The fixture's objects, created as they are in the files.
	objs, err := ReadDir(fixture)
	if err != nil {
		t.Fatal(err)
	}
	namespaces := map[string]bool{"ingress": true}
	var create []client.Object
	for i := range objs.Ingresses {
		namespaces[objs.Ingresses[i].Namespace] = true
		create = append(create, &objs.Ingresses[i])
	}
	for i := range objs.ConfigMaps {
		namespaces[objs.ConfigMaps[i].Namespace] = true
		create = append(create, &objs.ConfigMaps[i])
	}
	for i := range objs.Classes {
		create = append(create, &objs.Classes[i])
	}
	for ns := range namespaces {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	for _, o := range create {
		o = o.DeepCopyObject().(client.Object)
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatalf("create %s: %v", o.GetName(), err)
		}
	}

	// The same report from the cluster as from the files, but for where it came from and the
	// notes about files.
	opts := testOptions()
	opts.MatchConfigMapsByName = false
	fromCluster, err := ReadCluster(ctx, cfg, ConfigMapNames{opts.ConfigMap, opts.TCPServices, opts.UDPServices})
	if err != nil {
		t.Fatal(err)
	}
	got := Analyze(fromCluster, opts).Report
	want := Analyze(objs, testOptions()).Report
	if got.Source.Kind != "cluster" || got.Source.Location != cfg.Host {
		t.Errorf("source %+v", got.Source)
	}
	for _, r := range []*Report{got, want} {
		r.Source = Source{}
		var notes []string
		for _, n := range r.Notes {
			if !strings.Contains(n, ".yaml:") {
				notes = append(notes, n)
			}
		}
		r.Notes = notes
	}
	if a, b := mustJSON(got), mustJSON(want); !bytes.Equal(a, b) {
		t.Errorf("the cluster's report differs from the files':\n%s", firstDiff(b, a))
	}

	// The emitted objects of every topology are accepted: the schema, the CEL rules of
	// spec.tcp, spec.udp, spec.http and spec.clientAddress.
	for _, topo := range []string{"LoadBalancer", "NodePort", "HostNetwork"} {
		dir := t.TempDir()
		name := strings.ToLower(topo)
		run(t, "-f", fixture, "--emit", dir, "--topology", topo, "--fleet-name", name, "--class-name", "portico-"+name)
		for file, obj := range map[string]client.Object{FleetFile: &porticov1alpha1.IngressDeployment{}, ClassFile: &networkingv1.IngressClass{}} {
			b, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			if err := yaml.UnmarshalStrict(b, obj); err != nil {
				t.Fatal(err)
			}
			if err := k8s.Create(ctx, obj); err != nil {
				t.Errorf("%s, topology %s: the API server refuses it: %v", file, topo, err)
			}
		}
	}

	// Read-only: any request but GET and HEAD is refused before it is sent.
	ro, err := client.New(ReadOnly(cfg), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "written", Namespace: "default"}}
	if err := ro.Create(ctx, cm); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("create through ReadOnly: %v", err)
	}
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("the ConfigMap exists after a refused create: %v", err)
	}
	if err := ro.Delete(ctx, &objs.ConfigMaps[0]); err == nil {
		t.Errorf("delete through ReadOnly succeeded")
	}
	var l corev1.ConfigMapList
	if err := ro.List(ctx, &l, client.InNamespace("ingress-nginx")); err != nil || len(l.Items) == 0 {
		t.Errorf("list through ReadOnly: %d, %v", len(l.Items), err)
	}
}
