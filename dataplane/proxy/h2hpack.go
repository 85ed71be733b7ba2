package proxy

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 server's header blocks, both ways, without allocating per request: a client's
// block is decoded into a slice the connection reuses (golang.org/x/net/http2's Framer, with
// ReadMetaHeaders set, allocates a frame, a closure and a growing slice for each), and an answer's
// is encoded by hand (no dynamic table: static-table names, literal values).

// headerBlock is a client's header block (a HEADERS frame and its CONTINUATION frames) as
// decoded, with the checks golang.org/x/net/http2's Framer makes when ReadMetaHeaders is set
// (frame.go, readMetaFrame and checkPseudos): field names and values valid, pseudo-fields first
// and each once, the header list within SETTINGS_MAX_HEADER_LIST_SIZE (past it the block is
// decoded on, to keep the decoder's table in step, and marked truncated), and the CONTINUATION
// flood's bounds. It is the connection's, reused for every block: its fields are valid until
// the next one is read.
type headerBlock struct {
	streamID  uint32
	endStream bool
	truncated bool
	selfDep   bool // its priority makes the stream depend on itself
	fields    []hpack.HeaderField
	pseudo    int // fields[:pseudo] are the pseudo-fields

	dec *hpack.Decoder
	max uint32 // SETTINGS_MAX_HEADER_LIST_SIZE
	// remain and trailersRemain are the header list bytes left (RFC 9113 §6.5.2: name, value
	// and 32 a field; the names a Trailer field lists count against a budget of their own, as
	// net/http counts them).
	remain, trailersRemain uint32
	sawRegular             bool
	invalid                error
}

var errPseudoAfterRegular = errors.New("http2: pseudo-header field after a regular one")

// init makes the block's decoder; max is the header list size (0: net/http2's default, 16 MiB).
func (b *headerBlock) init(max uint32) {
	if max == 0 {
		max = 16 << 20
	}
	b.max = max
	b.dec = hpack.NewDecoder(4096, b.emit)
	b.dec.SetMaxStringLength(int(max))
}

func (b *headerBlock) PseudoFields() []hpack.HeaderField  { return b.fields[:b.pseudo] }
func (b *headerBlock) RegularFields() []hpack.HeaderField { return b.fields[b.pseudo:] }
func (b *headerBlock) StreamEnded() bool                  { return b.endStream }

func (b *headerBlock) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = errors.New("http2: invalid value of header field " + hf.Name)
	}
	if strings.HasPrefix(hf.Name, ":") {
		if b.sawRegular {
			b.invalid = errPseudoAfterRegular
		}
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = errors.New("http2: invalid header field name")
		}
	}
	if b.invalid != nil {
		b.dec.SetEmitEnabled(false)
		return
	}
	remain, size := &b.remain, hf.Size()
	if hf.Name == "trailer" {
		n := uint32(strings.Count(hf.Value, ",") + 1)
		remain, size = &b.trailersRemain, uint32(len(hf.Value))-n+1+n*32
	}
	if size > *remain {
		b.dec.SetEmitEnabled(false)
		b.truncated = true
		b.remain, b.trailersRemain = 0, 0
		return
	}
	*remain -= size
	if !b.sawRegular {
		b.pseudo++
	}
	b.fields = append(b.fields, hf)
}

// validWireName: a token in lower case (RFC 9113 §8.2.1).
func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !httpguts.IsTokenRune(rune(c)) || ('A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// readHeaderBlock decodes the header block f begins, reading its CONTINUATION frames from the
// connection's Framer (which checks that they follow it, and nothing else does). The errors are
// the Framer's: a connection error for a block too long for what is left of the header list
// (twice it: any CONTINUATION after the list is full), for a CONTINUATION after an invalid
// field, and for HPACK that does not decode; a stream error for an invalid field.
func (cc *h2Conn) readHeaderBlock(f *http2.HeadersFrame) (*headerBlock, error) {
	b := &cc.hb
	clear(b.fields) // drop the last block's strings
	b.streamID, b.endStream, b.truncated = f.StreamID, f.StreamEnded(), false
	b.selfDep = f.HasPriority() && f.Priority.StreamDep == f.StreamID
	b.fields, b.pseudo = b.fields[:0], 0
	b.remain, b.trailersRemain, b.sawRegular, b.invalid = b.max, b.max, false, nil
	b.dec.SetEmitEnabled(true) // off after a truncation or an invalid field
	frag, ended := f.HeaderBlockFragment(), f.HeadersEnded()
	for {
		if int64(len(frag)) > 2*int64(b.remain+b.trailersRemain) {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if b.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := b.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		nf, err := cc.rfr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cc.bigRead = cc.bigRead || nf.Header().Length > h2SmallFrame
		c := nf.(*http2.ContinuationFrame) // the Framer's frame order check
		frag, ended = c.HeaderBlockFragment(), c.HeadersEnded()
	}
	if err := b.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if b.invalid != nil {
		return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: b.invalid}
	}
	pf := b.PseudoFields()
	request, response := false, false
	for i, hf := range pf {
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			request = true
		case ":status":
			response = true
		default:
			return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: errors.New("http2: invalid pseudo-header field")}
		}
		for _, hf2 := range pf[:i] {
			if hf.Name == hf2.Name {
				return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: errors.New("http2: duplicate pseudo-header field")}
			}
		}
	}
	if request && response {
		return nil, http2.StreamError{StreamID: b.streamID, Code: http2.ErrCodeProtocol, Cause: errors.New("http2: request and response pseudo-header fields")}
	}
	return b, nil
}

