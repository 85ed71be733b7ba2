package migrate

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	porticov1alpha1 "portico.dev/portico/api/v1alpha1"
	"portico.dev/portico/dataplane/route"
)

// NginxController is the spec.controller of ingress-nginx's IngressClasses.
const NginxController = "k8s.io/ingress-nginx"

// nginxLegacyClass is the kubernetes.io/ingress.class value ingress-nginx serves by default
// (its --ingress-class), with or without an IngressClass of that name.
const nginxLegacyClass = "nginx"

// Objects are what a report is made from, as read from a cluster or from files.
type Objects struct {
	Source     Source
	Ingresses  []networkingv1.Ingress
	Classes    []networkingv1.IngressClass
	ConfigMaps []corev1.ConfigMap
	// Notes say what reading skipped.
	Notes []string
}

// Options name the ConfigMaps to convert and the objects to emit.
type Options struct {
	// ConfigMap, TCPServices and UDPServices are ingress-nginx's ConfigMaps. With
	// MatchConfigMapsByName (files), a ConfigMap of that name in another namespace is taken
	// when none is in the namespace named.
	ConfigMap, TCPServices, UDPServices types.NamespacedName
	MatchConfigMapsByName               bool
	// FleetName and FleetNamespace name the emitted IngressDeployment, ClassName the emitted
	// IngressClass ("" for the class ingress-nginx serves by default, see TakeOverClass).
	FleetName, FleetNamespace, ClassName string
	Topology                             porticov1alpha1.TopologyType
}

// Result is a report with the objects --emit writes.
type Result struct {
	Report *Report
	Fleet  *porticov1alpha1.IngressDeployment
	Class  *networkingv1.IngressClass
}

// Analyze makes the report of objs and the fleet and class that would take over
// ingress-nginx's class. It is a pure function: the same objects give the same result.
func Analyze(objs *Objects, opts Options) *Result {
	rep := &Report{
		SchemaVersion: SchemaVersion,
		Source:        objs.Source,
		Classes:       []ClassReport{},
		Ingresses:     []IngressReport{},
		Notes:         append([]string{}, objs.Notes...),
	}
	rep.Summary.Settings = map[Status]int{}
	for _, st := range statuses {
		rep.Summary.Settings[st] = 0
	}

	// Classes.
	classes := append([]networkingv1.IngressClass(nil), objs.Classes...)
	sort.Slice(classes, func(i, j int) bool { return classes[i].Name < classes[j].Name })
	nginxClasses := map[string]bool{}
	defaultNginx := ""
	for _, c := range classes {
		nginx := c.Spec.Controller == NginxController
		def := c.Annotations[route.DefaultClassAnnotation] == "true"
		rep.Classes = append(rep.Classes, ClassReport{Name: c.Name, Controller: c.Spec.Controller, Default: def, IngressNginx: nginx})
		if nginx {
			nginxClasses[c.Name] = true
			if def && defaultNginx == "" {
				defaultNginx = c.Name
			}
		}
	}
	rep.TakeOverClass = opts.ClassName
	if rep.TakeOverClass == "" {
		rep.TakeOverClass = takeOverClass(classes, defaultNginx)
	}
	takeOverIsDefault := nginxClasses[rep.TakeOverClass] && rep.TakeOverClass == defaultNginx

	// ConfigMaps.
	fs := FleetSettings{Limits: LimitStatuses{NginxReq: nginxDefaultLimitStatus, NginxConn: nginxDefaultLimitStatus, Portico: porticoDefaultLimitStatus}}
	var tcp []porticov1alpha1.TCPService
	var udp []porticov1alpha1.UDPService
	var cm *corev1.ConfigMap
	cm, rep.ConfigMap = findConfigMap(objs, opts.ConfigMap, opts.MatchConfigMapsByName)
	if cm != nil {
		fs = ConvertConfigMap(cm.Data)
		rep.ConfigMap.Settings = fs.Settings
	}
	if cm, rep.TCPServices = findConfigMap(objs, opts.TCPServices, opts.MatchConfigMapsByName); cm != nil {
		tcp, rep.TCPServices.Settings = ConvertTCP(cm.Data)
	}
	if cm, rep.UDPServices = findConfigMap(objs, opts.UDPServices, opts.MatchConfigMapsByName); cm != nil {
		udp, rep.UDPServices.Settings = ConvertUDP(cm.Data)
	}
	for _, r := range []*ConfigMapReport{&rep.ConfigMap, &rep.TCPServices, &rep.UDPServices} {
		if r.Settings == nil {
			r.Settings = []Setting{}
		}
		for _, s := range r.Settings {
			rep.Summary.Settings[s.Status]++
		}
	}

	// Ingresses.
	ings := append([]networkingv1.Ingress(nil), objs.Ingresses...)
	sort.Slice(ings, func(i, j int) bool {
		if ings[i].Namespace != ings[j].Namespace {
			return ings[i].Namespace < ings[j].Namespace
		}
		return ings[i].Name < ings[j].Name
	})
	sum := &rep.Summary
	notTaken, classless := map[string]int{}, 0
	for i := range ings {
		ing := &ings[i]
		sum.IngressesRead++
		class, from, ours := nginxClassOf(ing, nginxClasses, defaultNginx)
		if !ours {
			sum.LeftOut++
			continue
		}
		ir := reportIngress(ing, class, from, fs.Limits)
		rep.Ingresses = append(rep.Ingresses, ir)
		sum.IngressNginx++
		sum.AnnotationsHonoured += len(ir.Honoured)
		sum.AnnotationsUnsupported += len(ir.Unsupported)
		sum.Problems += len(ir.Problems)
		if len(ir.Unsupported) > 0 {
			sum.WithUnsupported++
		}
		if len(ir.Problems) > 0 {
			sum.WithProblems++
		}
		if len(ir.Unsupported) == 0 && len(ir.Problems) == 0 {
			sum.FullySupported++
		}
		switch {
		case from == classFromDefault && !takeOverIsDefault:
			classless++
		case from != classFromDefault && class != rep.TakeOverClass:
			notTaken[class]++
		}
	}
	rep.Notes = append(rep.Notes, takeOverNotes(rep.TakeOverClass, nginxClasses, defaultNginx, notTaken, classless)...)

	return &Result{
		Report: rep,
		Fleet:  fleetFor(opts, fs, tcp, udp),
		Class:  classFor(opts, rep.TakeOverClass, takeOverIsDefault),
	}
}

