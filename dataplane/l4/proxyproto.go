package l4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// ProxyVersion is a PROXY protocol version (haproxy.org/download/2.9/doc/proxy-protocol.txt).
type ProxyVersion uint8

const (
	// ProxyNone sends no header.
	ProxyNone ProxyVersion = 0
	// ProxyV1 is the human-readable header: "PROXY TCP4 192.0.2.1 198.51.100.1 51234 443\r\n".
	ProxyV1 ProxyVersion = 1
	// ProxyV2 is the binary header.
	ProxyV2 ProxyVersion = 2
)

// Limits of the PROXY protocol headers this package reads.
const (
	// MaxProxyV1Len is the longest version 1 header, CRLF included (the specification's).
	MaxProxyV1Len = 107
	// MaxProxyV2Len is the longest version 2 header accepted, its 16-byte fixed part included:
	// addresses and TLVs beyond 4 KiB are refused (the specification allows 64 KiB; the
	// TLVs balancers send, such as AWS's VPC endpoint id, take a few dozen bytes).
	MaxProxyV2Len = 16 + 4096
)

// proxyV2Sig starts every version 2 header.
var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

var (
	// ErrIncomplete says the bytes given are the beginning of what is being parsed: read more
	// and parse again from the start.
	ErrIncomplete = errors.New("l4: incomplete")
	// ErrNoProxyHeader says the bytes do not start with a PROXY protocol signature.
	ErrNoProxyHeader = errors.New("l4: no PROXY protocol header")
	// ErrMalformedProxyHeader is wrapped by the errors of a header that starts with a PROXY
	// protocol signature but is not a valid header.
	ErrMalformedProxyHeader = errors.New("l4: malformed PROXY protocol header")
)

// ProxyHeader is what a PROXY protocol header says about a connection.
type ProxyHeader struct {
	// Version is ProxyV1 or ProxyV2.
	Version ProxyVersion
	// Local is true when the header carries no addresses to use: version 2's LOCAL command
	// (a connection the sender made itself, such as a health check), version 1's UNKNOWN, or
	// version 2 with an address family other than IPv4 and IPv6. The connection's own
	// addresses apply then, and Source and Destination are the zero AddrPort.
	Local bool
	// Datagram is true when a version 2 header says the client's transport was UDP.
	Datagram bool
	// Source is the client's address, Destination the address it connected to. IPv4
	// addresses are plain IPv4 (never IPv4-mapped IPv6).
	Source, Destination netip.AddrPort
	// TLVs are version 2's type-length-value extensions as sent, unparsed. They alias the
	// bytes parsed.
	TLVs []byte
}

// AppendProxyHeader appends the PROXY protocol header of version v for a TCP connection from
// src to dst and returns the extended slice; ProxyNone appends nothing. IPv4-mapped IPv6
// addresses are written as IPv4; when one address is IPv4 and the other IPv6, both are written
// as IPv6 (the IPv4 one mapped), as HAProxy does. If either address is invalid, the header
// says the addresses are unknown (version 1 "PROXY UNKNOWN", version 2 the PROXY command with
// the unspecified family), so the receiver uses the connection's own.
func AppendProxyHeader(b []byte, v ProxyVersion, src, dst netip.AddrPort) []byte {
	if v != ProxyV1 && v != ProxyV2 {
		return b
	}
	known := src.IsValid() && dst.IsValid()
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	v4 := sa.Is4() && da.Is4()
	if known && !v4 {
		sa, da = as16(sa), as16(da)
	}
	if v == ProxyV1 {
		if !known {
			return append(b, "PROXY UNKNOWN\r\n"...)
		}
		b = append(b, "PROXY TCP4 "...)
		if !v4 {
			b[len(b)-2] = '6'
		}
		b = sa.AppendTo(b)
		b = append(b, ' ')
		b = da.AppendTo(b)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(src.Port()), 10)
		b = append(b, ' ')
		b = strconv.AppendUint(b, uint64(dst.Port()), 10)
		return append(b, '\r', '\n')
	}
	b = append(b, proxyV2Sig...)
	b = append(b, 0x21) // version 2, PROXY
	switch {
	case !known:
		return append(b, 0x00, 0, 0) // AF_UNSPEC, no addresses
	case v4:
		b = append(b, 0x11, 0, 12) // AF_INET, STREAM
	default:
		b = append(b, 0x21, 0, 36) // AF_INET6, STREAM
	}
	b = append(b, sa.AsSlice()...)
	b = append(b, da.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

// as16 is a as an IPv6 address (IPv4 mapped).
func as16(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }

// ParseProxyHeader parses the PROXY protocol header (version 1 or 2) at the start of b and
// returns it with its length. It returns ErrIncomplete when b is a beginning of a header (or
// too short to tell whether one starts), ErrNoProxyHeader when b starts with neither
// signature, and an error wrapping ErrMalformedProxyHeader when what follows a signature is
// not a valid header or is longer than MaxProxyV1Len or MaxProxyV2Len. Version 1 is read
// strictly: single spaces, addresses of the family named, decimal ports without leading
// zeros.
func ParseProxyHeader(b []byte) (ProxyHeader, int, error) {
	switch {
	case len(b) >= len(proxyV2Sig) && bytes.Equal(b[:len(proxyV2Sig)], proxyV2Sig):
		return parseProxyV2(b)
	case len(b) >= 6 && string(b[:6]) == "PROXY ":
		return parseProxyV1(b)
	case bytes.HasPrefix(proxyV2Sig, b) || bytes.HasPrefix([]byte("PROXY "), b):
		return ProxyHeader{}, 0, ErrIncomplete
	}
	return ProxyHeader{}, 0, ErrNoProxyHeader
}

func malformedProxy(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformedProxyHeader, fmt.Sprintf(format, args...))
}

