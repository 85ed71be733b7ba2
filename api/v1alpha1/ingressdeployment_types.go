package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TopologyType is how a fleet's proxies receive traffic.
// +kubebuilder:validation:Enum=HostNetwork;NodePort;LoadBalancer
type TopologyType string

const (
	// TopologyHostNetwork runs a DaemonSet with hostNetwork on the selected nodes, which serve
	// the HTTP and HTTPS ports directly.
	TopologyHostNetwork TopologyType = "HostNetwork"
	// TopologyNodePort runs a Deployment behind a NodePort Service.
	TopologyNodePort TopologyType = "NodePort"
	// TopologyLoadBalancer runs a Deployment behind a LoadBalancer Service.
	TopologyLoadBalancer TopologyType = "LoadBalancer"
)

// DefaultBackendType says who answers requests that match no Ingress rule.
// +kubebuilder:validation:Enum=Managed;Service
type DefaultBackendType string

const (
	// DefaultBackendManaged makes the operator run `portico default-backend` for the fleet.
	DefaultBackendManaged DefaultBackendType = "Managed"
	// DefaultBackendService sends unmatched requests to a Service the user runs.
	DefaultBackendService DefaultBackendType = "Service"
)

// Defaults applied when the corresponding optional field is absent. They live here, not in the
// stored object: the operator never writes the user's spec.
const (
	DefaultHTTPPort          int32 = 80
	DefaultHTTPSPort         int32 = 443
	DefaultHealthPort        int32 = 10254
	DefaultReplicas          int32 = 2
	DefaultManagedStatusCode int32 = 404
)

