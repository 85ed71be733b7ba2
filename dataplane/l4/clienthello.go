package l4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Limits of the ClientHello reader. The message and record limits are crypto/tls's, so a
// ClientHello crypto/tls would read is never refused by ParseClientHello for its size.
const (
	// MaxClientHelloLen is the largest ClientHello message body accepted (crypto/tls's
	// maxHandshake). A ClientHello with post-quantum key shares takes about 1,800 bytes.
	MaxClientHelloLen = 1 << 16
	// maxRecordLen is the largest TLS plaintext record (RFC 8446, section 5.1).
	maxRecordLen = 1 << 14
	// MaxClientHelloRead bounds the bytes ReadClientHello reads: the largest ClientHello in
	// records of at least 1 KiB each (a client splitting it finer than that is refused).
	MaxClientHelloRead = MaxClientHelloLen + 4 + 5*(MaxClientHelloLen/1024+1)
)

const (
	recordTypeHandshake  = 22
	handshakeClientHello = 1
	extensionServerName  = 0
)

var (
	// ErrNotTLS says a connection's first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("l4: not a TLS handshake")
	// ErrMalformedClientHello is wrapped by the errors of TLS records that do not hold a
	// well-formed ClientHello (or hold it in more than MaxClientHelloRead bytes).
	ErrMalformedClientHello = errors.New("l4: malformed TLS ClientHello")
)

// ClientHello is what routing needs from a TLS ClientHello.
type ClientHello struct {
	// ServerName is the server_name extension's host name as the client sent it (not
	// lower-cased); empty when the ClientHello has no server_name extension.
	ServerName string
}

func malformedHello(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedClientHello, fmt.Sprintf(format, args...))
}

// ParseClientHello reads the ClientHello from the TLS records at the start of b: one or more
// handshake records whose payloads, concatenated, start with a ClientHello message (RFC 8446,
// sections 4.1.2 and 5.1). It returns ErrIncomplete when b holds a beginning of them (read
// more and parse again), ErrNotTLS when the first record is no handshake record, and an error
// wrapping ErrMalformedClientHello otherwise. It checks what crypto/tls checks before it
// calls GetConfigForClient on the record layer and the fields it reads (the server_name
// extension, duplicate extensions, the message's framing) and no more, so whatever crypto/tls
// would accept as a ClientHello is accepted here with the same ServerName; records of another
// type before the ClientHello ends (which crypto/tls skips when they are warning alerts) are
// refused. A ClientHello without a server_name extension is no error: ServerName is empty.
func ParseClientHello(b []byte) (ClientHello, error) {
	var s helloScanner
	return s.scan(b)
}

// helloScanner reads the ClientHello's records as they arrive: each scan of a longer b (which
// starts with the bytes of the previous one) looks at the new complete records only, so
// reading a ClientHello costs time linear in its size however finely it is split.
type helloScanner struct {
	pos     int    // the end of the complete records scanned
	records int    // complete records scanned
	one     [2]int // the payload's bounds in b while there is one record (b may move)
	hs      []byte // the handshake bytes, copied once they span records
}

func (s *helloScanner) scan(b []byte) (ClientHello, error) {
	for {
		if len(b)-s.pos < 5 {
			if s.pos == 0 && len(b) > 0 && b[0] != recordTypeHandshake {
				return ClientHello{}, ErrNotTLS
			}
			return ClientHello{}, ErrIncomplete
		}
		typ, vers, n := b[s.pos], binary.BigEndian.Uint16(b[s.pos+1:]), int(binary.BigEndian.Uint16(b[s.pos+3:]))
		if typ != recordTypeHandshake || vers >= 0x1000 {
			if s.pos == 0 {
				return ClientHello{}, ErrNotTLS
			}
			return ClientHello{}, malformedHello("record of type %d, version 0x%04x before the ClientHello ended", typ, vers)
		}
		if n == 0 || n > maxRecordLen {
			return ClientHello{}, malformedHello("handshake record of %d bytes", n)
		}
		if s.pos+5+n > len(b) {
			// Refuse early a message header that is already wrong in the part received.
			var head [4]byte
			got := copy(head[:], s.handshake(b))
			got += copy(head[got:], b[s.pos+5:])
			if _, err := clientHelloPrefix(head[:got]); err != nil {
				return ClientHello{}, err
			}
			return ClientHello{}, ErrIncomplete
		}
		start := s.pos + 5
		s.pos += 5 + n
		s.records++
		switch s.records {
		case 1:
			s.one = [2]int{start, s.pos}
		case 2:
			first := b[s.one[0]:s.one[1]]
			size := len(first) + n
			if len(first) >= 4 { // the whole message's size is known: one allocation
				size = max(size, 4+(int(first[1])<<16|int(first[2])<<8|int(first[3])))
			}
			s.hs = append(make([]byte, 0, size), first...)
			fallthrough
		default:
			s.hs = append(s.hs, b[start:s.pos]...)
		}
		body, err := clientHelloPrefix(s.handshake(b))
		if err != nil {
			return ClientHello{}, err
		}
		if body != nil {
			return parseClientHelloBody(body)
		}
	}
}

// handshake is the handshake bytes of the complete records scanned.
func (s *helloScanner) handshake(b []byte) []byte {
	if s.records == 1 {
		return b[s.one[0]:s.one[1]]
	}
	return s.hs
}

