// Package render turns an IngressDeployment into the objects that make up its fleet. Every
// function here is pure: all inputs are arguments, output is deterministic, nothing is read from
// the cluster or the environment. The reconciler applies what Render returns and deletes every
// object carrying the fleet's labels that Render did not return, so a topology switch leaves
// nothing behind.
package render

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	proxyconfig "portico.dev/portico/dataplane/config"
)

// Labels put on every rendered object. The fleet labels let the operator find (and prune) what it
// rendered for a fleet, including cluster-scoped and cross-namespace objects that cannot carry an
// owner reference to a namespaced IngressDeployment.
const (
	LabelName           = "app.kubernetes.io/name"
	LabelInstance       = "app.kubernetes.io/instance"
	LabelComponent      = "app.kubernetes.io/component"
	LabelManagedBy      = "app.kubernetes.io/managed-by"
	LabelFleetNamespace = "ingress.portico.dev/fleet-namespace"
	LabelFleetName      = "ingress.portico.dev/fleet-name"

	ManagedByValue = "portico-operator"
	NameValue      = "portico"

	ComponentProxy          = "proxy"
	ComponentDefaultBackend = "default-backend"
)

// Ports inside the pods of the Deployment topologies and of the managed default backend. They are
// unprivileged, so those pods need no capability at all.
const (
	ContainerHTTPPort   int32 = 8080
	ContainerHTTPSPort  int32 = 8443
	ContainerHealthPort int32 = 10254
	// unprivilegedPortStart is the first port a process without NET_BIND_SERVICE may bind.
	unprivilegedPortStart int32 = 1024
	// nonRootUID is the distroless nonroot user.
	nonRootUID int64 = 65532
	// drainSeconds is how long a terminating proxy keeps serving with readiness false.
	drainSeconds int64 = 15
)

// Input is everything a fleet's objects depend on.
type Input struct {
	// Fleet is the IngressDeployment; it is not modified.
	Fleet *porticov1alpha1.IngressDeployment
	// Image runs the proxy and the managed default backend (`portico proxy`, `portico default-backend`).
	Image string
	// ExcludedNodes are nodes this fleet must not run on (HostNetwork host port conflicts with
	// an older fleet). Sorted by the caller or not, the output is sorted.
	ExcludedNodes []string
}

// Render returns the desired objects of a fleet, in apply order (identity and RBAC first, then
// configuration, workloads, Services). Every object has its TypeMeta, name, namespace (if
// namespaced) and labels set; namespaced objects in the fleet's namespace carry a controller
// owner reference to the IngressDeployment.
func Render(in Input) ([]client.Object, error) {
	f := in.Fleet
	if f == nil {
		return nil, fmt.Errorf("render: no IngressDeployment")
	}
	if in.Image == "" {
		return nil, fmt.Errorf("render %s/%s: no image", f.Namespace, f.Name)
	}
	cfg, err := ProxyConfig(f).Marshal()
	if err != nil {
		return nil, fmt.Errorf("render %s/%s: %w", f.Namespace, f.Name, err)
	}

	objs := []client.Object{proxyServiceAccount(f)}
	objs = append(objs, proxyRBAC(f)...)
	objs = append(objs, proxyConfigMap(f, cfg))
	if f.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork {
		objs = append(objs, proxyDaemonSet(f, in.Image, in.ExcludedNodes))
	} else {
		objs = append(objs, proxyDeployment(f, in.Image), proxyService(f), proxyPDB(f))
	}
	if managedDefaultBackend(f) {
		objs = append(objs, defaultBackendServiceAccount(f), defaultBackendDeployment(f, in.Image), defaultBackendService(f))
	}
	for _, o := range objs {
		if o.GetNamespace() == f.Namespace {
			o.SetOwnerReferences([]metav1.OwnerReference{ownerRef(f)})
		}
	}
	return objs, nil
}

// ProxyName is the name of the proxy's ServiceAccount, ConfigMap, workload, Service and PDB.
func ProxyName(f *porticov1alpha1.IngressDeployment) string { return f.Name + "-proxy" }

