package controllers

import (
	"net/netip"
	"sort"

	corev1 "k8s.io/api/core/v1"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// fleetAddresses computes where a fleet is reachable, per topology:
//   - spec.statusAddress set: exactly those addresses and hostnames;
//   - LoadBalancer: the Service's balancer ingress points and its externalIPs;
//   - NodePort and HostNetwork: the ExternalIP, else InternalIP, of every node running a Ready
//     proxy pod.
//
// The result is sorted and de-duplicated. An empty result means "nothing known", which the
// caller must not publish over a non-empty list (a pending balancer, a rolling restart).
func fleetAddresses(f *porticov1alpha1.IngressDeployment, svc *corev1.Service, pods []corev1.Pod, nodes map[string]*corev1.Node) []porticov1alpha1.Address {
	var out []porticov1alpha1.Address
	add := func(v string) {
		if v == "" {
			return
		}
		t := porticov1alpha1.HostnameAddressType
		if _, err := netip.ParseAddr(v); err == nil {
			t = porticov1alpha1.IPAddressType
		}
		out = append(out, porticov1alpha1.Address{Type: t, Value: v})
	}
	switch {
	case f.Spec.StatusAddress != nil && (len(f.Spec.StatusAddress.Addresses) > 0 || len(f.Spec.StatusAddress.Hostnames) > 0):
		for _, a := range f.Spec.StatusAddress.Addresses {
			add(a)
		}
		for _, h := range f.Spec.StatusAddress.Hostnames {
			add(h)
		}
	case f.Spec.Topology.Type == porticov1alpha1.TopologyLoadBalancer:
		if svc != nil {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				add(in.IP)
				add(in.Hostname)
			}
			for _, ip := range svc.Spec.ExternalIPs {
				add(ip)
			}
		}
	default:
		for i := range pods {
			p := &pods[i]
			if p.DeletionTimestamp != nil || !podReady(p) {
				continue
			}
			if n := nodes[p.Spec.NodeName]; n != nil {
				add(nodeAddress(n))
			}
		}
	}
	return sortAddresses(out)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeAddress is a node's ExternalIP, else its InternalIP.
func nodeAddress(n *corev1.Node) string {
	var internal string
	for _, a := range n.Status.Addresses {
		switch a.Type {
		case corev1.NodeExternalIP:
			return a.Address
		case corev1.NodeInternalIP:
			if internal == "" {
				internal = a.Address
			}
		}
	}
	return internal
}

func sortAddresses(in []porticov1alpha1.Address) []porticov1alpha1.Address {
	sort.Slice(in, func(i, j int) bool {
		if in[i].Type != in[j].Type {
			return in[i].Type == porticov1alpha1.IPAddressType
		}
		return in[i].Value < in[j].Value
	})
	out := in[:0]
	for i, a := range in {
		if i == 0 || a != in[i-1] {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
