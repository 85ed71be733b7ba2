package controllers_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// gitopsManager is the field manager Argo CD and Flux apply with (each has its own).
const gitopsManager = "argocd-controller"

// gitopsObjects reads config/samples/gitops/*/ as they are.
func gitopsObjects() []*unstructured.Unstructured {
	paths, err := filepath.Glob(filepath.Join("..", "config", "samples", "gitops", "*", "*.yaml"))
	Expect(err).NotTo(HaveOccurred())
	sort.Strings(paths) // ingressclass, ingressdeployment, kustomization, namespace
	var nss, rest []*unstructured.Unstructured
	for _, p := range paths {
		if filepath.Base(p) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(p)
		Expect(err).NotTo(HaveOccurred())
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal(b, &u.Object)).To(Succeed())
		if u.GetKind() == "Namespace" {
			nss = append(nss, u)
		} else {
			rest = append(rest, u)
		}
	}
	return append(nss, rest...)
}

// gitopsApply applies every object as Argo CD does: server-side, its own field manager, no force.
func gitopsApply() {
	for _, u := range gitopsObjects() {
		ExpectWithOffset(1, k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(gitopsManager))).
			To(Succeed(), "apply %s %s", u.GetKind(), u.GetName())
	}
}

// gitopsState is, per IngressDeployment and IngressClass of the layout, its spec as stored and
// its resourceVersion. (Namespaces are left out: the operator never touches them, and the API
// server itself rewrites a Namespace on every apply.)
func gitopsState() map[string]string {
	out := map[string]string{}
	for _, u := range gitopsObjects() {
		if u.GetKind() == "Namespace" {
			continue
		}
		live := &unstructured.Unstructured{}
		live.SetGroupVersionKind(u.GroupVersionKind())
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(u), live)).To(Succeed())
		spec, _ := json.Marshal(live.Object["spec"])
		out[u.GetKind()+"/"+u.GetName()] = live.GetResourceVersion() + " " + string(spec)
	}
	return out
}

var _ = Describe("GitOps-managed fleets (config/samples/gitops applied as is)", Ordered, func() {
	fleets := []types.NamespacedName{{Namespace: "gitops-edge", Name: "edge"}, {Namespace: "gitops-public", Name: "public"}}
	settled := func() bool {
		for _, nn := range fleets {
			f := &porticov1alpha1.IngressDeployment{}
			if k8s.Get(ctx, nn, f) != nil || f.Status.ObservedGeneration != f.Generation || len(f.Status.IngressClasses) != 1 {
				return false
			}
		}
		return true
	}

	It("re-applies with no conflict, no diff, no spec change and no write loop", func() {
		gitopsApply()
		Eventually(settled, timeout, interval).Should(BeTrue())
		// Let the operator finish; then nothing may change any more.
		var before map[string]string
		Eventually(func() bool {
			now := gitopsState()
			same := equalMaps(now, before)
			before = now
			return same
		}, timeout, time.Second).Should(BeTrue())
		gitopsApply()
		Expect(gitopsState()).To(Equal(before), "a re-apply of unchanged files must write nothing")
		Consistently(gitopsState, 3*time.Second, 500*time.Millisecond).Should(Equal(before), "no write loop")
		// The operator owns no field of what Git holds.
		for _, nn := range fleets {
			f := &porticov1alpha1.IngressDeployment{}
			Expect(k8s.Get(ctx, nn, f)).To(Succeed())
			for _, mf := range f.ManagedFields {
				if mf.Manager == "portico-operator" && mf.Subresource == "" {
					Expect(mf.FieldsV1.GetRawString()).NotTo(ContainSubstring(`"f:spec"`), "the operator must not own spec fields")
				}
			}
		}
	})

	It("keeps labels and annotations others put on the objects it renders", func() {
		d := &appsv1.Deployment{}
		key := types.NamespacedName{Namespace: "gitops-public", Name: "public-proxy"}
		Expect(k8s.Get(ctx, key, d)).To(Succeed())
		patch := client.MergeFrom(d.DeepCopy())
		d.Labels["cost.example.com/team"] = "edge"
		d.Annotations = map[string]string{"cost.example.com/budget": "100"}
		Expect(k8s.Patch(ctx, d, patch, client.FieldOwner("cost-tool"))).To(Succeed())
		svc := &corev1.Service{}
		Expect(k8s.Get(ctx, key, svc)).To(Succeed())
		spatch := client.MergeFrom(svc.DeepCopy())
		svc.Annotations["cloud.example.com/lb-id"] = "lb-42"
		Expect(k8s.Patch(ctx, svc, spatch, client.FieldOwner("cloud-controller"))).To(Succeed())

		// A change in Git makes the operator re-apply everything.
		f := &porticov1alpha1.IngressDeployment{}
		Expect(k8s.Get(ctx, fleets[1], f)).To(Succeed())
		var u *unstructured.Unstructured
		for _, o := range gitopsObjects() {
			if o.GetKind() == "IngressDeployment" && o.GetName() == "public" {
				u = o
			}
		}
		Expect(u).NotTo(BeNil())
		Expect(unstructured.SetNestedField(u.Object, int64(3), "spec", "replicas")).To(Succeed())
		Expect(k8s.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(gitopsManager))).To(Succeed())
		Eventually(func() int32 {
			Expect(k8s.Get(ctx, key, d)).To(Succeed())
			return *d.Spec.Replicas
		}, timeout, interval).Should(Equal(int32(3)))
		Expect(d.Labels).To(HaveKeyWithValue("cost.example.com/team", "edge"))
		Expect(d.Annotations).To(HaveKeyWithValue("cost.example.com/budget", "100"))
		Expect(k8s.Get(ctx, key, svc)).To(Succeed())
		Expect(svc.Annotations).To(HaveKeyWithValue("cloud.example.com/lb-id", "lb-42"))
		Expect(svc.Annotations).To(HaveKeyWithValue("lb.example.com/idle-timeout", "60"))
		gitopsApply() // back to what Git says
	})

	It("removes a fleet deleted from Git cleanly, and brings it back when it returns", func() {
		f := &porticov1alpha1.IngressDeployment{}
		Expect(k8s.Get(ctx, fleets[0], f)).To(Succeed())
		Expect(k8s.Delete(ctx, f)).To(Succeed())
		Eventually(func() []string { return fleetObjects(f) }, timeout, interval).Should(BeEmpty())
		Eventually(func() error { return k8s.Get(ctx, fleets[0], &porticov1alpha1.IngressDeployment{}) }, timeout, interval).ShouldNot(Succeed())

		gitopsApply()
		Eventually(settled, timeout, interval).Should(BeTrue())
		again := &porticov1alpha1.IngressDeployment{}
		Expect(k8s.Get(ctx, fleets[0], again)).To(Succeed())
		Eventually(func() []string { return fleetObjects(again) }, timeout, interval).Should(Equal(expectedObjects(again, porticov1alpha1.TopologyHostNetwork)))
	})
})
