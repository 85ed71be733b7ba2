// Package echo is the test backend: it answers every request with JSON naming itself and
// describing the request it received, and echoes WebSocket messages. It can also play an
// external authentication service (Auth).
package echo

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

// Reply is what the echo server answers.
type Reply struct {
	Name     string              `json:"name"` // the backend (pod) name
	Service  string              `json:"service,omitempty"`
	Host     string              `json:"host"`
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	URI      string              `json:"uri"` // the request URI exactly as received
	Proto    string              `json:"proto"`
	Headers  map[string][]string `json:"headers"`
	BodySize int64               `json:"bodySize"`
}

// Handler answers as the backend called name (of Service service).
func Handler(name, service string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			websocketEcho(w, r)
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Backend", name)
		_ = json.NewEncoder(w).Encode(Reply{Name: name, Service: service, Host: r.Host, Method: r.Method, Path: r.URL.Path,
			URI: r.RequestURI, Proto: r.Proto, Headers: r.Header, BodySize: n})
	})
}

// AuthPath is the path Auth answers on.
const AuthPath = "/auth"

// Auth makes a backend an external authentication service as well (ingress-nginx's auth-url),
// on AuthPath: a request carrying the cookie name=value (cookie written "name=value") is
// answered 202 with X-Auth-Request-User set to the value, any other 401 with
// WWW-Authenticate: Cookie realm="echo". Requests for other paths go to next.
func Auth(cookie string, next http.Handler) http.Handler {
	name, value, _ := strings.Cut(cookie, "=")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != AuthPath {
			next.ServeHTTP(w, r)
			return
		}
		if c, err := r.Cookie(name); err == nil && c.Value == value {
			w.Header().Set("X-Auth-Request-User", value)
			w.WriteHeader(http.StatusAccepted)
			return
		}
		w.Header().Set("WWW-Authenticate", `Cookie realm="echo"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
}

// websocketEcho completes the RFC 6455 handshake and echoes unmasked text frames of up to 125
// bytes back, which is all the tests need.
func websocketEcho(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n")
	_ = rw.Flush()
	for {
		msg, err := ReadFrame(rw.Reader)
		if err != nil {
			return
		}
		if _, err := conn.Write(Frame(msg, false)); err != nil {
			return
		}
	}
}

// Frame encodes a short text frame, masked as a client must send it when mask is set.
func Frame(payload []byte, mask bool) []byte {
	b := []byte{0x81, byte(len(payload))}
	if !mask {
		return append(b, payload...)
	}
	b[1] |= 0x80
	key := []byte{1, 2, 3, 4}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

// ReadFrame decodes one short frame, masked or not.
func ReadFrame(r *bufio.Reader) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(hdr[1] & 0x7f)
	var key [4]byte
	masked := hdr[1]&0x80 != 0
	if masked {
		if _, err := io.ReadFull(r, key[:]); err != nil {
			return nil, err
		}
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return nil, err
	}
	if masked {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return p, nil
}
