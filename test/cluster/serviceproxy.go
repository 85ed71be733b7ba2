package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// LoadBalancerPool is where the local LoadBalancer controller takes addresses from.
const LoadBalancerPool = "10.88.250."

// ServiceProxy stands in for kube-proxy and a cloud's LoadBalancer controller: it listens on
// every node's address at each NodePort (TCP or UDP, as the port says), gives each LoadBalancer Service (without a
// loadBalancerClass) an address from 10.88.250.0/24 and listens there on its ports, and forwards
// each connection to a ready endpoint (on the same node only, for externalTrafficPolicy Local
// NodePorts). It reconciles every 500 ms.
type ServiceProxy struct {
	Client kubernetes.Interface
	Nodes  map[string]string // node name -> IP
	Log    logr.Logger

	mu        sync.Mutex
	listeners map[string]*forward // "ip:port" -> forward
}

type forward struct {
	ln      net.Listener   // TCP ports
	pc      net.PacketConn // UDP ports
	targets atomic.Pointer[[]string]
	next    atomic.Uint32
}

func (f *forward) close() {
	if f.ln != nil {
		_ = f.ln.Close()
	}
	if f.pc != nil {
		_ = f.pc.Close()
	}
}

// Run reconciles until ctx ends, then closes every listener.
func (sp *ServiceProxy) Run(ctx context.Context) {
	sp.listeners = map[string]*forward{}
	defer func() {
		sp.mu.Lock()
		for _, f := range sp.listeners {
			f.close()
		}
		sp.mu.Unlock()
	}()
	for {
		if err := sp.reconcile(ctx); err != nil && ctx.Err() == nil {
			sp.Log.V(1).Info("Service proxy reconcile", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (sp *ServiceProxy) reconcile(ctx context.Context) error {
	svcs, err := sp.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	slices, err := sp.Client.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	bySvc := map[string][]discoveryv1.EndpointSlice{}
	for _, es := range slices.Items {
		k := es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]
		bySvc[k] = append(bySvc[k], es)
	}
	used := map[string]bool{}
	for _, s := range svcs.Items {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer {
			if err := sp.assignBalancer(ctx, &s, svcs.Items); err != nil {
				sp.Log.Error(err, "Assign balancer", "service", s.Namespace+"/"+s.Name)
			}
		}
		if s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		local := s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
		for _, port := range s.Spec.Ports {
			if port.NodePort != 0 {
				for node, ip := range sp.Nodes {
					onNode := ""
					if local {
						onNode = node
					}
					addr := net.JoinHostPort(ip, strconv.Itoa(int(port.NodePort)))
					used[key(port.Protocol, addr)] = true
					sp.ensure(port.Protocol, addr, endpoints(bySvc[s.Namespace+"/"+s.Name], port.Name, onNode))
				}
			}
			for _, in := range s.Status.LoadBalancer.Ingress {
				if in.IP == "" {
					continue
				}
				addr := net.JoinHostPort(in.IP, strconv.Itoa(int(port.Port)))
				used[key(port.Protocol, addr)] = true
				sp.ensure(port.Protocol, addr, endpoints(bySvc[s.Namespace+"/"+s.Name], port.Name, ""))
			}
		}
	}
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for k, f := range sp.listeners {
		if !used[k] {
			f.close()
			delete(sp.listeners, k)
		}
	}
	return nil
}

// endpoints are the ready addresses of a Service port (on node, if given), sorted.
func endpoints(slices []discoveryv1.EndpointSlice, portName, node string) []string {
	var out []string
	for _, es := range slices {
		var port int32 = -1
		for _, p := range es.Ports {
			if p.Name != nil && *p.Name == portName && p.Port != nil {
				port = *p.Port
			}
		}
		if port < 0 {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
				continue
			}
			if node != "" && (ep.NodeName == nil || *ep.NodeName != node) {
				continue
			}
			for _, a := range ep.Addresses {
				out = append(out, net.JoinHostPort(a, strconv.Itoa(int(port))))
			}
		}
	}
	sort.Strings(out)
	return out
}

// key names a listener: its protocol and address.
func key(proto corev1.Protocol, addr string) string {
	if proto == corev1.ProtocolUDP {
		return "udp/" + addr
	}
	return "tcp/" + addr
}

func (sp *ServiceProxy) ensure(proto corev1.Protocol, addr string, targets []string) {
	k := key(proto, addr)
	sp.mu.Lock()
	f := sp.listeners[k]
	sp.mu.Unlock()
	if f == nil {
		f = &forward{}
		if proto == corev1.ProtocolUDP {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				sp.Log.Error(err, "Listen", "address", k)
				return
			}
			f.pc = pc
		} else {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				sp.Log.Error(err, "Listen", "address", k)
				return
			}
			f.ln = ln
		}
		f.targets.Store(&targets)
		sp.mu.Lock()
		sp.listeners[k] = f
		sp.mu.Unlock()
		if f.pc != nil {
			go f.serveUDP()
		} else {
			go f.serve()
		}
		sp.Log.Info("Forwarding", "address", k, "endpoints", len(targets))
		return
	}
	f.targets.Store(&targets)
}

