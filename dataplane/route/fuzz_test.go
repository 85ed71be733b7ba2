package route

import (
	"strings"
	"testing"
)

// refPrefixMatch is the checklist's definition, element by element: the rule path's elements
// are a prefix of the request path's elements (a trailing slash ignored on both).
func refPrefixMatch(rule, req string) bool {
	split := func(p string) []string {
		var out []string
		for _, e := range strings.Split(p, "/") {
			if e != "" {
				out = append(out, e)
			}
		}
		return out
	}
	r, q := split(rule), split(req)
	if len(r) > len(q) {
		return false
	}
	for i := range r {
		if r[i] != q[i] {
			return false
		}
	}
	return true
}

func FuzzPathMatch(f *testing.F) {
	for _, s := range [][2]string{{"/foo", "/foo/bar"}, {"/aaa/bb", "/aaa/bbb"}, {"/", "/x"}, {"/a/", "/a"}, {"/a/b", "/a/./b/../b/c"}, {"/x", "//x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, rulePath, reqPath string) {
		if !strings.HasPrefix(rulePath, "/") || strings.Contains(rulePath, "//") || strings.Contains(rulePath, "/.") {
			return // the API server only admits absolute, clean rule paths
		}
		in := baseInput(ing("i", 1, rule("h", rulePath, pfx, "a", 80)))
		tb, _ := Compile(in)
		clean := CleanPath(reqPath)
		if !strings.HasPrefix(clean, "/") {
			t.Fatalf("CleanPath(%q) = %q is not absolute", reqPath, clean)
		}
		if CleanPath(clean) != clean {
			t.Fatalf("CleanPath is not idempotent: %q -> %q -> %q", reqPath, clean, CleanPath(clean))
		}
		got := tb.Match("h", reqPath, nil) != nil
		if want := refPrefixMatch(rulePath, clean); got != want {
			t.Fatalf("Prefix %q, request %q (clean %q): match %v, reference says %v", rulePath, reqPath, clean, got, want)
		}
	})
}

func FuzzHostMatch(f *testing.F) {
	for _, s := range []string{"foo.bar.com", "FOO.bar.com.", "x.foo.bar.com:8080", "bar.com", "[::1]:80", ""} {
		f.Add(s)
	}
	tb, _ := Compile(baseInput(
		ing("precise", 1, rule("foo.bar.com", "/", pfx, "a", 80)),
		ing("wild", 2, rule("*.bar.com", "/", pfx, "b", 80)),
	))
	f.Fuzz(func(t *testing.T, host string) {
		r := tb.Match(host, "/", nil)
		n := NormalizeHost(host)
		var want string
		switch {
		case n == "foo.bar.com":
			want = "a"
		case strings.HasSuffix(n, ".bar.com") && strings.Count(n, ".") == 2 && !strings.HasPrefix(n, "."):
			want = "b"
		}
		got := ""
		if r != nil {
			got = r.Backend.Service.Name
		}
		if got != want {
			t.Fatalf("host %q (normalized %q): got %q, want %q", host, n, got, want)
		}
	})
}
