package controllers

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/controllers/render"
)

// hostPortConflict is an older HostNetwork fleet that binds a host port this fleet wants, on
// nodes both would run on.
type hostPortConflict struct {
	Fleet string // namespace/name of the older fleet
	Ports []hostPort
	Nodes []string
}

// hostPort is a port a HostNetwork fleet binds on its nodes: a TCP and a UDP port of the same
// number do not conflict.
type hostPort struct {
	Port     int32
	Protocol corev1.Protocol
}

// String is "80" for TCP, "53/UDP" for UDP.
func (p hostPort) String() string {
	if p.Protocol == corev1.ProtocolUDP {
		return fmt.Sprintf("%d/UDP", p.Port)
	}
	return fmt.Sprint(p.Port)
}

// hostPortConflicts finds, for a HostNetwork fleet, the older HostNetwork fleets that bind one of
// its host ports on nodes both select. The older fleet (creationTimestamp, then namespace/name)
// keeps the nodes; the returned node names are where this fleet must not run. Node selection is
// judged by nodeSelector labels only: affinity and taints may keep a fleet off more nodes, never
// fewer, so the answer errs on the side of excluding.
func hostPortConflicts(fleet *porticov1alpha1.IngressDeployment, fleets []porticov1alpha1.IngressDeployment, nodes []corev1.Node) (excluded []string, conflicts []hostPortConflict) {
	if fleet.Spec.Topology.Type != porticov1alpha1.TopologyHostNetwork {
		return nil, nil
	}
	mine := portSet(fleet)
	mySel := nodeSelector(fleet)
	seen := map[string]bool{}
	for i := range fleets {
		other := &fleets[i]
		if other.UID == fleet.UID || other.Spec.Topology.Type != porticov1alpha1.TopologyHostNetwork ||
			!other.DeletionTimestamp.IsZero() || !older(other, fleet) {
			continue
		}
		var shared []hostPort
		for _, p := range portSet(other) {
			if slices.Contains(mine, p) {
				shared = append(shared, p)
			}
		}
		if len(shared) == 0 {
			continue
		}
		otherSel := nodeSelector(other)
		var on []string
		for j := range nodes {
			l := labels.Set(nodes[j].Labels)
			if mySel.Matches(l) && otherSel.Matches(l) {
				on = append(on, nodes[j].Name)
				seen[nodes[j].Name] = true
			}
		}
		if len(on) == 0 {
			continue
		}
		sort.Strings(on)
		conflicts = append(conflicts, hostPortConflict{Fleet: other.Namespace + "/" + other.Name, Ports: shared, Nodes: on})
	}
	for n := range seen {
		excluded = append(excluded, n)
	}
	sort.Strings(excluded)
	sort.Slice(conflicts, func(a, b int) bool { return conflicts[a].Fleet < conflicts[b].Fleet })
	return excluded, conflicts
}

func (c hostPortConflict) String() string {
	ports := make([]string, len(c.Ports))
	for i, p := range c.Ports {
		ports[i] = p.String()
	}
	return fmt.Sprintf("host port %s on node %s already bound by older fleet %s",
		strings.Join(ports, ","), strings.Join(c.Nodes, ","), c.Fleet)
}

// portSet is every host port a HostNetwork fleet binds: HTTP, HTTPS and health, then its TCP
// and UDP services.
func portSet(f *porticov1alpha1.IngressDeployment) []hostPort {
	http, https, health := render.HostPorts(f)
	ports := []hostPort{{http, corev1.ProtocolTCP}, {https, corev1.ProtocolTCP}, {health, corev1.ProtocolTCP}}
	for _, p := range render.L4Ports(f) {
		ports = append(ports, hostPort{p.ListenPort, p.Protocol})
	}
	return ports
}

func nodeSelector(f *porticov1alpha1.IngressDeployment) labels.Selector {
	if np := f.Spec.NodePlacement; np != nil && len(np.NodeSelector) > 0 {
		return labels.SelectorFromSet(np.NodeSelector)
	}
	return labels.Everything()
}

// older orders fleets by creation time, then namespace/name.
func older(a, b *porticov1alpha1.IngressDeployment) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
}
