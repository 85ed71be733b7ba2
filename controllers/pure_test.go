package controllers

// Plain unit tests of the operator's pure logic (host-port conflicts, addresses, status
// computation): they need no API server, so `go test ./...` and `make test-unit` run them
// anywhere. The envtest suite (suite_test.go) covers the same through a real API server.

import (
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

func hnFleet(name string, age time.Duration, sel map[string]string, http int32) porticov1alpha1.IngressDeployment {
	f := porticov1alpha1.IngressDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(name),
		CreationTimestamp: metav1.NewTime(time.Unix(1_700_000_000, 0).Add(-age))}}
	f.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyHostNetwork,
		HostNetwork: &porticov1alpha1.HostNetworkTopology{HTTPPort: http, HTTPSPort: 443, HealthPort: 10254}}
	if sel != nil {
		f.Spec.NodePlacement = &porticov1alpha1.NodePlacement{NodeSelector: sel}
	}
	return f
}

// otherPorts moves a fleet's HTTPS and health ports off the defaults.
func otherPorts(f porticov1alpha1.IngressDeployment) porticov1alpha1.IngressDeployment {
	f.Spec.Topology.HostNetwork.HTTPSPort, f.Spec.Topology.HostNetwork.HealthPort = 8443, 9254
	return f
}

func node(name string, lbls map[string]string, addrs ...corev1.NodeAddress) corev1.Node {
	return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}, Status: corev1.NodeStatus{Addresses: addrs}}
}

func TestHostPortConflicts(t *testing.T) {
	edge := map[string]string{"edge": "true"}
	nodes := []corev1.Node{node("n1", edge), node("n2", edge), node("n3", nil)}
	old := hnFleet("old", time.Hour, edge, 80)
	for _, tc := range []struct {
		name     string
		fleet    porticov1alpha1.IngressDeployment
		others   []porticov1alpha1.IngressDeployment
		excluded []string
	}{
		{"a newer fleet on the same nodes and port loses them", hnFleet("new", 0, edge, 80), []porticov1alpha1.IngressDeployment{old}, []string{"n1", "n2"}},
		{"the older fleet keeps its nodes", old, []porticov1alpha1.IngressDeployment{hnFleet("new", 0, edge, 80)}, nil},
		{"no shared port: no conflict", otherPorts(hnFleet("new", 0, edge, 8080)), []porticov1alpha1.IngressDeployment{old}, nil},
		{"every node selected: only the shared ones are lost", hnFleet("new", 0, nil, 80), []porticov1alpha1.IngressDeployment{old}, []string{"n1", "n2"}},
		{"the HTTPS port is shared too", hnFleet("new", 0, edge, 81), []porticov1alpha1.IngressDeployment{old}, []string{"n1", "n2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all := append([]porticov1alpha1.IngressDeployment{tc.fleet}, tc.others...)
			excluded, conflicts := hostPortConflicts(&tc.fleet, all, nodes)
			if !slices.Equal(excluded, tc.excluded) {
				t.Errorf("excluded %v, want %v (conflicts %v)", excluded, tc.excluded, conflicts)
			}
			if (len(conflicts) > 0) != (len(tc.excluded) > 0) {
				t.Errorf("conflicts %v with excluded %v", conflicts, excluded)
			}
		})
	}
	np := hnFleet("np", 0, edge, 80)
	// TCP and UDP services bind host ports too, per protocol.
	withL4 := func(f porticov1alpha1.IngressDeployment, tcp, udp []int32) porticov1alpha1.IngressDeployment {
		for _, p := range tcp {
			f.Spec.TCP = append(f.Spec.TCP, porticov1alpha1.TCPService{Port: p})
		}
		for _, p := range udp {
			f.Spec.UDP = append(f.Spec.UDP, porticov1alpha1.UDPService{Port: p})
		}
		return f
	}
	oldL4 := withL4(hnFleet("old", time.Hour, edge, 80), []int32{5432, 53}, []int32{5353})
	for _, tc := range []struct {
		name    string
		fleet   porticov1alpha1.IngressDeployment
		message string // "" for no conflict
	}{
		{"a shared TCP service port", withL4(otherPorts(hnFleet("new", 0, edge, 8080)), []int32{5432}, nil), "host port 5432 on node n1,n2 already bound by older fleet ns/old"},
		{"a shared UDP service port", withL4(otherPorts(hnFleet("new", 0, edge, 8080)), nil, []int32{5353}), "host port 5353/UDP on node n1,n2 already bound by older fleet ns/old"},
		{"UDP 53 beside TCP 53", withL4(otherPorts(hnFleet("new", 0, edge, 8080)), []int32{5353}, []int32{53}), ""},
		{"a TCP service on the older fleet's HTTP port", withL4(otherPorts(hnFleet("new", 0, edge, 8080)), []int32{80}, nil), "host port 80 on node n1,n2 already bound by older fleet ns/old"},
		{"an HTTP port on the older fleet's TCP service port", otherPorts(hnFleet("new", 0, edge, 5432)), "host port 5432 on node n1,n2 already bound by older fleet ns/old"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, conflicts := hostPortConflicts(&tc.fleet, []porticov1alpha1.IngressDeployment{tc.fleet, oldL4}, nodes)
			var got string
			if len(conflicts) > 0 {
				got = conflicts[0].String()
			}
			if got != tc.message || len(conflicts) > 1 {
				t.Errorf("conflicts %v, want %q", conflicts, tc.message)
			}
		})
	}
	np.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyNodePort}
	if ex, _ := hostPortConflicts(&np, []porticov1alpha1.IngressDeployment{old, np}, nodes); ex != nil {
		t.Errorf("a NodePort fleet binds no host port: %v", ex)
	}
}