// DefaultBackendName is the name of the managed default backend's objects.
func DefaultBackendName(f *porticov1alpha1.IngressDeployment) string {
	return f.Name + "-default-backend"
}

// ClusterScopedName names the fleet's ClusterRole, ClusterRoleBinding and the Roles it gets in
// watched namespaces: unique across fleets, as those objects share one namespace or none.
func ClusterScopedName(f *porticov1alpha1.IngressDeployment) string {
	return "portico-proxy:" + f.Namespace + ":" + f.Name
}

// FleetLabels selects every object rendered for the fleet.
func FleetLabels(f *porticov1alpha1.IngressDeployment) map[string]string {
	return map[string]string{
		LabelManagedBy:      ManagedByValue,
		LabelFleetNamespace: f.Namespace,
		LabelFleetName:      f.Name,
	}
}

// ProxySelector selects the fleet's proxy pods.
func ProxySelector(f *porticov1alpha1.IngressDeployment) map[string]string {
	return selector(f, ComponentProxy)
}

func selector(f *porticov1alpha1.IngressDeployment, component string) map[string]string {
	return map[string]string{LabelName: NameValue, LabelInstance: f.Name, LabelComponent: component}
}

func labels(f *porticov1alpha1.IngressDeployment, component string) map[string]string {
	l := FleetLabels(f)
	for k, v := range selector(f, component) {
		l[k] = v
	}
	return l
}

func meta(f *porticov1alpha1.IngressDeployment, name, namespace, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels(f, component)}
}

func ownerRef(f *porticov1alpha1.IngressDeployment) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         porticov1alpha1.GroupVersion.String(),
		Kind:               "IngressDeployment",
		Name:               f.Name,
		UID:                f.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

func managedDefaultBackend(f *porticov1alpha1.IngressDeployment) bool {
	db := f.Spec.DefaultBackend
	return db == nil || db.Type == "" || db.Type == porticov1alpha1.DefaultBackendManaged
}

// ManagedStatusCode is the status the managed default backend answers with.
func ManagedStatusCode(f *porticov1alpha1.IngressDeployment) int32 {
	if db := f.Spec.DefaultBackend; db != nil && db.Managed != nil && db.Managed.StatusCode != 0 {
		return db.Managed.StatusCode
	}
	return porticov1alpha1.DefaultManagedStatusCode
}

// ProxyConfig is the proxy's runtime configuration for the fleet.
func ProxyConfig(f *porticov1alpha1.IngressDeployment) proxyconfig.Config {
	c := proxyconfig.Config{
		FleetNamespace:     f.Namespace,
		FleetName:          f.Name,
		WatchNamespaces:    sortedCopy(f.Spec.WatchNamespaces),
		IgnoreDefaultClass: f.Spec.IgnoreDefaultClass,

		IngressNginxCompatibility: f.Spec.IngressNginxCompatibility,
	}
	if managedDefaultBackend(f) {
		c.DefaultBackend = &proxyconfig.ServiceRef{Namespace: f.Namespace, Name: DefaultBackendName(f), Port: 80}
	} else {
		s := f.Spec.DefaultBackend.Service
		c.DefaultBackend = &proxyconfig.ServiceRef{Namespace: f.Namespace, Name: s.Name, Port: s.Port}
	}
	if dc := f.Spec.DefaultCertificate; dc != nil {
		c.DefaultCertificate = f.Namespace + "/" + dc.SecretName
	}
	c.HTTP = proxyHTTP(f.Spec.HTTP)
	if ca := f.Spec.ClientAddress; ca != nil && (ca.ProxyProtocol || len(ca.TrustedProxies) > 0) {
		c.ClientAddress = &proxyconfig.ClientAddress{ProxyProtocol: ca.ProxyProtocol, TrustedProxies: sortedCopy(ca.TrustedProxies)}
	}
	if a := f.Spec.AccessLog; a != nil {
		c.AccessLog = &proxyconfig.AccessLog{Enabled: a.Enabled}
		if a.OneIn != nil {
			c.AccessLog.OneIn = *a.OneIn
		}
	}
	for _, p := range L4Ports(f) {
		s := proxyconfig.L4Service{Port: p.Port, ListenPort: p.ListenPort, Service: proxyconfig.ServiceRef{Namespace: p.Service.Namespace, Name: p.Service.Name}}
		if p.Service.Port.Type == intstr.String {
			s.Service.PortName = p.Service.Port.StrVal
		} else {
			s.Service.Port = p.Service.Port.IntVal
		}
		switch p.ProxyProtocol {
		case porticov1alpha1.ProxyProtocolV1:
			s.ProxyProtocol = proxyconfig.ProxyProtocolV1
		case porticov1alpha1.ProxyProtocolV2:
			s.ProxyProtocol = proxyconfig.ProxyProtocolV2
		}
		if p.Protocol == corev1.ProtocolUDP {
			c.UDP = append(c.UDP, s)
		} else {
			c.TCP = append(c.TCP, s)
		}
	}
	return c
}

