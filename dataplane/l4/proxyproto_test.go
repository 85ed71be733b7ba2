package l4

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

var (
	v4src = netip.MustParseAddrPort("192.0.2.1:51234")
	v4dst = netip.MustParseAddrPort("198.51.100.7:443")
	v6src = netip.MustParseAddrPort("[2001:db8::1]:51234")
	v6dst = netip.MustParseAddrPort("[2001:db8::2]:443")
)

func TestAppendProxyHeaderV1(t *testing.T) {
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		want     string
	}{
		{"IPv4", v4src, v4dst, "PROXY TCP4 192.0.2.1 198.51.100.7 51234 443\r\n"},
		{"IPv6", v6src, v6dst, "PROXY TCP6 2001:db8::1 2001:db8::2 51234 443\r\n"},
		{"IPv4-mapped IPv6 is IPv4", netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), netip.MustParseAddrPort("[::ffff:198.51.100.7]:2"),
			"PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\n"},
		{"mixed families are IPv6", v4src, v6dst, "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 51234 443\r\n"},
		{"an unknown address", netip.AddrPort{}, v4dst, "PROXY UNKNOWN\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(AppendProxyHeader([]byte("x"), ProxyV1, tc.src, tc.dst)); got != "x"+tc.want {
				t.Errorf("got %q, want %q", got, "x"+tc.want)
			}
		})
	}
	if got := AppendProxyHeader(nil, ProxyNone, v4src, v4dst); len(got) != 0 {
		t.Errorf("ProxyNone appended %q", got)
	}
}

func TestAppendProxyHeaderV2(t *testing.T) {
	sig := "0d0a0d0a000d0a515549540a"
	for _, tc := range []struct {
		name     string
		src, dst netip.AddrPort
		want     string // hex
	}{
		{"IPv4", v4src, v4dst, sig + "21" + "11" + "000c" + "c0000201" + "c6336407" + "c822" + "01bb"},
		{"IPv6", v6src, v6dst, sig + "21" + "21" + "0024" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "c822" + "01bb"},
		{"mixed families are IPv6", v4src, v6dst, sig + "21" + "21" + "0024" + "00000000000000000000ffffc0000201" + "20010db8000000000000000000000002" + "c822" + "01bb"},
		{"an unknown address", v4src, netip.AddrPort{}, sig + "21" + "00" + "0000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := hex.EncodeToString(AppendProxyHeader(nil, ProxyV2, tc.src, tc.dst)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestParseProxyHeader(t *testing.T) {
	sig := string(proxyV2Sig)
	for _, tc := range []struct {
		name string
		in   string
		want ProxyHeader
		n    int
	}{
		{"the specification's v1 example", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /",
			ProxyHeader{Version: ProxyV1, Source: netip.MustParseAddrPort("192.168.0.1:56324"), Destination: netip.MustParseAddrPort("192.168.0.11:443")}, 47},
		{"v1 TCP6", "PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
			ProxyHeader{Version: ProxyV1, Source: netip.MustParseAddrPort("[2001:db8::1]:1"), Destination: netip.MustParseAddrPort("[2001:db8::2]:65535")}, 44},
		{"v1 UNKNOWN", "PROXY UNKNOWN\r\n", ProxyHeader{Version: ProxyV1, Local: true}, 15},
		{"v1 UNKNOWN with addresses, ignored", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader{Version: ProxyV1, Local: true}, 35},
		{"v2 IPv4 with a TLV", sig + "\x21\x11\x00\x10" + "\xc0\x00\x02\x01\xc6\x33\x64\x07\xc8\x22\x01\xbb" + "\x04\x00\x01\x00" + "rest",
			ProxyHeader{Version: ProxyV2, Source: v4src, Destination: v4dst, TLVs: []byte("\x04\x00\x01\x00")}, 32},
		{"v2 UDP over IPv6", sig + "\x21\x22\x00\x24" + strings.Repeat("\x00", 15) + "\x01" + strings.Repeat("\x00", 15) + "\x02" + "\x00\x35\x00\x35",
			ProxyHeader{Version: ProxyV2, Datagram: true, Source: netip.MustParseAddrPort("[::1]:53"), Destination: netip.MustParseAddrPort("[::2]:53"), TLVs: []byte{}}, 52},
		{"v2 LOCAL (a health check) with addresses, ignored", sig + "\x20\x11\x00\x0c" + strings.Repeat("\x01", 12), ProxyHeader{Version: ProxyV2, Local: true}, 28},
		{"v2 PROXY with an unspecified family", sig + "\x21\x00\x00\x00", ProxyHeader{Version: ProxyV2, Local: true}, 16},
		{"v2 over a Unix socket", sig + "\x21\x31\x00\xd8" + strings.Repeat("\x00", 216), ProxyHeader{Version: ProxyV2, Local: true, TLVs: []byte{}}, 232},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := ParseProxyHeader([]byte(tc.in))
			if err != nil || n != tc.n || !sameHeader(h, tc.want) {
				t.Fatalf("got %+v, %d, %v; want %+v, %d", h, n, err, tc.want, tc.n)
			}
			// Every beginning of the header asks for more.
			for i := 0; i < n; i++ {
				if _, _, err := ParseProxyHeader([]byte(tc.in[:i])); err != ErrIncomplete {
					t.Fatalf("%d of %d bytes: %v, want ErrIncomplete", i, n, err)
				}
			}
		})
	}
}

