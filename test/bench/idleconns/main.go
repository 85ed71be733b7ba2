// Command idleconns opens idle HTTP/2 connections for hack/bench-proxy.sh's memory row: each
// connection negotiates h2 over TLS, makes one request (as a browser does before it goes
// idle), reads the answer and then stays open, doing nothing, until stdin closes. It prints
// "ready N" once all N are idle.
//
//	idleconns -addr 127.0.0.1:18443 -authority bench.example.com -n 1000
package main

import (
	"bytes"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18443", "TLS address")
	authority := flag.String("authority", "bench.example.com", ":authority and TLS server name")
	n := flag.Int("n", 1000, "connections")
	flag.Parse()
	conns := make([]net.Conn, *n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := open(*addr, *authority)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "idleconns:", firstErr)
		os.Exit(1)
	}
	fmt.Println("ready", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
}

// open negotiates h2, makes one GET and reads its answer to the end of its stream.
func open(addr, authority string) (net.Conn, error) {
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: authority, NextProtos: []string{"h2"}})
	if err != nil {
		return nil, err
	}
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		c.Close()
		return nil, fmt.Errorf("negotiated %q, not h2", p)
	}
	fr := http2.NewFramer(c, c)
	_, _ = io.WriteString(c, http2.ClientPreface)
	if err := fr.WriteSettings(); err != nil {
		return nil, err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", authority}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		return nil, err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return c, nil
			}
		case *http2.DataFrame:
			if f.StreamID == 1 && f.StreamEnded() {
				return c, nil
			}
		case *http2.RSTStreamFrame, *http2.GoAwayFrame:
			return nil, fmt.Errorf("the answer failed: %v", f)
		}
	}
}
