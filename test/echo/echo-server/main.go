// Command echo-server is the test backend image of the local cluster: every request gets a JSON
// answer naming the pod and describing the request (test/echo).
package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"portico.dev/portico/test/echo"
)

func main() {
	port := flag.Int("port", 8080, "port to serve")
	service := flag.String("service", os.Getenv("SERVICE_NAME"), "Service name to report")
	flag.Parse()
	name := os.Getenv("POD_NAME")
	if name == "" {
		name, _ = os.Hostname()
	}
	addr := net.JoinHostPort(os.Getenv("PORTICO_BIND_ADDRESS"), strconv.Itoa(*port))
	srv := &http.Server{Addr: addr, Handler: echo.Handler(name, *service), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(os.Stderr, "echo-server %s on %s\n", name, addr)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