// IngressDeploymentSpec is the desired state of one fleet of ingress proxies.
// +kubebuilder:validation:XValidation:rule="!has(self.replicas) || self.topology.type != 'HostNetwork'",message="spec.replicas is not allowed with topology type HostNetwork: the DaemonSet runs one proxy per selected node",fieldPath=".replicas"
// +kubebuilder:validation:XValidation:rule="!has(self.tcp) || self.topology.type == 'HostNetwork' || !self.tcp.exists(s, s.port == 80 || s.port == 443)",message="spec.tcp[].port must differ from the ports of the fleet Service for HTTP and HTTPS, 80 and 443",fieldPath=".tcp"
// +kubebuilder:validation:XValidation:rule="!has(self.tcp) || self.topology.type != 'HostNetwork' || !self.tcp.exists(s, has(self.topology.hostNetwork) ? (s.port == self.topology.hostNetwork.httpPort || s.port == self.topology.hostNetwork.httpsPort || s.port == self.topology.hostNetwork.healthPort) : (s.port == 80 || s.port == 443 || s.port == 10254))",message="spec.tcp[].port must differ from spec.topology.hostNetwork.httpPort, httpsPort and healthPort (default 80, 443 and 10254)",fieldPath=".tcp"
// +kubebuilder:validation:XValidation:rule="!has(self.tcp) || self.topology.type == 'NodePort' || !self.tcp.exists(s, has(s.nodePort))",message="spec.tcp[].nodePort is only allowed when spec.topology.type is NodePort",fieldPath=".tcp"
// +kubebuilder:validation:XValidation:rule="!has(self.udp) || self.topology.type == 'NodePort' || !self.udp.exists(s, has(s.nodePort))",message="spec.udp[].nodePort is only allowed when spec.topology.type is NodePort",fieldPath=".udp"
// +kubebuilder:validation:XValidation:rule="!has(self.tcp) || !has(self.topology.nodePort) || !self.tcp.exists(s, has(s.nodePort) && ((has(self.topology.nodePort.httpNodePort) && s.nodePort == self.topology.nodePort.httpNodePort) || (has(self.topology.nodePort.httpsNodePort) && s.nodePort == self.topology.nodePort.httpsNodePort)))",message="spec.tcp[].nodePort must differ from spec.topology.nodePort.httpNodePort and httpsNodePort",fieldPath=".tcp"
type IngressDeploymentSpec struct {
	// Topology chooses how the fleet receives traffic.
	// +required
	Topology Topology `json:"topology"`

	// Replicas is the number of proxies for the NodePort and LoadBalancer topologies
	// (default 2). Not allowed with HostNetwork.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Replicas *int32 `json:"replicas,omitempty"`

	// NodePlacement chooses the nodes the proxies run on. For HostNetwork, the nodeSelector
	// picks the edge nodes.
	// +optional
	NodePlacement *NodePlacement `json:"nodePlacement,omitempty"`

	// Resources are the proxy container's compute resources.
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// DefaultBackend answers requests that match no Ingress rule (default: Managed, 404).
	// +optional
	DefaultBackend *DefaultBackend `json:"defaultBackend,omitempty"`

	// DefaultCertificate is served over HTTPS when no Ingress certificate matches the SNI name.
	// When absent, each proxy generates a self-signed certificate at start.
	// +optional
	DefaultCertificate *DefaultCertificate `json:"defaultCertificate,omitempty"`

	// WatchNamespaces limits the namespaces whose Ingresses the fleet serves. Empty: all.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	WatchNamespaces []string `json:"watchNamespaces,omitempty"`

	// StatusAddress overrides the address written into the Ingresses' status.
	// +optional
	StatusAddress *StatusAddress `json:"statusAddress,omitempty"`

	// IgnoreDefaultClass turns off serving Ingresses without a class when one of the fleet's
	// IngressClasses is annotated ingressclass.kubernetes.io/is-default-class: "true".
	// +optional
	IgnoreDefaultClass bool `json:"ignoreDefaultClass,omitempty"`

	// IngressNginxCompatibility makes the fleet read annotations with ingress-nginx's prefix,
	// nginx.ingress.kubernetes.io/, with the meaning of portico.dev/ ones (the keys after the
	// prefixes are the same), so that an Ingress written for ingress-nginx moves to this fleet by
	// a change of class. When both prefixes set a key, portico.dev/ wins and a Warning Event
	// says so. A key Portico does not honour (the snippets, ModSecurity, Lua-specific ones and
	// the rest listed in docs/migration.md) draws a Warning Event naming it, and
	// status.ingressesWithUnsupportedAnnotations counts such Ingresses: nothing is ignored
	// silently, and no snippet is ever executed as configuration.
	// +optional
	IngressNginxCompatibility bool `json:"ingressNginxCompatibility,omitempty"`

	// HTTP holds the fleet-wide HTTP limits every proxy of the fleet applies to every request.
	// When absent, every limit takes its default, which is ingress-nginx's.
	// +optional
	HTTP *HTTPSettings `json:"http,omitempty"`

	// ClientAddress says how the proxies learn a client's address, which allow lists, rate
	// limits, consistent hashing, X-Forwarded-For, X-Real-IP and the access log use. When
	// absent, it is the address of the connection's peer, and every X-Forwarded-* header a
	// client sends is replaced.
	// +optional
	ClientAddress *ClientAddressSettings `json:"clientAddress,omitempty"`

	// AccessLog turns on the proxies' access log (one JSON line per request on each proxy's
	// standard output) and samples it. A change applies without a restart.
	// +optional
	AccessLog *AccessLogSettings `json:"accessLog,omitempty"`

	// TCP are TCP ports the fleet forwards, byte for byte, to Service ports: each port is served
	// by every proxy of the fleet (a host port for HostNetwork, a port of the fleet's Service
	// otherwise) and must differ from the other TCP ports and from the fleet's HTTP and HTTPS
	// ports (and, for HostNetwork, its health port). The Service may be in any namespace.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(a, !has(a.nodePort) || self.exists_one(b, has(b.nodePort) && b.nodePort == a.nodePort))",message="spec.tcp[].nodePort values must differ"
	TCP []TCPService `json:"tcp,omitempty"`

	// UDP are UDP ports the fleet forwards to Service ports, datagram by datagram: each port is
	// served by every proxy of the fleet and must differ from the other UDP ports (a UDP port
	// may equal a TCP port, the HTTP or the HTTPS port). The Service may be in any namespace.
	// +optional
	// +listType=map
	// +listMapKey=port
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(a, !has(a.nodePort) || self.exists_one(b, has(b.nodePort) && b.nodePort == a.nodePort))",message="spec.udp[].nodePort values must differ"
	UDP []UDPService `json:"udp,omitempty"`
}

