// Package testnet hands out pod-like addresses for tests. They lie in 10.88.0.0/16, which
// hack/in-netns.sh makes a local range inside a private network namespace: nothing sent to them
// leaves that namespace. Outside it, Require fails the test with a clear message.
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

// Fatalf is testing.TB's Fatalf.
type Fatalf interface{ Fatalf(string, ...any) }

// Require fails the test unless it runs in the test network namespace.
func Require(t Fatalf) {
	if !Available() {
		t.Fatalf("this test needs the test network namespace: run it through `make test` (or hack/in-netns.sh go test ...)")
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
