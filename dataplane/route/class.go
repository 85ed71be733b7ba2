// Package route is the data plane's compile step: Ingresses, IngressClasses, Services,
// EndpointSlices and Secrets in, one immutable *Table out. Nothing here talks to the API server;
// the operator uses the same functions so that the two never disagree.
package route

import (
	"fmt"
	"sort"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/types"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// IsOurs reports whether an IngressClass is served by Portico.
func IsOurs(ic *networkingv1.IngressClass) bool {
	return ic.Spec.Controller == porticov1alpha1.ControllerName
}

// FleetForClass returns the IngressDeployment that an IngressClass of ours points at, or an
// error naming the field that is wrong. It does not check that the IngressDeployment exists.
func FleetForClass(ic *networkingv1.IngressClass) (types.NamespacedName, error) {
	p := ic.Spec.Parameters
	if p == nil {
		return types.NamespacedName{}, fmt.Errorf("spec.parameters is missing: point it at an IngressDeployment (apiGroup %s, kind IngressDeployment, scope Namespace)", porticov1alpha1.GroupVersion.Group)
	}
	if p.APIGroup == nil || *p.APIGroup != porticov1alpha1.GroupVersion.Group {
		got := "<empty>"
		if p.APIGroup != nil {
			got = *p.APIGroup
		}
		return types.NamespacedName{}, fmt.Errorf("spec.parameters.apiGroup is %q, want %q", got, porticov1alpha1.GroupVersion.Group)
	}
	if p.Kind != "IngressDeployment" {
		return types.NamespacedName{}, fmt.Errorf("spec.parameters.kind is %q, want IngressDeployment", p.Kind)
	}
	if p.Scope == nil || *p.Scope != networkingv1.IngressClassParametersReferenceScopeNamespace {
		return types.NamespacedName{}, fmt.Errorf("spec.parameters.scope must be Namespace (with spec.parameters.namespace): IngressDeployment is namespaced")
	}
	if p.Namespace == nil || *p.Namespace == "" {
		return types.NamespacedName{}, fmt.Errorf("spec.parameters.namespace is missing")
	}
	if p.Name == "" {
		return types.NamespacedName{}, fmt.Errorf("spec.parameters.name is missing")
	}
	return types.NamespacedName{Namespace: *p.Namespace, Name: p.Name}, nil
}

// BoundClasses returns the sorted names of the classes of ours whose parameters point at fleet.
func BoundClasses(classes []networkingv1.IngressClass, fleet types.NamespacedName) []string {
	var out []string
	for i := range classes {
		if !IsOurs(&classes[i]) {
			continue
		}
		if nn, err := FleetForClass(&classes[i]); err == nil && nn == fleet {
			out = append(out, classes[i].Name)
		}
	}
	sort.Strings(out)
	return out
}
