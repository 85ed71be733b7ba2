package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
)

// Images maps image names (without tag) to local binaries that run them.
type Images map[string]string

func (im Images) binary(image string) (string, bool) {
	name := image
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	b, ok := im[name]
	return b, ok
}

// Agent plays the kubelet for one node.
type Agent struct {
	Name   string
	Index  int
	Labels map[string]string
	Client kubernetes.Interface
	Images Images
	Dir    string // pod state and logs
	CACert []byte
	Log    logr.Logger

	mu       sync.Mutex
	pods     map[string]*podRun // by UID
	stopping map[types.UID]bool
	nextIP   int
	usedIPs  map[string]bool
}

// IP is the node's address.
func (a *Agent) IP() string { return NodeIP(a.Index) }

// Run registers the node, keeps its Lease and status fresh, and runs the pods bound to it until
// ctx ends, when it stops them all.
func (a *Agent) Run(ctx context.Context) error {
	a.pods = map[string]*podRun{}
	a.stopping = map[types.UID]bool{}
	a.usedIPs = map[string]bool{}
	if err := a.register(ctx); err != nil {
		return err
	}
	f := informers.NewSharedInformerFactoryWithOptions(a.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", a.Name).String()
	}))
	inf := f.Core().V1().Pods().Informer()
	onPod := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			a.sync(ctx, p)
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: onPod, UpdateFunc: func(_, n any) { onPod(n) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				a.stop(p.UID, 0)
			}
		},
	})
	f.Start(ctx.Done())
	go a.heartbeat(ctx)
	<-ctx.Done()
	a.mu.Lock()
	runs := make([]*podRun, 0, len(a.pods))
	for _, r := range a.pods {
		runs = append(runs, r)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); r.stopAll(5 * time.Second) }()
	}
	wg.Wait()
	return nil
}

func (a *Agent) register(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: a.Name, Labels: map[string]string{
		"kubernetes.io/hostname": a.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}}}
	for k, v := range a.Labels {
		node.Labels[k] = v
	}
	if _, err := a.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register node %s: %w", a.Name, err)
	}
	return a.postStatus(ctx)
}

func (a *Agent) postStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := a.Client.CoreV1().Nodes().Get(ctx, a.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi"),
			corev1.ResourcePods: resource.MustParse("110")}
		n.Status.Capacity, n.Status.Allocatable = res, res
		n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: a.IP()}, {Type: corev1.NodeHostName, Address: a.Name}}
		n.Status.NodeInfo = corev1.NodeSystemInfo{KubeletVersion: "v1.36.3-portico-agent", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "portico-process://1"}
		n.Status.DaemonEndpoints.KubeletEndpoint.Port = 0
		ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "portico node agent is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready.LastTransitionTime = c.LastTransitionTime
			}
		}
		n.Status.Conditions = []corev1.NodeCondition{ready}
		_, err = a.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// heartbeat renews the node's Lease every 10 s and posts its status every minute, as the
// kubelet does, so the node lifecycle controller keeps it Ready.
func (a *Agent) heartbeat(ctx context.Context) {
	leases := a.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, a.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: a.Name, Namespace: corev1.NamespaceNodeLease},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(a.Name), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now}}, metav1.CreateOptions{})
		} else if err == nil {
			l.Spec.RenewTime = &now
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		if err != nil && ctx.Err() == nil {
			a.Log.Error(err, "Renew lease")
		}
		if time.Since(last) > time.Minute {
			_ = a.postStatus(ctx)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// podRun is one pod's processes and probes.
type podRun struct {
	agent  *Agent
	pod    *corev1.Pod // as first seen; spec is immutable
	ip     string
	cancel context.CancelFunc
	mu     sync.Mutex
	ctrs   map[string]*containerRun
	done   chan struct{}
}

type containerRun struct {
	spec     corev1.Container
	proc     *Process
	restarts int32
	ready    bool
	started  time.Time
	errMsg   string
}

func (a *Agent) sync(ctx context.Context, p *corev1.Pod) {
	a.mu.Lock()
	_, running := a.pods[string(p.UID)]
	stopping := a.stopping[p.UID]
	if p.DeletionTimestamp != nil && running {
		a.stopping[p.UID] = true
	}
	a.mu.Unlock()
	switch {
	case stopping:
		// A graceful stop is under way; it deletes the pod object when done.
	case p.DeletionTimestamp != nil:
		if running {
			grace := int64(30)
			if p.DeletionGracePeriodSeconds != nil {
				grace = *p.DeletionGracePeriodSeconds
			}
			go func() {
				a.stop(p.UID, time.Duration(grace)*time.Second)
				// As the kubelet: the pod object goes once its containers are gone.
				_ = a.Client.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name,
					metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}})
				a.mu.Lock()
				delete(a.stopping, p.UID)
				a.mu.Unlock()
			}()
		} else {
			_ = a.Client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name,
				metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &p.UID}})
		}
	case !running && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
		a.start(ctx, p.DeepCopy())
	}
}

