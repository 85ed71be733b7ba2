// Package routetest builds the Kubernetes objects route tests compile: small constructors with
// the defaults tests want. It builds objects only and imports nothing of the data plane.
package routetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
)

// T0 is the creation time of an Ingress of age 0.
var T0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Path types.
const (
	Prefix                 = networkingv1.PathTypePrefix
	Exact                  = networkingv1.PathTypeExact
	ImplementationSpecific = networkingv1.PathTypeImplementationSpecific
)

// Class is an IngressClass of Portico's pointing at fleet fleetNS/fleetName.
func Class(name, fleetNS, fleetName string, isDefault bool) *networkingv1.IngressClass {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.IngressClassSpec{
		Controller: "portico.dev/ingress-controller",
		Parameters: &networkingv1.IngressClassParametersReference{APIGroup: ptr.To("ingress.portico.dev"), Kind: "IngressDeployment",
			Name: fleetName, Scope: ptr.To("Namespace"), Namespace: ptr.To(fleetNS)},
	}}
	if isDefault {
		c.Annotations = map[string]string{"ingressclass.kubernetes.io/is-default-class": "true"}
	}
	return c
}

// IngressOpt changes an Ingress under construction.
type IngressOpt func(*networkingv1.Ingress)

// Ingress of class "portico", created age seconds after T0.
func Ingress(ns, name string, age int, opts ...IngressOpt) *networkingv1.Ingress {
	i := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name),
		CreationTimestamp: metav1.NewTime(T0.Add(time.Duration(age) * time.Second))},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr.To("portico")}}
	for _, o := range opts {
		o(i)
	}
	return i
}

// Rule adds a path of a host going to svc:port (a port number).
func Rule(host, path string, pt networkingv1.PathType, svc string, port int32) IngressOpt {
	return RuleTo(host, path, pt, networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
		Name: svc, Port: networkingv1.ServiceBackendPort{Number: port}}})
}

// RuleTo adds a path of a host going to any backend.
func RuleTo(host, path string, pt networkingv1.PathType, b networkingv1.IngressBackend) IngressOpt {
	return func(i *networkingv1.Ingress) {
		hp := networkingv1.HTTPIngressPath{Path: path, PathType: &pt, Backend: b}
		for k := range i.Spec.Rules {
			if i.Spec.Rules[k].Host == host {
				i.Spec.Rules[k].HTTP.Paths = append(i.Spec.Rules[k].HTTP.Paths, hp)
				return
			}
		}
		i.Spec.Rules = append(i.Spec.Rules, networkingv1.IngressRule{Host: host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{hp}}}})
	}
}

// DefaultBackend sets spec.defaultBackend to svc:port.
func DefaultBackend(svc string, port int32) IngressOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.DefaultBackend = &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc, Port: networkingv1.ServiceBackendPort{Number: port}}}
	}
}

// ClassOf sets spec.ingressClassName (nil for none) and the legacy annotation (if not empty).
func ClassOf(name *string, annotation string) IngressOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.IngressClassName = name
		if annotation != "" {
			Annotation("kubernetes.io/ingress.class", annotation)(i)
		}
	}
}

// Annotation sets an annotation.
func Annotation(k, v string) IngressOpt {
	return func(i *networkingv1.Ingress) {
		if i.Annotations == nil {
			i.Annotations = map[string]string{}
		}
		i.Annotations[k] = v
	}
}

// TLS adds a spec.tls entry.
func TLS(secret string, hosts ...string) IngressOpt {
	return func(i *networkingv1.Ingress) {
		i.Spec.TLS = append(i.Spec.TLS, networkingv1.IngressTLS{Hosts: hosts, SecretName: secret})
	}
}

// Service with the given ports, or one port "http" 80.
func Service(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80}}
	}
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

// EndpointState is the condition of the endpoints of a Slice.
type EndpointState int

// Endpoint states.
const (
	Ready EndpointState = iota
	TerminatingServing
	NotReady
)

// Slice is an EndpointSlice of svc with one port and addresses in one state.
func Slice(ns, svc, portName string, port int32, state EndpointState, addrs ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: svc + "-" + addrs[0],
		Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}}}
	for _, a := range addrs {
		c := discoveryv1.EndpointConditions{Ready: ptr.To(true)}
		switch state {
		case TerminatingServing:
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(true), Terminating: ptr.To(true)}
		case NotReady:
			c = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false)}
		}
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}, Conditions: c})
	}
	return es
}

// SelfSigned returns a PEM certificate for hosts (the first is the common name) and its key.
func SelfSigned(hosts ...string) (crt, key []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]}, DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		panic(err)
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

// TLSSecret is a kubernetes.io/tls Secret holding a fresh self-signed certificate for hosts.
func TLSSecret(ns, name string, hosts ...string) *corev1.Secret {
	crt, key := SelfSigned(hosts...)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), ResourceVersion: "1"},
		Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key}}
}
