package migrate

import (
	"fmt"
	"strings"
	"testing"
)

func TestConvertTCP(t *testing.T) {
	cases := []struct {
		key, value string
		status     Status
		result     string // JSON of the spec.tcp entry
		reason     string // a part of the reason
	}{
		{"5432", "db/postgres:5432", Converted, `{"port":5432,"service":{"namespace":"db","name":"postgres","port":5432}}`, ""},
		{"6379", "cache/redis:redis", Converted, `{"port":6379,"service":{"namespace":"cache","name":"redis","port":"redis"}}`, ""},
		{"25", "mail/smtp:smtp::PROXY", Converted, `{"port":25,"service":{"namespace":"mail","name":"smtp","port":"smtp"},"proxyProtocol":"V1"}`, ""},
		{"26", "mail/smtp:25::proxy", Converted, `{"port":26,"service":{"namespace":"mail","name":"smtp","port":25},"proxyProtocol":"V1"}`, ""},
		{"9000", "apps/a:9000:PROXY", Partial, `{"port":9000,"service":{"namespace":"apps","name":"a","port":9000}}`, "Portico's TCP listeners do not"},
		{"9001", "apps/a:9001:PROXY:PROXY", Partial, `{"port":9001,"service":{"namespace":"apps","name":"a","port":9001}}`, "does not get two"},
		{"9002", "apps/a:9002:PROXY:", Partial, `{"port":9002,"service":{"namespace":"apps","name":"a","port":9002}}`, "do not"},
		{"9003", "apps/a:9003:", Converted, `{"port":9003,"service":{"namespace":"apps","name":"a","port":9003}}`, ""},
		{"9004", "apps/a:9004:SSL", Converted, `{"port":9004,"service":{"namespace":"apps","name":"a","port":9004}}`, `"SSL" is not PROXY`},
		{"9005", "apps/a:9005::V2", Converted, `{"port":9005,"service":{"namespace":"apps","name":"a","port":9005}}`, `"V2" is not PROXY`},
		{"80", "apps/a:80", Invalid, "", "reserves"},
		{"443", "apps/a:443", Invalid, "", "reserves"},
		{"10254", "apps/a:1", Invalid, "", "reserves"},
		{"8181", "apps/a:1", Invalid, "", "reserves"},
		{"ssh", "git/gitea:22", Invalid, "", "not a port number"},
		{"0", "apps/a:1", Invalid, "", "1 to 65535"},
		{"70000", "apps/a:1", Invalid, "", "1 to 65535"},
		{"1000", "a:1000", Invalid, "", "<namespace>/<name>"},
		{"1001", "apps/a", Invalid, "", "<namespace>/<service>:<port>"},
		{"1002", "apps/a:1:PROXY:PROXY:x", Invalid, "", "more than four fields"},
		{"1003", "apps/a/b:1", Invalid, "", "<namespace>/<name>"},
		{"1004", "Apps/a:1", Invalid, "", "not a DNS label"},
		{"1005", "apps/1a:1", Invalid, "", "starting with a letter"},
		{"1006", "apps/a:0", Invalid, "", "1 to 65535"},
		{"1007", "apps/a:Postgres", Invalid, "", "neither a number nor a port name"},
		{"1008", "apps/a:", Invalid, "", "neither a number nor a port name"},
		{"1009", "/a:1", Invalid, "", "<namespace>/<name>"},
	}
	for _, tc := range cases {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			svcs, settings := ConvertTCP(map[string]string{tc.key: tc.value})
			if len(settings) != 1 {
				t.Fatalf("settings %+v, want one", settings)
			}
			s := settings[0]
			if s.Status != tc.status || !strings.Contains(s.Reason, tc.reason) {
				t.Fatalf("%+v, want status %s and a reason saying %q", s, tc.status, tc.reason)
			}
			if tc.result == "" {
				if len(svcs) != 0 || s.Result != nil || s.Field != "" {
					t.Errorf("converted %s (%s) from an invalid entry", mustJSON(svcs), s.Result)
				}
				return
			}
			if len(svcs) != 1 || string(mustJSON(svcs[0])) != tc.result || string(s.Result) != tc.result || s.Field != "spec.tcp" {
				t.Errorf("spec.tcp %s (setting %s %s), want [%s]", mustJSON(svcs), s.Field, s.Result, tc.result)
			}
			if s.Status == Partial && s.Reason == "" {
				t.Errorf("partly converted without a reason")
			}
		})
	}
}

func TestConvertUDP(t *testing.T) {
	cases := []struct {
		key, value string
		status     Status
		result     string
		reason     string
	}{
		{"53", "kube-system/kube-dns:53", Converted, `{"port":53,"service":{"namespace":"kube-system","name":"kube-dns","port":53}}`, ""},
		{"53", "kube-system/kube-dns:dns", Converted, `{"port":53,"service":{"namespace":"kube-system","name":"kube-dns","port":"dns"}}`, ""},
		{"514", "logging/syslog:514:PROXY:PROXY", Converted, `{"port":514,"service":{"namespace":"logging","name":"syslog","port":514}}`, "TCP only"},
		{"443", "apps/quic:443", Invalid, "", "reserves"},
		{"123", "ntp/chrony:NTP", Invalid, "", "port name"},
		{"x", "ntp/chrony:123", Invalid, "", "not a port number"},
	}
	for _, tc := range cases {
		svcs, settings := ConvertUDP(map[string]string{tc.key: tc.value})
		if len(settings) != 1 {
			t.Fatalf("%s: settings %+v", tc.key, settings)
		}
		s := settings[0]
		if s.Status != tc.status || !strings.Contains(s.Reason, tc.reason) {
			t.Errorf("%s=%q: %+v, want status %s, reason saying %q", tc.key, tc.value, s, tc.status, tc.reason)
		}
		got := ""
		if len(svcs) == 1 {
			got = string(mustJSON(svcs[0]))
		}
		if got != tc.result || string(s.Result) != tc.result {
			t.Errorf("%s=%q: spec.udp %s, setting %s, want %s", tc.key, tc.value, mustJSON(svcs), s.Result, tc.result)
		}
	}
}

// Entries come in port order (numbers, then the rest), and beyond the CRD's 64 are reported.
func TestConvertL4OrderAndLimit(t *testing.T) {
	data := map[string]string{"zz": "a/b:1", "10": "a/b:1", "9": "a/b:1", "100": "a/b:1"}
	for i := 0; i < 70; i++ {
		data[fmt.Sprint(20000+i)] = "a/b:1"
	}
	svcs, settings := ConvertTCP(data)
	if len(svcs) != 64 {
		t.Fatalf("%d spec.tcp entries, want 64", len(svcs))
	}
	var keys []string
	for _, s := range settings {
		keys = append(keys, s.Key)
	}
	if keys[0] != "9" || keys[1] != "10" || keys[2] != "100" || keys[len(keys)-1] != "zz" {
		t.Errorf("order %v", keys)
	}
	over := 0
	for _, s := range settings {
		if s.Status == NotConverted && strings.Contains(s.Reason, "at most 64") {
			over++
		}
	}
	if over != 73-64 {
		t.Errorf("%d entries reported beyond the limit, want %d", over, 73-64)
	}
	udp, _ := ConvertUDP(data)
	if len(udp) != 64 {
		t.Errorf("%d spec.udp entries, want 64", len(udp))
	}
}
