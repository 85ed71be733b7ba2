// Command grpcbench is the gRPC backend and load generator of hack/bench-proxy.sh: a gRPC server
// (cleartext h2c) with a unary and a server-streaming method on raw bytes (no generated code),
// and a client that calls one of them from many goroutines over a few connections for a fixed
// time, through a proxy, and prints the calls per second and the latency percentiles.
//
//	grpcbench -serve 127.0.0.1:18010
//	grpcbench -target 127.0.0.1:18443 -tls -authority bench.example.com -method unary -conns 16 -concurrency 160 -duration 10s
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// rawCodec passes messages as the bytes they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append((*(v.(*[]byte)))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// streamMessages is how many messages a server-streaming call returns.
const streamMessages = 10

var service = grpc.ServiceDesc{
	ServiceName: "bench.Bench",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{MethodName: "Unary", Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		var in []byte
		if err := dec(&in); err != nil {
			return nil, err
		}
		return &in, nil
	}}},
	Streams: []grpc.StreamDesc{{StreamName: "Stream", ServerStreams: true, Handler: func(_ any, s grpc.ServerStream) error {
		var in []byte
		if err := s.RecvMsg(&in); err != nil {
			return err
		}
		for range streamMessages {
			if err := s.SendMsg(&in); err != nil {
				return err
			}
		}
		return nil
	}}},
}

func main() {
	serve := flag.String("serve", "", "serve the backend on this address")
	target := flag.String("target", "", "call this address")
	useTLS := flag.Bool("tls", false, "TLS to the target (certificate not checked)")
	authority := flag.String("authority", "bench.example.com", ":authority (and TLS server name)")
	method := flag.String("method", "unary", "unary or stream (server-streaming, 10 messages per call)")
	conns := flag.Int("conns", 16, "connections")
	concurrency := flag.Int("concurrency", 160, "calls in flight, spread over the connections")
	duration := flag.Duration("duration", 10*time.Second, "how long to call")
	size := flag.Int("size", 64, "message size in bytes")
	flag.Parse()
	if *serve != "" {
		ln, err := net.Listen("tcp", *serve)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.MaxConcurrentStreams(1000))
		s.RegisterService(&service, nil)
		_ = s.Serve(ln)
		return
	}
	creds := insecure.NewCredentials()
	if *useTLS {
		creds = credentials.NewTLS(&tls.Config{InsecureSkipVerify: true, ServerName: *authority})
	}
	clients := make([]*grpc.ClientConn, *conns)
	for i := range clients {
		c, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds), grpc.WithAuthority(*authority),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		c.Connect()
		clients[i] = c
	}
	msg := make([]byte, *size)
	ctx, cancel := context.WithTimeout(context.Background(), *duration)
	defer cancel()
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	lat := make([][]time.Duration, *concurrency)
	var wg sync.WaitGroup
	start := time.Now()
	for g := range *concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[g%len(clients)]
			var out []byte
			for ctx.Err() == nil {
				t0 := time.Now()
				var err error
				if *method == "stream" {
					err = streamCall(ctx, c, &msg, &out)
				} else {
					err = c.Invoke(ctx, "/bench.Bench/Unary", &msg, &out)
				}
				if ctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded {
					break // the run's end, not a failure
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				calls.Add(1)
				lat[g] = append(lat[g], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	p := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(float64(len(all)-1)*q)].Microseconds()) / 1000
	}
	fmt.Printf("calls %d failures %d calls/s %.0f p50 %.3f p99 %.3f\n", calls.Load(), failures.Load(), float64(calls.Load())/elapsed.Seconds(), p(0.5), p(0.99))
	if e := firstErr.Load(); e != nil {
		fmt.Fprintln(os.Stderr, "first failure:", e)
	}
}

// streamCall makes one server-streaming call and reads its messages to the end.
func streamCall(ctx context.Context, c *grpc.ClientConn, in, out *[]byte) error {
	s, err := c.NewStream(ctx, &service.Streams[0], "/bench.Bench/Stream")
	if err != nil {
		return err
	}
	if err := s.SendMsg(in); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	n := 0
	for {
		if err := s.RecvMsg(out); err != nil {
			if n == streamMessages {
				return nil
			}
			return err
		}
		n++
	}
}
