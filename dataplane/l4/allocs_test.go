package l4

import (
	"crypto/tls"
	"testing"
)

// The readers run on every connection of a listener that uses them: they allocate the server
// name and, for a ClientHello spread over records, one copy of it; the PROXY header writer
// allocates nothing when its buffer is large enough.
func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector are its own")
	}
	one := clientHello(t, &tls.Config{ServerName: "app.example.com"})
	split := refragment(t, one, 500)
	v1 := AppendProxyHeader(nil, ProxyV1, v6src, v6dst)
	v2 := AppendProxyHeader(nil, ProxyV2, v6src, v6dst)
	buf := make([]byte, 0, 128)
	for _, tc := range []struct {
		name string
		max  float64
		f    func()
	}{
		{"ClientHello in one record", 1, func() { _, _ = ParseClientHello(one) }},
		{"ClientHello in several records", 2, func() { _, _ = ParseClientHello(split) }},
		{"PROXY v1 header", 1, func() { _, _, _ = ParseProxyHeader(v1) }},
		{"PROXY v2 header", 0, func() { _, _, _ = ParseProxyHeader(v2) }},
		{"writing a PROXY v1 header", 0, func() { _ = AppendProxyHeader(buf[:0], ProxyV1, v6src, v6dst) }},
		{"writing a PROXY v2 header", 0, func() { _ = AppendProxyHeader(buf[:0], ProxyV2, v6src, v6dst) }},
	} {
		if got := testing.AllocsPerRun(100, tc.f); got > tc.max {
			t.Errorf("%s: %v allocations, want at most %v", tc.name, got, tc.max)
		}
	}
}