// takeOverClass is the class --emit takes over by default: ingress-nginx's default class, else
// its class "nginx", else its first by name, else "nginx".
func takeOverClass(classes []networkingv1.IngressClass, defaultNginx string) string {
	if defaultNginx != "" {
		return defaultNginx
	}
	first := ""
	for _, c := range classes {
		if c.Spec.Controller != NginxController {
			continue
		}
		if c.Name == nginxLegacyClass {
			return c.Name
		}
		if first == "" {
			first = c.Name
		}
	}
	if first != "" {
		return first
	}
	return nginxLegacyClass
}

// Where an Ingress's class comes from (IngressReport.ClassFrom).
const (
	classFromField      = "ingressClassName"
	classFromAnnotation = "annotation"
	classFromDefault    = "default"
)

// nginxClassOf says whether ingress-nginx serves an Ingress: its class (spec.ingressClassName,
// else the legacy annotation, as Portico reads them: route.ClassOf) is one of ingress-nginx's
// IngressClasses, or the annotation says "nginx", or it names no class and ingress-nginx's
// class is the default.
func nginxClassOf(ing *networkingv1.Ingress, nginxClasses map[string]bool, defaultNginx string) (class, from string, ours bool) {
	class, ok := route.ClassOf(ing)
	switch {
	case !ok:
		return "", classFromDefault, defaultNginx != ""
	case ing.Spec.IngressClassName != nil:
		return class, classFromField, nginxClasses[class]
	default:
		return class, classFromAnnotation, nginxClasses[class] || class == nginxLegacyClass
	}
}

// reportIngress is what a compatibility fleet makes of an Ingress's annotations.
func reportIngress(ing *networkingv1.Ingress, class, from string, lim LimitStatuses) IngressReport {
	ar := route.ReportAnnotations(ing, true)
	ir := IngressReport{
		Namespace: ing.Namespace, Name: ing.Name, Class: class, ClassFrom: from,
		Honoured: append([]string{}, ar.Honoured...), Unsupported: []Unsupported{}, Problems: []string{},
	}
	used := make([]bool, len(ar.Problems))
	skip := map[string]bool{}
	for _, name := range ar.Unsupported {
		u := Unsupported{Annotation: name}
		for i, p := range ar.Problems {
			if tail, ok := strings.CutPrefix(p, "annotation "+name+": "); ok && !used[i] {
				used[i] = true
				u.Event, u.Reason = p, tail
				break
			}
		}
		key := afterPrefix(name)
		if u.Reason == "" {
			u.Reason = route.NginxUnsupportedReason(key)
		}
		if u.Reason == "" {
			u.Reason = "not honoured"
		}
		ir.Unsupported = append(ir.Unsupported, u)
		skip[key] = true
	}
	for i, p := range ar.Problems {
		if !used[i] {
			ir.Problems = append(ir.Problems, p)
		}
	}
	get := func(key string) (string, bool) {
		if v, ok := ing.Annotations[route.AnnotationPrefix+key]; ok {
			return strings.TrimSpace(v), true
		}
		v, ok := ing.Annotations[route.NginxAnnotationPrefix+key]
		return strings.TrimSpace(v), ok
	}
	ir.Differences = differencesFor(get, skip, lim)
	return ir
}

