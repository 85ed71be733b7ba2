//go:build e2e

// Package e2e is the end-to-end suite: it runs inside the local cluster's network namespace
// (make test-e2e) against the operator deployed from config/default, and sends real traffic to
// the addresses each topology publishes.
package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	rt "portico.dev/portico/dataplane/route/routetest"
)

var (
	k8s    client.Client
	scheme = runtime.NewScheme()
	ctx    = context.Background()
	// caPEM is the certificate of the e2e Ingress's TLS Secret.
	caPEM []byte
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(90 * time.Second)
	SetDefaultEventuallyPollingInterval(250 * time.Millisecond)
	RunSpecs(t, "End-to-end suite (local cluster)")
}

var _ = BeforeSuite(func() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(porticov1alpha1.AddToScheme(scheme))
	Expect(os.Getenv("KUBECONFIG")).NotTo(BeEmpty(), "run through `make test-e2e`")
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	Expect(err).NotTo(HaveOccurred())
	cfg.QPS, cfg.Burst = 50, 100
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	if os.Getenv("E2E_PHASE") != "bundle" {
		waitOperator()
	}

	By("deploying the backends: coffee and tea (echo servers), a TLS Secret")
	Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: objMeta("", appsNS)}))).To(Succeed())
	for _, app := range []string{"coffee", "tea"} {
		Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, echoDeployment(app, 2)))).To(Succeed())
		Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, echoService(app)))).To(Succeed())
	}
	// dns: an echo server answering UDP on 5353, behind the Service port 53/UDP (spec.udp).
	dns := echoDeployment("dns", 1)
	dns.Spec.Template.Spec.Containers[0].Args = append(dns.Spec.Template.Spec.Containers[0].Args, "--udp-port=5353")
	Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, dns))).To(Succeed())
	Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, &corev1.Service{ObjectMeta: objMeta(appsNS, "dns"), Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "dns"},
		Ports:    []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(5353)}},
	}}))).To(Succeed())
	secret := rt.TLSSecret(appsNS, "shop-tls", "shop.example.com")
	secret.UID, secret.ResourceVersion = "", ""
	Expect(client.IgnoreAlreadyExists(k8s.Create(ctx, secret))).To(Succeed())
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(secret), secret)).To(Succeed())
	caPEM = secret.Data[corev1.TLSCertKey]
})

// waitOperator waits for the operator deployed from config/default.
func waitOperator() {
	By("waiting for the operator deployed from config/default")
	Eventually(func() int32 {
		d := &appsv1.Deployment{}
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: "portico-system", Name: "portico-operator"}, d); err != nil {
			return 0
		}
		return d.Status.AvailableReplicas
	}, 3*time.Minute).Should(Equal(int32(1)))
}