// ProxyProtocolVersion says whether and how a forwarded TCP connection starts with a PROXY
// protocol header telling the backend the client's address.
// +kubebuilder:validation:Enum=None;V1;V2
type ProxyProtocolVersion string

const (
	// ProxyProtocolNone sends no header: the backend sees the proxy's address.
	ProxyProtocolNone ProxyProtocolVersion = "None"
	// ProxyProtocolV1 sends the human-readable PROXY protocol version 1 header.
	ProxyProtocolV1 ProxyProtocolVersion = "V1"
	// ProxyProtocolV2 sends the binary PROXY protocol version 2 header.
	ProxyProtocolV2 ProxyProtocolVersion = "V2"
)

// TCPService forwards one TCP port of the fleet to a Service port. Connections are relayed byte
// for byte to a ready endpoint of the Service (never through its ClusterIP); see
// docs/configuration.md for timeouts and limits.
type TCPService struct {
	// Port is the fleet's port: the host port on each node (HostNetwork) or the port of the
	// fleet's Service (NodePort, LoadBalancer).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// NodePort pins the node port of this port on the fleet's Service (NodePort topology only).
	// Default: allocated by the API server.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	NodePort *int32 `json:"nodePort,omitempty"`

	// Service is the Service port connections are forwarded to.
	// +required
	Service L4ServiceReference `json:"service"`

	// ProxyProtocol sends a PROXY protocol header (V1 or V2) to the backend before the client's
	// bytes, so the backend learns the client's address. The default, None, sends none; the
	// backend must expect the header when it is set.
	// +optional
	ProxyProtocol ProxyProtocolVersion `json:"proxyProtocol,omitempty"`
}

// UDPService forwards one UDP port of the fleet to a Service port.
type UDPService struct {
	// Port is the fleet's port: the host port on each node (HostNetwork) or the port of the
	// fleet's Service (NodePort, LoadBalancer).
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// NodePort pins the node port of this port on the fleet's Service (NodePort topology only).
	// Default: allocated by the API server.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	NodePort *int32 `json:"nodePort,omitempty"`

	// Service is the Service port datagrams are forwarded to.
	// +required
	Service L4ServiceReference `json:"service"`
}

