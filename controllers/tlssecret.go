package controllers

import (
	"crypto/tls"

	corev1 "k8s.io/api/core/v1"
)

// validateTLSSecret returns why a Secret cannot serve as a certificate, or "" when it can.
func validateTLSSecret(s *corev1.Secret) string {
	if s.Type != corev1.SecretTypeTLS {
		return "is of type " + string(s.Type) + ", want kubernetes.io/tls"
	}
	if _, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return "holds no usable tls.crt/tls.key pair (" + err.Error() + ")"
	}
	return ""
}
