// Command echo-server is the test backend image of the local cluster: every request gets a JSON
// answer naming the pod and describing the request (test/echo).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"portico.dev/portico/test/echo"
)

func main() {
	port := flag.Int("port", 8080, "port to serve")
	udpPort := flag.Int("udp-port", 0, "UDP port answering each datagram with the pod's name and the datagram (0: none)")
	service := flag.String("service", os.Getenv("SERVICE_NAME"), "Service name to report")
	authCookie := flag.String("auth-cookie", "", "NAME=VALUE: also answer "+echo.AuthPath+" as an external auth service, 202 to a request with that cookie, else 401 (empty: none)")
	flag.Parse()
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	addr := net.JoinHostPort(os.Getenv("PORTICO_BIND_ADDRESS"), strconv.Itoa(*port))
	handler := echo.Handler(name, *service)
	if *authCookie != "" {
		handler = echo.Auth(*authCookie, handler)
	}
	srv := &http.Server{Addr: addr, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "echo-server %s on %s\n", name, addr)
	if *udpPort != 0 {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(os.Getenv("PORTICO_BIND_ADDRESS"), strconv.Itoa(*udpPort)))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(append([]byte(name+": "), buf[:n]...), from)
			}
		}()
	}
	// On SIGTERM, finish what is in flight and stop, as a well-behaved backend does in a rollout.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
