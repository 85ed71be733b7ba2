package run_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	proxyconfig "portico.dev/portico/dataplane/config"
	rt "portico.dev/portico/dataplane/route/routetest"
	"portico.dev/portico/test/load"
	"portico.dev/portico/test/testnet"
)

var _ = Describe("TCP and UDP services (spec.tcp, spec.udp)", func() {
	It("forwards a TCP port and a UDP port to the Service port of each protocol, and follows spec changes without a restart", func() {
		tcpPort, udpPort, movedPort := freePort(), freePort(), freePort()
		f := startFleet(func(fl *porticov1alpha1.IngressDeployment) {
			fl.Spec.TCP = []porticov1alpha1.TCPService{{Port: int32(tcpPort),
				Service: porticov1alpha1.L4ServiceReference{Name: "echo", Port: intstr.FromInt32(7000)}}}
			fl.Spec.UDP = []porticov1alpha1.UDPService{{Port: int32(udpPort),
				Service: porticov1alpha1.L4ServiceReference{Name: "echo", Port: intstr.FromString("echo-udp")}}}
		})
		// One Service, 7000/TCP and 7000/UDP: each listener takes the port of its protocol.
		ip := testnet.IP()
		ln, err := net.Listen("tcp", ip+":7000")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
		pc, err := net.ListenPacket("udp", ip+":7000")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(pc.Close)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(append([]byte("udp:"), buf[:n]...), from)
			}
		}()
		svc := rt.Service(f.ns, "echo", corev1.ServicePort{Name: "echo-tcp", Port: 7000, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Name: "echo-udp", Port: 7000, Protocol: corev1.ProtocolUDP})
		Expect(k8s.Create(ctx, svc)).To(Succeed())
		for _, name := range []string{"echo-tcp", "echo-udp"} {
			es := rt.Slice(f.ns, "echo", name, 7000, rt.Ready, ip)
			es.Name = name
			if name == "echo-udp" {
				es.Ports[0].Protocol = ptrTo(corev1.ProtocolUDP)
			}
			Expect(k8s.Create(ctx, es)).To(Succeed())
		}

		tcpEcho := func(port int) string {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err != nil {
				return err.Error()
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			_, _ = io.WriteString(c, "hello over tcp\n")
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return err.Error()
			}
			return strings.TrimSpace(line)
		}
		Eventually(func() string { return tcpEcho(tcpPort) }, timeout, interval).Should(Equal("hello over tcp"))
		udpEcho := func() string {
			c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(udpPort))
			if err != nil {
				return err.Error()
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("ping"))
			b := make([]byte, 64)
			n, err := c.Read(b)
			if err != nil {
				return err.Error()
			}
			return string(b[:n])
		}
		Eventually(udpEcho, timeout, interval).Should(Equal("udp:ping"))

		// The TCP port moves: the new one serves, the old one stops, the proxy keeps running.
		f.moveTCP(movedPort)
		Eventually(func() string { return tcpEcho(movedPort) }, timeout, interval).Should(Equal("hello over tcp"))
		Eventually(func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(tcpPort), 200*time.Millisecond)
			if err == nil {
				c.Close()
			}
			return err != nil
		}, timeout, interval).Should(BeTrue())
	})
})

func ptrTo[T any](v T) *T { return &v }

// moveTCP moves the fleet's first TCP service to another port, as the operator renders a
// change of spec.tcp into the proxy's settings.
func (f *fleetEnv) moveTCP(port int) {
	cm := &corev1.ConfigMap{}
	Expect(k8s.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "edge-proxy"}, cm)).To(Succeed())
	cfg, err := proxyconfig.Parse(cm.Data[proxyconfig.ConfigKey])
	Expect(err).NotTo(HaveOccurred())
	cfg.TCP[0].Port, cfg.TCP[0].ListenPort = int32(port), int32(port)
	data, err := cfg.Marshal()
	Expect(err).NotTo(HaveOccurred())
	cm.Data[proxyconfig.ConfigKey] = data
	Expect(k8s.Update(ctx, cm)).To(Succeed())
}

var _ = Describe("A TCP service while its endpoints churn", func() {
	It("fails no new connection while every endpoint is replaced, twice, under a steady load, the old ones dying before the table knows", func() {
		port := freePort()
		f := startFleet(func(fl *porticov1alpha1.IngressDeployment) {
			fl.Spec.TCP = []porticov1alpha1.TCPService{{Port: int32(port),
				Service: porticov1alpha1.L4ServiceReference{Name: "churn", Port: intstr.FromInt32(7100)}}}
		})
		Expect(k8s.Create(ctx, rt.Service(f.ns, "churn", corev1.ServicePort{Name: "tcp", Port: 7100, Protocol: corev1.ProtocolTCP}))).To(Succeed())
		// One pod: a listener on its own loopback address answering a greeting, published in
		// an EndpointSlice of its own; it stops listening when it goes, as a pod does.
		pod := func(gen int) (slice string, stop func()) {
			ip := testnet.IP()
			ln, err := net.Listen("tcp", ip+":7100")
			Expect(err).NotTo(HaveOccurred())
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() { defer c.Close(); _, _ = io.WriteString(c, "hello from "+ip+"\n") }()
				}
			}()
			es := rt.Slice(f.ns, "churn", "tcp", 7100, rt.Ready, ip)
			es.Name = "churn-" + strconv.Itoa(gen)
			Expect(k8s.Create(ctx, es)).To(Succeed())
			return es.Name, func() { _ = ln.Close() }
		}
		dial := func() string {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 2*time.Second)
			if err != nil {
				return err.Error()
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "hello from ") {
				return "no greeting: " + line + " " + fmt.Sprint(err)
			}
			return ""
		}
		s1, stop1 := pod(1)
		s2, stop2 := pod(2)
		Eventually(dial, timeout, interval).Should(BeEmpty())
		loop := load.Start(4, dial)
		time.Sleep(300 * time.Millisecond)
		// A rollout, twice: new pods come, then the old ones leave the slice and stop.
		gen := 3
		old := [][2]any{{s1, stop1}, {s2, stop2}}
		for round := 0; round < 2; round++ {
			var fresh [][2]any
			for i := 0; i < 2; i++ {
				s, stop := pod(gen)
				gen++
				fresh = append(fresh, [2]any{s, stop})
			}
			time.Sleep(300 * time.Millisecond)
			for _, o := range old {
				// The pod stops before the table knows (as a crash does): connections meet
				// its refusal and go on to another endpoint, which ejects it.
				o[1].(func())()
				time.Sleep(150 * time.Millisecond)
				Expect(k8s.Delete(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: o[0].(string)}})).To(Succeed())
			}
			time.Sleep(300 * time.Millisecond)
			old = fresh
		}
		total, failed, failures := loop.Stop()
		GinkgoWriter.Printf("%d connections during the churn\n", total)
		Expect(total).To(BeNumerically(">", 100), "the load ran")
		Expect(failed).To(BeZero(), "failed connections: %v", failures)
	})
})