// proxyHTTP is spec.http as the proxy reads it; nil (every default) when spec.http is absent.
// A field left out stays unset, so the proxy applies its default (the CRD's CEL rules keep the
// size a whole, non-negative number of bytes and the timeout positive).
func proxyHTTP(h *porticov1alpha1.HTTPSettings) *proxyconfig.HTTP {
	if h == nil {
		return nil
	}
	out := &proxyconfig.HTTP{AllowUnderscoresInHeaders: h.AllowUnderscoresInHeaders}
	if h.LimitStatusCode != nil {
		out.LimitStatusCode = *h.LimitStatusCode
	}
	if q := h.MaxRequestBodySize; q != nil {
		out.MaxRequestBodyBytes = ptr.To(q.Value())
	}
	if d := h.ClientBodyTimeout; d != nil {
		out.ClientBodyTimeout = d.Duration.String()
	}
	for _, x := range []struct {
		d   *metav1.Duration
		dst *string
	}{{h.ProxyConnectTimeout, &out.ProxyConnectTimeout}, {h.ProxyReadTimeout, &out.ProxyReadTimeout}, {h.ProxySendTimeout, &out.ProxySendTimeout}} {
		if x.d != nil {
			*x.dst = x.d.Duration.String()
		}
	}
	out.SSLRedirect = h.SSLRedirect
	if s := h.HSTS; s != nil {
		out.HSTS = &proxyconfig.HSTS{Enabled: s.Enabled, MaxAgeSeconds: s.MaxAgeSeconds, IncludeSubdomains: s.IncludeSubdomains, Preload: s.Preload}
	}
	return out
}

// HostPorts are the node ports a HostNetwork fleet binds: http, https, health.
func HostPorts(f *porticov1alpha1.IngressDeployment) (http, https, health int32) {
	http, https, health = porticov1alpha1.DefaultHTTPPort, porticov1alpha1.DefaultHTTPSPort, porticov1alpha1.DefaultHealthPort
	if hn := f.Spec.Topology.HostNetwork; hn != nil {
		if hn.HTTPPort != 0 {
			http = hn.HTTPPort
		}
		if hn.HTTPSPort != 0 {
			https = hn.HTTPSPort
		}
		if hn.HealthPort != 0 {
			health = hn.HealthPort
		}
	}
	return http, https, health
}

// L4Port is one port of spec.tcp or spec.udp as the fleet's objects carry it.
type L4Port struct {
	Protocol corev1.Protocol
	// Port is the fleet's port: a host port (HostNetwork) or a port of the fleet's Service.
	Port int32
	// ListenPort is the port the proxy binds in its pod (see L4Ports).
	ListenPort int32
	// NodePort is the pinned node port (NodePort topology), 0 for one the API server picks.
	NodePort int32
	// Name names the container port and the Service port: "tcp-5432", "udp-53".
	Name string
	// Service is the Service port forwarded to, its namespace defaulted to the fleet's.
	Service porticov1alpha1.L4ServiceReference
	// ProxyProtocol is the TCP service's PROXY protocol setting; empty for UDP.
	ProxyProtocol porticov1alpha1.ProxyProtocolVersion
}

// Listen ports are moved by this much when a Deployment-topology pod cannot bind the fleet's
// port itself (privileged, or one of the proxy's own ports): 53 is bound as 10053, 8080 as
// 18080.
const listenPortShift int32 = 10000

