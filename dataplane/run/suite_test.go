package run_test

import (
	"context"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/test/testnet"
)

var (
	testEnv  *envtest.Environment
	adminCfg *rest.Config
	k8s      client.Client
	scheme   = runtime.NewScheme()
	ctx      = context.Background()
)

func TestProxyIntegration(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Proxy integration suite (real kube-apiserver and etcd, real sockets)")
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(porticov1alpha1.AddToScheme(scheme))
	testnet.RequireControlPlane(GinkgoT())
	testnet.Require(GinkgoT())
	testEnv = &envtest.Environment{}
	testnet.ConfigureAPIServer(func(k, v string) { testEnv.ControlPlane.GetAPIServer().Configure().Set(k, v) })
	var err error
	adminCfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(adminCfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
})

var _ = AfterSuite(func() {
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})
