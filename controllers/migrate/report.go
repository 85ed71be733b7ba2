// Package migrate is `portico migrate`: it reads what an ingress-nginx installation serves
// (Ingresses, IngressClasses and the controller's ConfigMaps, from a cluster or from YAML files),
// reports per Ingress which annotations a compatibility fleet honours, which it does not and why,
// and where the behaviour differs, and converts the ConfigMaps into the IngressDeployment and
// IngressClass that would take over ingress-nginx's class. It never writes to a cluster.
//
// Everything but reading (source.go) and the command line (command.go) is a pure function of the
// objects read, so the report and the emitted YAML are tested with golden files.
package migrate

import "encoding/json"

// SchemaVersion names the JSON report's schema (docs/migration.md). Fields may be added under
// the same version; a field removed or changed in meaning changes it.
const SchemaVersion = "portico.dev/migrate/v1"

// Status is what became of one key of an ingress-nginx ConfigMap.
type Status string

const (
	// Converted: the key became a field of the emitted IngressDeployment.
	Converted Status = "converted"
	// Partial: the key became a field, but part of its meaning did not carry over (Reason).
	Partial Status = "partial"
	// Same: Portico behaves as this value says without any setting (Reason says how).
	Same Status = "same"
	// NotConverted: Portico has no fleet-wide equivalent of this value (Reason says why, when
	// known, and what to do instead).
	NotConverted Status = "notConverted"
	// Invalid: ingress-nginx does not accept the value either; nothing is converted.
	Invalid Status = "invalid"
	// Unknown: not a key ingress-nginx reads (a typo, or another controller's).
	Unknown Status = "unknown"
)

// statuses in the order reports list them.
var statuses = []Status{Converted, Partial, Same, NotConverted, Invalid, Unknown}

// Report is the whole result of `portico migrate`, and the JSON it prints with -o json.
// Slices are never null. Ingresses come by namespace and name, settings by key (ports by number),
// names sorted; problems keep the fleet's order, differences the order of the table.
type Report struct {
	SchemaVersion string `json:"schemaVersion"`
	// Source says what was read: "files" and the directory, or "cluster" and the API server.
	Source Source `json:"source"`
	// Classes are every IngressClass read, by name.
	Classes []ClassReport `json:"classes"`
	// TakeOverClass is the name of the IngressClass that --emit writes (--class-name).
	TakeOverClass string `json:"takeOverClass"`
	// ConfigMap is the controller's ConfigMap (--nginx-configmap), key by key.
	ConfigMap ConfigMapReport `json:"configMap"`
	// TCPServices and UDPServices are the tcp-services and udp-services ConfigMaps, entry by
	// entry (by port number).
	TCPServices ConfigMapReport `json:"tcpServices"`
	UDPServices ConfigMapReport `json:"udpServices"`
	// Ingresses are the Ingresses of ingress-nginx's classes, by namespace and name.
	Ingresses []IngressReport `json:"ingresses"`
	// Notes are findings that belong to no single key or Ingress (files skipped, Ingresses the
	// emitted class does not take over).
	Notes   []string `json:"notes"`
	Summary Summary  `json:"summary"`
}

// Source is what a report was made from.
type Source struct {
	// Kind is "files" or "cluster".
	Kind string `json:"kind"`
	// Location is the directory read, or the API server's URL.
	Location string `json:"location"`
}

// ClassReport is one IngressClass read.
type ClassReport struct {
	Name       string `json:"name"`
	Controller string `json:"controller"`
	// Default: annotated ingressclass.kubernetes.io/is-default-class: "true".
	Default bool `json:"default"`
	// IngressNginx: its controller is k8s.io/ingress-nginx, so its Ingresses are reported.
	IngressNginx bool `json:"ingressNginx"`
}

// ConfigMapReport is one of ingress-nginx's ConfigMaps and what became of each of its keys.
type ConfigMapReport struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Found is false when no such ConfigMap was read (Settings is then empty).
	Found    bool      `json:"found"`
	Settings []Setting `json:"settings"`
}

// Setting is one key of a ConfigMap (a port, for the TCP and UDP ConfigMaps).
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Status is converted, partial, same, notConverted, invalid or unknown.
	Status Status `json:"status"`
	// Field is the IngressDeployment field the key became ("spec.http.maxRequestBodySize",
	// "spec.tcp"), for converted and partial keys.
	Field string `json:"field,omitempty"`
	// Result is the field's value as emitted, in JSON ("8Mi", 503, a spec.tcp entry).
	Result json.RawMessage `json:"result,omitempty"`
	// Reason says why a key is not (fully) converted, what to do instead, or what differs.
	Reason string `json:"reason,omitempty"`
}

// IngressReport is what a compatibility fleet makes of one Ingress.
type IngressReport struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Class is the class the Ingress names ("" when it names none).
	Class string `json:"class"`
	// ClassFrom is where the class comes from: "ingressClassName", "annotation" (the legacy
	// kubernetes.io/ingress.class), or "default" (no class; the default class is
	// ingress-nginx's).
	ClassFrom string `json:"classFrom"`
	// Honoured are the annotations a compatibility fleet applies, by full name.
	Honoured []string `json:"honoured"`
	// Unsupported are the annotations it reads but does not honour, with why.
	Unsupported []Unsupported `json:"unsupported"`
	// Problems are the other Warning Events the fleet would record (bad values, a key under
	// both prefixes), exactly as it words them. With Unsupported[].Event they are all of them.
	Problems []string `json:"problems"`
	// Differences are documented differences from ingress-nginx for the keys the Ingress uses.
	Differences []Difference `json:"differences"`
}

// Unsupported is an annotation a compatibility fleet does not honour.
type Unsupported struct {
	Annotation string `json:"annotation"`
	Reason     string `json:"reason"`
	// Event is the Warning Event's message the fleet records for it.
	Event string `json:"event"`
}

// Difference is a documented difference of behaviour for keys an Ingress uses.
type Difference struct {
	// Annotations are the keys (after the prefix) of the Ingress it concerns.
	Annotations []string `json:"annotations"`
	Text        string   `json:"text"`
	// Doc is where Portico's documentation says so (docs/<page>#<section>).
	Doc string `json:"doc"`
}

// Summary counts what the report holds.
type Summary struct {
	// IngressesRead is every Ingress read; IngressNginx those of ingress-nginx's classes
	// (reported); LeftOut the others.
	IngressesRead int `json:"ingressesRead"`
	IngressNginx  int `json:"ingressNginx"`
	LeftOut       int `json:"leftOut"`
	// FullySupported have no unsupported key and no problem; WithUnsupported have an
	// unsupported key; WithProblems have a problem (Ingresses may be in both).
	FullySupported  int `json:"fullySupported"`
	WithUnsupported int `json:"withUnsupported"`
	WithProblems    int `json:"withProblems"`
	// AnnotationsHonoured, AnnotationsUnsupported and Problems are totals over the Ingresses.
	AnnotationsHonoured    int `json:"annotationsHonoured"`
	AnnotationsUnsupported int `json:"annotationsUnsupported"`
	Problems               int `json:"problems"`
	// Settings counts the keys of the three ConfigMaps by status.
	Settings map[Status]int `json:"settings"`
}