// L4Ports returns the fleet's TCP ports, then its UDP ports, each sorted by port (so reordering
// spec.tcp changes no object). A HostNetwork proxy binds each port itself (the host port is
// the container port). A NodePort or LoadBalancer proxy binds the fleet's port when it is 1024
// or above and, for TCP, none of the proxy's own ports (8080, 8443, 10254); otherwise the port
// plus 10000, or the next port above that no other listener of the protocol uses, so the pod
// keeps needing no capability and the Service's target port (by name) hides the difference.
func L4Ports(f *porticov1alpha1.IngressDeployment) []L4Port {
	var tcp, udp []L4Port
	for _, s := range f.Spec.TCP {
		tcp = append(tcp, l4Port(f, corev1.ProtocolTCP, s.Port, s.NodePort, s.Service, s.ProxyProtocol))
	}
	for _, s := range f.Spec.UDP {
		udp = append(udp, l4Port(f, corev1.ProtocolUDP, s.Port, s.NodePort, s.Service, ""))
	}
	hostNet := f.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork
	assignListenPorts(tcp, hostNet, []int32{ContainerHTTPPort, ContainerHTTPSPort, ContainerHealthPort})
	assignListenPorts(udp, hostNet, nil)
	return append(tcp, udp...)
}

func l4Port(f *porticov1alpha1.IngressDeployment, proto corev1.Protocol, port int32, nodePort *int32, svc porticov1alpha1.L4ServiceReference, pp porticov1alpha1.ProxyProtocolVersion) L4Port {
	if svc.Namespace == "" {
		svc.Namespace = f.Namespace
	}
	if pp == porticov1alpha1.ProxyProtocolNone {
		pp = ""
	}
	return L4Port{Protocol: proto, Port: port, NodePort: ptr.Deref(nodePort, 0), Service: svc, ProxyProtocol: pp,
		Name: strings.ToLower(string(proto)) + "-" + strconv.Itoa(int(port))}
}

// assignListenPorts sorts one protocol's ports and sets their listen ports (see L4Ports);
// reserved are the proxy's own ports of that protocol in a Deployment-topology pod.
func assignListenPorts(ports []L4Port, hostNet bool, reserved []int32) {
	sort.Slice(ports, func(a, b int) bool { return ports[a].Port < ports[b].Port })
	taken := map[int32]bool{}
	for _, r := range reserved {
		taken[r] = true
	}
	movable := func(p int32) bool { return !hostNet && (p < unprivilegedPortStart || slices.Contains(reserved, p)) }
	for i := range ports {
		if p := ports[i].Port; !movable(p) {
			ports[i].ListenPort = p
			taken[p] = true
		}
	}
	for i := range ports {
		if p := ports[i].Port; movable(p) {
			q := p + listenPortShift
			for taken[q] {
				q++
			}
			ports[i].ListenPort = q
			taken[q] = true
		}
	}
}

func proxyServiceAccount(f *porticov1alpha1.IngressDeployment) client.Object {
	return &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
	}
}

var readOnly = []string{"get", "list", "watch"}

// proxyRBAC grants the proxy read-only access to what it serves from: IngressClasses (cluster
// scoped, always through a ClusterRole); Ingresses, Services, EndpointSlices and Secrets (cluster
// wide, or through a Role in each watched namespace); and its own ConfigMap, by name.
func proxyRBAC(f *porticov1alpha1.IngressDeployment) []client.Object {
	name := ClusterScopedName(f)
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: ProxyName(f), Namespace: f.Namespace}}
	served := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets", "services"}, Verbs: readOnly},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: readOnly},
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingresses"}, Verbs: readOnly},
	}
	clusterRules := []rbacv1.PolicyRule{
		{APIGroups: []string{"networking.k8s.io"}, Resources: []string{"ingressclasses"}, Verbs: readOnly},
	}
	watch := sortedCopy(f.Spec.WatchNamespaces)
	if len(watch) == 0 {
		clusterRules = append(served, clusterRules...)
	}
	objs := []client.Object{
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: meta(f, name, "", ComponentProxy),
			Rules:      clusterRules,
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: meta(f, name, "", ComponentProxy),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
			Subjects:   subject,
		},
	}
	objs = append(objs, roleAndBinding(f, ProxyName(f), f.Namespace, subject, []rbacv1.PolicyRule{{
		APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{ProxyName(f)}, Verbs: readOnly,
	}})...)
	for _, ns := range watch {
		objs = append(objs, roleAndBinding(f, name, ns, subject, served)...)
	}
	// TCP and UDP services may live outside the watched namespaces: there the proxy reads
	// Services and EndpointSlices only.
	if len(watch) > 0 {
		backends := []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: readOnly},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: readOnly},
		}
		for _, ns := range l4Namespaces(f) {
			if !slices.Contains(watch, ns) {
				objs = append(objs, roleAndBinding(f, name, ns, subject, backends)...)
			}
		}
	}
	return objs
}

