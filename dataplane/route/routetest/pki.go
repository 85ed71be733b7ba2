package routetest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// CA is a certificate authority of client certificate tests: a root (NewCA) or an
// intermediate (CA.Intermediate), ECDSA P-256.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert in PEM.
	PEM []byte
	// chain is Cert's DER and its issuers' below the root: what a client sends after its own.
	chain [][]byte
}

var serials atomic.Int64

func serial() *big.Int { return big.NewInt(time.Now().UnixNano() + serials.Add(1)) }

// NewCA is a root CA valid from an hour ago for a day.
func NewCA(cn string) *CA { return issueCA(cn, nil) }

// Intermediate is a CA that ca issues.
func (ca *CA) Intermediate(cn string) *CA { return issueCA(cn, ca) }

func issueCA(cn string, parent *CA) *CA {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"Portico Tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	signer, signerKey := tpl, k
	if parent != nil {
		signer, signerKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, signer, &k.PublicKey, signerKey)
	if err != nil {
		panic(err)
	}
	c, _ := x509.ParseCertificate(der)
	out := &CA{Cert: c, Key: k, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	if parent != nil {
		out.chain = append([][]byte{der}, parent.chain...)
	}
	return out
}

// Client is a client certificate that ca issues to cn (extended key usage client
// authentication), valid from notBefore to notAfter (zero: an hour ago, a day on), with the
// chain a client sends (its own first, then the intermediates).
func (ca *CA) Client(cn string, notBefore, notAfter time.Time) tls.Certificate {
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: []string{"Portico Tests"}},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, &k.PublicKey, ca.Key)
	if err != nil {
		panic(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: append([][]byte{der}, ca.chain...), PrivateKey: k, Leaf: leaf}
}

// SelfSignedClient is a client certificate that no CA issued.
func SelfSignedClient(cn string) tls.Certificate {
	ca := NewCA(cn)
	return tls.Certificate{Certificate: [][]byte{ca.Cert.Raw}, PrivateKey: ca.Key, Leaf: ca.Cert}
}

// CRL is ca's certificate revocation list revoking the serial numbers, in PEM, valid from
// thisUpdate to nextUpdate.
func (ca *CA) CRL(thisUpdate, nextUpdate time.Time, revoked ...*big.Int) []byte {
	tpl := &x509.RevocationList{Number: serial(), ThisUpdate: thisUpdate, NextUpdate: nextUpdate}
	for _, s := range revoked {
		tpl.RevokedCertificateEntries = append(tpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tpl, ca.Cert, ca.Key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// CASecret is an Opaque Secret holding ca.crt and, when not nil, ca.crl (ingress-nginx's
// auth-tls-secret).
func CASecret(ns, name string, caCrt, caCrl []byte) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(ns + "/" + name), ResourceVersion: "1"},
		Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"ca.crt": caCrt}}
	if caCrl != nil {
		s.Data["ca.crl"] = caCrl
	}
	return s
}
