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
