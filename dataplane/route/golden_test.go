package route

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	rt "portico.dev/portico/dataplane/route/routetest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// TestPolicyGolden compiles testdata/*.in.yaml (Ingresses, on the Services of baseInput and a
// TLS Secret tls-app for app.example.com and root.example.com) and compares the printed table
// and problems with testdata/*.out.txt (-update rewrites them).
func TestPolicyGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.in.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/*.in.yaml")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in := baseInput()
			// nginx*.in.yaml: Ingresses written for ingress-nginx, on a compatibility fleet.
			in.Config.IngressNginxCompatibility = strings.HasPrefix(filepath.Base(f), "nginx")
			in.Secrets = append(in.Secrets, rt.TLSSecret("ns", "tls-app", "app.example.com", "root.example.com"))
			for i, doc := range bytes.Split(raw, []byte("\n---\n")) {
				if bytes.Contains(doc, []byte("\nkind: Secret\n")) {
					sec := &corev1.Secret{}
					if err := yaml.UnmarshalStrict(doc, sec); err != nil {
						t.Fatalf("document %d: %v", i, err)
					}
					in.Secrets = append(in.Secrets, sec)
					continue
				}
				ing := &networkingv1.Ingress{}
				if err := yaml.UnmarshalStrict(doc, ing); err != nil {
					t.Fatalf("document %d: %v", i, err)
				}
				in.Ingresses = append(in.Ingresses, ing)
			}
			table, probs := Compile(in)
			var b strings.Builder
			b.WriteString(table.Dump())
			b.WriteString("\nproblems:\n")
			for _, p := range probs {
				b.WriteString("- " + p.String() + "\n")
			}
			golden := strings.TrimSuffix(f, ".in.yaml") + ".out.txt"
			if *update {
				if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if b.String() != string(want) {
				t.Errorf("compiled table differs from %s (rerun with -update and check the diff):\n%s", golden, b.String())
			}
		})
	}
}
