package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// AccessLog writes one JSON object per request to a writer.
type AccessLog struct {
	mu sync.Mutex
	w  *bufio.Writer
	f  func() error
}

// NewAccessLog logs to w, flushing at least once a second.
func NewAccessLog(w io.Writer) *AccessLog {
	bw := bufio.NewWriterSize(w, 64*1024)
	a := &AccessLog{w: bw, f: bw.Flush}
	go func() {
		for range time.Tick(time.Second) {
			a.mu.Lock()
			_ = a.f()
			a.mu.Unlock()
		}
	}()
	return a
}

type accessEntry struct {
	Time      string  `json:"time"`
	Client    string  `json:"client"`
	Method    string  `json:"method"`
	Host      string  `json:"host"`
	URI       string  `json:"uri"`
	Proto     string  `json:"proto"`
	Status    int     `json:"status"`
	Ingress   string  `json:"ingress,omitempty"`
	Service   string  `json:"service,omitempty"`
	Upstream  string  `json:"upstream,omitempty"`
	Duration  float64 `json:"duration"`
	RequestID string  `json:"requestId,omitempty"`
	UserAgent string  `json:"userAgent,omitempty"`
}

// Write logs one request served by net/http; requestID is the X-Request-Id sent upstream.
func (a *AccessLog) Write(r *http.Request, status int, ingress, service, upstream, requestID string, d time.Duration) {
	if requestID == "" {
		requestID = r.Header.Get("X-Request-Id")
	}
	a.write(accessEntry{
		Time: time.Now().UTC().Format(time.RFC3339Nano), Client: r.RemoteAddr, Method: r.Method, Host: r.Host,
		URI: r.RequestURI, Proto: r.Proto, Status: status, Ingress: ingress, Service: service, Upstream: upstream,
		Duration: d.Seconds(), RequestID: requestID, UserAgent: r.UserAgent(),
	})
}

func (a *AccessLog) write(e accessEntry) {
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	a.mu.Lock()
	_, _ = a.w.Write(append(b, '\n'))
	a.mu.Unlock()
}