func (a *Agent) allocateIP(p *corev1.Pod) string {
	if p.Spec.HostNetwork {
		return a.IP()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		a.nextIP = a.nextIP%250 + 1
		ip := fmt.Sprintf("10.88.%d.%d", a.Index+1, a.nextIP)
		if !a.usedIPs[ip] {
			a.usedIPs[ip] = true
			return ip
		}
	}
}

func (a *Agent) start(ctx context.Context, p *corev1.Pod) {
	runCtx, cancel := context.WithCancel(ctx)
	r := &podRun{agent: a, pod: p, ip: a.allocateIP(p), cancel: cancel, ctrs: map[string]*containerRun{}, done: make(chan struct{})}
	a.mu.Lock()
	a.pods[string(p.UID)] = r
	a.mu.Unlock()
	go r.run(runCtx)
}

func (a *Agent) stop(uid types.UID, grace time.Duration) {
	key := string(uid)
	a.mu.Lock()
	r := a.pods[key]
	delete(a.pods, key)
	a.mu.Unlock()
	if r == nil {
		return
	}
	r.stopAll(grace)
	a.mu.Lock()
	if !r.pod.Spec.HostNetwork {
		delete(a.usedIPs, r.ip)
	}
	a.mu.Unlock()
}

func (r *podRun) stopAll(grace time.Duration) {
	r.cancel()
	<-r.done
	r.mu.Lock()
	ctrs := make([]*containerRun, 0, len(r.ctrs))
	for _, c := range r.ctrs {
		ctrs = append(ctrs, c)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range ctrs {
		if c.proc != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.proc.Stop(grace) }()
		}
	}
	wg.Wait()
}

