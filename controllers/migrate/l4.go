package migrate

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/intstr"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
)

// nginxReservedPorts are the ports ingress-nginx refuses in its tcp-services and udp-services
// ConfigMaps, with its default flags: HTTP, HTTPS, the SSL passthrough proxy, health, the
// default server, the profiler, status and stream ports (internal/ingress/controller).
var nginxReservedPorts = map[int]bool{80: true, 443: true, 442: true, 10254: true, 8181: true, 10245: true, 10246: true, 10247: true}

// The CRD's patterns for an L4 Service reference (api/v1alpha1: L4ServiceReference).
var (
	dnsLabelRE    = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	serviceNameRE = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	portNameRE    = regexp.MustCompile(`^([a-z]|[a-z][-a-z0-9]*[a-z0-9]|[a-z0-9][-a-z0-9]*[a-z]|[a-z0-9][-a-z0-9]*[a-z][-a-z0-9]*[a-z0-9])$`)
)

// maxL4 is the most entries the CRD takes in spec.tcp and in spec.udp.
const maxL4 = 64

// l4Entry is one parsed entry of a tcp-services or udp-services ConfigMap.
type l4Entry struct {
	port           int32
	ref            porticov1alpha1.L4ServiceReference
	decode, encode bool // the :PROXY fields
	fields         int  // how many ':'-separated fields the value has
}

// parseL4 reads one entry as ingress-nginx does: the key is the port, the value
// <namespace>/<service>:<port number or name>[:PROXY[:PROXY]] (the PROXY fields compared
// without case). It returns why the entry is unusable.
func parseL4(key, value string) (l4Entry, Status, string) {
	var e l4Entry
	port, err := strconv.Atoi(key)
	if err != nil {
		return e, Invalid, "not a port number: ingress-nginx skips it too"
	}
	if port < 1 || port > 65535 {
		return e, Invalid, "not a port from 1 to 65535"
	}
	if nginxReservedPorts[port] {
		return e, Invalid, "a port ingress-nginx reserves for itself (with its default flags): it skips the entry, so nothing is converted"
	}
	e.port = int32(port)
	parts := strings.Split(value, ":")
	e.fields = len(parts)
	if len(parts) < 2 {
		return e, Invalid, "not <namespace>/<service>:<port>[:PROXY[:PROXY]]: ingress-nginx skips it too"
	}
	if len(parts) > 4 {
		return e, Invalid, "more than four fields: not <namespace>/<service>:<port>[:PROXY[:PROXY]]"
	}
	ns, name, ok := strings.Cut(parts[0], "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return e, Invalid, "the Service is not <namespace>/<name>: ingress-nginx skips the entry too"
	}
	if !dnsLabelRE.MatchString(ns) || len(ns) > 63 {
		return e, Invalid, fmt.Sprintf("namespace %q is not a DNS label", ns)
	}
	if !serviceNameRE.MatchString(name) || len(name) > 63 {
		return e, Invalid, fmt.Sprintf("Service name %q is not a DNS label starting with a letter", name)
	}
	e.ref = porticov1alpha1.L4ServiceReference{Namespace: ns, Name: name}
	sp := parts[1]
	if n, err := strconv.Atoi(sp); err == nil {
		if n < 1 || n > 65535 {
			return e, Invalid, fmt.Sprintf("Service port %d is not from 1 to 65535", n)
		}
		e.ref.Port = intstr.FromInt32(int32(n))
	} else {
		if !portNameRE.MatchString(sp) || len(sp) > 63 {
			return e, Invalid, fmt.Sprintf("Service port %q is neither a number nor a port name (a lower-case DNS label)", sp)
		}
		e.ref.Port = intstr.FromString(sp)
	}
	e.decode = len(parts) >= 3 && strings.EqualFold(parts[2], "PROXY")
	e.encode = len(parts) == 4 && strings.EqualFold(parts[3], "PROXY")
	return e, Converted, ""
}

