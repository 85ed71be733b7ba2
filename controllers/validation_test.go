package controllers_test

import (
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
	)

	It("accepts a valid spec and fills the schema's defaults", func() {
		Expect(create("topology:\n  type: HostNetwork\n  hostNetwork: {}\ndefaultBackend: {}")).To(Succeed())
	})
})

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}