// run starts the containers, restarts them when they exit (back-off 1 s doubling to 30 s),
// probes them, and reports status, until ctx ends.
func (r *podRun) run(ctx context.Context) {
	defer close(r.done)
	p := r.pod
	log := r.agent.Log.WithValues("pod", p.Namespace+"/"+p.Name)
	dir := filepath.Join(r.agent.Dir, "pods", p.Namespace+"_"+p.Name+"_"+string(p.UID)[:8])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Error(err, "Pod directory")
		return
	}
	env, err := r.baseEnv(ctx, dir)
	if err != nil {
		r.fail(ctx, "CreateContainerConfigError", err.Error())
		log.Error(err, "Pod environment")
		return
	}
	backoff := map[string]time.Duration{}
	nextStart := map[string]time.Time{}
	for {
		for _, c := range p.Spec.Containers {
			r.mu.Lock()
			cr := r.ctrs[c.Name]
			if cr == nil {
				cr = &containerRun{spec: c}
				r.ctrs[c.Name] = cr
			}
			r.mu.Unlock()
			exited := false
			if cr.proc != nil {
				select {
				case <-cr.proc.Done():
					exited = true
				default:
				}
			}
			if cr.proc != nil && !exited {
				continue
			}
			if exited {
				cr.restarts++
				cr.ready = false
				cr.proc = nil
				b := backoff[c.Name]
				b = min(max(b*2, time.Second), 30*time.Second)
				backoff[c.Name] = b
				nextStart[c.Name] = time.Now().Add(b)
				log.Info("Container exited; restarting with back-off", "container", c.Name, "restarts", cr.restarts, "backoff", b.String())
			}
			if time.Now().Before(nextStart[c.Name]) {
				continue
			}
			bin, ok := r.agent.Images.binary(c.Image)
			if !ok {
				cr.errMsg = fmt.Sprintf("image %q cannot run on the local cluster: only %s", c.Image, strings.Join(r.agent.imageNames(), ", "))
				continue
			}
			cenv, err := r.containerEnv(ctx, c, env)
			if err != nil {
				cr.errMsg = err.Error()
				continue
			}
			args := append(append([]string{}, c.Command...), c.Args...)
			if len(c.Command) > 0 {
				args = c.Args // the image's entrypoint is the binary itself
			}
			proc, err := Start(c.Name, filepath.Join(dir, c.Name+".log"), cenv, bin, args...)
			if err != nil {
				cr.errMsg = err.Error()
				continue
			}
			cr.proc, cr.started, cr.errMsg = proc, time.Now(), ""
			log.Info("Container started", "container", c.Name, "pid", proc.Pid(), "ip", r.ip)
		}
		r.probe(ctx)
		r.report(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *Agent) imageNames() []string {
	var out []string
	for k := range a.Images {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// baseEnv is the environment every container of the pod gets: the bind address (pods share
// the cluster's network namespace, so each binds its own IP) and, unless automounting is off,
// a kubeconfig with a bound token of the pod's ServiceAccount.
func (r *podRun) baseEnv(ctx context.Context, dir string) ([]string, error) {
	p := r.pod
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + dir, "PORTICO_BIND_ADDRESS=" + r.ip}
	if p.Spec.AutomountServiceAccountToken != nil && !*p.Spec.AutomountServiceAccountToken {
		return env, nil
	}
	sa := p.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	tr, err := r.agent.Client.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](48 * 3600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for ServiceAccount %s/%s: %w", p.Namespace, sa, err)
	}
	kc := filepath.Join(dir, "kubeconfig")
	server := fmt.Sprintf("https://%s:%d", APIServerIP, APIServerPort)
	if err := os.WriteFile(kc, Kubeconfig(server, r.agent.CACert, tr.Status.Token), 0o600); err != nil {
		return nil, err
	}
	return append(env, "KUBECONFIG="+kc, "KUBERNETES_SERVICE_HOST="+APIServerIP, "KUBERNETES_SERVICE_PORT="+strconv.Itoa(APIServerPort)), nil
}

// containerEnv resolves a container's env: values, the downward API, ConfigMap and Secret keys.
func (r *podRun) containerEnv(ctx context.Context, c corev1.Container, base []string) ([]string, error) {
	p := r.pod
	env := append([]string{}, base...)
	for _, e := range c.Env {
		v := e.Value
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				switch f.FieldRef.FieldPath {
				case "metadata.name":
					v = p.Name
				case "metadata.namespace":
					v = p.Namespace
				case "metadata.uid":
					v = string(p.UID)
				case "spec.nodeName":
					v = r.agent.Name
				case "spec.serviceAccountName":
					v = p.Spec.ServiceAccountName
				case "status.podIP":
					v = r.ip
				case "status.hostIP":
					v = r.agent.IP()
				default:
					return nil, fmt.Errorf("env %s: field %s is not supported on the local cluster", e.Name, f.FieldRef.FieldPath)
				}
			case f.ConfigMapKeyRef != nil:
				cm, err := r.agent.Client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, f.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = cm.Data[f.ConfigMapKeyRef.Key]
			case f.SecretKeyRef != nil:
				s, err := r.agent.Client.CoreV1().Secrets(p.Namespace).Get(ctx, f.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = string(s.Data[f.SecretKeyRef.Key])
			}
		}
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

// probe runs readiness and liveness HTTP probes (only httpGet and tcpSocket are supported).
func (r *podRun) probe(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, cr := range r.ctrs {
		if cr.proc == nil {
			cr.ready = false
			continue
		}
		rp := cr.spec.ReadinessProbe
		cr.ready = rp == nil || r.check(ctx, cr.spec, rp)
		if lp := cr.spec.LivenessProbe; lp != nil && time.Since(cr.started) > time.Duration(lp.InitialDelaySeconds+lp.PeriodSeconds*max(lp.FailureThreshold, 3))*time.Second {
			if !r.check(ctx, cr.spec, lp) {
				r.agent.Log.Info("Liveness probe failed; restarting", "pod", r.pod.Name, "container", cr.spec.Name)
				go cr.proc.Stop(time.Duration(ptr.Deref(r.pod.Spec.TerminationGracePeriodSeconds, 30)) * time.Second)
			}
		}
	}
}

func (r *podRun) check(ctx context.Context, c corev1.Container, pr *corev1.Probe) bool {
	port := func(p intstr.IntOrString) string {
		if p.Type == intstr.Int {
			return strconv.Itoa(p.IntValue())
		}
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return strconv.Itoa(int(cp.ContainerPort))
			}
		}
		return p.StrVal
	}
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	switch {
	case pr.HTTPGet != nil:
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		url := "http://" + net.JoinHostPort(r.ip, port(pr.HTTPGet.Port)) + pr.HTTPGet.Path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode >= 200 && resp.StatusCode < 400
	case pr.TCPSocket != nil:
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(r.ip, port(pr.TCPSocket.Port)), timeout)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	}
	return true
}