// ConvertTCP converts the data of ingress-nginx's tcp-services ConfigMap into spec.tcp, one
// Setting per entry (by port). The third field, PROXY, makes ingress-nginx read a PROXY
// protocol header from the client: Portico's TCP listeners do not, which is reported. The
// fourth makes it send a version 1 header to the backend: proxyProtocol V1.
func ConvertTCP(data map[string]string) ([]porticov1alpha1.TCPService, []Setting) {
	var out []porticov1alpha1.TCPService
	var settings []Setting
	for _, key := range portKeys(data) {
		value := data[key]
		e, st, reason := parseL4(key, value)
		if st != Converted {
			settings = append(settings, Setting{Key: key, Value: value, Status: st, Reason: reason})
			continue
		}
		svc := porticov1alpha1.TCPService{Port: e.port, Service: e.ref}
		var notes []string
		switch {
		case e.decode && e.encode:
			st = Partial
			notes = append(notes, "ingress-nginx reads the client's PROXY protocol header and sends a version 1 header of its own to the backend; "+
				"Portico's TCP listeners do not read the header: they forward it, byte for byte, as the first bytes of the stream, "+
				"so the backend still gets one header, the balancer's (its version, not necessarily 1), and proxyProtocol is left at None so that it does not get two")
		case e.decode:
			st = Partial
			notes = append(notes, "ingress-nginx reads a PROXY protocol header from the client (the third field); Portico's TCP listeners do not: "+
				"the header would reach the backend as the first bytes of the stream: stop the balancer sending it on this port, "+
				"or have the backend read it")
		case e.encode:
			svc.ProxyProtocol = porticov1alpha1.ProxyProtocolV1
		}
		if e.fields >= 3 && !e.decode && parts(value)[2] != "" {
			notes = append(notes, fmt.Sprintf("the third field %q is not PROXY: ingress-nginx ignores it", parts(value)[2]))
		}
		if e.fields == 4 && !e.encode && parts(value)[3] != "" {
			notes = append(notes, fmt.Sprintf("the fourth field %q is not PROXY: ingress-nginx ignores it", parts(value)[3]))
		}
		if len(out) == maxL4 {
			settings = append(settings, Setting{Key: key, Value: value, Status: NotConverted,
				Reason: fmt.Sprintf("spec.tcp takes at most %d ports", maxL4)})
			continue
		}
		out = append(out, svc)
		settings = append(settings, Setting{Key: key, Value: value, Status: st, Field: "spec.tcp",
			Result: mustJSON(svc), Reason: strings.Join(notes, "; ")})
	}
	return out, settings
}

// ConvertUDP converts the data of ingress-nginx's udp-services ConfigMap into spec.udp, one
// Setting per entry (by port). ingress-nginx ignores PROXY fields on UDP entries, as Portico does.
func ConvertUDP(data map[string]string) ([]porticov1alpha1.UDPService, []Setting) {
	var out []porticov1alpha1.UDPService
	var settings []Setting
	for _, key := range portKeys(data) {
		value := data[key]
		e, st, reason := parseL4(key, value)
		if st != Converted {
			settings = append(settings, Setting{Key: key, Value: value, Status: st, Reason: reason})
			continue
		}
		if len(out) == maxL4 {
			settings = append(settings, Setting{Key: key, Value: value, Status: NotConverted,
				Reason: fmt.Sprintf("spec.udp takes at most %d ports", maxL4)})
			continue
		}
		svc := porticov1alpha1.UDPService{Port: e.port, Service: e.ref}
		var note string
		if e.fields > 2 {
			note = "PROXY fields apply to TCP only: ingress-nginx ignores them here, and so does the conversion"
		}
		out = append(out, svc)
		settings = append(settings, Setting{Key: key, Value: value, Status: Converted, Field: "spec.udp",
			Result: mustJSON(svc), Reason: note})
	}
	return out, settings
}

func parts(value string) []string { return strings.Split(value, ":") }

// portKeys returns the keys of data, numbers first in numeric order, then the rest.
func portKeys(data map[string]string) []string {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, errA := strconv.Atoi(keys[i])
		b, errB := strconv.Atoi(keys[j])
		switch {
		case errA == nil && errB == nil && a != b:
			return a < b
		case (errA == nil) != (errB == nil):
			return errA == nil
		}
		return keys[i] < keys[j]
	})
	return keys
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("migrate: marshal: %v", err)) // only API types get here
	}
	return b
}
