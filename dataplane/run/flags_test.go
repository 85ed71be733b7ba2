package run

import "testing"

// TestLoggerFlags: the logger's flags are the proxy's own; --zap-log-level=debug shows the V(1)
// lines (upstream errors, TLS failures), which the default level hides.
func TestLoggerFlags(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		debug bool
	}{
		{[]string{"--fleet=ns/edge"}, false},
		{[]string{"--fleet=ns/edge", "--zap-log-level=debug"}, true},
		{[]string{"--fleet=ns/edge", "--zap-log-level=2"}, true},
	} {
		f, err := ParseFlags(tc.args)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := f.Logger().V(1).Enabled(); got != tc.debug {
			t.Errorf("%v: V(1) enabled %v, want %v", tc.args, got, tc.debug)
		}
	}
	if _, err := ParseFlags([]string{"--fleet=ns/edge", "--zap-log-level=loud"}); err == nil {
		t.Error("--zap-log-level=loud: accepted")
	}
}
