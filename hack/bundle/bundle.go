// Package bundle writes and checks Portico's OLM bundle (registry+v1) without the
// operator-framework modules: Generate assembles the ClusterServiceVersion from the rendered
// config/default and the metadata in config/manifests; Validate applies the registry+v1 rules of
// `operator-sdk bundle validate --select-optional suite=operatorframework`.
package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Package and channel of the bundle.
const (
	PackageName    = "portico"
	DefaultChannel = "candidate"
)

// Input is what a bundle is made of.
type Input struct {
	Version  string                       // semver of this release
	Objects  []*unstructured.Unstructured // `kustomize build config/default`
	BaseCSV  map[string]any               // config/manifests/bases/portico.clusterserviceversion.yaml
	Examples []map[string]any             // config/manifests/examples/*.yaml
}

// ReadObjects decodes a multi-document YAML stream.
func ReadObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var out []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if err == io.EOF {
				return out, nil
			}
			return nil, err
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// ReadYAML reads one YAML document into a map.
func ReadYAML(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// Generate returns the bundle's files, by path relative to the bundle directory.
func Generate(in Input) (map[string][]byte, error) {
	files := map[string][]byte{}
	csv := deepCopy(in.BaseCSV)
	var crds []*unstructured.Unstructured
	var deployments []any
	var sa string
	clusterRoles, roles := map[string][]any{}, map[string][]any{}
	var clusterBindings, bindings []*unstructured.Unstructured
	var image string
	for _, o := range in.Objects {
		switch o.GetKind() {
		case "CustomResourceDefinition":
			crds = append(crds, o)
		case "ServiceAccount":
			sa = o.GetName()
		case "ClusterRole":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			clusterRoles[o.GetName()] = rules
		case "Role":
			rules, _, _ := unstructured.NestedSlice(o.Object, "rules")
			roles[o.GetName()] = rules
		case "ClusterRoleBinding":
			clusterBindings = append(clusterBindings, o)
		case "RoleBinding":
			bindings = append(bindings, o)
		case "Deployment":
			spec, _, _ := unstructured.NestedMap(o.Object, "spec")
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				if img, ok := c.(map[string]any)["image"].(string); ok && image == "" {
					image = img
				}
			}
			deployments = append(deployments, map[string]any{"name": o.GetName(), "label": o.GetLabels(), "spec": spec})
		}
	}
	if sa == "" || len(deployments) == 0 || len(crds) == 0 {
		return nil, fmt.Errorf("bundle: the input needs a ServiceAccount, a Deployment and a CRD (got %d objects)", len(in.Objects))
	}
	perms := func(bs []*unstructured.Unstructured, rules map[string][]any) []any {
		var out []any
		for _, b := range bs {
			name, _, _ := unstructured.NestedString(b.Object, "roleRef", "name")
			if r, ok := rules[name]; ok {
				out = append(out, map[string]any{"serviceAccountName": sa, "rules": r})
			}
		}
		return out
	}
	install := map[string]any{"strategy": "deployment", "spec": map[string]any{
		"deployments":        deployments,
		"clusterPermissions": perms(clusterBindings, clusterRoles),
		"permissions":        perms(bindings, roles),
	}}
	spec := csv["spec"].(map[string]any)
	spec["install"] = install
	spec["version"] = in.Version
	spec["relatedImages"] = []any{map[string]any{"name": "portico", "image": image}}
	meta := csv["metadata"].(map[string]any)
	meta["name"] = PackageName + ".v" + in.Version
	ann := meta["annotations"].(map[string]any)
	ann["containerImage"] = image
	examples, err := json.MarshalIndent(in.Examples, "", "  ")
	if err != nil {
		return nil, err
	}
	ann["alm-examples"] = string(examples)

	owned, _, _ := unstructured.NestedSlice(csv, "spec", "customresourcedefinitions", "owned")
	for _, crd := range crds {
		version := storageVersion(crd)
		for _, o := range owned {
			if m := o.(map[string]any); m["name"] == crd.GetName() {
				m["version"] = version
			}
		}
		group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
		plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
		c := crd.DeepCopy()
		c.SetNamespace("")
		b, err := yaml.Marshal(c.Object)
		if err != nil {
			return nil, err
		}
		files["manifests/"+group+"_"+plural+".yaml"] = b
	}
	_ = unstructured.SetNestedSlice(csv, owned, "spec", "customresourcedefinitions", "owned")
	b, err := yaml.Marshal(csv)
	if err != nil {
		return nil, err
	}
	files["manifests/"+PackageName+".clusterserviceversion.yaml"] = b
	files["metadata/annotations.yaml"] = annotationsYAML()
	files["tests/scorecard/config.yaml"] = scorecardYAML()
	files["bundle.Dockerfile"] = dockerfile()
	return files, nil
}

