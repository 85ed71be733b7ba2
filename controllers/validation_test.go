package controllers_test

import (
	"encoding/json"
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// The CRD's schema and CEL rules, exercised against the real API server: each invalid object is
// rejected with a message naming the field.
var _ = Describe("IngressDeployment validation", func() {
	create := func(spec string) error {
		ns := newNamespace()
		u := &unstructured.Unstructured{}
		Expect(yaml.Unmarshal([]byte("apiVersion: ingress.portico.dev/v1alpha1\nkind: IngressDeployment\nmetadata:\n  name: v\n  namespace: "+ns+"\nspec:\n"+indent(spec)), &u.Object)).To(Succeed())
		return k8s.Create(ctx, u)
	}

	DescribeTable("rejects",
		func(spec, field, message string) {
			err := create(spec)
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(And(ContainSubstring(field), ContainSubstring(message)))
			Expect(err.Error()).NotTo(ContainSubstring("evaluating rule"), "a CEL rule failed to evaluate instead of answering with its message")
		},
		Entry("a hostNetwork block with type NodePort", "topology:\n  type: NodePort\n  hostNetwork: {httpPort: 80}",
			"spec.topology.hostNetwork", "only allowed when spec.topology.type is HostNetwork"),
		Entry("a nodePort block with type HostNetwork", "topology:\n  type: HostNetwork\n  nodePort: {httpNodePort: 30080}",
			"spec.topology.nodePort", "only allowed when spec.topology.type is NodePort"),
		Entry("a loadBalancer block with type NodePort", "topology:\n  type: NodePort\n  loadBalancer: {loadBalancerClass: x}",
			"spec.topology.loadBalancer", "only allowed when spec.topology.type is LoadBalancer"),
		Entry("replicas with HostNetwork", "topology: {type: HostNetwork}\nreplicas: 2",
			"spec.replicas", "not allowed with topology type HostNetwork"),
		Entry("externalTrafficPolicy with HostNetwork", "topology: {type: HostNetwork, externalTrafficPolicy: Local}",
			"spec.topology.externalTrafficPolicy", "not allowed when spec.topology.type is HostNetwork"),
		Entry("equal http and https host ports", "topology:\n  type: HostNetwork\n  hostNetwork: {httpPort: 8080, httpsPort: 8080}",
			"spec.topology.hostNetwork", "httpPort and httpsPort must differ"),
		Entry("equal http and https node ports", "topology:\n  type: NodePort\n  nodePort: {httpNodePort: 30080, httpsNodePort: 30080}",
			"spec.topology.nodePort", "httpNodePort and httpsNodePort must differ"),
		Entry("a host port above 65535", "topology:\n  type: HostNetwork\n  hostNetwork: {httpPort: 70000}",
			"spec.topology.hostNetwork.httpPort", "less than or equal to 65535"),
		Entry("a host port below 1", "topology:\n  type: HostNetwork\n  hostNetwork: {httpsPort: -1}",
			"spec.topology.hostNetwork.httpsPort", "greater than or equal to 1"),
		Entry("a node port above 65535", "topology:\n  type: NodePort\n  nodePort: {httpsNodePort: 65536}",
			"spec.topology.nodePort.httpsNodePort", "less than or equal to 65535"),
		Entry("an unknown topology", "topology: {type: Mesh}", "spec.topology.type", "Unsupported value"),
		Entry("defaultBackend type Service without service", "topology: {type: NodePort}\ndefaultBackend: {type: Service}",
			"spec.defaultBackend.service", "required when spec.defaultBackend.type is Service"),
		Entry("defaultBackend service with type Managed", "topology: {type: NodePort}\ndefaultBackend: {type: Managed, service: {name: x, port: 80}}",
			"spec.defaultBackend.service", "only allowed when spec.defaultBackend.type is Service"),
		Entry("a managed status code of 600", "topology: {type: NodePort}\ndefaultBackend: {managed: {statusCode: 600}}",
			"spec.defaultBackend.managed.statusCode", "less than or equal to 599"),
		Entry("a managed status code of 199", "topology: {type: NodePort}\ndefaultBackend: {managed: {statusCode: 199}}",
			"spec.defaultBackend.managed.statusCode", "greater than or equal to 200"),
		Entry("a missing topology", "replicas: 1", "spec.topology", "Required value"),
		Entry("a negative request body size", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: -1}",
			"spec.http.maxRequestBodySize", "must not be negative"),
		Entry("a negative request body size as a quantity", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: -1Mi}",
			"spec.http.maxRequestBodySize", "must not be negative"),
		Entry("nginx's 1m, a milli-quantity", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: 1m}",
			"spec.http.maxRequestBodySize", "must be a whole number of bytes"),
		Entry("half a byte", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: \"0.5\"}",
			"spec.http.maxRequestBodySize", "must be a whole number of bytes"),
		Entry("a request body size beyond int64", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: 10E}",
			"spec.http.maxRequestBodySize", "must be a whole number of bytes at most 2^63-1"),
		Entry("a fraction of a binary unit, though whole bytes", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: 1.5Ki}",
			"spec.http.maxRequestBodySize", "such as 1.5Ki are not accepted"),
		Entry("a request body size that is no quantity", "topology: {type: NodePort}\nhttp: {maxRequestBodySize: 1mb}",
			"spec.http.maxRequestBodySize", "should match"),
		Entry("a zero proxy read timeout", "topology: {type: NodePort}\nhttp: {proxyReadTimeout: 0s}",
			"spec.http.proxyReadTimeout", "must be greater than 0s"),
		Entry("a proxy send timeout over an hour", "topology: {type: NodePort}\nhttp: {proxySendTimeout: 2h}",
			"spec.http.proxySendTimeout", "must be at most 1h"),
		Entry("a negative HSTS max-age", "topology: {type: NodePort}\nhttp: {hsts: {maxAgeSeconds: -1}}",
			"spec.http.hsts.maxAgeSeconds", "should be greater than or equal to 0"),
		Entry("an ssl-redirect default that is no boolean", "topology: {type: NodePort}\nhttp: {sslRedirect: sometimes}",
			"spec.http.sslRedirect", "boolean"),
		Entry("a zero client body timeout", "topology: {type: NodePort}\nhttp: {clientBodyTimeout: 0s}",
			"spec.http.clientBodyTimeout", "must be greater than 0s"),
		Entry("a client body timeout that is no duration", "topology: {type: NodePort}\nhttp: {clientBodyTimeout: soon}",
			"spec.http.clientBodyTimeout", "must be a Go duration"),
		Entry("a client body timeout without a unit", "topology: {type: NodePort}\nhttp: {clientBodyTimeout: \"60\"}",
			"spec.http.clientBodyTimeout", "must be a Go duration"),
		Entry("a negative client body timeout", "topology: {type: NodePort}\nhttp: {clientBodyTimeout: -5s}",
			"spec.http.clientBodyTimeout", "must be greater than 0s"),
		Entry("a client body timeout over an hour", "topology: {type: NodePort}\nhttp: {clientBodyTimeout: 61m}",
			"spec.http.clientBodyTimeout", "must be at most 1h"),
		Entry("a limit status other than 429 or 503", "topology: {type: NodePort}\nhttp: {limitStatusCode: 500}",
			"spec.http.limitStatusCode", "supported values: \"429\", \"503\""),
		Entry("a trusted proxy that is no CIDR", "topology: {type: NodePort}\nclientAddress: {trustedProxies: [10.0.0.0/8, 10.0.0.1/33]}",
			"spec.clientAddress.trustedProxies[1]", "must be a CIDR such as 10.0.0.0/8"),
		Entry("a trusted proxy that is an address", "topology: {type: NodePort}\nclientAddress: {trustedProxies: [10.0.0.1]}",
			"spec.clientAddress.trustedProxies[0]", "must be a CIDR"),
		Entry("a trusted proxy twice", "topology: {type: NodePort}\nclientAddress: {trustedProxies: [10.0.0.0/8, 10.0.0.0/8]}",
			"spec.clientAddress.trustedProxies[1]", "Duplicate value"),

		// spec.tcp and spec.udp
		Entry("a TCP port of 0", "topology: {type: NodePort}\ntcp: [{port: 0, service: {name: db, port: 5432}}]",
			"spec.tcp[0].port", "greater than or equal to 1"),
		Entry("a UDP port above 65535", "topology: {type: NodePort}\nudp: [{port: 65536, service: {name: dns, port: 53}}]",
			"spec.udp[0].port", "less than or equal to 65535"),
		Entry("a TCP port twice", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: a, port: 1}}, {port: 5432, service: {name: b, port: 1}}]",
			"spec.tcp[1]", "Duplicate value"),
		Entry("a UDP port twice", "topology: {type: NodePort}\nudp: [{port: 53, service: {name: a, port: 53}}, {port: 53, service: {name: b, port: 53}}]",
			"spec.udp[1]", "Duplicate value"),
		Entry("a TCP port equal to the Service's HTTP port", "topology: {type: LoadBalancer}\ntcp: [{port: 5432, service: {name: a, port: 1}}, {port: 80, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from the ports of the fleet Service for HTTP and HTTPS, 80 and 443"),
		Entry("a TCP port equal to the Service's HTTPS port", "topology: {type: NodePort}\ntcp: [{port: 443, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from the ports of the fleet Service for HTTP and HTTPS, 80 and 443"),
		Entry("a TCP port equal to the default host HTTPS port", "topology: {type: HostNetwork}\ntcp: [{port: 443, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from spec.topology.hostNetwork.httpPort, httpsPort and healthPort"),
		Entry("a TCP port equal to the default health port", "topology: {type: HostNetwork}\ntcp: [{port: 10254, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from spec.topology.hostNetwork.httpPort, httpsPort and healthPort"),
		Entry("a TCP port equal to a custom host HTTP port", "topology:\n  type: HostNetwork\n  hostNetwork: {httpPort: 8000}\ntcp: [{port: 8000, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from spec.topology.hostNetwork.httpPort, httpsPort and healthPort"),
		Entry("a TCP port equal to a custom health port", "topology:\n  type: HostNetwork\n  hostNetwork: {healthPort: 9000}\ntcp: [{port: 9000, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].port must differ from spec.topology.hostNetwork.httpPort, httpsPort and healthPort"),
		Entry("a TCP nodePort with LoadBalancer", "topology: {type: LoadBalancer}\ntcp: [{port: 5432, nodePort: 30432, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].nodePort is only allowed when spec.topology.type is NodePort"),
		Entry("a UDP nodePort with HostNetwork", "topology: {type: HostNetwork}\nudp: [{port: 53, nodePort: 30053, service: {name: b, port: 1}}]",
			"spec.udp", "spec.udp[].nodePort is only allowed when spec.topology.type is NodePort"),
		Entry("two TCP nodePorts alike", "topology: {type: NodePort}\ntcp: [{port: 1, nodePort: 30001, service: {name: b, port: 1}}, {port: 2, nodePort: 30001, service: {name: b, port: 1}}]",
			"spec.tcp", "spec.tcp[].nodePort values must differ"),
		Entry("two UDP nodePorts alike", "topology: {type: NodePort}\nudp: [{port: 1, nodePort: 30001, service: {name: b, port: 1}}, {port: 2, nodePort: 30001, service: {name: b, port: 1}}]",
			"spec.udp", "spec.udp[].nodePort values must differ"),
		Entry("a TCP nodePort equal to the HTTPS node port", "topology:\n  type: NodePort\n  nodePort: {httpsNodePort: 30443}\ntcp: [{port: 1, nodePort: 30443, service: {name: b, port: 1}}]",
			"spec.tcp", "must differ from spec.topology.nodePort.httpNodePort and httpsNodePort"),
		Entry("a Service port of 0", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: db, port: 0}}]",
			"spec.tcp[0].service.port", "must be a port number from 1 to 65535"),
		Entry("a Service port above 65535", "topology: {type: NodePort}\nudp: [{port: 53, service: {name: dns, port: 70000}}]",
			"spec.udp[0].service.port", "must be a port number from 1 to 65535"),
		Entry("a Service port number in quotes", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: db, port: \"5432\"}}]",
			"spec.tcp[0].service.port", "should match"),
		Entry("a Service port name that is no DNS label", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: db, port: Postgres}}]",
			"spec.tcp[0].service.port", "should match"),
		Entry("a Service port name over 63 characters", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: db, port: "+strings.Repeat("p", 64)+"}}]",
			"spec.tcp[0].service.port", "may not be more than 63 bytes"),
		Entry("a Service without a name", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {port: 5432}}]",
			"spec.tcp[0].service.name", "Required value"),
		Entry("a Service name that is no DNS label", "topology: {type: NodePort}\ntcp: [{port: 5432, service: {name: 1db, port: 5432}}]",
			"spec.tcp[0].service.name", "should match"),
		Entry("a Service namespace that is no DNS label", "topology: {type: NodePort}\nudp: [{port: 53, service: {namespace: Kube_System, name: dns, port: 53}}]",
			"spec.udp[0].service.namespace", "should match"),
		Entry("an unknown PROXY protocol version", "topology: {type: NodePort}\ntcp: [{port: 5432, proxyProtocol: V3, service: {name: db, port: 5432}}]",
			"spec.tcp[0].proxyProtocol", "Unsupported value"),
		Entry("65 TCP ports", "topology: {type: NodePort}\ntcp: ["+manyPorts(65)+"]",
			"spec.tcp", "must have at most 64 items"),
	)

	It("accepts a valid spec and fills the schema's defaults", func() {
		Expect(create("topology:\n  type: HostNetwork\n  hostNetwork: {}\ndefaultBackend: {}")).To(Succeed())
	})

	DescribeTable("accepts TCP and UDP services",
		func(spec string) { Expect(create(spec)).To(Succeed()) },
		Entry("the contract's example", "topology: {type: NodePort}\n"+
			"tcp:\n- {port: 5432, nodePort: 30432, service: {namespace: db, name: postgres, port: 5432}, proxyProtocol: V2}\n"+
			"udp:\n- {port: 53, service: {namespace: dns, name: resolver, port: 53}}"),
		Entry("a TCP and a UDP port alike", "topology: {type: LoadBalancer}\ntcp: [{port: 53, service: {name: dns, port: dns-tcp}}]\nudp: [{port: 53, service: {name: dns, port: dns}}]"),
		Entry("a UDP port equal to the HTTPS port", "topology: {type: HostNetwork}\nudp: [{port: 443, service: {name: quic, port: 443}}]"),
		Entry("a TCP port equal to a default host port moved elsewhere", "topology:\n  type: HostNetwork\n  hostNetwork: {httpPort: 8000, httpsPort: 8443, healthPort: 9000}\ntcp: [{port: 80, service: {name: b, port: 80}}, {port: 10254, service: {name: b, port: 80}}]"),
		Entry("a TCP port equal to the pods' own HTTP port with NodePort", "topology: {type: NodePort}\ntcp: [{port: 8080, service: {name: b, port: 80}}, {port: 10254, service: {name: b, port: 80}}]"),
		Entry("TCP and UDP node ports alike", "topology: {type: NodePort}\ntcp: [{port: 53, nodePort: 30053, service: {name: dns, port: 53}}]\nudp: [{port: 53, nodePort: 30053, service: {name: dns, port: 53}}]"),
		Entry("64 TCP and 64 UDP ports", "topology: {type: NodePort}\ntcp: ["+manyPorts(64)+"]\nudp: ["+manyPorts(64)+"]"),
		Entry("every explicit PROXY protocol setting", "topology: {type: NodePort}\ntcp: [{port: 1, proxyProtocol: None, service: {name: a, port: 1}}, {port: 2, proxyProtocol: V1, service: {name: a, port: 1}}]"),
	)

	DescribeTable("accepts HTTP limits and stores them as written (the operator applies the defaults, not the API server)",
		func(http string) {
			ns := newNamespace()
			u := &unstructured.Unstructured{}
			Expect(yaml.Unmarshal([]byte("apiVersion: ingress.portico.dev/v1alpha1\nkind: IngressDeployment\nmetadata:\n  name: v\n  namespace: "+ns+
				"\nspec:\n  topology: {type: NodePort}\n  http: "+http+"\n"), &u.Object)).To(Succeed())
			sent, err := json.Marshal(u.Object["spec"].(map[string]any)["http"])
			Expect(err).NotTo(HaveOccurred())
			Expect(k8s.Create(ctx, u)).To(Succeed())
			stored, err := json.Marshal(u.Object["spec"].(map[string]any)["http"])
			Expect(err).NotTo(HaveOccurred())
			Expect(stored).To(MatchJSON(sent))
		},
		Entry("none set", "{}"),
		Entry("no limit as a number", "{maxRequestBodySize: 0}"),
		Entry("no limit as a string", `{maxRequestBodySize: "0"}`),
		Entry("bytes as a number", "{maxRequestBodySize: 1048576}"),
		Entry("a binary quantity", "{maxRequestBodySize: 1Mi}"),
		Entry("a decimal quantity", "{maxRequestBodySize: 8M}"),
		Entry("a fraction of a decimal unit that is whole bytes", "{maxRequestBodySize: 1.5M}"),
		Entry("the largest size", "{maxRequestBodySize: 8E}"),
		Entry("the smallest timeout", "{clientBodyTimeout: 1ns}"),
		Entry("the largest timeout", "{clientBodyTimeout: 1h}"),
		Entry("every field", "{maxRequestBodySize: 64Mi, clientBodyTimeout: 2m30s, allowUnderscoresInHeaders: true}"),
		Entry("ingress-nginx's limit status", "{limitStatusCode: 503}"),
	)

	It("accepts the client address settings", func() {
		Expect(create("topology: {type: NodePort}\nclientAddress: {proxyProtocol: true, trustedProxies: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7/32]}")).To(Succeed())
	})
})

// manyPorts is n TCP or UDP entries with distinct ports and node ports.
func manyPorts(n int) string {
	entries := make([]string, n)
	for i := range entries {
		entries[i] = fmt.Sprintf("{port: %d, nodePort: %d, service: {name: s, port: %d}}", 20000+i, 30000+i, 1+i)
	}
	return strings.Join(entries, ", ")
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}
