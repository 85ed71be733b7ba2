package l4

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingConn is the client side of a TLS handshake that records what the client writes (its
// ClientHello, in one write) and then ends the handshake.
type recordingConn struct {
	net.Conn
	buf bytes.Buffer
}

func (c *recordingConn) Write(b []byte) (int, error) { return c.buf.Write(b) }
func (c *recordingConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *recordingConn) Close() error                { return nil }
func (c *recordingConn) SetDeadline(time.Time) error { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error {
	return nil
}
func (c *recordingConn) SetReadDeadline(time.Time) error { return nil }

// clientHello returns the records of the ClientHello crypto/tls sends with cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	c := &recordingConn{}
	_ = tls.Client(c, cfg).Handshake()
	if c.buf.Len() == 0 {
		t.Fatal("the client wrote nothing")
	}
	return c.buf.Bytes()
}

// realHellos are ClientHellos of crypto/tls clients: their names and the records sent.
func realHellos(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"app.example.com":        clientHello(t, &tls.Config{ServerName: "app.example.com"}),
		"h2.example.com":         clientHello(t, &tls.Config{ServerName: "h2.example.com", NextProtos: []string{"h2", "http/1.1"}}),
		"tls12.example":          clientHello(t, &tls.Config{ServerName: "tls12.example", MaxVersion: tls.VersionTLS12}),
		"Mixed.Case.Example.COM": clientHello(t, &tls.Config{ServerName: "Mixed.Case.Example.COM"}),
		strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".example": clientHello(t,
			&tls.Config{ServerName: strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".example"}),
		// No SNI: crypto/tls sends none for an IP address.
		"": clientHello(t, &tls.Config{ServerName: "192.0.2.1", InsecureSkipVerify: true}),
	}
}