// L4ServiceReference names a Service port in any namespace. An IngressDeployment is an
// administrator's object (it can run host-network pods), so it may point at any Service.
// The port's range is checked here rather than on the port itself: API servers before 1.34
// over-estimate the cost of any rule placed on an int-or-string field and refuse the CRD.
// +kubebuilder:validation:XValidation:rule="type(self.port) != int || (self.port >= 1 && self.port <= 65535)",message="must be a port number from 1 to 65535 or a port name",fieldPath=".port"
type L4ServiceReference struct {
	// Namespace of the Service. Default: the fleet's namespace.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespace string `json:"namespace,omitempty"`

	// Name of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// Port is the Service port, by number (1-65535) or by name. A name is a DNS label with at
	// least one letter: a number written in quotes is refused rather than looked up as a name.
	// +required
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([a-z]|[a-z][-a-z0-9]*[a-z0-9]|[a-z0-9][-a-z0-9]*[a-z]|[a-z0-9][-a-z0-9]*[a-z][-a-z0-9]*[a-z0-9])$`
	Port intstr.IntOrString `json:"port"`
}

// AccessLogSettings are a fleet's access log settings.
type AccessLogSettings struct {
	// Enabled writes one JSON line per request (the fields are listed in docs/operations.md:
	// the client's address, the request, status, bytes sent, duration, the upstream address and
	// its time, the Ingress, the request id). The default is false.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// OneIn logs one request in every OneIn for a hot fleet: 1, the default, logs every
	// request, 100 logs one in a hundred. Answers with a 5xx status are always logged.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000000
	OneIn *int32 `json:"oneIn,omitempty"`
}

// HTTPSettings are a fleet's HTTP limits. A field left out takes its default, which is the
// default of the matching ingress-nginx setting; the operator applies the defaults when it
// renders the proxy's configuration and never writes them into the stored object.
type HTTPSettings struct {
	// MaxRequestBodySize is the largest request body a proxy accepts; a request whose body is
	// larger is answered 413 Content Too Large. It is ingress-nginx's proxy-body-size (nginx's
	// client_max_body_size). The default is 1Mi, as ingress-nginx's 1m; 0 means no limit.
	// The value is a Kubernetes quantity, not an nginx size: write "1Mi" (1048576 bytes) or
	// "8M" (8000000 bytes); nginx's "1m" is a milli-quantity here (a thousandth of a byte) and
	// is rejected. It must be a whole number of bytes, not negative, at most 2^63-1, and
	// written without a fraction of a binary unit (1536, not 1.5Ki).
	// +optional
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || !quantity(string(self)).isLessThan(quantity('0'))",message="must not be negative (0 means no limit)"
	// +kubebuilder:validation:XValidation:rule="!isQuantity(string(self)) || quantity(string(self)).isInteger()",message="must be a whole number of bytes at most 2^63-1, such as 1Mi, 8M or 1536 (nginx's 1m is a thousandth of a byte here; fractions of a binary unit such as 1.5Ki are not accepted)"
	MaxRequestBodySize *resource.Quantity `json:"maxRequestBodySize,omitempty"`

	// ClientBodyTimeout is the longest a request body may pause between two successive reads
	// before the proxy gives up on the request (nginx's client_body_timeout, ingress-nginx's
	// client-body-timeout). It is a Go duration such as "60s" or "2m30s", greater than 0s and
	// at most 1h. The default is 60s, as ingress-nginx's.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="must be a Go duration such as 60s, 2m30s or 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) > duration('0s')",message="must be greater than 0s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) <= duration('1h')",message="must be at most 1h"
	ClientBodyTimeout *metav1.Duration `json:"clientBodyTimeout,omitempty"`

	// AllowUnderscoresInHeaders forwards request header names that contain "_". The default,
	// false, drops such headers before the request is forwarded, as ingress-nginx does
	// (enable-underscores-in-headers false, nginx's underscores_in_headers off): CGI, WSGI and
	// PHP backends read X_Forwarded_For as X-Forwarded-For, so a client could otherwise
	// spoof a header the proxy sets.
	// +optional
	AllowUnderscoresInHeaders bool `json:"allowUnderscoresInHeaders,omitempty"`

	// ProxyConnectTimeout bounds connecting to a backend's endpoint (ingress-nginx's
	// proxy-connect-timeout, default 5s); an Ingress's portico.dev/proxy-connect-timeout wins
	// over it. A Go duration, greater than 0s and at most 1h.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="must be a Go duration such as 60s, 2m30s or 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) > duration('0s')",message="must be greater than 0s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) <= duration('1h')",message="must be at most 1h"
	ProxyConnectTimeout *metav1.Duration `json:"proxyConnectTimeout,omitempty"`

	// ProxyReadTimeout bounds waiting for a backend's response head, per attempt
	// (ingress-nginx's proxy-read-timeout, default 60s); past it the client gets 504.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="must be a Go duration such as 60s, 2m30s or 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) > duration('0s')",message="must be greater than 0s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) <= duration('1h')",message="must be at most 1h"
	ProxyReadTimeout *metav1.Duration `json:"proxyReadTimeout,omitempty"`

	// ProxySendTimeout bounds a pause in sending a request body to a backend that does not
	// read it (ingress-nginx's proxy-send-timeout, default 60s); past it the client gets 504.
	// +optional
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="must be a Go duration such as 60s, 2m30s or 1h"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) > duration('0s')",message="must be greater than 0s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^-?(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || duration(self) <= duration('1h')",message="must be at most 1h"
	ProxySendTimeout *metav1.Duration `json:"proxySendTimeout,omitempty"`

	// SSLRedirect is the default of the portico.dev/ssl-redirect annotation: plain HTTP
	// requests for a host whose TLS an Ingress configures (spec.tls) are redirected to HTTPS
	// with 308. The default is true, as ingress-nginx's ssl-redirect; an Ingress's annotation
	// wins over it.
	// +optional
	SSLRedirect *bool `json:"sslRedirect,omitempty"`

	// LimitStatusCode is the status of a request refused by a rate or connection limit
	// (portico.dev/limit-rps, -rpm, -connections). The default is 429 Too Many Requests, the
	// status HTTP defines for it (RFC 6585), which clients and SDKs retry with backoff and
	// which monitoring does not count as a backend failure; ingress-nginx answers 503 (its
	// limit-req-status-code), which a migrating fleet may keep by setting 503.
	// +optional
	// +kubebuilder:validation:Enum=429;503
	LimitStatusCode *int32 `json:"limitStatusCode,omitempty"`

	// HSTS is the Strict-Transport-Security header every answer over HTTPS carries (replacing
	// a backend's). The default is on, with max-age one year and includeSubDomains, as
	// ingress-nginx's hsts settings.
	// +optional
	HSTS *HSTSSettings `json:"hsts,omitempty"`
}

// ClientAddressSettings are how a fleet's proxies learn a client's address behind balancers.
type ClientAddressSettings struct {
	// ProxyProtocol makes the fleet's HTTP and HTTPS listeners read a PROXY protocol header
	// (version 1 or 2, detected) at the start of every connection, as balancers such as AWS
	// NLB, HAProxy and most cloud TCP balancers send it: its source address is the client's.
	// A connection that does not start with a valid header within the header timeout is
	// closed, so turn it on only when every connection comes through such a balancer.
	// ingress-nginx's use-proxy-protocol. A change applies to connections accepted after it.
	// +optional
	ProxyProtocol bool `json:"proxyProtocol,omitempty"`

	// TrustedProxies are the CIDRs (such as 10.0.0.0/8 or 2001:db8::/32) of the balancers
	// and proxies in front of the fleet whose X-Forwarded-For is believed: when a request
	// comes from one (its connection's peer, or the PROXY protocol's source), its client is
	// the rightmost address of X-Forwarded-For that is not trusted, and its
	// X-Forwarded-Proto, -Host and -Port are passed on (so that a balancer terminating TLS
	// does not draw an HTTPS redirect). From any other address these headers are replaced.
	// ingress-nginx's use-forwarded-headers with proxy-real-ip-cidr. At most 64 entries.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32"
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// HSTSSettings is a fleet's Strict-Transport-Security header. A field left out takes its
// default.
type HSTSSettings struct {
	// Enabled adds the header to answers over HTTPS. The default is true.
	// +optional
	Enabled *bool `json:"enabled,omitempty"`
	// MaxAgeSeconds is max-age: how long a browser keeps to HTTPS for the host. The default is
	// 31536000 (one year), as ingress-nginx's hsts-max-age; 0 tells browsers to forget it.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=315360000
	MaxAgeSeconds *int64 `json:"maxAgeSeconds,omitempty"`
	// IncludeSubdomains adds includeSubDomains. The default is true, as ingress-nginx's
	// hsts-include-subdomains.
	// +optional
	IncludeSubdomains *bool `json:"includeSubdomains,omitempty"`
	// Preload adds preload (for browsers' preload lists). The default is false.
	// +optional
	Preload bool `json:"preload,omitempty"`
}

// Topology chooses how a fleet receives traffic. Only the sub-struct matching type may be set.
// +kubebuilder:validation:XValidation:rule="!has(self.hostNetwork) || self.type == 'HostNetwork'",message="spec.topology.hostNetwork is only allowed when spec.topology.type is HostNetwork",fieldPath=".hostNetwork"
// +kubebuilder:validation:XValidation:rule="!has(self.nodePort) || self.type == 'NodePort'",message="spec.topology.nodePort is only allowed when spec.topology.type is NodePort",fieldPath=".nodePort"
// +kubebuilder:validation:XValidation:rule="!has(self.loadBalancer) || self.type == 'LoadBalancer'",message="spec.topology.loadBalancer is only allowed when spec.topology.type is LoadBalancer",fieldPath=".loadBalancer"
// +kubebuilder:validation:XValidation:rule="!has(self.externalTrafficPolicy) || self.type != 'HostNetwork'",message="spec.topology.externalTrafficPolicy is not allowed when spec.topology.type is HostNetwork",fieldPath=".externalTrafficPolicy"
type Topology struct {
	// Type is HostNetwork, NodePort or LoadBalancer.
	// +required
	Type TopologyType `json:"type"`

	// HostNetwork configures the HostNetwork topology.
	// +optional
	HostNetwork *HostNetworkTopology `json:"hostNetwork,omitempty"`

	// NodePort configures the NodePort topology.
	// +optional
	NodePort *NodePortTopology `json:"nodePort,omitempty"`

	// LoadBalancer configures the LoadBalancer topology.
	// +optional
	LoadBalancer *LoadBalancerTopology `json:"loadBalancer,omitempty"`

	// ExternalTrafficPolicy of the fleet's Service (NodePort and LoadBalancer only).
	// Default: the Service's own default, Cluster.
	// +optional
	// +kubebuilder:validation:Enum=Cluster;Local
	ExternalTrafficPolicy *corev1.ServiceExternalTrafficPolicy `json:"externalTrafficPolicy,omitempty"`
}

// HostNetworkTopology are the host ports a HostNetwork proxy binds on its node.
// +kubebuilder:validation:XValidation:rule="self.httpPort != self.httpsPort",message="spec.topology.hostNetwork.httpPort and httpsPort must differ"
// +kubebuilder:validation:XValidation:rule="self.healthPort != self.httpPort && self.healthPort != self.httpsPort",message="spec.topology.hostNetwork.healthPort must differ from httpPort and httpsPort",fieldPath=".healthPort"
type HostNetworkTopology struct {
	// HTTPPort is the node port serving plain HTTP.
	// +optional
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HTTPPort int32 `json:"httpPort,omitempty"`

	// HTTPSPort is the node port serving HTTPS.
	// +optional
	// +kubebuilder:default=443
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HTTPSPort int32 `json:"httpsPort,omitempty"`

	// HealthPort serves /healthz, /readyz and /metrics on the node. Two HostNetwork fleets
	// sharing nodes need different health ports.
	// +optional
	// +kubebuilder:default=10254
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HealthPort int32 `json:"healthPort,omitempty"`
}

// NodePortTopology pins the Service's node ports; either may be left to the API server.
// +kubebuilder:validation:XValidation:rule="!has(self.httpNodePort) || !has(self.httpsNodePort) || self.httpNodePort != self.httpsNodePort",message="spec.topology.nodePort.httpNodePort and httpsNodePort must differ"
type NodePortTopology struct {
	// HTTPNodePort is the node port for HTTP. Default: allocated by the API server.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HTTPNodePort *int32 `json:"httpNodePort,omitempty"`

	// HTTPSNodePort is the node port for HTTPS. Default: allocated by the API server.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	HTTPSNodePort *int32 `json:"httpsNodePort,omitempty"`
}

// LoadBalancerTopology configures the fleet's LoadBalancer Service.
type LoadBalancerTopology struct {
	// LoadBalancerClass selects the balancer implementation. Immutable on the Service once set.
	// +optional
	LoadBalancerClass *string `json:"loadBalancerClass,omitempty"`

	// Annotations are put on the Service (cloud balancer settings). Annotations removed here
	// are removed from the Service; annotations others add are kept.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`

	// LoadBalancerSourceRanges restricts the client CIDRs the balancer accepts.
	// +optional
	// +listType=set
	LoadBalancerSourceRanges []string `json:"loadBalancerSourceRanges,omitempty"`
}

