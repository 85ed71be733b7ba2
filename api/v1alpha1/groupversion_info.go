// Package v1alpha1 contains the ingress.portico.dev/v1alpha1 API: the IngressDeployment kind,
// which describes one fleet of Portico ingress proxies.
// +kubebuilder:object:generate=true
// +groupName=ingress.portico.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "ingress.portico.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// ControllerName is the value of IngressClass.spec.controller that Portico serves.
const ControllerName = "portico.dev/ingress-controller"

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &IngressDeployment{}, &IngressDeploymentList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
