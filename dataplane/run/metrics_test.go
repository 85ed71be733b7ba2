package run

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// recorder keeps the collectors registered through it.
type recorder struct {
	prometheus.Registerer
	collectors []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registerer.Register(c)
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

// servedSeries returns the names of every series the proxy serves on /metrics (a histogram's
// _bucket, _sum and _count included), from the collectors' descriptions: a vector with no
// series yet counts too.
func servedSeries(t *testing.T) map[string]bool {
	rec := &recorder{Registerer: prometheus.NewRegistry()}
	_, _ = registerMetrics(rec)
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for _, c := range rec.collectors {
		ch := make(chan *prometheus.Desc, 256)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fq.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
		}
	}
	// Histograms: their series as Prometheus stores them.
	for _, h := range []string{"portico_request_duration_seconds"} {
		if !names[h] {
			t.Fatalf("%s is not served", h)
		}
		for _, s := range []string{"_bucket", "_sum", "_count"} {
			names[h+s] = true
		}
	}
	if len(names) < 20 {
		t.Fatalf("only %d series found: %v", len(names), names)
	}
	return names
}

// TestDashboardQueriesExist: every series the fleet dashboard (config/grafana) queries, in its
// panels and its variables, is one the proxy serves.
func TestDashboardQueriesExist(t *testing.T) {
	served := servedSeries(t)
	raw, err := os.ReadFile("../../config/grafana/portico-fleet.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	series := regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]`)
	labelValues := regexp.MustCompile(`label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	checked := 0
	check := func(where, expr string) {
		for _, re := range []*regexp.Regexp{series, labelValues} {
			for _, m := range re.FindAllStringSubmatch(expr, -1) {
				checked++
				if !served[m[1]] {
					t.Errorf("%s queries %s, which the proxy does not serve", where, m[1])
				}
			}
		}
	}
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if q, ok := v.Query.(map[string]any); ok {
			s, _ := q["query"].(string)
			check("variable "+v.Name, s)
		}
	}
	if checked < len(d.Panels) {
		t.Fatalf("only %d series found in %d panels", checked, len(d.Panels))
	}
}

// TestMetricsDocumented: docs/operations.md's table of the proxy's series names every portico_
// series the proxy serves, and none it does not.
func TestMetricsDocumented(t *testing.T) {
	served := servedSeries(t)
	raw, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `(portico_[a-z0-9_]+)` \\|")
	for _, m := range row.FindAllStringSubmatch(string(raw), -1) {
		documented[m[1]] = true
		if !served[m[1]] {
			t.Errorf("docs/operations.md lists %s, which the proxy does not serve", m[1])
		}
	}
	for name := range served {
		if strings.HasPrefix(name, "portico_") && !documented[name] && !strings.HasSuffix(name, "_bucket") &&
			!strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") {
			t.Errorf("%s is served but not in docs/operations.md", name)
		}
	}
}