// NodePlacement chooses the nodes the proxies run on.
type NodePlacement struct {
	// NodeSelector must match a node's labels for a proxy to run there.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations let proxies run on tainted nodes.
	// +optional
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity constrains scheduling further.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`
}

// DefaultBackend answers requests that match no Ingress rule.
// +kubebuilder:validation:XValidation:rule="self.type != 'Service' || has(self.service)",message="spec.defaultBackend.service is required when spec.defaultBackend.type is Service",fieldPath=".service"
// +kubebuilder:validation:XValidation:rule="self.type != 'Managed' || !has(self.service)",message="spec.defaultBackend.service is only allowed when spec.defaultBackend.type is Service",fieldPath=".service"
// +kubebuilder:validation:XValidation:rule="self.type != 'Service' || !has(self.managed)",message="spec.defaultBackend.managed is only allowed when spec.defaultBackend.type is Managed",fieldPath=".managed"
type DefaultBackend struct {
	// Type is Managed (the operator runs one) or Service (yours).
	// +optional
	// +kubebuilder:default=Managed
	Type DefaultBackendType `json:"type,omitempty"`

	// Managed configures the operator-run default backend.
	// +optional
	Managed *ManagedDefaultBackend `json:"managed,omitempty"`

	// Service names a Service in the fleet's namespace.
	// +optional
	Service *ServiceReference `json:"service,omitempty"`
}

// ManagedDefaultBackend configures `portico default-backend`.
type ManagedDefaultBackend struct {
	// StatusCode is the HTTP status it answers with.
	// +optional
	// +kubebuilder:default=404
	// +kubebuilder:validation:Minimum=200
	// +kubebuilder:validation:Maximum=599
	StatusCode int32 `json:"statusCode,omitempty"`
}

// ServiceReference names a Service port in the fleet's namespace.
type ServiceReference struct {
	// Name of the Service.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// Port is the Service port number.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
}

// DefaultCertificate names a kubernetes.io/tls Secret in the fleet's namespace.
type DefaultCertificate struct {
	// SecretName is the Secret's name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
}

// StatusAddress is the address published in the Ingresses' status instead of the observed one.
type StatusAddress struct {
	// Addresses are IP addresses.
	// +optional
	// +listType=set
	Addresses []string `json:"addresses,omitempty"`

	// Hostnames are DNS names.
	// +optional
	// +listType=set
	Hostnames []string `json:"hostnames,omitempty"`
}

// AddressType says whether an address is an IP or a DNS name.
// +kubebuilder:validation:Enum=IPAddress;Hostname
type AddressType string

const (
	// IPAddressType is an IPv4 or IPv6 address.
	IPAddressType AddressType = "IPAddress"
	// HostnameAddressType is a DNS name.
	HostnameAddressType AddressType = "Hostname"
)

// Address is one address the fleet is reachable at.
type Address struct {
	// Type is IPAddress or Hostname.
	Type AddressType `json:"type"`
	// Value is the IP or the name.
	Value string `json:"value"`
}

// IngressDeploymentStatus is the observed state of a fleet.
type IngressDeploymentStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Conditions: Accepted, Available, Progressing, Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// IngressClasses are the names of the IngressClasses bound to this fleet, sorted.
	// +optional
	// +listType=set
	IngressClasses []string `json:"ingressClasses,omitempty"`

	// Addresses are the addresses published in the fleet's Ingresses' status, sorted.
	// +optional
	// +listType=atomic
	Addresses []Address `json:"addresses,omitempty"`

	// IngressesWithUnsupportedAnnotations counts the fleet's Ingresses that set an annotation
	// the fleet reads but does not honour (an unknown portico.dev/ key; with
	// spec.ingressNginxCompatibility, an ingress-nginx key Portico does not offer, or a
	// configuration-snippet it cannot translate). Each such Ingress carries a Warning Event
	// naming the keys.
	// +optional
	IngressesWithUnsupportedAnnotations int32 `json:"ingressesWithUnsupportedAnnotations,omitempty"`

	// Replicas is the number of proxy pods wanted (DaemonSet: nodes scheduled).
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// ReadyReplicas is the number of proxy pods ready.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`

	// Selector is the proxy pods' label selector, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`
}

// IngressDeployment is one fleet of Portico ingress proxies. IngressClasses whose controller is
// portico.dev/ingress-controller point at it through spec.parameters.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 47",message="metadata.name must be at most 47 characters: the fleet's Services are named <name>-default-backend"
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=ingd,categories=portico
// +kubebuilder:printcolumn:name="Topology",type=string,JSONPath=`.spec.topology.type`
// +kubebuilder:printcolumn:name="Classes",type=string,JSONPath=`.status.ingressClasses`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyReplicas`
// +kubebuilder:printcolumn:name="Address",type=string,JSONPath=`.status.addresses[0].value`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IngressDeployment struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec   IngressDeploymentSpec   `json:"spec"`
	Status IngressDeploymentStatus `json:"status,omitempty"`
}

// IngressDeploymentList is a list of IngressDeployments.
// +kubebuilder:object:root=true
type IngressDeploymentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IngressDeployment `json:"items"`
}
