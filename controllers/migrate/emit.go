package migrate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// The files --emit writes in its directory.
const (
	FleetFile = "ingressdeployment.yaml"
	ClassFile = "ingressclass.yaml"
)

// Emit returns the files --emit writes, by name: the IngressDeployment and the IngressClass as
// YAML, each after a comment saying where it comes from and what to do before applying it.
// The output is deterministic: the same objects give the same bytes.
func Emit(res *Result) (map[string][]byte, error) {
	rep := res.Report
	var found []string
	for _, r := range []ConfigMapReport{rep.ConfigMap, rep.TCPServices, rep.UDPServices} {
		if r.Found {
			found = append(found, r.Namespace+"/"+r.Name)
		}
	}
	from := "no ingress-nginx ConfigMap was found: every setting is Portico's default, which is ingress-nginx's"
	if len(found) > 0 {
		from = "converted from ingress-nginx's ConfigMaps " + strings.Join(found, ", ") + "; the keys not converted are in the report"
	}
	fleetHead := comment(
		fmt.Sprintf("IngressDeployment written by `portico migrate`, %s.", from),
		"spec.ingressNginxCompatibility reads the Ingresses' nginx.ingress.kubernetes.io/ annotations.",
	)
	classLines := []string{fmt.Sprintf("IngressClass written by `portico migrate`: the class %q, served by the fleet %s/%s.",
		res.Class.Name, res.Fleet.Namespace, res.Fleet.Name)}
	for _, c := range rep.Classes {
		if c.Name == res.Class.Name && c.IngressNginx {
			classLines = append(classLines, fmt.Sprintf("Delete ingress-nginx's IngressClass %q first: an IngressClass's spec.controller cannot change.", c.Name))
		}
	}
	fleet, err := toYAML(res.Fleet)
	if err != nil {
		return nil, err
	}
	class, err := toYAML(res.Class)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		FleetFile: append([]byte(fleetHead), fleet...),
		ClassFile: append([]byte(comment(classLines...)), class...),
	}, nil
}

// WriteEmitted writes Emit's files into dir, creating it.
func WriteEmitted(dir string, files map[string][]byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var paths []string
	for _, name := range []string{FleetFile, ClassFile} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// comment makes YAML comment lines, wrapped.
func comment(lines ...string) string {
	t := &textWriter{}
	for _, l := range lines {
		t.line(0, l)
	}
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(t.b.String(), "\n"), "\n") {
		b.WriteString(strings.TrimRight("# "+strings.TrimLeft(l, " "), " ") + "\n")
	}
	return b.String()
}

// toYAML is an object's YAML without the fields a new object does not carry (status,
// metadata.creationTimestamp), keys sorted.
func toYAML(obj any) ([]byte, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if meta, ok := m["metadata"].(map[string]any); ok {
		delete(meta, "creationTimestamp")
	}
	return yaml.Marshal(m)
}
