package proxy

import (
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"
)

// TestFieldEncoder: the answers' header blocks decode (with x/net's HPACK decoder, as a client's
// would) to the fields written, names lowered; the first block alone begins with the table size
// update to 0; nothing is added to the client's dynamic table.
func TestFieldEncoder(t *testing.T) {
	var got []hpack.HeaderField
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
	long := strings.Repeat("v", 300) // a length past the 7-bit prefix
	var e fieldEncoder
	for i, tc := range []struct {
		status int
		fields [][2]string // as the core writes them (any case)
		want   []string    // :status, then name, value pairs
	}{
		{200, [][2]string{{"Content-Type", "text/plain"}, {"Date", "Tue, 01 Dec 2026 00:50:34 GMT"}}, []string{"200", "content-type", "text/plain", "date", "Tue, 01 Dec 2026 00:50:34 GMT"}},
		{204, nil, []string{"204"}},
		{206, [][2]string{{"content-range", "bytes 0-1/2"}}, []string{"206", "content-range", "bytes 0-1/2"}},
		{304, [][2]string{{"ETag", `"x"`}}, []string{"304", "etag", `"x"`}},
		{400, nil, []string{"400"}},
		{404, nil, []string{"404"}},
		{500, nil, []string{"500"}},
		{302, [][2]string{{"Location", "/elsewhere"}}, []string{"302", "location", "/elsewhere"}},
		{103, [][2]string{{"Link", "</s.css>; rel=preload"}}, []string{"103", "link", "</s.css>; rel=preload"}},
		{599, [][2]string{{"X-Custom-Header", long}, {"x-empty", ""}}, []string{"599", "x-custom-header", long, "x-empty", ""}},
		{200, [][2]string{{"X-A-Name-Longer-Than-Thirty-Two-Bytes", "\x01\x02\xff"}}, []string{"200", "x-a-name-longer-than-thirty-two-bytes", "\x01\x02\xff"}},
	} {
		e.begin()
		e.status(tc.status)
		for _, f := range tc.fields {
			e.field([]byte(f[0]), []byte(f[1]))
		}
		if sizeUpdate := e.buf[0]&0xe0 == 0x20; sizeUpdate != (i == 0) {
			t.Errorf("block %d: a table size update: %v", i, sizeUpdate)
		}
		got = got[:0]
		if _, err := dec.Write(e.buf); err != nil {
			t.Fatalf("block %d (status %d): %v", i, tc.status, err)
		}
		if len(got) == 0 || got[0].Name != ":status" || got[0].Value != tc.want[0] {
			t.Fatalf("block %d: %+v, want :status %s", i, got, tc.want[0])
		}
		if len(got) != 1+(len(tc.want)-1)/2 {
			t.Fatalf("block %d: %d fields, want %d", i, len(got), 1+(len(tc.want)-1)/2)
		}
		for j, f := range got[1:] {
			if f.Name != tc.want[1+2*j] || f.Value != tc.want[2+2*j] || f.Sensitive {
				t.Errorf("block %d field %d: %+v, want %s: %q", i, j, f, tc.want[1+2*j], tc.want[2+2*j])
			}
		}
	}
	// Nothing was indexed: a field indexed 62 (the dynamic table's first) does not decode.
	if _, err := dec.Write([]byte{0x80 | 62}); err == nil {
		t.Error("the client's dynamic table holds an entry")
	}
}

// TestFieldEncoderStaticNames: every name of the static table is sent by its index, and
// decodes to itself.
func TestFieldEncoderStaticNames(t *testing.T) {
	names := strings.Fields(`:authority :method :path :scheme :status accept-charset accept-encoding
		accept-language accept-ranges accept access-control-allow-origin age allow authorization
		cache-control content-disposition content-encoding content-language content-length
		content-location content-range content-type cookie date etag expect expires from host
		if-match if-modified-since if-none-match if-range if-unmodified-since last-modified link
		location max-forwards proxy-authenticate proxy-authorization range referer refresh
		retry-after server set-cookie strict-transport-security transfer-encoding user-agent vary
		via www-authenticate`)
	var got []hpack.HeaderField
	dec := hpack.NewDecoder(4096, func(f hpack.HeaderField) { got = append(got, f) })
	e := fieldEncoder{sent: true}
	for _, n := range names {
		e.begin()
		e.fieldString(n, "v")
		if e.buf[0] == 0 {
			t.Errorf("%s: sent as a literal name", n)
		}
		got = got[:0]
		if _, err := dec.Write(e.buf); err != nil || len(got) != 1 || got[0].Name != n || got[0].Value != "v" {
			t.Errorf("%s: decoded %+v, %v", n, got, err)
		}
	}
	if staticName("x-other") != 0 {
		t.Error("x-other has a static index")
	}
}

// TestFieldEncoderAllocs: encoding an answer allocates nothing once the buffer has grown.
func TestFieldEncoderAllocs(t *testing.T) {
	var e fieldEncoder
	name, value := []byte("Content-Type"), []byte("text/plain; charset=utf-8")
	run := func() {
		e.begin()
		e.status(200)
		e.field(name, value)
		e.field([]byte("X-Request-Id"), []byte("0123456789abcdef"))
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations an answer", n)
	}
}