func sameHeader(a, b ProxyHeader) bool {
	return a.Version == b.Version && a.Local == b.Local && a.Datagram == b.Datagram && a.Source == b.Source &&
		a.Destination == b.Destination && bytes.Equal(a.TLVs, b.TLVs) && (a.TLVs == nil) == (b.TLVs == nil)
}

func TestParseProxyHeaderRejects(t *testing.T) {
	sig := string(proxyV2Sig)
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"HTTP", "GET / HTTP/1.1\r\n", ErrNoProxyHeader},
		{"TLS", "\x16\x03\x01\x02\x00", ErrNoProxyHeader},
		{"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", ErrNoProxyHeader},
		{"v1 without CR", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", ErrMalformedProxyHeader},
		{"v1 over 107 bytes", "PROXY TCP6 " + strings.Repeat("1", 100), ErrMalformedProxyHeader},
		{"v1 TCP5", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", ErrMalformedProxyHeader},
		{"v1 TCP4 with IPv6", "PROXY TCP4 ::1 ::2 1 2\r\n", ErrMalformedProxyHeader},
		{"v1 TCP6 with IPv4", "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", ErrMalformedProxyHeader},
		{"v1 a zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", ErrMalformedProxyHeader},
		{"v1 a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ErrMalformedProxyHeader},
		{"v1 port 65536", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", ErrMalformedProxyHeader},
		{"v1 a signed port", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ErrMalformedProxyHeader},
		{"v1 two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", ErrMalformedProxyHeader},
		{"v1 a field too many", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ErrMalformedProxyHeader},
		{"v1 a field too few", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", ErrMalformedProxyHeader},
		{"v2 version 1", sig + "\x11\x11\x00\x0c" + strings.Repeat("\x00", 12), ErrMalformedProxyHeader},
		{"v2 command 2", sig + "\x22\x11\x00\x0c" + strings.Repeat("\x00", 12), ErrMalformedProxyHeader},
		{"v2 family 4", sig + "\x21\x41\x00\x0c" + strings.Repeat("\x00", 12), ErrMalformedProxyHeader},
		{"v2 IPv4 block short", sig + "\x21\x11\x00\x0b" + strings.Repeat("\x00", 11), ErrMalformedProxyHeader},
		{"v2 IPv6 block short", sig + "\x21\x21\x00\x0c" + strings.Repeat("\x00", 12), ErrMalformedProxyHeader},
		{"v2 beyond 4 KiB", sig + "\x21\x11\x10\x01", ErrMalformedProxyHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := ParseProxyHeader([]byte(tc.in)); !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// What AppendProxyHeader writes, ParseProxyHeader reads back, for random addresses of both
// families and both versions.
func TestProxyHeaderRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addr := func() netip.AddrPort {
		var b [16]byte
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		a := netip.AddrFrom16(b)
		if r.IntN(2) == 0 {
			a = netip.AddrFrom4([4]byte(b[:4]))
		}
		return netip.AddrPortFrom(a, uint16(r.Uint32()))
	}
	for i := 0; i < 2000; i++ {
		src, dst := addr(), addr()
		for _, v := range []ProxyVersion{ProxyV1, ProxyV2} {
			b := AppendProxyHeader(nil, v, src, dst)
			h, n, err := ParseProxyHeader(append(b, "data"...))
			if err != nil || n != len(b) || h.Version != v || h.Local {
				t.Fatalf("%q: %+v, %d, %v", b, h, n, err)
			}
			// Read back as sent, IPv4 as plain IPv4 even when it went as IPv6 beside an IPv6 address.
			if h.Source != netip.AddrPortFrom(src.Addr().Unmap(), src.Port()) || h.Destination != netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()) {
				t.Fatalf("v%d %v -> %v read back as %v -> %v", v, src, dst, h.Source, h.Destination)
			}
		}
	}
}

func FuzzParseProxyHeader(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"))
	f.Add([]byte("PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\nrest"))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add(AppendProxyHeader(nil, ProxyV2, v4src, v4dst))
	f.Add(AppendProxyHeader(nil, ProxyV2, v6src, v6dst))
	f.Add(append(proxyV2Sig, "\x20\x11\x00\x0c0123456789ab"...))
	f.Add(append(proxyV2Sig, "\x21\x31\x00\xd8"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseProxyHeader(b)
		if err != nil {
			if err != ErrIncomplete && err != ErrNoProxyHeader && !errors.Is(err, ErrMalformedProxyHeader) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if n <= 0 || n > len(b) || n > MaxProxyV2Len {
			t.Fatalf("length %d of %d bytes", n, len(b))
		}
		if h.Version == ProxyV1 && (n > MaxProxyV1Len || !bytes.HasSuffix(b[:n], []byte("\r\n"))) {
			t.Fatalf("v1 header %q", b[:n])
		}
		// What follows the header never changes the header.
		h2, n2, err := ParseProxyHeader(append(b[:n:n], "GET / HTTP/1.1\r\n"...))
		if err != nil || n2 != n || !sameHeader(h, h2) {
			t.Fatalf("%q followed by more: %+v, %d, %v; alone %+v, %d", b[:n], h2, n2, err, h, n)
		}
		// A shorter input is incomplete, not something else.
		if _, _, err := ParseProxyHeader(b[:n-1]); err != ErrIncomplete {
			t.Fatalf("%q minus its last byte: %v", b[:n], err)
		}
		if h.Local {
			return
		}
		if h.Source.Addr().Is4In6() || h.Destination.Addr().Is4In6() {
			t.Fatalf("addresses %v %v", h.Source, h.Destination)
		}
		// Written again, it reads the same.
		for _, v := range []ProxyVersion{ProxyV1, ProxyV2} {
			again, _, err := ParseProxyHeader(AppendProxyHeader(nil, v, h.Source, h.Destination))
			if err != nil || again.Source != h.Source || again.Destination != h.Destination {
				t.Fatalf("%+v written as v%d reads %+v, %v", h, v, again, err)
			}
		}
	})
}

// ReadProxyHeader over a real connection: a header split across segments, the bytes after it
// returned, and a header alone (a server-speaks-first protocol) read without waiting for more.
func TestReadProxyHeader(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name   string
		chunks []string
		rest   string // what the server reads after the header, all of it
	}{
		{"v1 in pieces then data", []string{"PRO", "XY TCP4 192.0.2.1 198.51.100.7 ", "51234 443\r", "\nhello"}, "hello"},
		{"v2 in pieces then data", []string{string(proxyV2Sig[:5]), string(AppendProxyHeader(nil, ProxyV2, v4src, v4dst)[5:]) + "hello"}, "hello"},
		{"v1 alone, the client waiting", []string{"PROXY UNKNOWN\r\n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			go func() {
				for _, c := range tc.chunks {
					_, _ = client.Write([]byte(c))
					time.Sleep(5 * time.Millisecond)
				}
			}()
			h, rest, err := ReadProxyHeader(server, time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if tc.rest == "" && !h.Local {
				t.Fatalf("header %+v", h)
			}
			if tc.rest != "" && (h.Source != v4src || h.Destination != v4dst) {
				t.Fatalf("header %+v", h)
			}
			got := string(rest)
			if len(got) < len(tc.rest) {
				more := make([]byte, len(tc.rest)-len(got))
				if _, err := io.ReadFull(server, more); err != nil {
					t.Fatal(err)
				}
				got += string(more)
			}
			if got != tc.rest {
				t.Errorf("after the header: %q, want %q", got, tc.rest)
			}
		})
	}
	t.Run("a client that stops half way", func(t *testing.T) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		_, _ = client.Write([]byte("PROXY TCP4 "))
		start := time.Now()
		_, _, err = ReadProxyHeader(server, start.Add(100*time.Millisecond))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
	})
	t.Run("a client that ends half way", func(t *testing.T) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		_, _ = client.Write([]byte("PROXY TCP4 "))
		_ = client.(*net.TCPConn).CloseWrite()
		if _, _, err := ReadProxyHeader(server, time.Now().Add(5*time.Second)); err != io.ErrUnexpectedEOF {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
	})
}
