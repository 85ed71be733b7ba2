package bundle

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Finding is one broken rule.
type Finding struct {
	Rule    string
	Message string
}

func (f Finding) String() string { return f.Rule + ": " + f.Message }

// Allowed values, as the operatorframework suite has them.
var (
	AllowedCategories = []string{"AI/Machine Learning", "Application Runtime", "Big Data", "Cloud Provider", "Database",
		"Developer Tools", "Drivers and plugins", "Integration & Delivery", "Logging & Tracing", "Modernization & Migration",
		"Monitoring", "Networking", "OpenShift Optional", "Security", "Storage", "Streaming & Messaging"}
	AllowedCapabilities = []string{"Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot"}
	AllowedIconTypes    = []string{"image/gif", "image/jpeg", "image/png", "image/svg+xml"}
	InstallModeTypes    = []string{"OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"}
	// RemovedAPIs are group/versions no longer served by Kubernetes 1.31 and later.
	RemovedAPIs = []string{"extensions/v1beta1", "apps/v1beta1", "apps/v1beta2", "apiextensions.k8s.io/v1beta1",
		"rbac.authorization.k8s.io/v1beta1", "policy/v1beta1", "networking.k8s.io/v1beta1", "batch/v1beta1",
		"admissionregistration.k8s.io/v1beta1", "scheduling.k8s.io/v1beta1", "discovery.k8s.io/v1beta1",
		"autoscaling/v2beta1", "autoscaling/v2beta2", "flowcontrol.apiserver.k8s.io/v1beta1",
		"flowcontrol.apiserver.k8s.io/v1beta2", "storage.k8s.io/v1beta1", "coordination.k8s.io/v1beta1"}
	// MaxBundleBytes bounds the manifests (OLM stores them in one ConfigMap).
	MaxBundleBytes = 1 << 20

	semver      = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)
	channelName = regexp.MustCompile(`^(candidate|fast|stable)(-v\d+(\.\d+)?)?$`)
	email       = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
)

// Validate checks a bundle directory and returns every broken rule.
func Validate(dir string) []Finding {
	v := &validator{dir: dir}
	v.run()
	return v.findings
}

type validator struct {
	dir      string
	findings []Finding
	csv      map[string]any
	crds     map[string]*unstructured.Unstructured
}

func (v *validator) fail(rule, format string, args ...any) {
	v.findings = append(v.findings, Finding{Rule: rule, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) run() {
	v.annotations()
	v.manifests()
	if v.csv == nil {
		v.fail("csv-present", "manifests/ holds no ClusterServiceVersion")
		return
	}
	v.requiredFields()
	v.installModes()
	v.ownedCRDs()
	v.examples()
	v.icons()
	v.categories()
	v.resources()
}

func (v *validator) annotations() {
	m, err := ReadYAML(filepath.Join(v.dir, "metadata", "annotations.yaml"))
	if err != nil {
		v.fail("annotations", "%v", err)
		return
	}
	ann, _ := m["annotations"].(map[string]any)
	get := func(k string) string { s, _ := ann[k].(string); return s }
	if get("operators.operatorframework.io.bundle.mediatype.v1") != "registry+v1" {
		v.fail("annotations", "operators.operatorframework.io.bundle.mediatype.v1 must be registry+v1")
	}
	if get("operators.operatorframework.io.bundle.manifests.v1") != "manifests/" || get("operators.operatorframework.io.bundle.metadata.v1") != "metadata/" {
		v.fail("annotations", "manifests and metadata annotations must be manifests/ and metadata/")
	}
	if get("operators.operatorframework.io.bundle.package.v1") == "" {
		v.fail("annotations", "operators.operatorframework.io.bundle.package.v1 is empty")
	}
	channels := strings.Split(get("operators.operatorframework.io.bundle.channels.v1"), ",")
	def := get("operators.operatorframework.io.bundle.channel.default.v1")
	for _, c := range channels {
		if !channelName.MatchString(strings.TrimSpace(c)) {
			v.fail("channel-naming", "channel %q does not follow the naming convention candidate|fast|stable[-vX[.Y]]", c)
		}
	}
	if def != "" && !slices.Contains(channels, def) {
		v.fail("channel-naming", "default channel %q is not one of the channels %v", def, channels)
	}
}

func (v *validator) manifests() {
	v.crds = map[string]*unstructured.Unstructured{}
	paths, _ := filepath.Glob(filepath.Join(v.dir, "manifests", "*"))
	total := 0
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			v.fail("manifests", "%v", err)
			continue
		}
		total += len(b)
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(b, &u.Object); err != nil {
			v.fail("manifests", "%s: %v", filepath.Base(p), err)
			continue
		}
		if slices.Contains(RemovedAPIs, u.GetAPIVersion()) {
			v.fail("deprecated-api", "%s uses %s, which Kubernetes no longer serves", filepath.Base(p), u.GetAPIVersion())
		}
		switch u.GetKind() {
		case "ClusterServiceVersion":
			v.csv = u.Object
		case "CustomResourceDefinition":
			v.crds[u.GetName()] = u
		case "ServiceAccount", "ConfigMap", "Secret", "Service", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
			"PrometheusRule", "ServiceMonitor", "PodDisruptionBudget", "PriorityClass", "VerticalPodAutoscaler", "ConsoleYAMLSample",
			"ConsoleQuickStart", "ConsoleCLIDownload", "ConsoleLink":
		default:
			v.fail("allowed-objects", "%s: kind %s is not allowed in a registry+v1 bundle", filepath.Base(p), u.GetKind())
		}
	}
	if total > MaxBundleBytes {
		v.fail("bundle-size", "manifests total %d bytes, more than %d", total, MaxBundleBytes)
	}
}