func TestFleetAddresses(t *testing.T) {
	ready := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	pod := func(node string, st corev1.PodStatus) corev1.Pod {
		return corev1.Pod{Spec: corev1.PodSpec{NodeName: node}, Status: st}
	}
	nodes := map[string]*corev1.Node{}
	for _, n := range []corev1.Node{
		node("n1", nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}, corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.1"}),
		node("n2", nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.2"}),
		node("n3", nil, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "10.0.0.3"}),
	} {
		nodes[n.Name] = &n
	}
	pods := []corev1.Pod{pod("n1", ready), pod("n2", ready), pod("n2", ready), pod("n3", corev1.PodStatus{})}
	addrs := func(as []porticov1alpha1.Address) (out []string) {
		for _, a := range as {
			out = append(out, string(a.Type)+":"+a.Value)
		}
		return out
	}
	hn := hnFleet("f", 0, nil, 80)
	if got := addrs(fleetAddresses(&hn, nil, pods, nodes)); !slices.Equal(got, []string{"IPAddress:10.0.0.2", "IPAddress:203.0.113.1"}) {
		t.Errorf("HostNetwork: %v (ExternalIP else InternalIP of nodes with a Ready pod, once each)", got)
	}
	lb := hnFleet("f", 0, nil, 80)
	lb.Spec.Topology = porticov1alpha1.Topology{Type: porticov1alpha1.TopologyLoadBalancer}
	svc := &corev1.Service{Spec: corev1.ServiceSpec{ExternalIPs: []string{"198.51.100.9"}}}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example.com"}, {IP: "198.51.100.1"}}
	if got := addrs(fleetAddresses(&lb, svc, pods, nodes)); !slices.Equal(got, []string{"IPAddress:198.51.100.1", "IPAddress:198.51.100.9", "Hostname:lb.example.com"}) {
		t.Errorf("LoadBalancer: %v (IPs first, then hostnames)", got)
	}
	if got := fleetAddresses(&lb, &corev1.Service{}, pods, nodes); len(got) != 0 {
		t.Errorf("a pending balancer: %v, want nothing known", got)
	}
	lb.Spec.StatusAddress = &porticov1alpha1.StatusAddress{Addresses: []string{"192.0.2.7"}, Hostnames: []string{"edge.example.com"}}
	if got := addrs(fleetAddresses(&lb, svc, pods, nodes)); !slices.Equal(got, []string{"IPAddress:192.0.2.7", "Hostname:edge.example.com"}) {
		t.Errorf("spec.statusAddress: %v, want exactly it", got)
	}
}

