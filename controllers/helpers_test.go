package controllers_test

import (
	"k8s.io/apimachinery/pkg/runtime"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// discardRecorder drops Events; the reconciler under test writes them elsewhere.
type discardRecorder struct{}

func (discardRecorder) Eventf(runtime.Object, runtime.Object, string, string, string, string, ...any) {
}

// selfSigned returns a PEM certificate and key for host.
func selfSigned(host string) (crt, key []byte) { return rt.SelfSigned(host) }
