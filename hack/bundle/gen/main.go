// Command gen writes bundle/ from `kustomize build config/default` (on standard input) and the
// metadata in config/manifests: make bundle.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"portico.dev/portico/hack/bundle"
)

func main() {
	version := flag.String("version", "", "bundle version (semver)")
	manifests := flag.String("manifests", "config/manifests", "CSV base and examples")
	out := flag.String("out", "bundle", "bundle directory")
	flag.Parse()
	if err := run(*version, *manifests, *out); err != nil {
		fmt.Fprintln(os.Stderr, "bundle:", err)
		os.Exit(1)
	}
}

func run(version, manifests, out string) error {
	objs, err := bundle.ReadObjects(os.Stdin)
	if err != nil {
		return err
	}
	base, err := bundle.ReadYAML(filepath.Join(manifests, "bases", "portico.clusterserviceversion.yaml"))
	if err != nil {
		return err
	}
	paths, _ := filepath.Glob(filepath.Join(manifests, "examples", "*.yaml"))
	sort.Strings(paths)
	var examples []map[string]any
	for _, p := range paths {
		e, err := bundle.ReadYAML(p)
		if err != nil {
			return err
		}
		examples = append(examples, e)
	}
	files, err := bundle.Generate(bundle.Input{Version: version, Objects: objs, BaseCSV: base, Examples: examples})
	if err != nil {
		return err
	}
	if err := bundle.Write(out, files); err != nil {
		return err
	}
	if findings := bundle.Validate(out); len(findings) > 0 {
		for _, f := range findings {
			fmt.Fprintln(os.Stderr, "invalid:", f)
		}
		return fmt.Errorf("%d problems in the generated bundle", len(findings))
	}
	return nil
}
