// Package config is the proxy's runtime settings: the document the operator renders into the
// fleet's ConfigMap (key ConfigKey) and the proxy watches, applying changes without a restart.
package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// ConfigKey is the ConfigMap data key holding the JSON document.
const ConfigKey = "config.json"

// Config is one fleet's proxy settings. The zero value is usable: all namespaces, the proxy's
// built-in 404 default backend, a self-signed default certificate.
type Config struct {
	// FleetNamespace and FleetName identify the IngressDeployment; the proxy serves the
	// IngressClasses whose parameters point at it.
	FleetNamespace string `json:"fleetNamespace"`
	FleetName      string `json:"fleetName"`
	// WatchNamespaces limits the Ingresses served; empty means all namespaces.
	WatchNamespaces []string `json:"watchNamespaces,omitempty"`
	// DefaultBackend receives requests that match no rule; nil means the proxy answers 404 itself.
	DefaultBackend *ServiceRef `json:"defaultBackend,omitempty"`
	// DefaultCertificate is "namespace/name" of a kubernetes.io/tls Secret; empty means a
	// self-signed certificate generated at start.
	DefaultCertificate string `json:"defaultCertificate,omitempty"`
	// IgnoreDefaultClass turns off serving class-less Ingresses through a default IngressClass.
	IgnoreDefaultClass bool `json:"ignoreDefaultClass,omitempty"`
}

// ServiceRef is a Service port.
type ServiceRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Port      int32  `json:"port"`
}

// Marshal renders c as the ConfigMap value; the output is deterministic.
func (c Config) Marshal() (string, error) {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", fmt.Errorf("marshal proxy config: %w", err)
	}
	return string(b) + "\n", nil
}

// Parse reads a ConfigMap value, rejecting unknown fields so a typo is reported, not ignored.
func Parse(data string) (Config, error) {
	var c Config
	dec := json.NewDecoder(strings.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", ConfigKey, err)
	}
	if c.FleetNamespace == "" || c.FleetName == "" {
		return Config{}, fmt.Errorf("parse %s: fleetNamespace and fleetName are required", ConfigKey)
	}
	return c, nil
}