func parseProxyV1(b []byte) (ProxyHeader, int, error) {
	end := bytes.IndexByte(b[:min(len(b), MaxProxyV1Len)], '\n')
	if end < 0 {
		if len(b) < MaxProxyV1Len {
			return ProxyHeader{}, 0, ErrIncomplete
		}
		return ProxyHeader{}, 0, malformedProxy("version 1 header longer than %d bytes", MaxProxyV1Len)
	}
	if end == 0 || b[end-1] != '\r' {
		return ProxyHeader{}, 0, malformedProxy("version 1 line does not end with CRLF")
	}
	h := ProxyHeader{Version: ProxyV1}
	line := string(b[6 : end-1])
	if line == "UNKNOWN" || len(line) > 7 && line[:8] == "UNKNOWN " {
		h.Local = true
		return h, end + 1, nil
	}
	var f [5]string
	rest := line
	for i := range f {
		if i < len(f)-1 {
			sp := indexByteString(rest, ' ')
			if sp < 0 {
				return ProxyHeader{}, 0, malformedProxy("version 1 header %q has too few fields", line)
			}
			f[i], rest = rest[:sp], rest[sp+1:]
		} else {
			f[i] = rest
		}
	}
	var want4 bool
	switch f[0] {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return ProxyHeader{}, 0, malformedProxy("version 1 protocol %q: want TCP4, TCP6 or UNKNOWN", f[0])
	}
	var addrs [2]netip.Addr
	for i := range addrs {
		a, err := netip.ParseAddr(f[1+i])
		if err != nil || a.Zone() != "" || a.Is4() != want4 {
			return ProxyHeader{}, 0, malformedProxy("version 1 address %q is no %s address", f[1+i], f[0])
		}
		addrs[i] = a.Unmap()
	}
	var ports [2]uint16
	for i := range ports {
		p, ok := parsePort(f[3+i])
		if !ok {
			return ProxyHeader{}, 0, malformedProxy("version 1 port %q", f[3+i])
		}
		ports[i] = p
	}
	h.Source = netip.AddrPortFrom(addrs[0], ports[0])
	h.Destination = netip.AddrPortFrom(addrs[1], ports[1])
	return h, end + 1, nil
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// parsePort reads a decimal port without sign or leading zeros.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return uint16(n), n <= 65535
}

func parseProxyV2(b []byte) (ProxyHeader, int, error) {
	if len(b) < 16 {
		return ProxyHeader{}, 0, ErrIncomplete
	}
	if b[12]>>4 != 2 {
		return ProxyHeader{}, 0, malformedProxy("version 2 signature with version %d", b[12]>>4)
	}
	cmd := b[12] & 0x0f
	if cmd > 1 {
		return ProxyHeader{}, 0, malformedProxy("version 2 command %d: want LOCAL (0) or PROXY (1)", cmd)
	}
	n := 16 + int(binary.BigEndian.Uint16(b[14:16]))
	if n > MaxProxyV2Len {
		return ProxyHeader{}, 0, malformedProxy("version 2 header of %d bytes: at most %d are accepted", n, MaxProxyV2Len)
	}
	if len(b) < n {
		return ProxyHeader{}, 0, ErrIncomplete
	}
	h := ProxyHeader{Version: ProxyV2}
	fam, proto := b[13]>>4, b[13]&0x0f
	if fam > 3 || proto > 2 {
		return ProxyHeader{}, 0, malformedProxy("version 2 address family and protocol 0x%02x", b[13])
	}
	body := b[16:n]
	var size int
	switch fam {
	case 1:
		size = 12
	case 2:
		size = 36
	case 3:
		size = 216
	}
	if len(body) < size {
		return ProxyHeader{}, 0, malformedProxy("version 2 address block of %d bytes: family 0x%x needs %d", len(body), fam, size)
	}
	if cmd == 0 || fam == 0 || fam == 3 || proto == 0 {
		h.Local = true
		if cmd == 1 && fam != 0 {
			h.TLVs = body[size:]
		}
		return h, n, nil
	}
	h.Datagram = proto == 2
	al := (size - 4) / 2
	src, _ := netip.AddrFromSlice(body[:al])
	dst, _ := netip.AddrFromSlice(body[al : 2*al])
	h.Source = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(body[2*al:]))
	h.Destination = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(body[2*al+2:]))
	h.TLVs = body[size:]
	return h, n, nil
}

// ReadProxyHeader reads a PROXY protocol header from c, which must start with one (see
// ParseProxyHeader for the errors), until deadline. It returns the header and the bytes read
// past it, which belong to the connection's stream and must be served before anything read
// from c later. It reads no more than it is given by each read and at most MaxProxyV2Len
// bytes. On return, c's read deadline is cleared.
func ReadProxyHeader(c net.Conn, deadline time.Time) (ProxyHeader, []byte, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return ProxyHeader{}, nil, err
	}
	defer func() { _ = c.SetReadDeadline(time.Time{}) }()
	buf := make([]byte, 0, 256)
	for {
		if len(buf) >= MaxProxyV2Len {
			return ProxyHeader{}, nil, malformedProxy("no header within %d bytes", MaxProxyV2Len)
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := c.Read(buf[len(buf):min(cap(buf), MaxProxyV2Len)])
		buf = buf[:len(buf)+n]
		h, hl, perr := ParseProxyHeader(buf)
		if perr == nil {
			return h, buf[hl:], nil
		}
		if perr != ErrIncomplete {
			return ProxyHeader{}, nil, perr
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return ProxyHeader{}, nil, err
		}
	}
}