func storageVersion(crd *unstructured.Unstructured) string {
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	for _, v := range versions {
		if m := v.(map[string]any); m["storage"] == true {
			return m["name"].(string)
		}
	}
	return ""
}

// BundleAnnotations are the registry+v1 annotations, in metadata/annotations.yaml and as labels
// of the bundle image.
func BundleAnnotations() map[string]string {
	return map[string]string{
		"operators.operatorframework.io.bundle.mediatype.v1":       "registry+v1",
		"operators.operatorframework.io.bundle.manifests.v1":       "manifests/",
		"operators.operatorframework.io.bundle.metadata.v1":        "metadata/",
		"operators.operatorframework.io.bundle.package.v1":         PackageName,
		"operators.operatorframework.io.bundle.channels.v1":        DefaultChannel,
		"operators.operatorframework.io.bundle.channel.default.v1": DefaultChannel,
		"operators.operatorframework.io.test.mediatype.v1":         "scorecard+v1",
		"operators.operatorframework.io.test.config.v1":            "tests/scorecard/",
	}
}

func annotationsYAML() []byte {
	b, _ := yaml.Marshal(map[string]any{"annotations": BundleAnnotations()})
	return b
}

func dockerfile() []byte {
	var buf bytes.Buffer
	buf.WriteString("# The bundle image: build from the bundle/ directory (docker build -f bundle.Dockerfile bundle/).\nFROM scratch\n\n")
	keys := make([]string, 0)
	for k := range BundleAnnotations() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&buf, "LABEL %s=%s\n", k, BundleAnnotations()[k])
	}
	buf.WriteString("\nCOPY manifests /manifests/\nCOPY metadata /metadata/\nCOPY tests/scorecard /tests/scorecard/\n")
	return buf.Bytes()
}

func scorecardYAML() []byte {
	tests := []string{"basic-check-spec", "olm-bundle-validation", "olm-crds-have-validation", "olm-crds-have-resources",
		"olm-spec-descriptors", "olm-status-descriptors"}
	var stages []any
	for _, t := range tests {
		suite := "olm"
		if strings.HasPrefix(t, "basic") {
			suite = "basic"
		}
		stages = append(stages, map[string]any{
			"entrypoint": []string{"scorecard-test", t},
			"image":      "quay.io/operator-framework/scorecard-test:v1.39.0",
			"labels":     map[string]string{"suite": suite, "test": t + "-test"},
		})
	}
	b, _ := yaml.Marshal(map[string]any{
		"apiVersion": "scorecard.operatorframework.io/v1alpha3", "kind": "Configuration",
		"metadata": map[string]any{"name": "config"},
		"stages":   []any{map[string]any{"parallel": true, "tests": stages}},
	})
	return b
}

// Write replaces dir's generated content with files.
func Write(dir string, files map[string][]byte) error {
	for _, sub := range []string{"manifests", "metadata", "tests"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func deepCopy(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	out := map[string]any{}
	_ = json.Unmarshal(b, &out)
	return out
}
