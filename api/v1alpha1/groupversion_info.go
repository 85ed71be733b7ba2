// Package v1alpha1 contains the ingress.portico.dev/v1alpha1 API: the IngressDeployment kind,
// which describes one fleet of Portico ingress proxies.
// +kubebuilder:object:generate=true
// +groupName=ingress.portico.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every kind in this package.
	GroupVersion = schema.GroupVersion{Group: "ingress.portico.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this package with a runtime.Scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this package to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// ControllerName is the value of IngressClass.spec.controller that Portico serves.
const ControllerName = "portico.dev/ingress-controller"