// fieldEncoder encodes an answer's header block without HPACK's dynamic table, as nginx and
// HAProxy do: a name in the static table by its index, others and every value as literals
// (Huffman-coded when that is shorter), each a literal without indexing (RFC 7541 §6.2.2, as
// x/net's encoder sent them with no table; not the never-indexed form of §6.2.3). The first block begins with a table
// size update to 0, which tells the client it may free its own table (RFC 7541 §4.2, §6.3).
// Appending to the connection's buffer, it allocates nothing once the buffer has grown.
type fieldEncoder struct {
	buf  []byte
	sent bool // the size update went out
}

// begin starts a block.
func (e *fieldEncoder) begin() {
	e.buf = e.buf[:0]
	if !e.sent {
		e.buf = append(e.buf, 0x20) // 001xxxxx: dynamic table size update, 0
		e.sent = true
	}
}

// status appends :status.
func (e *fieldEncoder) status(code int) {
	switch code { // indexed fields 8 to 14
	case 200:
		e.buf = append(e.buf, 0x80|8)
	case 204:
		e.buf = append(e.buf, 0x80|9)
	case 206:
		e.buf = append(e.buf, 0x80|10)
	case 304:
		e.buf = append(e.buf, 0x80|11)
	case 400:
		e.buf = append(e.buf, 0x80|12)
	case 404:
		e.buf = append(e.buf, 0x80|13)
	case 500:
		e.buf = append(e.buf, 0x80|14)
	default:
		var d [3]byte
		d[0], d[1], d[2] = byte('0'+code/100%10), byte('0'+code/10%10), byte('0'+code%10)
		e.buf = appendInt(e.buf, 4, 8) // literal without indexing, name :status (index 8)
		e.buf = appendHpackString(e.buf, bytesView(d[:]))
	}
}

// field appends a field; name is lowered on the way (HTTP/2 field names are lower case).
func (e *fieldEncoder) field(name, value []byte) {
	var buf [32]byte
	e.fieldString(bytesView(lowerBytes(&buf, name)), bytesView(value))
}

// fieldString appends a field whose name is already lower case.
func (e *fieldEncoder) fieldString(name, value string) {
	if i := staticName(name); i != 0 {
		e.buf = appendInt(e.buf, 4, uint64(i)) // 0000xxxx: literal without indexing, indexed name
	} else {
		e.buf = append(e.buf, 0)
		e.buf = appendHpackString(e.buf, name)
	}
	e.buf = appendHpackString(e.buf, value)
}

// appendHpackString appends s as an HPACK string literal (RFC 7541 §5.2), Huffman-coded when
// that is shorter.
func appendHpackString(b []byte, s string) []byte {
	if h := hpack.HuffmanEncodeLength(s); h < uint64(len(s)) {
		first := len(b)
		b = appendInt(b, 7, h)
		b[first] |= 0x80
		return hpack.AppendHuffmanString(b, s)
	}
	b = appendInt(b, 7, uint64(len(s)))
	return append(b, s...)
}

// appendInt appends i as an HPACK integer with an n-bit prefix (RFC 7541 §5.1); the prefix's
// other bits are left 0 for the caller.
func appendInt(b []byte, n uint, i uint64) []byte {
	k := uint64(1)<<n - 1
	if i < k {
		return append(b, byte(i))
	}
	b = append(b, byte(k))
	i -= k
	for ; i >= 128; i >>= 7 {
		b = append(b, byte(0x80|(i&0x7f)))
	}
	return append(b, byte(i))
}

// staticName is the index of name in HPACK's static table (RFC 7541 Appendix A), its first
// entry of that name, or 0. (A switch on strings compiles to a binary search: no hashing.)
func staticName(name string) uint8 {
	switch name {
	case ":authority":
		return 1
	case ":method":
		return 2
	case ":path":
		return 4
	case ":scheme":
		return 6
	case ":status":
		return 8
	case "accept-charset":
		return 15
	case "accept-encoding":
		return 16
	case "accept-language":
		return 17
	case "accept-ranges":
		return 18
	case "accept":
		return 19
	case "access-control-allow-origin":
		return 20
	case "age":
		return 21
	case "allow":
		return 22
	case "authorization":
		return 23
	case "cache-control":
		return 24
	case "content-disposition":
		return 25
	case "content-encoding":
		return 26
	case "content-language":
		return 27
	case "content-length":
		return 28
	case "content-location":
		return 29
	case "content-range":
		return 30
	case "content-type":
		return 31
	case "cookie":
		return 32
	case "date":
		return 33
	case "etag":
		return 34
	case "expect":
		return 35
	case "expires":
		return 36
	case "from":
		return 37
	case "host":
		return 38
	case "if-match":
		return 39
	case "if-modified-since":
		return 40
	case "if-none-match":
		return 41
	case "if-range":
		return 42
	case "if-unmodified-since":
		return 43
	case "last-modified":
		return 44
	case "link":
		return 45
	case "location":
		return 46
	case "max-forwards":
		return 47
	case "proxy-authenticate":
		return 48
	case "proxy-authorization":
		return 49
	case "range":
		return 50
	case "referer":
		return 51
	case "refresh":
		return 52
	case "retry-after":
		return 53
	case "server":
		return 54
	case "set-cookie":
		return 55
	case "strict-transport-security":
		return 56
	case "transfer-encoding":
		return 57
	case "user-agent":
		return 58
	case "vary":
		return 59
	case "via":
		return 60
	case "www-authenticate":
		return 61
	}
	return 0
}
