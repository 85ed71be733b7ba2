package run

import (
	"strings"
	"testing"
)

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

// TestGCPercentFlag: the proxy runs with GOGC 50 unless $GOGC or --gc-percent says otherwise.
func TestGCPercentFlag(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want int
	}{
		{"", nil, 50},
		{"", []string{"--gc-percent=200"}, 200},
		{"80", nil, 80},
		{"off", nil, -1},
		{"OFF", nil, -1},
		{"nonsense", nil, 100},
		{"80", []string{"--gc-percent=30"}, 30},
	} {
		t.Setenv("GOGC", tc.env)
		f, err := ParseFlags(append([]string{"--fleet=ns/edge"}, tc.args...))
		if err != nil {
			t.Fatalf("GOGC=%q %v: %v", tc.env, tc.args, err)
		}
		if f.GCPercent != tc.want {
			t.Errorf("GOGC=%q %v: GCPercent %d, want %d", tc.env, tc.args, f.GCPercent, tc.want)
		}
	}
}

// TestSpareProcsFlag: one P beyond the event loops unless --spare-procs says otherwise; a
// negative count is refused, naming the flag.
func TestSpareProcsFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, 1},
		{[]string{"--spare-procs=0"}, 0},
		{[]string{"--spare-procs=3"}, 3},
	} {
		f, err := ParseFlags(append([]string{"--fleet=ns/edge"}, tc.args...))
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if f.SpareProcs != tc.want {
			t.Errorf("%v: SpareProcs %d, want %d", tc.args, f.SpareProcs, tc.want)
		}
	}
	if _, err := ParseFlags([]string{"--fleet=ns/edge", "--spare-procs=-1"}); err == nil || !strings.Contains(err.Error(), "--spare-procs") {
		t.Errorf("--spare-procs=-1: %v, want an error naming the flag", err)
	}
}
