package migrate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ReadDir reads the Ingresses, IngressClasses and ConfigMaps of every .yaml, .yml and .json
// file under dir (recursively, in lexical order): multi-document YAML, JSON, and List objects
// (kubectl get -o yaml) are taken; other kinds are ignored. A namespaced object without a
// namespace is in "default", as kubectl would create it there without a context namespace.
func ReadDir(dir string) (*Objects, error) {
	objs := &Objects{Source: Source{Kind: "files", Location: dir}}
	seen := map[string]string{} // kind/namespace/name -> file
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel == "." {
			rel = filepath.Base(path)
		}
		objs.addDocuments(filepath.ToSlash(rel), data, seen)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(seen) == 0 {
		objs.Notes = append(objs.Notes, fmt.Sprintf("no Ingress, IngressClass or ConfigMap found under %s", dir))
	}
	return objs, nil
}

// addDocuments decodes each document of a file. A document that does not decode (a Helm
// template, a typo) is skipped with a note, and so is the rest of the file, whose document
// boundaries can no longer be trusted.
func (o *Objects) addDocuments(file string, data []byte, seen map[string]string) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for doc := 1; ; doc++ {
		var u map[string]any
		if err := dec.Decode(&u); err != nil {
			if !errors.Is(err, io.EOF) {
				o.Notes = append(o.Notes, fmt.Sprintf("%s: document %d and the rest of the file skipped: %v", file, doc, err))
			}
			return
		}
		if u == nil {
			continue
		}
		if err := o.addObject(file, u, seen); err != nil {
			o.Notes = append(o.Notes, fmt.Sprintf("%s: document %d skipped: %v", file, doc, err))
		}
	}
}

func (o *Objects) addObject(file string, u map[string]any, seen map[string]string) error {
	apiVersion, _ := u["apiVersion"].(string)
	kind, _ := u["kind"].(string)
	if items, ok := u["items"].([]any); ok && strings.HasSuffix(kind, "List") {
		for _, it := range items {
			if m, ok := it.(map[string]any); ok {
				if err := o.addObject(file, m, seen); err != nil {
					return err
				}
			}
		}
		return nil
	}
	meta, _ := u["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	namespace, _ := meta["namespace"].(string)
	switch kind {
	case "Ingress", "IngressClass":
		if apiVersion != networkingv1.SchemeGroupVersion.String() {
			o.Notes = append(o.Notes, fmt.Sprintf("%s: %s %q of %s skipped: only %s is read", file, kind, name, apiVersion, networkingv1.SchemeGroupVersion))
			return nil
		}
	case "ConfigMap":
		if apiVersion != "v1" {
			return nil
		}
	default:
		return nil
	}
	if namespace == "" && kind != "IngressClass" {
		namespace = metav1.NamespaceDefault
	}
	id := kind + " " + types.NamespacedName{Namespace: namespace, Name: name}.String()
	if kind == "IngressClass" {
		id = kind + " " + name
	}
	if prev, dup := seen[id]; dup {
		o.Notes = append(o.Notes, fmt.Sprintf("%s: %s skipped: it is in %s already", file, id, prev))
		return nil
	}
	conv := runtime.DefaultUnstructuredConverter
	switch kind {
	case "Ingress":
		var ing networkingv1.Ingress
		if err := conv.FromUnstructured(u, &ing); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		ing.Namespace = namespace
		o.Ingresses = append(o.Ingresses, ing)
	case "IngressClass":
		var ic networkingv1.IngressClass
		if err := conv.FromUnstructured(u, &ic); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		o.Classes = append(o.Classes, ic)
	case "ConfigMap":
		o.stringData(file, id, u)
		var cm corev1.ConfigMap
		if err := conv.FromUnstructured(u, &cm); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
		cm.Namespace = namespace
		o.ConfigMaps = append(o.ConfigMaps, cm)
	}
	seen[id] = file
	return nil
}

// stringData turns values of a ConfigMap's data that YAML read as numbers or booleans (an
// unquoted 8080 or true) into the strings they were written as, with a note: the API server
// would refuse them.
func (o *Objects) stringData(file, id string, u map[string]any) {
	data, _ := u["data"].(map[string]any)
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var s string
		switch v := data[k].(type) {
		case string:
			continue
		case float64:
			s = strconv.FormatFloat(v, 'f', -1, 64)
		case int64:
			s = strconv.FormatInt(v, 10)
		case bool:
			s = strconv.FormatBool(v)
		default:
			continue
		}
		data[k] = s
		o.Notes = append(o.Notes, fmt.Sprintf("%s: %s: data %q is not a string (the API server refuses it); read as %q", file, id, k, s))
	}
}

// ConfigMapNames are ingress-nginx's ConfigMaps that ReadCluster reads.
type ConfigMapNames []types.NamespacedName

// ReadCluster reads every Ingress and IngressClass of a cluster and the ConfigMaps named (a
// ConfigMap that does not exist is left out). It only lists and gets: cfg is used through
// ReadOnly, which refuses any other request before it is sent.
func ReadCluster(ctx context.Context, cfg *rest.Config, cms ConfigMapNames) (*Objects, error) {
	cs, err := kubernetes.NewForConfig(ReadOnly(cfg))
	if err != nil {
		return nil, err
	}
	objs := &Objects{Source: Source{Kind: "cluster", Location: cfg.Host}}
	opts := metav1.ListOptions{Limit: 500}
	for {
		l, err := cs.NetworkingV1().Ingresses(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list Ingresses: %w", err)
		}
		objs.Ingresses = append(objs.Ingresses, l.Items...)
		if opts.Continue = l.Continue; opts.Continue == "" {
			break
		}
	}
	ics, err := cs.NetworkingV1().IngressClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list IngressClasses: %w", err)
	}
	objs.Classes = ics.Items
	for _, nn := range cms {
		cm, err := cs.CoreV1().ConfigMaps(nn.Namespace).Get(ctx, nn.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			continue
		case err != nil:
			return nil, fmt.Errorf("get ConfigMap %s: %w", nn, err)
		}
		objs.ConfigMaps = append(objs.ConfigMaps, *cm)
	}
	sort.Slice(objs.ConfigMaps, func(i, j int) bool { return objs.ConfigMaps[i].Name < objs.ConfigMaps[j].Name })
	return objs, nil
}

// ReadOnly returns a copy of cfg whose requests are refused, before they are sent, unless
// their method is GET or HEAD: `portico migrate` never writes to a cluster.
func ReadOnly(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	prev := c.WrapTransport
	c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if prev != nil {
			rt = prev(rt)
		}
		return readOnlyTransport{rt}
	}
	return c
}

type readOnlyTransport struct{ next http.RoundTripper }

func (t readOnlyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("portico migrate is read-only: refusing %s %s", req.Method, req.URL.Path)
	}
	return t.next.RoundTrip(req)
}