func (v *validator) str(path ...string) string {
	s, _, _ := unstructured.NestedString(v.csv, path...)
	return s
}

func (v *validator) requiredFields() {
	for _, f := range [][]string{{"metadata", "name"}, {"spec", "displayName"}, {"spec", "description"}, {"spec", "version"},
		{"spec", "provider", "name"}, {"spec", "minKubeVersion"}, {"spec", "maturity"}} {
		if v.str(f...) == "" {
			v.fail("required-fields", "%s is required", strings.Join(f, "."))
		}
	}
	for _, f := range [][]string{{"spec", "version"}, {"spec", "minKubeVersion"}, {"spec", "replaces"}} {
		s := v.str(f...)
		if f[1] == "replaces" && s != "" {
			_, s, _ = strings.Cut(s, ".v")
		}
		if s != "" && !semver.MatchString(s) {
			v.fail("semver", "%s %q is not a full semantic version (x.y.z)", strings.Join(f, "."), s)
		}
	}
	if name, version := v.str("metadata", "name"), v.str("spec", "version"); name != "" && version != "" && !strings.HasSuffix(name, ".v"+version) {
		v.fail("required-fields", "metadata.name %q must end in .v%s", name, version)
	}
	maint, _, _ := unstructured.NestedSlice(v.csv, "spec", "maintainers")
	if len(maint) == 0 {
		v.fail("required-fields", "spec.maintainers is required")
	}
	for i, m := range maint {
		mm, _ := m.(map[string]any)
		if e, _ := mm["email"].(string); mm["name"] == nil || !email.MatchString(e) {
			v.fail("required-fields", "spec.maintainers[%d] needs a name and a valid email", i)
		}
	}
	if links, _, _ := unstructured.NestedSlice(v.csv, "spec", "links"); len(links) == 0 {
		v.fail("required-fields", "spec.links is required")
	}
	if kw, _, _ := unstructured.NestedSlice(v.csv, "spec", "keywords"); len(kw) == 0 {
		v.fail("required-fields", "spec.keywords is required")
	}
	if v.str("spec", "install", "strategy") != "deployment" {
		v.fail("required-fields", "spec.install.strategy must be deployment")
	}
	if ds, _, _ := unstructured.NestedSlice(v.csv, "spec", "install", "spec", "deployments"); len(ds) == 0 {
		v.fail("required-fields", "spec.install.spec.deployments is empty")
	}
	if imgs, _, _ := unstructured.NestedSlice(v.csv, "spec", "relatedImages"); len(imgs) == 0 {
		v.fail("required-fields", "spec.relatedImages is required (disconnected installs mirror them)")
	}
}

func (v *validator) installModes() {
	modes, _, _ := unstructured.NestedSlice(v.csv, "spec", "installModes")
	seen := map[string]bool{}
	supported := 0
	for _, m := range modes {
		mm, _ := m.(map[string]any)
		t, _ := mm["type"].(string)
		if !slices.Contains(InstallModeTypes, t) {
			v.fail("install-modes", "unknown install mode %q", t)
		}
		if seen[t] {
			v.fail("install-modes", "install mode %s listed twice", t)
		}
		seen[t] = true
		if mm["supported"] == true {
			supported++
		}
	}
	for _, t := range InstallModeTypes {
		if !seen[t] {
			v.fail("install-modes", "install mode %s is missing", t)
		}
	}
	if supported == 0 {
		v.fail("install-modes", "no install mode is supported")
	}
}

