// Command tcpbench measures TCP forwarding for make bench-proxy's tcpbulk and tcpconn rows:
// -serve runs the backend (a connection that sends 'B' gets zeros until it closes; one that sends
// 'C' gets "ok" and the end), -bulk reads from one connection through a proxy for -duration and
// prints MB/s, -conns opens connections (each 'C', "ok", closed) from -c goroutines for
// -duration and prints connections per second with their p50 and p99 in milliseconds.
// Everything on loopback.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	serve := flag.String("serve", "", "run the backend on this address")
	bulk := flag.String("bulk", "", "read from one connection to this address")
	conns := flag.String("conns", "", "open connections to this address")
	c := flag.Int("c", 16, "goroutines opening connections (-conns)")
	d := flag.Duration("duration", 10*time.Second, "how long to measure")
	flag.Parse()
	switch {
	case *serve != "":
		backend(*serve)
	case *bulk != "":
		runBulk(*bulk, *d)
	case *conns != "":
		runConns(*conns, *c, *d)
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func backend(addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	zeros := make([]byte, 256<<10)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var cmd [1]byte
			if _, err := io.ReadFull(c, cmd[:]); err != nil {
				return
			}
			switch cmd[0] {
			case 'B':
				for {
					if _, err := c.Write(zeros); err != nil {
						return
					}
				}
			case 'C':
				_, _ = c.Write([]byte("ok"))
			}
		}()
	}
}

func runBulk(addr string, d time.Duration) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fmt.Println("mbps 0 errors 1")
		return
	}
	defer c.Close()
	_, _ = c.Write([]byte{'B'})
	buf := make([]byte, 256<<10)
	// A second to reach a steady state, then the measurement.
	warm := time.Now().Add(time.Second)
	for time.Now().Before(warm) {
		if _, err := c.Read(buf); err != nil {
			fmt.Println("mbps 0 errors 1")
			return
		}
	}
	var n int64
	start := time.Now()
	end := start.Add(d)
	_ = c.SetReadDeadline(end)
	for {
		m, err := c.Read(buf)
		n += int64(m)
		if err != nil {
			break
		}
	}
	fmt.Printf("mbps %.1f errors 0\n", float64(n)/time.Since(start).Seconds()/1e6)
}

func runConns(addr string, workers int, d time.Duration) {
	var ok, failed atomic.Int64
	var mu sync.Mutex
	var lat []float64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []float64
			b := make([]byte, 8)
			for time.Now().Before(end) {
				t0 := time.Now()
				c, err := net.DialTimeout("tcp", addr, 2*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Write([]byte{'C'})
				n := 0
				for err == nil && n < 2 {
					var m int
					m, err = c.Read(b[n:])
					n += m
				}
				_ = c.Close()
				if n < 2 {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.Sort(lat)
	p := func(q float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))]
	}
	fmt.Printf("cps %.0f p50 %.3f p99 %.3f errors %d\n", float64(ok.Load())/d.Seconds(), p(0.5), p(0.99), failed.Load())
}