// report writes the pod's status when it changed.
func (r *podRun) report(ctx context.Context) {
	r.mu.Lock()
	var statuses []corev1.ContainerStatus
	allReady := true
	for _, c := range r.pod.Spec.Containers {
		cr := r.ctrs[c.Name]
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "portico-process://" + c.Image, Ready: cr != nil && cr.ready,
			ContainerID: "process://" + c.Name}
		if cr != nil {
			cs.RestartCount = cr.restarts
			switch {
			case cr.proc != nil:
				cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(cr.started)}
				cs.Started = ptr.To(true)
			case cr.errMsg != "":
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: cr.errMsg}
			default:
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
			}
		}
		allReady = allReady && cs.Ready
		statuses = append(statuses, cs)
	}
	r.mu.Unlock()
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s}
	}
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := r.agent.Client.CoreV1().Pods(r.pod.Namespace).Get(ctx, r.pod.Name, metav1.GetOptions{})
		if err != nil || live.UID != r.pod.UID {
			return nil
		}
		st := live.Status.DeepCopy()
		st.Phase = corev1.PodRunning
		st.HostIP, st.PodIP = r.agent.IP(), r.ip
		st.HostIPs, st.PodIPs = []corev1.HostIP{{IP: r.agent.IP()}}, []corev1.PodIP{{IP: r.ip}}
		if st.StartTime == nil {
			st.StartTime = ptr.To(metav1.Now())
		}
		st.ContainerStatuses = statuses
		want := []corev1.PodCondition{cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, allReady), cond(corev1.PodReady, allReady)}
		changed := !sameStatus(&live.Status, st, want)
		if !changed {
			return nil
		}
		now := metav1.Now()
		for i := range want {
			want[i].LastTransitionTime = now
			for _, old := range live.Status.Conditions {
				if old.Type == want[i].Type && old.Status == want[i].Status {
					want[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		st.Conditions = want
		live.Status = *st
		_, err = r.agent.Client.CoreV1().Pods(live.Namespace).UpdateStatus(ctx, live, metav1.UpdateOptions{})
		return err
	})
}

func sameStatus(old, st *corev1.PodStatus, want []corev1.PodCondition) bool {
	if old.Phase != st.Phase || old.PodIP != st.PodIP || len(old.ContainerStatuses) != len(st.ContainerStatuses) {
		return false
	}
	for i := range st.ContainerStatuses {
		a, b := old.ContainerStatuses[i], st.ContainerStatuses[i]
		if a.Ready != b.Ready || a.RestartCount != b.RestartCount || (a.State.Running == nil) != (b.State.Running == nil) ||
			(a.State.Waiting == nil) != (b.State.Waiting == nil) {
			return false
		}
	}
	for _, w := range want {
		found := false
		for _, c := range old.Conditions {
			if c.Type == w.Type && c.Status == w.Status {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func (r *podRun) fail(ctx context.Context, reason, msg string) {
	_ = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		live, err := r.agent.Client.CoreV1().Pods(r.pod.Namespace).Get(ctx, r.pod.Name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		live.Status.Phase = corev1.PodPending
		live.Status.Reason, live.Status.Message = reason, msg
		_, err = r.agent.Client.CoreV1().Pods(live.Namespace).UpdateStatus(ctx, live, metav1.UpdateOptions{})
		return err
	})
}