func (v *validator) ownedCRDs() {
	owned, _, _ := unstructured.NestedSlice(v.csv, "spec", "customresourcedefinitions", "owned")
	ownedNames := map[string]bool{}
	for i, o := range owned {
		m, _ := o.(map[string]any)
		name, _ := m["name"].(string)
		kind, _ := m["kind"].(string)
		version, _ := m["version"].(string)
		ownedNames[name] = true
		crd := v.crds[name]
		if crd == nil {
			v.fail("owned-crds", "spec.customresourcedefinitions.owned[%d] %s has no CRD in the bundle", i, name)
			continue
		}
		if k, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "kind"); k != kind {
			v.fail("owned-crds", "owned %s: kind %q, the CRD says %q", name, kind, k)
		}
		served := false
		vs, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, x := range vs {
			if xm := x.(map[string]any); xm["name"] == version && xm["served"] == true {
				served = true
			}
		}
		if !served {
			v.fail("owned-crds", "owned %s: version %q is not served by the CRD", name, version)
		}
		if m["displayName"] == nil || m["description"] == nil {
			v.fail("owned-crds", "owned %s needs displayName and description", name)
		}
		if sd, _ := m["specDescriptors"].([]any); len(sd) == 0 {
			v.fail("owned-crds", "owned %s has no specDescriptors", name)
		}
		if sd, _ := m["statusDescriptors"].([]any); len(sd) == 0 {
			v.fail("owned-crds", "owned %s has no statusDescriptors", name)
		}
	}
	for name := range v.crds {
		if !ownedNames[name] {
			v.fail("owned-crds", "CRD %s is in the bundle but not owned by the CSV", name)
		}
	}
}

// Examples returns the CSV's alm-examples.
func Examples(csv map[string]any) ([]map[string]any, error) {
	s, _, _ := unstructured.NestedString(csv, "metadata", "annotations", "alm-examples")
	var out []map[string]any
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("alm-examples is not a JSON array of objects: %w", err)
	}
	return out, nil
}

func (v *validator) examples() {
	ex, err := Examples(v.csv)
	if err != nil {
		v.fail("alm-examples", "%v", err)
		return
	}
	if len(ex) == 0 {
		v.fail("alm-examples", "alm-examples is empty")
	}
	owned, _, _ := unstructured.NestedSlice(v.csv, "spec", "customresourcedefinitions", "owned")
	for i, e := range ex {
		u := &unstructured.Unstructured{Object: e}
		gv := u.GroupVersionKind()
		found := false
		for _, o := range owned {
			m := o.(map[string]any)
			crd := v.crds[fmt.Sprint(m["name"])]
			if crd == nil || m["kind"] != gv.Kind {
				continue
			}
			group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
			if group == gv.Group && m["version"] == gv.Version {
				found = true
			}
		}
		if !found {
			v.fail("alm-examples", "alm-examples[%d] %s is not of an owned kind and version", i, u.GetAPIVersion()+"/"+u.GetKind())
		}
		if slices.Contains(RemovedAPIs, u.GetAPIVersion()) {
			v.fail("deprecated-api", "alm-examples[%d] uses %s", i, u.GetAPIVersion())
		}
	}
}

func (v *validator) icons() {
	icons, _, _ := unstructured.NestedSlice(v.csv, "spec", "icon")
	if len(icons) == 0 {
		v.fail("icon", "spec.icon is required")
	}
	for i, ic := range icons {
		m, _ := ic.(map[string]any)
		mt, _ := m["mediatype"].(string)
		if !slices.Contains(AllowedIconTypes, mt) {
			v.fail("icon", "spec.icon[%d].mediatype %q is not one of %v", i, mt, AllowedIconTypes)
		}
		data, _ := m["base64data"].(string)
		if _, err := base64.StdEncoding.DecodeString(data); err != nil || data == "" {
			v.fail("icon", "spec.icon[%d].base64data is not base64", i)
		}
	}
}

func (v *validator) categories() {
	for _, c := range strings.Split(v.str("metadata", "annotations", "categories"), ",") {
		if c = strings.TrimSpace(c); !slices.Contains(AllowedCategories, c) {
			v.fail("categories", "category %q is not one of the allowed categories", c)
		}
	}
	if c := v.str("metadata", "annotations", "capabilities"); !slices.Contains(AllowedCapabilities, c) {
		v.fail("capabilities", "capabilities %q is not one of %v", c, AllowedCapabilities)
	}
}

// resources: every container of every install Deployment sets cpu and memory requests.
func (v *validator) resources() {
	ds, _, _ := unstructured.NestedSlice(v.csv, "spec", "install", "spec", "deployments")
	for _, d := range ds {
		dm := d.(map[string]any)
		containers, _, _ := unstructured.NestedSlice(dm, "spec", "template", "spec", "containers")
		for _, c := range containers {
			cm := c.(map[string]any)
			req, _, _ := unstructured.NestedMap(cm, "resources", "requests")
			if req["cpu"] == nil || req["memory"] == nil {
				v.fail("resource-requests", "deployment %v container %v sets no cpu and memory requests", dm["name"], cm["name"])
			}
		}
	}
}
