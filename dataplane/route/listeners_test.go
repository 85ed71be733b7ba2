package route

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
)

// TestListeners: spec.tcp and spec.udp compile into listeners whose backends are the Service
// port of their protocol (dns 53/TCP and 53/UDP are two ports), by number or name, in any
// namespace; a missing Service or port is the fleet's problem and the listener stays.
func TestListeners(t *testing.T) {
	in := baseInput()
	dns := rt.Service("infra", "dns", corev1.ServicePort{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP},
		corev1.ServicePort{Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP})
	in.Services = append(in.Services, dns)
	in.EndpointSlices = append(in.EndpointSlices, rt.Slice("infra", "dns", "dns-tcp", 5353, rt.Ready, "10.0.1.1"),
		rt.Slice("infra", "dns", "dns-udp", 5354, rt.Ready, "10.0.1.1"))
	in.EndpointSlices[len(in.EndpointSlices)-1].Name += "-udp"
	in.Config.TCP = []proxyconfig.L4Service{
		{Port: 53, ListenPort: 10053, Service: proxyconfig.ServiceRef{Namespace: "infra", Name: "dns", Port: 53}, ProxyProtocol: "V2"},
		{Port: 5432, ListenPort: 5432, Service: proxyconfig.ServiceRef{Namespace: "db", Name: "postgres", Port: 5432}},
	}
	in.Config.UDP = []proxyconfig.L4Service{{Port: 53, ListenPort: 10053, Service: proxyconfig.ServiceRef{Namespace: "infra", Name: "dns", PortName: "dns-udp"}}}
	table, probs := Compile(in)
	if len(probs) != 1 || probs[0].Message != "tcp/5432: service db/postgres not found" {
		t.Errorf("problems %v", probs)
	}
	want := []struct {
		name, endpoint string
		udp            bool
	}{{"tcp/53", "10.0.1.1:5353", false}, {"tcp/5432", "", false}, {"udp/53", "10.0.1.1:5354", true}}
	if len(table.Listeners) != len(want) {
		t.Fatalf("listeners %+v", table.Listeners)
	}
	for i, w := range want {
		l := table.Listeners[i]
		got := ""
		if len(l.Backend.Endpoints) > 0 {
			got = l.Backend.Endpoints[0].Addr
		}
		if l.Name != w.name || l.UDP != w.udp || got != w.endpoint {
			t.Errorf("listener %d: %s udp=%v endpoint %q, want %s udp=%v %q", i, l.Name, l.UDP, got, w.name, w.udp, w.endpoint)
		}
	}
	if table.Listeners[0].Port != 10053 || table.Listeners[0].ProxyProtocol != "V2" {
		t.Errorf("tcp/53: %+v", table.Listeners[0])
	}
}