func afterPrefix(name string) string {
	if k, ok := strings.CutPrefix(name, route.AnnotationPrefix); ok {
		return k
	}
	k, _ := strings.CutPrefix(name, route.NginxAnnotationPrefix)
	return k
}

// takeOverNotes say what the emitted class does not take over, and how it takes over.
func takeOverNotes(takeOver string, nginxClasses map[string]bool, defaultNginx string, notTaken map[string]int, classless int) []string {
	var notes []string
	if nginxClasses[takeOver] {
		notes = append(notes, fmt.Sprintf("the emitted IngressClass %q replaces ingress-nginx's of that name: delete ingress-nginx's IngressClass %q before applying it "+
			"(an IngressClass's spec.controller cannot change); its Ingresses then move to the fleet without being edited", takeOver, takeOver))
	}
	var classes []string
	for c := range notTaken {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	for _, c := range classes {
		notes = append(notes, fmt.Sprintf("%s of class %q not taken over by the emitted class %q: run portico migrate for that class (--class-name %s, with its controller's ConfigMaps), or change the class",
			ingresses(notTaken[c]), c, takeOver, c))
	}
	if classless > 0 {
		notes = append(notes, fmt.Sprintf("%s without a class, served by ingress-nginx through its default class %q, not taken over by the emitted class %q",
			ingresses(classless), defaultNginx, takeOver))
	}
	return notes
}

// ingresses is "1 Ingress" or "n Ingresses".
func ingresses(n int) string {
	if n == 1 {
		return "1 Ingress"
	}
	return fmt.Sprintf("%d Ingresses", n)
}

// findConfigMap returns the ConfigMap named nn (with byName, one of that name in another
// namespace when none is in nn's) and its report, Found set.
func findConfigMap(objs *Objects, nn types.NamespacedName, byName bool) (*corev1.ConfigMap, ConfigMapReport) {
	rep := ConfigMapReport{Namespace: nn.Namespace, Name: nn.Name, Settings: []Setting{}}
	var found *corev1.ConfigMap
	for i := range objs.ConfigMaps {
		cm := &objs.ConfigMaps[i]
		if cm.Name != nn.Name {
			continue
		}
		if cm.Namespace == nn.Namespace {
			found = cm
			break
		}
		if byName && (found == nil || cm.Namespace < found.Namespace) {
			found = cm
		}
	}
	if found != nil {
		rep.Namespace, rep.Found = found.Namespace, true
	}
	return found, rep
}

// fleetFor is the IngressDeployment that takes over: the topology asked for, compatibility on,
// and what the ConfigMaps converted to.
func fleetFor(opts Options, fs FleetSettings, tcp []porticov1alpha1.TCPService, udp []porticov1alpha1.UDPService) *porticov1alpha1.IngressDeployment {
	return &porticov1alpha1.IngressDeployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: porticov1alpha1.GroupVersion.String(), Kind: "IngressDeployment"},
		ObjectMeta: metav1.ObjectMeta{Name: opts.FleetName, Namespace: opts.FleetNamespace},
		Spec: porticov1alpha1.IngressDeploymentSpec{
			Topology:                  porticov1alpha1.Topology{Type: opts.Topology},
			IngressNginxCompatibility: true,
			HTTP:                      fs.HTTP,
			ClientAddress:             fs.ClientAddress,
			TCP:                       tcp,
			UDP:                       udp,
		},
	}
}

// classFor is the IngressClass that points the class at the fleet, the cluster's default when
// ingress-nginx's was.
func classFor(opts Options, name string, isDefault bool) *networkingv1.IngressClass {
	ic := &networkingv1.IngressClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: networkingv1.SchemeGroupVersion.String(), Kind: "IngressClass"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: networkingv1.IngressClassSpec{
			Controller: porticov1alpha1.ControllerName,
			Parameters: &networkingv1.IngressClassParametersReference{
				APIGroup:  ptr.To(porticov1alpha1.GroupVersion.Group),
				Kind:      "IngressDeployment",
				Name:      opts.FleetName,
				Scope:     ptr.To(networkingv1.IngressClassParametersReferenceScopeNamespace),
				Namespace: ptr.To(opts.FleetNamespace),
			},
		},
	}
	if isDefault {
		ic.Annotations = map[string]string{route.DefaultClassAnnotation: "true"}
	}
	return ic
}