// l4Namespaces are the namespaces of the fleet's TCP and UDP services, sorted, once each.
func l4Namespaces(f *porticov1alpha1.IngressDeployment) []string {
	var out []string
	for _, p := range L4Ports(f) {
		if !slices.Contains(out, p.Service.Namespace) {
			out = append(out, p.Service.Namespace)
		}
	}
	sort.Strings(out)
	return out
}

func roleAndBinding(f *porticov1alpha1.IngressDeployment, name, ns string, subject []rbacv1.Subject, rules []rbacv1.PolicyRule) []client.Object {
	return []client.Object{
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: meta(f, name, ns, ComponentProxy),
			Rules:      rules,
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: meta(f, name, ns, ComponentProxy),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects:   subject,
		},
	}
}

func proxyConfigMap(f *porticov1alpha1.IngressDeployment, cfg string) client.Object {
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
		Data:       map[string]string{proxyconfig.ConfigKey: cfg},
	}
}

// proxyPodSpec is the proxy pod of every topology. The pod meets the restricted Pod Security
// profile, except that a HostNetwork proxy uses the host's network and, for ports below 1024,
// the NET_BIND_SERVICE capability (granted to the non-root process through the binary's file
// capability, which needs allowPrivilegeEscalation).
func proxyPodSpec(f *porticov1alpha1.IngressDeployment, image string, excluded []string) corev1.PodTemplateSpec {
	hostNet := f.Spec.Topology.Type == porticov1alpha1.TopologyHostNetwork
	httpPort, httpsPort, healthPort := ContainerHTTPPort, ContainerHTTPSPort, ContainerHealthPort
	if hostNet {
		httpPort, httpsPort, healthPort = HostPorts(f)
	}
	ports := []corev1.ContainerPort{
		{Name: "http", ContainerPort: httpPort, Protocol: corev1.ProtocolTCP},
		{Name: "https", ContainerPort: httpsPort, Protocol: corev1.ProtocolTCP},
		{Name: "health", ContainerPort: healthPort, Protocol: corev1.ProtocolTCP},
	}
	lowest := min(httpPort, httpsPort, healthPort)
	for _, p := range L4Ports(f) {
		ports = append(ports, corev1.ContainerPort{Name: p.Name, ContainerPort: p.ListenPort, Protocol: p.Protocol})
		lowest = min(lowest, p.ListenPort)
	}
	sc := containerSecurityContext()
	if hostNet {
		for i := range ports {
			ports[i].HostPort = ports[i].ContainerPort
		}
		if lowest < unprivilegedPortStart {
			sc.Capabilities.Add = []corev1.Capability{"NET_BIND_SERVICE"}
			sc.AllowPrivilegeEscalation = ptr.To(true)
		}
	}
	args := []string{
		"proxy",
		"--fleet=" + f.Namespace + "/" + f.Name,
		"--config-map=" + ProxyName(f),
		"--http-port=" + strconv.Itoa(int(httpPort)),
		"--https-port=" + strconv.Itoa(int(httpsPort)),
		"--health-port=" + strconv.Itoa(int(healthPort)),
		"--drain-seconds=" + strconv.FormatInt(drainSeconds, 10),
	}
	spec := corev1.PodSpec{
		ServiceAccountName:            ProxyName(f),
		AutomountServiceAccountToken:  ptr.To(true),
		SecurityContext:               podSecurityContext(),
		TerminationGracePeriodSeconds: ptr.To(drainSeconds + 30),
		Containers: []corev1.Container{{
			Name:            "proxy",
			Image:           image,
			Args:            args,
			Env:             downwardEnv(),
			Ports:           ports,
			Resources:       resources(f.Spec.Resources, "100m", "64Mi"),
			ReadinessProbe:  probe("/readyz", 1, 3),
			LivenessProbe:   probe("/healthz", 10, 5),
			SecurityContext: sc,
		}},
	}
	if hostNet {
		spec.HostNetwork = true
		spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	if np := f.Spec.NodePlacement; np != nil {
		spec.NodeSelector = np.NodeSelector
		spec.Tolerations = np.Tolerations
		if np.Affinity != nil {
			spec.Affinity = np.Affinity.DeepCopy()
		}
	}
	spec.Affinity = excludeNodes(spec.Affinity, excluded)
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels(f, ComponentProxy)},
		Spec:       spec,
	}
}

