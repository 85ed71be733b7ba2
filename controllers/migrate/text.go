package migrate

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"portico.dev/portico/dataplane/route"
)

// textWidth is where the text report wraps its lines.
const textWidth = 100

// WriteJSON writes the report as indented JSON (the schema in docs/migration.md).
func WriteJSON(w io.Writer, rep *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(rep)
}

// WriteText writes the report for people: the classes, the ConfigMaps key by key, each Ingress,
// the notes and the summary.
func WriteText(w io.Writer, rep *Report) error {
	t := &textWriter{}
	t.line(0, fmt.Sprintf("portico migrate: the ingress-nginx objects read from %s %s", rep.Source.Kind, rep.Source.Location))

	t.section("IngressClasses")
	if len(rep.Classes) == 0 {
		t.line(1, "none read")
	}
	for _, c := range rep.Classes {
		var what []string
		if c.IngressNginx {
			what = append(what, "ingress-nginx's")
		} else {
			what = append(what, "another controller's: its Ingresses are left out")
		}
		if c.Default {
			what = append(what, "the default class")
		}
		t.line(1, fmt.Sprintf("%s (%s): %s", c.Name, c.Controller, strings.Join(what, ", ")))
	}
	t.line(1, fmt.Sprintf("--emit takes over the class %q", rep.TakeOverClass))

	t.configMap("Controller ConfigMap", rep.ConfigMap, "keys")
	t.configMap("TCP services ConfigMap", rep.TCPServices, "ports")
	t.configMap("UDP services ConfigMap", rep.UDPServices, "ports")

	for _, ir := range rep.Ingresses {
		t.ingress(ir)
	}
	if len(rep.Ingresses) == 0 {
		t.section("Ingresses")
		t.line(1, "no Ingress of ingress-nginx's classes")
	}

	if len(rep.Notes) > 0 {
		t.section("Notes")
		for _, n := range rep.Notes {
			t.line(1, "- "+n)
		}
	}

	s := rep.Summary
	t.section("Summary")
	t.line(1, fmt.Sprintf("Ingresses read: %d; of ingress-nginx's classes: %d; left out (other classes): %d", s.IngressesRead, s.IngressNginx, s.LeftOut))
	t.line(1, fmt.Sprintf("fully supported: %d; with unsupported annotations: %d; with problems: %d", s.FullySupported, s.WithUnsupported, s.WithProblems))
	t.line(1, fmt.Sprintf("annotations honoured: %d; not honoured: %d; problems: %d", s.AnnotationsHonoured, s.AnnotationsUnsupported, s.Problems))
	var counts []string
	for _, st := range statuses {
		counts = append(counts, fmt.Sprintf("%s %d", statusTitle[st], s.Settings[st]))
	}
	t.line(1, "ConfigMap keys: "+strings.Join(counts, "; "))
	_, err := io.WriteString(w, t.b.String())
	return err
}

// statusTitle heads each group of keys in the text report.
var statusTitle = map[Status]string{
	Converted:    "converted",
	Partial:      "partly converted",
	Same:         "same as Portico without a setting",
	NotConverted: "not converted",
	Invalid:      "invalid",
	Unknown:      "unknown",
}

type textWriter struct{ b strings.Builder }

func (t *textWriter) section(title string) {
	t.b.WriteString("\n")
	t.line(0, title)
}

// line writes s indented by level (two spaces each), wrapped at textWidth; continuation lines
// are indented two more spaces.
func (t *textWriter) line(level int, s string) {
	indent := strings.Repeat("  ", level)
	width := textWidth - len(indent)
	first := true
	for {
		prefix := indent
		if !first {
			prefix += "  "
		}
		w := width
		if !first {
			w -= 2
		}
		if utf8.RuneCountInString(s) <= w {
			t.b.WriteString(prefix + s + "\n")
			return
		}
		cut := strings.LastIndexByte(s[:byteIndex(s, w+1)], ' ')
		if cut <= 0 {
			cut = strings.IndexByte(s, ' ')
			if cut < 0 {
				t.b.WriteString(prefix + s + "\n")
				return
			}
		}
		t.b.WriteString(prefix + s[:cut] + "\n")
		s = strings.TrimLeft(s[cut:], " ")
		first = false
	}
}

// byteIndex is the byte offset of the n-th rune of s (len(s) past its end).
func byteIndex(s string, n int) int {
	i := 0
	for j := range s {
		if i == n {
			return j
		}
		i++
	}
	return len(s)
}

func (t *textWriter) configMap(title string, r ConfigMapReport, unit string) {
	t.section(fmt.Sprintf("%s %s/%s", title, r.Namespace, r.Name))
	if !r.Found {
		t.line(1, "not found: nothing to convert")
		return
	}
	if len(r.Settings) == 0 {
		t.line(1, "no "+unit)
		return
	}
	for _, st := range statuses {
		var group []Setting
		for _, s := range r.Settings {
			if s.Status == st {
				group = append(group, s)
			}
		}
		if len(group) == 0 {
			continue
		}
		t.line(1, statusTitle[st]+":")
		for _, s := range group {
			l := fmt.Sprintf("%s: %s", s.Key, quote(s.Value))
			if s.Field != "" {
				l += fmt.Sprintf(" -> %s: %s", s.Field, s.Result)
			}
			if s.Reason != "" {
				l += ": " + s.Reason
			}
			t.line(2, l)
		}
	}
}

// plural is n and the noun for n.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// quote quotes a value, cut to 60 characters.
func quote(v string) string {
	const max = 60
	if utf8.RuneCountInString(v) > max {
		v = v[:byteIndex(v, max)] + "..."
	}
	return fmt.Sprintf("%q", v)
}

func (t *textWriter) ingress(ir IngressReport) {
	var class string
	switch ir.ClassFrom {
	case classFromDefault:
		class = "no class: ingress-nginx's default class"
	case classFromAnnotation:
		class = fmt.Sprintf("class %q by kubernetes.io/ingress.class", ir.Class)
	default:
		class = fmt.Sprintf("class %q", ir.Class)
	}
	state := "fully supported"
	if len(ir.Unsupported) > 0 || len(ir.Problems) > 0 {
		state = fmt.Sprintf("%d not honoured, %s", len(ir.Unsupported), plural(len(ir.Problems), "problem", "problems"))
	}
	t.section(fmt.Sprintf("Ingress %s/%s (%s): %s", ir.Namespace, ir.Name, class, state))
	if len(ir.Honoured) == 0 {
		t.line(1, "honoured: none")
	} else {
		t.line(1, fmt.Sprintf("honoured (%d):", len(ir.Honoured)))
		for _, prefix := range []string{route.NginxAnnotationPrefix, route.AnnotationPrefix} {
			var keys []string
			for _, name := range ir.Honoured {
				if k, ok := strings.CutPrefix(name, prefix); ok {
					keys = append(keys, k)
				}
			}
			if len(keys) > 0 {
				t.line(2, prefix+" "+strings.Join(keys, ", "))
			}
		}
	}
	if len(ir.Unsupported) > 0 {
		t.line(1, "not honoured:")
		for _, u := range ir.Unsupported {
			t.line(2, u.Annotation+": "+u.Reason)
		}
	}
	if len(ir.Problems) > 0 {
		t.line(1, "problems (the fleet's Warning Events):")
		for _, p := range ir.Problems {
			t.line(2, p)
		}
	}
	if len(ir.Differences) > 0 {
		t.line(1, "differences from ingress-nginx:")
		for _, d := range ir.Differences {
			t.line(2, fmt.Sprintf("%s: %s (%s)", strings.Join(d.Annotations, ", "), d.Text, d.Doc))
		}
	}
}
