package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	rt "portico.dev/portico/dataplane/route/routetest"
)

// TestGRPC sends unary and server-streaming gRPC calls through the proxy, over h2c (prior
// knowledge) and over TLS (ALPN h2), to a gRPC backend chosen by appProtocol grpc. The gRPC
// status travels in HTTP/2 trailers, which must pass through.
func TestGRPC(t *testing.T) {
	h := newHarness(t, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)
	h.addEndpoints("grpc-backend", "grpc", ln.Addr().(*net.TCPAddr).Port, "127.0.0.1")
	h.in.Secrets = append(h.in.Secrets, rt.TLSSecret("ns", "grpc-tls", "grpc.example.com"))
	if p := h.compile(rt.Ingress("ns", "g", 1, rt.Rule("grpc.example.com", "/", rt.Prefix, "grpc-backend", 80),
		rt.TLS("grpc-tls", "grpc.example.com"))); len(p) != 0 {
		t.Fatal(p)
	}

	for name, dial := range map[string]func() (*grpc.ClientConn, error){
		"h2c": func() (*grpc.ClientConn, error) {
			return grpc.NewClient(h.http, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc.example.com"))
		},
		"tls": func() (*grpc.ClientConn, error) {
			creds := credentials.NewTLS(&tls.Config{ServerName: "grpc.example.com", InsecureSkipVerify: true})
			return grpc.NewClient(h.https, grpc.WithTransportCredentials(creds), grpc.WithAuthority("grpc.example.com"))
		},
	} {
		t.Run(name, func(t *testing.T) {
			conn, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c := healthpb.NewHealthClient(conn)
			resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
			if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check: %v %v", resp, err)
			}
			// An error status arrives in the trailers.
			_, err = c.Check(ctx, &healthpb.HealthCheckRequest{Service: "unknown"})
			if status.Code(err) != codes.NotFound {
				t.Fatalf("Check(unknown): want NotFound from the trailers, got %v", err)
			}
			// Server streaming: each status change arrives as it happens.
			stream, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: "shop"})
			if err != nil {
				t.Fatal(err)
			}
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Watch first: %v %v", m, err)
			}
			hs.SetServingStatus("shop", healthpb.HealthCheckResponse_NOT_SERVING)
			if m, err := stream.Recv(); err != nil || m.Status != healthpb.HealthCheckResponse_NOT_SERVING {
				t.Fatalf("Watch update: %v %v", m, err)
			}
			hs.SetServingStatus("shop", healthpb.HealthCheckResponse_SERVING)
		})
	}
}
