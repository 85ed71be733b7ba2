package route

import (
	"regexp"
	"testing"
)

// The parts of the model no Ingress annotation fills (Gateway API HTTPRoute: query and method
// matches, weighted backends, component redirects), tested on hand-built rules.

func TestConditionsMatch(t *testing.T) {
	h := &Host{Rules: []Rule{
		{Path: "/", Type: Prefix, Backend: &Backend{name: "ns/v2:80"}, Conditions: &Conditions{Method: "GET",
			Headers: []HeaderMatch{{Name: "x-version", Value: "2"}},
			Query:   []HeaderMatch{{Name: "beta", Pattern: regexp.MustCompile(`^(1|yes)$`)}}}},
		{Path: "/", Type: Prefix, Backend: &Backend{name: "ns/v1:80"}},
	}}
	for _, tc := range []struct {
		method, target, version string
		want                    string
	}{
		{"GET", "/a?beta=yes", "2", "ns/v2:80"},
		{"GET", "/a?x=1&beta=1", "2", "ns/v2:80"},
		{"GET", "/a?beta=no", "2", "ns/v1:80"},
		{"GET", "/a", "2", "ns/v1:80"},
		{"POST", "/a?beta=1", "2", "ns/v1:80"},
		{"GET", "/a?beta=1", "", "ns/v1:80"},
	} {
		r := h.match("/a", modelReq{method: tc.method, target: tc.target, version: tc.version})
		if got := r.Backend.Name(); got != tc.want {
			t.Errorf("%s %s version %q: %s, want %s", tc.method, tc.target, tc.version, got, tc.want)
		}
	}
}

func TestPickBackendByWeight(t *testing.T) {
	live := func(name string) *Backend {
		return &Backend{name: name, Endpoints: []*Endpoint{{Addr: "10.0.0.1:80", Stats: &EndpointStats{}}}}
	}
	a, b, down := live("a"), live("b"), &Backend{name: "down"}
	r := &Rule{Backend: a, Backends: []WeightedBackend{{a, 80}, {b, 20}, {down, 50}}}
	n := map[string]int{}
	for i := 0; i < 10000; i++ {
		n[r.PickBackend().Name()]++
	}
	if n["down"] != 0 || n["a"] < 7600 || n["a"] > 8400 {
		t.Errorf("picks %v, want a:b about 80:20 and none to the backend without endpoints", n)
	}
}

func TestComponentRedirect(t *testing.T) {
	rule := &Rule{Path: "/old", Type: Prefix}
	for _, tc := range []struct {
		rd   Redirect
		u    RequestURI
		want string
	}{
		{Redirect{Code: 301, Scheme: "https"}, RequestURI{Host: "a.example.com:8080", Target: "/old/x?q=1", Path: "/old/x"}, "https://a.example.com/old/x?q=1"},
		{Redirect{Code: 302, Hostname: "b.example.com", Port: 8443}, RequestURI{Host: "a.example.com", Target: "/p", Path: "/p", TLS: true}, "https://b.example.com:8443/p"},
		{Redirect{Code: 302, Path: "/new"}, RequestURI{Host: "a", Target: "/old/x?q=1", Path: "/old/x"}, "http://a/new?q=1"},
		{Redirect{Code: 302, PrefixPath: "/new"}, RequestURI{Host: "a", Target: "/old/x/y", Path: "/old/x/y", Rule: rule}, "http://a/new/x/y"},
	} {
		p := &Policy{Redirect: &tc.rd}
		if code, loc := p.RedirectFor(&tc.u); code != tc.rd.Code || loc != tc.want {
			t.Errorf("%+v: %d %q, want %q", tc.rd, code, loc, tc.want)
		}
	}
}

type modelReq struct{ method, target, version string }

func (r modelReq) Method() string   { return r.method }
func (r modelReq) Target() string   { return r.target }
func (r modelReq) Host() string     { return "h" }
func (r modelReq) ClientIP() string { return "10.1.1.1" }
func (r modelReq) Header(name string) (string, bool) {
	if name == "x-version" && r.version != "" {
		return r.version, true
	}
	return "", false
}
func (r modelReq) Cookie(string) (string, bool) { return "", false }