// refragment splits the handshake message carried by records into records of at most size
// bytes each.
func refragment(t testing.TB, records []byte, size int) []byte {
	t.Helper()
	var msg []byte
	for len(records) > 0 {
		n := int(binary.BigEndian.Uint16(records[3:5]))
		msg = append(msg, records[5:5+n]...)
		records = records[5+n:]
	}
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func TestParseClientHelloReal(t *testing.T) {
	for name, hello := range realHellos(t) {
		for _, size := range []int{0, 1, 2, 3, 4, 5, 100, 511, maxRecordLen} {
			b := hello
			if size > 0 {
				b = refragment(t, hello, size)
			}
			h, err := ParseClientHello(b)
			if err != nil || h.ServerName != name {
				t.Errorf("%q in records of %d bytes: got %q, %v", name, size, h.ServerName, err)
			}
			// What follows the records does not matter; what precedes their end is incomplete.
			if h, err := ParseClientHello(append(b[:len(b):len(b)], "\x14\x03\x03\x00\x01\x01"...)); err != nil || h.ServerName != name {
				t.Errorf("%q followed by a record: %q, %v", name, h.ServerName, err)
			}
			for i := 0; i < len(b); i += 1 + i/64 {
				if _, err := ParseClientHello(b[:i]); err != ErrIncomplete {
					t.Fatalf("%q in records of %d bytes, first %d of %d bytes: %v, want ErrIncomplete", name, size, i, len(b), err)
				}
			}
		}
	}
}

// hello builds ClientHello records around handcrafted extensions.
func hello(exts ...[]byte) []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	body = append(body, 1, 0)                // null compression
	if exts != nil {
		var all []byte
		for _, e := range exts {
			all = append(all, e...)
		}
		body = binary.BigEndian.AppendUint16(body, uint16(len(all)))
		body = append(body, all...)
	}
	msg := append([]byte{handshakeClientHello, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func ext(typ uint16, data []byte) []byte {
	e := binary.BigEndian.AppendUint16(nil, typ)
	e = binary.BigEndian.AppendUint16(e, uint16(len(data)))
	return append(e, data...)
}

// sni is a server_name extension with the given (type, name) entries.
func sni(entries ...any) []byte {
	var list []byte
	for i := 0; i < len(entries); i += 2 {
		name := entries[i+1].(string)
		list = append(list, byte(entries[i].(int)))
		list = binary.BigEndian.AppendUint16(list, uint16(len(name)))
		list = append(list, name...)
	}
	return ext(extensionServerName, append(binary.BigEndian.AppendUint16(nil, uint16(len(list))), list...))
}

func TestParseClientHelloHandcrafted(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string // the server name, or the error
	}{
		{"no extensions at all", hello(), ""},
		{"extensions without server_name", hello(ext(16, []byte{0, 3, 2, 'h', '2'})), ""},
		{"server_name after other extensions", hello(ext(16, []byte{0, 3, 2, 'h', '2'}), sni(0, "a.example")), "a.example"},
		{"an entry of another name type beside the host name", hello(sni(1, "other", 0, "a.example")), "a.example"},
		{"only an entry of another name type", hello(sni(7, "other")), ""},
		{"not TLS: HTTP", []byte("GET / HTTP/1.1\r\n"), ErrNotTLS.Error()},
		{"not TLS: SSLv2", []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, ErrNotTLS.Error()},
		{"not TLS: an alert first", []byte{21, 3, 1, 0, 2, 1, 0}, ErrNotTLS.Error()},
		{"not TLS: version 16.0", []byte{22, 0x10, 0, 0, 1, 1}, ErrNotTLS.Error()},
		{"a ServerHello", append([]byte{22, 3, 3, 0, 4}, 2, 0, 0, 0), "first handshake message of type 2"},
		{"an empty record", []byte{22, 3, 1, 0, 0}, "handshake record of 0 bytes"},
		{"a record over 16 KiB", []byte{22, 3, 1, 0x40, 0x01}, "handshake record of 16385 bytes"},
		{"a ClientHello over 64 KiB", []byte{22, 3, 1, 0, 4, 1, 1, 0, 1}, "ClientHello of 65537 bytes"},
		{"a change_cipher_spec between fragments", append(refragment(t, hello(sni(0, "a.example")), 10)[:15], 20, 3, 3, 0, 1, 1), "record of type 20"},
		{"cut short", func() []byte { b := hello(); b[4] -= 2; b[8] -= 2; return b[:len(b)-2] }(), "cut short before its extensions"},
		{"odd cipher suites", func() []byte { b := hello(); b[5+4+2+32+1+1] = 3; return b }(), "cipher suites of odd length 3"},
		{"bytes after the extensions", func() []byte {
			b := hello(sni(0, "a.example"))
			b = append(b, 0)
			b[4]++
			b[8]++
			return b
		}(), "extensions block does not end"},
		{"server_name twice", hello(sni(0, "a.example"), sni(0, "b.example")), "extension 0 twice"},
		{"two host names", hello(sni(0, "a.example", 0, "b.example")), "two host names"},
		{"an empty host name", hello(sni(0, "")), "cut short or empty"},
		{"an empty name list", hello(ext(extensionServerName, []byte{0, 0})), "without a name list"},
		{"a trailing dot", hello(sni(0, "a.example.")), "ends with a dot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(tc.in)
			got := h.ServerName
			if err != nil {
				got = err.Error()
				if !errors.Is(err, ErrMalformedClientHello) && err != ErrNotTLS {
					t.Fatalf("error %v is neither malformed nor not TLS", err)
				}
			}
			if (tc.want == "" && got != "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// crypto/tls decides for the fuzz test: what its server reads as a ClientHello (it calls
// GetConfigForClient) must be read here with the same name.
type bytesConn struct {
	net.Conn
	r io.Reader
}

func (c *bytesConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *bytesConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }

var errSeen = errors.New("seen")

func cryptoTLSServerName(b []byte) (name string, ok bool) {
	cfg := &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		name, ok = chi.ServerName, true
		return nil, errSeen
	}}
	_ = tls.Server(&bytesConn{r: bytes.NewReader(b)}, cfg).Handshake()
	return name, ok
}

func FuzzParseClientHello(f *testing.F) {
	for _, h := range realHellos(f) {
		f.Add(h, uint16(0))
		f.Add(refragment(f, h, 7), uint16(30))
	}
	f.Add(hello(sni(0, "a.example", 1, "x")), uint16(3))
	f.Add(hello(), uint16(0))
	f.Fuzz(func(t *testing.T, b []byte, split uint16) {
		h, err := ParseClientHello(b)
		switch {
		case err == nil, err == ErrIncomplete, err == ErrNotTLS, errors.Is(err, ErrMalformedClientHello):
		default:
			t.Fatalf("unexpected error %v", err)
		}
		// Read in two parts, the same.
		var s helloScanner
		if i := int(split); i < len(b) {
			if _, err := s.scan(b[:i]); err != ErrIncomplete {
				return // decided on the first part already
			}
		}
		h2, err2 := s.scan(b)
		if h2 != h || (err2 == nil) != (err == nil) || (err2 == ErrIncomplete) != (err == ErrIncomplete) {
			t.Fatalf("in two parts at %d: %+v, %v; whole: %+v, %v", split, h2, err2, h, err)
		}
		// Accepted by crypto/tls: accepted here, with the same name. The one exception by
		// design: crypto/tls skips warning alerts before the ClientHello; they are refused here.
		if err != nil && (err == ErrNotTLS && len(b) > 0 && b[0] == 21 || strings.Contains(err.Error(), "record of type 21")) {
			return
		}
		if name, ok := cryptoTLSServerName(b); ok && (err != nil || h.ServerName != name) {
			t.Fatalf("crypto/tls reads server name %q; here %q, %v", name, h.ServerName, err)
		}
	})
}

// ReadClientHello on real sockets: a ClientHello split across records and across TCP segments
// (written apart, with pauses) is read whole, every byte returned for replay.
func TestReadClientHelloSplit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	hello := refragment(t, clientHello(t, &tls.Config{ServerName: "split.example"}), 50)
	early := []byte{20, 3, 3, 0, 1, 1} // a change_cipher_spec the client sends right after
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
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(hello); i += 33 {
			_, _ = client.Write(hello[i:min(i+33, len(hello))])
			time.Sleep(2 * time.Millisecond)
		}
		_, _ = client.Write(early)
	}()
	h, raw, err := ReadClientHello(server, time.Now().Add(5*time.Second))
	if err != nil || h.ServerName != "split.example" {
		t.Fatalf("got %q, %v", h.ServerName, err)
	}
	wg.Wait()
	// Everything read is returned; the rest is still on the connection.
	rest := make([]byte, len(hello)+len(early)-len(raw))
	if _, err := io.ReadFull(server, rest); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(raw, rest...), append(hello, early...)) {
		t.Error("the bytes read and the bytes left are not what the client sent")
	}
	if err := server.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
}

func TestReadClientHelloBounds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pair := func(t *testing.T) (client, server net.Conn) {
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		server, err = ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { client.Close(); server.Close() })
		return client, server
	}
	t.Run("a client that stops half way times out", func(t *testing.T) {
		client, server := pair(t)
		_, _ = client.Write(clientHello(t, &tls.Config{ServerName: "a.example"})[:40])
		start := time.Now()
		_, raw, err := ReadClientHello(server, start.Add(150*time.Millisecond))
		if !errors.Is(err, os.ErrDeadlineExceeded) || len(raw) != 40 {
			t.Fatalf("got %d bytes, %v; want 40 and a deadline error", len(raw), err)
		}
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %v", time.Since(start))
		}
	})
	t.Run("a client that ends half way", func(t *testing.T) {
		client, server := pair(t)
		_, _ = client.Write(clientHello(t, &tls.Config{ServerName: "a.example"})[:40])
		_ = client.(*net.TCPConn).CloseWrite()
		if _, _, err := ReadClientHello(server, time.Now().Add(5*time.Second)); err != io.ErrUnexpectedEOF {
			t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
		}
	})
	t.Run("a ClientHello finer than 1 KiB records is refused at the read bound", func(t *testing.T) {
		client, server := pair(t)
		go func() {
			// A 64 KiB ClientHello in 1-byte records: 6 bytes sent per byte of it.
			b := []byte{22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 1, 1, 22, 3, 1, 0, 1, 0, 22, 3, 1, 0, 1, 0}
			for i := 0; i < MaxClientHelloRead/6+10; i++ {
				b = append(b, 22, 3, 1, 0, 1, 0)
			}
			_, _ = client.Write(b)
		}()
		_, raw, err := ReadClientHello(server, time.Now().Add(5*time.Second))
		if !errors.Is(err, ErrMalformedClientHello) || len(raw) != MaxClientHelloRead {
			t.Fatalf("got %d bytes, %v; want %d and malformed", len(raw), err, MaxClientHelloRead)
		}
	})
	t.Run("not TLS is told at the first bytes", func(t *testing.T) {
		client, server := pair(t)
		_, _ = client.Write([]byte("GET / HTTP/1.1\r\n"))
		_, raw, err := ReadClientHello(server, time.Now().Add(5*time.Second))
		if err != ErrNotTLS || string(raw) != "GET / HTTP/1.1\r\n" {
			t.Fatalf("got %q, %v", raw, err)
		}
	})
}
