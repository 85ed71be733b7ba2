package defaultbackend

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeAnswersWithTheStatusCodeAndStopsGracefully(t *testing.T) {
	o := Options{StatusCode: 418, Addr: freePort(t), HealthAddr: freePort(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, o, logr.Discard()) }()

	var resp *http.Response
	var err error
	for i := 0; i < 50; i++ {
		if resp, err = http.Get("http://" + o.Addr + "/any/path?q=1"); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 418 || !strings.Contains(string(body), "no Ingress rule matches") || resp.Header.Get("Server") != "portico" {
		t.Fatalf("got %d %q server=%q", resp.StatusCode, body, resp.Header.Get("Server"))
	}
	// An error page the proxy asks for (custom-http-errors) is answered with its X-Code.
	req, _ := http.NewRequest(http.MethodGet, "http://"+o.Addr+"/", nil)
	req.Header.Set("X-Code", "503")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 503 {
		t.Fatalf("X-Code 503: %v %v", r, err)
	} else {
		r.Body.Close()
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		r, err := http.Get("http://" + o.HealthAddr + p)
		if err != nil || r.StatusCode != 200 {
			t.Fatalf("%s: %v %v", p, r, err)
		}
		r.Body.Close()
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", o.Addr, 200*time.Millisecond); err == nil {
		t.Fatal("still listening after shutdown")
	}
}

func TestMainRejectsABadStatusCode(t *testing.T) {
	err := Main([]string{"--status-code=700", "--zap-log-level=debug"}) // the logger's flags are its own
	if err == nil || !strings.Contains(err.Error(), "--status-code 700") {
		t.Fatalf("got %v", err)
	}
}
