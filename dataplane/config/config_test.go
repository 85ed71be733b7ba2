package config

import (
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	in := Config{FleetNamespace: "ingress", FleetName: "edge", WatchNamespaces: []string{"a"},
		DefaultBackend: &ServiceRef{Namespace: "ingress", Name: "db", Port: 80}, DefaultCertificate: "ingress/tls"}
	s, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if out.FleetName != "edge" || out.DefaultBackend.Port != 80 || out.DefaultCertificate != "ingress/tls" || out.WatchNamespaces[0] != "a" {
		t.Fatalf("round trip lost data: %+v", out)
	}
}

func TestParseRejects(t *testing.T) {
	for doc, want := range map[string]string{
		`{"fleetNamespace":"a","fleetName":"b","watchNamespace":["x"]}`: `unknown field "watchNamespace"`,
		`{"fleetName":"b"}`: "fleetNamespace and fleetName are required",
		`not json`:          "parse config.json",
	} {
		if _, err := Parse(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want error containing %q", doc, err, want)
		}
	}
}

func TestL4RoundTrip(t *testing.T) {
	in := Config{FleetNamespace: "ingress", FleetName: "edge",
		TCP: []L4Service{{Port: 5432, ListenPort: 5432, Service: ServiceRef{Namespace: "db", Name: "pg", Port: 5432}, ProxyProtocol: ProxyProtocolV2}},
		UDP: []L4Service{{Port: 53, ListenPort: 10053, Service: ServiceRef{Namespace: "dns", Name: "resolver", PortName: "dns"}}}}
	s, err := in.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := Parse(s)
	if err != nil {
		t.Fatalf("%v\n%s", err, s)
	}
	if len(out.TCP) != 1 || out.TCP[0] != in.TCP[0] || len(out.UDP) != 1 || out.UDP[0] != in.UDP[0] {
		t.Fatalf("round trip lost data: %+v\n%s", out, s)
	}
	if got := out.TCP[0].Service.ServicePort(); got != "5432" {
		t.Errorf("ServicePort by number = %q", got)
	}
	if got := out.UDP[0].Service.ServicePort(); got != "dns" {
		t.Errorf("ServicePort by name = %q", got)
	}
	// A document without TCP and UDP services has no such keys: older proxies read it.
	plain, err := Config{FleetNamespace: "a", FleetName: "b"}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plain, "tcp") || strings.Contains(plain, "udp") {
		t.Errorf("empty lists are rendered:\n%s", plain)
	}
}

func TestParseRejectsL4(t *testing.T) {
	const head = `{"fleetNamespace":"a","fleetName":"b",`
	svc := `"service":{"namespace":"db","name":"pg","port":5432}`
	for doc, want := range map[string]string{
		head + `"tcp":[{"port":0,"listenPort":1,` + svc + `}]}`:                                                     "tcp[0].port 0",
		head + `"udp":[{"port":53,"listenPort":70000,` + svc + `}]}`:                                                "udp[0].listenPort 70000",
		head + `"tcp":[{"port":1,"listenPort":1,` + svc + `},{"port":1,"listenPort":2,` + svc + `}]}`:               "tcp[1].port 1: used twice",
		head + `"tcp":[{"port":1,"listenPort":9,` + svc + `},{"port":2,"listenPort":9,` + svc + `}]}`:               "tcp[1].listenPort 9: used twice",
		head + `"tcp":[{"port":1,"listenPort":1,"service":{"name":"pg","port":1}}]}`:                                "tcp[0].service: namespace and name are required",
		head + `"tcp":[{"port":1,"listenPort":1,"service":{"namespace":"a","name":"pg"}}]}`:                         "tcp[0].service: want exactly one of port and portName",
		head + `"tcp":[{"port":1,"listenPort":1,"service":{"namespace":"a","name":"pg","port":1,"portName":"x"}}]}`: "tcp[0].service: want exactly one of port and portName",
		head + `"tcp":[{"port":1,"listenPort":1,"service":{"namespace":"a","name":"pg","port":-1}}]}`:               "tcp[0].service.port -1",
		head + `"udp":[{"port":1,"listenPort":1,"proxyProtocol":"V2",` + svc + `}]}`:                                `udp[0].proxyProtocol "V2": TCP only`,
		head + `"tcp":[{"port":1,"listenPort":1,"proxyProtocol":"None",` + svc + `}]}`:                              `tcp[0].proxyProtocol "None"`,
	} {
		if _, err := Parse(doc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s) = %v, want error containing %q", doc, err, want)
		}
	}
	// The same port number for TCP and UDP is fine.
	ok := head + `"tcp":[{"port":53,"listenPort":53,` + svc + `}],"udp":[{"port":53,"listenPort":53,` + svc + `}]}`
	if _, err := Parse(ok); err != nil {
		t.Errorf("Parse(%s) = %v", ok, err)
	}
}
