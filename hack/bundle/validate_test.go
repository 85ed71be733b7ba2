package bundle_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"portico.dev/portico/hack/bundle"
	"portico.dev/portico/test/testnet"
)

const repoBundle = "../../bundle"

// copyBundle copies the committed bundle into a temporary directory.
func copyBundle(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(repoBundle, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(repoBundle, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func editYAML(t *testing.T, path string, edit func(m map[string]any)) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, _ := yaml.Marshal(m)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestCommittedBundleIsValid(t *testing.T) {
	if f := bundle.Validate(repoBundle); len(f) != 0 {
		t.Fatalf("bundle/ is invalid: %v", f)
	}
}

// Each rule has a fixture (a one-line mutation of the valid bundle) that proves it bites.
func TestEachRuleBites(t *testing.T) {
	csv := func(edit func(u *unstructured.Unstructured)) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			editYAML(t, filepath.Join(dir, "manifests", "portico.clusterserviceversion.yaml"), func(m map[string]any) {
				edit(&unstructured.Unstructured{Object: m})
			})
		}
	}
	annotations := func(k, v string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			editYAML(t, filepath.Join(dir, "metadata", "annotations.yaml"), func(m map[string]any) {
				m["annotations"].(map[string]any)[k] = v
			})
		}
	}
	for _, tc := range []struct {
		rule, want string
		mutate     func(t *testing.T, dir string)
	}{
		{"required-fields", "spec.displayName is required", csv(func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "displayName") })},
		{"required-fields", "spec.maintainers[0] needs a name and a valid email", csv(func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{"name": "x", "email": "nope"}}, "spec", "maintainers")
		})},
		{"required-fields", "spec.relatedImages is required", csv(func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "relatedImages") })},
		{"semver", `spec.minKubeVersion "1.31" is not a full semantic version`, csv(func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "1.31", "spec", "minKubeVersion")
		})},
		{"semver", `spec.version "v0.1" is not a full semantic version`, csv(func(u *unstructured.Unstructured) {
			_ = unstructured.SetNestedField(u.Object, "v0.1", "spec", "version")
		})},
		{"install-modes", "install mode MultiNamespace is missing", csv(func(u *unstructured.Unstructured) {
			modes, _, _ := unstructured.NestedSlice(u.Object, "spec", "installModes")
			_ = unstructured.SetNestedSlice(u.Object, append(modes[:2:2], modes[3]), "spec", "installModes")
		})},
		{"install-modes", "no install mode is supported", csv(func(u *unstructured.Unstructured) {
			modes, _, _ := unstructured.NestedSlice(u.Object, "spec", "installModes")
			for _, m := range modes {
				m.(map[string]any)["supported"] = false
			}
			_ = unstructured.SetNestedSlice(u.Object, modes, "spec", "installModes")
		})},
		{"owned-crds", "has no CRD in the bundle", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "manifests", "ingress.portico.dev_ingressdeployments.yaml")); err != nil {
				t.Fatal(err)
			}
		}},
		{"owned-crds", `version "v9" is not served by the CRD`, csv(func(u *unstructured.Unstructured) {
			owned, _, _ := unstructured.NestedSlice(u.Object, "spec", "customresourcedefinitions", "owned")
			owned[0].(map[string]any)["version"] = "v9"
			_ = unstructured.SetNestedSlice(u.Object, owned, "spec", "customresourcedefinitions", "owned")
		})},
		{"alm-examples", "is not of an owned kind and version", csv(func(u *unstructured.Unstructured) {
			u.GetAnnotations()
			a := u.GetAnnotations()
			a["alm-examples"] = `[{"apiVersion":"ingress.portico.dev/v1alpha1","kind":"Gateway","metadata":{"name":"x"}}]`
			u.SetAnnotations(a)
		})},
		{"alm-examples", "is not a JSON array", csv(func(u *unstructured.Unstructured) {
			a := u.GetAnnotations()
			a["alm-examples"] = "{"
			u.SetAnnotations(a)
		})},
		{"icon", `mediatype "image/bmp" is not one of`, csv(func(u *unstructured.Unstructured) {
			icons, _, _ := unstructured.NestedSlice(u.Object, "spec", "icon")
			icons[0].(map[string]any)["mediatype"] = "image/bmp"
			_ = unstructured.SetNestedSlice(u.Object, icons, "spec", "icon")
		})},
		{"categories", `category "Ingress" is not one of the allowed categories`, csv(func(u *unstructured.Unstructured) {
			a := u.GetAnnotations()
			a["categories"] = "Networking,Ingress"
			u.SetAnnotations(a)
		})},
		{"capabilities", `capabilities "Magic" is not one of`, csv(func(u *unstructured.Unstructured) {
			a := u.GetAnnotations()
			a["capabilities"] = "Magic"
			u.SetAnnotations(a)
		})},
		{"channel-naming", `channel "beta" does not follow the naming convention`, annotations("operators.operatorframework.io.bundle.channels.v1", "beta")},
		{"channel-naming", `default channel "stable" is not one of the channels`, annotations("operators.operatorframework.io.bundle.channel.default.v1", "stable")},
		{"annotations", "mediatype.v1 must be registry+v1", annotations("operators.operatorframework.io.bundle.mediatype.v1", "plain+v0")},
		{"deprecated-api", "uses apiextensions.k8s.io/v1beta1", func(t *testing.T, dir string) {
			editYAML(t, filepath.Join(dir, "manifests", "ingress.portico.dev_ingressdeployments.yaml"), func(m map[string]any) {
				m["apiVersion"] = "apiextensions.k8s.io/v1beta1"
			})
		}},
		{"resource-requests", "sets no cpu and memory requests", csv(func(u *unstructured.Unstructured) {
			ds, _, _ := unstructured.NestedSlice(u.Object, "spec", "install", "spec", "deployments")
			containers, _, _ := unstructured.NestedSlice(ds[0].(map[string]any), "spec", "template", "spec", "containers")
			delete(containers[0].(map[string]any), "resources")
			_ = unstructured.SetNestedSlice(ds[0].(map[string]any), containers, "spec", "template", "spec", "containers")
			_ = unstructured.SetNestedSlice(u.Object, ds, "spec", "install", "spec", "deployments")
		})},
		{"allowed-objects", "kind Deployment is not allowed", func(t *testing.T, dir string) {
			_ = os.WriteFile(filepath.Join(dir, "manifests", "extra.yaml"), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"), 0o644)
		}},
		{"bundle-size", "more than", func(t *testing.T, dir string) {
			pad := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata: {x: \"" + strings.Repeat("a", bundle.MaxBundleBytes) + "\"}\n"
			_ = os.WriteFile(filepath.Join(dir, "manifests", "big.yaml"), []byte(pad), 0o644)
		}},
	} {
		t.Run(tc.rule+"/"+tc.want, func(t *testing.T) {
			dir := copyBundle(t)
			tc.mutate(t, dir)
			findings := bundle.Validate(dir)
			for _, f := range findings {
				if f.Rule == tc.rule && strings.Contains(f.Message, tc.want) {
					return
				}
			}
			t.Errorf("want a %s finding containing %q, got %v", tc.rule, tc.want, findings)
		})
	}
}