// serveUDP forwards datagrams per client address (a flow, its own socket to an endpoint, its
// answers sent back from the listening socket), each flow ending after 60 s of silence.
func (f *forward) serveUDP() {
	var mu sync.Mutex
	flows := map[string]*net.UDPConn{}
	buf := make([]byte, 64<<10)
	for {
		n, from, err := f.pc.ReadFrom(buf)
		if err != nil {
			mu.Lock()
			for _, up := range flows {
				_ = up.Close()
			}
			mu.Unlock()
			return
		}
		mu.Lock()
		up := flows[from.String()]
		mu.Unlock()
		if up == nil {
			ts := *f.targets.Load()
			if len(ts) == 0 {
				continue
			}
			ra, err := net.ResolveUDPAddr("udp", ts[int(f.next.Add(1))%len(ts)])
			if err != nil {
				continue
			}
			if up, err = net.DialUDP("udp", nil, ra); err != nil {
				continue
			}
			mu.Lock()
			flows[from.String()] = up
			mu.Unlock()
			go func(up *net.UDPConn, client net.Addr) {
				defer func() {
					mu.Lock()
					delete(flows, client.String())
					mu.Unlock()
					_ = up.Close()
				}()
				rb := make([]byte, 64<<10)
				for {
					_ = up.SetReadDeadline(time.Now().Add(60 * time.Second))
					m, err := up.Read(rb)
					if err != nil {
						return
					}
					_, _ = f.pc.WriteTo(rb[:m], client)
				}
			}(up, from)
		}
		_, _ = up.Write(buf[:n])
	}
}

func (f *forward) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			ts := *f.targets.Load()
			if len(ts) == 0 {
				return // no endpoint: the connection is closed, as a REJECT would
			}
			up, err := net.DialTimeout("tcp", ts[int(f.next.Add(1))%len(ts)], 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
			_, _ = io.Copy(c, up)
		}()
	}
}

// assignBalancer gives a LoadBalancer Service without a loadBalancerClass the lowest free
// address of the pool, as cloud-provider-kind does for kind.
func (sp *ServiceProxy) assignBalancer(ctx context.Context, s *corev1.Service, all []corev1.Service) error {
	if s.Spec.LoadBalancerClass != nil || len(s.Status.LoadBalancer.Ingress) > 0 {
		return nil
	}
	taken := map[string]bool{}
	for _, o := range all {
		for _, in := range o.Status.LoadBalancer.Ingress {
			taken[in.IP] = true
		}
	}
	for i := 1; i < 255; i++ {
		ip := LoadBalancerPool + strconv.Itoa(i)
		if taken[ip] {
			continue
		}
		s = s.DeepCopy()
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip, IPMode: ptrIPMode(corev1.LoadBalancerIPModeVIP)}}
		_, err := sp.Client.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		if err == nil {
			sp.Log.Info("Balancer assigned", "service", s.Namespace+"/"+s.Name, "ip", ip)
		}
		return err
	}
	return fmt.Errorf("balancer pool %s0/24 exhausted", LoadBalancerPool)
}

func ptrIPMode(m corev1.LoadBalancerIPMode) *corev1.LoadBalancerIPMode { return &m }