// clientHelloPrefix checks the handshake message header in hs and returns the ClientHello body
// once hs holds all of it (nil, nil before).
func clientHelloPrefix(hs []byte) ([]byte, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	if hs[0] != handshakeClientHello {
		return nil, malformedHello("first handshake message of type %d", hs[0])
	}
	if len(hs) < 4 {
		return nil, nil
	}
	n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
	if n > MaxClientHelloLen {
		return nil, malformedHello("ClientHello of %d bytes", n)
	}
	if len(hs) < 4+n {
		return nil, nil
	}
	return hs[4 : 4+n], nil
}

// helloReader reads the ClientHello's fields; a read past the end sets bad.
type helloReader struct {
	b   []byte
	bad bool
}

func (r *helloReader) next(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *helloReader) u8() int {
	if b := r.next(1); b != nil {
		return int(b[0])
	}
	return 0
}

func (r *helloReader) u16() int {
	if b := r.next(2); b != nil {
		return int(binary.BigEndian.Uint16(b))
	}
	return 0
}

// vec8 and vec16 read a vector with a 1- or 2-byte length.
func (r *helloReader) vec8() []byte  { return r.next(r.u8()) }
func (r *helloReader) vec16() []byte { return r.next(r.u16()) }

// parseClientHelloBody reads a ClientHello body as crypto/tls's clientHelloMsg.unmarshal does
// for the framing and the server_name extension.
func parseClientHelloBody(body []byte) (ClientHello, error) {
	r := helloReader{b: body}
	r.next(2 + 32) // legacy_version, random
	r.vec8()       // legacy_session_id
	suites := r.vec16()
	r.vec8() // legacy_compression_methods
	if r.bad {
		return ClientHello{}, malformedHello("ClientHello cut short before its extensions")
	}
	if len(suites)%2 != 0 {
		return ClientHello{}, malformedHello("cipher suites of odd length %d", len(suites))
	}
	var h ClientHello
	if len(r.b) == 0 {
		return h, nil // no extensions at all (TLS 1.2 and before)
	}
	exts := helloReader{b: r.vec16()}
	if r.bad || len(r.b) != 0 {
		return ClientHello{}, malformedHello("extensions block does not end the ClientHello")
	}
	var seen []uint16 // extension types seen; a ClientHello carries a few dozen at most
	for len(exts.b) > 0 {
		typ := uint16(exts.u16())
		data := exts.vec16()
		if exts.bad {
			return ClientHello{}, malformedHello("extension cut short")
		}
		for _, s := range seen {
			if s == typ {
				return ClientHello{}, malformedHello("extension %d twice", typ)
			}
		}
		seen = append(seen, typ)
		if typ != extensionServerName {
			continue
		}
		// RFC 6066, section 3: a non-empty list of (name_type, name); one host_name at most.
		d := helloReader{b: data}
		list := helloReader{b: d.vec16()}
		if d.bad || len(list.b) == 0 {
			return ClientHello{}, malformedHello("server_name extension without a name list")
		}
		for len(list.b) > 0 {
			nameType := list.u8()
			name := list.vec16()
			if list.bad || len(name) == 0 {
				return ClientHello{}, malformedHello("server_name entry cut short or empty")
			}
			if nameType != 0 {
				continue
			}
			if h.ServerName != "" {
				return ClientHello{}, malformedHello("two host names in server_name")
			}
			if name[len(name)-1] == '.' {
				return ClientHello{}, malformedHello("server name %q ends with a dot", name)
			}
			h.ServerName = string(name)
		}
	}
	return h, nil
}

// ReadClientHello reads from c, until deadline, the TLS records holding a ClientHello and
// parses it (see ParseClientHello for what is accepted and the errors). It returns every byte
// it read, the ClientHello's records and anything the client sent after them in the same
// reads, so the caller can replay them: to a backend (TLS passthrough) or to a TLS server of
// its own (through a net.Conn that serves them first). It reads at most MaxClientHelloRead
// bytes; more without a complete ClientHello is malformed. A read error (io.EOF before a
// complete ClientHello becomes io.ErrUnexpectedEOF; os.ErrDeadlineExceeded at the deadline)
// is returned as it is, with the bytes read. On return, c's read deadline is cleared.
//
// The caller tells the outcomes apart: err nil and ServerName set (route by name), err nil
// and ServerName empty (no SNI), errors.Is(err, ErrMalformedClientHello) or ErrNotTLS
// (terminate with the default certificate, as ingress-nginx does, and let the TLS server
// refuse what it refuses), or a read error (the client is gone or too slow).
func ReadClientHello(c net.Conn, deadline time.Time) (ClientHello, []byte, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return ClientHello{}, nil, err
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, 2048)
	var s helloScanner
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= MaxClientHelloRead {
				return ClientHello{}, buf, malformedHello("no complete ClientHello in %d bytes", len(buf))
			}
			grown := make([]byte, len(buf), min(2*cap(buf), MaxClientHelloRead))
			copy(grown, buf)
			buf = grown
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			h, perr := s.scan(buf)
			if perr != ErrIncomplete {
				return h, buf, perr
			}
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return ClientHello{}, buf, err
		}
	}
}
