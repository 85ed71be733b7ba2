package proxy

import (
	"bufio"
	"encoding/json"
	"io"
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

// accessEntry is one access log line. The fields are those of ingress-nginx's default log
// format that a JSON line can carry (docs/operations.md lists them).
type accessEntry struct {
	Time         string  `json:"time"`
	Client       string  `json:"client"`
	Method       string  `json:"method"`
	Host         string  `json:"host"`
	URI          string  `json:"uri"`
	Proto        string  `json:"proto"`
	Status       int     `json:"status"`
	Bytes        int64   `json:"bytes"`
	Duration     float64 `json:"duration"`
	Ingress      string  `json:"ingress,omitempty"`
	Service      string  `json:"service,omitempty"`
	Upstream     string  `json:"upstream,omitempty"`
	UpstreamTime float64 `json:"upstreamTime,omitempty"`
	RequestID    string  `json:"requestId,omitempty"`
	UserAgent    string  `json:"userAgent,omitempty"`
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