// TestExamplesAcceptedByTheCRD creates the bundle's CRD on a real API server and creates every
// alm-example (dry run), so the schema and its CEL rules judge them.
func TestExamplesAcceptedByTheCRD(t *testing.T) {
	testnet.RequireControlPlane(t)
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(repoBundle, "manifests", "ingress.portico.dev_ingressdeployments.yaml")}, ErrorIfCRDPathMissing: true}
	testnet.ConfigureAPIServer(func(k, v string) { env.ControlPlane.GetAPIServer().Configure().Set(k, v) })
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = env.Stop() }()
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	csv, err := bundle.ReadYAML(filepath.Join(repoBundle, "manifests", "portico.clusterserviceversion.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	examples, err := bundle.Examples(csv)
	if err != nil || len(examples) != 3 {
		t.Fatalf("alm-examples: %v (%d)", err, len(examples))
	}
	for _, e := range examples {
		u := &unstructured.Unstructured{Object: e}
		u.SetNamespace("default")
		if err := c.Create(context.Background(), u, client.DryRunAll); err != nil {
			t.Errorf("alm-example %s rejected: %v", u.GetName(), err)
		}
	}
	// The check bites: an example the CEL rules reject.
	bad := &unstructured.Unstructured{Object: examples[0]}
	bad.SetNamespace("default")
	_ = unstructured.SetNestedField(bad.Object, int64(2), "spec", "replicas")
	if err := c.Create(context.Background(), bad, client.DryRunAll); err == nil || !strings.Contains(err.Error(), "spec.replicas") {
		t.Errorf("a HostNetwork example with replicas must be rejected, got %v", err)
	}
}