func TestComputeStatus(t *testing.T) {
	f := &porticov1alpha1.IngressDeployment{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
	cond := func(st porticov1alpha1.IngressDeploymentStatus, typ string) string {
		c := meta.FindStatusCondition(st.Conditions, typ)
		if c == nil {
			return "missing"
		}
		return string(c.Status) + "/" + c.Reason
	}
	up := workloadState{Found: true, Desired: 2, Ready: 2, Available: 2}
	st := computeStatus(f, observation{Classes: []string{"portico"}, Proxy: up,
		Addresses: []porticov1alpha1.Address{{Type: porticov1alpha1.IPAddressType, Value: "10.0.0.1"}}})
	for typ, want := range map[string]string{
		porticov1alpha1.ConditionAccepted:    "True/" + porticov1alpha1.ReasonAccepted,
		porticov1alpha1.ConditionAvailable:   "True/" + porticov1alpha1.ReasonAvailable,
		porticov1alpha1.ConditionProgressing: "False/" + porticov1alpha1.ReasonRolloutComplete,
		porticov1alpha1.ConditionDegraded:    "False/" + porticov1alpha1.ReasonAsExpected,
	} {
		if got := cond(st, typ); got != want {
			t.Errorf("healthy fleet %s: %s, want %s", typ, got, want)
		}
	}
	if st.ObservedGeneration != 3 || st.ReadyReplicas != 2 || len(st.Addresses) != 1 {
		t.Errorf("status fields: %+v", st)
	}

	// Computing again from the same observation changes nothing (no write, no new transition).
	f.Status = st
	again := computeStatus(f, observation{Classes: []string{"portico"}, Proxy: up})
	if !slices.EqualFunc(again.Conditions, st.Conditions, func(a, b metav1.Condition) bool { return a == b }) {
		t.Errorf("recomputed conditions differ: %+v", again.Conditions)
	}
	if len(again.Addresses) != 1 {
		t.Error("an observation with no address dropped the published ones")
	}

	bad := computeStatus(&porticov1alpha1.IngressDeployment{}, observation{RenderErr: errors.New("bad spec"), ApplyErr: errors.New("denied"),
		Proxy: workloadState{Found: true, Desired: 2}, DefaultBackend: &workloadState{Found: true}})
	for typ, want := range map[string]string{
		porticov1alpha1.ConditionAccepted:  "False/" + porticov1alpha1.ReasonInvalidSpec,
		porticov1alpha1.ConditionAvailable: "False/" + porticov1alpha1.ReasonUnavailable,
		porticov1alpha1.ConditionDegraded:  "True/" + porticov1alpha1.ReasonApplyFailed,
	} {
		if got := cond(bad, typ); got != want {
			t.Errorf("broken fleet %s: %s, want %s", typ, got, want)
		}
	}
	if c := meta.FindStatusCondition(bad.Conditions, porticov1alpha1.ConditionDegraded); c == nil ||
		c.Message != "denied; the managed default backend has no available pod" {
		t.Errorf("Degraded message: %+v", c)
	}
	noClass := computeStatus(&porticov1alpha1.IngressDeployment{}, observation{Proxy: workloadState{}})
	if got := cond(noClass, porticov1alpha1.ConditionAccepted); got != "True/"+porticov1alpha1.ReasonNoIngressClass {
		t.Errorf("no class: %s", got)
	}
	if got := cond(noClass, porticov1alpha1.ConditionProgressing); got != "True/"+porticov1alpha1.ReasonRolloutInProgress {
		t.Errorf("workload not created yet: Progressing %s", got)
	}
}
