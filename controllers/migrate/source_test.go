package migrate

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ReadOnly refuses every request but GET and HEAD before it leaves the process.
func TestReadOnlyTransport(t *testing.T) {
	var mu sync.Mutex
	var methods []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		methods = append(methods, r.Method)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"ConfigMapList","apiVersion":"v1","items":[]}`))
	}))
	defer srv.Close()
	cs, err := kubernetes.NewForConfig(ReadOnly(&rest.Config{Host: srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cms := cs.CoreV1().ConfigMaps("default")
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}
	if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("create: %v", err)
	}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err == nil {
		t.Errorf("update succeeded")
	}
	if err := cms.Delete(ctx, "x", metav1.DeleteOptions{}); err == nil {
		t.Errorf("delete succeeded")
	}
	if _, err := cms.Patch(ctx, "x", "application/merge-patch+json", []byte(`{}`), metav1.PatchOptions{}); err == nil {
		t.Errorf("patch succeeded")
	}
	if _, err := cms.List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("list: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(methods, ",") != "GET" {
		t.Errorf("the server saw %v, want one GET", methods)
	}
}

// Files: a document that does not decode, a duplicate, numbers and booleans in a ConfigMap's
// data, an object without a namespace, and a single file instead of a directory.
func TestReadDirEdgeCases(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.yaml", `apiVersion: v1
kind: ConfigMap
metadata: {name: tcp-services}
data:
  5432: db/postgres:5432
  use: true
  ratio: 1.5
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, namespace: x}
`)
	write("b.yml", `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: a, namespace: x}
spec: {ingressClassName: other}
`)
	write("helm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n")
	write("bad.json", `{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "b"}, "spec": {"rules": "nope"}}`)
	write("notes.txt", "kind: Ingress")

	objs, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs.Ingresses) != 1 || objs.Ingresses[0].Spec.IngressClassName != nil {
		t.Errorf("Ingresses %+v: want the first x/a only", objs.Ingresses)
	}
	if len(objs.ConfigMaps) != 1 || objs.ConfigMaps[0].Namespace != "default" {
		t.Fatalf("ConfigMaps %+v", objs.ConfigMaps)
	}
	if d := objs.ConfigMaps[0].Data; d["5432"] != "db/postgres:5432" || d["use"] != "true" || d["ratio"] != "1.5" {
		t.Errorf("data %v", d)
	}
	notes := strings.Join(objs.Notes, "\n")
	for _, want := range []string{
		`a.yaml: ConfigMap default/tcp-services: data "ratio" is not a string`,
		`a.yaml: ConfigMap default/tcp-services: data "use" is not a string`,
		"b.yml: Ingress x/a skipped: it is in a.yaml already",
		"bad.json: document 1 skipped: Ingress default/b",
		"helm.yaml: document 1 and the rest of the file skipped",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}
	if strings.Contains(notes, "notes.txt") {
		t.Errorf("a .txt file was read")
	}

	one, err := ReadDir(filepath.Join(dir, "b.yml"))
	if err != nil || len(one.Ingresses) != 1 {
		t.Errorf("a single file: %v, %+v", err, one)
	}
	if _, err := ReadDir(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("a missing directory reads")
	}
}