// excludeNodes adds "metadata.name NotIn [node]" for each excluded node to every required node
// selector term (terms are ORed, so each needs them; requirements in a term are ANDed, and the API
// server allows one value per metadata.name requirement), creating one term when there is none.
func excludeNodes(a *corev1.Affinity, excluded []string) *corev1.Affinity {
	if len(excluded) == 0 {
		return a
	}
	reqs := make([]corev1.NodeSelectorRequirement, 0, len(excluded))
	for _, n := range sortedCopy(excluded) {
		reqs = append(reqs, corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpNotIn, Values: []string{n}})
	}
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	if a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{}
	}
	ns := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	if len(ns.NodeSelectorTerms) == 0 {
		ns.NodeSelectorTerms = []corev1.NodeSelectorTerm{{}}
	}
	for i := range ns.NodeSelectorTerms {
		ns.NodeSelectorTerms[i].MatchFields = append(ns.NodeSelectorTerms[i].MatchFields, reqs...)
	}
	return a
}

func podSecurityContext() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(nonRootUID),
		RunAsGroup:     ptr.To(nonRootUID),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func containerSecurityContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		RunAsNonRoot:             ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func downwardEnv() []corev1.EnvVar {
	field := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	return []corev1.EnvVar{
		field("POD_NAME", "metadata.name"),
		field("POD_NAMESPACE", "metadata.namespace"),
		field("NODE_NAME", "spec.nodeName"),
	}
}

func probe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("health")}},
		PeriodSeconds:    period,
		FailureThreshold: failures,
		TimeoutSeconds:   1,
		SuccessThreshold: 1,
	}
}

// resources returns the user's resources, or requests only (no limits, so no CPU throttling on
// the data path) when none are given. Every container has requests, as OLM bundles require.
func resources(r *corev1.ResourceRequirements, cpu, mem string) corev1.ResourceRequirements {
	if r != nil && (len(r.Requests) > 0 || len(r.Limits) > 0) {
		return *r.DeepCopy()
	}
	return corev1.ResourceRequirements{Requests: corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(cpu),
		corev1.ResourceMemory: resource.MustParse(mem),
	}}
}

func proxyDaemonSet(f *porticov1alpha1.IngressDeployment, image string, excluded []string) client.Object {
	tpl := proxyPodSpec(f, image, excluded)
	return &appsv1.DaemonSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: ProxySelector(f)},
			Template: tpl,
			// Host ports cannot be shared, so a node's old pod goes before its new one starts.
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
			},
		},
	}
}

// Replicas is the proxy Deployment's replica count.
func Replicas(f *porticov1alpha1.IngressDeployment) int32 {
	if f.Spec.Replicas != nil {
		return *f.Spec.Replicas
	}
	return porticov1alpha1.DefaultReplicas
}

func proxyDeployment(f *porticov1alpha1.IngressDeployment, image string) client.Object {
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(Replicas(f)),
			Selector: &metav1.LabelSelector{MatchLabels: ProxySelector(f)},
			Template: proxyPodSpec(f, image, nil),
			// A new proxy is ready before an old one goes: capacity never drops in a rollout.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
		},
	}
}

