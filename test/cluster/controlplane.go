// Package cluster is the local cluster: the real control plane (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler from hack/k8s-binaries.sh) plus simulated nodes whose
// agent plays the kubelet, running pods as processes of locally built binaries, a userspace
// stand-in for kube-proxy's NodePorts and a LoadBalancer controller. Everything runs inside a
// network namespace of its own (hack/cluster.sh) where 10.88.0.0/16 is a local range: node N is
// 10.88.0.N, its pods 10.88.N.x, balancers 10.88.250.x.
package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/go-logr/logr"
)

// Addresses of the local cluster's network.
const (
	APIServerIP   = "10.88.0.1" // also the advertise address; node N is 10.88.0.(N+1)
	APIServerPort = 6443
	ServiceCIDR   = "10.96.0.0/16"
	adminToken    = "portico-local-admin"
)

// NodeIP is the address of node i (0-based): 10.88.0.2, 10.88.0.3, ...
func NodeIP(i int) string { return fmt.Sprintf("10.88.0.%d", i+2) }

// Process is a child process of the cluster, in a process group of its own.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start runs a command with its output appended to logPath.
func Start(name, logPath string, env []string, bin string, args ...string) (*Process, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the exit error, after Done.
func (p *Process) Err() error { return p.err }

// Stop sends SIGTERM to the process group, then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// ControlPlane is etcd, kube-apiserver, kube-controller-manager and kube-scheduler.
type ControlPlane struct {
	Dir        string // state: certificates, etcd data, logs, kubeconfig
	BinDir     string // hack/k8s-binaries.sh output
	Kubeconfig string
	CACert     []byte
	procs      []*Process
	log        logr.Logger
}

// StartControlPlane generates certificates and starts the four components, returning once the
// API server answers /readyz.
func StartControlPlane(ctx context.Context, dir, binDir string, log logr.Logger) (*ControlPlane, error) {
	cp := &ControlPlane{Dir: dir, BinDir: binDir, log: log}
	for _, d := range []string{"pki", "etcd", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := cp.writePKI(); err != nil {
		return nil, err
	}
	pki := func(f string) string { return filepath.Join(dir, "pki", f) }
	logp := func(f string) string { return filepath.Join(dir, "logs", f+".log") }
	start := func(name string, args ...string) error {
		p, err := Start(name, logp(name), os.Environ(), filepath.Join(binDir, name), args...)
		if err != nil {
			return err
		}
		cp.procs = append(cp.procs, p)
		log.Info("Started", "component", name, "pid", p.Pid())
		return nil
	}
	if err := start("etcd", "--data-dir="+filepath.Join(dir, "etcd"), "--listen-client-urls=http://127.0.0.1:2379",
		"--advertise-client-urls=http://127.0.0.1:2379", "--listen-peer-urls=http://127.0.0.1:2380",
		"--initial-advertise-peer-urls=http://127.0.0.1:2380", "--initial-cluster=default=http://127.0.0.1:2380",
		"--unsafe-no-fsync", "--log-level=warn"); err != nil {
		return nil, err
	}
	if err := start("kube-apiserver",
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", fmt.Sprintf("--secure-port=%d", APIServerPort), "--advertise-address="+APIServerIP,
		"--tls-cert-file="+pki("apiserver.crt"), "--tls-private-key-file="+pki("apiserver.key"),
		"--client-ca-file="+pki("ca.crt"), "--token-auth-file="+pki("tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+pki("sa.pub"),
		"--service-account-signing-key-file="+pki("sa.key"), "--api-audiences=https://kubernetes.default.svc",
		"--service-cluster-ip-range="+ServiceCIDR, "--allow-privileged=true", "--profiling=false",
		"--enable-priority-and-fairness=false"); err != nil {
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, Kubeconfig(fmt.Sprintf("https://127.0.0.1:%d", APIServerPort), cp.CACert, adminToken), 0o600); err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx); err != nil {
		return nil, err
	}
	if err := start("kube-controller-manager", "--kubeconfig="+cp.Kubeconfig, "--leader-elect=false",
		"--controllers=*", "--service-account-private-key-file="+pki("sa.key"), "--root-ca-file="+pki("ca.crt"),
		"--bind-address=127.0.0.1", "--secure-port=10257", "--node-monitor-grace-period=40s",
		"--service-cluster-ip-range="+ServiceCIDR, "--use-service-account-credentials=false"); err != nil {
		return nil, err
	}
	if err := start("kube-scheduler", "--kubeconfig="+cp.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port=10259"); err != nil {
		return nil, err
	}
	return cp, nil
}

func (cp *ControlPlane) waitReady(ctx context.Context) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(cp.CACert)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig(pool)}}
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/readyz", APIServerPort), nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		for _, p := range cp.procs {
			select {
			case <-p.Done():
				return fmt.Errorf("%s exited: %v (see %s)", p.Name, p.Err(), filepath.Join(cp.Dir, "logs", p.Name+".log"))
			default:
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready after 2 minutes (see %s)", filepath.Join(cp.Dir, "logs", "kube-apiserver.log"))
}

// Stop stops the components in reverse order.
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].Stop(10 * time.Second)
	}
}

// writePKI makes a CA, the API server's serving certificate, the service account key pair and
// the static admin token (once: a restarted cluster keeps them).
func (cp *ControlPlane) writePKI() error {
	pki := func(f string) string { return filepath.Join(cp.Dir, "pki", f) }
	if b, err := os.ReadFile(pki("ca.crt")); err == nil {
		cp.CACert = b
		return nil
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "portico-local-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srvTpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP(APIServerIP), net.ParseIP("10.96.0.1")}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	saKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	saPub, _ := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	cp.CACert = pemBlock("CERTIFICATE", caDER)
	files := map[string][]byte{
		"ca.crt":        cp.CACert,
		"apiserver.crt": pemBlock("CERTIFICATE", srvDER),
		"apiserver.key": ecKeyPEM(srvKey),
		"sa.key":        ecKeyPEM(saKey),
		"sa.pub":        pemBlock("PUBLIC KEY", saPub),
		"tokens.csv":    []byte(adminToken + ",admin,admin,system:masters\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(pki(name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func pemBlock(t string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: t, Bytes: der})
}

func ecKeyPEM(k *ecdsa.PrivateKey) []byte {
	der, _ := x509.MarshalECPrivateKey(k)
	return pemBlock("EC PRIVATE KEY", der)
}

// Kubeconfig is a kubeconfig document for a bearer token.
func Kubeconfig(server string, ca []byte, token string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: portico-local
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: user
  user:
    token: %s
contexts:
- name: portico-local
  context: {cluster: portico-local, user: user}
current-context: portico-local
`, server, b64(ca), token))
}
