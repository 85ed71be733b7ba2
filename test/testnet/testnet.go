// Package testnet hands out pod-like addresses for tests. They lie in 10.88.0.0/16, which
// hack/in-netns.sh makes a local range inside a private network namespace: nothing sent to them
// leaves that namespace. Outside it (a plain `go test ./...`), Require skips the test with one
// line saying how to run it; inside it (`make test`), a missing piece fails the test.
package testnet

import (
	"fmt"
	"net"
	"os"
	"sync/atomic"
)

var next atomic.Uint32

// IP returns a fresh address in 10.88.0.0/16 (10.88.1.1, 10.88.1.2, ...), never 10.88.0.x,
// which is left to the local cluster's nodes.
func IP() string {
	n := next.Add(1)
	return fmt.Sprintf("10.88.%d.%d", 1+n/250, 1+n%250)
}

// Available reports whether the test runs inside hack/in-netns.sh.
func Available() bool {
	if os.Getenv("PORTICO_NETNS") != "1" {
		return false
	}
	ln, err := net.Listen("tcp", "10.88.255.254:0")
	if err != nil {
		return false
	}
	_ = ln.Close()
	return true
}

// T is what Require needs of a testing.TB (or of GinkgoT()).
type T interface {
	Fatalf(string, ...any)
	Skipf(string, ...any)
}

// inMakeTest reports whether the test runs through `make test` (hack/in-netns.sh sets it).
func inMakeTest() bool { return os.Getenv("PORTICO_NETNS") == "1" }

// Require skips the test unless it runs in the test network namespace; under `make test`, where
// the namespace must work, it fails instead.
func Require(t T) {
	switch {
	case Available():
	case inMakeTest():
		t.Fatalf("the test network namespace does not work: 10.88.255.254 cannot be bound")
	default:
		t.Skipf("needs root and the test network namespace: run `make test-integration` (or hack/in-netns.sh go test ...)")
	}
}

// RequireControlPlane skips the test unless KUBEBUILDER_ASSETS names the control plane's
// binaries (hack/k8s-binaries.sh builds them); under `make test` their absence fails it.
func RequireControlPlane(t T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if inMakeTest() {
			t.Fatalf("KUBEBUILDER_ASSETS is not set: `make test-integration` sets it from hack/k8s-binaries.sh")
		}
		t.Skipf("needs a real kube-apiserver and etcd: run `make test-integration`, which builds them (hack/k8s-binaries.sh) and sets KUBEBUILDER_ASSETS")
	}
}

// APIServerAddress is the kube-apiserver's --advertise-address inside the test network
// namespace, which has no default route for the API server to pick one from.
const APIServerAddress = "10.88.0.1"

// ConfigureAPIServer sets the advertise address on an envtest API server's flags when the test
// runs in the test network namespace.
func ConfigureAPIServer(set func(flag, value string)) {
	if os.Getenv("PORTICO_NETNS") == "1" {
		set("advertise-address", APIServerAddress)
	}
}
