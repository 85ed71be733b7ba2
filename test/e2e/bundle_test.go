//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/hack/bundle"
)

// The OLM install: what OLM does with a registry+v1 bundle in AllNamespaces mode.
var _ = Describe("Installing from the OLM bundle", Label("bundle"), Ordered, func() {
	const olmNS = "operators"
	const examplesNS = "bundle-examples"
	var csv map[string]any

	It("creates the CRD, the ServiceAccount, the permissions and the Deployment from the CSV", func() {
		var err error
		csv, err = bundle.ReadYAML(filepath.Join("bundle", "manifests", "portico.clusterserviceversion.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: objMeta("", olmNS)}))).To(Succeed())

		crds, _ := filepath.Glob(filepath.Join("bundle", "manifests", "*_*.yaml"))
		for _, p := range crds {
			b, err := os.ReadFile(p)
			Expect(err).NotTo(HaveOccurred())
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal(b, &u.Object)).To(Succeed())
			Expect(k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("olm"), client.ForceOwnership)).To(Succeed())
		}
		install, _, _ := unstructured.NestedMap(csv, "spec", "install", "spec")
		name := "portico.v" + csv["spec"].(map[string]any)["version"].(string)
		for i, p := range install["clusterPermissions"].([]any) {
			perm := p.(map[string]any)
			sa := perm["serviceAccountName"].(string)
			Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: objMeta(olmNS, sa)}))).To(Succeed())
			cr := &rbacv1.ClusterRole{ObjectMeta: objMeta("", name+"-cluster-"+string(rune('a'+i)))}
			Expect(convert(perm["rules"], &cr.Rules)).To(Succeed())
			Expect(k8s.Create(ctx, cr)).To(Succeed())
			Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: objMeta("", cr.Name),
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: olmNS}}})).To(Succeed())
		}
		for i, p := range install["permissions"].([]any) {
			perm := p.(map[string]any)
			sa := perm["serviceAccountName"].(string)
			r := &rbacv1.Role{ObjectMeta: objMeta(olmNS, name+"-"+string(rune('a'+i)))}
			Expect(convert(perm["rules"], &r.Rules)).To(Succeed())
			Expect(k8s.Create(ctx, r)).To(Succeed())
			Expect(k8s.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: objMeta(olmNS, r.Name),
				RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa, Namespace: olmNS}}})).To(Succeed())
		}
		for _, d := range install["deployments"].([]any) {
			dm := d.(map[string]any)
			dep := &appsv1.Deployment{ObjectMeta: objMeta(olmNS, dm["name"].(string))}
			Expect(convert(dm["spec"], &dep.Spec)).To(Succeed())
			Expect(k8s.Create(ctx, dep)).To(Succeed())
			waitAvailable(olmNS, dep.Name, 1)
		}
	})

	It("applies every alm-example, and each fleet becomes Available", func() {
		examples, err := bundle.Examples(csv)
		Expect(err).NotTo(HaveOccurred())
		Expect(examples).To(HaveLen(3))
		Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: objMeta("", examplesNS)}))).To(Succeed())
		for _, e := range examples {
			u := &unstructured.Unstructured{Object: e}
			u.SetNamespace(examplesNS)
			Expect(k8s.Create(ctx, u)).To(Succeed(), u.GetName())
		}
		for _, e := range examples {
			name := e["metadata"].(map[string]any)["name"].(string)
			Eventually(func() bool {
				f := &porticov1alpha1.IngressDeployment{}
				return getObj(f, examplesNS, name) == nil && apimeta.IsStatusConditionTrue(f.Status.Conditions, porticov1alpha1.ConditionAvailable)
			}, 3*time.Minute).Should(BeTrue(), "fleet %s Available", name)
		}
	})

	It("the CSV's RBAC is enough (nothing forbidden in the operator's log) and no broader than the code needs", func() {
		logs, _ := filepath.Glob(filepath.Join(os.Getenv("E2E_STATE_DIR"), "nodes", "*", "pods", olmNS+"_portico-operator-*", "operator.log"))
		Expect(logs).NotTo(BeEmpty())
		for _, l := range logs {
			b, err := os.ReadFile(l)
			Expect(err).NotTo(HaveOccurred())
			Expect(strings.ToLower(string(b))).NotTo(ContainSubstring("forbidden"), l)
		}
		install, _, _ := unstructured.NestedMap(csv, "spec", "install", "spec")
		var rules []rbacv1.PolicyRule
		for _, p := range install["clusterPermissions"].([]any) {
			var rs []rbacv1.PolicyRule
			Expect(convert(p.(map[string]any)["rules"], &rs)).To(Succeed())
			rules = append(rules, rs...)
		}
		generated := &rbacv1.ClusterRole{}
		b, err := os.ReadFile(filepath.Join("config", "rbac", "role.yaml"))
		Expect(err).NotTo(HaveOccurred())
		Expect(yaml.Unmarshal(b, generated)).To(Succeed())
		Expect(rules).To(Equal(generated.Rules), "cluster permissions are exactly the ones the code declares")
		for _, r := range rules {
			for _, list := range [][]string{r.Verbs, r.Resources, r.APIGroups} {
				Expect(list).NotTo(ContainElement("*"))
			}
			Expect(r.Verbs).NotTo(ContainElements("escalate", "bind", "impersonate"))
			if len(r.Resources) > 0 && (r.Resources[0] == "secrets") {
				Expect(r.Verbs).To(ConsistOf("get", "list", "watch"))
			}
		}
	})
})

func convert(in any, out any) error {
	u := map[string]any{"v": in}
	var wrapped struct {
		V runtime.RawExtension `json:"v"`
	}
	b, err := yaml.Marshal(u)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(b, &wrapped); err != nil {
		return err
	}
	return yaml.Unmarshal(wrapped.V.Raw, out)
}