func proxyService(f *porticov1alpha1.IngressDeployment) client.Object {
	t := f.Spec.Topology
	svc := &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
		Spec: corev1.ServiceSpec{
			Selector: ProxySelector(f),
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP},
				{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP},
			},
		},
	}
	if t.ExternalTrafficPolicy != nil {
		svc.Spec.ExternalTrafficPolicy = *t.ExternalTrafficPolicy
	}
	for _, p := range L4Ports(f) {
		sp := corev1.ServicePort{Name: p.Name, Port: p.Port, TargetPort: intstr.FromString(p.Name), Protocol: p.Protocol}
		if t.Type == porticov1alpha1.TopologyNodePort {
			sp.NodePort = p.NodePort
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	switch t.Type {
	case porticov1alpha1.TopologyNodePort:
		svc.Spec.Type = corev1.ServiceTypeNodePort
		if np := t.NodePort; np != nil {
			svc.Spec.Ports[0].NodePort = ptr.Deref(np.HTTPNodePort, 0)
			svc.Spec.Ports[1].NodePort = ptr.Deref(np.HTTPSNodePort, 0)
		}
	case porticov1alpha1.TopologyLoadBalancer:
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
		if lb := t.LoadBalancer; lb != nil {
			svc.Spec.LoadBalancerClass = lb.LoadBalancerClass
			svc.Spec.LoadBalancerSourceRanges = sortedCopy(lb.LoadBalancerSourceRanges)
			if len(lb.Annotations) > 0 {
				svc.Annotations = make(map[string]string, len(lb.Annotations))
				for k, v := range lb.Annotations {
					svc.Annotations[k] = v
				}
			}
		}
	}
	return svc
}

func proxyPDB(f *porticov1alpha1.IngressDeployment) client.Object {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(f, ProxyName(f), f.Namespace, ComponentProxy),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: ProxySelector(f)},
		},
	}
}

func defaultBackendServiceAccount(f *porticov1alpha1.IngressDeployment) client.Object {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   meta(f, DefaultBackendName(f), f.Namespace, ComponentDefaultBackend),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

func defaultBackendDeployment(f *porticov1alpha1.IngressDeployment, image string) client.Object {
	sel := selector(f, ComponentDefaultBackend)
	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(f, DefaultBackendName(f), f.Namespace, ComponentDefaultBackend),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: sel},
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxUnavailable: ptr.To(intstr.FromInt32(0)),
					MaxSurge:       ptr.To(intstr.FromInt32(1)),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels(f, ComponentDefaultBackend)},
				Spec: corev1.PodSpec{
					ServiceAccountName:           DefaultBackendName(f),
					AutomountServiceAccountToken: ptr.To(false),
					SecurityContext:              podSecurityContext(),
					Containers: []corev1.Container{{
						Name:  "default-backend",
						Image: image,
						Args: []string{
							"default-backend",
							"--status-code=" + strconv.Itoa(int(ManagedStatusCode(f))),
							"--port=" + strconv.Itoa(int(ContainerHTTPPort)),
							"--health-port=" + strconv.Itoa(int(ContainerHealthPort)),
						},
						Env: downwardEnv(),
						Ports: []corev1.ContainerPort{
							{Name: "http", ContainerPort: ContainerHTTPPort, Protocol: corev1.ProtocolTCP},
							{Name: "health", ContainerPort: ContainerHealthPort, Protocol: corev1.ProtocolTCP},
						},
						Resources:       resources(nil, "10m", "16Mi"),
						ReadinessProbe:  probe("/readyz", 5, 3),
						LivenessProbe:   probe("/healthz", 10, 5),
						SecurityContext: containerSecurityContext(),
					}},
				},
			},
		},
	}
}

func defaultBackendService(f *porticov1alpha1.IngressDeployment) client.Object {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(f, DefaultBackendName(f), f.Namespace, ComponentDefaultBackend),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector(f, ComponentDefaultBackend),
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func sortedCopy(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}
