package v1alpha1

// Condition types of an IngressDeployment.
const (
	// ConditionAccepted is True when the operator could render the fleet from the spec.
	ConditionAccepted = "Accepted"
	// ConditionAvailable is True when at least one proxy is ready to serve (and the managed
	// default backend, if any, is available).
	ConditionAvailable = "Available"
	// ConditionProgressing is True while a rollout of the fleet's workloads is under way.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when something the fleet depends on is wrong; the message says what.
	ConditionDegraded = "Degraded"
)

// Condition reasons.
const (
	ReasonAccepted              = "Accepted"
	ReasonInvalidSpec           = "InvalidSpec"
	ReasonAvailable             = "MinimumProxiesAvailable"
	ReasonUnavailable           = "NoProxyAvailable"
	ReasonDefaultBackendPending = "DefaultBackendUnavailable"
	ReasonRolloutInProgress     = "RolloutInProgress"
	ReasonRolloutComplete       = "RolloutComplete"
	ReasonAsExpected            = "AsExpected"
	ReasonHostPortConflict      = "HostPortConflict"
	ReasonDefaultBackendMissing = "DefaultBackendServiceMissing"
	// ReasonServiceMissing: a Service port named by spec.tcp or spec.udp does not exist (or
	// has another protocol).
	ReasonServiceMissing     = "ServiceMissing"
	ReasonCertificateMissing = "DefaultCertificateMissing"
	ReasonCertificateInvalid = "DefaultCertificateInvalid"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonNoIngressClass     = "NoIngressClass"
	ReasonInvalidClassParams = "InvalidParameters"
)
